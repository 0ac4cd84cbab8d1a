"""Job API: list, show, retry, cancel.

Reads are open while BRIDGE_API_TOKEN is unset (they need the bearer token once it is set);
retry and cancel always need the token and answer 403 while none is configured."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from bridge.app.deps import StoreDep, require_token, require_token_to_change
from bridge.jobs.models import Job, JobStatus
from bridge.jobs.store import JobFilter

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_token)])

StatusFilter = StrEnum("StatusFilter", {**{s.name: s.value for s in JobStatus}, "WAITING": "waiting"})
"""A job status, or ``waiting``: queued again after a transient error (an outage), until ``next_attempt_at``."""


class FrameError(BaseModel):
    frame: int
    reason: str


class ProgressOut(BaseModel):
    done: int
    total: int


class JobOut(BaseModel):
    id: int
    pipeline: str
    status: JobStatus
    partial: bool
    params: dict[str, Any]
    trigger: dict[str, Any]
    attempts: int
    max_attempts: int
    progress: ProgressOut
    frame_errors: list[FrameError]
    created_objects: list[dict[str, Any]]
    notes: dict[str, Any]
    error: str | None
    summary: str | None
    cancel_requested: bool
    waiting: bool
    """Queued again after a transient error (CVAT or Nuclio unreachable); ``error`` says which."""
    next_attempt_at: datetime | None
    retry_until: datetime | None
    """Transient errors are retried until then (BRIDGE_RETRY_WINDOW_SECONDS after the first one)."""
    failures: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    duration_s: float | None


class JobPage(BaseModel):
    total: int
    """Jobs matching the filters (all pages)."""
    limit: int
    offset: int
    before_id: int | None = None
    items: list[JobOut]
    next_before_id: int | None = None
    """Pass as ``before_id`` for the next page (keyset: as fast at any depth); None once a page comes back
    short (a full last page is followed by an empty one)."""


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def job_out(job: Job, now: datetime | None = None) -> JobOut:
    """The API's view of ``job``; ``now`` is the clock ``waiting`` is judged by (a listing passes the one
    its ``status=waiting`` filter used, so a job selected as waiting is shown waiting)."""
    errors = [FrameError(frame=int(f), reason=r) for f, r in sorted((job.frame_errors or {}).items(),
                                                                      key=lambda kv: int(kv[0]))]
    # Shapes are many; list the non-shape objects (tasks, issues) and count shapes.
    objects = [o for o in (job.objects or []) if o.get("kind") != "shape"]
    shapes = sum(1 for o in (job.objects or []) if o.get("kind") == "shape")
    if shapes:
        objects.append({"kind": "shapes", "count": shapes})
    available = _utc(job.available_at)
    waiting = job.status == "queued" and job.error is not None and available is not None \
        and available > (now or datetime.now(UTC))
    return JobOut(
        id=job.id, pipeline=job.pipeline, status=job.status, partial=bool(errors) and job.status == "succeeded",
        params=job.params or {}, trigger=job.trigger or {}, attempts=job.attempts, max_attempts=job.max_attempts,
        progress=ProgressOut(done=job.progress_done, total=job.progress_total), frame_errors=errors,
        created_objects=objects, notes=job.notes or {}, error=job.error, summary=job.summary,
        cancel_requested=job.cancel_requested, waiting=waiting,
        next_attempt_at=available if job.status == "queued" else None, retry_until=_utc(job.retry_until),
        failures=job.failures or 0, created_at=_utc(job.created_at), started_at=_utc(job.started_at),
        finished_at=_utc(job.finished_at), updated_at=_utc(job.updated_at), duration_s=job.duration_s,
    )


@router.get("", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    store: StoreDep,
    status: StatusFilter | None = None,
    pipeline: Annotated[str | None, Query(max_length=64)] = None,
    task_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    job_id: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="CVAT job id")] = None,
    project_id: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    before_id: Annotated[int | None, Query(ge=1, le=2**31, description=(
        "keyset pagination: only jobs with a smaller id (the previous page's `next_before_id`); "
        "unlike `offset`, as fast on page 1000 as on page 1"))] = None,
) -> JobPage:
    flt = JobFilter(status=status, pipeline=pipeline, task_id=task_id, cvat_job_id=job_id, project_id=project_id)
    now = datetime.now(UTC)
    rows, total = await run_in_threadpool(store.list, flt, limit=limit, offset=offset, before_id=before_id,
                                          now=now)
    more = len(rows) == limit and rows[-1].id > 1
    return JobPage(total=total, limit=limit, offset=offset, before_id=before_id,
                   items=[job_out(j, now) for j in rows],
                   next_before_id=rows[-1].id if more else None)


def _found(job: Job | None, job_id: int) -> Job:
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job


JobId = Annotated[int, Query(ge=1, le=2**31 - 1)]


@router.get("/{job_id}", response_model=JobOut, summary="One job: status, progress, per-frame errors, created objects")
async def get_job(job_id: int, store: StoreDep) -> JobOut:
    if not 1 <= job_id < 2**31:
        raise HTTPException(404, f"job {job_id} not found")
    return job_out(_found(await run_in_threadpool(store.get, job_id), job_id))


_CHANGES: dict = {
    "dependencies": [Depends(require_token_to_change)],
    "responses": {401: {"description": "missing or wrong bearer token"},
                  403: {"description": "BRIDGE_API_TOKEN is not set: changes over HTTP are disabled"}},
}


@router.post("/{job_id}/retry", response_model=JobOut, summary="Run a finished (failed/cancelled/succeeded) job again",
             **_CHANGES)
async def retry_job(job_id: int, store: StoreDep) -> JobOut:
    if not 1 <= job_id < 2**31:
        raise HTTPException(404, f"job {job_id} not found")
    job = _found(await run_in_threadpool(store.retry, job_id), job_id)
    if job.status not in ("queued",):
        raise HTTPException(409, f"job {job_id} is {job.status}; only finished jobs can be retried")
    return job_out(job)


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a queued or running job", **_CHANGES)
async def cancel_job(job_id: int, store: StoreDep) -> JobOut:
    if not 1 <= job_id < 2**31:
        raise HTTPException(404, f"job {job_id} not found")
    job = _found(await run_in_threadpool(store.request_cancel, job_id), job_id)
    if job.status in ("succeeded", "failed"):
        raise HTTPException(409, f"job {job_id} already {job.status}")
    return job_out(job)
