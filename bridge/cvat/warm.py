"""Ask CVAT to build a job's first chunk while the job is still queued.

CVAT builds an original-quality chunk on its first read (~0.8–1.0 s on 2.73, cvat-performance.md §1),
and a job cannot start on its frames before that. A webhook says where the job's frames are (task,
first frame, chunk size), so the process that acknowledges it can ask for that chunk at once: by the
time a worker claims the job, CVAT holds it (CVAT 2.73 builds a chunk once; a reader arriving during
the build waits for it). Best effort and bounded: one background thread by default, a bounded queue
(the oldest hint is dropped when full), each chunk asked once per ``remember`` hints, nothing waits
on it, and a failure is only logged (the worker reads the chunk the usual way) and pauses that thread
(``failure_pause``: a CVAT that is down is not asked again in a tight loop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

WarmFn = Callable[[int, int], None]
"""``warm(task_id, chunk)``: read the original chunk ``chunk`` of ``task_id`` (its body may be dropped)."""


class ChunkWarmer:
    """Background reads of chunks that queued jobs will need; ``offer`` never blocks."""

    def __init__(self, warm: WarmFn, *, threads: int = 1, capacity: int = 64, remember: int = 1024,
                 idle_seconds: float = 5.0, settle: float = 0.0, failure_pause: float = 1.0):
        if threads < 1 or capacity < 1:
            raise ValueError("a ChunkWarmer needs at least one thread and room for one hint")
        self._warm = warm
        self.threads = threads
        self.capacity = capacity
        self.remember = remember
        self.idle_seconds = idle_seconds
        self.settle = settle
        self.failure_pause = failure_pause
        self._cond = threading.Condition()
        self._queue: deque[_Hint] = deque()
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._running = 0
        self._closed = False
        self.warmed = 0
        self.failed = 0
        self.dropped = 0
        self.skipped = 0

    def offer(self, task_id: int, chunk: int, still_needed: Callable[[], bool] | None = None) -> bool:
        """Queue a read of chunk ``chunk`` of ``task_id`` (after ``settle`` s, if ``still_needed()`` then says
        so); False when it was asked already or closed."""
        key = (int(task_id), int(chunk))
        with self._cond:
            if self._closed or key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            if len(self._queue) >= self.capacity:
                self._queue.popleft()  # the oldest hint: its job is the likeliest to be running already
                self.dropped += 1
            self._queue.append(_Hint(key, time.monotonic() + self.settle, still_needed))
            if self._running < self.threads:
                self._running += 1
                threading.Thread(target=self._run, name="cvat-chunk-warm", daemon=True).start()
            else:
                self._cond.notify()
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Drop what is queued; reads in flight end on their own (daemon threads)."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()

    def _next(self) -> _Hint | None:
        with self._cond:
            while not self._queue:
                if self._closed or not self._cond.wait(self.idle_seconds):
                    if self._queue and not self._closed:
                        break
                    self._running -= 1
                    return None
            return self._queue.popleft()

    def _run(self) -> None:
        while (hint := self._next()) is not None:
            task_id, chunk = hint.key
            pause = hint.not_before - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if self._closed:
                continue  # ``_next`` ends the thread (and counts it out)
            try:
                if hint.still_needed is not None and not hint.still_needed():
                    self.skipped += 1
                    log.debug("chunk %d of task %d: its job was claimed already; not warmed", chunk, task_id)
                    continue
            except Exception as exc:  # noqa: BLE001 - a hint: warm rather than guess
                log.info("could not tell whether chunk %d of task %d is still needed (%s); warming it", chunk,
                         task_id, exc)
            try:
                self._warm(task_id, chunk)
                self.warmed += 1
                log.debug("warmed original chunk %d of task %d", chunk, task_id)
            except Exception as exc:  # noqa: BLE001 - a hint: the job reads the chunk itself and reports
                log.info("warming chunk %d of task %d failed (the job will read it itself): %s", chunk,
                         task_id, exc)
                self.failed += 1
                time.sleep(self.failure_pause)  # CVAT down or refusing: hints are not worth hammering it


class _Hint(NamedTuple):
    key: tuple[int, int]
    not_before: float
    still_needed: Callable[[], bool] | None
