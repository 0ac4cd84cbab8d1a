"""A function's call slots, handed out oldest job first.

A function serves ``maxWorkers`` calls at once; the bridge holds at most that many in flight per function
(one ``Slots`` per function, shared by every job of the process). A plain semaphore lets the jobs that run
together advance in step, so they start and end together and the function idles while all of them read
their first chunk or write their last shapes. Here a freed slot goes to the oldest job waiting (the
smallest ``priority``: the job id), so the next job's reads and the last job's writes overlap the calls of
the job in front; and a job holding no slot is served before any job that holds one, so a younger job
always advances (none starves behind a long one).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass(order=True)
class _Waiter:
    priority: float
    seq: int
    granted: threading.Event = field(default_factory=threading.Event, compare=False)


class Slots:
    """At most ``size`` holders at once; ``acquire(priority)`` waits for a slot (see the module)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a function needs at least one slot, not {size}")
        self.size = int(size)
        self._free = self.size
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._held: Counter[float] = Counter()
        self._seq = itertools.count()

    def acquire(self, priority: float = 0.0, timeout: float | None = None) -> bool:
        """Take a slot for a caller of ``priority`` (lower first); False when none came within ``timeout``."""
        with self._lock:
            if self._free and not self._waiting:
                self._take(priority)
                return True
            waiter = _Waiter(float(priority), next(self._seq))
            self._waiting.append(waiter)
            self._grant()
        if waiter.granted.wait(timeout):
            return True
        with self._lock:
            if waiter.granted.is_set():  # granted between the timeout and the lock
                return True
            self._waiting.remove(waiter)
            return False

    def release(self, priority: float = 0.0) -> None:
        """Give back a slot taken with ``priority``."""
        priority = float(priority)
        with self._lock:
            if self._held[priority] <= 0:
                raise ValueError(f"release of a slot not held (priority {priority})")
            self._held[priority] -= 1
            if not self._held[priority]:
                del self._held[priority]
            self._free += 1
            self._grant()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.size - self._free

    def _take(self, priority: float) -> None:
        self._free -= 1
        self._held[float(priority)] += 1

    def _grant(self) -> None:
        while self._free and self._waiting:
            starving = [w for w in self._waiting if not self._held[w.priority]]
            waiter = min(starving or self._waiting)
            self._waiting.remove(waiter)
            self._take(waiter.priority)
            waiter.granted.set()
