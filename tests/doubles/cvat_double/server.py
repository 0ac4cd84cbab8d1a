"""Serve the double's ``Api`` with Starlette + uvicorn in a background thread on loopback."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .routes import Api, Ctx, Reply

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def build_app(api: Api) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        files: list[tuple[str, str, bytes]] = []
        fields: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=100_000, max_fields=100_000)
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.append((key, value.filename or key, await value.read()))
                else:
                    fields[key] = value
        path = request.url.path
        norm = path.rstrip("/") or "/"
        raw_qs = request.url.query
        ctx = Ctx(
            method=request.method,
            path=norm,
            query=dict(parse_qsl(raw_qs, keep_blank_values=True)),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            files=files,
            fields=fields,
            base=f"{request.url.scheme}://{request.url.netloc}",
        )
        reply: Reply = await run_in_threadpool(api.handle, ctx, norm + (f"?{raw_qs}" if raw_qs else ""))
        return _render(reply)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)])


def _render(reply: Reply) -> Response:
    import json

    if reply.raw is not None:
        resp = Response(reply.raw, status_code=reply.status, media_type=reply.media_type)
    elif reply.data is None:
        resp = Response(b"", status_code=reply.status)
    else:
        resp = Response(json.dumps(reply.data), status_code=reply.status, media_type="application/json")
    for k, v in reply.headers.items():
        resp.headers[k] = v
    for name, value in reply.cookies.items():
        resp.set_cookie(name, value, path="/", samesite="lax", httponly=name == "sessionid")
    return resp


class ServerThread:
    """uvicorn on an already-bound 127.0.0.1 socket, run in a daemon thread."""

    def __init__(self, app: Starlette, *, lifespan: str = "off", name: str = "cvat-double-http"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False)
        self.name = name
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=self.name, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            self.thread = None
        self.sock.close()
