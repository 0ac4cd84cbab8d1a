"""``/health`` (GET and POST: CVAT's Ping posts) and ``/metrics``."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from bridge import __version__
from bridge.app.deps import AppState, MetricsDep, StateDep
from bridge.errors import BridgeError
from bridge.jobs.store import JobFilter

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class ComponentChecks:
    """CVAT and Nuclio reachability, cached so a busy health probe does not hammer them."""

    def __init__(self, runtime: Any, ttl: float = 30.0):
        self.runtime = runtime
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def _cached(self, key: str, fn) -> dict[str, Any]:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        try:
            value = {"ok": True, **fn()}
        except BridgeError as exc:
            value = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            value = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self._cache[key] = (time.monotonic(), value)
        return value

    def cvat(self) -> dict[str, Any]:
        return self._cached("cvat", lambda: self.runtime.cvat.check())

    def nuclio(self, functions: list[str]) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            nuclio = self.runtime.nuclio
            reach = {name: nuclio.ping(name) for name in functions}
            # Only what is configured is probed: direct invocation without a dashboard has none to ask.
            configured = nuclio.dashboard_url is not None
            listed = nuclio.dashboard_functions() if configured else None
            dashboard = ({"url": nuclio.dashboard_url, "reachable": listed is not None, "functions": listed}
                         if configured else {"url": None, "configured": False})
            out: dict[str, Any] = {"dashboard": dashboard, "functions": reach,
                                   "all_reachable": all(reach.values()) if reach else None}
            # Direct invocation needs only the functions; with none in use yet, a configured dashboard must
            # answer, and with no dashboard there is nothing to fail.
            out["ok"] = all(reach.values()) if reach else (listed is not None if configured else True)
            return out

        return self._cached("nuclio:" + ",".join(functions), check)


def functions_in_use(state: AppState) -> list[str]:
    """The Nuclio functions to watch: configured ones plus those the recent jobs' pipelines use
    (each pipeline's spec says which, from the job's parameters)."""
    bridge = state.bridge
    names = set(state.watch_functions)
    pipeline_settings = bridge.settings.pipelines
    try:
        rows, _ = bridge.store.list(JobFilter(), limit=200)
    except Exception as exc:  # noqa: BLE001 - the database check reports this separately
        log.debug("health: could not list jobs for function names: %s", exc)
        return sorted(names)
    for job in rows:
        spec = bridge.registry.specs.get(job.pipeline)
        if spec is not None:
            names.update(spec.functions_for(job.params or {}, pipeline_settings))
    return sorted(names)


async def _health(request: Request, state: AppState) -> JSONResponse:
    components: dict[str, Any] = {}
    healthy = True
    store = state.store
    try:
        await run_in_threadpool(store.ping)
        components["database"] = {"ok": True, "backend": store.dialect}
    except Exception as exc:  # noqa: BLE001
        components["database"] = {"ok": False, "error": str(exc)}
        healthy = False
    if request.query_params.get("deep", "true").lower() not in ("0", "false", "no"):
        components["cvat"] = await run_in_threadpool(state.checks.cvat)
        functions = await run_in_threadpool(functions_in_use, state)
        components["nuclio"] = await run_in_threadpool(state.checks.nuclio, functions)
    pool = state.pool
    workers: dict[str, Any] = {"in_process": pool.count if pool else 0,
                               "alive": sum(t.is_alive() for t in pool.threads) if pool else 0}
    if state.supervisor_workers is not None:  # an HTTP process of `bridge serve --processes N`
        workers["in_supervisor"] = state.supervisor_workers
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "version": __version__,
        "workers": workers,
        "components": components,
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/health", summary="Liveness plus component checks (CVAT, Nuclio, database)")
async def health_get(request: Request, state: StateDep) -> JSONResponse:
    return await _health(request, state)


@router.post("/health", summary="Same as GET (CVAT's webhook Ping posts here)")
async def health_post(request: Request, state: StateDep) -> JSONResponse:
    return await _health(request, state)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    data = await run_in_threadpool(metrics.render)
    return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")
