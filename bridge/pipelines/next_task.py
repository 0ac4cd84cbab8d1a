"""The shared second half of the task-completion pipelines: turn a completed task's frames into
new images and create the next stage's task — idempotently — with its jobs set in progress."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.cvat.types import LabelSpec, Shape, TaskInfo
from bridge.errors import (
    BadAnnotations,
    BadImage,
    BridgeError,
    Cancelled,
    CvatRejected,
    CvatUnavailable,
    LabelMismatch,
    NotFound,
    PermanentError,
    TransientError,
)
from bridge.geometry.images import decode_image, encode_image
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.params import QuadratParams
from bridge.pipelines.steps import error_text, map_frames

FrameFn = Callable[[int, np.ndarray, list[Shape]], np.ndarray]
"""(frame, decoded image, the frame's shapes) → the new image. Raises BridgeError types per frame."""


def next_task_name(source: TaskInfo, stage: str) -> str:
    """Named after the source task, with a deterministic marker used to find it again."""
    return f"{source.name} · {stage} (from task #{source.id})"[:256]


def skeleton_label(labels: list[LabelSpec], name: str, sublabels: int, where: str) -> LabelSpec:
    label = next((lb for lb in labels if lb.name == name), None)
    if label is None or label.type != "skeleton":
        have = ", ".join(sorted(lb.name for lb in labels)) or "none"
        raise LabelMismatch(f"{where} has no skeleton label {name!r} (labels: {have})")
    missing = [str(i) for i in range(1, sublabels + 1) if str(i) not in label.sublabels]
    if missing:
        raise LabelMismatch(f"skeleton {name!r} in {where} lacks sublabels {', '.join(missing[:10])}")
    return label


def skeleton_points(shape: Shape, label: LabelSpec) -> dict[int, tuple[float, float] | None]:
    """Sublabel number → (x, y), None for elements that are ``outside`` or absent."""
    names = {sub.id: name for name, sub in label.sublabels.items()}
    out: dict[int, tuple[float, float] | None] = {int(n): None for n in label.sublabels if n.isdigit()}
    for el in shape.elements:
        name = names.get(el.label_id)
        if name is None or not name.isdigit() or el.outside or len(el.points) < 2:
            continue
        out[int(name)] = (float(el.points[0]), float(el.points[1]))
    return out


def one_skeleton(shapes: list[Shape], label: LabelSpec, frame: int) -> Shape:
    found = [s for s in shapes if s.label_id == label.id and s.type == "skeleton"]
    if not found:
        raise BadAnnotations(f"no {label.name!r} skeleton on this frame")
    if len(found) > 1:
        raise BadAnnotations(f"{len(found)} {label.name!r} skeletons on this frame; expected exactly one")
    return found[0]


def check_target(ctx: StepContext, project_id: int, then_detect: str | None) -> list[LabelSpec]:
    """Fail fast when the target project is missing or cannot take the next stage's annotations."""
    try:
        ctx.cvat.get_project(project_id)
    except NotFound as exc:
        raise PermanentError(f"target project {project_id} not found: check target_proj_id in the webhook URL") from exc
    labels = ctx.cvat.get_labels(project_id=project_id)
    if not labels:
        raise LabelMismatch(f"target project {project_id} has no labels; the next stage could not annotate it")
    if then_detect:
        from bridge.pipelines.detect import check_function_labels

        check_function_labels(ctx, then_detect, {lb.name for lb in labels})
    return labels


@dataclass
class Outcome:
    files: dict[int, Path]
    errors: dict[int, str]


def transform_frames(ctx: StepContext, task: TaskInfo, fn: FrameFn, out_dir: Path, *, concurrency: int) -> Outcome:
    """Stream the task's original frames (by chunk) through ``fn``; write each result under the frame's
    safe name (``frame_file_names``: unique, no folders, never a path outside ``out_dir``)."""
    frames = ctx.cvat.task_frames(task.id)
    names = {f.frame: f.name for f in frames}
    files_as = dict(zip(names, frame_file_names(list(names.values()), default_ext(ctx)), strict=True))
    by_frame: dict[int, list[Shape]] = defaultdict(list)
    for shape in ctx.cvat.get_annotations(task_id=task.id).shapes:
        by_frame[shape.frame].append(shape)
    ctx.progress.set_total(len(frames))
    fmt_jpeg = ctx.settings.image_format == "jpeg"

    def work(frame: int, data: bytes) -> Path:
        image = decode_image(data)
        result = fn(frame, image, by_frame.get(frame, []))
        name = files_as[frame]
        ext = Path(name).suffix.lower()
        fmt = "png" if ext == ".png" or (not fmt_jpeg and ext not in (".jpg", ".jpeg")) else "jpeg"
        path = out_dir / name
        try:
            path.write_bytes(encode_image(result, fmt, ctx.settings.jpeg_quality))
        except OSError as exc:  # say what failed without the server's directories
            raise BadImage(f"could not write the new image {name!r}: {exc.strerror or type(exc).__name__}") from None
        return path

    files: dict[int, Path] = {}
    errors: dict[int, str] = {}
    stream = ctx.cvat.iter_frames(task.id, [f.frame for f in frames])
    for frame, result in map_frames(ctx, stream, work, concurrency=concurrency):
        if isinstance(result, BaseException):
            if not isinstance(result, BridgeError) or isinstance(result, TransientError | Cancelled):
                raise result  # a function or CVAT outage is not a bad frame: the whole job retries
            errors[frame] = error_text(result)
            ctx.progress.frame_error(frame, f"{names.get(frame, frame)}: {errors[frame]}")
        else:
            files[frame] = result
        ctx.progress.advance()
    return Outcome(files, errors)


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jp2", ".pbm",
                        ".pgm", ".ppm"})


def default_ext(ctx: StepContext) -> str:
    return ".jpg" if ctx.settings.image_format == "jpeg" else ".png"


def frame_file_names(names: list[str], default_ext: str = ".jpg") -> list[str]:
    """File names for the next task's frames, in the same order: what CVAT calls each frame, made safe.

    CVAT keeps folders in frame names (``siteA/IMG_0001.png`` and ``siteB/IMG_0001.png`` from a zip or a
    share) but an upload keeps only base names, which must be unique. A name whose base name is unique
    stays its base name; otherwise its folders join it (``siteA_IMG_0001.png``). ``.``/``..`` parts,
    control and reserved characters go; a name without an image extension gets ``default_ext`` (CVAT
    tells media types by extension); a name still taken gets ``-<n>`` before its extension.
    """
    parts = [[p for p in re.split(r"[/\\]+", n or "") if p not in ("", ".", "..")] for n in names]
    bases = Counter(p[-1] if p else "" for p in parts)
    out: list[str] = []
    taken: set[str] = set()
    for index, segs in enumerate(parts):
        chosen = "_".join(segs) if segs and bases[segs[-1]] > 1 else (segs[-1] if segs else "")
        chosen = _UNSAFE.sub("_", chosen).strip(" ").lstrip(".") or f"frame_{index:06d}"
        stem, ext = _split_ext(chosen)
        if ext.lower() not in IMAGE_EXTS:
            stem, ext = stem + ext, default_ext
        stem = stem[:200]
        candidate, n = stem + ext, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}{ext}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 8:
        return name, ""
    return stem, "." + ext


def create_next_task(ctx: StepContext, *, source: TaskInfo, target_project: int, stage: str,
                     produce: Callable[[Path], Outcome], then_detect: str | None = None,
                     conv_mask_to_poly: bool = False) -> PipelineResult:
    """Find-or-create the next task (deterministic name), check it is complete, then start its jobs.

    A task this job (an earlier attempt) or an earlier run already created for the same source is
    reused only when its data is complete (every frame, under the expected names); an incomplete one
    — a crash during the upload, CVAT still processing a killed attempt's data — is deleted and made
    again, so a replayed completion never makes a second task nor reports an empty one as done.
    Frames are produced into a work dir and uploaded in frame order with the source's subset and
    segment size. The job succeeds only once the task is complete and its jobs are started.
    """
    name = next_task_name(source, stage)
    expected = frame_file_names([f.name for f in ctx.cvat.task_frames(source.id)], default_ext(ctx))
    recorded = [o["id"] for o in ctx.previous.get("objects", []) if o.get("kind") == "task"]
    task, reused_note = _existing_task(ctx, target_project, name, recorded, expected)
    errors: dict[int, str] = {}
    reused = task is not None
    if task is None:
        work = Path(tempfile.mkdtemp(prefix=work_dir_prefix(ctx), dir=_tmp_root(ctx)))
        try:
            outcome = produce(work)
            errors = outcome.errors
            if errors and not ctx.settings.partial_tasks:
                listing = "; ".join(f"frame {f}: {r}" for f, r in sorted(errors.items())[:30])
                raise PermanentError(f"{len(errors)} of {source.size} frames could not be processed, no task created "
                                     f"(set BRIDGE_PARTIAL_TASKS=true to create it without them): {listing}")
            if not outcome.files:
                raise PermanentError("no frame could be processed; no task created")
            ctx.check_cancelled()
            files = [outcome.files[f] for f in sorted(outcome.files)]
            ctx.progress.note("next_task_frames", len(files))

            def record(task_id: int) -> None:  # before the upload: a crash now leaves a task we recognise
                if task_id not in recorded:
                    ctx.progress.created("task", task_id)
                    ctx.progress.flush(force=True)

            task = ctx.cvat.create_task(target_project, name, files, subset=source.subset,
                                        segment_size=source.segment_size or None,
                                        image_quality=ctx.settings.jpeg_quality, on_created=record)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        problem = _incomplete(ctx, task, expected, len(files))
        if problem:
            raise CvatRejected(f"CVAT created task {task.id} but {problem}")
    else:
        ctx.progress.set_total(0)
        if task.id not in recorded:
            ctx.progress.created("task", task.id)
        ctx.log.info("task %s (%r) already exists for source task %s, complete; reusing it", task.id, name, source.id)

    started = _start_jobs(ctx, task, then_detect=then_detect, conv_mask_to_poly=conv_mask_to_poly)
    summary = (f"{'reused' if reused else 'created'} task {task.id} in project {target_project} "
               f"({task.size} frames); {started}" + (f"; {len(errors)} frames skipped" if errors else "")
               + (f"; {reused_note}" if reused_note else ""))
    return PipelineResult(summary=summary, created={"tasks": [task.id]}, frames_total=source.size,
                          frames_failed=len(errors))


def _existing_task(ctx: StepContext, project: int, name: str, recorded: list[int],
                   expected: list[str]) -> tuple[TaskInfo | None, str]:
    """The complete next task made earlier for this source, if any; incomplete ones of ours are deleted."""
    candidates: list[TaskInfo] = []
    for task_id in recorded:
        try:
            candidates.append(ctx.cvat.get_task(task_id))
        except NotFound:
            ctx.log.info("task %s recorded by an earlier attempt is gone", task_id)
    candidates += [t for t in ctx.cvat.find_tasks(project, name) if t.id not in {c.id for c in candidates}]
    removed: list[int] = []
    for task in sorted(candidates, key=lambda t: t.id):
        if task.project_id not in (None, project) or task.name != name:
            continue  # a recorded id that is no longer our task (moved or renamed by a person): leave it
        problem = _incomplete(ctx, task, expected, ctx.previous.get("notes", {}).get("next_task_frames"))
        if not problem:
            return task, (f"removed incomplete task(s) {removed}" if removed else "")
        if task.size and not set(_frame_names(ctx, task)) <= set(expected):
            raise PermanentError(f"task {task.id} ({name!r}) exists with other frames than the source's: {problem}; "
                                 "rename or delete it in CVAT, then retry")
        ctx.log.warning("task %s (%r) is incomplete (%s): deleting it and creating it again", task.id, name, problem)
        ctx.cvat.delete_task(task.id)
        removed.append(task.id)
    return None, (f"removed incomplete task(s) {removed}" if removed else "")


def _frame_names(ctx: StepContext, task: TaskInfo) -> list[str]:
    try:
        return [f.name for f in ctx.cvat.task_frames(task.id)]
    except (CvatRejected, PermanentError):
        return []


def _incomplete(ctx: StepContext, task: TaskInfo, expected: list[str], count: int | None) -> str | None:
    """Why ``task`` is not a complete next-stage task (None when it is): data, frame names, jobs."""
    if not task.size:
        return "it has no data (its upload was interrupted or CVAT is still processing it)"
    names = _frame_names(ctx, task)
    if len(names) != task.size:
        return f"its frame list has {len(names)} entries for {task.size} frames"
    wanted = count if isinstance(count, int) and count > 0 else (None if ctx.settings.partial_tasks
                                                               else len(expected))
    if wanted is not None and task.size != wanted:
        return f"it has {task.size} frames, expected {wanted}"
    position = {n: i for i, n in enumerate(expected)}
    if any(n not in position for n in names):
        return "its frame names are not the source's"
    if [position[n] for n in names] != sorted(position[n] for n in names):
        return "its frames are not in the source's order"
    if not task.job_ids:
        return "it has no jobs"
    return None


def _start_jobs(ctx: StepContext, task: TaskInfo, *, then_detect: str | None, conv_mask_to_poly: bool) -> str:
    if not task.job_ids:
        raise CvatRejected(f"task {task.id} has no jobs; the next stage cannot start")
    if then_detect:
        # Legacy combined routes: detect right here instead of relying on a webhook in the target project.
        from bridge.pipelines.detect import run_detect

        results = [run_detect(ctx, job_id, then_detect, conv_mask_to_poly=conv_mask_to_poly)
                   for job_id in task.job_ids]
        return f"{then_detect} on {len(results)} jobs: {sum(r.shapes_written for r in results)} shapes"
    moved = 0
    for job_id in task.job_ids:
        if ctx.cvat.get_job(job_id).state == "new":  # never reset a job a human already moved on
            ctx.cvat.set_job_state(job_id, "in progress")
            moved += 1
    still_new = [j for j in task.job_ids if ctx.cvat.get_job(j).state == "new"]
    if still_new:
        raise CvatUnavailable(f"jobs {still_new} of task {task.id} are still 'new' after setting them in progress")
    return f"{moved} of {len(task.job_ids)} jobs set to 'in progress'"


def work_dir_prefix(ctx: StepContext) -> str:
    """Work dirs are named after their job so that a later attempt (or the sweep) can remove a crashed one's."""
    return f"job{ctx.job_id}-" if ctx.job_id is not None else "inline-"


def _tmp_root(ctx: StepContext) -> str:
    root = ctx.settings.resolved_cache_dir / "work"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


@dataclass(frozen=True)
class Source:
    """The completed task a stage reads, its skeleton label, and the stage's parameters."""

    task: TaskInfo
    skeleton: LabelSpec
    params: QuadratParams


def prepare_source(ctx: StepContext, pipeline: str, skeleton: str, sublabels: int) -> Source:
    """Fail fast, before any frame is read: a task event, a usable target project, the source's skeleton."""
    p: QuadratParams = ctx.params  # type: ignore[assignment]
    task_id = ctx.trigger.task_id or ctx.trigger.resource_id
    if task_id is None:
        raise PermanentError(f"{pipeline} needs a task event")
    task = ctx.cvat.get_task(task_id)
    if task.project_id == p.target_proj_id:
        raise PermanentError(f"target_proj_id {p.target_proj_id} is the source task's own project; "
                             "point it at the next stage's project")
    check_target(ctx, p.target_proj_id, p.then_detect)
    label = skeleton_label(ctx.cvat.get_labels(task_id=task_id), skeleton, sublabels, f"task {task_id}")
    return Source(task, label, p)


def run_stage(ctx: StepContext, src: Source, stage: str, fn: FrameFn, *, concurrency: int) -> PipelineResult:
    """Transform every frame of ``src`` with ``fn`` into the next stage's task (found or created)."""

    def produce(out_dir: Path) -> Outcome:
        return transform_frames(ctx, src.task, fn, out_dir, concurrency=concurrency)

    return create_next_task(ctx, source=src.task, target_project=src.params.target_proj_id, stage=stage,
                            produce=produce, then_detect=src.params.then_detect,
                            conv_mask_to_poly=src.params.conv_mask_to_poly)
