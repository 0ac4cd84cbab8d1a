"""``/sam2-refine-webhook`` end to end: CVAT double → signed webhook → bridge worker → the REAL
``nuclio_functions/sam2`` handler (tiny randomly initialised SAM 2, served over HTTP) → shapes in CVAT.

Random weights make the masks meaningless; the checks are about which shapes are replaced by what
(type, label, frame, source, attributes, valid geometry), idempotent re-runs and failure reporting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from bridge.cvat.client import CvatClient
from bridge.cvat.types import Shape
from bridge.geometry.polygons import polygon_area
from tests.doubles.function_server import REPO, LoadedFunction, load_function
from tests.e2e.harness import Stack, running_stack

pytestmark = pytest.mark.functions
torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("sam2", reason="the functions' runtime (sam2) is not installed")

W, H = 128, 96
ROUTE = "/sam2-refine-webhook"
ENV = {"SAM2_CHECKPOINT": "", "SAM2_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml", "SAM2_DEVICE": "cpu",
       "SAM2_WARMUP": "0", "SAM2_CACHE_MB": "256", "SAM2_CACHE_TTL_S": "600"}
LABELS = [
    {"name": "coral", "attributes": [{"name": "kind", "input_type": "select", "values": ["hard", "soft"],
                                      "default_value": "hard", "mutable": True}]},
    {"name": "rock"},
]


def frame_png(i: int) -> bytes:
    """A small scene with drawn objects (a disk and a bar) that moves with ``i``."""
    img = np.full((H, W, 3), (60, 90 + 20 * i, 120), np.uint8)
    cv2.circle(img, (30 + 8 * i, 35), 16, (40, 230, 230), -1)
    cv2.rectangle(img, (70, 50 + 3 * i), (115, 80 + 3 * i), (200, 40, 30), -1)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def sam2_fn() -> LoadedFunction:
    torch.manual_seed(0)
    return load_function(REPO / "nuclio_functions" / "sam2", ENV)


@pytest.fixture
def stack(tmp_path: Path, sam2_fn: LoadedFunction) -> Iterator[Stack]:
    with running_stack(tmp_path, {"sam2": sam2_fn}, nuclio_timeout=300) as s:
        yield s


class Scene:
    """A project with ``LABELS`` and a one-job task of three frames; rectangles drawn on frames 0 and 1."""

    def __init__(self, stack: Stack):
        self.stack = stack
        cvat = stack.cvat
        self.project = cvat.create_project("reef", LABELS)
        self.task = cvat.create_task(self.project, "survey", [(f"f{i}.png", frame_png(i)) for i in range(3)])
        (self.job,) = cvat.job_ids(self.task)
        self.coral, self.rock = cvat.label_id(self.project, "coral"), cvat.label_id(self.project, "rock")

    def draw(self) -> list[int]:
        """The annotator's prompts (through the CVAT REST API, source ``manual``)."""
        with CvatClient(self.stack.cvat.url, access_token="test-token", timeout=10) as client:
            (coral,) = [lab for lab in client.get_labels(job_id=self.job) if lab.name == "coral"]
            kind = coral.attributes["kind"].id
            shapes = [
                Shape("rectangle", self.coral, 0, [12.0, 17.0, 48.0, 53.0], source="manual", attributes={kind: "soft"}),
                Shape("rectangle", self.rock, 0, [68.0, 48.0, 117.0, 82.0], source="manual"),
                Shape("rectangle", self.coral, 1, [20.0, 18.0, 58.0, 54.0], source="manual"),
                Shape("points", self.rock, 1, [92.0, 70.0], source="manual"),
            ]
            return client.create_shapes(self.job, shapes)

    def shapes(self) -> list[dict]:
        return self.stack.cvat.shapes(job_id=self.job)

    def start(self, expect: int) -> list[dict]:
        """The annotator opens the job (state → in progress); waits for the bridge to finish."""
        self.stack.cvat.set_job_state(self.job, "in progress")
        jobs = self.stack.settle(timeout=300, expect=expect)
        return sorted((j for j in jobs if j["pipeline"] == "sam2_refine"), key=lambda j: j["id"])

    def reopen(self, expect: int) -> list[dict]:
        self.stack.cvat.set_job_state(self.job, "new")
        return self.start(expect)


def test_rectangles_become_polygons_and_a_rerun_adds_nothing(stack: Stack) -> None:
    scene = Scene(stack)
    stack.hook(scene.project, ROUTE, ["update:job"], function="sam2")
    prompts = scene.draw()
    (job,) = scene.start(expect=1)
    assert job["status"] == "succeeded", job
    assert job["frame_errors"] == [] and job["progress"] == {"done": 2, "total": 2}
    shapes = scene.shapes()
    assert not {s["id"] for s in shapes} & set(prompts)  # the prompts are gone
    assert sorted((s["frame"], s["label_id"]) for s in shapes) == sorted(
        [(0, scene.coral), (0, scene.rock), (1, scene.coral), (1, scene.rock)])
    for s in shapes:
        assert s["type"] == "polygon" and s["source"] == "semi-auto"
        pts = np.asarray(s["points"]).reshape(-1, 2)
        assert len(pts) >= 3 and polygon_area(s["points"]) > 0
        assert pts.min() >= 0 and pts[:, 0].max() <= W and pts[:, 1].max() <= H
    soft = [s for s in shapes if s["attributes"] and s["attributes"][0]["value"] == "soft"]
    assert len(soft) == 1 and soft[0]["frame"] == 0 and soft[0]["label_id"] == scene.coral
    assert "4 polygons written" in job["summary"]

    # the annotator reopens the job: nothing to refine any more, nothing duplicated
    jobs = scene.reopen(expect=2)
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert jobs[-1]["summary"].startswith("no prompts")
    assert sorted(s["id"] for s in scene.shapes()) == sorted(s["id"] for s in shapes)
    assert stack.cvat.issues(job_id=scene.job) == []


def test_masks_with_kept_prompts_are_replaced_on_a_rerun(stack: Stack) -> None:
    scene = Scene(stack)
    stack.hook(scene.project, ROUTE, ["update:job"], function="sam2", conv_mask_to_poly=False, keep_prompts=True)
    prompts = set(scene.draw())
    (job,) = scene.start(expect=1)
    assert job["status"] == "succeeded", job
    first = {s["id"]: s for s in scene.shapes() if s["id"] not in prompts}
    assert prompts <= {s["id"] for s in scene.shapes()} and len(first) == 4
    for s in first.values():
        assert s["type"] == "mask" and s["source"] == "semi-auto"
        mask = decode_mask(s["points"], image_width=W, image_height=H)
        assert mask.shape == (H, W) and mask.any()
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert s["points"][-4:] == [cols[0], rows[0], cols[-1], rows[-1]]  # tight inclusive bbox

    jobs = scene.reopen(expect=2)
    assert jobs[-1]["status"] == "succeeded" and "4 from an earlier run replaced" in jobs[-1]["summary"]
    second = {s["id"]: s for s in scene.shapes() if s["id"] not in prompts}
    assert len(second) == 4 and not set(first) & set(second)
    key = sorted((s["frame"], s["label_id"], tuple(s["points"])) for s in first.values())
    # same image, same prompts, same (cached) embedding: the same masks again
    assert sorted((s["frame"], s["label_id"], tuple(s["points"])) for s in second.values()) == key


def test_an_unknown_function_fails_the_job_with_a_cvat_issue(stack: Stack) -> None:
    scene = Scene(stack)
    stack.hook(scene.project, ROUTE, ["update:job"], function="no-such-sam")
    prompts = scene.draw()
    (job,) = scene.start(expect=1)
    assert job["status"] == "failed" and "no-such-sam" in (job["error"] or "")
    assert sorted(s["id"] for s in scene.shapes()) == sorted(prompts)  # nothing deleted
    # the issue is opened right after the job is marked failed (the worker's finish hook)
    issues = stack.wait_for(lambda: stack.cvat.issues(job_id=scene.job), 10, "the failure's CVAT issue")
    assert "sam2_refine" in issues[-1]["message"]
