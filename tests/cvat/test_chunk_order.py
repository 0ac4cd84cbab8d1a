"""Chunk reads in the order that gets the first frame soonest: the first chunk alone, then the next ones
while it is used; a chunk started early (``prefetch_frames``) is used instead of asked for again."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.cvat.client import CvatClient
from bridge.errors import NotFound
from tests.cvat.test_client import TOKEN, requests_since, seed_task


@pytest.fixture(scope="module")
def project(cvat) -> int:
    return cvat.create_project("chunks", [{"name": "car", "type": "rectangle", "attributes": []}])


def _recording(client: CvatClient) -> list[tuple[int, float, float]]:
    """Record (chunk, start, end) of every chunk download of this client."""
    spans: list[tuple[int, float, float]] = []
    lock = threading.Lock()
    real = client._download_chunk

    def download(task_id: int, chunk: int):
        start = time.monotonic()
        try:
            return real(task_id, chunk)
        finally:
            with lock:
                spans.append((chunk, start, time.monotonic()))

    client._download_chunk = download  # type: ignore[method-assign]
    return spans


def _chunk_reads(cvat, mark: int, task_id: int) -> list[str]:
    return [p for _, p in requests_since(cvat, mark) if f"/tasks/{task_id}/data?" in p and "type=chunk" in p]


def test_the_first_chunk_is_asked_for_alone_then_the_next_ones_together(cvat, project):
    task_id, images = seed_task(cvat, project, "order", n=8, chunk_size=2)
    with CvatClient(cvat.url, access_token=TOKEN) as c:
        spans = _recording(c)
        got = list(c.iter_frames(task_id, range(8), prefetch=2))
    assert got == [(i, images[i][1]) for i in range(8)]
    first = next(s for s in spans if s[0] == 0)
    later = [s for s in spans if s[0] != 0]
    assert sorted(s[0] for s in later) == [1, 2, 3]
    assert all(start >= first[2] for _, start, _ in later), spans  # nothing competes with the first chunk


def test_a_prefetched_chunk_is_used_and_not_read_again(cvat, project):
    task_id, images = seed_task(cvat, project, "prefetched", n=6, chunk_size=2)
    with CvatClient(cvat.url, access_token=TOKEN) as c:
        mark = len(cvat.requests)
        c.prefetch_frames(task_id, 2)  # the chunk holding frame 2 (chunk 1)
        deadline = time.monotonic() + 5
        while not _chunk_reads(cvat, mark, task_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        (read,) = _chunk_reads(cvat, mark, task_id)
        assert "number=1" in read and "quality=original" in read
        assert list(c.iter_frames(task_id, [2, 3, 4])) == [(f, images[f][1]) for f in (2, 3, 4)]
        reads = _chunk_reads(cvat, mark, task_id)
        assert len(reads) == 2 and "number=2" in reads[1]  # chunk 1 once (prefetched), then chunk 2
        task_reads = [p for _, p in requests_since(cvat, mark) if p == f"/api/tasks/{task_id}"]
        assert len(task_reads) == 1  # the prefetch's read of the task served iter_frames too
        # used once: the next iteration reads the usual way
        mark = len(cvat.requests)
        assert list(c.iter_frames(task_id, [3])) == [(3, images[3][1])]
        assert len(_chunk_reads(cvat, mark, task_id)) == 1


def test_a_prefetch_of_another_chunk_is_dropped_and_errors_surface_in_iter_frames(cvat, project, tmp_path):
    task_id, images = seed_task(cvat, project, "other chunk", n=6, chunk_size=2)
    with CvatClient(cvat.url, access_token=TOKEN, cache_dir=tmp_path) as c:
        c.prefetch_frames(task_id, 5)  # chunk 2, but the run starts at frame 0
        unused = c._prefetched[task_id][1]
        assert list(c.iter_frames(task_id, [0, 1])) == [(0, images[0][1]), (1, images[1][1])]
        assert unused.result().chunk == 2 and unused.result().file.closed  # its file is gone
        c.prefetch_frames(task_id, 99)  # outside the task: the prefetch fails quietly ...
        with pytest.raises(ValueError, match="outside task"):  # ... and iter_frames says why
            list(c.iter_frames(task_id, [99]))
        c.prefetch_frames(10**6, 0)  # no such task: the same error as without a prefetch
        with pytest.raises(NotFound, match="reading task 1000000"):
            list(c.iter_frames(10**6, [0]))


@pytest.mark.parametrize("hint", [None, 2])
def test_an_untaken_prefetch_is_dropped_when_the_client_closes(cvat, project, tmp_path, hint):
    task_id, _ = seed_task(cvat, project, f"untaken-{hint}", n=4, chunk_size=2)
    c = CvatClient(cvat.url, access_token=TOKEN, cache_dir=tmp_path)
    c.prefetch_frames(task_id, 0, chunk_size=hint)
    c.prefetch_frames(task_id, 2)  # one per task: the second is ignored
    fut = c._prefetched[task_id][1]
    assert fut.result(5).chunk == 0 and not fut.result().file.closed
    c.close()
    assert fut.result().file.closed and c._prefetched == {}


@pytest.mark.parametrize("hint", [2, 3])
def test_a_prefetch_told_the_chunk_size_reads_the_chunk_first_and_checks_the_hint(cvat, project, hint):
    """The webhook's ``data_chunk_size`` starts the chunk's read with the task's (not after it); a wrong size
    (3 for chunks of 2) is caught by the task's layout and the right chunk is read: the frames are right."""
    task_id, images = seed_task(cvat, project, f"hinted-{hint}", n=6, chunk_size=2)
    with CvatClient(cvat.url, access_token=TOKEN) as c:
        mark = len(cvat.requests)
        c.prefetch_frames(task_id, 2, chunk_size=hint)
        assert list(c.iter_frames(task_id, [2, 3])) == [(f, images[f][1]) for f in (2, 3)]
        seen = [p for _, p in requests_since(cvat, mark) if p.startswith(f"/api/tasks/{task_id}")]
        reads = _chunk_reads(cvat, mark, task_id)
        if hint == 2:
            # the chunk and the task's layout are asked for at once (in either order), the chunk once
            assert {p.split("?")[0] for p in seen[:2]} == {f"/api/tasks/{task_id}/data", f"/api/tasks/{task_id}"}
            assert len(reads) == 1 and "number=1" in reads[0]
        else:  # 2 // 3 = chunk 0 was read on the wrong hint, then chunk 1
            assert len(reads) == 2 and "number=0" in reads[0] and "number=1" in reads[1]
