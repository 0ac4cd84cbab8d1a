"""``sam2_refine``: rectangles and points of a job become SAM 2 polygons or masks.

read the job's shapes → pick the prompts (rectangles and points of the selected labels; in a chained
run after ``detect`` also its masks/polygons, by their bbox) → stream only the frames that have
prompts through the SAM 2 function, one image upload per frame and many prompts per call (bounded
concurrency) → write one polygon (or mask) per prompt, same label/frame/attributes,
``source="semi-auto"`` → delete the prompts whose result was written (unless ``keep_prompts``).

Idempotency: written ids are recorded on the job; a re-run replaces the results of earlier runs that
kept their prompts (on the frames and labels it prompts again), a resumed attempt keeps the frames it
checkpointed (``sam2_frames_done``) and never prompts twice with a prompt it already refined
(``sam2_refined``). A re-run after prompts were deleted finds no prompts and writes nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.cvat.types import LabelSpec, Shape
from bridge.errors import Cancelled, LabelMismatch
from bridge.geometry.errors import GeometryError
from bridge.geometry.polygons import (
    clean_polygon,
    mask_to_polygons,
    polygon_area,
    polygon_to_mask,
    simplify_polygon,
)
from bridge.geometry.rle import cvat_rle_to_mask, mask_to_cvat_rle
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.params import Sam2RefineParams
from bridge.pipelines.spec import JOB_EVENTS, PipelineSpec, Route
from bridge.pipelines.steps import FramePolicy, ShapeWriter, attempt_shape_ids, earlier_shape_ids, map_frames

SOURCE = "semi-auto"
PROMPT_TYPES = ("rectangle", "points")
CHAINED_PROMPT_TYPES = ("rectangle", "points", "mask", "polygon")
MAX_PROMPTS_PER_CALL = 128  # the SAM 2 function refuses more than SAM2_MAX_PROMPTS (default 256)
DONE_KEY = "sam2_frames_done"
REFINED_KEY = "sam2_refined"


@dataclass(frozen=True)
class Prompt:
    """One prompt shape and what is sent for it (image coordinates)."""

    shape: Shape
    bbox: list[float] | None
    pos_points: list[list[float]]

    def payload(self) -> dict[str, Any]:
        return {"bbox": self.bbox, "pos_points": self.pos_points, "neg_points": []}


@dataclass
class FrameOutcome:
    """What one frame's calls gave: shapes to write, prompts they replace, per-prompt errors/drops."""

    shapes: list[Shape] = field(default_factory=list)
    refined: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class RefineWriter(ShapeWriter):
    """A ``ShapeWriter`` that also checkpoints which prompts got their result written
    (``notes[sam2_refined]``), right after the frames holding them are checkpointed."""

    def __init__(self, ctx: StepContext, job_id: int, *, batch_size: int):
        super().__init__(ctx, job_id, batch_size=batch_size, done_key=DONE_KEY)
        self.refined: set[int] = {int(i) for i in ctx.previous.get("notes", {}).get(REFINED_KEY, [])}
        self._pending: dict[int, list[int]] = {}
        self._pending_lock = threading.Lock()

    def add_frame(self, frame: int, outcome: FrameOutcome) -> None:
        with self._pending_lock:
            self._pending[frame] = list(outcome.refined)
        self.add(frame, outcome.shapes)

    def written_frames(self, frames: set[int]) -> None:
        with self._pending_lock:
            done = [f for f in frames if f in self._pending]
            for frame in done:
                self.refined.update(self._pending.pop(frame))
            snapshot = sorted(self.refined)
        if done:
            self.ctx.progress.note(REFINED_KEY, snapshot)


# --- prompts ---------------------------------------------------------------------------------------
def _clip(v: float, high: float) -> float:
    return min(max(float(v), 0.0), high)


def _rect_bbox(shape: Shape) -> list[float]:
    x1, y1, x2, y2 = shape.points[:4]
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if shape.rotation % 360:
        # CVAT rotates a rectangle about its centre; prompt with the axis-aligned box around it.
        a = math.radians(shape.rotation)
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        dx = hw * abs(math.cos(a)) + hh * abs(math.sin(a))
        dy = hw * abs(math.sin(a)) + hh * abs(math.cos(a))
        x1, y1, x2, y2 = cx - dx, cy - dy, cx + dx, cy + dy
    return [x1, y1, x2, y2]


def _shape_bbox(shape: Shape) -> list[float]:
    """Prompt box of a rectangle, a polygon (vertex bounds) or a mask (its RLE bbox, exclusive end)."""
    if shape.type == "rectangle":
        return _rect_bbox(shape)
    if shape.type == "mask":
        left, top, right, bottom = shape.points[-4:]
        return [left, top, right + 1, bottom + 1]
    xs, ys = shape.points[0::2], shape.points[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def make_prompt(shape: Shape, width: int, height: int) -> Prompt | str:
    """The prompt for ``shape`` clipped to the image, or the reason it cannot be one."""
    if shape.type == "points":
        pts = shape.points
        if len(pts) < 2 or len(pts) % 2:
            return f"points shape #{shape.id} has no valid points"
        pos = [[_clip(pts[i], width), _clip(pts[i + 1], height)] for i in range(0, len(pts), 2)]
        return Prompt(shape, None, pos)
    if len(shape.points) < 4:
        return f"{shape.type} #{shape.id} has too few points"
    x1, y1, x2, y2 = _shape_bbox(shape)
    box = [_clip(x1, width), _clip(y1, height), _clip(x2, width), _clip(y2, height)]
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return f"{shape.type} #{shape.id} is under 1 px wide or high inside the image"
    return Prompt(shape, box, [])


def _storable(label: LabelSpec | None, kind: str) -> bool:
    """Whether a ``kind`` shape may be stored under ``label`` (CVAT label types; masks ≈ polygons)."""
    if label is None or label.sublabels:
        return False
    return label.type in ("any", kind) or {label.type, kind} == {"mask", "polygon"}


def select_labels(labels: list[LabelSpec], names: list[str] | None) -> tuple[set[int], list[str]]:
    """Ids of the selected top-level labels (all non-skeleton ones when ``names`` is None), and the
    requested names the job does not have; raises ``LabelMismatch`` when none of them exists."""
    usable = {label.name: label.id for label in labels if not label.sublabels and label.type != "tag"}
    if names is None:
        return set(usable.values()), []
    missing = [n for n in names if n not in usable]
    chosen = {usable[n] for n in names if n in usable}
    if not chosen:
        raise LabelMismatch(
            f"none of the labels {', '.join(names)} exist in this job (it has: "
            f"{', '.join(sorted(usable)) or 'no labels'}); check the 'labels' parameter"
        )
    return chosen, missing


# --- results ---------------------------------------------------------------------------------------
def _score(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return min(max(float(raw), 0.0), 1.0)


def _largest_polygon(result: dict[str, Any], size: tuple[int, int], tolerance: float) -> list[float] | None:
    """Largest valid polygon of a SAM 2 result: from its ``polygons``, else traced from its ``mask``."""
    candidates = []
    for poly in result.get("polygons") or []:
        if isinstance(poly, list):
            try:
                cleaned = clean_polygon(poly, size)
            except GeometryError:
                continue
            if cleaned is not None:
                candidates.append(cleaned)
    if not candidates and isinstance(result.get("mask"), list):
        mask = cvat_rle_to_mask(result["mask"], *size)
        candidates = [p for p in mask_to_polygons(mask, tolerance=tolerance or 1.0, max_polygons=1)
                      if clean_polygon(p, size) is not None]
    if not candidates:
        return None
    best = max(candidates, key=polygon_area)
    return simplify_polygon(best, tolerance) if tolerance > 0 else best


def _mask_points(result: dict[str, Any], size: tuple[int, int]) -> list[float] | None:
    """CVAT RLE + tight inclusive bbox of a SAM 2 result (from its ``mask``, else its largest polygon)."""
    if isinstance(result.get("mask"), list):
        mask = cvat_rle_to_mask(result["mask"], *size)
    else:
        poly = _largest_polygon(result, size, 0.0)
        if poly is None:
            return None
        mask = polygon_to_mask(poly, size)
    try:
        return [float(v) for v in mask_to_cvat_rle(mask)]
    except GeometryError:
        return None  # empty


def result_shape(prompt: Prompt, result: dict[str, Any], size: tuple[int, int], *, conv_mask_to_poly: bool,
                 tolerance: float) -> Shape | None:
    """The CVAT shape replacing ``prompt`` (None when the result is degenerate).

    Raises ``GeometryError`` for a malformed mask from the function."""
    if conv_mask_to_poly:
        kind, points = "polygon", _largest_polygon(result, size, tolerance)
    else:
        kind, points = "mask", _mask_points(result, size)
    if points is None:
        return None
    s = prompt.shape
    return Shape(type=kind, label_id=s.label_id, frame=s.frame, points=points, source=SOURCE,
                 score=_score(result.get("score")), attributes=dict(s.attributes), occluded=s.occluded,
                 z_order=s.z_order, group=s.group)


def segment_frame(ctx: StepContext, function: str, data: bytes, prompts: list[Prompt], size: tuple[int, int],
                  *, conv_mask_to_poly: bool) -> FrameOutcome:
    """Call SAM 2 for one frame (one call per ``MAX_PROMPTS_PER_CALL`` prompts) and convert the results."""
    out = FrameOutcome()
    tolerance = ctx.settings.polygon_tolerance
    for start in range(0, len(prompts), MAX_PROMPTS_PER_CALL):
        ctx.check_cancelled()
        chunk = prompts[start:start + MAX_PROMPTS_PER_CALL]
        results = ctx.nuclio.segment_prompts(function, data, [p.payload() for p in chunk])
        for prompt, result in zip(chunk, results, strict=True):
            what = f"{prompt.shape.type} #{prompt.shape.id}"
            if not isinstance(result, dict) or "error" in result:
                reason = result.get("error") if isinstance(result, dict) else f"not an object: {result!r:.80}"
                out.errors.append(f"{what}: {reason}")
                continue
            try:
                shape = result_shape(prompt, result, size, conv_mask_to_poly=conv_mask_to_poly, tolerance=tolerance)
            except GeometryError as exc:
                out.errors.append(f"{what}: invalid result from {function}: {exc}")
                continue
            if shape is None:
                out.dropped.append(f"{what}: degenerate result (empty mask or no polygon)")
                continue
            out.shapes.append(shape)
            out.refined.append(int(prompt.shape.id))  # type: ignore[arg-type]
    return out


# --- earlier results -------------------------------------------------------------------------------
def _earlier_results(ctx: StepContext, function: str, *, chained: bool,
                     prompted: set[tuple[int, int]], shapes: dict[int, Shape]) -> set[int]:
    """Ids of our results from earlier runs that this run replaces (still ``semi-auto`` in the job).

    Chained after a detector: every refined shape of earlier runs of the same detector (its prompts
    were written anew). Standalone: results of runs that kept their prompts, on the (frame, label)
    pairs prompted again now; results whose prompts were deleted are final and stay.
    """
    default = ctx.settings.sam2_function
    if chained:
        model = getattr(ctx.params, "model_name", None)

        def match(p: dict[str, Any]) -> bool:
            return bool(p.get("refine")) and (p.get("sam2_function") or default) == function \
                and p.get("model_name") == model
    else:
        match = kept_prompts_of(function, default)

    ids = earlier_shape_ids(ctx, match=match)
    return {i for i in ids if i in shapes and shapes[i].source == SOURCE
            and (chained or (shapes[i].frame, shapes[i].label_id) in prompted)}


# --- the pipeline ----------------------------------------------------------------------------------
def refine_job(ctx: StepContext, job_id: int, function: str, *, only_ids: set[int] | None = None,
               labels: list[str] | None = None, conv_mask_to_poly: bool, keep_prompts: bool) -> PipelineResult:
    """Replace the prompts of ``job_id`` by SAM 2 polygons (or masks); see the module docstring.

    ``only_ids``: refine exactly these shapes (chained after ``detect``: its new boxes/masks); progress
    totals then stay the caller's. ``labels``: label names to refine (default: all).
    """
    cvat = ctx.cvat
    chained = only_ids is not None
    job = cvat.get_job(job_id)
    if job.type != "annotation":
        return PipelineResult(summary=f"job {job_id} is a {job.type} job; nothing to do")
    label_specs = cvat.get_labels(job_id=job_id)
    by_id = {label.id: label for label in label_specs}
    selected, missing = select_labels(label_specs, labels)
    if missing:
        ctx.progress.note("labels_not_in_job", missing)
        ctx.log.warning("job %s: labels not in the job, ignored: %s", job_id, ", ".join(missing))
    kind = "polygon" if conv_mask_to_poly else "mask"
    frames = {f.frame: (f.width, f.height) for f in cvat.job_frames(job_id)}

    writer = RefineWriter(ctx, job_id, batch_size=ctx.settings.write_batch_size)
    attempt_ids = attempt_shape_ids(ctx)
    ours = earlier_shape_ids(ctx, match=lambda _p: True) | attempt_ids
    current = {s.id: s for s in cvat.get_annotations(job_id=job_id).shapes if s.id is not None}

    # Prompts: what the user drew (or the detector wrote), never our own results.
    allowed = CHAINED_PROMPT_TYPES if chained else PROMPT_TYPES
    prompts: dict[int, list[Prompt]] = {}
    skipped: list[str] = []
    for sid, s in sorted(current.items()):
        if ((sid in ours and s.source == SOURCE) or sid in writer.refined or s.type not in allowed or s.outside
                or s.label_id not in selected or s.frame not in frames
                or (only_ids is not None and sid not in only_ids)):
            continue
        if not _storable(by_id.get(s.label_id), kind):
            skipped.append(f"{s.type} #{sid}: label {by_id[s.label_id].name!r} cannot hold a {kind}")
            continue
        prompt = make_prompt(s, *frames[s.frame])
        if isinstance(prompt, str):
            skipped.append(prompt)
        else:
            prompts.setdefault(s.frame, []).append(prompt)

    # Results of a crashed attempt on frames it did not checkpoint, and earlier runs' results that
    # this run recreates, go first; anything else in the job is never touched.
    prompted = {(p.shape.frame, p.shape.label_id) for ps in prompts.values() for p in ps}
    doomed = {i for i in attempt_ids if i in current and current[i].source == SOURCE
              and current[i].frame not in writer.frames_done}
    replaced = _earlier_results(ctx, function, chained=chained, prompted=prompted, shapes=current)
    if doomed | replaced:
        cvat.delete_shapes(job_id, sorted(doomed | replaced))
        ctx.log.info("job %s: removed %d shapes of an earlier run or attempt", job_id, len(doomed | replaced))

    todo = sorted(f for f in prompts if f not in writer.frames_done)
    n_prompts = sum(len(prompts[f]) for f in todo)
    if skipped:
        ctx.progress.note("sam2_skipped_prompts", skipped[:100])
    if not chained:
        ctx.progress.set_total(len(prompts))
        ctx.progress.advance(len(prompts) - len(todo))

    def work(frame: int, data: bytes) -> FrameOutcome:
        return segment_frame(ctx, function, data, prompts[frame], frames[frame], conv_mask_to_poly=conv_mask_to_poly)

    policy = FramePolicy(ctx, function, len(todo), noun="frames with prompts", prefix="SAM 2: " if chained else "")
    dropped: list[str] = []
    for frame, outcome in map_frames(ctx, cvat.iter_frames(job.task_id, todo), work,
                                     concurrency=ctx.nuclio.concurrency_for(function)):
        if isinstance(outcome, Cancelled):
            raise outcome
        if isinstance(outcome, BaseException):
            policy.failed(frame, outcome)
        else:
            dropped += outcome.dropped
            if outcome.errors:
                policy.error(frame, "; ".join(outcome.errors)[:1000])
            if outcome.shapes:
                policy.succeeded()
                writer.add_frame(frame, outcome)
        if not chained:
            ctx.progress.advance()
    writer.flush()

    # Prompts go only once their replacement is written (this attempt or a checkpointed earlier one).
    deleted = 0
    if not keep_prompts:
        gone = sorted(i for i in writer.refined if i in current)
        if gone:
            cvat.delete_shapes(job_id, gone)
            deleted = len(gone)

    policy.check()
    failed = policy.errors
    if dropped:
        ctx.progress.note("sam2_dropped", dropped[:100])

    if not prompts:
        summary = f"no prompts to refine in job {job_id} ({function})"
    else:
        summary = (f"{function}: {n_prompts} prompts on {len(todo)} frames, {writer.written} {kind}s written"
                   + (f", {len(replaced)} from an earlier run replaced" if replaced else "")
                   + (f", {deleted} prompts deleted" if deleted else "")
                   + (f", {len(failed)} frames failed" if failed else "")
                   + (f", {len(dropped)} degenerate results dropped" if dropped else ""))
    if skipped:
        summary += f", {len(skipped)} shapes skipped"
    return PipelineResult(summary=summary, frames_total=len(prompts), frames_failed=len(failed),
                          shapes_written=writer.written, created={"shapes": list(writer.ids)})


def run(ctx: StepContext) -> PipelineResult:
    p: Sam2RefineParams = ctx.params  # type: ignore[assignment]
    job_id = ctx.job_event(SPEC.name)
    return refine_job(ctx, job_id, p.function or ctx.settings.sam2_function, labels=p.label_names,
                      conv_mask_to_poly=p.conv_mask_to_poly, keep_prompts=p.keep_prompts)


def kept_prompts_of(function: str, default: str) -> Callable[[Mapping[str, Any]], bool]:
    """Standalone runs replace the results of earlier runs of the same function that kept their prompts
    (results whose prompts were deleted are final)."""
    return lambda earlier: (earlier.get("function") or default) == function and bool(earlier.get("keep_prompts"))


SPEC = PipelineSpec(
    name="sam2_refine",
    params_model=Sam2RefineParams,
    run=run,
    routes=(
        Route("/sam2-refine-webhook",
              "Turn rectangles and points into SAM 2 masks/polygons when a job becomes 'in progress'"),
        Route("/webhooks/sam2-refine", "SAM 2 refinement of a job (clean route)"),
    ),
    trigger=lambda p: "job_completed" if p.on == "completed" else "job_in_progress",
    events=JOB_EVENTS,
    functions=lambda p, s: [p.function or s.sam2_function],
    same_results=lambda earlier, p, s: kept_prompts_of(p.function or s.sam2_function, s.sam2_function)(earlier),
)

__all__ = ["SPEC", "Prompt", "make_prompt", "refine_job", "result_shape"]
