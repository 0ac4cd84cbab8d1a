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
from bridge.pipelines.next_task import TaskStagePipeline, one_skeleton, prepare_source, run_stage, skeleton_points

CORNER_LABEL = "quadrat_corner"
STAGE = "quadrat"


class CropQuadratPipeline(TaskStagePipeline):
    name = "crop_quadrat"

    def run(self, ctx: StepContext) -> PipelineResult:
        src = prepare_source(ctx, self.name, CORNER_LABEL, 4)
        size = src.params.size or ctx.settings.warp_size

        def warp(frame: int, image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
            points = skeleton_points(one_skeleton(shapes, src.skeleton, frame), src.skeleton)
            return warp_quadrat(image, [points.get(i) for i in range(1, 5)], size).image

        return run_stage(ctx, src, STAGE, warp, concurrency=ctx.settings.frame_concurrency)


PIPELINE = CropQuadratPipeline()
