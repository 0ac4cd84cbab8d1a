"""The app factory: the HTTP layer on top of the composition root (``bridge.runtime.build``)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import __version__
from bridge.app import console
from bridge.app.deps import AppState
from bridge.app.limits import RequestLimitsMiddleware
from bridge.app.routers import health, jobs, webhooks
from bridge.config import Settings
from bridge.jobs.store import JobStore
from bridge.logs import request_id
from bridge.runtime import Runtime, build

log = logging.getLogger(__name__)

DESCRIPTION = """
CVAT project webhooks POST here. Every webhook route verifies `X-Signature-256`, answers `ping`
with 200, ignores events that are not real transitions (200 with the reason), and stores
triggering events as durable jobs (202 with the job id) that workers run in the background.
Follow a job with `GET /jobs/{id}`.
"""


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestIdMiddleware:
    """Pure ASGI (no per-request task like ``BaseHTTPMiddleware``): takes or makes ``X-Request-ID``,
    puts it in the log context and echoes it on the response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id") or ""
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:12]  # it goes into every log line

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


def create_app(settings: Settings, *, store: JobStore | None = None, runtime: Runtime | None = None,
               workers: int | None = None, watch_functions: list[str] | None = None) -> FastAPI:
    """Build the app on the composition root (``bridge.runtime.build``). ``workers`` overrides
    BRIDGE_WORKERS (0 = API only); ``store``/``runtime`` replace the built ones (tests)."""
    bridge = build(settings, store=store, runtime=runtime)
    n_workers = settings.store.workers if workers is None else workers
    state = AppState(bridge=bridge, checks=health.ComponentChecks(bridge.runtime),
                     watch_functions=list(watch_functions or []),
                     own_username=settings.cvat_login if settings.ignore_own_events else None)
    metrics = bridge.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.warn_unsafe()
        pool = bridge.worker_pool(n_workers) if n_workers else None
        state.pool = pool
        if pool:
            pool.start()
            log.info("started %d in-process workers", n_workers)
        try:
            yield
        finally:
            if pool:
                pool.stop()
            bridge.close()

    # /docs and /redoc come from assets shipped with the bridge (bridge.app.console.docs), not a CDN.
    app = FastAPI(title="cvat-bridge", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.bridge = state

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}", "errors": jsonable_encoder(exc.errors())},
                            status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def _store_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        if isinstance(exc, DataError):  # the value, not the store: retrying cannot help
            first = str(exc.orig or exc).splitlines()[0][:200]
            return JSONResponse({"detail": f"value cannot be stored: {first}"}, status_code=422)
        log.error("job store unavailable: %s", exc)
        return JSONResponse({"detail": "job store unavailable; retry later"}, status_code=503)

    # Added first = runs inside RequestIdMiddleware, so its 413/422/431 answers carry X-Request-ID too.
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes,
                       on_reject=lambda reason: metrics.rejected.labels(reason).inc())
    app.add_middleware(RequestIdMiddleware)
    app.include_router(webhooks.build_router(bridge.registry))
    app.include_router(jobs.router)
    app.include_router(health.router)
    console.install(app, settings)  # the web console at /, its API, offline /docs and /redoc
    return app
