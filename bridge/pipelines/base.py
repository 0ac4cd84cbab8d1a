"""What a pipeline step receives (``StepContext``) and returns (``PipelineResult``).

A pipeline is one module under ``bridge/pipelines/`` declaring a ``PipelineSpec``
(``bridge.pipelines.spec``). The worker builds a ``StepContext`` and calls ``spec.run(ctx)``; the same
call runs inline (tests, benchmarks) or from the queue. Pipelines know nothing of FastAPI or SQL.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from bridge.errors import Cancelled, PermanentError
from bridge.events import Trigger

if TYPE_CHECKING:
    from bridge.config import PipelineSettings
    from bridge.cvat.client import CvatClient
    from bridge.nuclio.client import NuclioClient

class Progress(Protocol):
    """Progress and result reporting; the worker persists it on the job row."""

    def set_total(self, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def frame_error(self, frame: int, reason: str) -> None: ...

    def created(self, kind: str, object_id: int) -> None: ...

    def note(self, key: str, value: Any) -> None: ...

    def flush(self, force: bool = False) -> None: ...

    def fence(self) -> None:
        """Raise ``LeaseLost`` when this worker may no longer write (called before every CVAT write)."""


@dataclass
class MemoryProgress:
    """A ``Progress`` that keeps everything in memory (inline runs and tests)."""

    total: int = 0
    done: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_total(self, total: int) -> None:
        with self._lock:
            self.total = total

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n

    def frame_error(self, frame: int, reason: str) -> None:
        with self._lock:
            self.errors[int(frame)] = reason

    def created(self, kind: str, object_id: int) -> None:
        with self._lock:
            self.objects.append({"kind": kind, "id": int(object_id)})

    def note(self, key: str, value: Any) -> None:
        with self._lock:
            self.notes[key] = value

    def flush(self, force: bool = False) -> None:
        """Nothing to persist."""

    def fence(self) -> None:
        """An inline run holds no lease."""


@dataclass
class StepContext:
    """Everything a pipeline step may use. Clients are built once per worker, not per job."""

    trigger: Trigger
    params: BaseModel
    settings: PipelineSettings
    cvat: CvatClient
    nuclio: NuclioClient
    progress: Progress
    job_id: int | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    log: logging.LoggerAdapter | logging.Logger = field(default_factory=lambda: logging.getLogger("bridge.pipeline"))
    previous: dict[str, Any] = field(default_factory=dict)
    """What earlier attempts of the same job recorded (``objects``, ``notes``), for resuming."""

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def job_event(self, pipeline: str) -> int:
        """The CVAT job id of the triggering event; a pipeline that acts on jobs refuses task events."""
        if self.trigger.job_id is None:
            raise PermanentError(f"{pipeline} needs a job event, got {self.trigger.event or self.trigger.kind}")
        return self.trigger.job_id

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("the job was cancelled")


@dataclass
class PipelineResult:
    """What a run did. ``partial`` = some frames failed but the rest were written."""

    summary: str
    created: dict[str, list[int]] = field(default_factory=dict)
    frames_total: int = 0
    frames_failed: int = 0
    shapes_written: int = 0

    @property
    def partial(self) -> bool:
        return 0 < self.frames_failed
