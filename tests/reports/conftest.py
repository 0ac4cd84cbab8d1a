"""A three-stage chain of tasks in the CVAT double, named as the bridge names them, with coral shapes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from bridge.cvat.client import CvatClient
from bridge.cvat.types import Shape, TaskInfo
from bridge.geometry.rle import mask_to_cvat_rle
from bridge.pipelines.next_task import next_task_name
from tests.doubles.cvat_double import CvatDouble
from tests.e2e.conftest import label_export

TOKEN = "test-token"
NAMES = ["reef_b.png", "reef_a.png", "reef_c.png"]  # upload order is not name order
CORAL_LABELS = [{"name": "Acropora", "type": "polygon"}, {"name": "Porites", "type": "polygon"},
                {"name": "Pocillopora", "type": "mask"}, {"name": "box", "type": "rectangle"}]
SIDE = 100
ACROPORA = [10, 10, 49, 10, 49, 29, 10, 29]  # 800 px
PORITES = [40, 20, 59, 20, 59, 39, 40, 39]  # 400 px, on top of 100 px of Acropora (z_order 1)


def png(width: int, height: int, seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


def pocillopora_mask() -> list[int]:
    mask = np.zeros((SIDE, SIDE), bool)
    mask[70:80, 70:90] = True  # 200 px
    return mask_to_cvat_rle(mask)


@dataclass
class Chain:
    cvat: CvatDouble
    corners_project: int
    grid_project: int
    coral_project: int
    source: int
    warped: int
    coral: int


def make_chain(cvat: CvatDouble, prefix: str = "site 7") -> Chain:
    p1 = cvat.create_project(f"{prefix} corners", label_export("corner_annotation_example"))
    p2 = cvat.create_project(f"{prefix} grid", label_export("grid_annotation_example"))
    p3 = cvat.create_project(f"{prefix} corals", CORAL_LABELS)
    src = cvat.create_task(p1, prefix, [(n, png(160, 120, i)) for i, n in enumerate(NAMES)])
    src_info = TaskInfo(src, prefix, p1, 3, "", 0, "annotation")
    warped_name = next_task_name(src_info, "quadrat")
    warped = cvat.create_task(p2, warped_name, [(n, png(SIDE, SIDE, 10 + i)) for i, n in enumerate(sorted(NAMES))])
    coral_name = next_task_name(TaskInfo(warped, warped_name, p2, 3, "", 0, "annotation"), "grid removed")
    coral = cvat.create_task(p3, coral_name, [(n, png(SIDE, SIDE, 20 + i)) for i, n in enumerate(sorted(NAMES))],
                             segment_size=2)
    return Chain(cvat, p1, p2, p3, src, warped, coral)


def draw_corals(chain: Chain, frames: dict[int, list[Shape]]) -> None:
    """Write shapes (by task frame) into the coral task's jobs, as annotators would."""
    with CvatClient(chain.cvat.url, access_token=TOKEN, timeout=10, retries=0) as client:
        for job_id in chain.cvat.job_ids(chain.coral):
            job = chain.cvat.job(job_id)
            shapes = [s for f in range(job["start_frame"], job["stop_frame"] + 1) for s in frames.get(f, [])]
            if shapes:
                client.create_shapes(job_id, shapes)


def standard_shapes(chain: Chain) -> dict[int, list[Shape]]:
    """Frame 0: Acropora under Porites; frame 1: Acropora + a Pocillopora mask + a prompt box; frame 2: none."""
    lid = lambda name: chain.cvat.label_id(chain.coral_project, name)  # noqa: E731
    return {
        0: [Shape("polygon", lid("Acropora"), 0, list(map(float, ACROPORA)), source="manual"),
            Shape("polygon", lid("Porites"), 0, list(map(float, PORITES)), source="manual", z_order=1)],
        1: [Shape("polygon", lid("Acropora"), 1, list(map(float, ACROPORA)), source="manual"),
            Shape("mask", lid("Pocillopora"), 1, [float(v) for v in pocillopora_mask()], source="auto"),
            Shape("rectangle", lid("box"), 1, [0.0, 0.0, 99.0, 99.0], source="manual")],
    }


@pytest.fixture(scope="module")
def cvat():
    with CvatDouble() as double:
        yield double


@pytest.fixture
def client(cvat):
    c = CvatClient(cvat.url, access_token=TOKEN, timeout=10, retries=0)
    yield c
    c.close()
