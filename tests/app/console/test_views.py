"""What the console shows, computed from real job rows: frame pairs and the pipeline view."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from bridge.app.console.views import frame_pairs, frame_ref, project_view, projects_overview, stage_key
from bridge.app.routers.jobs import job_out
from bridge.jobs.store import JobStore

_KEYS = itertools.count()


@pytest.fixture
def store(tmp_path):
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield s
    s.close()


def add(store, pipeline: str, params: dict, *, project: int, task: int, job: int | None = None) -> int:
    key = f"{pipeline}-{project}-{task}-{job}-{next(_KEYS)}"
    trigger = {"kind": "task_completed", "resource": "job" if job else "task", "resource_id": job or task,
               "project_id": project, "task_id": task, "job_id": job, "event": "update:task", "webhook_id": 4}
    return store.enqueue(pipeline=pipeline, params=params, trigger=trigger, dedupe_key=key,
                         flight_key=f"{pipeline}:{key}", max_attempts=3).job_id


def run(store, job_id: int, *, total: int, done: int, errors: dict[int, str] | None = None,
        objects: list | None = None, outcome: str = "succeeded") -> None:
    claimed = store.claim("w", 30)
    assert claimed is not None and claimed.id == job_id
    store.save_progress(job_id, "w", total=total, done=done, frame_errors=errors or {}, objects=objects or [],
                        notes={})
    if outcome == "succeeded":
        store.succeed(job_id, "w", "ok")
    elif outcome == "failed":
        store.fail(job_id, "w", "boom")
    elif outcome == "waiting":
        store.requeue(job_id, "w", "CVAT unreachable", base=60, cap=60)


def out(store, job_id: int):
    return job_out(store.get(job_id))


def test_warp_frames_pair_with_the_new_task(store):
    jid = add(store, "crop_quadrat", {"target_proj_id": 2}, project=1, task=5)
    run(store, jid, total=12, done=12, errors={1: "no corners", 3: "bad geometry"},
        objects=[{"kind": "task", "id": 9}])
    refs = frame_pairs(out(store, jid), first=4)
    assert [(r.frame, r.before, r.after, r.error) for r in refs] == [
        (0, (5, 0), (9, 0), None), (1, (5, 1), None, "no corners"), (2, (5, 2), (9, 1), None),
        (3, (5, 3), None, "bad geometry"), (4, (5, 4), (9, 2), None), (5, (5, 5), (9, 3), None)]
    assert frame_ref(out(store, jid), 11).after == (9, 9)  # any frame, beyond the first few shown
    assert frame_ref(out(store, jid), 3).after is None


def test_detect_frames_are_the_failed_ones_only(store):
    jid = add(store, "detect", {"model_name": "m"}, project=1, task=5, job=40)
    run(store, jid, total=3, done=3, errors={2: "model crashed"})
    refs = frame_pairs(out(store, jid))
    assert [(r.frame, r.before, r.after) for r in refs] == [(2, (5, 2), None)]


def test_pipeline_view_per_project(store):
    a = add(store, "crop_quadrat", {"target_proj_id": 2}, project=1, task=5)
    b = add(store, "crop_quadrat", {"target_proj_id": 2}, project=1, task=6)
    c = add(store, "crop_quadrat", {"target_proj_id": 2}, project=1, task=6)
    d = add(store, "detect", {"model_name": "grid"}, project=2, task=9, job=90)
    e = add(store, "detect", {"model_name": "other"}, project=2, task=9, job=91)
    run(store, a, total=2, done=2, objects=[{"kind": "task", "id": 9}])
    run(store, b, total=2, done=1, outcome="failed")
    run(store, c, total=2, done=0, outcome="waiting")
    run(store, d, total=4, done=2, outcome="running")  # still running (no outcome)
    recent = [out(store, j) for j in (e, d, c, b, a)]
    p1 = project_view(1, [r for r in recent if r.trigger["project_id"] == 1], recent,
                      {"crop_quadrat": ["/webhooks/crop-quadrat"]})
    (stage,) = p1.stages
    assert stage.key == "crop_quadrat · → project 2" and stage.target_project == 2
    assert stage.routes == ["/webhooks/crop-quadrat"]
    assert stage.counts == {"succeeded": 1, "failed": 1, "waiting": 1}
    rows = {r.task_id: r for r in stage.tasks}
    assert rows[6].jobs == 2 and rows[6].latest_job == c and rows[6].latest_status == "waiting"
    assert rows[5].next_task == 9 and rows[5].latest_progress == (2, 2)
    p2 = project_view(2, [r for r in recent if r.trigger["project_id"] == 2], recent, {})
    assert [s.key for s in p2.stages] == ["detect · grid", "detect · other"]
    assert p2.feeds_from == [1] and p2.counts == {"running": 1, "queued": 1}
    assert p2.stages[0].tasks[0].cvat_jobs == [90]
    overview = projects_overview(recent)
    assert [(p.project_id, p.jobs, p.targets) for p in overview] == [(1, 3, [2]), (2, 2, [])]


def test_waiting_is_told_apart_from_queued(store):
    jid = add(store, "detect", {"model_name": "m"}, project=1, task=5, job=1)
    run(store, jid, total=1, done=0, outcome="waiting")
    job = out(store, jid)
    assert job.waiting and job.next_attempt_at > datetime.now(UTC) + timedelta(seconds=30)
    assert stage_key(job) == "detect · m"
    assert projects_overview([job])[0].counts == {"waiting": 1}
