"""The app factory: wires settings, job store, runtime, metrics and routers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import __version__
from bridge.app.metrics import BridgeMetrics
from bridge.app.routers import health, jobs, webhooks
from bridge.app.settings import Settings
from bridge.jobs.store import JobFilter, JobStore
from bridge.jobs.worker import Worker, WorkerPool
from bridge.logs import request_id
from bridge.runtime import Runtime

log = logging.getLogger(__name__)

DESCRIPTION = """
CVAT project webhooks POST here. Every webhook route verifies `X-Signature-256`, answers `ping`
with 200, ignores events that are not real transitions (200 with the reason), and stores
triggering events as durable jobs (202 with the job id) that workers run in the background.
Follow a job with `GET /jobs/{id}`.
"""


class RequestIdMiddleware:
    """Pure ASGI (no per-request task like ``BaseHTTPMiddleware``): takes or makes ``X-Request-ID``,
    puts it in the log context and echoes it on the response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex[:12]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


def make_worker(store: JobStore, runtime: Runtime, settings: Settings) -> Worker:
    return Worker(store, runtime.run_job, lease_seconds=settings.lease_seconds,
                  poll_seconds=settings.poll_seconds, retry_base=settings.retry_base_seconds,
                  retry_cap=settings.retry_max_seconds, on_finish=runtime.on_finish)


def create_app(settings: Settings, *, store: JobStore | None = None, runtime: Runtime | None = None,
               workers: int | None = None, watch_functions: list[str] | None = None) -> FastAPI:
    """Build the app. ``workers`` overrides BRIDGE_WORKERS (0 = API only)."""
    store = store or JobStore(settings.resolved_database_url)
    metrics = BridgeMetrics(store.counts_by_status)
    runtime = runtime or Runtime(settings, store, metrics=metrics)
    runtime.store = runtime.store or store
    runtime.metrics = runtime.metrics or metrics
    n_workers = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.warn_unsafe()
        pool = WorkerPool(lambda i: make_worker(store, runtime, settings), n_workers) if n_workers else None
        app.state.pool = pool
        if pool:
            pool.start()
            log.info("started %d in-process workers", n_workers)
        try:
            yield
        finally:
            if pool:
                pool.stop()
            runtime.close()

    app = FastAPI(title="cvat-bridge", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.runtime = runtime
    app.state.pool = None
    app.state.own_username = settings.cvat_login if settings.ignore_own_events else None
    app.state.checks = health.ComponentChecks(runtime)
    app.state.watch_functions = watch_functions or []
    app.state.job_filter_all = JobFilter

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}", "errors": exc.errors()}, status_code=422)

    app.add_middleware(RequestIdMiddleware)
    app.include_router(webhooks.build_router())
    app.include_router(jobs.router)
    app.include_router(health.router)
    return app
