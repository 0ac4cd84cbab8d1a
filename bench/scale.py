"""Scale-out benchmark: detect frames/s with 1, 2, 4 ``bridge worker`` processes on one job store.

Run: ``.venv/bin/python bench/scale.py [--quick]``  (PostgreSQL from ``BRIDGE_TEST_POSTGRES_URL`` or
``--database-url``; a throw-away database is created in it and dropped after. ``--sqlite`` uses a
SQLite file instead.)

Setup, the same for every row: the CVAT test double (in this process) with CVAT 2.73's per-request
costs (as in ``bench/detect.py``, without its server-concurrency cap: a cluster runs several CVAT
server replicas), the bridge API (``bridge serve --workers 0``, its own process) receiving the
double's signed webhooks, and the fixed-latency function (``bench/functions/fixed_latency``, its own
process) with a fixed number of slots (Nuclio's ``maxWorkers``). Each row starts N ``bridge worker
--workers 1`` processes, waits until they poll, then sets every job of a fresh task "in progress" at
once; frames/s is measured from the jobs' own start/finish times in the store.

Printed per row: frames/s, speedup over one worker, scaling efficiency (frames/s ÷ (N × one
worker's frames/s); goal ≥ 0.85 while N × per-worker demand ≤ the function's slots), efficiency
against the achievable min(N × one worker, function bound), and the CPU seconds per frame the
workers and the CVAT double used, with the machine's load, since all of it shares this machine's
cores (a cluster gives each pod its own).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.detect import COSTS, LABELS, TOKEN, closed_port_url, small_frames  # noqa: E402
from bridge.jobs.store import JobFilter, JobStore  # noqa: E402
from tests.doubles.cvat_double import Costs, CvatDouble  # noqa: E402
from tests.doubles.function_server import free_port, serve_function  # noqa: E402

FUNCTION_DIR = REPO / "bench" / "functions" / "fixed_latency"
FUNCTION = "bench-fixed-latency"
SECRET = "scale-bench-webhook-secret"
#: CVAT's per-request costs; ``concurrency=0``: the server side is not the bottleneck being measured.
CLUSTER_COSTS = Costs(request=COSTS.request, write_fixed=COSTS.write_fixed, write_per_shape=COSTS.write_per_shape,
                      chunk_read=COSTS.chunk_read, chunk_build_first=COSTS.chunk_build_first, concurrency=0)


@dataclass
class Row:
    workers: int
    frames: int
    seconds: float
    worker_cpu: float  # CPU seconds of all worker processes
    double_cpu: float  # CPU seconds of this process (the CVAT double)
    load: float  # 1-minute load average at the end of the row
    busy: float  # sum of the jobs' run times ÷ (workers × seconds): how much the workers had to do
    enqueue_spread: float  # seconds between the first and the last job stored

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


class ThrowawayDatabase:
    """``CREATE DATABASE`` on the server of ``url`` for this run; dropped on exit."""

    def __init__(self, url: str):
        import psycopg

        parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
        self.admin = urlunsplit(parts)
        self.name = f"bridge_scale_{uuid.uuid4().hex[:8]}"
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def worker_env(args: argparse.Namespace, cvat_url: str, fn_url: str, db_url: str, data: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data), "PYTHONPATH": str(REPO),
        "WEBHOOK_SECRET": SECRET, "CVAT_URL": cvat_url, "CVAT_ACCESS_TOKEN": TOKEN,
        "BRIDGE_DATABASE_URL": db_url, "NUCLIO_FUNCTION_URL": fn_url + "/{name}",
        "NUCLIO_DASHBOARD_URL": closed_port_url(), "NUCLIO_CONCURRENCY": str(args.concurrency),
        "BRIDGE_WORKERS": "1", "BRIDGE_POLL_SECONDS": "0.05", "BRIDGE_DATA_DIR": str(data),
        "BRIDGE_REPORT_ISSUES": "false", "LOG_LEVEL": "WARNING",
    }


def start_api(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """``bridge serve --workers 0`` on a free loopback port; returns once /health answers."""
    port = free_port()
    bridge = str(Path(sys.executable).with_name("bridge"))
    log = cwd / "api.log"
    with log.open("w") as out:
        proc = subprocess.Popen([bridge, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
                                env=env, cwd=cwd, text=True, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health?deep=false", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"bridge serve did not start (exit {proc.wait()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def start_workers(n: int, env: dict[str, str], cwd: Path) -> list[subprocess.Popen[str]]:
    """N ``bridge worker`` processes; returns once each says it is polling."""
    bridge = str(Path(sys.executable).with_name("bridge"))
    procs = [subprocess.Popen([bridge, "worker", "--workers", "1"], env=env, cwd=cwd, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
    for p in procs:
        assert p.stderr is not None
        for line in p.stderr:  # the banner comes after the workers started
            if "workers on" in line:
                break
        else:
            raise RuntimeError(f"bridge worker exited with {p.wait()}")
    return procs


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_round(n: int, args: argparse.Namespace, cvat: CvatDouble, store: JobStore, project: int,
              frames: list[tuple[str, bytes]], env: dict[str, str], cwd: Path) -> Row:
    task = cvat.create_task(project, f"scale x{n}", frames, segment_size=args.frames // args.jobs)
    jobs = cvat.job_ids(task)
    procs = start_workers(n, env, cwd)
    worker_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
    double_cpu0 = cpu_seconds(os.getpid())
    try:
        for job_id in jobs:
            cvat.set_job_state(job_id, "in progress")
        deadline = time.monotonic() + args.timeout
        while True:
            rows = store.list(JobFilter(task_id=task), limit=1000)[0]
            if len(rows) == len(jobs) and all(r.status in ("succeeded", "failed", "cancelled") for r in rows):
                worker_cpu = sum(cpu_seconds(p.pid) for p in procs) - worker_cpu0
                double_cpu = cpu_seconds(os.getpid()) - double_cpu0
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers: jobs not finished in {args.timeout} s: "
                                   f"{[(r.id, r.status, r.progress_done) for r in rows]}")
            time.sleep(0.1)
    finally:
        stop_workers(procs)
    bad = [(r.id, r.status, r.error) for r in rows if r.status != "succeeded"]
    if bad:
        raise RuntimeError(f"{n} workers: jobs did not succeed: {bad}")
    done = sum(r.progress_done for r in rows)
    if done != args.frames:
        raise RuntimeError(f"{n} workers: {done} frames processed, expected {args.frames}")
    start = min(r.started_at for r in rows if r.started_at)
    end = max(r.finished_at for r in rows if r.finished_at)
    seconds = (end - start).total_seconds()
    busy = sum((r.finished_at - r.started_at).total_seconds() for r in rows) / (n * seconds)
    spread = (max(r.created_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
    return Row(n, done, seconds, worker_cpu, double_cpu, os.getloadavg()[0], busy, spread)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    ap.add_argument("--frames", type=int, default=640, help="frames per row (split into --jobs CVAT jobs)")
    ap.add_argument("--jobs", type=int, default=16, help="CVAT jobs per row (one bridge job each)")
    ap.add_argument("--latency", type=float, default=0.1, help="function latency per frame, seconds")
    ap.add_argument("--slots", type=int, default=8, help="function slots (Nuclio maxWorkers)")
    ap.add_argument("--concurrency", type=int, default=2, help="NUCLIO_CONCURRENCY of each worker process")
    ap.add_argument("--database-url", default=os.environ.get("BRIDGE_TEST_POSTGRES_URL"))
    ap.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--quick", action="store_true", help="160 frames in 8 jobs per row")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.jobs = 160, 8
    if args.frames % args.jobs:
        ap.error("--frames must be a multiple of --jobs")
    if not args.sqlite and not args.database_url:
        ap.error("set BRIDGE_TEST_POSTGRES_URL or --database-url (or --sqlite)")
    counts = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bridge-scale-"))
    db = None if args.sqlite else ThrowawayDatabase(args.database_url)
    try:
        run(args, counts, tmp, db.url if db else f"sqlite:///{tmp / 'jobs.db'}")
    finally:
        if db is not None:
            db.drop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, counts: list[int], tmp: Path, db_url: str) -> None:
    bound = args.slots / args.latency
    print(f"detect scale-out: {args.frames} frames (640×480 JPEG) in {args.jobs} jobs per row; function "
          f"{args.latency * 1e3:.0f} ms/frame with {args.slots} slots = bound {bound:.0f} frames/s; each worker "
          f"process: 1 job at a time, {args.concurrency} calls in flight; store: {db_url.split(':')[0]}")
    frames = small_frames(args.frames)
    env_fn = {"FIXED_LATENCY_SECONDS": str(args.latency), "FIXED_LATENCY_BOXES": "5"}
    with CvatDouble(costs=CLUSTER_COSTS) as cvat, \
            serve_function(FUNCTION_DIR, env_fn, max_workers=args.slots, worker_timeout=60) as fn_url:
        env = worker_env(args, cvat.url, fn_url, db_url, tmp)
        store = JobStore(db_url)  # creates the table before any bridge process starts
        api, port = start_api(env, tmp)
        try:
            project = cvat.create_project("scale", LABELS)
            cvat.add_webhook(project, f"http://127.0.0.1:{port}/detect-model-webhook?model_name={FUNCTION}",
                             ["update:job"], secret=SECRET)
            rows = [run_round(n, args, cvat, store, project, frames, env, tmp) for n in counts]
        finally:
            stop_workers([api])  # type: ignore[list-item]
            store.close()
    report(rows, args, bound)


def report(rows: list[Row], args: argparse.Namespace, bound: float) -> None:
    base = rows[0].fps / rows[0].workers
    print(f"\n{'workers':>7} {'frames':>6} {'seconds':>8} {'frames/s':>9} {'speedup':>8} {'efficiency':>10} "
          f"{'achievable':>10} {'vs achievable':>13} {'busy':>5} {'CPU ms/frame: workers':>21} {'double':>6} "
          f"{'load':>5}")
    for r in rows:
        linear = r.workers * base
        achievable = min(linear, bound)
        eff = r.fps / linear
        within = r.workers * args.concurrency <= args.slots
        goal = ("ok" if eff >= 0.85 else "BELOW 0.85") if within else "past the function bound"
        print(f"{r.workers:>7} {r.frames:>6} {r.seconds:>8.2f} {r.fps:>9.1f} {r.fps / rows[0].fps:>7.2f}x "
              f"{eff:>10.2f} {achievable:>10.1f} {r.fps / achievable:>13.2f} {r.busy:>5.2f} "
              f"{r.worker_cpu / r.frames * 1e3:>21.1f} {r.double_cpu / r.frames * 1e3:>6.1f} {r.load:>5.1f}  {goal}")
    print(f"\nefficiency = frames/s ÷ (workers × {base:.1f}, one worker's frames/s); goal >= 0.85 while "
          f"workers × {args.concurrency} calls <= {args.slots} slots. achievable = min(linear, {bound:.0f} bound).")
    print(f"busy = the jobs' run times ÷ (workers × seconds); jobs were stored within "
          f"{max(r.enqueue_spread for r in rows):.2f} s of each other. machine: {os.cpu_count()} CPUs shared by the "
          "workers, the API, the double and the function (1-minute load shown).")


if __name__ == "__main__":
    main()
