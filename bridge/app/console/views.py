"""What the console shows, computed from job rows (``JobOut``): no I/O here.

- ``frame_pairs``: which frames of a job get thumbnails, and where each comes from — *before* is the
  frame of the task that triggered the job, *after* (warp, grid removal) the same frame in the task the
  job created. That task holds the source frames that did not fail, in frame order, so source frame
  ``f`` is frame ``f - (failed frames before f)`` there.
- ``project_view`` / ``projects_overview``: the pipeline view per CVAT project — its stages (the
  pipelines its webhooks run, with their main parameter), the tasks in each and how many jobs are
  running, waiting or failed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

STAGE_PARAMS = ("model_name", "function", "then_detect", "target_proj_id")
"""Job parameters that tell two stages of the same pipeline apart (in this order)."""


def value_of(status: Any) -> str:
    """A status as its plain string (``JobStatus`` members and strings alike)."""
    return str(getattr(status, "value", status))


class FrameRef(BaseModel):
    """One frame the console shows: its reason when it failed, and the CVAT frames of its thumbnails."""

    frame: int
    error: str | None = None
    before: tuple[int, int] | None = None
    """(task id, frame) of the frame the job read."""
    after: tuple[int, int] | None = None
    """(task id, frame) of the frame the job made, in the task it created."""


def created_task(job: Any) -> int | None:
    """The last CVAT task the job created (the next stage's task), if any."""
    tasks = [int(o["id"]) for o in job.created_objects if o.get("kind") == "task" and "id" in o]
    return tasks[-1] if tasks else None


def frame_pairs(job: Any, *, first: int = 8, max_errors: int = 50) -> list[FrameRef]:
    """Failed frames (up to ``max_errors``) plus, for jobs that made a next task, its first ``first``
    frames with their before/after pair. Jobs without a source task get no thumbnails."""
    source = job.trigger.get("task_id")
    errors = {int(e.frame): e.reason for e in job.frame_errors[:max_errors]}
    made = created_task(job)
    total = max(int(job.progress.total or 0), int((job.notes or {}).get("next_task_frames") or 0))
    shown = set(errors)
    if made is not None:
        shown |= set([f for f in range(total) if f not in errors][:first])
    failed_sorted = sorted(errors)
    out = []
    for frame in sorted(shown):
        ref = FrameRef(frame=frame, error=errors.get(frame))
        if source is not None:
            ref.before = (int(source), frame)
        if made is not None and frame not in errors:
            ref.after = (made, frame - sum(1 for f in failed_sorted if f < frame))
        out.append(ref)
    return out


def frame_ref(job: Any, frame: int) -> FrameRef | None:
    """The ``FrameRef`` of one frame of the job (any frame of its source task), None without a source."""
    source = job.trigger.get("task_id")
    if source is None or frame < 0:
        return None
    errors = {int(e.frame): e.reason for e in job.frame_errors}
    ref = FrameRef(frame=frame, error=errors.get(frame), before=(int(source), frame))
    made = created_task(job)
    if made is not None and frame not in errors:
        ref.after = (made, frame - sum(1 for f in errors if f < frame))
    return ref


# --- pipeline view -------------------------------------------------------------------------------------
def stage_key(job: Any) -> str:
    """``pipeline`` plus its distinguishing parameter, e.g. ``detect · frame-detector``."""
    for name in STAGE_PARAMS:
        value = (job.params or {}).get(name)
        if value not in (None, ""):
            label = f"→ project {value}" if name == "target_proj_id" else str(value)
            return f"{job.pipeline} · {label}"
    return job.pipeline


def bucket(job: Any) -> str:
    """``waiting`` for a queued job held back by an outage, else its status."""
    return "waiting" if job.waiting else value_of(job.status)


class TaskRow(BaseModel):
    task_id: int | None
    jobs: int
    counts: dict[str, int]
    latest_job: int
    latest_status: str
    latest_progress: tuple[int, int]
    cvat_jobs: list[int] = []
    next_task: int | None = None


class Stage(BaseModel):
    key: str
    pipeline: str
    params: dict[str, Any]
    routes: list[str]
    target_project: int | None
    counts: dict[str, int]
    tasks: list[TaskRow]


class ProjectView(BaseModel):
    project_id: int
    jobs_seen: int
    counts: dict[str, int]
    stages: list[Stage]
    feeds_from: list[int]
    """Projects whose stages create tasks in this one."""
    truncated: bool
    """Only the most recent jobs were read."""


class ProjectSummary(BaseModel):
    project_id: int
    jobs: int
    counts: dict[str, int]
    stages: list[str]
    targets: list[int]
    last_job: int


@dataclass
class _Acc:
    jobs: list[Any] = field(default_factory=list)


def _counts(jobs: Iterable[Any]) -> dict[str, int]:
    return dict(Counter(bucket(j) for j in jobs))


def _target(job: Any) -> int | None:
    value = (job.params or {}).get("target_proj_id")
    return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def project_view(project_id: int, jobs: Sequence[Any], all_recent: Sequence[Any], routes: dict[str, list[str]],
                 *, truncated: bool = False) -> ProjectView:
    """The stages of ``project_id`` from its jobs (newest first), with the routes each pipeline answers on."""
    stages: dict[str, list[Any]] = defaultdict(list)
    for job in jobs:
        stages[stage_key(job)].append(job)
    out = []
    for key, members in sorted(stages.items()):
        by_task: dict[int | None, list[Any]] = defaultdict(list)
        for job in members:
            by_task[job.trigger.get("task_id")].append(job)
        rows = []
        for task_id, tjobs in sorted(by_task.items(), key=lambda kv: -max(j.id for j in kv[1])):
            latest = max(tjobs, key=lambda j: j.id)
            rows.append(TaskRow(
                task_id=task_id, jobs=len(tjobs), counts=_counts(tjobs), latest_job=latest.id,
                latest_status=bucket(latest), latest_progress=(latest.progress.done, latest.progress.total),
                cvat_jobs=sorted({int(j.trigger["job_id"]) for j in tjobs if j.trigger.get("job_id")}),
                next_task=created_task(latest),
            ))
        first = members[0]
        out.append(Stage(key=key, pipeline=first.pipeline, params=dict(first.params or {}),
                         routes=routes.get(first.pipeline, []), target_project=_target(first),
                         counts=_counts(members), tasks=rows))
    feeds = sorted({j.trigger.get("project_id") for j in all_recent
                    if _target(j) == project_id and j.trigger.get("project_id") is not None})
    return ProjectView(project_id=project_id, jobs_seen=len(jobs), counts=_counts(jobs), stages=out,
                       feeds_from=feeds, truncated=truncated)


def projects_overview(jobs: Sequence[Any]) -> list[ProjectSummary]:
    """One row per CVAT project seen in ``jobs``, in pipeline order (a project that feeds another first)."""
    grouped: dict[int, list[Any]] = defaultdict(list)
    for job in jobs:
        pid = job.trigger.get("project_id")
        if pid is not None:
            grouped[int(pid)].append(job)
    rows = [ProjectSummary(project_id=pid, jobs=len(js), counts=_counts(js),
                           stages=sorted({stage_key(j) for j in js}),
                           targets=sorted({t for j in js if (t := _target(j)) is not None}),
                           last_job=max(j.id for j in js))
            for pid, js in grouped.items()]
    return sorted(rows, key=lambda r: r.project_id)
