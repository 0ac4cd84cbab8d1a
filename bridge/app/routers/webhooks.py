"""Webhook intake: verify, parse, decide, store, answer — never waiting on CVAT or Nuclio (a queued job's
first chunk is only handed to the background warmer, ``bridge.cvat.warm``).

``ingest`` is the one implementation; the FastAPI routes (OpenAPI, fallback) and ``WebhookFastPath`` (the
pure-ASGI path real deliveries take) both call it, so their answers are the same."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.app.deps import AppState, StateDep, app_state
from bridge.app.intake import Intake
from bridge.app.limits import BodyTooLarge
from bridge.app.security import SIGNATURE_HEADER, signature_header_problem, verify_signature
from bridge.config import Settings
from bridge.events import PayloadError, decide, parse_envelope
from bridge.pipelines.registry import Registry, RouteSpec, flight_key

log = logging.getLogger(__name__)

WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "ping answered, or event ignored (the reason is in the body)"},
    202: {"description": "event stored as a job (or a duplicate of an existing one): `job_id`"},
    400: {"description": "body is not JSON or query parameters are invalid (CVAT does not retry 4xx)"},
    401: {"description": "missing, malformed or wrong X-Signature-256"},
    413: {"description": "body larger than BRIDGE_MAX_BODY_BYTES"},
    422: {"description": "JSON is not a CVAT webhook payload (e.g. an id outside 1..2147483647), "
                         "or a control character in the query"},
    503: {"description": "the job store is unavailable; CVAT retries later"},
}

_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True,
                                                     "required": ["event"],
                                                     "properties": {"event": {"type": "string"}}}}},
    }
}


def _params_doc(spec: RouteSpec) -> list[dict[str, Any]]:
    out = []
    for name, f in spec.params_model.model_fields.items():
        if name in spec.fixed:
            continue
        out.append({"name": name, "in": "query", "required": f.is_required(),
                    "description": f.description or "", "schema": {"type": "string"}})
    return out


_KNOWN_EVENTS = frozenset(
    ["ping"]
    + [f"{a}:{r}" for a in ("create", "update", "delete")
       for r in ("project", "task", "job", "issue", "comment", "membership", "invitation", "organization", "user")]
    + [f"completed:request[{k}]" for k in ("export:annotations", "export:dataset", "export:backup", "create:task",
                                           "merge:task", "merge:job", "calculate:quality")]
)


def event_label(event: str) -> str:
    """The metrics label of an event: known CVAT events by name, anything else as 'other' (bounded)."""
    return event if event in _KNOWN_EVENTS else "other"


Answer = tuple[int, dict[str, Any]]
BodyReader = Callable[[], Awaitable[bytes]]


def _reply(state: AppState, spec: RouteSpec, event: str, outcome: str, code: int, body: dict[str, Any],
           started: float) -> Answer:
    metrics = state.bridge.metrics
    metrics.webhooks.labels(spec.path, event_label(event), outcome).inc()
    metrics.ack_seconds.labels(outcome).observe(time.perf_counter() - started)
    return code, body


async def read_signed_body(request: Request, settings: Settings) -> tuple[bytes | None, int, str]:
    """The body once its signature is verified: (body, 200, "") or (None, status, reason).
    The header is checked before a byte is read; the read stops past BRIDGE_MAX_BODY_BYTES
    (``RequestLimitsMiddleware`` counts what ``receive`` hands over); only then the HMAC."""
    return await read_verified(request.headers, request.body, settings)


async def read_verified(headers: Headers, read: BodyReader, settings: Settings) -> tuple[bytes | None, int, str]:
    """``read_signed_body`` for any request: its ``headers`` and a coroutine reading its whole body."""
    secret = settings.secret_bytes()
    header = headers.get(SIGNATURE_HEADER)
    problem = signature_header_problem(secret, header)
    if problem:
        return None, 401, problem
    try:
        raw = await read()
    except BodyTooLarge as exc:
        return None, 413, str(exc)
    problem = verify_signature(secret, raw, header)
    if problem:
        return None, 401, problem
    return raw, 200, ""


async def ingest(state: AppState, spec: RouteSpec, registry: Registry, intake: Intake, headers: Headers,
                 query_params: QueryParams, read: BodyReader) -> Answer:
    """One webhook delivery: verify, parse, decide, store (group commit), answer — (status, JSON body)."""
    started = time.perf_counter()
    settings = state.settings
    raw, code, problem = await read_verified(headers, read, settings)
    if raw is None:
        log.warning("%s: rejected (%d): %s", spec.path, code, problem)
        outcome = "unauthorized" if code == 401 else "too_large"
        return _reply(state, spec, "unknown", outcome, code, {"detail": problem}, started)
    try:
        env, _ = parse_envelope(raw)
    except PayloadError as exc:
        return _reply(state, spec, "unknown", "malformed", exc.status, {"detail": str(exc)}, started)

    query = dict(query_params)
    query.update(spec.fixed)
    try:
        params = registry.parse_params(spec.pipeline, query)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in exc.errors())
        if env.event == "ping":
            # CVAT's Ping must show success, but say loudly what is wrong with the URL.
            return _reply(state, spec, "ping", "ping", 200,
                          {"status": "ok", "event": "ping", "warning": f"query parameters invalid: {reason}"},
                          started)
        return _reply(state, spec, env.event, "bad_params", 400,
                      {"detail": f"invalid query parameters: {reason}"}, started)

    params_dict = params.model_dump(mode="json", exclude_none=True)
    decision = decide(env, kind=registry.trigger_kind(spec.pipeline, params), pipeline=spec.pipeline,
                      params=params_dict, own_username=state.own_username)
    if decision.action == "ping":
        return _reply(state, spec, "ping", "ping", 200, {"status": "ok", "event": "ping"}, started)
    if decision.action == "ignore":
        log.info("%s: ignored %s: %s", spec.path, env.event, decision.reason)
        return _reply(state, spec, env.event, "ignored", 200,
                      {"status": "ignored", "reason": decision.reason}, started)

    trig = decision.trigger
    assert trig is not None and decision.dedupe_key is not None
    try:
        res = await intake.enqueue(
            pipeline=spec.pipeline, params=params_dict, trigger=trig.to_dict(), dedupe_key=decision.dedupe_key,
            flight_key=flight_key(spec.pipeline, trig.resource, trig.resource_id),
            max_attempts=settings.max_attempts,  # (settings.store builds a StoreSettings per call)
        )
    except DataError as exc:  # a value the store refuses: a 5xx would make CVAT retry it for days
        first = str(exc.orig or exc).splitlines()[0][:200]
        log.warning("%s: job store refused a value: %s", spec.path, first)
        return _reply(state, spec, env.event, "malformed", 422,
                      {"detail": f"value cannot be stored: {first}"}, started)
    except SQLAlchemyError as exc:
        log.error("%s: job store unavailable: %s", spec.path, exc)
        return _reply(state, spec, env.event, "store_error", 503,
                      {"detail": "job store unavailable; retry later"}, started)
    outcome = "queued" if res.created else "duplicate"
    if res.created:  # CVAT builds the chunk the job reads first while it is queued (a background hint)
        state.bridge.runtime.warm(spec.pipeline, env, res.job_id)
    log.info("%s: %s → job %s (%s): %s", spec.path, env.event, res.job_id, outcome, decision.reason)
    return _reply(state, spec, env.event, outcome, 202,
                  {"status": outcome, "job_id": res.job_id, "job_status": res.status,
                   "pipeline": spec.pipeline, "reason": decision.reason}, started)


def make_handler(spec: RouteSpec, registry: Registry, intake: Intake):
    async def handler(request: Request, state: StateDep) -> JSONResponse:
        code, body = await ingest(state, spec, registry, intake, request.headers, request.query_params,
                                  request.body)
        return JSONResponse(body, status_code=code)

    handler.__name__ = "webhook_" + spec.path.strip("/").replace("-", "_").replace("/", "_")
    return handler


class WebhookFastPath:
    """Pure ASGI in front of the router: a POST to a webhook route runs ``ingest`` directly — the same
    checks, decisions and answers as the route (which stays, for the OpenAPI document), without
    routing, dependency injection or request and response objects, the largest share of an ack's
    CPU after HTTP parsing. Anything else goes on to the app. Sits inside ``RequestIdMiddleware``
    and ``RequestLimitsMiddleware``, so request ids and limits apply as to every route."""

    def __init__(self, app: ASGIApp, *, registry: Registry, intake: Intake):
        self.app = app
        self.registry = registry
        self.intake = intake
        self.routes = {spec.path: spec for spec in registry.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if spec is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return

        async def read() -> bytes:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)

        code, body = await ingest(app_state(scope["app"]), spec, self.registry, self.intake, Headers(scope=scope),
                                  QueryParams(scope.get("query_string", b"")), read)
        # the bytes and headers JSONResponse sends
        payload = json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None,
                             separators=(",", ":")).encode("utf-8")
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-length", str(len(payload)).encode("latin-1")),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def build_router(registry: Registry, intake: Intake) -> APIRouter:
    """One route per ``RouteSpec`` of the registry's pipelines, plus ``/test-webhook``; triggering events
    are stored through ``intake`` (group commit)."""
    router = APIRouter(tags=["webhooks"])

    async def test_webhook(request: Request, state: StateDep) -> JSONResponse:
        """Echo the parsed payload and each route's decision without storing anything."""
        return await dry_run(request, state.settings, registry)

    for spec in registry.routes:
        router.add_api_route(
            spec.path, make_handler(spec, registry, intake), methods=["POST"], summary=spec.summary,
            description=(spec.summary + ". Answers `ping` with 200; ignored events with 200 and a reason; "
                         "triggering events with 202 and the job id. Signed with X-Signature-256 when "
                         "WEBHOOK_SECRET is set." + (" Legacy route kept for compatibility." if spec.legacy else "")),
            responses=WEBHOOK_RESPONSES, deprecated=spec.legacy,
            openapi_extra={"parameters": _params_doc(spec), **_REQUEST_BODY},
        )
    router.add_api_route("/test-webhook", test_webhook, methods=["POST"],
                         summary="Dry run: what every route would do with this payload (no side effects)",
                         description="Signed like every webhook route (401 with the reason otherwise); the "
                                     "signature is checked before the body is parsed.",
                         responses={400: {"description": "body is not a JSON object"},
                                    401: WEBHOOK_RESPONSES[401], 413: WEBHOOK_RESPONSES[413]})
    return router


async def dry_run(request: Request, settings: Settings, registry: Registry) -> JSONResponse:
    """What every route would do with this payload (no side effects)."""
    raw, code, problem = await read_signed_body(request, settings)
    if raw is None:
        return JSONResponse({"detail": problem, "signature": "invalid" if code == 401 else "not checked"},
                            status_code=code)
    signature = "valid" if settings.secret_bytes() else "not checked (BRIDGE_ALLOW_UNSIGNED=true)"
    try:
        env, data = parse_envelope(raw)
    except PayloadError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)
    query = dict(request.query_params)
    decisions = {}
    for spec in registry.routes:
        q = {k: v for k, v in {**query, **spec.fixed}.items() if k in spec.params_model.model_fields}
        try:
            params = registry.parse_params(spec.pipeline, q)
        except ValidationError as exc:
            decisions[spec.path] = {"action": "bad_params", "reason": str(exc.errors()[0]["msg"])}
            continue
        d = decide(env, kind=registry.trigger_kind(spec.pipeline, params), pipeline=spec.pipeline,
                   params=params.model_dump(mode="json", exclude_none=True))
        decisions[spec.path] = {"action": d.action, "reason": d.reason}
    return JSONResponse({"event": env.event, "signature": signature, "decisions": decisions,
                         "payload": data if query.get("debug") in ("1", "true", "True") else None})
