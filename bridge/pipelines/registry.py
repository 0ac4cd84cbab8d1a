"""Which route runs which pipeline, with which parameters, on which CVAT transition."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from bridge.errors import PermanentError
from bridge.pipelines.base import Pipeline, TriggerKind
from bridge.pipelines.params import CoverReportParams, DetectParams, QuadratParams, Sam2RefineParams


@dataclass(frozen=True)
class RouteSpec:
    path: str
    pipeline: str
    params_model: type[BaseModel]
    summary: str
    fixed: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/detect-model-webhook", "detect", DetectParams,
              "Run a detector function over a job when its state becomes 'in progress' (reference route)"),
    RouteSpec("/crop-quadrat-and-create-new-task-webhook", "crop_quadrat", QuadratParams,
              "Warp each frame by its quadrat corners into a new task in target_proj_id when the task is completed"),
    RouteSpec("/remove-grid-and-create-new-task-webhook", "remove_grid", QuadratParams,
              "Inpaint the 117-point grid away into a new task in target_proj_id when the task is completed"),
    RouteSpec("/crop-quadrat-and-detect-grid-webhook", "crop_quadrat", QuadratParams,
              "Legacy: crop/warp into target_proj_id, then run pth-yolo-gridpose on the new task",
              fixed={"then_detect": "pth-yolo-gridpose"}, legacy=True),
    RouteSpec("/remove-grid-and-detect-corals-webhook", "remove_grid", QuadratParams,
              "Legacy: remove the grid into target_proj_id, then run pth-yolo-coralsegv4 on the new task",
              fixed={"then_detect": "pth-yolo-coralsegv4", "conv_mask_to_poly": True}, legacy=True),
    RouteSpec("/crop-quadrat-and-detect-corals-webhook", "crop_quadrat", QuadratParams,
              "Legacy: crop/warp into target_proj_id, then run pth-yolo-coralsegv4 on the new task",
              fixed={"then_detect": "pth-yolo-coralsegv4", "conv_mask_to_poly": True}, legacy=True),
    RouteSpec("/sam2-refine-webhook", "sam2_refine", Sam2RefineParams,
              "Turn rectangles and points into SAM 2 masks/polygons when a job becomes 'in progress'"),
    # Clean routes: one per pipeline, same parameters.
    RouteSpec("/webhooks/detect", "detect", DetectParams, "Detector over a job (clean route)"),
    RouteSpec("/webhooks/crop-quadrat", "crop_quadrat", QuadratParams, "Crop/warp into a new task (clean route)"),
    RouteSpec("/webhooks/remove-grid", "remove_grid", QuadratParams, "Grid removal into a new task (clean route)"),
    RouteSpec("/webhooks/sam2-refine", "sam2_refine", Sam2RefineParams, "SAM 2 refinement of a job (clean route)"),
    RouteSpec("/webhooks/cover-report", "cover_report", CoverReportParams,
              "Coral cover report (per quadrat, per genus, CoralNet points) when a coral-stage task is completed"),
)

PIPELINE_MODULES = {
    "detect": "bridge.pipelines.detect",
    "crop_quadrat": "bridge.pipelines.crop_quadrat",
    "remove_grid": "bridge.pipelines.remove_grid",
    "sam2_refine": "bridge.pipelines.sam2_refine",
    "cover_report": "bridge.pipelines.cover_report",
}

PARAMS_MODELS: dict[str, type[BaseModel]] = {
    "detect": DetectParams,
    "crop_quadrat": QuadratParams,
    "remove_grid": QuadratParams,
    "sam2_refine": Sam2RefineParams,
    "cover_report": CoverReportParams,
}


def trigger_kind(pipeline: str, params: BaseModel) -> TriggerKind:
    if pipeline in ("crop_quadrat", "remove_grid", "cover_report"):
        return "task_completed"
    if isinstance(params, Sam2RefineParams) and params.on == "completed":
        return "job_completed"
    return "job_in_progress"


def flight_key(pipeline: str, resource: str, resource_id: int) -> str:
    return f"{pipeline}:{resource}:{resource_id}"


def load_pipeline(name: str, extra: dict[str, str] | None = None) -> Pipeline:
    """Import the pipeline module on first use; each module exposes ``PIPELINE``.
    ``extra`` adds custom pipelines (BRIDGE_EXTRA_PIPELINES: name → module)."""
    modules = {**PIPELINE_MODULES, **(extra or {})}
    if name not in modules:
        raise PermanentError(f"unknown pipeline {name!r}; known: {', '.join(sorted(modules))}")
    return importlib.import_module(modules[name]).PIPELINE


def parse_params(pipeline: str, raw: dict[str, Any], extra: dict[str, str] | None = None) -> BaseModel:
    model = PARAMS_MODELS.get(pipeline) or load_pipeline(pipeline, extra).params_model
    return model.model_validate(raw)
