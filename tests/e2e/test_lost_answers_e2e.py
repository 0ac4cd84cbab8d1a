"""Exactly-once when CVAT applied a write but its answer never arrived (issue 11, case 1).

The bridge reaches the CVAT double through a ``FaultProxy``: the chosen request goes through and is
applied, then the answer is replaced by a 504, held back past the client's timeout, or the connection
is reset. What CVAT holds afterwards must equal what a fault-free run writes: no duplicate, no gap.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.conftest import e2e_function
from tests.e2e.harness import running_stack
from tests.e2e.test_detect_e2e import LABELS, _images

CREATE = r"^/api/jobs/\d+/annotations/?\?.*action=create"
DELETE = r"^/api/jobs/\d+/annotations/?\?.*action=delete"


def _key(shape: dict) -> tuple:
    elements = tuple(sorted((e["label_id"], tuple(round(p, 2) for p in e["points"]), e["outside"])
                            for e in shape.get("elements") or []))
    return (shape["type"], shape["label_id"], shape["frame"], shape["source"],
            tuple(round(p, 2) for p in shape["points"]), elements)


@pytest.fixture
def stack(tmp_path):
    # a short CVAT timeout so that a held-back answer times out quickly
    with running_stack(tmp_path, {"frame-detector": e2e_function("frame_detector")}, cvat_timeout=3,
                       write_batch_size=4) as s:
        yield s


def _scene(stack) -> tuple:
    """A project with the detect webhook and one 3-frame job; (the CVAT double, the job id)."""
    cvat = stack.cvat
    project = cvat.create_project("reef", LABELS)
    stack.hook(project, "/detect-model-webhook", ["update:job"], model_name="frame-detector")
    task = cvat.create_task(project, "quadrats", _images(), segment_size=3)
    (job_id,) = cvat.job_ids(task)
    return cvat, job_id


def _detect(stack, job_id: int, runs: int) -> list[dict]:
    stack.cvat.set_job_state(job_id, "new")
    stack.cvat.set_job_state(job_id, "in progress")
    return stack.settle(expect=runs, timeout=90)


@pytest.mark.parametrize("fault", ["504", "timeout", "reset"])
def test_a_lost_write_answer_never_duplicates_or_drops_shapes(stack, fault):
    cvat, job_id = _scene(stack)

    # reference: a fault-free run
    (first,) = _detect(stack, job_id, 1)
    assert first["status"] == "succeeded", first
    expected = Counter(map(_key, cvat.shapes(job_id=job_id)))
    assert sum(expected.values()) >= 8  # several batches of 4 objects

    # the re-run loses the answer of its first and of its third write (CVAT applied both)
    stack.proxy.arm("PATCH", CREATE, fault, times=1)
    runs = _detect(stack, job_id, 2)
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"], runs
    assert [f for _, _, f in stack.proxy.log] == [fault]
    held = Counter(map(_key, cvat.shapes(job_id=job_id)))
    assert held == expected  # the same shapes, each once
    # and the bridge knows every one of them (the next re-run replaces them all)
    stack.proxy.arm("PATCH", CREATE, fault, times=1)
    _detect(stack, job_id, 3)
    assert Counter(map(_key, cvat.shapes(job_id=job_id))) == expected


def test_lost_answers_to_deletes_and_writes_in_one_run(stack):
    """The re-run's delete of the old shapes and two writes all lose their answers."""
    cvat, job_id = _scene(stack)
    _detect(stack, job_id, 1)
    expected = Counter(map(_key, cvat.shapes(job_id=job_id)))

    stack.proxy.arm("PATCH", DELETE, "reset", times=1)
    stack.proxy.arm("PATCH", CREATE, "504", times=2)
    runs = _detect(stack, job_id, 2)
    assert runs[0]["status"] == "succeeded", runs
    assert Counter(map(_key, cvat.shapes(job_id=job_id))) == expected
    assert len(stack.proxy.log) == 3


def test_a_cvat_outage_keeps_the_job_waiting_then_it_finishes(stack):
    """Case 5: CVAT unreachable far longer than 5 attempts take: the job waits (visible, with its next
    attempt time) instead of failing for good, and finishes once CVAT is back."""
    cvat, job_id = _scene(stack)
    stack.proxy.outage()
    try:
        cvat.set_job_state(job_id, "in progress")  # the webhook reaches the bridge; CVAT does not answer it
        waiting = stack.wait_for(lambda: stack.jobs(status="waiting"), 30, "the job to wait out the outage")
        (job,) = waiting
        assert job["waiting"] and job["next_attempt_at"] and job["retry_until"]
        assert "could not be reached" in job["error"]
        deadline = time.monotonic() + 90
        while stack.jobs()[0]["attempts"] <= 6:  # more attempts than BRIDGE_MAX_ATTEMPTS=5 ever allowed
            assert stack.jobs()[0]["status"] in ("queued", "running"), stack.jobs()
            assert time.monotonic() < deadline, stack.jobs()
            time.sleep(0.2)
    finally:
        stack.proxy.restore()
    (job,) = stack.settle(timeout=60)
    assert job["status"] == "succeeded" and not job["waiting"], job
    assert len(cvat.shapes(job_id=job_id)) > 0


def test_a_retry_the_user_asks_for_runs_again(stack):
    """Case 9: retrying a succeeded detect job re-detects (it used to re-run nothing: checkpoint kept)."""
    cvat, job_id = _scene(stack)
    (first,) = _detect(stack, job_id, 1)
    before = cvat.shapes(job_id=job_id)
    resp = stack.http.post(f"{stack.bridge_url}/jobs/{first['id']}/retry")
    assert resp.status_code == 200, resp.text
    (again,) = stack.settle(timeout=60)
    assert again["id"] == first["id"] and again["status"] == "succeeded" and again["attempts"] == 1
    after = cvat.shapes(job_id=job_id)
    assert Counter(map(_key, after)) == Counter(map(_key, before))  # re-detected: same shapes…
    assert not {s["id"] for s in after} & {s["id"] for s in before}  # …written anew, the old ones replaced
