"""Child of ``bench/ingest.py --sustained``: claim latency with N jobs already queued.

Runs with ``PYTHONPATH`` set to the bridge under test (``--bridge-root``), so the same probe measures
the code before and after a change. One database URL per run (the parent makes a fresh one): the
store is created and migrated by that bridge, ``backlog`` queued jobs (distinct resources, oldest
first) are inserted in bulk and analysed, ``--running`` jobs are claimed and kept running (busy
workers), then ``--claims`` claims are timed, each claimed job finished at once. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bridge.jobs.store import JobStore

COLUMNS = ("pipeline, params, trigger, dedupe_key, flight_key, status, attempts, max_attempts, available_at, "
           "cancel_requested, project_id, task_id, cvat_job_id, progress_total, progress_done, frame_errors, "
           "objects, notes, created_at, updated_at")


def fill(store: JobStore, n: int, batch: int = 20000) -> None:
    """``n`` queued, due jobs on distinct resources, available one microsecond apart (oldest first)."""
    start = datetime.now(UTC) - timedelta(seconds=60)
    stmt = text(f"INSERT INTO bridge_jobs ({COLUMNS}) VALUES (:pipeline, :params, :trigger, :dedupe_key, "
                ":flight_key, 'queued', 0, 5, :available_at, false, 1, 1, :job, 0, 0, '{}', '[]', '{}', "
                ":available_at, :available_at)")
    for lo in range(0, n, batch):
        rows = []
        for i in range(lo, min(n, lo + batch)):
            trig = {"kind": "job_in_progress", "resource": "job", "resource_id": i + 1, "job_id": i + 1,
                    "task_id": 1, "project_id": 1}
            rows.append({"pipeline": "detect", "params": json.dumps({"model_name": "m"}),
                         "trigger": json.dumps(trig), "dedupe_key": f"probe-{i}", "flight_key": f"detect:job:{i + 1}",
                         "available_at": start + timedelta(microseconds=i), "job": i + 1})
        with store.engine.begin() as conn:
            conn.execute(stmt, rows)
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--backlog", type=int, required=True)
    ap.add_argument("--claims", type=int, default=200)
    ap.add_argument("--running", type=int, default=4)
    args = ap.parse_args()
    store = JobStore(args.url)
    fill(store, args.backlog + args.claims + args.running)
    for i in range(args.running):
        assert store.claim(f"busy-{i}", 600) is not None
    times = []
    for _ in range(args.claims):
        t0 = time.perf_counter()
        job = store.claim("probe", 60)
        times.append((time.perf_counter() - t0) * 1000)
        assert job is not None, "nothing to claim"
        store.succeed(job.id, "probe", "ok", token=job.lease_token)
    store.close()
    times.sort()
    print(json.dumps({"backlog": args.backlog, "claims": len(times), "p50_ms": statistics.median(times),
                      "p95_ms": times[int(0.95 * (len(times) - 1))], "max_ms": times[-1]}))


if __name__ == "__main__":
    main()
