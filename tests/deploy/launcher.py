"""Serve the CVAT test double and the test functions on a given address, driven over a Unix socket.

Run inside a network namespace (``ip netns exec NS python -m tests.deploy.launcher ...``): CVAT's REST
API listens on ``--host:--cvat-port``, the functions on ``--host:--fn-port`` (``/<name>``, each with
``--slots`` concurrent calls, like one Nuclio function per name), and the test drives the double with
JSON calls on the Unix socket ``--control`` (a file, so it is reachable from any namespace without
network traffic): ``POST /call {"method": "create_task", "args": [...], "kwargs": {...}}``.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from tests.doubles.cvat_double import CvatDouble
from tests.doubles.cvat_double.server import ServerThread, build_app
from tests.doubles.function_server import LoadedFunction, load_function, make_server

HERE = Path(__file__).resolve().parent
E2E_FUNCTIONS = HERE.parent / "e2e" / "functions"
FILL_INPAINTER = HERE.parent / "nuclio" / "functions" / "fill_inpainter"

#: CvatDouble methods the test may call (seeding like a user, and inspection).
METHODS = {"create_project", "add_webhook", "create_task", "set_job_state", "set_job_stage", "complete_task",
           "job_ids", "job", "label_id", "shapes", "tasks", "frame_names", "issues", "wait_idle"}


class BoundServerThread(ServerThread):
    """``ServerThread`` listening on ``host:port`` instead of an ephemeral loopback port."""

    def __init__(self, app: Any, host: str, port: int, name: str):
        super().__init__(app, name=name)
        self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = port


class SlowFunction:
    """A loaded function with a fixed model latency added to every call (the function server
    only needs ``name`` and ``call_raw``)."""

    def __init__(self, fn: LoadedFunction, latency: float):
        self.fn, self.name, self.latency = fn, fn.name, latency

    def call_raw(self, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
        time.sleep(self.latency)
        return self.fn.call_raw(body, content_type)


class Launcher:
    def __init__(self, host: str, cvat_port: int, fn_port: int, slots: int, latency: float):
        self.cvat = CvatDouble()
        self.cvat._server.sock.close()  # replaced: listen on the namespace's address
        self.cvat._server = BoundServerThread(build_app(self.cvat.api), host, cvat_port, "cvat-double-http")
        self.cvat.url = f"http://{host}:{cvat_port}"
        functions = {
            "frame-detector": SlowFunction(load_function(E2E_FUNCTIONS / "frame_detector"), latency),
            "coral-detector": load_function(E2E_FUNCTIONS / "frame_detector"),
            "grid-detector": load_function(E2E_FUNCTIONS / "grid_detector"),
            "fill-inpainter": load_function(FILL_INPAINTER),
        }
        self.functions = make_server(functions, host, fn_port, max_workers=slots, worker_timeout=30)  # type: ignore[arg-type]

    def start(self) -> None:
        self.cvat.start()
        threading.Thread(target=self.functions.serve_forever, daemon=True, name="functions").start()

    def stop(self) -> None:
        self.functions.shutdown()
        self.cvat.close()

    # --- calls ------------------------------------------------------------------------------------
    def call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if method == "annotate":
            return self.annotate(*args, **kwargs)
        if method == "deliveries":
            return [{k: d[k] for k in ("webhook_id", "event", "url", "status_code", "response")}
                    for d in self.cvat.deliveries]
        if method == "probe":
            return self.probe(*args, **kwargs)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        if method == "create_task":
            project, name, images = args
            args = [project, name, [(n, base64.b64decode(b)) for n, b in images]]
        return getattr(self.cvat, method)(*args, **kwargs)

    def annotate(self, job_id: int, shapes: list[dict[str, Any]]) -> list[int]:
        """Draw shapes through the REST API with cvat-sdk, as an annotator's client would."""
        from bridge.config import Settings
        from bridge.cvat.client import CvatClient
        from bridge.cvat.types import Shape

        def shape(d: dict[str, Any]) -> Shape:
            return Shape(**{**d, "elements": [shape(e) for e in d.get("elements", [])]})

        settings = Settings(_env_file=None, cvat_url=self.cvat.url, cvat_username="bridge-bot",
                            cvat_password="bridge-pass", webhook_secret="launcher-annotates-only")
        with CvatClient.from_settings(settings) as client:
            return client.create_shapes(job_id, [shape(s) for s in shapes], [], batch_size=500)

    @staticmethod
    def probe(url: str) -> dict[str, Any]:
        """GET ``url`` from inside this namespace (the test process cannot reach it)."""
        try:
            resp = httpx.get(url, timeout=5)
        except httpx.HTTPError as exc:
            return {"status": None, "error": str(exc)}
        return {"status": resp.status_code, "body": resp.text[:2000]}


def serve_control(launcher: Launcher, path: Path) -> socketserver.ThreadingUnixStreamServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet (and no client address on AF_UNIX)
            return

        def address_string(self) -> str:
            return "control"

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(length) or b"{}")
            try:
                result = {"ok": True, "result": launcher.call(req["method"], req.get("args", []),
                                                                req.get("kwargs", {}))}
                status = 200
            except Exception as exc:  # the test sees the error instead of a hang
                result, status = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 500
            data = json.dumps(result, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    path.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--cvat-port", type=int, default=8080)
    ap.add_argument("--fn-port", type=int, default=8081)
    ap.add_argument("--slots", type=int, default=4, help="concurrent calls per function")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to each frame-detector call")
    ap.add_argument("--control", type=Path, required=True, help="Unix socket path for the test's calls")
    args = ap.parse_args(argv)
    launcher = Launcher(args.host, args.cvat_port, args.fn_port, args.slots, args.latency)
    launcher.start()
    control = serve_control(launcher, args.control)
    try:
        control.serve_forever()
    finally:
        launcher.stop()


if __name__ == "__main__":
    main()
