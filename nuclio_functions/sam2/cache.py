"""Bounded LRU cache of image embeddings, keyed by the image bytes' sha256 and the model id.

Bounded by total size in bytes (each entry reports its own size) and by age (TTL seconds since
it was stored); thread-safe; counts hits, misses and evictions.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int


def image_key(image_bytes: bytes, model_id: str) -> str:
    """Cache key of one encoded image (the bytes as received, before decoding) under one model."""
    h = hashlib.sha256(image_bytes)
    h.update(b"\0" + model_id.encode())
    return h.hexdigest()


class EmbeddingCache(Generic[V]):
    """LRU by total bytes with a TTL; ``max_bytes=0`` disables caching (every lookup misses)."""

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (value, nbytes, stored_at)
        self._items: OrderedDict[str, tuple[V, int, float]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def get(self, key: str) -> V | None:
        """The value (marked most recently used), or None when absent or expired."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and self._clock() - item[2] > self.ttl_s:
                self._drop(key)
                item = None
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: str, value: V, nbytes: int) -> bool:
        """Store; evicts expired then least recently used entries. False if it can never fit."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self._lock:
            if key in self._items:
                self._drop(key, count=False)
            if nbytes > self.max_bytes:
                return False
            now = self._clock()
            for k in [k for k, (_, _, t) in self._items.items() if now - t > self.ttl_s]:
                self._drop(k)
            while self._bytes + nbytes > self.max_bytes:
                self._drop(next(iter(self._items)))
            self._items[key] = (value, nbytes, now)
            self._bytes += nbytes
            return True

    def get_or_compute(self, key: str, compute: Callable[[], V], size: Callable[[V], int]) -> tuple[V, bool]:
        """(value, hit). On a miss runs ``compute`` outside the lock and stores the result."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = compute()
        self.put(key, value, size(value))
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._items), self._bytes)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def _drop(self, key: str, count: bool = True) -> None:
        _, nbytes, _ = self._items.pop(key)
        self._bytes -= nbytes
        if count:
            self._evictions += 1
