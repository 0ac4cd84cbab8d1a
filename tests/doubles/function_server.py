"""Serve any ``nuclio_functions/<name>/main.py`` handler over HTTP on loopback, as Nuclio would.

Two ways in:

* ``load_function(path, env)`` imports the function in this process and returns a
  ``LoadedFunction`` whose ``call(body)`` goes through the real ``init_context``/``handler``.
* ``serve_function(path, env, max_workers=1)`` (context manager) starts a subprocess serving the
  handler on ``http://127.0.0.1:<port>/`` and yields that URL. It mimics Nuclio's HTTP trigger:
  JSON bodies arrive as a dict in ``event.body``, ``maxWorkers`` concurrent events (503 when no
  worker frees up within ``worker_timeout``), ``maxRequestBodySize`` (413 above it), and the
  function's ``context.Response`` becomes the HTTP response. A handler exception becomes 500.

Run as a module for the subprocess mode:
``python -m tests.doubles.function_server <function_dir> --port N [--max-workers K]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class NuclioResponse:
    """``context.Response`` of Nuclio's Python runtime."""

    def __init__(self, body: Any = None, headers: dict | None = None, content_type: str = "text/plain",
                 status_code: int = 200):
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type
        self.status_code = status_code


class NuclioContext:
    """The ``context`` object handed to ``init_context`` and ``handler``."""

    Response = NuclioResponse

    def __init__(self, name: str):
        self.user_data = types.SimpleNamespace()
        self.logger = _Logger(logging.getLogger(f"nuclio.{name}"))
        self.worker_id = 0


class _Logger:
    """Nuclio's logger accepts ``logger.info_with(msg, **kv)`` as well as the plain methods."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self.debug, self.info, self.warn, self.error = log.debug, log.info, log.warning, log.error
        self.warning = log.warning

    def _with(self, level: int, msg: str, **kv: Any) -> None:
        self._log.log(level, "%s %s", msg, kv)

    def debug_with(self, msg: str, **kv: Any) -> None:
        self._with(logging.DEBUG, msg, **kv)

    def info_with(self, msg: str, **kv: Any) -> None:
        self._with(logging.INFO, msg, **kv)

    def warn_with(self, msg: str, **kv: Any) -> None:
        self._with(logging.WARNING, msg, **kv)

    def error_with(self, msg: str, **kv: Any) -> None:
        self._with(logging.ERROR, msg, **kv)


class NuclioEvent:
    """``event`` of Nuclio's Python runtime: JSON bodies are decoded to a dict, others stay bytes."""

    def __init__(self, body: bytes, content_type: str = "application/json", headers: dict | None = None,
                 method: str = "POST", path: str = "/"):
        self.headers = headers or {}
        self.content_type = content_type
        self.method = method
        self.path = path
        self.body: Any = body
        if content_type.startswith("application/json") and body:
            try:
                self.body = json.loads(body)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                self.body = body  # Nuclio hands undecodable JSON through as bytes


def _render(resp: Any) -> tuple[int, str, bytes]:
    """Turn whatever the handler returned into (status, content type, bytes), as Nuclio does."""
    if isinstance(resp, NuclioResponse):
        body = resp.body
        status, ctype = resp.status_code, resp.content_type
    else:
        body, status, ctype = resp, 200, "application/json"
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    elif body is None:
        data = b""
    else:
        data = json.dumps(body).encode()
        ctype = "application/json"
    return status, ctype, data


class LoadedFunction:
    """A function's ``main.py`` imported in-process, its module names kept private."""

    def __init__(self, path: Path, env: dict[str, str] | None = None):
        self.path = Path(path).resolve()
        self.name = self.path.name
        saved = {k: os.environ.get(k) for k in (env or {})}
        for k, v in (env or {}).items():
            os.environ[k] = str(v)
        before = set(sys.modules)
        sys.path.insert(0, str(self.path))
        try:
            spec = importlib.util.spec_from_file_location(f"nuclio_fn_{self.name}_main", self.path / "main.py")
            assert spec and spec.loader
            self.module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self.module)
            self.context = NuclioContext(self.name)
            if hasattr(self.module, "init_context"):
                self.module.init_context(self.context)
        finally:
            # The function read its env in init_context; put the test process's env back.
            for k, old in saved.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old
            sys.path.remove(str(self.path))
            # Drop the function's sibling modules from the import cache so another function's
            # ``model_handler`` (same module name) is not mistaken for this one's.
            for mod in set(sys.modules) - before:
                file = getattr(sys.modules[mod], "__file__", None) or ""
                if file.startswith(str(self.path) + os.sep):
                    del sys.modules[mod]

    def call_raw(self, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
        event = NuclioEvent(body, content_type)
        return _render(self.module.handler(self.context, event))

    def call(self, payload: Any) -> tuple[int, Any]:
        """Call with a JSON payload; returns (status, decoded JSON or text)."""
        status, ctype, data = self.call_raw(json.dumps(payload).encode())
        if ctype.startswith("application/json"):
            return status, json.loads(data) if data else None
        return status, data.decode(errors="replace")


def load_function(path: Path | str, env: dict[str, str] | None = None) -> LoadedFunction:
    return LoadedFunction(Path(path), env)


def make_server(fn: LoadedFunction | dict[str, LoadedFunction], host: str, port: int, max_workers: int = 1,
                worker_timeout: float = 10.0, max_body: int = 32 * 1024 * 1024) -> ThreadingHTTPServer:
    """One function at ``/``, or several routed by their first path segment (``/<name>/``), each
    with its own ``max_workers`` slots, like one Nuclio container per function."""
    routes = fn if isinstance(fn, dict) else None
    single = None if routes is not None else fn
    slots = {name: threading.BoundedSemaphore(max_workers) for name in (routes or {"": None})}

    def pick(path: str) -> tuple[LoadedFunction | None, threading.BoundedSemaphore | None]:
        if routes is None:
            return single, slots[""]
        name = path.strip("/").split("/", 1)[0]
        return routes.get(name), slots.get(name)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            target, _ = pick(self.path)
            if target is None:
                self._send(404, "text/plain", b"no such function")
                return
            self._send(200, "application/json", json.dumps({"function": target.name, "ready": True}).encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            target, slot = pick(self.path)
            if length > max_body or target is None or slot is None:
                self.rfile.read(length)
                if target is None:
                    self._send(404, "text/plain", b"no such function")
                else:
                    self._send(413, "text/plain", b"request body too large")
                return
            body = self.rfile.read(length)
            if not slot.acquire(timeout=worker_timeout):
                self._send(503, "text/plain", b"no available worker")
                return
            try:
                status, ctype, data = target.call_raw(body, self.headers.get("Content-Type") or "application/json")
            except Exception as exc:  # noqa: BLE001 - Nuclio turns handler exceptions into 500
                status, ctype, data = 500, "text/plain", f"handler raised: {exc!r}".encode()
            finally:
                slot.release()
            self._send(status, ctype, data)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_function(path: Path | str, env: dict[str, str] | None = None, max_workers: int = 1,
                   worker_timeout: float = 10.0, max_body: int = 32 * 1024 * 1024,
                   startup_timeout: float = 120.0) -> Iterator[str]:
    """Serve the function in a subprocess; yields its base URL. The process is killed on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.doubles.function_server", str(Path(path).resolve()),
           "--port", str(port), "--max-workers", str(max_workers),
           "--worker-timeout", str(worker_timeout), "--max-body", str(max_body)]
    penv = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}}
    penv["PYTHONPATH"] = os.pathsep.join([str(REPO), penv.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen(cmd, env=penv, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"function server for {path} exited with {proc.returncode}:\n{out[-4000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"function server for {path} did not start in {startup_timeout} s")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve_in_thread(fn: LoadedFunction | dict[str, LoadedFunction], max_workers: int = 1, worker_timeout: float = 10.0,
                    max_body: int = 32 * 1024 * 1024) -> Iterator[str]:
    """Serve already loaded function(s) from a thread of this process (cheaper than a subprocess).
    With a dict, function ``name`` answers at ``<url>/name`` (use ``<url>/{name}`` as the URL template)."""
    port = free_port()
    server = make_server(fn, "127.0.0.1", port, max_workers, worker_timeout, max_body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-workers", type=int, default=1)
    ap.add_argument("--worker-timeout", type=float, default=10.0)
    ap.add_argument("--max-body", type=int, default=32 * 1024 * 1024)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    fn = load_function(args.path)
    server = make_server(fn, "127.0.0.1", args.port, args.max_workers, args.worker_timeout, args.max_body)
    server.serve_forever()


if __name__ == "__main__":
    main()
