"""``crop_quadrat``: when a corners task is completed, warp every frame by its 4 quadrat corners
(skeleton ``quadrat_corner``, sublabels 1..4 = TL, TR, BR, BL) into a new task of the target project.

validate (target project, source labels) → stream the source frames by chunk → validate corners and
warp (per-frame errors, all listed) → create the next task with the same frame names → jobs in progress.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bridge.cvat.types import Shape
from bridge.errors import PermanentError
from bridge.geometry.warp import warp_quadrat
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.next_task import (
    Outcome,
    check_target,
    create_next_task,
    one_skeleton,
    quadrat_params,
    skeleton_label,
    skeleton_points,
    transform_frames,
)
from bridge.pipelines.params import QuadratParams

CORNER_LABEL = "quadrat_corner"
STAGE = "quadrat"


def run_crop(ctx: StepContext) -> PipelineResult:
    p = quadrat_params(ctx)
    task_id = ctx.trigger.task_id or ctx.trigger.resource_id
    if task_id is None:
        raise PermanentError("crop_quadrat needs a task event")
    source = ctx.cvat.get_task(task_id)
    check_target(ctx, p.target_proj_id, p.then_detect)
    if source.project_id == p.target_proj_id:
        raise PermanentError(f"target_proj_id {p.target_proj_id} is the source task's own project; "
                             "point it at the next stage's project")
    corner = skeleton_label(ctx.cvat.get_labels(task_id=task_id), CORNER_LABEL, 4, f"task {task_id}")
    size = p.size or ctx.settings.warp_size

    def warp(frame: int, image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
        points = skeleton_points(one_skeleton(shapes, corner, frame), corner)
        return warp_quadrat(image, [points.get(i) for i in range(1, 5)], size).image

    def produce(out_dir: Path) -> Outcome:
        return transform_frames(ctx, source, warp, out_dir, concurrency=ctx.settings.frame_concurrency)

    return create_next_task(ctx, source=source, target_project=p.target_proj_id, stage=STAGE, produce=produce,
                            then_detect=p.then_detect, conv_mask_to_poly=p.conv_mask_to_poly)


class CropQuadratPipeline:
    name = "crop_quadrat"
    trigger = "task_completed"
    params_model = QuadratParams

    def run(self, ctx: StepContext) -> PipelineResult:
        return run_crop(ctx)


PIPELINE = CropQuadratPipeline()
