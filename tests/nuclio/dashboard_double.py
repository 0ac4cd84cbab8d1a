"""A tiny Nuclio dashboard on loopback: function configs and invocation relay to served functions.

``GET /api/functions/<name>`` answers the config given for that name (404 otherwise);
``POST /api/function_invocations`` records the request headers and relays the body to the URL
registered for ``x-nuclio-function-name``, answering what the function answered.
"""

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.doubles.function_server import free_port


class Dashboard:
    def __init__(self, configs: dict[str, dict], routes: dict[str, str]):
        self.configs = configs
        self.routes = routes
        self.invocations: list[dict[str, str]] = []
        self.lock = threading.Lock()


@contextlib.contextmanager
def serve_dashboard(configs: dict[str, dict], routes: dict[str, str]) -> Iterator[tuple[Dashboard, str]]:
    state = Dashboard(configs, routes)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            return

        def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            name = self.path.removeprefix("/api/functions/")
            if self.path == "/api/functions":
                self._send(200, json.dumps(state.configs).encode())
            elif self.path.startswith("/api/functions/") and name in state.configs:
                self._send(200, json.dumps(state.configs[name]).encode())
            else:
                self._send(404, b'{"error": "function not found"}')

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.invocations.append({k.lower(): v for k, v in self.headers.items()})
            target = state.routes.get(self.headers.get("x-nuclio-function-name", ""))
            if self.path != "/api/function_invocations" or target is None:
                self._send(404, b"function not found")
                return
            resp = httpx.post(target + self.headers.get("x-nuclio-path", "/"), content=body,
                              headers={"Content-Type": self.headers.get("Content-Type", "")}, timeout=30)
            self._send(resp.status_code, resp.content, resp.headers.get("content-type", "text/plain"))

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
