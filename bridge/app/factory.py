"""The app factory: the HTTP layer on top of the composition root (``bridge.runtime.build``)."""

from __future__ import annotations

import logging
import re
import secrets
import threading
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
from bridge.app.intake import Intake
from bridge.app.limits import RequestLimitsMiddleware
from bridge.app.routers import health, jobs, webhooks
from bridge.config import Settings
from bridge.jobs.store import JobStore
from bridge.jobs.wake import WAKE_ENV, WakeSender
from bridge.logs import request_id
from bridge.runtime import Runtime, build, freeze_start_up

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
        rid = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(6)  # it goes into every log line

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
               workers: int | None = None, watch_functions: list[str] | None = None,
               warn: bool = True, wake_socket: str | None = None,
               supervisor_workers: int | None = None) -> FastAPI:
    """Build the app on the composition root (``bridge.runtime.build``). ``workers`` overrides
    BRIDGE_WORKERS (0 = API only); ``store``/``runtime`` replace the built ones (tests); ``warn=False``
    leaves the configuration warnings to another process (a multi-process ``bridge serve``'s supervisor),
    whose ``supervisor_workers`` job workers ``wake_socket`` reaches when a webhook commits a job
    (``bridge.jobs.wake``)."""
    bridge = build(settings, store=store, runtime=runtime)
    n_workers = settings.store.workers if workers is None else workers
    state = AppState(bridge=bridge, checks=health.ComponentChecks(bridge.runtime),
                     watch_functions=list(watch_functions or []),
                     own_username=settings.cvat_login if settings.ignore_own_events else None,
                     supervisor_workers=supervisor_workers)
    metrics = bridge.metrics
    wake_other = WakeSender(wake_socket) if wake_socket else None

    def wake_workers() -> None:  # this process's workers, or the supervisor's (``bridge serve --processes``)
        if state.pool is not None:
            state.pool.wake()
        elif wake_other is not None:
            wake_other()

    # webhook inserts, committed in groups by one thread; a commit that created jobs wakes the workers
    intake = Intake(bridge.store.enqueue_many, on_created=wake_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warn:
            settings.warn_unsafe()
        pool = bridge.worker_pool(n_workers) if n_workers else None
        state.pool = pool
        if pool is None and bridge.runtime.warmer is not None:  # the CVAT client the warmer uses, built
            # before the first webhook (importing cvat-sdk holds the GIL for ~0.5 s: acks would wait)
            threading.Thread(target=bridge.runtime.prepare, args=(("cvat",),), name="runtime-prepare",
                             daemon=True).start()
        if pool:
            pool.start()
            log.info("started %d in-process workers", n_workers)
        freeze_start_up()
        try:
            yield
        finally:
            intake.close()
            if wake_other is not None:
                wake_other.close()
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

    # Innermost: webhook POSTs answered without the router (the same ``ingest`` as the routes below).
    app.add_middleware(webhooks.WebhookFastPath, registry=bridge.registry, intake=intake)
    # Added first = runs inside RequestIdMiddleware, so its 413/422/431 answers carry X-Request-ID too.
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_header_bytes=settings.max_header_bytes,
                       on_reject=lambda reason: metrics.rejected.labels(reason).inc())
    app.add_middleware(RequestIdMiddleware)
    app.include_router(webhooks.build_router(bridge.registry, intake))
    app.include_router(jobs.router)
    app.include_router(health.router)
    console.install(app, settings)  # the web console at /, its API, offline /docs and /redoc
    return app


SUPERVISOR_ENV = "BRIDGE_SERVE_SUPERVISOR"
"""Set by a multi-process ``bridge serve`` to its pid: its HTTP children end when it ends."""
SUPERVISOR_WORKERS_ENV = "BRIDGE_SERVE_SUPERVISOR_WORKERS"
"""Set by a multi-process ``bridge serve`` to the number of job workers it runs (its children's /health)."""


def app_from_env() -> FastAPI:
    """uvicorn's app factory for the HTTP processes of a multi-process ``bridge serve``: settings from the
    environment (and ``.env``), as in the supervisor that started this process."""
    import os

    from bridge.app.startup import load_settings, open_store
    from bridge.logs import setup_logging

    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor:
        _end_with_parent(int(supervisor))
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_json)
    workers = os.environ.get(SUPERVISOR_WORKERS_ENV)
    return create_app(settings, store=open_store(settings), warn=not supervisor,
                      wake_socket=os.environ.get(WAKE_ENV) or None,
                      supervisor_workers=int(workers) if supervisor and workers else None)


def _end_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux), so a ``kill -9`` of ``bridge serve`` leaves no
    process holding the port; a webhook being answered then gets no answer and CVAT delivers it again."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent was gone before the line above
        os._exit(1)

