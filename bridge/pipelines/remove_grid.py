"""``remove_grid``: when a grid task is completed, paint the 117-point ``grid`` skeleton's lines out
of every frame (LaMa Nuclio function, or OpenCV Telea when none is deployed) into a new task.

The bridge builds the mask (``bridge.geometry.grid.grid_mask``: thick lines along every lattice row
and column, the lattice corners being the image corners) and sends image + mask to the inpainter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bridge.cvat.types import Shape
from bridge.errors import FunctionUnavailable, PermanentError
from bridge.geometry.grid import grid_mask, validate_grid_points
from bridge.geometry.images import decode_image, encode_image
from bridge.geometry.inpaint import inpaint_telea
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

GRID_LABEL = "grid"
GRID_POINTS = 117
STAGE = "grid removed"


def choose_inpainter(ctx: StepContext) -> str | None:
    """The LaMa function's name when it answers, None for the Telea fallback; raise when neither is allowed."""
    function = ctx.settings.inpaint_function
    if ctx.nuclio.ping(function):
        return function
    if ctx.settings.inpaint_fallback == "none":
        raise FunctionUnavailable(f"inpainting function '{function}' is not reachable and "
                                  "BRIDGE_INPAINT_FALLBACK=none; deploy it (nuclio_functions/lama) or allow 'telea'")
    ctx.log.warning("inpainting function %s not reachable: using OpenCV Telea instead", function)
    return None


def run_remove_grid(ctx: StepContext) -> PipelineResult:
    p = quadrat_params(ctx)
    task_id = ctx.trigger.task_id or ctx.trigger.resource_id
    if task_id is None:
        raise PermanentError("remove_grid needs a task event")
    source = ctx.cvat.get_task(task_id)
    check_target(ctx, p.target_proj_id, p.then_detect)
    if source.project_id == p.target_proj_id:
        raise PermanentError(f"target_proj_id {p.target_proj_id} is the source task's own project; "
                             "point it at the next stage's project")
    grid = skeleton_label(ctx.cvat.get_labels(task_id=task_id), GRID_LABEL, GRID_POINTS, f"task {task_id}")
    line_width = p.line_width or ctx.settings.grid_line_width
    function = choose_inpainter(ctx)
    ctx.progress.note("inpainter", function or "opencv-telea")

    def remove(frame: int, image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
        h, w = image.shape[:2]
        points = validate_grid_points(skeleton_points(one_skeleton(shapes, grid, frame), grid), (w, h))
        mask = grid_mask(points, (w, h), line_width=line_width, dilation=ctx.settings.grid_mask_dilation)
        if function is None:
            return inpaint_telea(image, mask)
        out = ctx.nuclio.inpaint(function, encode_image(image, "png"), encode_image(mask, "png"))
        return decode_image(out)

    concurrency = ctx.nuclio.concurrency_for(function) if function else ctx.settings.frame_concurrency

    def produce(out_dir: Path) -> Outcome:
        return transform_frames(ctx, source, remove, out_dir, concurrency=concurrency)

    return create_next_task(ctx, source=source, target_project=p.target_proj_id, stage=STAGE, produce=produce,
                            then_detect=p.then_detect, conv_mask_to_poly=p.conv_mask_to_poly)


class RemoveGridPipeline:
    name = "remove_grid"
    trigger = "task_completed"
    params_model = QuadratParams

    def run(self, ctx: StepContext) -> PipelineResult:
        return run_remove_grid(ctx)


PIPELINE = RemoveGridPipeline()
