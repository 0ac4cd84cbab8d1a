"""The store's throughput paths, on SQLite and on a real PostgreSQL: the claim's query plan does not
sort the backlog, webhook inserts commit in groups, ``list`` pages by keyset."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import DataError

from bridge.jobs.models import Job, utcnow
from bridge.jobs.store import JobFilter, JobStore
from tests.jobs.conftest import enqueue


def _request(key: str, **over) -> dict:
    trigger = {"kind": "job_in_progress", "resource": "job", "resource_id": 7, "job_id": 7, "task_id": 3,
               "project_id": 2}
    return {"pipeline": "detect", "params": {"model_name": "m"}, "trigger": trigger, "dedupe_key": key,
            "flight_key": "detect:job:7", "max_attempts": 3, **over}


def _fill(store: JobStore, n: int) -> None:
    store.enqueue_many([_request(f"fill-{i}", flight_key=f"detect:job:{i}") for i in range(n)])
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def _claim_statements(store: JobStore) -> list[tuple[str, object]]:
    """The SELECTs one ``claim()`` sends, with their parameters."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "bridge_jobs" in statement:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        assert store.claim("w", 30) is not None
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return seen


def _plan(store: JobStore, statement: str, parameters: object) -> str:
    with store.engine.connect() as conn:
        cursor = conn.connection.cursor()
        if store.dialect == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        # Forbid the alternatives: a plan that must sort shows a Sort node even so.
        cursor.execute("SET enable_sort = off")
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        conn.rollback()
        return plan


def test_claim_walks_an_index_instead_of_sorting_the_backlog(store):
    _fill(store, 300)
    statements = _claim_statements(store)
    due = [(s, p) for s, p in statements if "NOT IN" in s.upper() and "ORDER BY" in s]
    assert due, statements
    plan = _plan(store, *due[0])
    if store.dialect == "sqlite":
        assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted
        assert "USING INDEX" in plan and "SCAN bridge_jobs" not in plan, plan
    else:
        top = plan.splitlines()[:3]
        assert not any("Sort" in line for line in top), plan
        assert "ix_bridge_jobs_queued_due" in plan, plan


def test_orphans_are_claimed_before_older_queued_jobs(store):
    first = enqueue(store, "a", flight="detect:job:1").job_id
    second = enqueue(store, "b", flight="detect:job:2").job_id
    dead = store.claim("dead", 30)
    assert dead.id == first
    with store._tx() as s:  # its worker died: the lease ran out
        s.execute(update(Job).where(Job.id == first).values(lease_until=utcnow() - timedelta(seconds=1)))
    again = store.claim("w2", 30)
    assert (again.id, again.attempts, again.lease_token) == (first, 2, dead.lease_token + 1)
    assert store.claim("w3", 30).id == second


def test_claim_skips_jobs_of_running_resources_without_giving_up_on_the_rest(store):
    blocked = [enqueue(store, f"same-{i}", flight="detect:job:9").job_id for i in range(4)]
    other = enqueue(store, "other", flight="detect:job:10").job_id
    assert store.claim("w1", 30).id == blocked[0]
    assert store.claim("w2", 30).id == other  # behind three queued jobs of the running resource
    assert store.claim("w3", 30) is None


def test_enqueue_many_commits_a_batch_with_duplicates_in_order(store):
    results = store.enqueue_many([_request("k1"), _request("k2"), _request("k1"), _request("k3")])
    assert [r.created for r in results] == [True, True, False, True]
    assert results[2].job_id == results[0].job_id and results[2].status == "queued"
    again = store.enqueue_many([_request("k2")])[0]
    assert (again.job_id, again.created) == (results[1].job_id, False)
    job = store.get(results[0].job_id)
    assert (job.status, job.pipeline, job.params, job.task_id, job.cvat_job_id, job.project_id) == (
        "queued", "detect", {"model_name": "m"}, 3, 7, 2)
    assert (job.frame_errors, job.objects, job.notes, job.lease_token, job.failures, job.claim_mark) == (
        {}, [], {}, 0, 0, 0)
    assert store.claim("w", 30).id == results[0].job_id  # due at once, like any enqueued job


def test_a_refused_value_fails_only_its_own_request(store):
    if store.dialect == "sqlite":
        pytest.skip("SQLite stores strings of any length; PostgreSQL refuses one longer than the column")
    results = store.enqueue_many([_request("ok-1"), _request("bad", pipeline="p" * 100), _request("ok-2")])
    assert isinstance(results[1], DataError)
    assert [r.created for i, r in enumerate(results) if i != 1] == [True, True]
    assert {j.dedupe_key for j in store.list(JobFilter())[0]} == {"ok-1", "ok-2"}
    with pytest.raises(DataError):
        store.enqueue(**_request("bad", pipeline="p" * 100))


def test_enqueue_stores_json_the_readers_understand(store):
    store.enqueue(**_request("json", params={"model_name": "m", "threshold": 0.5, "note": "ü ✓"}))
    with store.engine.connect() as conn:
        raw = conn.execute(text("SELECT params FROM bridge_jobs WHERE dedupe_key = 'json'")).scalar_one()
    stored = raw if isinstance(raw, dict) else json.loads(raw)
    assert stored == {"model_name": "m", "threshold": 0.5, "note": "ü ✓"}
    assert store.list(JobFilter())[0][0].params == stored


def test_keyset_pages_cover_every_job_once_and_agree_with_offsets(store):
    for i in range(23):
        enqueue(store, f"p{i}", pipeline="detect" if i % 3 else "crop_quadrat")
    flt = JobFilter(pipeline="detect")
    by_offset = []
    for offset in range(0, 40, 5):
        by_offset += [j.id for j in store.list(flt, limit=5, offset=offset)[0]]
    pages, before = [], None
    while True:
        rows, total = store.list(flt, limit=5, before_id=before)
        if not rows:
            break
        pages.append([j.id for j in rows])
        before = rows[-1].id
    flat = [i for page in pages for i in page]
    assert flat == by_offset == sorted(flat, reverse=True) and len(flat) == total == 15
    assert all(len(p) == 5 for p in pages)
    rows, total = store.list(flt, limit=3, before_id=flat[4], offset=1)  # both: the offset counts from the key
    assert [j.id for j in rows] == flat[6:9] and total == 15


def test_a_held_sqlite_write_lock_is_waited_for_then_reported(tmp_path):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from bridge.jobs.store import begin_immediate

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        with pytest.raises(OperationalError, match="BEGIN IMMEDIATE"):
            begin_immediate(raw, wait=0.2)
        assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # restored for everything else
    other.execute("COMMIT")
    assert store.enqueue(**_request("after")).created
    store.close()


def test_processes_sharing_one_store_claim_each_job_once(store_url, tmp_path):
    import subprocess
    import sys

    code = f"""
import sys
from bridge.jobs.store import JobStore
store = JobStore({store_url!r})
me = sys.argv[1]
trig = {{"kind": "job_in_progress", "resource": "job", "resource_id": 1}}
store.enqueue_many([dict(pipeline="detect", params={{}}, trigger=trig, dedupe_key=f"{{me}}-{{i}}",
                         flight_key=f"detect:job:{{me}}-{{i}}", max_attempts=3) for i in range(40)])
done = []
while True:
    job = store.claim(me, 30)
    if job is None:
        break
    assert store.succeed(job.id, me, "ok", token=job.lease_token)
    done.append(job.id)
print(" ".join(map(str, done)))
"""
    JobStore(store_url).close()  # migrated once, before the processes start
    procs = [subprocess.Popen([sys.executable, "-c", code, f"p{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    claimed = [int(i) for out, _ in outs for i in out.split()]
    store = JobStore(store_url)
    try:
        assert store.counts_by_status() == {"succeeded": 120}
        assert len(claimed) == len(set(claimed)) == 120  # every job claimed, never one twice
        assert len(store.list(JobFilter(), limit=500)[0]) == 120
    finally:
        store.close()
