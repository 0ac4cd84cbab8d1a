"""``sam2_refine`` on the CVAT double through the real ``CvatClient`` and ``NuclioClient``.

The SAM 2 stand-in (``seg``, written below) answers the batch protocol with exact masks: a box prompt
fills its box, a point prompt a disk of radius 6 per point; it fails the whole frame when the
image's top-left pixel is pure red and answers a per-prompt error for a point prompt in the
top-left 4x4 corner. It records every call, so the tests see what was uploaded and prompted.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from bridge.config import Settings
from bridge.cvat.client import CvatClient
from bridge.cvat.types import Shape
from bridge.errors import CvatUnavailable, LabelMismatch, PermanentError
from bridge.events import Trigger
from bridge.geometry.polygons import polygon_area, polygon_to_mask
from bridge.nuclio.client import NuclioClient
from bridge.pipelines.base import MemoryProgress, StepContext
from bridge.pipelines.params import DetectParams, Sam2RefineParams
from bridge.pipelines.registry import load_pipeline
from bridge.pipelines.sam2_refine import SPEC as PIPELINE
from bridge.pipelines.sam2_refine import refine_job
from tests.doubles.cvat_double import CvatDouble
from tests.doubles.function_server import LoadedFunction, free_port, load_function, serve_in_thread

W, H = 128, 96
TOKEN = "test-token"
BOX_SEGMENTER = Path(__file__).resolve().parents[1] / "nuclio" / "functions" / "box_segmenter"

SEG_MAIN = '''
import base64

import cv2
import numpy as np
from cvat_sdk.masks import encode_mask


def init_context(context):
    context.user_data.calls = []


def handler(context, event):
    body = event.body
    img = cv2.imdecode(np.frombuffer(base64.b64decode(body["image"]), np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    context.user_data.calls.append({"size": [w, h], "prompts": body["prompts"]})
    if tuple(int(v) for v in img[0, 0]) == (0, 0, 255):
        raise RuntimeError("the model crashed on this frame")
    results = []
    for p in body["prompts"]:
        mask = np.zeros((h, w), np.uint8)
        if p.get("bbox") is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in p["bbox"])
            mask[y1:y2, x1:x2] = 1
        points = p.get("pos_points") or []
        if points and p.get("bbox") is None and all(x < 4 and y < 4 for x, y in points):
            results.append({"error": "no object under the point"})
            continue
        for x, y in points:
            cv2.circle(mask, (int(round(x)), int(round(y))), 6, 1, -1)
        results.append({"mask": encode_mask(mask.astype(bool)), "polygons": [], "score": 0.8})
    return {"results": results}
'''

LABELS = [
    {"name": "coral", "attributes": [{"name": "kind", "input_type": "select", "values": ["hard", "soft"],
                                      "default_value": "hard", "mutable": True}]},
    {"name": "rock"},
    {"name": "boxes-only", "type": "rectangle"},
]


def frame_png(i: int, *, red_corner: bool = False) -> bytes:
    img = np.full((H, W, 3), (40 + 30 * i, 90, 120), np.uint8)
    cv2.circle(img, (40 + 10 * i, 50), 18, (230, 230, 40), -1)
    if red_corner:
        img[0, 0] = (0, 0, 255)  # BGR red: ``seg`` fails this frame
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def functions(tmp_path_factory) -> dict[str, LoadedFunction]:
    seg_dir = tmp_path_factory.mktemp("fns") / "seg"
    seg_dir.mkdir()
    (seg_dir / "main.py").write_text(textwrap.dedent(SEG_MAIN))
    return {"seg": load_function(seg_dir), "box_segmenter": load_function(BOX_SEGMENTER)}


@pytest.fixture(scope="module")
def stack(functions) -> Iterator[tuple[CvatDouble, CvatClient, NuclioClient]]:
    with CvatDouble() as cvat, serve_in_thread(functions, max_workers=2) as url:
        client = CvatClient(cvat.url, access_token=TOKEN, timeout=10, retries=0)
        nuclio = NuclioClient(function_url=url + "/{name}", dashboard_url=f"http://127.0.0.1:{free_port()}",
                              backoff_base=0.01, backoff_max=0.05, timeout=10.0, retries=1)
        try:
            yield cvat, client, nuclio
        finally:
            client.close()
            nuclio.close()


@pytest.fixture
def seg_calls(functions) -> list[dict]:
    calls = functions["seg"].context.user_data.calls
    calls.clear()
    return calls


class Job:
    """One project with ``LABELS`` and a one-job task of ``frames`` frames (red corner on ``red``)."""

    def __init__(self, stack, frames: int = 3, red: tuple[int, ...] = ()):
        self.cvat, self.client, self.nuclio = stack
        self.project = self.cvat.create_project("reef", LABELS)
        images = [(f"f{i}.png", frame_png(i, red_corner=i in red)) for i in range(frames)]
        self.task = self.cvat.create_task(self.project, "survey", images, chunk_size=2)
        (self.id,) = self.cvat.job_ids(self.task)

    def label(self, name: str) -> int:
        return self.cvat.label_id(self.project, name)

    def attr(self, label: str, name: str) -> int:
        (spec,) = [a for a in self.client.get_labels(job_id=self.id) if a.name == label]
        return spec.attributes[name].id

    def draw(self, *shapes: tuple[str, str, int, list[float]], source: str = "manual",
             attributes: dict[int, str] | None = None) -> list[int]:
        """Add ``(type, label, frame, points)`` shapes as an annotator would."""
        return self.client.create_shapes(self.id, [
            Shape(type=t, label_id=self.label(label), frame=frame, points=[float(v) for v in points],
                  source=source, attributes=dict(attributes or {}))
            for t, label, frame, points in shapes])

    def shapes(self) -> list[dict]:
        return self.cvat.shapes(job_id=self.id)

    def ctx(self, previous: dict[str, Any] | None = None, params: Any = None, **settings_kw: Any) -> StepContext:
        settings = Settings(_env_file=None, cvat_url=self.cvat.url, cvat_access_token=TOKEN, allow_unsigned=True,
                            sam2_function="seg", **settings_kw)
        trigger = Trigger(kind="job_in_progress", resource="job", resource_id=self.id, project_id=self.project,
                          task_id=self.task, job_id=self.id, event="update:job")
        return StepContext(trigger=trigger, params=params or Sam2RefineParams(), settings=settings, cvat=self.client,
                           nuclio=self.nuclio, progress=MemoryProgress(), previous=previous or {})


def earlier(ctx: StepContext) -> dict[str, Any]:
    """``ctx.previous`` of a later job of the same pipeline on the same CVAT job (as the store builds it)."""
    params = ctx.params.model_dump()
    return {"earlier_runs": [{**o, "params": params} for o in ctx.progress.objects]}  # type: ignore[attr-defined]


def by_id(shapes: list[dict]) -> dict[int, dict]:
    return {s["id"]: s for s in shapes}


def box_area(x1: int, y1: int, x2: int, y2: int) -> int:
    return (x2 - x1) * (y2 - y1)


# ----------------------------------------------------------------------------------------------- tests

def test_pipeline_is_registered() -> None:
    assert load_pipeline("sam2_refine") is PIPELINE
    assert PIPELINE.name == "sam2_refine" and PIPELINE.params_model is Sam2RefineParams


def test_rectangles_and_points_become_polygons_of_the_same_label(stack, seg_calls) -> None:
    job = Job(stack, frames=3)
    kind = job.attr("coral", "kind")
    job.draw(("rectangle", "coral", 0, [10, 20, 50, 60]), attributes={kind: "soft"})
    job.draw(("rectangle", "coral", 0, [70, 20, 110, 60]), ("points", "rock", 2, [90, 40, 96, 44]),
             ("points", "rock", 2, [30, 30]))
    manual, = job.draw(("polygon", "rock", 0, [100, 10, 120, 10, 120, 30]))
    before = by_id(job.shapes())

    ctx = job.ctx()
    result = PIPELINE.run(ctx)

    after = job.shapes()
    new = [s for s in after if s["id"] not in before]
    assert result.shapes_written == len(new) == 4 and result.frames_failed == 0
    assert sorted(result.created["shapes"]) == sorted(s["id"] for s in new)
    assert all(s["type"] == "polygon" and s["source"] == "semi-auto" for s in new)
    # prompts deleted, the manual polygon untouched
    assert {s["id"] for s in after} - {s["id"] for s in new} == {manual}
    coral = [s for s in new if s["label_id"] == job.label("coral")]
    rock = [s for s in new if s["label_id"] == job.label("rock")]
    assert len(coral) == 2 and all(s["frame"] == 0 for s in coral)
    assert len(rock) == 2 and all(s["frame"] == 2 for s in rock)
    assert [{"spec_id": kind, "value": "soft"}] in [s["attributes"] for s in coral]
    # a box mask [x1, x2) x [y1, y2) traced into a polygon through the boundary pixel centres
    for s in coral:
        filled = polygon_to_mask(s["points"], (W, H))
        x1 = 10 if filled[20, 10] else 70
        assert filled[20:60, x1:x1 + 40].all() and filled.sum() == box_area(x1, 20, x1 + 40, 60)
    # a points shape is one prompt with all its points: one blob covering both disks
    two = next(s for s in rock if polygon_to_mask(s["points"], (W, H))[40, 90])
    filled = polygon_to_mask(two["points"], (W, H))
    assert filled[44, 96] and not filled[30, 30] and 150 < polygon_area(two["points"]) < 400
    # one upload per frame with prompts (frame 1 has none), every prompt of a frame in that call
    assert sorted(len(c["prompts"]) for c in seg_calls) == [2, 2] and all(c["size"] == [W, H] for c in seg_calls)
    points_prompts = [p for c in seg_calls for p in c["prompts"] if p["bbox"] is None]
    assert [[90, 40], [96, 44]] in [p["pos_points"] for p in points_prompts]
    assert ctx.progress.total == 2 and ctx.progress.done == 2  # type: ignore[attr-defined]


def test_function_polygons_are_used_and_clipped(stack) -> None:
    job = Job(stack, frames=1)
    job.draw(("rectangle", "coral", 0, [-5, 30.5, 40, 70]))  # partly outside the image
    result = refine_job(job.ctx(), job.id, "box_segmenter", conv_mask_to_poly=True, keep_prompts=False)
    (shape,) = job.shapes()
    assert result.shapes_written == 1 and shape["type"] == "polygon"
    # box_segmenter answers the prompt box itself as the polygon; the prompt was clipped at x = 0
    assert shape["points"] == [0.0, 30.5, 40.0, 30.5, 40.0, 70.0, 0.0, 70.0]


def test_masks_mode_writes_cvat_masks(stack) -> None:
    job = Job(stack, frames=2)
    job.draw(("rectangle", "coral", 1, [5, 6, 45, 36]), ("points", "rock", 1, [100, 70]))
    ctx = job.ctx(params=Sam2RefineParams(conv_mask_to_poly=False))
    result = PIPELINE.run(ctx)
    shapes = job.shapes()
    assert result.shapes_written == 2 and len(shapes) == 2
    assert all(s["type"] == "mask" and s["source"] == "semi-auto" and s["frame"] == 1 for s in shapes)
    coral = next(s for s in shapes if s["label_id"] == job.label("coral"))
    rock = next(s for s in shapes if s["label_id"] == job.label("rock"))
    mask = decode_mask(coral["points"], image_width=W, image_height=H)
    assert mask.shape == (H, W) and mask.sum() == box_area(5, 6, 45, 36) and mask[6:36, 5:45].all()
    assert coral["points"][-4:] == [5, 6, 44, 35]  # tight inclusive bbox
    disk = decode_mask(rock["points"], image_width=W, image_height=H)
    assert disk[70, 100] and 100 < disk.sum() < 140  # a radius-6 disk
    assert rock["points"][-4:] == [94, 64, 106, 76]
    assert "2 masks written" in result.summary


def test_label_filter_and_label_types(stack, seg_calls) -> None:
    job = Job(stack, frames=1)
    coral, rock, boxed = job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]),
                                  ("rectangle", "rock", 0, [50, 10, 90, 40]),
                                  ("rectangle", "boxes-only", 0, [10, 50, 40, 90]))
    ctx = job.ctx(params=Sam2RefineParams(labels="coral, nope"))
    result = PIPELINE.run(ctx)
    ids = by_id(job.shapes())
    assert coral not in ids and rock in ids and boxed in ids and result.shapes_written == 1
    assert [p["bbox"] for c in seg_calls for p in c["prompts"]] == [[10, 10, 40, 40]]
    assert ctx.progress.notes["labels_not_in_job"] == ["nope"]  # type: ignore[attr-defined]

    # a rectangle-only label cannot hold the polygon: skipped with a reason, nothing else happens
    ctx = job.ctx(params=Sam2RefineParams(labels="boxes-only"))
    result = PIPELINE.run(ctx)
    assert result.shapes_written == 0 and boxed in by_id(job.shapes()) and result.summary.startswith("no prompts")
    assert "cannot hold a polygon" in ctx.progress.notes["sam2_skipped_prompts"][0]  # type: ignore[attr-defined]

    with pytest.raises(LabelMismatch, match="none of the labels"):
        PIPELINE.run(job.ctx(params=Sam2RefineParams(labels="nope")))


def test_keep_prompts_rerun_replaces_instead_of_duplicating(stack) -> None:
    job = Job(stack, frames=2)
    prompts = set(job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]), ("points", "rock", 1, [60, 60])))
    params = Sam2RefineParams(keep_prompts=True)
    first = job.ctx(params=params)
    r1 = PIPELINE.run(first)
    results1 = {s["id"] for s in job.shapes()} - prompts
    assert r1.shapes_written == 2 and len(results1) == 2 and prompts <= {s["id"] for s in job.shapes()}

    second = job.ctx(params=params, previous=earlier(first))
    r2 = PIPELINE.run(second)
    shapes = job.shapes()
    results2 = {s["id"] for s in shapes} - prompts
    assert r2.shapes_written == 2 and "2 from an earlier run replaced" in r2.summary
    assert len(shapes) == 4 and not results1 & results2 and set(r2.created["shapes"]) == results2

    # a run that prompts only coral replaces only the coral result; the rock result stays
    third = job.ctx(params=Sam2RefineParams(keep_prompts=True, labels="coral"),
                    previous={"earlier_runs": earlier(first)["earlier_runs"] + earlier(second)["earlier_runs"]})
    PIPELINE.run(third)
    shapes = by_id(job.shapes())
    assert len(shapes) == 4 and prompts <= set(shapes)
    rock_result = [i for i in results2 if shapes.get(i, {}).get("label_id") == job.label("rock")]
    assert len(rock_result) == 1  # the rock result of run 2 survives the coral-only run


def test_rerun_after_prompts_were_deleted_writes_nothing(stack, seg_calls) -> None:
    job = Job(stack, frames=1)
    job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]))
    first = job.ctx()
    PIPELINE.run(first)
    (result,) = job.shapes()
    seg_calls.clear()
    again = PIPELINE.run(job.ctx(previous=earlier(first)))
    assert again.summary.startswith("no prompts") and again.shapes_written == 0
    assert [s["id"] for s in job.shapes()] == [result["id"]] and seg_calls == []


def test_a_failing_frame_is_reported_and_the_others_are_written(stack) -> None:
    job = Job(stack, frames=3, red=(1,))
    ok0, bad, ok2, corner = job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]),
                                     ("rectangle", "coral", 1, [10, 10, 40, 40]),
                                     ("rectangle", "rock", 2, [10, 10, 40, 40]),
                                     ("points", "rock", 2, [1, 2]))  # per-prompt error
    ctx = job.ctx()
    result = PIPELINE.run(ctx)
    ids = by_id(job.shapes())
    assert result.frames_failed == 2 and result.partial and result.shapes_written == 2
    errors = ctx.progress.errors  # type: ignore[attr-defined]
    assert set(errors) == {1, 2}
    assert "crashed" in errors[1] or "500" in errors[1]
    assert f"points #{corner}: no object under the point" in errors[2]
    # prompts are deleted only where their result was written
    assert ok0 not in ids and ok2 not in ids and bad in ids and corner in ids
    assert {s["frame"] for s in ids.values() if s["source"] == "semi-auto"} == {0, 2}


def test_every_frame_failing_raises(stack) -> None:
    job = Job(stack, frames=2, red=(0, 1))
    prompts = set(job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]), ("rectangle", "coral", 1, [5, 5, 20, 20])))
    with pytest.raises(PermanentError, match="all 2 frames with prompts failed"):
        PIPELINE.run(job.ctx())
    assert {s["id"] for s in job.shapes()} == prompts


def test_empty_job_succeeds_without_calls(stack, seg_calls) -> None:
    job = Job(stack, frames=2)
    job.draw(("polygon", "coral", 0, [10, 10, 40, 10, 40, 40]))
    ours = job.draw(("rectangle", "coral", 1, [1, 1, 9, 9]), source="semi-auto")
    # a rectangle written by an earlier run of ours is never a prompt
    ctx = job.ctx(previous={"earlier_runs": [{"kind": "shape", "id": i, "params": {}} for i in ours]})
    result = PIPELINE.run(ctx)
    assert result.summary.startswith("no prompts") and result.shapes_written == 0 and seg_calls == []
    assert len(job.shapes()) == 2


def test_only_ids_refines_exactly_the_given_detector_shapes(stack, seg_calls) -> None:
    job = Job(stack, frames=1)
    rect, mask_id, other = job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]),
                                    ("mask", "rock", 0, [0, 600, 60, 70, 89, 89]),  # 30x20 box at (60, 70)
                                    ("rectangle", "coral", 0, [50, 10, 90, 40]), source="auto")
    manual, = job.draw(("rectangle", "coral", 0, [1, 50, 30, 90]))
    ctx = job.ctx(params=DetectParams(model_name="det", refine=True))
    result = refine_job(ctx, job.id, "seg", only_ids={rect, mask_id}, conv_mask_to_poly=True, keep_prompts=False)
    ids = by_id(job.shapes())
    assert result.shapes_written == 2 and rect not in ids and mask_id not in ids
    assert other in ids and manual in ids
    bboxes = sorted(p["bbox"] for c in seg_calls for p in c["prompts"])
    assert bboxes == [[10, 10, 40, 40], [60, 70, 90, 90]]  # the mask's inclusive bbox as an exclusive box
    assert ctx.progress.total == 0  # type: ignore[attr-defined]  # the caller's progress is left alone


def test_resume_after_a_crash_deletes_prompts_without_writing_twice(stack, seg_calls, monkeypatch) -> None:
    job = Job(stack, frames=2)
    prompts = set(job.draw(("rectangle", "coral", 0, [10, 10, 40, 40]), ("rectangle", "rock", 1, [20, 20, 60, 60])))
    first = job.ctx()

    def crash(*_a: Any, **_k: Any) -> None:
        raise CvatUnavailable("CVAT went away")

    with monkeypatch.context() as m:
        m.setattr(job.client, "delete_shapes", crash)
        with pytest.raises(CvatUnavailable):
            PIPELINE.run(first)
    written = {s["id"] for s in job.shapes()} - prompts
    assert len(written) == 2 and prompts <= {s["id"] for s in job.shapes()}
    assert first.progress.notes["sam2_frames_done"] == [0, 1]  # type: ignore[attr-defined]

    seg_calls.clear()
    retry = job.ctx(previous={"objects": first.progress.objects, "notes": first.progress.notes})  # type: ignore[attr-defined]
    result = PIPELINE.run(retry)
    assert seg_calls == [] and result.shapes_written == 0
    assert {s["id"] for s in job.shapes()} == written  # prompts gone, results kept once


def test_detect_chains_into_refine(stack, monkeypatch) -> None:
    """``detect`` with ``refine=true`` hands its new shapes to ``refine_job`` (detector answer faked)."""
    from bridge.pipelines.detect import SPEC as DETECT

    job = Job(stack, frames=1)
    params = DetectParams(model_name="box_segmenter", refine=True, sam2_function="seg")
    ctx = job.ctx(params=params)

    def fake_detect(_function: str, _image: bytes, *, threshold: float | None = None) -> list[dict]:
        return [{"label": "coral", "type": "rectangle", "points": [10, 10, 40, 40], "confidence": 0.9},
                {"label": "rock", "type": "rectangle", "points": [50, 20, 70, 60], "confidence": 0.8}]

    monkeypatch.setattr(ctx.nuclio, "detect", fake_detect)
    result = DETECT.run(ctx)
    shapes = job.shapes()
    assert sorted(s["type"] for s in shapes) == ["polygon", "polygon"]
    assert all(s["source"] == "semi-auto" for s in shapes) and "SAM 2 refine" in result.summary
    # a re-run of the same detector replaces the refined shapes of the first run
    DETECT.run(job.ctx(params=params, previous=earlier(ctx)))
    shapes2 = job.shapes()
    assert len(shapes2) == 2 and not {s["id"] for s in shapes} & {s["id"] for s in shapes2}
