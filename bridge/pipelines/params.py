"""Query parameters of each pipeline (validated on the webhook route, stored with the job)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FUNCTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectParams(_Params):
    """`/detect-model-webhook`: run a detector over the job's frames."""

    model_name: str = Field(pattern=FUNCTION_NAME, description="Nuclio function name (case-sensitive)")
    conv_mask_to_poly: bool = Field(False, description="write masks that carry polygon points as polygons")
    threshold: float | None = Field(None, ge=0, le=1, description="drop detections below this confidence")
    refine: bool = Field(False, description="refine the detections' boxes/masks with SAM 2 afterwards")
    sam2_function: str | None = Field(None, pattern=FUNCTION_NAME, description="SAM 2 function for refine")


class QuadratParams(_Params):
    """Task-completion pipelines that create the next stage's task in `target_proj_id`."""

    target_proj_id: int = Field(ge=1, description="CVAT project that receives the new task")
    size: int | None = Field(None, ge=16, le=20000, description="warp output side in px (default: keep resolution)")
    line_width: int | None = Field(None, ge=1, le=500, description="grid mask line width in px (remove-grid)")
    then_detect: str | None = Field(
        None, pattern=FUNCTION_NAME, description="legacy combined routes: run this detector on the new task"
    )
    conv_mask_to_poly: bool = Field(False, description="with then_detect: masks with points become polygons")


class Sam2RefineParams(_Params):
    """`/sam2-refine-webhook`: rectangles and points of the selected labels become SAM 2 masks/polygons."""

    function: str | None = Field(None, pattern=FUNCTION_NAME,
                                 description="SAM 2 function (default BRIDGE_SAM2_FUNCTION)")
    labels: str | None = Field(None, max_length=2000, description="comma-separated label names (default: all)")
    conv_mask_to_poly: bool = Field(True, description="write polygons (true) or masks (false)")
    keep_prompts: bool = Field(False, description="keep the prompt rectangles/points instead of deleting them")
    on: Literal["in_progress", "completed"] = Field("in_progress", description="job state that triggers it")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: str | None) -> str | None:
        if v is None:
            return None
        names = [n.strip() for n in v.split(",") if n.strip()]
        return ",".join(names) or None

    @property
    def label_names(self) -> list[str] | None:
        return self.labels.split(",") if self.labels else None
