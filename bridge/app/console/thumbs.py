"""Small JPEG thumbnails of CVAT frames, made once and kept on disk under a byte budget.

A thumbnail is keyed by (CVAT task, frame): a task's frames never change once its data is uploaded.
Frames are read through ``CvatClient.iter_frames`` (original chunks). Requests for frames of the same
task that arrive while one is being made are served by the same chunk download. When the folder
grows past ``max_bytes`` the least recently used files (oldest mtime; a hit touches its file) go.
Everything here blocks: call it from a thread (``run_in_threadpool``), never on the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from bridge.errors import BadImage
from bridge.geometry.images import image_size

log = logging.getLogger(__name__)

FrameSource = Callable[[int, list[int]], Iterable[tuple[int, bytes]]]
"""``(task_id, frames) -> (frame, encoded bytes)...``: ``CvatClient.iter_frames``."""

_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def make_thumbnail(data: bytes, side: int = 256, quality: int = 80) -> bytes:
    """A JPEG whose longer side is at most ``side`` px. Large JPEGs are decoded at 1/2..1/8 scale
    (libjpeg's DCT scaling), so a 20 MP frame costs a fraction of a full decode."""
    width, height = image_size(data)
    flags = cv2.IMREAD_COLOR
    for factor, reduced in _REDUCED:
        if max(width, height) // factor >= side:
            flags = reduced
            break
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise BadImage(f"cannot decode the frame ({len(data)} bytes) for a thumbnail")
    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadImage("cannot encode the thumbnail")
    return buf.tobytes()


class ThumbnailCache:
    """``get(task, frame, source)`` → JPEG bytes; at most ``max_bytes`` on disk under ``root``."""

    def __init__(self, root: Path, *, max_bytes: int = 64 * 1024 * 1024, side: int = 256, namespace: str = ""):
        # The namespace (e.g. the CVAT URL) keeps two CVATs' task 7 apart.
        tag = hashlib.sha256(namespace.encode()).hexdigest()[:12] if namespace else "default"
        self.root = Path(root) / tag
        self.max_bytes = max_bytes
        self.side = side
        self._lock = threading.Lock()
        self._task_locks: dict[int, threading.Lock] = {}
        self._pending: dict[int, set[int]] = {}

    def path(self, task_id: int, frame: int) -> Path:
        return self.root / f"task{task_id}" / f"{frame}-{self.side}.jpg"

    def get(self, task_id: int, frame: int, source: FrameSource) -> bytes:
        """The thumbnail of ``frame`` of ``task_id``, made from ``source`` on a miss.

        Raises what ``source`` raises (``NotFound``, ``CvatUnavailable``, ``ValueError`` for a frame
        outside the task) and ``BadImage`` for a frame that cannot be decoded."""
        hit = self._read(task_id, frame)
        if hit is not None:
            return hit
        with self._lock:
            self._pending.setdefault(task_id, set()).add(frame)
            task_lock = self._task_locks.setdefault(task_id, threading.Lock())
        with task_lock:
            hit = self._read(task_id, frame)  # made by the request that held the lock before us
            if hit is not None:
                return hit
            with self._lock:
                wanted = sorted(self._pending.pop(task_id, set()) | {frame})
            made = self._make(task_id, wanted, source)
        self.evict()
        if frame not in made:
            raise BadImage(f"frame {frame} of task {task_id} could not be read")
        return made[frame]

    def _make(self, task_id: int, frames: list[int], source: FrameSource) -> dict[int, bytes]:
        made: dict[int, bytes] = {}
        failed: dict[int, Exception] = {}
        stream: Iterator[tuple[int, bytes]] = iter(source(task_id, frames))
        try:
            for number, data in stream:
                try:
                    thumb = make_thumbnail(data, self.side)
                except BadImage as exc:
                    failed[number] = exc
                    continue
                self._write(self.path(task_id, number), thumb)
                made[number] = thumb
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator over CVAT chunks releases its downloads now
        if failed and not made:
            raise next(iter(failed.values()))
        return made

    def _read(self, task_id: int, frame: int) -> bytes | None:
        path = self.path(task_id, frame)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError as exc:
            log.debug("thumbnail %s: could not touch: %s", path, exc)
        return data

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jpg")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # readers never see half a file

    def usage(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("task*/*.jpg") if p.is_file() and not p.name.startswith(".")]

    def evict(self) -> list[Path]:
        """Remove the least recently used thumbnails until the folder fits ``max_bytes``."""
        entries = []
        for path in self._files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        return removed
