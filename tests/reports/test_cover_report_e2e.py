"""End to end on the CVAT double: source photos → warp → grid removal → coral detection and review →
the coral task is completed → the cover-report webhook writes one row per source photo; reopening
and completing the task again rewrites byte-identical files. Every webhook is delivered 3×."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridge.cvat.types import Shape
from bridge.geometry.polygons import polygon_to_mask
from tests.doubles.function_server import load_function
from tests.e2e.conftest import HERE, e2e_function, label_export
from tests.e2e.harness import annotate, running_stack
from tests.e2e.test_quadrat_chain_e2e import CORNERS, corner_skeleton, quadrat_photo

CORAL_LABELS = [{"name": "coral", "type": "polygon"}, {"name": "box", "type": "rectangle"},
                {"name": "Acropora", "type": "polygon"}, {"name": "Porites", "type": "polygon"}]
FILL_INPAINTER = HERE.parent / "nuclio" / "functions" / "fill_inpainter"
PHOTOS = ["reef_b.png", "reef_a.png", "reef_c.png"]
ACROPORA = [5.0, 5.0, 44.0, 5.0, 44.0, 24.0, 5.0, 24.0]  # 40 × 20 px
PORITES = [35.0, 15.0, 54.0, 15.0, 54.0, 34.0, 35.0, 34.0]  # 20 × 20 px, drawn over 100 px of Acropora


@pytest.fixture
def stack(tmp_path):
    functions = {"grid-detector": e2e_function("grid_detector"), "coral-detector": e2e_function("frame_detector"),
                 "fill-inpainter": load_function(FILL_INPAINTER)}
    with running_stack(tmp_path, functions, inpaint_function="fill-inpainter") as s:
        yield s


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_cover_report_from_source_photos_to_files(stack):
    cvat = stack.cvat
    p1 = cvat.create_project("1 corners", label_export("corner_annotation_example"))
    p2 = cvat.create_project("2 grid", label_export("grid_annotation_example"))
    p3 = cvat.create_project("3 corals", CORAL_LABELS)
    stack.hook(p1, "/crop-quadrat-and-create-new-task-webhook", ["update:task"], target_proj_id=p2)
    stack.hook(p2, "/detect-model-webhook", ["update:job"], model_name="grid-detector")
    stack.hook(p2, "/remove-grid-and-create-new-task-webhook", ["update:task"], target_proj_id=p3, line_width=5)
    stack.hook(p3, "/detect-model-webhook", ["update:job"], model_name="coral-detector", conv_mask_to_poly=True)
    stack.hook(p3, "/webhooks/cover-report", ["update:task"], quadrat_cm=50, points=30, plot=True)
    cvat.duplicate_deliveries = 3

    src = cvat.create_task(p1, "site 7", [(n, quadrat_photo(i)) for i, n in enumerate(PHOTOS)])
    (job,) = cvat.job_ids(src)
    annotate(stack, job, [corner_skeleton(cvat, p1, f) for f in range(3)])
    cvat.complete_task(src)
    stack.settle()
    (warped,) = cvat.tasks(p2)
    cvat.complete_task(warped["id"])
    stack.settle()
    (clean,) = cvat.tasks(p3)
    side = max(np.hypot(*np.subtract(CORNERS[i], CORNERS[(i + 1) % 4])) for i in range(4))
    w = h = round(side)

    # the reviewer adds two genera on every frame, Porites on top, then completes the task
    reviewer = [Shape("polygon", cvat.label_id(p3, "Acropora"), f, ACROPORA, source="manual") for f in range(3)]
    reviewer += [Shape("polygon", cvat.label_id(p3, "Porites"), f, PORITES, source="manual", z_order=1)
                 for f in range(3)]
    for job_id in cvat.job_ids(clean["id"]):
        j = cvat.job(job_id)
        annotate(stack, job_id, [s for s in reviewer if j["start_frame"] <= s.frame <= j["stop_frame"]])
    cvat.complete_task(clean["id"])
    jobs = stack.settle()
    (report_job,) = [j for j in jobs if j["pipeline"] == "cover_report"]
    assert report_job["status"] == "succeeded", report_job
    notes = stack.job(report_job["id"])["notes"]
    out = Path(notes["report_dir"])
    assert out == stack.settings.data_dir / "reports" / f"task-{clean['id']}"

    rows = rows_of(out / "cover_per_quadrat.csv")
    assert [r["source_name"] for r in rows] == PHOTOS  # one row per source photo, in the source's order
    assert [r["source_frame"] for r in rows] == ["0", "1", "2"]
    assert {r["source_task_id"] for r in rows} == {str(src)} and {r["task_id"] for r in rows} == {str(clean["id"])}
    reviewed = np.zeros((h, w), bool)
    reviewed[5:25, 5:45] = reviewed[15:35, 35:55] = True  # Acropora ∪ Porites: 1100 px
    for r in rows:
        frame = int(r["frame"])
        # the detector's traced blobs (the bright inpainted grid makes one the size of the frame), under
        # the reviewer's later shapes: only what they leave visible counts as coral
        coral = np.zeros((h, w), bool)
        for s in cvat.shapes(task_id=clean["id"]):
            if s["frame"] == frame and s["label_id"] == cvat.label_id(p3, "coral"):
                coral |= polygon_to_mask(s["points"], (w, h))
        coral_px = int((coral & ~reviewed).sum())
        assert coral_px > 0
        assert (r["width_px"], r["height_px"]) == (str(w), str(h))
        assert float(r["cover_pct:Acropora"]) == round(100 * 700 / (w * h), 4)
        assert float(r["cover_pct:Porites"]) == round(100 * 400 / (w * h), 4)
        assert float(r["cover_pct:coral"]) == round(100 * coral_px / (w * h), 4)
        assert float(r["unlabeled_pct"]) == round(100 * (w * h - 1100 - coral_px) / (w * h), 4)
    meta = json.loads((out / "report.json").read_text())
    assert meta["tasks"][0]["lineage"]["task_ids"] == [src, warped["id"], clean["id"]]
    assert meta["tasks"][0]["ignored_shapes"] == {"rectangle": 3}  # the detector's boxes are not cover
    points = rows_of(out / "coralnet_points.csv")
    assert len(points) == 90 and {p["Name"] for p in points} == set(PHOTOS)
    png = cv2.imdecode(np.frombuffer((out / "cover.png").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None

    # a reviewer sends the task back and completes it again, annotations unchanged: the same files.
    # ("rejected", not "in progress": that would rerun the detector, whose new shapes get new ids and so
    # are drawn over equal-z_order shapes drawn before them, which changes the cover, as it should.)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for job_id in cvat.job_ids(clean["id"]):
        cvat.set_job_stage(job_id, "annotation", "rejected")
    stack.settle()
    cvat.complete_task(clean["id"])
    again = stack.settle()
    reports = [j for j in again if j["pipeline"] == "cover_report"]
    assert len(reports) == 2 and all(j["status"] == "succeeded" for j in reports)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # not even rewritten
