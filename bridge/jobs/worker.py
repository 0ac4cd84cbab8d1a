"""The worker loop: claim a job, keep its lease alive, run it, record the outcome.

Knows nothing of CVAT or FastAPI: what a job *does* is a ``JobRunner`` handed in by the
composition root (``bridge.runtime``). Error types decide the outcome: ``TransientError`` →
requeued with growing backoff for as long as the retry window lasts (an outage of CVAT or Nuclio),
``LeaseLost`` → stop without touching the row, ``Cancelled`` → cancelled, any other ``BridgeError`` →
failed with its message, anything unexpected → requeued (at most ``max_attempts`` times) and logged.

Fencing: every claim gets a new ``lease_token``. Progress writes, heartbeats and the outcome are
accepted only with the current token, and ``StoreProgress.fence()`` — called right before every
CVAT write — raises ``LeaseLost`` once the lease is no longer this worker's or is about to expire.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.errors import BridgeError, Cancelled, LeaseLost, TransientError
from bridge.jobs.models import Job
from bridge.jobs.store import JobStore
from bridge.logs import current_job_id

log = logging.getLogger(__name__)


@dataclass
class StoreProgress:
    """``Progress`` that buffers in memory and writes to the job row at most every ``interval`` s."""

    store: JobStore
    job_id: int
    worker_id: str
    interval: float = 1.0
    token: int | None = None
    """The fencing token of this worker's lease (``Job.lease_token`` at claim time)."""
    lease_seconds: float = 60.0
    total: int = 0
    done: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: float = 0.0

    def set_total(self, total: int) -> None:
        with self._lock:
            self.total = int(total)
        self.flush(force=True)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
        self.flush()

    def frame_error(self, frame: int, reason: str) -> None:
        with self._lock:
            self.errors[int(frame)] = reason
        log.warning("frame %s failed: %s", frame, reason)
        self.flush(force=True)

    def created(self, kind: str, object_id: int) -> None:
        with self._lock:
            self.objects.append({"kind": kind, "id": int(object_id)})
        self.flush(force=kind != "shape")

    def note(self, key: str, value: Any) -> None:
        with self._lock:
            self.notes[key] = value
        self.flush(force=True)

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        with self._lock:
            self._last = now
            snapshot = dict(total=self.total, done=self.done, frame_errors=dict(self.errors),
                            objects=list(self.objects), notes=dict(self.notes))
        self.store.save_progress(self.job_id, self.worker_id, token=self.token, **snapshot)

    def fence(self) -> None:
        """Raise ``LeaseLost`` unless this worker still holds the lease with a safe margin left.

        Called right before every CVAT write and task creation: a worker that froze past its lease
        (another worker may already be redoing the job) stops here instead of writing twice. The
        margin (a quarter of the lease) covers the time between this check and CVAT applying the write.
        """
        left = self.store.lease_left(self.job_id, self.worker_id, self.token)
        if left is None:
            raise LeaseLost(f"job {self.job_id}: another worker holds the job now; stopping without writing")
        if left < self.lease_seconds / 4:
            raise LeaseLost(f"job {self.job_id}: lease {'expired' if left < 0 else 'about to expire'} "
                            f"({left:.1f} s left); stopping without writing")


class JobRunner(Protocol):
    """Runs one claimed job; returns a one-line summary. Raises ``bridge.errors`` types."""

    def __call__(self, job: Job, progress: StoreProgress, cancel: threading.Event) -> str: ...


FinishHook = Callable[[Job, str, float, str | None], None]
"""Called once per finished attempt: (job, outcome status, seconds, error or None)."""
FailHook = Callable[[Job, str], None]
"""Called with (job, reason) right before a job is marked failed for a permanent error."""


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker = one thread claiming jobs one at a time."""

    def __init__(self, store: JobStore, runner: JobRunner, *, lease_seconds: float = 60.0,
                 poll_seconds: float = 0.5, retry_base: float = 2.0, retry_cap: float = 300.0,
                 retry_window: float = 4 * 86400.0, worker_id: str | None = None,
                 on_finish: FinishHook | None = None, before_fail: FailHook | None = None):
        self.store = store
        self.runner = runner
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.retry_window = retry_window
        self.worker_id = worker_id or make_worker_id()
        self.on_finish = on_finish
        self.before_fail = before_fail

    def run_once(self) -> bool:
        """Claim and process one job; False when nothing was runnable."""
        job = self.store.claim(self.worker_id, self.lease_seconds)
        if job is None:
            return False
        self.process(job)
        return True

    def _heartbeat(self, job: Job, cancel: threading.Event, stop: threading.Event, lost: threading.Event) -> None:
        period = max(0.2, self.lease_seconds / 3)
        while not stop.wait(period):
            try:
                owned, cancel_requested = self.store.heartbeat(job.id, self.worker_id, self.lease_seconds,
                                                               token=job.lease_token)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the heartbeat
                log.warning("job %s: heartbeat failed: %s", job.id, exc)
                continue
            if cancel_requested:
                log.info("job %s: cancel requested", job.id)
                cancel.set()
            if not owned:
                log.warning("job %s: lease lost (another worker took it over); stopping", job.id)
                lost.set()
                cancel.set()
                return

    def process(self, job: Job) -> None:
        token = current_job_id.set(job.id)
        started = time.monotonic()
        cancel, stop, lost = threading.Event(), threading.Event(), threading.Event()
        lease = job.lease_token
        progress = StoreProgress(self.store, job.id, self.worker_id, token=lease, lease_seconds=self.lease_seconds,
                                 objects=list(job.objects or []), notes=dict(job.notes or {}))
        hb = threading.Thread(target=self._heartbeat, args=(job, cancel, stop, lost), daemon=True,
                              name=f"heartbeat-{job.id}")
        hb.start()
        outcome, error = "failed", None
        log.info("job %s: running %s (attempt %s)", job.id, job.pipeline, job.attempts)
        try:
            summary = self.runner(job, progress, cancel)
            progress.flush(force=True)
            outcome = "succeeded" if self.store.succeed(job.id, self.worker_id, summary, token=lease) else "lost"
            log.info("job %s: %s — %s", job.id, outcome, summary)
        except Cancelled as exc:
            error = str(exc)
            if isinstance(exc, LeaseLost) or lost.is_set():
                # not ours any more: the row belongs to whoever holds the lease now
                log.warning("job %s: stopped, lease lost: %s", job.id, error)
                outcome = "lost"
            else:
                progress.flush(force=True)
                self.store.fail(job.id, self.worker_id, error, status="cancelled", token=lease)
                outcome = "cancelled"
        except TransientError as exc:
            progress.flush(force=True)
            error = str(exc)
            outcome = self._requeue(job, error, transient=True)
        except BridgeError as exc:
            progress.flush(force=True)
            error = str(exc)
            if self.before_fail is not None:  # e.g. the CVAT issue: there when the job shows failed
                try:
                    self.before_fail(job, error)
                except Exception:  # noqa: BLE001 - reporting must not keep the job from failing
                    log.exception("job %s: failure report failed", job.id)
            self.store.fail(job.id, self.worker_id, error, token=lease)
            log.error("job %s: failed: %s", job.id, error)
        except Exception as exc:  # noqa: BLE001 - unexpected: log with traceback, retry (bounded)
            log.exception("job %s: unexpected error", job.id)
            progress.flush(force=True)
            error = f"unexpected error: {exc!r}"
            outcome = self._requeue(job, error, transient=False)
        finally:
            stop.set()
            hb.join(timeout=5)
            current_job_id.reset(token)
        if self.on_finish is not None:
            try:
                self.on_finish(job, outcome, time.monotonic() - started, error)
            except Exception:  # noqa: BLE001 - reporting must not break the loop
                log.exception("job %s: finish hook failed", job.id)

    def _requeue(self, job: Job, error: str, *, transient: bool) -> str:
        delay = self.store.requeue(job.id, self.worker_id, error, base=self.retry_base, cap=self.retry_cap,
                                   transient=transient, window=self.retry_window, token=job.lease_token)
        if delay is None:
            current = self.store.get(job.id)
            if current is None or current.status != "failed":
                return "lost"
            log.error("job %s: failed for good: %s", job.id, current.error)
            return "failed"
        log.warning("job %s: %s, next attempt in %.1f s: %s", job.id,
                    "transient error" if transient else "unexpected error", delay, error)
        return "retrying"

    def loop(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Claim and run jobs until ``stop``; when idle, poll every ``poll_seconds`` or at once when ``wake``
        is set (a webhook committed a job in this process or told this one: ``bridge.jobs.wake``)."""
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # a job committed while claiming keeps it set: the wait below returns at once
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - keep the worker alive; the store is retried next poll
                log.exception("worker %s: loop error", self.worker_id)
                busy = False
            if not busy:
                (wake or stop).wait(self.poll_seconds)


class WorkerPool:
    """N worker threads in this process (``bridge serve``) or alone (``bridge worker``)."""

    def __init__(self, make_worker: Callable[[int], Worker], count: int):
        self.make_worker = make_worker
        self.count = count
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self._wakes: list[threading.Event] = []

    def start(self) -> None:
        for i in range(self.count):
            w = self.make_worker(i)
            wake = threading.Event()
            t = threading.Thread(target=w.loop, args=(self.stop_event, wake), daemon=True, name=f"bridge-worker-{i}")
            t.start()
            self.threads.append(t)
            self._wakes.append(wake)

    def wake(self) -> None:
        """New work was committed: idle workers claim now instead of at their next poll."""
        for wake in self._wakes:
            wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.threads.clear()
