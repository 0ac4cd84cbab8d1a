"""Warming a queued job's first chunk: the hint read from CVAT's real payloads, the bounded background
reader, and the real client asking the CVAT double (which builds a chunk once, like CVAT's media cache)."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from bridge.cvat.client import CvatClient
from bridge.cvat.warm import ChunkWarmer
from bridge.events import parse_envelope
from bridge.pipelines.registry import Registry
from tests.conftest import load_sample
from tests.doubles.cvat_double import Costs, CvatDouble
from tests.e2e.conftest import blobs_png


def _envelope(name: str, **job_changes):
    body = json.loads(load_sample(name)["raw_body"])
    if job_changes:
        body["job"].update(job_changes)
    return parse_envelope(json.dumps(body).encode())[0]


def test_the_first_chunk_comes_from_what_cvat_sends():
    """CVAT 2.73's real ``update:job`` delivery: task 4, frames from 0, chunks of 72 → chunk 0 of task 4."""
    registry = Registry()
    env = _envelope("10-update_job-state-new-to-in_progress")
    assert registry.spec("detect").first_chunk(env) == (4, 0)
    assert registry.spec("crop_quadrat").first_chunk(env) == (4, 0)  # reads the whole task
    later = _envelope("10-update_job-state-new-to-in_progress", start_frame=150, data_chunk_size=72)
    assert registry.spec("detect").first_chunk(later) == (4, 2)  # the job's own first chunk
    assert registry.spec("remove_grid").first_chunk(later) == (4, 0)
    assert registry.spec("cover_report").first_chunk(env) is None  # reads no frames
    for odd in ({"data_original_chunk_type": "video"}, {"media_type": "video"}, {"type": "ground_truth"},
                {"data_chunk_size": None}, {"data_chunk_size": 0}, {"start_frame": "0"}, {"start_frame": True}):
        assert registry.spec("detect").first_chunk(_envelope(
            "10-update_job-state-new-to-in_progress", **odd)) is None, odd


def test_hints_are_read_once_in_the_background_bounded_and_failures_only_logged(caplog):
    caplog.set_level(logging.INFO, "bridge.cvat.warm")
    gate = threading.Event()
    seen: list[tuple[int, int]] = []

    def warm(task: int, chunk: int) -> None:
        gate.wait(10)
        seen.append((task, chunk))
        if task == 13:
            raise ConnectionError("CVAT is down")

    warmer = ChunkWarmer(warm, threads=1, capacity=2, idle_seconds=0.2)
    started = time.perf_counter()
    assert warmer.offer(1, 0)
    assert not warmer.offer(1, 0)  # asked already (a retried delivery, a second job of the chunk)
    time.sleep(0.05)  # the thread has taken (1, 0) and waits in warm()
    assert warmer.offer(2, 0) and warmer.offer(3, 0) and warmer.offer(13, 0)  # 3 hints, room for 2
    assert time.perf_counter() - started < 0.5  # offer never waits on a read
    assert warmer.dropped == 1  # the oldest queued hint made room
    gate.set()
    deadline = time.monotonic() + 5
    while warmer.warmed + warmer.failed < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [(1, 0), (3, 0), (13, 0)]
    assert warmer.warmed == 2 and warmer.failed == 1
    assert "warming chunk 0 of task 13 failed" in caplog.text
    warmer.close()
    assert not warmer.offer(4, 0)


def test_a_warmed_chunk_is_built_once_and_the_job_reads_it_without_the_build():
    """The real client against the double with CVAT's first-build cost: ``warm_chunk`` builds it (without
    transferring it), and the job's read then costs a read only; a reader during a build waits for it."""
    build = 0.6
    with CvatDouble(costs=Costs(chunk_build_first=build)) as cvat:
        project = cvat.create_project("p", [{"name": "box", "type": "rectangle", "attributes": []}])
        task = cvat.create_task(project, "t", [(f"f{i}.png", blobs_png(40, 30, [(1, 1, 9, 9)])) for i in range(4)],
                                chunk_size=2)
        with CvatClient(cvat.url, access_token="test-token") as client:
            assert cvat.chunks_built(task) == set()
            client.warm_chunk(task, 0)
            assert cvat.chunks_built(task) == {0}
            t0 = time.perf_counter()
            frames = dict(client.iter_frames(task, [0, 1], prefetch=0))
            assert time.perf_counter() - t0 < build / 2 and set(frames) == {0, 1}
            # chunk 1: a warm and a read at once: the read waits for the one build, nothing is built twice
            warm = threading.Thread(target=client.warm_chunk, args=(task, 1))
            warm.start()
            time.sleep(0.1)
            t0 = time.perf_counter()
            assert set(dict(client.iter_frames(task, [2, 3], prefetch=0))) == {2, 3}
            waited = time.perf_counter() - t0
            warm.join()
            assert build / 2 < waited < build + 0.4 and cvat.chunks_built(task) == {0, 2}
        with pytest.raises(Exception, match="chunk 9 of task"):
            CvatClient(cvat.url, access_token="test-token").warm_chunk(task, 9)


def test_a_hint_settles_first_and_is_dropped_when_its_job_was_claimed_meanwhile(caplog):
    caplog.set_level(logging.INFO, "bridge.cvat.warm")
    seen: list[tuple[int, float]] = []
    warmer = ChunkWarmer(lambda task, chunk: seen.append((task, time.monotonic())), settle=0.3,
                         idle_seconds=0.2)
    claimed = {1: True, 2: False}
    t0 = time.monotonic()
    assert warmer.offer(1, 0, still_needed=lambda: not claimed[1])  # an idle worker took this job at once
    assert warmer.offer(2, 0, still_needed=lambda: not claimed[2])  # this one waits in the queue
    assert warmer.offer(3, 0, still_needed=lambda: 1 / 0)  # cannot tell: warmed
    deadline = time.monotonic() + 5
    while warmer.warmed + warmer.skipped < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [task for task, _ in seen] == [2, 3] and warmer.skipped == 1
    assert seen[0][1] - t0 >= 0.3  # not before the hint settled
    assert "could not tell whether chunk 0 of task 3 is still needed" in caplog.text


def test_the_ack_of_a_job_a_worker_claims_at_once_warms_nothing(make_settings):
    """``Runtime.warm`` with the real store and the real client against the double: a job still queued after
    the settle time has its chunk built by the warm; a job claimed meanwhile is left to its worker."""
    from bridge.jobs.store import JobStore
    from bridge.runtime import WARM_SETTLE, Runtime
    from tests.jobs.conftest import enqueue

    with CvatDouble() as cvat:
        project = cvat.create_project("p", [{"name": "box", "type": "rectangle", "attributes": []}])
        images = [(f"f{i}.png", blobs_png(40, 30, [(1, 1, 9, 9)])) for i in range(4)]
        tasks = [cvat.create_task(project, f"t{i}", images, chunk_size=2) for i in range(2)]
        settings = make_settings(cvat_url=cvat.url, cvat_access_token="test-token")
        store = JobStore(settings.resolved_database_url)
        runtime = Runtime(settings, store)
        try:
            params = {"model_name": "pth-yolo"}
            claimed, queued = (enqueue(store, f"j{i}", params=params).job_id for i in range(2))
            for task, job_id in zip(tasks, (claimed, queued), strict=True):
                env = _envelope("10-update_job-state-new-to-in_progress", task_id=task, data_chunk_size=2)
                assert runtime.warm("detect", env, job_id)
            assert store.claim("w", 60).id == claimed  # a worker takes the first job before it settles
            deadline = time.monotonic() + WARM_SETTLE + 5
            while runtime.warmer.warmed + runtime.warmer.skipped < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert runtime.warmer.skipped == 1 and runtime.warmer.warmed == 1
            assert cvat.chunks_built(tasks[0]) == set() and cvat.chunks_built(tasks[1]) == {0}
        finally:
            runtime.close()
            store.close()


def test_a_failed_warm_pauses_the_thread_instead_of_hammering_a_cvat_that_is_down():
    tried: list[float] = []

    def warm(task: int, chunk: int) -> None:
        tried.append(time.monotonic())
        raise ConnectionError("connection refused")

    warmer = ChunkWarmer(warm, failure_pause=0.3, idle_seconds=0.2)
    for task in range(3):
        assert warmer.offer(task, 0)
    deadline = time.monotonic() + 5
    while warmer.failed < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert warmer.failed == 3
    assert all(later - earlier >= 0.3 for earlier, later in zip(tried, tried[1:], strict=False))
    warmer.close()
