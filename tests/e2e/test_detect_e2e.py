"""Detect pipeline end to end: annotator opens a job in the CVAT double → signed webhook → bridge
job → test detector over HTTP → shapes in the double; re-trigger; a bad frame."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from tests.e2e.conftest import blobs_png, e2e_function, label_export
from tests.e2e.harness import running_stack

LABELS = [
    {"name": "coral", "type": "any", "attributes": [
        {"name": "confidence", "mutable": False, "input_type": "number", "default_value": "0",
         "values": ["0", "100", "1"]}]},
    {"name": "box", "type": "rectangle", "attributes": []},
    *label_export("corner_annotation_example"),
]
BOXES = {
    0: [(10, 10, 30, 25)],
    1: [(5, 40, 25, 60), (60, 5, 90, 20)],
    2: [(50, 50, 70, 80)],
}


def _images(white: set[int] = frozenset()) -> list[tuple[str, bytes]]:
    return [(f"img_{i:03d}.png", blobs_png(100, 90, BOXES[i], white=i in white)) for i in sorted(BOXES)]


@pytest.fixture
def stack(tmp_path):
    with running_stack(tmp_path, {"frame-detector": e2e_function("frame_detector")}) as s:
        yield s


def _start(stack, *, white: set[int] = frozenset(), **params):
    cvat = stack.cvat
    project = cvat.create_project("reef", LABELS)
    stack.hook(project, "/detect-model-webhook", ["update:job"], model_name="frame-detector", **params)
    task = cvat.create_task(project, "quadrats", _images(white), segment_size=2)
    return project, task, cvat.job_ids(task)


def test_job_in_progress_runs_detector_and_writes_shapes(stack):
    cvat = stack.cvat
    project, task, jobs = _start(stack, conv_mask_to_poly=False)
    assert len(jobs) == 2  # frames 0-1 and 2

    cvat.set_job_state(jobs[0], "in progress")
    (job,) = stack.settle(expect=1)
    assert job["status"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] == 2

    shapes = cvat.shapes(job_id=jobs[0])
    assert {s["frame"] for s in shapes} == {0, 1}
    assert all(s["source"] == "auto" for s in shapes)
    coral, box = cvat.label_id(project, "coral"), cvat.label_id(project, "box")
    masks = [s for s in shapes if s["type"] == "mask"]
    assert {s["label_id"] for s in masks} == {coral}
    assert len(masks) == 3 and len([s for s in shapes if s["type"] == "rectangle"]) == 3
    assert {s["label_id"] for s in shapes if s["type"] == "rectangle"} == {box}
    # confidence → the label's "confidence" attribute as an integer string
    conf_attr = next(a["spec_id"] for s in masks for a in s["attributes"])
    assert all(a["value"] == "80" for s in masks for a in s["attributes"] if a["spec_id"] == conf_attr)
    # masks round-trip through cvat-sdk's own decoder to the drawn blob
    for s in masks:
        frame_boxes = BOXES[s["frame"]]
        decoded = decode_mask(s["points"], image_width=100, image_height=90)
        ys, xs = np.nonzero(decoded)
        assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) in frame_boxes
        assert decoded.sum() == next((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in frame_boxes
                                     if (x1, y1) == (xs.min(), ys.min()))
    # skeleton: elements carry the sublabel ids; the missing corner "4" is outside
    skeletons = [s for s in shapes if s["type"] == "skeleton"]
    assert len(skeletons) == 2
    for sk in skeletons:
        by_label = {e["label_id"]: e for e in sk["elements"]}
        assert set(by_label) == {cvat.label_id(project, "quadrat_corner", str(i)) for i in range(1, 5)}
        assert by_label[cvat.label_id(project, "quadrat_corner", "4")]["outside"] is True
        assert not by_label[cvat.label_id(project, "quadrat_corner", "1")]["outside"]
    # the unknown label is reported on the job, not silently dropped
    detail = stack.job(job["id"])
    assert detail["notes"]["unmatched_labels"] == {"ghost": 2}
    assert any("ghost" in i["message"] for i in cvat.issues(job_id=jobs[0]))
    assert not cvat.shapes(job_id=jobs[1])  # the other job is untouched


def test_second_trigger_replaces_own_shapes_without_duplicates(stack):
    cvat = stack.cvat
    project, task, jobs = _start(stack, conv_mask_to_poly=True)
    cvat.set_job_state(jobs[1], "in progress")
    stack.settle(expect=1)
    first = cvat.shapes(job_id=jobs[1])
    assert first and {s["type"] for s in first} == {"polygon", "rectangle", "skeleton"}

    # a human adds a shape of their own; then the job goes back to new and in progress again
    cvat.set_job_state(jobs[1], "new")
    cvat.set_job_state(jobs[1], "in progress")
    runs = stack.settle(expect=2)
    assert [j["status"] for j in runs] == ["succeeded", "succeeded"]
    second = cvat.shapes(job_id=jobs[1])
    key = lambda s: (s["type"], s["label_id"], s["frame"], tuple(round(p, 3) for p in s["points"]))  # noqa: E731
    assert sorted(map(key, second)) == sorted(map(key, first))
    assert not {s["id"] for s in second} & {s["id"] for s in first}  # replaced, not kept twice


def test_bad_frame_fails_alone_and_is_reported(stack):
    cvat = stack.cvat
    project, task, jobs = _start(stack, white={1})
    cvat.set_job_state(jobs[0], "in progress")
    (job,) = stack.settle(expect=1)
    assert job["status"] == "succeeded"  # partial: frame 0 written, frame 1 reported
    detail = stack.job(job["id"])
    assert [e["frame"] for e in detail["frame_errors"]] == [1]
    assert "all-white" in detail["frame_errors"][0]["reason"]
    assert {s["frame"] for s in cvat.shapes(job_id=jobs[0])} == {0}
    issues = cvat.issues(job_id=jobs[0])
    assert any("frame 1" in i["message"] and "all-white" in i["message"] for i in issues)


def test_replayed_deliveries_make_one_job(stack):
    cvat = stack.cvat
    project, task, jobs = _start(stack)
    cvat.duplicate_deliveries = 3
    cvat.set_job_state(jobs[1], "in progress")
    runs = stack.settle(expect=1)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    accepted = [json.loads(d["response"]) for d in cvat.deliveries if d["status_code"] == 202]
    assert len(accepted) == 3 and {a["job_id"] for a in accepted} == {runs[0]["id"]}
    assert len(cvat.shapes(job_id=jobs[1])) == 3  # 1 blob → mask + box, the skeleton; ghost dropped


def test_shuffled_deliveries_and_updated_date_only_updates_trigger_nothing_extra(stack):
    cvat = stack.cvat
    project, task, jobs = _start(stack)
    cvat.shuffle_deliveries = True
    for job_id in jobs:
        cvat.set_job_state(job_id, "in progress")
    runs = stack.settle(expect=2)
    assert sorted(j["status"] for j in runs) == ["succeeded", "succeeded"]
    # every annotation write made CVAT send an `updated_date`-only job update: each was ignored
    ignored = [json.loads(d["response"]) for d in cvat.deliveries if d["status_code"] == 200]
    assert ignored and all(r["status"] == "ignored" for r in ignored)
    assert any("updated_date" in r["reason"] for r in ignored)
    assert len(stack.jobs()) == 2


@pytest.mark.parametrize("warm_chunks", [1, 0])
def test_the_ack_has_cvat_build_the_first_chunk_while_the_job_is_queued(tmp_path, warm_chunks):
    """No worker runs here: the job stays queued, yet CVAT has built the chunk it will read first (the
    webhook said where its frames are); ``BRIDGE_WARM_CHUNKS=0`` turns this off."""
    from tests.doubles.cvat_double import Costs

    with running_stack(tmp_path, {"frame-detector": e2e_function("frame_detector")}, workers=0,
                       costs=Costs(chunk_build_first=0.2), warm_chunks=warm_chunks) as stack:
        cvat = stack.cvat
        project = cvat.create_project("reef", LABELS)
        stack.hook(project, "/detect-model-webhook", ["update:job"], model_name="frame-detector")
        task = cvat.create_task(project, "quadrats", _images(), segment_size=2, chunk_size=2)
        cvat.set_job_state(cvat.job_ids(task)[1], "in progress")  # frame 2: the task's second chunk
        (job,) = stack.wait_for(lambda: stack.jobs(), 10, "the job")
        assert job["status"] == "queued"
        if warm_chunks:
            assert stack.wait_for(lambda: stack.cvat.chunks_built(task), 10, "the chunk to be built") == {2}
        else:
            time.sleep(0.5)
            assert stack.cvat.chunks_built(task) == set()
        assert stack.jobs()[0]["status"] == "queued"
