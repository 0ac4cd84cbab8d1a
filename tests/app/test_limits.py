"""Size limits: bodies (413, read stopped at the limit), headers (431 in the app; `bridge serve` refuses an
oversized head in h11 before the app runs), measured on a real `bridge serve` process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from tests.conftest import SECRET, load_sample, signed
from tests.doubles.function_server import free_port

DETECT = "/detect-model-webhook?model_name=pth-yolo-gridcorners"
MB = 1024 * 1024
BIG = 100 * MB
ANY_SIGNATURE = {"X-Signature-256": "sha256=" + "0" * 64}  # well-formed, wrong: the body must be read to know


def _chunks(total: int, chunk: int = MB) -> Iterator[bytes]:
    block = b"x" * chunk
    for _ in range(total // chunk):
        yield block


@pytest.fixture
def small_limits(make_settings):
    app = create_app(make_settings(max_body_bytes=4096, max_header_bytes=8192), workers=0)
    with TestClient(app) as client:
        yield client


def test_declared_length_over_the_limit_is_413_before_the_route_runs(small_limits):
    body, headers = signed(b"{" + b" " * 5000 + b'"event": "ping"}')
    r = small_limits.post(DETECT, content=body, headers=headers)
    assert r.status_code == 413 and "larger than 4096 bytes (BRIDGE_MAX_BODY_BYTES)" in r.json()["detail"]
    assert r.headers["x-request-id"]
    text = small_limits.get("/metrics").text
    assert 'bridge_requests_rejected_total{reason="body_too_large"} 1.0' in text
    assert "/detect-model-webhook" not in text  # the route never ran


def test_body_up_to_the_limit_passes_and_one_byte_more_does_not(small_limits):
    raw = load_sample("10-")["raw_body"]
    padded = raw[:-1] + " " * (4096 - len(raw.encode())) + "}"
    body, headers = signed(padded)
    assert len(body) == 4096
    assert small_limits.post(DETECT, content=body, headers=headers).status_code == 202
    body, headers = signed(padded[:-1] + " }")
    assert small_limits.post(DETECT, content=body, headers=headers).status_code == 413


def test_unannounced_length_is_counted_while_streaming(small_limits):
    r = small_limits.post(DETECT, content=_chunks(64 * 1024, 1024), headers=ANY_SIGNATURE)
    assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]
    assert 'outcome="too_large"' in small_limits.get("/metrics").text


def test_oversized_headers_are_431_with_a_reason(small_limits):
    r = small_limits.post(DETECT, content=b"{}", headers={**ANY_SIGNATURE, "X-Padding": "p" * 9000})
    assert r.status_code == 431 and "BRIDGE_MAX_HEADER_BYTES" in r.json()["detail"]
    r = small_limits.get("/jobs?pipeline=" + "d" * 9000)
    assert r.status_code == 431


# --- a real `bridge serve` process ------------------------------------------------------------------


def _peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has ever had (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class Served:
    def __init__(self, url: str, proc: subprocess.Popen):
        self.url = url
        self.proc = proc

    def peak_mb(self) -> float:
        return _peak_rss(self.proc.pid) / MB


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc (Linux)")
    work = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "BRIDGE_DATA_DIR": str(work / "data"), "BRIDGE_WORKERS": "0",
           "BRIDGE_PORT": str(port), "CVAT_URL": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING"}
    for name in ("BRIDGE_HOST", "BRIDGE_DATABASE_URL", "DATABASE_URL", "BRIDGE_MAX_BODY_BYTES",
                 "BRIDGE_MAX_HEADER_BYTES", "BRIDGE_API_TOKEN"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health?deep=false", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("bridge serve did not start")
        time.sleep(0.1)
    # Warm up every path the tests take, so the peak RSS measured after them is theirs.
    body, headers = signed(load_sample("10-")["raw_body"])
    assert httpx.post(url + DETECT, content=body, headers=headers).status_code == 202
    httpx.post(url + DETECT, content=_chunks(2 * MB), headers=ANY_SIGNATURE)
    httpx.post(url + DETECT, content=b"x" * (2 * MB), headers=ANY_SIGNATURE)
    try:
        yield Served(url, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_binds_loopback_by_default(served):
    import psutil

    listening = [c.laddr for c in psutil.Process(served.proc.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_100_mb_body_is_413_and_memory_stays_flat(served, announced):
    before = served.peak_mb()
    headers = {**ANY_SIGNATURE, **({"Content-Length": str(BIG)} if announced else {})}
    started = time.monotonic()
    r = httpx.post(served.url + DETECT, content=_chunks(BIG), headers=headers, timeout=120)
    took = time.monotonic() - started
    grew = served.peak_mb() - before
    print(f"100 MB body ({'announced' if announced else 'chunked'}): {r.status_code} in {took:.2f} s, "
          f"peak RSS +{grew:.1f} MB")
    assert r.status_code == 413 and "BRIDGE_MAX_BODY_BYTES" in r.json()["detail"]
    assert grew < 16, f"peak RSS grew {grew:.1f} MB for one 100 MB body"


def test_four_concurrent_100_mb_bodies(served):
    before = served.peak_mb()
    codes: list[int] = []

    def send() -> None:
        codes.append(httpx.post(served.url + "/webhooks/detect?model_name=m", content=_chunks(BIG),
                                headers=ANY_SIGNATURE, timeout=120).status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grew = served.peak_mb() - before
    print(f"4 concurrent 100 MB bodies: {codes}, peak RSS +{grew:.1f} MB")
    assert codes == [413] * 4
    assert grew < 32, f"peak RSS grew {grew:.1f} MB for four 100 MB bodies"


def test_1_mib_header_is_refused_before_the_app(served):
    before = served.peak_mb()
    body, headers = signed(load_sample("14-")["raw_body"])
    try:
        r = httpx.post(served.url + "/crop-quadrat-and-create-new-task-webhook?target_proj_id=2", content=body,
                       headers={**headers, "X-Padding": "p" * MB}, timeout=30)
        refused = r.status_code in (400, 431)
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
        refused = True  # h11 answered 400 and closed while the client was still sending
    assert refused
    jobs = httpx.get(served.url + "/jobs?pipeline=crop_quadrat").json()
    assert jobs["total"] == 0  # the signed delivery never reached the route
    assert served.peak_mb() - before < 8


def test_long_signature_header_is_401_without_hmac(served):
    r = httpx.post(served.url + DETECT, content=b"{}", headers={"X-Signature-256": "sha256=" + "a" * 20_000})
    assert r.status_code == 401 and "malformed X-Signature-256" in r.json()["detail"]
