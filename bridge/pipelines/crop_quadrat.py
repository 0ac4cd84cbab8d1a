"""``crop_quadrat``: when a corners task is completed, warp every frame by its 4 quadrat corners
(skeleton ``quadrat_corner``, sublabels 1..4 = TL, TR, BR, BL) into a new task of the target project.

validate (target project, source labels) → stream the source frames by chunk → validate corners and
warp (per-frame errors, all listed) → create the next task with the same frame names → jobs in progress.
"""

from __future__ import annotations

import numpy as np

from bridge.cvat.types import Shape
from bridge.geometry.warp import warp_quadrat
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.detect import same_model
from bridge.pipelines.next_task import one_skeleton, prepare_source, run_stage, skeleton_points
from bridge.pipelines.params import QuadratParams
from bridge.pipelines.spec import TASK_EVENTS, PipelineSpec, Route

CORNER_LABEL = "quadrat_corner"
STAGE = "quadrat"


def run(ctx: StepContext) -> PipelineResult:
    src = prepare_source(ctx, SPEC.name, CORNER_LABEL, 4)
    size = src.params.size or ctx.settings.warp_size

    def warp(frame: int, image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
        points = skeleton_points(one_skeleton(shapes, src.skeleton, frame), src.skeleton)
        return warp_quadrat(image, [points.get(i) for i in range(1, 5)], size).image

    return run_stage(ctx, src, STAGE, warp, concurrency=ctx.settings.frame_concurrency)


SPEC = PipelineSpec(
    name="crop_quadrat",
    params_model=QuadratParams,
    run=run,
    routes=(
        Route("/crop-quadrat-and-create-new-task-webhook",
              "Warp each frame by its quadrat corners into a new task in target_proj_id when the task is completed"),
        Route("/crop-quadrat-and-detect-grid-webhook",
              "Legacy: crop/warp into target_proj_id, then run pth-yolo-gridpose on the new task",
              fixed={"then_detect": "pth-yolo-gridpose"}, legacy=True),
        Route("/crop-quadrat-and-detect-corals-webhook",
              "Legacy: crop/warp into target_proj_id, then run pth-yolo-coralsegv4 on the new task",
              fixed={"then_detect": "pth-yolo-coralsegv4", "conv_mask_to_poly": True}, legacy=True),
        Route("/webhooks/crop-quadrat", "Crop/warp into a new task (clean route)"),
    ),
    trigger="task_completed",
    reads="task",  # CVAT builds the first chunk while the job is queued
    events=TASK_EVENTS,
    functions=lambda p, _s: [p.then_detect] if p.then_detect else [],
    same_results=lambda earlier, p, _s: bool(p.then_detect) and same_model(earlier, p.then_detect),
)
