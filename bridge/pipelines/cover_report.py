"""``cover_report``: when a coral-stage task is completed, measure cover per quadrat and per genus.

validate (parameters, Parquet support) → read the task's frames, labels and polygon/mask shapes,
trace each frame to its source photo → measure every quadrat (area cover with overlaps resolved,
point-intercept sample) → write the report under ``<data_dir>/reports/task-<id>/`` → record the
folder and files on the job (``notes.report_dir``, ``notes.report_files``).

Idempotent: the files depend only on the annotations and the parameters (points are seeded by the
seed and the photo name), so a rerun over unchanged annotations rewrites identical bytes. CVAT is
only read. A quadrat with an unreadable shape is a frame error (its row says why); the others are
reported.
"""

from __future__ import annotations

from bridge.errors import PermanentError
from bridge.pipelines.base import PipelineResult, StepContext
from bridge.pipelines.params import CoverReportParams
from bridge.pipelines.spec import PipelineSpec, Route
from bridge.reports.collect import make_report, report_dir, write_report
from bridge.reports.cover import Cover, PointPlan
from bridge.reports.report import Failure, ReportOptions, report_files


def options_from_params(p: CoverReportParams) -> ReportOptions:
    return ReportOptions(points=PointPlan(p.points, p.point_method, p.seed), quadrat_cm=p.quadrat_cm,
                         format=p.format, plot=p.plot)


def run(ctx: StepContext) -> PipelineResult:
    p: CoverReportParams = ctx.params  # type: ignore[assignment]
    task_id = ctx.trigger.task_id or ctx.trigger.resource_id
    if task_id is None:
        raise PermanentError(f"{SPEC.name} needs a task event")
    options = options_from_params(p)
    options.check()

    def done(result: Cover | Failure) -> None:
        ctx.check_cancelled()
        if isinstance(result, Failure):
            info = result.quadrat.info
            ctx.progress.frame_error(int(info.get("frame", -1)), f"{result.quadrat.name}: {result.reason}")
        ctx.progress.advance()

    report, meta = make_report(ctx.cvat, options, task_id=task_id, on_quadrat=done,
                               on_total=ctx.progress.set_total)
    if not report.covers:
        first = report.failures[0].reason if report.failures else "no frames"
        raise PermanentError(f"no quadrat of task {task_id} could be measured; first: {first}")
    out = report_dir(ctx.settings.data_dir, task_id=task_id)
    paths = write_report(report_files(report, meta), out)
    ctx.progress.note("report_dir", str(out))
    ctx.progress.note("report_files", [path.name for path in paths])
    covered = sorted(((sum(c.pixels[lb] for c in report.covers), lb) for lb in report.labels), reverse=True)
    top = ", ".join(lb for px, lb in covered[:3] if px) or "no labeled area"
    summary = (f"cover report of task {task_id}: {len(report.covers)} of {len(report.results)} quadrats "
               f"measured ({top}); {len(paths)} files in {out}")
    return PipelineResult(summary=summary, frames_total=len(report.results), frames_failed=len(report.failures))


SPEC = PipelineSpec(
    name="cover_report",
    params_model=CoverReportParams,
    run=run,
    routes=(Route("/webhooks/cover-report", "Coral cover report (per quadrat, per genus, CoralNet points) "
                                            "when a coral-stage task is completed"),),
    trigger="task_completed",
    events=("update:task",),  # fires on the coral task's completion; needs no target project
)
