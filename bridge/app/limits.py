"""Request limits, checked before any route runs: query strings, header size, body size.

A pure ASGI middleware (no per-request task). Bodies are never buffered here: a declared
``Content-Length`` above the limit is answered 413 before a byte is read, and a chunked body is
counted as the route streams it, the read stopping as soon as the limit is passed. Every answer is
a 4xx with a reason; CVAT retries 5xx for days, 4xx never.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# C0 controls and DEL; tab/newline included (no query parameter of the bridge takes them).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BodyTooLarge(Exception):  # noqa: N818 - reads as the HTTP status it becomes
    """Raised from ``receive`` when a streamed body passes the limit (answered 413)."""

    def __init__(self, limit: int):
        super().__init__(f"request body is larger than {limit} bytes (BRIDGE_MAX_BODY_BYTES)")
        self.limit = limit


def query_problem(query_string: bytes) -> str | None:
    """Why a query string is refused (control characters, e.g. NUL), or None."""
    if not query_string:
        return None
    text = query_string.decode("latin-1")
    for key, value in parse_qsl(text, keep_blank_values=True, errors="replace"):
        for what, part in (("name", key), ("value", value)):
            if _CONTROL.search(part):
                return (f"query parameter {what} {key[:40]!r} contains a control character "
                        f"(e.g. NUL); not allowed")
    return None


def header_bytes(scope: Scope) -> int:
    """Size of the request line and headers as received (what h11 bounds in ``bridge serve``)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + 12
    return line + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))


class RequestLimitsMiddleware:
    """422 for control characters in the query, 431 for oversized headers, 413 for oversized bodies."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int,
                 on_reject: Callable[[str], None] | None = None):
        self.app = app
        self.max_body = max_body_bytes
        self.max_header = max_header_bytes
        self.on_reject = on_reject or (lambda reason: None)

    async def _answer(self, send: Send, status: int, reason: str, detail: str) -> None:
        self.on_reject(reason)
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _precheck(self, scope: Scope) -> tuple[int, str, str] | None:
        if header_bytes(scope) > self.max_header:
            return 431, "headers_too_large", (f"request line and headers are larger than {self.max_header} "
                                              f"bytes (BRIDGE_MAX_HEADER_BYTES)")
        problem = query_problem(scope.get("query_string", b""))
        if problem:
            return 422, "bad_query", problem
        lengths = Headers(scope=scope).getlist("content-length")
        if lengths:
            if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
                return 400, "bad_length", f"invalid Content-Length header: {', '.join(lengths)[:60]!r}"
            if int(lengths[0]) > self.max_body:
                return 413, "body_too_large", (f"request body of {int(lengths[0])} bytes is larger than "
                                               f"{self.max_body} bytes (BRIDGE_MAX_BODY_BYTES)")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._precheck(scope)
        if refused:
            await self._answer(send, *refused)
            return

        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._answer(send, 413, "body_too_large", str(exc))
