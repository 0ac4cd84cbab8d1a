"""``remove_grid``: when a grid task is completed, paint the 117-point ``grid`` skeleton's lines out
of every frame (LaMa Nuclio function, or OpenCV Telea when none is deployed) into a new task.

The bridge builds the mask (``bridge.geometry.grid.grid_mask``: thick lines along every lattice row
and column, the lattice corners being the image corners) and sends image + mask to the inpainter
(``{"image", "mask"}`` base64 PNGs in, ``{"image"}`` out; see nuclio_functions/lama/README.md).
"""

from __future__ import annotations

import numpy as np

from bridge.cvat.types import Shape
from bridge.errors import FunctionUnavailable
from bridge.geometry.grid import grid_mask, validate_grid_points
from bridge.geometry.images import decode_image, encode_image
from bridge.geometry.inpaint import inpaint_telea
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.detect import same_model
from bridge.pipelines.next_task import one_skeleton, prepare_source, run_stage, skeleton_points
from bridge.pipelines.params import QuadratParams
from bridge.pipelines.spec import TASK_EVENTS, PipelineSpec, Route

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


def run(ctx: StepContext) -> PipelineResult:
    src = prepare_source(ctx, SPEC.name, GRID_LABEL, GRID_POINTS)
    line_width = src.params.line_width or ctx.settings.grid_line_width
    dilation = ctx.settings.grid_mask_dilation
    function = choose_inpainter(ctx)
    ctx.progress.note("inpainter", function or "opencv-telea")

    def remove(frame: int, image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
        h, w = image.shape[:2]
        points = skeleton_points(one_skeleton(shapes, src.skeleton, frame), src.skeleton)
        mask = grid_mask(validate_grid_points(points, (w, h)), (w, h), line_width=line_width, dilation=dilation)
        if function is None:
            return inpaint_telea(image, mask)
        return decode_image(ctx.nuclio.inpaint(function, encode_image(image, "png"), encode_image(mask, "png")))

    concurrency = ctx.nuclio.concurrency_for(function) if function else ctx.settings.frame_concurrency
    return run_stage(ctx, src, STAGE, remove, concurrency=concurrency)


SPEC = PipelineSpec(
    name="remove_grid",
    params_model=QuadratParams,
    run=run,
    routes=(
        Route("/remove-grid-and-create-new-task-webhook",
              "Inpaint the 117-point grid away into a new task in target_proj_id when the task is completed"),
        Route("/remove-grid-and-detect-corals-webhook",
              "Legacy: remove the grid into target_proj_id, then run pth-yolo-coralsegv4 on the new task",
              fixed={"then_detect": "pth-yolo-coralsegv4", "conv_mask_to_poly": True}, legacy=True),
        Route("/webhooks/remove-grid", "Grid removal into a new task (clean route)"),
    ),
    trigger="task_completed",
    events=TASK_EVENTS,
    reads="task",  # CVAT builds the first chunk while the job is queued
    functions=lambda p, s: [s.inpaint_function] + ([p.then_detect] if p.then_detect else []),
    same_results=lambda earlier, p, _s: bool(p.then_detect) and same_model(earlier, p.then_detect),
)
