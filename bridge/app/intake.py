"""Group commit for webhook inserts: one writer thread, one transaction per batch.

Every triggering webhook must be committed before its 202. Instead of a thread hand-off per request
(``run_in_threadpool``: a wake-up and an anyio round trip per insert, one commit each), requests queue
here and one writer thread takes whatever has queued up while the previous batch was committing and
stores it with ``JobStore.enqueue_many`` (one transaction; a value the store refuses fails only its own
request). Results go back to each event loop with one call per batch. The event loop never waits on
the database (a SQLite write lock held by another process blocks the writer, not the acks in flight).

The thread starts on the first request and ends after ``idle_seconds`` without any, so an app that is
never shut down (tests) leaves nothing running; ``close()`` ends it at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.jobs.store import EnqueueResult

log = logging.getLogger(__name__)

_Pending = tuple[asyncio.AbstractEventLoop, asyncio.Future, Mapping[str, Any]]


class Intake:
    """Queues ``enqueue`` requests from event loops; one thread commits them in batches."""

    def __init__(self, enqueue_many: Callable[[Sequence[Mapping[str, Any]]], list[EnqueueResult | Exception]],
                 *, max_batch: int = 256, idle_seconds: float = 5.0, on_created: Callable[[], None] | None = None):
        self._enqueue_many = enqueue_many
        self._on_created = on_created  # after a commit that created jobs: wake the idle workers
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.requests = 0

    async def enqueue(self, **request: Any) -> EnqueueResult:
        """``JobStore.enqueue(**request)``, committed when this returns; raises what the store raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the webhook intake is closed (shutting down)")
            self._pending.append((loop, fut, request))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-intake", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
        result = await fut
        if isinstance(result, Exception):
            raise result
        return result

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread (later requests are refused)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._pending:
                if self._closed or not self._cond.wait(self.idle_seconds):
                    if self._pending:  # arrived just as the wait timed out
                        break
                    self._thread = None
                    return None
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results: list[Any] = self._enqueue_many([request for _, _, request in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error (answered 5xx/4xx)
                results = [exc] * len(batch)
            self.batches += 1
            self.requests += len(batch)
            if self._on_created is not None and any(isinstance(r, EnqueueResult) and r.created for r in results):
                try:
                    self._on_created()
                except Exception:  # noqa: BLE001 - a wake-up is a hint; the workers poll anyway
                    log.warning("webhook intake: waking the workers failed", exc_info=True)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
            for (loop, fut, _), result in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((fut, result))
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:  # that loop is closed: nobody waits for these answers any more
                    log.warning("webhook intake: %d results for a closed event loop dropped (committed)", len(done))


def _resolve(done: list[tuple[asyncio.Future, Any]]) -> None:
    for fut, result in done:
        if not fut.done():
            fut.set_result(result)
