"""The coral scientists' 3-stage chain end to end in the CVAT double:

corners task completed → warped task in the grid project (its job in progress) → grid detector →
grid task completed → grid painted out into a task of the coral project → coral detector runs.
Every webhook is delivered 3× (CVAT's redeliveries); each stage still makes exactly one task.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridge.cvat.types import Shape
from bridge.geometry.grid import grid_mask
from tests.doubles.function_server import load_function
from tests.e2e.conftest import HERE, e2e_function, label_export
from tests.e2e.harness import annotate, running_stack

CORNERS = [(40, 30), (200, 40), (210, 180), (30, 170)]  # TL, TR, BR, BL on a 240×200 frame
CORAL_LABELS = [{"name": "coral", "type": "polygon", "attributes": []}, {"name": "box", "type": "rectangle"}]
FILL_INPAINTER = HERE.parent / "nuclio" / "functions" / "fill_inpainter"


def quadrat_photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((200, 240, 3), 15, np.uint8)
    cv2.fillPoly(img, [np.array(CORNERS, np.int32)], (90, 100, 80))
    cv2.circle(img, (120 + int(rng.integers(-10, 10)), 105), 12, (240, 240, 240), -1)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def corner_skeleton(cvat, project: int, frame: int, corners=CORNERS) -> Shape:
    elements = [Shape(type="points", label_id=cvat.label_id(project, "quadrat_corner", str(i + 1)), frame=frame,
                      points=[float(x), float(y)], source="manual") for i, (x, y) in enumerate(corners)]
    return Shape(type="skeleton", label_id=cvat.label_id(project, "quadrat_corner"), frame=frame, points=[],
                 source="manual", elements=elements)


@pytest.fixture
def stack(tmp_path):
    functions = {
        "grid-detector": e2e_function("grid_detector"),
        "coral-detector": e2e_function("frame_detector"),
        "fill-inpainter": load_function(FILL_INPAINTER),
    }
    with running_stack(tmp_path, functions, inpaint_function="fill-inpainter") as s:
        yield s


def make_projects(stack) -> tuple[int, int, int]:
    cvat = stack.cvat
    p1 = cvat.create_project("1 corners", label_export("corner_annotation_example"))
    p2 = cvat.create_project("2 grid", label_export("grid_annotation_example"))
    p3 = cvat.create_project("3 corals", CORAL_LABELS)
    stack.hook(p1, "/crop-quadrat-and-create-new-task-webhook", ["update:task"], target_proj_id=p2)
    stack.hook(p2, "/detect-model-webhook", ["update:job"], model_name="grid-detector")
    stack.hook(p2, "/remove-grid-and-create-new-task-webhook", ["update:task"], target_proj_id=p3, line_width=5)
    stack.hook(p3, "/detect-model-webhook", ["update:job"], model_name="coral-detector", conv_mask_to_poly=True)
    return p1, p2, p3


def test_three_stage_chain_with_redeliveries(stack):
    cvat = stack.cvat
    p1, p2, p3 = make_projects(stack)
    names = ["reef_a.png", "reef_b.png", "reef_c.png"]
    src = cvat.create_task(p1, "site 7", [(n, quadrat_photo(i)) for i, n in enumerate(names)], segment_size=2)
    for job_id in cvat.job_ids(src):
        job = cvat.job(job_id)
        frames = range(job["start_frame"], job["stop_frame"] + 1)
        annotate(stack, job_id, [corner_skeleton(cvat, p1, f) for f in frames])
    cvat.duplicate_deliveries = 3

    # stage 1 → 2
    cvat.complete_task(src)
    stack.settle()
    (warped,) = cvat.tasks(p2)
    assert cvat.frame_names(warped["id"]) == names
    assert warped["segment_size"] == 2 and "site 7" in warped["name"]
    grid_jobs = cvat.job_ids(warped["id"])
    assert all(cvat.job(j)["state"] == "in progress" for j in grid_jobs)
    warped_img = cv2.imdecode(np.frombuffer(cvat.frame_bytes(warped["id"], 0), np.uint8), cv2.IMREAD_COLOR)
    side = max(np.hypot(*np.subtract(CORNERS[i], CORNERS[(i + 1) % 4])) for i in range(4))
    assert warped_img.shape[:2] == (round(side), round(side))
    assert warped_img[5, 5].tolist() != [15, 15, 15]  # the dark surround is cropped away
    grids = [s for s in cvat.shapes(task_id=warped["id"]) if s["type"] == "skeleton"]
    assert len(grids) == 3 and all(len(g["elements"]) == 117 for g in grids)

    # stage 2 → 3
    cvat.complete_task(warped["id"])
    jobs = stack.settle()
    (clean,) = cvat.tasks(p3)
    assert cvat.frame_names(clean["id"]) == names
    img = cv2.imdecode(np.frombuffer(cvat.frame_bytes(clean["id"], 1), np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    green = (img[:, :, 1] > 200) & (img[:, :, 0] < 80) & (img[:, :, 2] < 80)
    lattice = [(c * (w - 1) / 10, r * (h - 1) / 10) for r in range(11) for c in range(11)
               if not (r in (0, 10) and c in (0, 10))]
    expected = grid_mask(np.array(lattice), (w, h), line_width=5) > 0
    iou = (green & expected).sum() / (green | expected).sum()
    assert iou > 0.9, iou  # exactly the grid lines went to the inpainter, nothing else
    coral_shapes = cvat.shapes(task_id=clean["id"])
    assert coral_shapes and all(s["source"] == "auto" for s in coral_shapes)
    assert {s["frame"] for s in coral_shapes} == {0, 1, 2}

    # each stage ran once per transition, whatever the redeliveries: 1 crop, 2 grid detects, 1 removal,
    # 2 coral detects
    by_pipeline = sorted((j["pipeline"], j["status"]) for j in jobs)
    assert by_pipeline == sorted([("crop_quadrat", "succeeded"), ("detect", "succeeded"), ("detect", "succeeded"),
                                  ("remove_grid", "succeeded"), ("detect", "succeeded"), ("detect", "succeeded")])

    # the source task is reopened and completed again: the existing task is reused, not duplicated
    for job_id in cvat.job_ids(src):
        cvat.set_job_stage(job_id, "annotation", "in progress")
    cvat.complete_task(src)
    again = stack.settle()
    assert len(cvat.tasks(p2)) == 1 and len(cvat.tasks(p3)) == 1
    latest = max((j for j in again if j["pipeline"] == "crop_quadrat"), key=lambda j: j["id"])
    assert latest["status"] == "succeeded" and "reused task" in latest["summary"]
    assert cvat.shapes(task_id=src) and all(s["source"] == "manual" for s in cvat.shapes(task_id=src))


def test_bad_corners_fail_the_job_with_every_frame_listed(stack):
    cvat = stack.cvat
    p1, p2, _ = make_projects(stack)
    src = cvat.create_task(p1, "site 8", [(f"q{i}.png", quadrat_photo(i)) for i in range(3)])
    (job_id,) = cvat.job_ids(src)
    swapped = [CORNERS[1], CORNERS[0], CORNERS[2], CORNERS[3]]
    annotate(stack, job_id, [corner_skeleton(cvat, p1, 0), corner_skeleton(cvat, p1, 1, swapped),
                             corner_skeleton(cvat, p1, 2, CORNERS[:3])])
    before = cvat.shapes(task_id=src)
    cvat.complete_task(src)
    (job,) = stack.settle(expect=1)
    assert job["status"] == "failed"
    assert "2 of 3 frames" in job["error"] and "frame 1" in job["error"] and "frame 2" in job["error"]
    detail = stack.job(job["id"])
    reasons = {e["frame"]: e["reason"] for e in detail["frame_errors"]}
    assert set(reasons) == {1, 2}
    assert "cross" in reasons[1] and "corner 4" in reasons[2]
    assert cvat.tasks(p2) == []  # no half task
    assert any("frame 1" in i["message"] for i in cvat.issues(job_id=job_id))
    assert cvat.shapes(task_id=src) == before  # the source task is untouched


def test_missing_target_labels_fail_fast(stack):
    cvat = stack.cvat
    p1 = cvat.create_project("corners", label_export("corner_annotation_example"))
    empty = cvat.create_project("no labels", [])
    stack.hook(p1, "/crop-quadrat-and-create-new-task-webhook", ["update:task"], target_proj_id=empty)
    src = cvat.create_task(p1, "site 9", [("q.png", quadrat_photo(0))])
    annotate(stack, cvat.job_ids(src)[0], [corner_skeleton(cvat, p1, 0)])
    cvat.complete_task(src)
    (job,) = stack.settle(expect=1)
    assert job["status"] == "failed" and f"target project {empty} has no labels" in job["error"]
    assert job["attempts"] == 1  # a permanent error is not retried
    assert cvat.tasks(empty) == []


def test_remove_grid_falls_back_to_telea_without_lama(tmp_path):
    functions = {"grid-detector": e2e_function("grid_detector")}
    with running_stack(tmp_path, functions, inpaint_function="pth-lama") as stack:
        cvat = stack.cvat
        p2 = cvat.create_project("grid", label_export("grid_annotation_example"))
        p3 = cvat.create_project("corals", CORAL_LABELS)
        stack.hook(p2, "/detect-model-webhook", ["update:job"], model_name="grid-detector")
        stack.hook(p2, "/webhooks/remove-grid", ["update:task"], target_proj_id=p3, line_width=3)
        # a warped quadrat with dark grid lines on a textured background
        img = np.full((150, 150, 3), 160, np.uint8)
        img[::7, :] = 180
        for k in range(11):
            v = round(k * 149 / 10)
            img[:, max(0, v - 1):v + 2] = 0
            img[max(0, v - 1):v + 2, :] = 0
        ok, png = cv2.imencode(".png", img)
        task = cvat.create_task(p2, "warped", [("w.png", png.tobytes())])
        cvat.set_job_state(cvat.job_ids(task)[0], "in progress")
        stack.settle(expect=1)
        cvat.complete_task(task)
        jobs = stack.settle(expect=2)
        removal = next(j for j in jobs if j["pipeline"] == "remove_grid")
        assert removal["status"] == "succeeded", removal
        assert stack.job(removal["id"])["notes"]["inpainter"] == "opencv-telea"
        (clean,) = cvat.tasks(p3)
        out = cv2.imdecode(np.frombuffer(cvat.frame_bytes(clean["id"], 0), np.uint8), cv2.IMREAD_GRAYSCALE)
        lines = img[:, :, 0] == 0
        before = np.abs(img[:, :, 0].astype(int) - 160)[lines].mean()
        after = np.abs(out.astype(int) - 160)[lines].mean()
        assert after < before / 4, (before, after)  # the dark lines are gone
