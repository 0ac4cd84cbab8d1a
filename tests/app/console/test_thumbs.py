"""Thumbnails: made once from the frame bytes, shrunk (never enlarged), kept on disk under a byte budget
(least recently used go first), several requests for one task served by one read of its frames."""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
import pytest

from bridge.app.console.thumbs import ThumbnailCache, make_thumbnail
from bridge.errors import BadImage, NotFound


def encoded(width: int, height: int, fmt: str = ".png", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:, : width // 2] = (200, 30, 30)  # left half blue-ish (BGR), right half random
    img[:, width // 2 :] = rng.integers(0, 255, (height, width - width // 2, 3), dtype=np.uint8)
    ok, data = cv2.imencode(fmt, img)
    assert ok
    return data.tobytes()


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and data[:2] == b"\xff\xd8"  # a JPEG
    return img


@pytest.mark.parametrize("size,fmt,expected", [
    ((2000, 1000), ".png", (256, 128)),
    ((3000, 2000), ".jpg", (256, 171)),  # decoded at 1/8 scale first (375×250), then area-resized
    ((100, 90), ".png", (100, 90)),  # small frames are not enlarged
    ((90, 4000), ".jpg", (6, 256)),
])
def test_thumbnail_size_and_content(size, fmt, expected):
    thumb = decode(make_thumbnail(encoded(*size, fmt=fmt), side=256))
    assert (thumb.shape[1], thumb.shape[0]) == expected
    left = thumb[:, : max(1, thumb.shape[1] // 2 - 2)].reshape(-1, 3).mean(axis=0)
    assert np.allclose(left, (200, 30, 30), atol=25)  # the picture is the frame's, shrunk


def test_undecodable_frame_is_bad_image():
    with pytest.raises(BadImage):
        make_thumbnail(b"\x89PNG\r\n\x1a\n not really a png" * 3)


class Source:
    """A stand-in for ``CvatClient.iter_frames`` that records every call."""

    def __init__(self, frames: dict[int, bytes], gate: threading.Event | None = None):
        self.frames = frames
        self.calls: list[list[int]] = []
        self.gate = gate

    def __call__(self, task_id: int, wanted: list[int]):
        self.calls.append(list(wanted))
        if self.gate is not None and len(self.calls) == 1:
            assert self.gate.wait(10)
        for f in wanted:
            if f not in self.frames:
                raise NotFound(f"frame {f} of task {task_id} does not exist")
            yield f, self.frames[f]


def test_made_once_then_read_from_disk(tmp_path):
    source = Source({0: encoded(640, 480), 1: encoded(640, 480, seed=1)})
    cache = ThumbnailCache(tmp_path, namespace="http://cvat:8080")
    first = cache.get(7, 0, source)
    assert cache.get(7, 0, source) == first and source.calls == [[0]]
    again = ThumbnailCache(tmp_path, namespace="http://cvat:8080")  # a restarted bridge keeps them
    assert again.get(7, 0, source) == first and source.calls == [[0]]
    other_cvat = ThumbnailCache(tmp_path, namespace="http://other-cvat:8080")
    other_cvat.get(7, 0, source)
    assert source.calls == [[0], [0]]  # task 7 of another CVAT is another picture


def test_missing_frame_raises_and_leaves_nothing(tmp_path):
    cache = ThumbnailCache(tmp_path)
    with pytest.raises(NotFound):
        cache.get(7, 5, Source({}))
    assert cache.usage() == 0


def test_concurrent_requests_for_one_task_share_a_read(tmp_path):
    gate = threading.Event()
    source = Source({f: encoded(320, 240, seed=f) for f in range(4)}, gate)
    cache = ThumbnailCache(tmp_path)
    results: dict[int, bytes] = {}
    threads = [threading.Thread(target=lambda f=f: results.__setitem__(f, cache.get(3, f, source))) for f in range(4)]
    threads[0].start()
    while not source.calls:
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    while len(cache._pending.get(3, ())) < 3:  # the other three wait for the first read to finish
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(results) == [0, 1, 2, 3]
    assert source.calls == [[0], [1, 2, 3]]


def test_disk_use_is_bounded_least_recently_used_go_first(tmp_path):
    source = Source({f: encoded(512, 512, fmt=".jpg", seed=f) for f in range(12)})
    probe = ThumbnailCache(tmp_path / "probe")
    one = len(probe.get(1, 0, source))
    cache = ThumbnailCache(tmp_path / "lru", max_bytes=int(one * 4.5))
    base = time.time() - 1000
    for f in range(4):
        cache.get(1, f, source)
        os.utime(cache.path(1, f), (base + f, base + f))
    cache.get(1, 0, source)  # frame 0 is used again: now the most recent
    for f in (4, 5):
        cache.get(1, f, source)
    kept = {f for f in range(12) if cache.path(1, f).exists()}
    assert cache.usage() <= cache.max_bytes
    assert kept == {0, 3, 4, 5}  # 1 and 2 were the least recently used
