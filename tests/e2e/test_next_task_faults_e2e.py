"""The next stage's task under faults (issue 11, cases 2 and 8): exactly one complete task per source
task whatever answer is lost, an empty leftover is replaced (never reported as success), and frame
names with folders stay unique without showing server paths."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import label_export
from tests.e2e.harness import annotate, running_stack
from tests.e2e.test_quadrat_chain_e2e import corner_skeleton, quadrat_photo

NAMES = ["a.png", "b.png", "c.png"]


@pytest.fixture
def stack(tmp_path):
    with running_stack(tmp_path, {}, cvat_timeout=3) as s:
        yield s


def _source(stack, names=NAMES):
    """A corners project with a completed-able source task (corners drawn) and an empty target project."""
    cvat = stack.cvat
    p1 = cvat.create_project("1 corners", label_export("corner_annotation_example"))
    p2 = cvat.create_project("2 grid", label_export("grid_annotation_example"))
    stack.hook(p1, "/crop-quadrat-and-create-new-task-webhook", ["update:task"], target_proj_id=p2)
    src = cvat.create_task(p1, "site 7", [(n, quadrat_photo(i)) for i, n in enumerate(names)], segment_size=2)
    for job_id in cvat.job_ids(src):
        job = cvat.job(job_id)
        frames = range(job["start_frame"], job["stop_frame"] + 1)
        annotate(stack, job_id, [corner_skeleton(cvat, p1, f) for f in frames])
    return p1, p2, src


def _one_complete_task(stack, project: int, frames: list[str]) -> dict:
    cvat = stack.cvat
    tasks = cvat.tasks(project)
    assert len(tasks) == 1, tasks
    (task,) = tasks
    assert cvat.frame_names(task["id"]) == frames
    jobs = cvat.job_ids(task["id"])
    assert jobs and all(cvat.job(j)["state"] == "in progress" for j in jobs)
    return task


@pytest.mark.parametrize(("method", "path", "fault"), [
    ("POST", r"^/api/tasks/?$", "reset"),                 # the task is created, its id never arrives
    ("POST", r"^/api/tasks/\d+/data", "504"),             # the upload is applied, its answer lost
    ("PATCH", r"^/api/jobs/\d+/?$", "timeout"),           # the job is set in progress, the answer hangs
])
def test_a_lost_answer_still_gives_exactly_one_complete_task(stack, method, path, fault):
    p1, p2, src = _source(stack)
    stack.proxy.arm(method, path, fault)
    stack.cvat.complete_task(src)
    jobs = stack.settle(timeout=90)
    assert [j["status"] for j in jobs] == ["succeeded"], jobs
    assert len(stack.proxy.log) == 1
    _one_complete_task(stack, p2, NAMES)


def test_an_empty_leftover_task_is_replaced_not_reported_as_success(stack):
    """What a crash between creating the task and uploading its data leaves behind."""
    cvat = stack.cvat
    p1, p2, src = _source(stack)
    with cvat.state.action():
        leftover = cvat.state.create_task({"name": f"site 7 · quadrat (from task #{src})", "project_id": p2},
                                          cvat._actor("bridge-bot")).id
    cvat.complete_task(src)
    (job,) = stack.settle(timeout=60)
    assert job["status"] == "succeeded", job
    task = _one_complete_task(stack, p2, NAMES)
    assert task["id"] != leftover
    assert f"removed incomplete task(s) [{leftover}]" in job["summary"]


def test_frame_names_with_folders_stay_unique_and_safe(stack):
    names = ["siteA/IMG_0001.png", "siteB/IMG_0001.png", "x/../y.png"]
    p1, p2, src = _source(stack, names)
    stack.cvat.complete_task(src)
    (job,) = stack.settle(timeout=60)
    assert job["status"] == "succeeded", job
    _one_complete_task(stack, p2, ["siteA_IMG_0001.png", "siteB_IMG_0001.png", "y.png"])
    assert str(stack.settings.data_dir) not in str(stack.job(job["id"]))  # no server path anywhere
