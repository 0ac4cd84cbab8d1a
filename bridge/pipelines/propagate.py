"""``propagate``: shapes drawn on key frames of a job become tracks over the following frames.

read the job's drawn rectangles, polygons and masks (selected labels) → stream the job's frames from
the first key frame on, by chunk, through a tracker function speaking CVAT's tracker protocol
(``nuclio_functions/sam2_tracker``): on a shape's key frame it is started with the shape, on later
frames continued with the small state the function returned, every object of a frame in one call →
one CVAT track per shape (``source="semi-auto"``, a keyframe per frame followed, closed by an
``outside`` keyframe when the object stays lost ``lost_after`` frames or the job ends) → the drawn
shapes are deleted (they are the tracks' first keyframes) unless ``keep_prompts``.

Memory holds one frame and, per object, its state (~2 KB) and keyframes. Idempotent: tracks are
recorded on the job; a retried attempt deletes its earlier attempt's tracks (also one whose write
answer was lost, found by its recorded intent) before writing again; a re-run replaces the tracks of
earlier runs of the same function that kept their prompts, and finds nothing to do after the
prompts were turned into tracks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.cvat.types import LabelSpec, Shape, Track
from bridge.errors import BridgeError, Cancelled, LabelMismatch
from bridge.geometry.errors import GeometryError
from bridge.geometry.polygons import mask_to_polygons, polygon_area
from bridge.geometry.rle import cvat_rle_to_mask
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.params import PropagateParams
from bridge.pipelines.spec import JOB_EVENTS, PipelineSpec, Route
from bridge.pipelines.steps import FramePolicy

SOURCE = "semi-auto"
PROMPT_TYPES = ("rectangle", "polygon", "mask")
PENDING_KEY = "pending_tracks"
MAX_OBJECTS_PER_CALL = 64  # the SAM 2 tracker's SAM2_TRACKER_MAX_OBJECTS
DEFAULT_FUNCTION = "pth-sam2-tracker"


@dataclass
class Followed:
    """One drawn shape being followed: its prompt, the tracker's state, the keyframes so far."""

    prompt: Shape
    start: dict[str, Any]
    state: Any = None
    lost: int = 0
    done: bool = False
    keyframes: list[Shape] = field(default_factory=list)

    def keyframe(self, frame: int, shape: dict[str, Any] | None) -> None:
        p = self.prompt
        if shape is None:
            self.lost += 1
            return
        self.lost = 0
        self.keyframes.append(Shape(type=str(shape.get("type") or self.start["type"]), label_id=p.label_id,
                                    frame=frame, points=[float(v) for v in shape.get("points") or []],
                                    source=SOURCE, occluded=p.occluded, z_order=p.z_order,
                                    attributes=dict(p.attributes)))

    def close(self, frame: int, last_frame: int) -> None:
        """End the track at ``frame``: an ``outside`` keyframe right after its last visible one (none
        past the job's ``last_frame``: the track simply ends with the job)."""
        if self.done:
            return
        self.done = True
        if self.keyframes and self.keyframes[-1].frame < min(frame, last_frame + 1) \
                and self.keyframes[-1].frame + 1 <= last_frame:
            last = self.keyframes[-1]
            self.keyframes.append(Shape(type=last.type, label_id=last.label_id, frame=last.frame + 1,
                                        points=list(last.points), source=SOURCE, outside=True,
                                        attributes=dict(last.attributes)))

    def track(self) -> Track:
        p = self.prompt
        return Track(label_id=p.label_id, frame=self.keyframes[0].frame, shapes=self.keyframes, source=SOURCE,
                     attributes=dict(p.attributes), group=p.group)


def start_shape(shape: Shape, size: tuple[int, int]) -> dict[str, Any] | str:
    """What the tracker is started with (rectangle or polygon; a mask as its largest outline), or why not."""
    if shape.type == "rectangle":
        if len(shape.points) < 4:
            return f"rectangle #{shape.id} has too few points"
        return {"type": "rectangle", "points": list(shape.points[:4])}
    if shape.type == "polygon":
        if len(shape.points) < 6:
            return f"polygon #{shape.id} has under 3 points"
        return {"type": "polygon", "points": list(shape.points)}
    try:
        mask = cvat_rle_to_mask(shape.points, *size)
        outlines = mask_to_polygons(mask, tolerance=1.0, max_polygons=1)
    except GeometryError as exc:
        return f"mask #{shape.id}: {exc}"
    if not outlines:
        return f"mask #{shape.id} is empty"
    return {"type": "polygon", "points": max(outlines, key=polygon_area)}


def _fingerprint(t: Track) -> list:
    first = t.shapes[0] if t.shapes else None
    return [t.label_id, t.frame, len(t.shapes), [round(v, 1) for v in (first.points if first else [])][:8]]


def _remove_ours(ctx: StepContext, job_id: int, function: str) -> int:
    """Delete this job's earlier attempts' tracks (recorded, or written with a lost answer) and the
    tracks of earlier runs that kept their prompts."""
    tracks = [t for t in ctx.cvat.get_tracks(job_id) if t.id is not None and t.source == SOURCE]
    recorded = {int(o["id"]) for o in ctx.previous.get("objects", []) if o.get("kind") == "track"}
    earlier = {int(o["id"]) for o in ctx.previous.get("earlier_runs", [])
               if o.get("kind") == "track" and kept_prompts_of(o.get("params") or {}, function, DEFAULT_FUNCTION)}
    pending = ctx.previous.get("notes", {}).get(PENDING_KEY) or []
    doomed = {t.id for t in tracks if t.id in recorded | earlier or _fingerprint(t) in pending}
    if doomed:
        ctx.cvat.delete_tracks(job_id, sorted(i for i in doomed if i is not None))
    return len(doomed)


def kept_prompts_of(earlier: Mapping[str, Any], function: str, default: str) -> bool:
    return (earlier.get("function") or default) == function and bool(earlier.get("keep_prompts"))


def _prompts(ctx: StepContext, job_id: int, labels: list[LabelSpec], names: list[str] | None,
             sizes: dict[int, tuple[int, int]]) -> tuple[dict[int, list[Followed]], list[str]]:
    usable = {lb.name: lb.id for lb in labels if not lb.sublabels and lb.type != "tag"}
    if names is not None:
        missing = [n for n in names if n not in usable]
        if len(missing) == len(names):
            raise LabelMismatch(f"none of the labels {', '.join(names)} exist in job {job_id} "
                                f"(it has: {', '.join(sorted(usable)) or 'none'})")
        usable = {n: i for n, i in usable.items() if n in names}
    selected = set(usable.values())
    by_frame: dict[int, list[Followed]] = {}
    skipped: list[str] = []
    for shape in ctx.cvat.get_annotations(job_id=job_id).shapes:
        if (shape.type not in PROMPT_TYPES or shape.label_id not in selected or shape.outside
                or shape.source == SOURCE or shape.frame not in sizes):
            continue
        start = start_shape(shape, sizes[shape.frame])
        if isinstance(start, str):
            skipped.append(start)
            continue
        by_frame.setdefault(shape.frame, []).append(Followed(shape, start))
    return by_frame, skipped


def propagate_job(ctx: StepContext, job_id: int, p: PropagateParams) -> PipelineResult:
    cvat = ctx.cvat
    job = cvat.get_job(job_id)
    if job.type != "annotation":
        return PipelineResult(summary=f"job {job_id} is a {job.type} job; nothing to do")
    frames = cvat.job_frames(job_id)
    sizes = {f.frame: (f.width, f.height) for f in frames}
    removed = _remove_ours(ctx, job_id, p.function)
    starts, skipped = _prompts(ctx, job_id, cvat.get_labels(job_id=job_id), p.label_names, sizes)
    if skipped:
        ctx.progress.note("propagate_skipped", skipped[:100])
    if not starts:
        return PipelineResult(summary=f"no shapes to propagate in job {job_id} ({p.function})")
    first = min(starts)
    order = [f.frame for f in frames if f.frame >= first]
    ctx.progress.set_total(len(order))
    policy = FramePolicy(ctx, p.function, len(order))
    active: list[Followed] = []
    finished: list[Followed] = []
    for frame, data in cvat.iter_frames(job.task_id, order):
        ctx.check_cancelled()
        active += starts.get(frame, [])
        for obj in active:
            if p.frames is not None and obj.keyframes and frame - obj.keyframes[0].frame > p.frames:
                obj.close(frame, job.stop_frame)
        finished += [o for o in active if o.done]
        active = [o for o in active if not o.done]
        try:
            for at in range(0, len(active), MAX_OBJECTS_PER_CALL):
                group = active[at:at + MAX_OBJECTS_PER_CALL]
                shapes = [None if o.state is not None else o.start for o in group]
                states = [o.state for o in group]
                out_shapes, out_states = ctx.nuclio.track(p.function, data, shapes=shapes, states=states)
                for obj, shape, state in zip(group, out_shapes, out_states, strict=True):
                    obj.state = state
                    obj.keyframe(frame, shape)
                    if obj.lost >= p.lost_after:
                        obj.close(frame, job.stop_frame)
            policy.succeeded()
        except BridgeError as exc:  # the frame's failure is recorded; the policy decides about the job
            if isinstance(exc, Cancelled):
                raise
            policy.failed(frame, exc)
        ctx.progress.advance()
    for obj in active:
        obj.close(order[-1] + 1, job.stop_frame)
    finished += active
    policy.check()

    tracks = [o.track() for o in finished if o.keyframes]
    ctx.progress.note(PENDING_KEY, [_fingerprint(t) for t in tracks])  # durable before the write
    ids = cvat.create_tracks(job_id, tracks, batch_size=ctx.settings.write_batch_size)
    for track_id in ids:
        ctx.progress.created("track", track_id)
    ctx.progress.note(PENDING_KEY, None)
    deleted = 0
    if not p.keep_prompts:
        cvat.delete_shapes(job_id, [o.prompt.id for o in finished if o.keyframes and o.prompt.id is not None])
        deleted = sum(1 for o in finished if o.keyframes)
    keyframes = sum(len(t.shapes) for t in tracks)
    summary = (f"{p.function}: {len(tracks)} tracks over {len(order)} frames ({keyframes} keyframes)"
               + (f", {removed} earlier tracks replaced" if removed else "")
               + (f", {deleted} drawn shapes turned into tracks" if deleted else "")
               + (f", {len(policy.errors)} frames failed" if policy.errors else "")
               + (f", {len(skipped)} shapes skipped" if skipped else ""))
    return PipelineResult(summary=summary, frames_total=len(order), frames_failed=len(policy.errors),
                          created={"tracks": ids})


def run(ctx: StepContext) -> PipelineResult:
    p: PropagateParams = ctx.params  # type: ignore[assignment]
    return propagate_job(ctx, ctx.job_event(SPEC.name), p)


SPEC = PipelineSpec(
    name="propagate",
    params_model=PropagateParams,
    run=run,
    routes=(Route("/webhooks/propagate", "Shapes drawn on key frames become tracks over the following frames "
                                         "(SAM 2 tracker) when the job is completed (or in progress)"),),
    trigger=lambda p: "job_completed" if p.on == "completed" else "job_in_progress",
    events=JOB_EVENTS,
    functions=lambda p, _s: [p.function],
    same_results=lambda earlier, p, _s: kept_prompts_of(earlier, p.function, DEFAULT_FUNCTION),
)
