"""Query parameters of each pipeline (validated on the webhook route, stored with the job)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

FUNCTION_NAME = r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$"
"""Nuclio accepts Kubernetes qualified names (letters, digits, '-', '_', '.'; 63 at most); the bridge
takes them without '.', since the name becomes a host name in NUCLIO_FUNCTION_URL
(``http://nuclio-nuclio-{name}:8080``) and a dot would let it point at any DNS name."""
_FUNCTION_NAME = re.compile(FUNCTION_NAME)
MAX_ID = 2**31 - 1


def check_function_name(name: str) -> str:
    """A Nuclio function name that cannot steer the function URL elsewhere (ValueError says why)."""
    if not _FUNCTION_NAME.fullmatch(name):
        raise ValueError(
            f"{name[:80]!r} is not a Nuclio function name: use letters, digits, '-' and '_' only "
            "(no '.', '/' or ':'; the name becomes a host name in NUCLIO_FUNCTION_URL), starting and "
            "ending with a letter or digit, at most 63 characters, e.g. pth-yolo-coralsegv4"
        )
    return name


FunctionName = Annotated[str, AfterValidator(check_function_name)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectParams(_Params):
    """`/detect-model-webhook`: run a detector over the job's frames."""

    model_name: FunctionName = Field(description="Nuclio function name (case-sensitive)")
    conv_mask_to_poly: bool = Field(False, description="write masks that carry polygon points as polygons")
    threshold: float | None = Field(None, ge=0, le=1, description="drop detections below this confidence")
    refine: bool = Field(False, description="refine the detections' boxes/masks with SAM 2 afterwards")
    sam2_function: FunctionName | None = Field(None, description="SAM 2 function for refine")


class QuadratParams(_Params):
    """Task-completion pipelines that create the next stage's task in `target_proj_id`."""

    target_proj_id: int = Field(ge=1, le=MAX_ID, description="CVAT project that receives the new task")
    size: int | None = Field(None, ge=16, le=20000, description="warp output side in px (default: keep resolution)")
    line_width: int | None = Field(None, ge=1, le=500, description="grid mask line width in px (remove-grid)")
    then_detect: FunctionName | None = Field(
        None, description="legacy combined routes: run this detector on the new task"
    )
    conv_mask_to_poly: bool = Field(False, description="with then_detect: masks with points become polygons")


class _LabelsParams(_Params):
    """Parameters with ``labels``: comma-separated label names (default: all)."""

    labels: str | None = Field(None, max_length=2000, description="comma-separated label names (default: all)")

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


class Sam2RefineParams(_LabelsParams):
    """`/sam2-refine-webhook`: rectangles and points of the selected labels become SAM 2 masks/polygons."""

    function: FunctionName | None = Field(None, description="SAM 2 function (default BRIDGE_SAM2_FUNCTION)")
    conv_mask_to_poly: bool = Field(True, description="write polygons (true) or masks (false)")
    keep_prompts: bool = Field(False, description="keep the prompt rectangles/points instead of deleting them")
    on: Literal["in_progress", "completed"] = Field("in_progress", description="job state that triggers it")


class CoverReportParams(_Params):
    """`/webhooks/cover-report`: cover per quadrat and per genus when a coral-stage task is completed."""

    quadrat_cm: float | None = Field(None, gt=0, le=100000,
                                     description="quadrat side in cm, for areas in cm² (default: px only)")
    points: int = Field(100, ge=0, le=10000, description="point-intercept points per quadrat (0 = none)")
    point_method: Literal["stratified", "random", "grid"] = Field("stratified", description="point layout")
    seed: int = Field(0, ge=0, le=MAX_ID, description="seed of the point positions (same seed, same points)")
    format: Literal["csv", "parquet"] = Field("csv", description="table format (parquet needs pyarrow)")
    plot: bool = Field(True, description="also write cover.png, a stacked bar chart per quadrat")


class PropagateParams(_LabelsParams):
    """`/webhooks/propagate`: shapes drawn on key frames become tracks over the following frames."""

    function: FunctionName = Field("pth-sam2-tracker", description="tracker function (CVAT's tracker protocol)")
    frames: int | None = Field(None, ge=1, le=100000,
                               description="frames to follow a shape after its key frame (default: to the job's end)")
    lost_after: int = Field(3, ge=1, le=1000, description="end a track after this many frames with the object lost")
    keep_prompts: bool = Field(False, description="keep the drawn shapes (default: they become the tracks' "
                                                  "first keyframes)")
    on: Literal["in_progress", "completed"] = Field("completed", description="job state that triggers it")
