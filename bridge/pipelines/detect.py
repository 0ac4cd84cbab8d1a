"""``detect``: run a Nuclio detector over a job's frames and write its shapes back.

validate (job, labels, function spec) → remove this model's shapes from earlier runs → stream the
job's original frames by chunk through the function (bounded concurrency) → convert to CVAT shapes
→ write in batches → report per-frame errors and unmatched labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.cvat.shapes import DetectorConverter
from bridge.errors import Cancelled, LabelMismatch
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.params import DetectParams
from bridge.pipelines.spec import JOB_EVENTS, PipelineSpec, Route
from bridge.pipelines.steps import (
    FramePolicy,
    ShapeWriter,
    attempt_shape_ids,
    earlier_shape_ids,
    map_frames,
    remove_earlier_shapes,
    report_unmatched,
)


def check_function_labels(ctx: StepContext, function: str, project_labels: set[str]) -> None:
    """Refuse a run where none of the function's labels exist in the project (when the spec is known)."""
    info = ctx.nuclio.function_info(function)
    spec = (info or {}).get("spec") or []
    names = {item.get("name") for item in spec if isinstance(item, dict) and item.get("name")}
    if not names:
        return
    missing = sorted(names - project_labels)
    if missing and not (names & project_labels):
        raise LabelMismatch(
            f"none of {function}'s labels ({', '.join(sorted(names))}) exist in the project "
            f"(it has: {', '.join(sorted(project_labels)) or 'no labels'}); check model_name and the project labels"
        )
    if missing:
        ctx.progress.note("labels_not_in_project", missing)
        ctx.log.warning("%s labels not in the project (their detections will be dropped): %s",
                        function, ", ".join(missing))


def run_detect(ctx: StepContext, job_id: int, function: str, *, conv_mask_to_poly: bool = False,
               threshold: float | None = None) -> PipelineResult:
    """Detect on every (non-deleted) frame of ``job_id``; idempotent across re-runs of the same model."""
    cvat = ctx.cvat
    # The reads a run starts with go out together, and the first chunk's read (CVAT builds it on its first
    # read, ~1 s) starts first, where the webhook said the frames are (else as soon as the job says).
    trig = ctx.trigger
    if trig.job_id == job_id and trig.task_id and trig.chunk_size and trig.start_frame is not None:
        cvat.prefetch_frames(trig.task_id, trig.start_frame, chunk_size=trig.chunk_size)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="detect-setup") as setup:
        labels_read = setup.submit(cvat.get_labels, job_id=job_id)
        frames_read = setup.submit(cvat.job_frames, job_id)
        setup.submit(ctx.nuclio.function_info, function)  # cached by the client for check_function_labels
        job = cvat.get_job(job_id)
        if job.type != "annotation":
            return PipelineResult(summary=f"job {job_id} is a {job.type} job; nothing to do")
        cvat.prefetch_frames(job.task_id, job.start_frame)
        labels = labels_read.result()
        frames = frames_read.result()
    if not labels:
        raise LabelMismatch(f"job {job_id} has no labels; add labels to the project first")
    check_function_labels(ctx, function, {label.name for label in labels})
    converter = DetectorConverter(labels, conv_mask_to_poly=conv_mask_to_poly, threshold=threshold,
                                  polygon_tolerance=ctx.settings.polygon_tolerance)

    # A re-run replaces this model's shapes from earlier runs on this job, and nothing else; a
    # resumed attempt keeps the frames it checkpointed and drops any half-recorded batch.
    writer = ShapeWriter(ctx, job_id, batch_size=ctx.settings.write_batch_size)
    earlier = earlier_shape_ids(ctx, match=lambda p: same_model(p, function))
    removed = remove_earlier_shapes(ctx, job_id, earlier, sources=("auto",))
    remove_earlier_shapes(ctx, job_id, attempt_shape_ids(ctx), sources=("auto",), keep_frames=writer.frames_done)

    sizes = {f.frame: (f.width, f.height) for f in frames}
    todo = [f.frame for f in frames if f.frame not in writer.frames_done]
    ctx.progress.set_total(len(frames))
    if len(todo) < len(frames):
        ctx.progress.advance(len(frames) - len(todo))
        ctx.log.info("job %s: resuming, %d of %d frames already written", job_id, len(frames) - len(todo),
                     len(frames))

    def work(frame: int, data: bytes):
        items = ctx.nuclio.detect(function, data, threshold=threshold)
        return converter.convert(items, frame, sizes[frame])

    unmatched: Counter[str] = Counter()
    policy = FramePolicy(ctx, function, len(todo))
    dropped = 0
    concurrency = ctx.nuclio.concurrency_for(function)
    for frame, result in map_frames(ctx, cvat.iter_frames(job.task_id, todo), work, concurrency=concurrency):
        if isinstance(result, Cancelled):
            raise result
        if isinstance(result, BaseException):
            policy.failed(frame, result)
        else:
            policy.succeeded()
            unmatched.update(result.unmatched_labels)
            dropped += len(result.dropped)
            writer.add(frame, result.shapes, result.tags)
        ctx.progress.advance()
    writer.flush()

    report_unmatched(ctx, job_id, function, dict(unmatched))
    policy.check()
    failed = policy.errors
    if dropped:
        ctx.progress.note("dropped_shapes", dropped)
    summary = (f"{function}: {len(frames)} frames, {writer.written} shapes written"
               + (f", {removed} from an earlier run replaced" if removed else "")
               + (f", {len(failed)} frames failed" if failed else "")
               + (f", {dropped} invalid shapes dropped" if dropped else "")
               + (f", unmatched labels {dict(unmatched)}" if unmatched else ""))
    return PipelineResult(summary=summary, frames_total=len(frames), frames_failed=len(failed),
                          shapes_written=writer.written, created={"shapes": list(writer.ids)})


def same_model(earlier: Mapping[str, Any], function: str) -> bool:
    """An earlier job's shapes are this run's to replace when the same detector made them (a detect job's
    ``model_name``, or a legacy crop/remove-grid job's ``then_detect``)."""
    return earlier.get("model_name", earlier.get("then_detect")) == function


def run(ctx: StepContext) -> PipelineResult:
    p: DetectParams = ctx.params  # type: ignore[assignment]
    job_id = ctx.job_event(SPEC.name)
    result = run_detect(ctx, job_id, p.model_name, conv_mask_to_poly=p.conv_mask_to_poly, threshold=p.threshold)
    if p.refine:
        from bridge.pipelines.sam2_refine import refine_job

        # this attempt's detections, plus those a crashed earlier attempt checkpointed
        detections = set(result.created.get("shapes", [])) | attempt_shape_ids(ctx)
        refined = refine_job(ctx, job_id, p.sam2_function or ctx.settings.sam2_function,
                             only_ids=detections, conv_mask_to_poly=True, keep_prompts=False)
        result.summary += f"; SAM 2 refine: {refined.summary}"
        result.frames_failed += refined.frames_failed
    return result


SPEC = PipelineSpec(
    name="detect",
    params_model=DetectParams,
    run=run,
    routes=(
        Route("/detect-model-webhook",
              "Run a detector function over a job when its state becomes 'in progress' (reference route)"),
        Route("/webhooks/detect", "Detector over a job (clean route)"),
    ),
    trigger="job_in_progress",
    events=JOB_EVENTS,
    reads="job",  # CVAT builds the first chunk while the job is queued
    functions=lambda p, s: [p.model_name] + ([p.sam2_function or s.sam2_function] if p.refine else []),
    same_results=lambda earlier, p, _s: same_model(earlier, p.model_name),
)
