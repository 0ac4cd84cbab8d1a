"""``bridge serve`` on several HTTP processes: how many, that they share the work through the store, and
that a ``kill -9`` of the supervisor leaves no process holding the port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from bridge.app.startup import StartupError, load_settings
from bridge.cli import _api_processes
from bridge.config import Settings
from tests.conftest import load_sample, signed

REPO = Path(__file__).resolve().parents[2]
SECRET = "serve-processes-secret-0123456789"


def test_process_count_from_flag_environment_and_default(make_settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("BRIDGE_API_PROCESSES", raising=False)
    settings = make_settings()
    assert _api_processes(None, settings) == min(2, len(os.sched_getaffinity(0)))
    monkeypatch.setenv("BRIDGE_API_PROCESSES", "3")
    assert _api_processes(None, make_settings()) == 3  # a setting like any other (Settings reads it)
    assert _api_processes(1, make_settings()) == 1  # the flag wins
    (tmp_path / ".env").write_text("BRIDGE_API_PROCESSES=4\n")
    assert _api_processes(None, Settings(webhook_secret=SECRET)) == 3  # the environment wins over .env
    monkeypatch.delenv("BRIDGE_API_PROCESSES")
    assert _api_processes(None, Settings(webhook_secret=SECRET)) == 4
    for bad in ("0", "many", "65"):
        monkeypatch.setenv("BRIDGE_API_PROCESSES", bad)
        with pytest.raises(StartupError, match="BRIDGE_API_PROCESSES"):
            load_settings(needs_secret=False)
    monkeypatch.delenv("BRIDGE_API_PROCESSES")
    with pytest.raises(StartupError, match="--processes 0"):
        _api_processes(0, settings)
    assert _api_processes(4, make_settings(database_url="sqlite:///:memory:")) == 1  # cannot be shared


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_several_processes_ack_store_and_die_with_the_supervisor(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "CVAT_", "NUCLIO_"))}
    env.update({"WEBHOOK_SECRET": SECRET, "BRIDGE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
                # workers poll every 30 s: only the HTTP processes' wake-up datagrams get the jobs run in time
                "BRIDGE_POLL_SECONDS": "30", "BRIDGE_REPORT_ISSUES": "false", "LOG_LEVEL": "INFO"})
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--processes", "2",
                             "--workers", "1"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health?deep=false", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # noqa: S110 - not up yet
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        http_children = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(http_children) == 2

        body = load_sample("10-update_job")["body"]

        def deliver(i: int) -> dict:
            b = json.loads(json.dumps(body))
            b["job"]["id"] = 1000 + i % 40  # 40 transitions, each delivered twice
            raw, headers = signed(b, SECRET)
            r = httpx.post(url + "/detect-model-webhook?model_name=m", content=raw, headers=headers, timeout=30)
            assert r.status_code == 202, r.text
            return r.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(deliver, range(80)))
        assert len({a["job_id"] for a in answers}) == 40
        assert sum(a["status"] == "queued" for a in answers) == 40  # the rest: duplicates, in either process
        # the worker (in the supervisor) runs them: without CVAT credentials each fails at once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            jobs = httpx.get(url + "/jobs", params={"limit": 100}, timeout=10).json()["items"]
            if len(jobs) == 40 and all(j["status"] == "failed" for j in jobs):
                break
            time.sleep(0.2)
        assert len(jobs) == 40 and {j["status"] for j in jobs} == {"failed"}, jobs[:3]
        assert "no CVAT credentials" in jobs[0]["error"]
        # any process's /metrics sums every process: 80 deliveries over both children, the jobs the
        # supervisor's worker ran; /health says where the workers are
        for _ in range(4):  # answered by either child
            text = httpx.get(url + "/metrics", timeout=10).text
            assert _sample(text, "bridge_job_attempts_total", pipeline="detect", outcome="failed") == 40
            assert sum(_sample(text, "bridge_webhooks_total", outcome=o) for o in ("queued", "duplicate")) == 80
            assert _sample(text, "bridge_jobs", status="failed") == 40
        workers = httpx.get(url + "/health?deep=false", timeout=10).json()["workers"]
        assert workers == {"in_process": 0, "alive": 0, "in_supervisor": 1}

        proc.send_signal(signal.SIGKILL)  # the supervisor dies without cleaning up
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                                                   for c in http_children) or _port_taken(port)):
            time.sleep(0.1)
        assert not _port_taken(port), "an HTTP process outlived its supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
