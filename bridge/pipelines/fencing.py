"""``FencedCvat``: the CVAT client a pipeline step gets, with the job's lease checked before every write.

Reads pass straight through. Each call that changes CVAT (shapes, tasks, job states, issues) first
calls ``fence()`` — the worker's lease check — so a worker that froze past its lease, and may have
been replaced by another, stops before writing instead of writing a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.cvat.client import CvatClient

WRITES = frozenset({"create_shapes", "delete_shapes", "create_task", "set_job_state", "create_issue",
                    "delete_task", "create_tracks", "delete_tracks"})


class FencedCvat:
    """Delegates to the client (built on first use by ``client()``, so a pipeline that never talks to
    CVAT needs no credentials); the methods named in ``WRITES`` call ``fence()`` first."""

    def __init__(self, client: Callable[[], CvatClient], fence: Callable[[], None]):
        self._get = client
        self._fence = fence

    @property
    def unfenced(self) -> CvatClient:
        return self._get()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._get(), name)
        if name not in WRITES:
            return attr
        fence = self._fence

        def fenced(*args: Any, **kwargs: Any) -> Any:
            fence()
            return attr(*args, **kwargs)

        fenced.__name__ = name
        return fenced
