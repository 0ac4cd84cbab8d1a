"""Shared helpers for the Nuclio client tests: test functions served on loopback, counting transport."""

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.nuclio.client import NuclioClient
from tests.doubles.function_server import LoadedFunction, free_port, load_function, serve_in_thread

FUNCTIONS = Path(__file__).parent / "functions"


class CountingTransport(httpx.HTTPTransport):
    """A real transport that records every attempt: ``(method, path, status or exception name)`` in
    ``seen``, and every URL asked for (host included) in ``urls``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, object]] = []
        self.urls: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.urls.append(f"{request.method} {request.url}")
        try:
            resp = super().handle_request(request)
        except httpx.TransportError as exc:
            with self._lock:
                self.seen.append((request.method, request.url.path, type(exc).__name__))
            raise
        with self._lock:
            self.seen.append((request.method, request.url.path, resp.status_code))
        return resp

    def statuses(self, method: str = "POST") -> list[object]:
        return [s for m, _, s in self.seen if m == method]


@contextlib.contextmanager
def served(name: str, **kwargs) -> Iterator[tuple[LoadedFunction, str]]:
    """Load ``tests/nuclio/functions/<name>`` in-process and serve it; yields (function, base URL)."""
    fn = load_function(FUNCTIONS / name)
    with serve_in_thread(fn, **kwargs) as url:
        yield fn, url


def make_client(url: str, **kwargs) -> NuclioClient:
    """A direct-mode client whose dashboard is a closed port (no metadata), with tiny backoff."""
    defaults = {"function_url": url, "dashboard_url": f"http://127.0.0.1:{free_port()}",
                "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 10.0}
    return NuclioClient(**{**defaults, **kwargs})


@pytest.fixture
def counting() -> CountingTransport:
    return CountingTransport()
