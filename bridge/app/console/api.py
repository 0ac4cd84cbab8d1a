"""The console's JSON API under ``/console/api`` (the pages read ``/jobs`` and ``/health`` as well).

Reads follow the job API's rule: open while BRIDGE_API_TOKEN is unset, bearer token once it is set.
Only ``/console/api/config`` is always open: it tells the page whether to ask for the token.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from bridge import __version__
from bridge.app.console.thumbs import ThumbnailCache
from bridge.app.console.views import (
    FrameRef,
    ProjectSummary,
    ProjectView,
    frame_pairs,
    frame_ref,
    project_view,
    projects_overview,
)
from bridge.app.deps import RegistryDep, RuntimeDep, SettingsDep, StoreDep, require_token
from bridge.app.routers.jobs import JobOut, job_out
from bridge.errors import BadImage, BridgeError, CvatRejected, NotFound, TransientError
from bridge.jobs.store import JobFilter

log = logging.getLogger(__name__)

RECENT = 1000
"""The pipeline view reads this many most recent jobs."""
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="bridge job id, or CVAT project id for /projects")]


class ConsoleConfig(BaseModel):
    version: str
    token_required: bool
    """BRIDGE_API_TOKEN is set: reads need ``Authorization: Bearer <token>``."""
    changes_enabled: bool
    """Retry and cancel over HTTP work only with BRIDGE_API_TOKEN set (and then need it)."""


class ConsoleSession(BaseModel):
    cvat_ui_url: str
    """Base of the links into CVAT's UI (``/projects/P``, ``/tasks/T``, ``/tasks/T/jobs/J``):
    BRIDGE_CVAT_UI_URL, else CVAT_URL."""
    pipelines: list[str]
    routes: dict[str, list[str]]
    """Webhook routes per pipeline."""


class FrameOut(BaseModel):
    frame: int
    error: str | None
    before_url: str | None
    after_url: str | None
    before: tuple[int, int] | None
    after: tuple[int, int] | None


def _routes(registry: object) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for route in getattr(registry, "routes", ()):
        out[route.pipeline].append(route.path)
    return dict(out)


async def _job(store: StoreDep, job_id: int) -> JobOut:
    job = await run_in_threadpool(store.get, job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id} not found")
    return job_out(job)


def _frame_out(job_id: int, ref: FrameRef) -> FrameOut:
    base = f"/console/api/jobs/{job_id}/frames/{ref.frame}"
    return FrameOut(frame=ref.frame, error=ref.error, before=ref.before, after=ref.after,
                    before_url=f"{base}/before.jpg" if ref.before else None,
                    after_url=f"{base}/after.jpg" if ref.after else None)


def build_router(thumbs: ThumbnailCache) -> APIRouter:
    """The console API; ``thumbs`` is this app's thumbnail cache."""
    router = APIRouter(prefix="/console/api", tags=["console"])
    reads = [Depends(require_token)]

    @router.get("/config", response_model=ConsoleConfig, summary="Console start-up facts (always open)")
    async def config(settings: SettingsDep) -> ConsoleConfig:
        token = bool(settings.api_token and settings.api_token.get_secret_value())
        return ConsoleConfig(version=__version__, token_required=token, changes_enabled=token)

    @router.get("/session", response_model=ConsoleSession, dependencies=reads,
                summary="CVAT UI base URL, pipelines and their routes")
    async def session(settings: SettingsDep, registry: RegistryDep) -> ConsoleSession:
        routes = _routes(registry)
        names = sorted(set(getattr(registry, "specs", {})) | set(routes))
        ui = (settings.cvat_ui_url or settings.cvat_url).rstrip("/")
        return ConsoleSession(cvat_ui_url=ui, pipelines=names, routes=routes)

    @router.get("/projects", response_model=list[ProjectSummary], dependencies=reads,
                summary=f"CVAT projects seen in the last {RECENT} jobs, with their stages and job counts")
    async def projects(store: StoreDep) -> list[ProjectSummary]:
        rows, _ = await run_in_threadpool(store.list, JobFilter(), limit=RECENT)
        return projects_overview([job_out(j) for j in rows])

    @router.get("/projects/{project_id}", response_model=ProjectView, dependencies=reads,
                summary="Pipeline view of one CVAT project: stages, tasks in each, running/waiting/failed counts")
    async def project(project_id: Id, store: StoreDep, registry: RegistryDep) -> ProjectView:
        rows, total = await run_in_threadpool(store.list, JobFilter(project_id=project_id), limit=RECENT)
        recent, _ = await run_in_threadpool(store.list, JobFilter(), limit=RECENT)
        return project_view(project_id, [job_out(j) for j in rows], [job_out(j) for j in recent],
                            _routes(registry), truncated=total > len(rows))

    @router.get("/jobs/{job_id}/frames", response_model=list[FrameOut], dependencies=reads,
                summary="Frames of a job with thumbnails: failed ones, and before/after pairs of new tasks")
    async def frames(job_id: Id, store: StoreDep) -> list[FrameOut]:
        job = await _job(store, job_id)
        return [_frame_out(job_id, ref) for ref in frame_pairs(job)]

    @router.get("/jobs/{job_id}/frames/{frame}/{side}.jpg", dependencies=reads, response_class=Response,
                summary="Thumbnail (JPEG, 256 px) of a frame the job read (before) or made (after)",
                responses={200: {"content": {"image/jpeg": {}}},
                           404: {"description": "no such job, frame, or no new task yet"},
                           422: {"description": "the frame cannot be decoded"},
                           503: {"description": "CVAT unreachable"}})
    async def thumbnail(job_id: Id,
                        frame: Annotated[int, Path(ge=0, le=MAX_ID, description="frame of the job's source task")],
                        side: Annotated[Literal["before", "after"], Path(
                            description="before: the frame the job read; after: the frame it made in its new task")],
                        store: StoreDep, runtime: RuntimeDep) -> Response:
        job = await _job(store, job_id)
        ref = frame_ref(job, frame)
        if ref is None:
            raise HTTPException(404, f"job {job_id} has no source task to read frames from")
        where = ref.before if side == "before" else ref.after
        if where is None:
            why = f"frame {frame} failed" if ref.error else "the job has not created a task yet"
            raise HTTPException(404, f"no 'after' frame for frame {frame} of job {job_id}: {why}")
        task_id, number = where
        try:
            data = await run_in_threadpool(thumbs.get, task_id, number,
                                           lambda t, fs: runtime.cvat.iter_frames(t, fs))
        except (NotFound, ValueError) as exc:
            raise HTTPException(404, f"task {task_id} frame {number}: {exc}") from None
        except BadImage as exc:
            raise HTTPException(422, str(exc)) from None
        except TransientError as exc:
            raise HTTPException(503, f"CVAT unavailable: {exc}") from None
        except CvatRejected as exc:
            raise HTTPException(502, f"CVAT refused: {exc}") from None
        except BridgeError as exc:  # e.g. no CVAT credentials configured
            raise HTTPException(502, f"cannot read frames from CVAT: {exc}") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    return router
