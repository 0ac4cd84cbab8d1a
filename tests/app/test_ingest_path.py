"""The lean ingest path: the pure-ASGI fast path answers exactly as the FastAPI routes do, webhook inserts
are committed in groups by one writer thread, ``GET /jobs`` pages by keyset."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridge.app.deps import app_state
from bridge.app.factory import create_app
from bridge.app.intake import Intake
from bridge.app.routers import webhooks
from bridge.jobs.store import JobFilter, JobStore
from tests.conftest import all_samples, load_sample, signed

DETECT = "/detect-model-webhook?model_name=pth-yolo-gridcorners"


def _cases() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, url, body, headers): every sample on two routes, plus refusals of every kind."""
    out = []
    for path in all_samples():
        s = load_sample(path.stem)
        headers = {"X-Signature-256": s["headers"]["X-Signature-256"], "Content-Type": "application/json"}
        for url in (DETECT, "/crop-quadrat-and-create-new-task-webhook?target_proj_id=2"):
            out.append((f"{path.stem} {url}", url, s["raw_body"].encode(), headers))
    trigger = load_sample("10-update_job")
    raw = trigger["raw_body"].encode()
    good = {"X-Signature-256": trigger["headers"]["X-Signature-256"], "Content-Type": "application/json"}
    out += [
        ("redelivery", DETECT, raw, good),
        ("wrong signature", DETECT, raw, {**good, "X-Signature-256": "sha256=" + "0" * 64}),
        ("no signature", DETECT, raw, {"Content-Type": "application/json"}),
        ("bad params", "/detect-model-webhook", raw, good),
        ("bad threshold", DETECT + "&threshold=7", raw, good),
        ("ping bad params", "/detect-model-webhook", *signed({"event": "ping", "webhook_id": 1})),
        ("not json", DETECT, *signed(b"{not json")),
        ("not an object", DETECT, *signed(b"[1, 2]")),
        ("id out of range", DETECT, *signed({"event": "update:job", "job": {"id": 2**40}})),
        ("unicode reason", DETECT, *signed({"event": "update:job", "job": {"id": 4, "state": "ü"},
                                             "changes": {"state": {"from": "new", "to": "ü"}}})),
    ]
    return out


def _run(make_coro):
    """``asyncio.run`` in a thread of its own (this thread may already run a loop: the browser tests')."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(make_coro())))
    thread.start()
    thread.join()
    assert out, "the coroutine raised (see the thread's traceback above)"
    return out[0]


def _routes_only(full: FastAPI) -> FastAPI:
    """The FastAPI routes alone (no fast path, no middleware) on the state of another app."""
    app = FastAPI()
    app.state.bridge = app_state(full)
    state = app_state(full)
    app.include_router(webhooks.build_router(state.bridge.registry, Intake(state.store.enqueue_many)))
    return app


def test_fast_path_answers_exactly_like_the_routes(make_settings, tmp_path):
    fast_app = create_app(make_settings(data_dir=tmp_path / "a"), workers=0)
    other = create_app(make_settings(data_dir=tmp_path / "b"), workers=0)
    slow_app = _routes_only(other)
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        for name, url, body, headers in _cases():
            a, b = fast.post(url, content=body, headers=headers), slow.post(url, content=body, headers=headers)
            assert (a.status_code, a.content, a.headers["content-type"], a.headers["content-length"]) == (
                b.status_code, b.content, b.headers["content-type"], b.headers["content-length"]), name
            assert "x-request-id" in a.headers  # the fast path runs inside the app's middleware
    stored = [[(j.id, j.dedupe_key, j.pipeline, j.params, j.trigger) for j in app_state(a).store.list(
        JobFilter(), limit=500)[0]] for a in (fast_app, other)]
    assert stored[0] == stored[1] and len(stored[0]) >= 2  # both stored the same jobs


def test_fast_path_leaves_other_methods_and_paths_to_the_app(client_app):
    client, _ = client_app
    assert client.get("/detect-model-webhook").status_code == 405
    assert client.post("/detect-model-webhook/", content=b"{}", follow_redirects=False).status_code == 307
    assert client.post("/no-such-webhook", content=b"{}").status_code == 404
    assert client.post("/health").status_code == 200


@pytest.fixture
def client_app(make_settings, store_url):
    app = create_app(make_settings(database_url=store_url), workers=0)
    with TestClient(app) as client:
        yield client, app
    app_state(app).store.close()


def test_concurrent_deliveries_are_committed_in_groups(make_settings, store_url):
    store = JobStore(store_url)
    intake = Intake(store.enqueue_many)
    trigger = {"kind": "job_in_progress", "resource": "job", "resource_id": 1, "job_id": 1, "task_id": 1}

    async def many() -> list:
        return await asyncio.gather(*(
            intake.enqueue(pipeline="detect", params={}, trigger=trigger, dedupe_key=f"k{i % 150}",
                           flight_key="detect:job:1", max_attempts=3) for i in range(200)))

    try:
        results = _run(many)
        assert len({r.job_id for r in results}) == 150
        assert sum(r.created for r in results) == 150  # the 50 repeats are duplicates, in or across batches
        assert intake.requests == 200 and intake.batches < 200  # grouped: fewer transactions than requests
        assert store.counts_by_status() == {"queued": 150}
        intake.close()
        async def late() -> BaseException | None:
            try:
                await intake.enqueue(pipeline="detect", params={}, trigger=trigger, dedupe_key="late",
                                     flight_key="f", max_attempts=3)
            except RuntimeError as exc:
                return exc
            return None

        assert "closed" in str(_run(late))
    finally:
        intake.close()
        store.close()


def test_a_failing_batch_answers_every_waiter_and_the_thread_comes_back():
    calls: list[int] = []

    def broken(requests):
        calls.append(len(requests))
        raise OSError("disk gone")

    intake = Intake(broken, idle_seconds=0.05)

    async def two() -> list:
        return await asyncio.gather(intake.enqueue(dedupe_key="a"), intake.enqueue(dedupe_key="b"),
                                    return_exceptions=True)

    first = _run(two)
    assert all(isinstance(r, OSError) for r in first)
    time.sleep(0.3)
    assert intake._thread is None  # idle: the thread ended
    again = _run(two)  # a new thread takes over
    assert all(isinstance(r, OSError) for r in again) and sum(calls) == 4


def test_jobs_are_paged_by_keyset(client_app):
    client, app = client_app
    store = app_state(app).store
    ids = [store.enqueue(pipeline="detect", params={}, trigger={"task_id": 1}, dedupe_key=f"k{i}",
                         flight_key=f"f{i}", max_attempts=3).job_id for i in range(7)]
    seen, before = [], None
    while True:
        params = {"limit": 3} | ({"before_id": before} if before else {})
        page = client.get("/jobs", params=params).json()
        assert page["total"] == 7 and page["before_id"] == before
        seen += [j["id"] for j in page["items"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == sorted(ids, reverse=True)
    offset_page = client.get("/jobs", params={"limit": 3, "offset": 3}).json()
    assert [j["id"] for j in offset_page["items"]] == seen[3:6]  # limit/offset still work
    assert client.get("/jobs", params={"before_id": 0}).status_code == 422
    assert json.loads(client.get("/jobs", params={"before_id": min(ids)}).content)["items"] == []


def test_a_committed_webhook_wakes_this_processes_idle_workers(make_settings):
    """Workers that poll every 30 s run a new job at once: the intake's commit wakes them (without CVAT
    credentials the job fails at once, which is all this needs)."""
    app = create_app(make_settings(workers=1, poll_seconds=30))
    raw, headers = signed(json.loads(load_sample("10-update_job")["raw_body"]))
    with TestClient(app) as client:
        time.sleep(0.3)  # the worker has polled once and waits
        t0 = time.monotonic()
        resp = client.post("/detect-model-webhook?model_name=m", content=raw, headers=headers)
        assert resp.status_code == 202, resp.text
        while time.monotonic() - t0 < 5:
            (job,) = client.get("/jobs").json()["items"]
            if job["status"] == "failed":
                break
            time.sleep(0.02)
        assert job["status"] == "failed" and "no CVAT credentials" in job["error"], job
        assert time.monotonic() - t0 < 3, "the job waited for the 30 s poll"


def test_start_up_objects_are_kept_out_of_the_cyclic_collector(make_settings):
    """After start-up the app's objects (imports, routes, clients) are frozen: a full collection over the
    ~10^5 of them took 40-120 ms here and showed as the slowest acks (bench/ingest.py --sustained)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings())):
        assert gc.get_freeze_count() > 10_000
