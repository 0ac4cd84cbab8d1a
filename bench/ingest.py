"""Webhook ingest benchmark: ack latency p50/p99 for a 200 req/s burst of 10 s on loopback, lost events.

One command: ``python bench/ingest.py`` (options: --rate, --seconds, --backends sqlite,postgresql).
``python bench/ingest.py --sustained``: closed-loop durable acks/s with ``bridge serve`` as the README
starts it (workers on), 200 req/s with 100k jobs queued, ``GET /jobs`` and claim latency at 0/10k/100k
queued (``bench/ingest_sustained.py``).
Starts the real ``bridge serve`` (API only, so the ack path is measured) in a subprocess per job-store
backend and sends real, signed CVAT 2.73 bodies open-loop at a fixed rate over 64 keep-alive connections
(latency counted from each request's due time): a mix of triggering
transitions (each unique: a new job per event), retried duplicates of them, and ``updated_date``-only
noise. Lost = triggering events that got no stored job. Prints both backends side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.app.security import sign  # noqa: E402
from bridge.jobs.store import JobFilter, JobStore  # noqa: E402

SAMPLES = REPO / "tests" / "fixtures" / "cvat-samples"
SECRET = "bench-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bodies(n: int) -> list[tuple[str, bytes, str]]:
    """(kind, body, path) in send order: 60 % new transitions, 20 % duplicates, 20 % noise."""
    trigger = json.loads((SAMPLES / "10-update_job-state-new-to-in_progress.json").read_text())["body"]
    noise = (SAMPLES / "05-update_job-updated_date-only-after-annotation-save.json").read_text()
    noise_raw = json.loads(noise)["raw_body"].encode()
    out: list[tuple[str, bytes, str]] = []
    sent: list[bytes] = []
    for i in range(n):
        r = i % 10
        if r < 6 or not sent:
            b = json.loads(json.dumps(trigger))
            b["job"]["id"] = 100000 + i
            b["job"]["updated_date"] = f"2026-11-24T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i:06d}Z"
            raw = json.dumps(b).encode()  # stdlib defaults, as CVAT sends
            sent.append(raw)
            out.append(("trigger", raw, "/detect-model-webhook?model_name=pth-yolo-gridcorners"))
        elif r < 8:
            out.append(("duplicate", sent[-1], "/detect-model-webhook?model_name=pth-yolo-gridcorners"))
        else:
            out.append(("noise", noise_raw, "/detect-model-webhook?model_name=pth-yolo-gridcorners"))
    return out


Result = tuple[str, int, float, int | None]


async def _burst(url: str, bodies: list[tuple[str, bytes, str]], rate: float, conns: int = 64) -> list[Result]:
    """Open-loop sender (``bench.ingest_sustained.open_loop``): request ``i`` is due at ``t0 + i / rate`` and
    its latency counts from then (no coordinated omission), on a minimal HTTP/1.1 keep-alive client so the
    load generator's own CPU stays small; signatures are computed before the clock starts."""
    from bench.ingest_sustained import open_loop

    host, port = url.removeprefix("http://").split(":")
    requests = []
    for kind, body, path in bodies:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"X-Signature-256: {sign(SECRET.encode(), body)}\r\nContent-Length: {len(body)}\r\n\r\n")
        requests.append((kind, head.encode() + body))
    return await open_loop(url, requests, rate, conns)


def run_backend(db_url: str, rate: float, seconds: float) -> dict:
    from bench.ingest_sustained import pct

    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="bridge-ingest-"))
    env = {**os.environ, "WEBHOOK_SECRET": SECRET, "BRIDGE_DATABASE_URL": db_url, "BRIDGE_WORKERS": "0",
           "BRIDGE_DATA_DIR": str(data), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
                            env=env, cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health?deep=false", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bridge did not start: " + (proc.stderr.read().decode() if proc.stderr else ""))
            time.sleep(0.1)
        bodies = _bodies(int(rate * seconds))
        started = time.perf_counter()
        results = asyncio.run(_burst(url, bodies, rate))
        wall = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(20)
    store = JobStore(db_url)
    stored = store.list(JobFilter(), limit=1)[1]
    store.close()
    triggers = sum(1 for k, *_ in results if k == "trigger")
    lat = [d * 1000 for _, code, d, _ in results]
    errors = sum(1 for _, code, *_ in results if code not in (200, 202))
    job_ids = {j for k, code, _, j in results if k == "trigger" and j is not None}
    return {"requests": len(results), "achieved_rps": len(results) / wall, "p50_ms": statistics.median(lat),
            "p99_ms": pct(lat, 0.99), "max_ms": max(lat), "non_2xx": errors, "triggers": triggers,
            "jobs_stored": stored, "lost": triggers - min(len(job_ids), stored)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--postgres-url", default=os.environ.get("BRIDGE_TEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--sustained", action="store_true", help="the sustained-load phases (see the docstring)")
    ap.add_argument("--phases", default="closed,backlog,claim", help="--sustained: which phases")
    ap.add_argument("--conns", type=int, default=32, help="--sustained: closed-loop connections")
    ap.add_argument("--backlog", type=int, default=100_000, help="--sustained: jobs queued before the run")
    ap.add_argument("--bridge-root", default=str(REPO), help="--sustained: the bridge checkout under test")
    args = ap.parse_args()
    if args.sustained:
        from bench.ingest_sustained import run as run_sustained

        run_sustained(args)
        return
    rows = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
        else:
            import psycopg

            name = f"bridge_bench_{uuid.uuid4().hex[:8]}"
            try:
                with psycopg.connect(args.postgres_url, autocommit=True, connect_timeout=3) as c:
                    c.execute(f'CREATE DATABASE "{name}"')
            except psycopg.OperationalError as exc:
                print(f"skipping postgresql: {exc}")
                continue
            url = args.postgres_url.rsplit("/", 1)[0] + "/" + name
        rows[backend] = run_backend(url, args.rate, args.seconds)
    print(f"\nwebhook ingest: {args.rate:.0f} req/s for {args.seconds:.0f} s on loopback, real signed bodies "
          "(60% new transitions, 20% duplicates, 20% updated_date-only)")
    keys = ["requests", "achieved_rps", "p50_ms", "p99_ms", "max_ms", "non_2xx", "triggers", "jobs_stored", "lost"]
    print(f"{'':14}" + "".join(f"{b:>14}" for b in rows))
    for k in keys:
        print(f"{k:14}" + "".join(f"{rows[b][k]:>14.1f}" if isinstance(rows[b][k], float) else f"{rows[b][k]:>14}"
                                   for b in rows))
    for name, r in rows.items():
        met = r["p99_ms"] < 50 and r["lost"] == 0
        print(f"goal p99 < 50 ms and 0 lost ({name}): {'met' if met else 'NOT met'}")
    if len(rows) == 2:
        a, b = rows["postgresql"], rows["sqlite"]
        print(f"p99 postgresql / sqlite: {a['p99_ms'] / b['p99_ms']:.2f}")


if __name__ == "__main__":
    main()
