"""The worker loop: outcomes by error type, cancellation, and a SIGKILLed worker process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.errors import BadGeometry, Cancelled, FunctionUnavailable
from bridge.jobs.store import JobStore
from bridge.jobs.worker import Worker, WorkerPool
from tests.jobs.conftest import enqueue

REPO = Path(__file__).resolve().parents[2]


def _worker(store, runner, **kw):
    return Worker(store, runner, lease_seconds=kw.pop("lease", 5), poll_seconds=0.02, retry_base=0.0,
                  retry_cap=0.0, worker_id=kw.pop("worker_id", "w"), **kw)


def test_success_records_summary_and_progress(store):
    jid = enqueue(store, "a").job_id

    def runner(job, progress, cancel):
        progress.set_total(3)
        for _ in range(3):
            progress.advance()
        progress.frame_error(2, "cannot decode image")
        progress.created("task", 42)
        return "3 frames, 1 failed"

    finished = []
    assert _worker(store, runner, on_finish=lambda j, o, s, e: finished.append(o)).run_once()
    job = store.get(jid)
    assert job.status == "succeeded" and job.summary == "3 frames, 1 failed"
    assert (job.progress_total, job.progress_done) == (3, 3)
    assert job.frame_errors == {"2": "cannot decode image"} and {"kind": "task", "id": 42} in job.objects
    assert finished == ["succeeded"]


def test_permanent_error_fails_with_reason(store):
    jid = enqueue(store, "a").job_id

    def runner(job, progress, cancel):
        raise BadGeometry("frame 3: corners are counter-clockwise")

    _worker(store, runner).run_once()
    job = store.get(jid)
    assert job.status == "failed" and "counter-clockwise" in job.error and job.attempts == 1


def test_transient_errors_keep_retrying_until_the_window_ends(store):
    """A function or CVAT outage retries past max_attempts (bounded by time, not count), then fails."""
    jid = enqueue(store, "a", max_attempts=2).job_id
    calls = []

    def runner(job, progress, cancel):
        calls.append(job.attempts)
        raise FunctionUnavailable("function 'm' busy (503)")

    w = _worker(store, runner, retry_window=0.5)
    deadline = time.monotonic() + 20
    while store.get(jid).status != "failed" and time.monotonic() < deadline:
        w.run_once()
    job = store.get(jid)
    assert len(calls) > 2 and calls == list(range(1, len(calls) + 1))
    assert job.status == "failed" and "busy (503)" in job.error and "BRIDGE_RETRY_WINDOW_SECONDS" in job.error


def test_transient_then_success(store):
    jid = enqueue(store, "a").job_id

    def runner(job, progress, cancel):
        if job.attempts == 1:
            raise FunctionUnavailable("busy")
        return "ok"

    w = _worker(store, runner)
    while w.run_once():
        pass
    assert store.get(jid).status == "succeeded" and store.get(jid).attempts == 2


def test_unexpected_exception_is_retried_bounded(store):
    jid = enqueue(store, "a", max_attempts=2).job_id

    def runner(job, progress, cancel):
        raise KeyError("bug")

    w = _worker(store, runner)
    while w.run_once():
        pass
    job = store.get(jid)
    assert job.status == "failed" and "KeyError" in job.error


def test_cancel_while_running(store):
    jid = enqueue(store, "a").job_id
    started = threading.Event()

    def runner(job, progress, cancel):
        started.set()
        if not cancel.wait(10):
            return "not cancelled"
        raise Cancelled("the job was cancelled")

    w = _worker(store, runner, lease=0.6)
    t = threading.Thread(target=w.run_once)
    t.start()
    assert started.wait(5)
    store.request_cancel(jid)
    t.join(10)
    assert store.get(jid).status == "cancelled"


def test_pool_runs_jobs_in_parallel_threads(store_url):
    store = JobStore(store_url)
    for i in range(6):
        enqueue(store, f"k{i}")
    seen = []

    def runner(job, progress, cancel):
        seen.append(threading.current_thread().name)
        time.sleep(0.05)
        return "ok"

    pool = WorkerPool(lambda i: _worker(store, runner, worker_id=f"w{i}"), 3)
    pool.start()
    deadline = time.monotonic() + 20
    while store.counts_by_status().get("succeeded", 0) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.stop()
    assert store.counts_by_status() == {"succeeded": 6}
    assert len(set(seen)) > 1


def test_idle_workers_claim_when_woken_not_at_their_next_poll(store_url):
    """Workers that poll every 30 s start a new job at once when woken (the intake's commit, or a wake-up
    datagram from another HTTP process of ``bridge serve``); stopping the pool wakes them too."""
    from bridge.jobs.wake import WakeListener, WakeSender

    store = JobStore(store_url)
    started: list[float] = []

    def runner(job, progress, cancel):
        started.append(time.monotonic())
        return "ok"

    pool = WorkerPool(lambda i: Worker(store, runner, lease_seconds=5, poll_seconds=30, worker_id=f"w{i}"), 2)
    pool.start()
    time.sleep(0.3)  # both have polled once, found nothing and wait for 30 s
    listener = WakeListener(pool.wake)
    sender = WakeSender(listener.path)
    try:
        for wake in (pool.wake, sender):  # in this process, then through the socket
            enqueue(store, f"job-{len(started)}")
            t0 = time.monotonic()
            wake()
            deadline = t0 + 5
            while len(started) < (2 if wake is sender else 1) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert started and started[-1] - t0 < 2.0, "the job waited for the 30 s poll"
        assert len(started) == 2
    finally:
        sender.close()
        listener.close()
        t0 = time.monotonic()
        pool.stop(timeout=10)
        assert time.monotonic() - t0 < 5  # not the 30 s poll
    WakeSender(listener.path)()  # the supervisor is gone: the datagram is dropped, nothing raises


def _start_worker(env):
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "worker", "--workers", "1"], env=env,
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkilled_worker_job_finishes_exactly_once(store_url, tmp_path):
    """A `bridge worker` process is SIGKILLed mid-job; after a restart the job is reclaimed when its
    lease expires, resumes, and every per-frame effect happens exactly once."""
    out = tmp_path / "out"
    store = JobStore(store_url)
    jid = store.enqueue(pipeline="crashy", params={"out_dir": str(out), "frames": 6, "delay": 0.25},
                        trigger={"kind": "job_in_progress", "resource": "job", "resource_id": 1, "job_id": 1},
                        dedupe_key="crash", flight_key="crashy:job:1", max_attempts=5).job_id
    env = {**os.environ, "WEBHOOK_SECRET": "bridge-secret-for-tests", "BRIDGE_DATABASE_URL": store_url,
           "BRIDGE_EXTRA_PIPELINES": json.dumps({"crashy": "tests.jobs.crash_pipeline"}),
           "BRIDGE_LEASE_SECONDS": "2", "BRIDGE_POLL_SECONDS": "0.1", "BRIDGE_REPORT_ISSUES": "false",
           "BRIDGE_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO),
           "CVAT_ACCESS_TOKEN": "unused-by-this-pipeline"}
    first = _start_worker(env)
    log = out / "log.txt"
    deadline = time.monotonic() + 60
    while not (log.exists() and "frame 1" in log.read_text()):
        assert time.monotonic() < deadline, "worker never started the job"
        assert first.poll() is None, first.stdout.read().decode()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert store.get(jid).status == "running"  # orphaned: the lease will expire

    second = _start_worker(env)
    try:
        while store.get(jid).status != "succeeded":
            assert time.monotonic() < deadline + 60, f"job not finished: {store.get(jid).status}"
            time.sleep(0.1)
    finally:
        second.terminate()
        second.wait(10)
    job = store.get(jid)
    lines = log.read_text().splitlines()
    assert lines.count("done") == 1
    assert sorted(p.name for p in (out / "effects").iterdir()) == [f"frame_{i}" for i in range(6)]
    assert [ln for ln in lines if ln.startswith("frame")] == [f"frame {i}" for i in range(6)]
    assert sum(1 for ln in lines if ln.startswith("start")) == 2
    assert job.attempts == 2 and job.progress_done == 6


@pytest.mark.parametrize("env_update,needle", [
    ({"CVAT_URL": "cvat_server:8080", "WEBHOOK_SECRET": "x" * 20}, "CVAT_URL"),
    ({"CVAT_URL": "http://cvat_server:8080", "WEBHOOK_SECRET": "x" * 20}, "underscores"),
    ({}, "WEBHOOK_SECRET"),
    ({"WEBHOOK_SECRET": "changeme"}, "placeholder"),
    ({"WEBHOOK_SECRET": "x" * 20, "CVAT_USER": "a", "CVAT_USERNAME": "b"}, "differ"),
])
def test_cli_refuses_bad_config(env_update, needle, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WEBHOOK_", "BRIDGE_", "CVAT_"))}
    env.update({"BRIDGE_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO), **env_update})
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "worker"], env=env, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "configuration error" in r.stderr
    assert needle in r.stderr
