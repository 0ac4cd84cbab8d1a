"""Job store semantics, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, timedelta

from sqlalchemy import update

from bridge.jobs.migrate import current
from bridge.jobs.models import Job, utcnow
from bridge.jobs.store import JobFilter, JobStore
from tests.jobs.conftest import enqueue


def test_migrations_are_applied_and_idempotent(store, store_url):
    assert current(store.engine) == "0003_claim_and_list_indexes"
    JobStore(store_url).close()  # running the migration again is a no-op
    assert current(store.engine) == "0003_claim_and_list_indexes"


def test_the_migrated_schema_is_the_model(store):
    """What the migrations build (on SQLite and PostgreSQL) is what ``models.py`` declares: no column or
    index only one of them has (alembic's own comparison)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bridge.jobs.models import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_dedupe(store):
    a = enqueue(store, "k")
    b = enqueue(store, "k")
    assert a.created and not b.created and a.job_id == b.job_id
    assert store.list(JobFilter())[1] == 1


def test_claim_order_lease_and_single_flight(store):
    first = enqueue(store, "a", flight="detect:job:7").job_id
    second = enqueue(store, "b", flight="detect:job:7").job_id
    other = enqueue(store, "c", flight="detect:job:8").job_id
    j1 = store.claim("w1", 30)
    assert j1.id == first and j1.status == "running" and j1.attempts == 1
    j2 = store.claim("w2", 30)
    assert j2.id == other  # same resource is single-flight; another resource runs in parallel
    assert store.claim("w3", 30) is None
    assert store.succeed(j1.id, "w1", "done")
    assert store.claim("w3", 30).id == second


def test_expired_lease_is_reclaimed_and_old_worker_loses_it(store):
    jid = enqueue(store, "a").job_id
    j = store.claim("dead-worker", 30)
    with store._tx() as s:  # the worker died: its lease ran out
        s.execute(update(Job).where(Job.id == jid).values(lease_until=utcnow() - timedelta(seconds=1)))
    again = store.claim("w2", 30)
    assert again.id == j.id and again.attempts == 2 and again.worker_id == "w2"
    owned, _ = store.heartbeat(jid, "dead-worker", 30)
    assert not owned
    assert not store.succeed(jid, "dead-worker", "late")  # a zombie cannot finish it
    assert store.succeed(jid, "w2", "ok")
    assert store.get(jid).status == "succeeded"


def test_heartbeat_extends_lease_and_reports_cancel(store):
    jid = enqueue(store, "a").job_id
    store.claim("w", 1.5)
    before = store.get(jid).lease_until
    time.sleep(0.05)
    owned, cancel = store.heartbeat(jid, "w", 60)
    assert owned and not cancel and store.get(jid).lease_until > before
    store.request_cancel(jid)
    assert store.heartbeat(jid, "w", 60) == (True, True)


def _due_now(store, jid):
    with store._tx() as s:
        s.execute(update(Job).where(Job.id == jid).values(available_at=utcnow()))


def test_unexpected_errors_back_off_and_give_up_after_max_attempts(store):
    jid = enqueue(store, "a", max_attempts=2).job_id
    store.claim("w", 30)
    delay = store.requeue(jid, "w", "KeyError: 'x'", base=10, cap=20, transient=False)
    assert 5 <= delay <= 10  # equal jitter: at least half the step
    job = store.get(jid)
    assert job.status == "queued" and job.error == "KeyError: 'x'" and job.failures == 1
    _due_now(store, jid)
    store.claim("w", 30)
    assert store.requeue(jid, "w", "KeyError: 'x'", base=10, cap=20, transient=False) is None
    job = store.get(jid)
    assert job.status == "failed" and "gave up after 2 failed attempts" in job.error


def test_transient_errors_retry_for_the_whole_window_not_a_count(store):
    """An outage is not a failure: many more attempts than max_attempts, growing delays, until the window ends."""
    jid = enqueue(store, "a", max_attempts=2).job_id
    delays = []
    for _ in range(8):
        store.claim("w", 30)
        delays.append(store.requeue(jid, "w", "CVAT down", base=1, cap=16, transient=True, window=3600))
        job = store.get(jid)
        assert job.status == "queued" and job.error == "CVAT down"
        assert store.list(JobFilter(status="waiting"))[1] == 1  # visible as waiting, with its next attempt
        _due_now(store, jid)
    assert all(d is not None for d in delays)
    steps = [min(16, 2 ** i) for i in range(8)]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    # the window has passed: the next transient error fails the job with the reason and the window
    with store._tx() as s:
        s.execute(update(Job).where(Job.id == jid).values(retry_until=utcnow() - timedelta(seconds=1)))
    store.claim("w", 30)
    assert store.requeue(jid, "w", "CVAT down", base=1, cap=16, transient=True, window=3600) is None
    job = store.get(jid)
    assert job.status == "failed" and "CVAT down" in job.error and "1 h" in job.error


def test_not_due_jobs_wait(store):
    jid = enqueue(store, "a").job_id
    with store._tx() as s:
        s.execute(update(Job).where(Job.id == jid).values(available_at=utcnow() + timedelta(seconds=60)))
    assert store.claim("w", 30) is None


def test_retry_resets_attempts(store):
    jid = enqueue(store, "a", max_attempts=1).job_id
    store.claim("w", 30)
    store.fail(jid, "w", "bad corners")
    job = store.retry(jid)
    assert job.status == "queued" and job.attempts == 0 and job.error is None
    assert store.claim("w", 30).id == jid


def test_a_user_retry_drops_checkpoints_but_keeps_created_objects(store):
    """A retry the user asks for runs again: the checkpoint that made a re-run a no-op is gone."""
    jid = enqueue(store, "a").job_id
    job = store.claim("w", 30)
    store.save_progress(jid, "w", total=3, done=3, frame_errors={1: "bad"}, objects=[{"kind": "shape", "id": 9}],
                        notes={"frames_done": [0, 1, 2]}, token=job.lease_token)
    store.succeed(jid, "w", "3 frames", token=job.lease_token)
    job = store.retry(jid)
    assert job.notes == {} and job.frame_errors == {} and job.progress_done == 0
    assert job.objects == [{"kind": "shape", "id": 9}]  # the re-run replaces what it wrote before


def test_fencing_token_rejects_the_previous_holder(store):
    """A worker frozen past its lease is fenced off as soon as another worker claims the job."""
    jid = enqueue(store, "a").job_id
    first = store.claim("frozen", 0.01)
    time.sleep(0.05)
    assert store.lease_left(jid, "frozen", first.lease_token) < 0  # expired: the fence refuses writes
    second = store.claim("w2", 30)
    assert second.id == jid and second.lease_token == first.lease_token + 1
    assert store.lease_left(jid, "frozen", first.lease_token) is None
    assert store.heartbeat(jid, "frozen", 30, token=first.lease_token)[0] is False
    assert not store.save_progress(jid, "frozen", total=1, done=1, frame_errors={}, objects=[], notes={},
                                   token=first.lease_token)
    assert not store.succeed(jid, "frozen", "late", token=first.lease_token)
    assert store.lease_left(jid, "w2", second.lease_token) > 25
    assert store.get(jid).failures == 1  # a dead or frozen worker that got nowhere counts against max_attempts


def test_a_killed_worker_that_made_progress_does_not_count_as_a_failure(store):
    """External kills (deploys, a neighbour's OOM) must not fail a job that keeps resuming."""
    jid = enqueue(store, "a", max_attempts=2).job_id
    for n in range(1, 6):
        job = store.claim(f"w{n}", 0.01)
        assert job is not None and job.id == jid
        store.save_progress(jid, f"w{n}", total=10, done=n, frame_errors={}, token=job.lease_token,
                            objects=[{"kind": "shape", "id": i} for i in range(n)], notes={})
        time.sleep(0.03)  # the worker dies: its lease expires
    job = store.claim("last", 30)
    assert job is not None and job.failures == 0 and job.attempts == 6
    time.sleep(0.01)
    store.save_progress(jid, "last", total=10, done=0, frame_errors={}, objects=job.objects, notes={},
                        token=job.lease_token)
    for n in range(2):  # then it dies twice more without getting anywhere: max_attempts=2 ends it
        with store._tx() as s:
            s.execute(update(Job).where(Job.id == jid).values(lease_until=utcnow() - timedelta(seconds=1)))
        claimed = store.claim(f"x{n}", 30)
    assert claimed is None and store.get(jid).status == "failed" and "without progress" in store.get(jid).error


def test_progress_is_saved(store):
    jid = enqueue(store, "a").job_id
    store.claim("w", 30)
    assert store.save_progress(jid, "w", total=10, done=4, frame_errors={3: "boom"},
                               objects=[{"kind": "task", "id": 9}], notes={"x": 1})
    job = store.get(jid)
    assert (job.progress_total, job.progress_done, job.frame_errors) == (10, 4, {"3": "boom"})
    assert not store.save_progress(jid, "other", total=1, done=1, frame_errors={}, objects=[], notes={})


def test_previous_objects_of_same_pipeline_and_resource(store):
    a = enqueue(store, "a", flight="detect:job:1", params={"model_name": "m"}).job_id
    store.claim("w", 30)
    store.save_progress(a, "w", total=1, done=1, frame_errors={}, objects=[{"kind": "shape", "id": 5}], notes={})
    store.succeed(a, "w", "ok")
    b = enqueue(store, "b", flight="detect:job:1").job_id
    prev = store.previous_objects("detect", "detect:job:1", before_id=b)
    assert prev == [{"kind": "shape", "id": 5, "params": {"model_name": "m"}}]


def test_concurrent_claims_never_share_a_job(store):
    for i in range(40):
        enqueue(store, f"k{i}")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            job = store.claim(name, 30)
            if job is None:
                return
            with lock:
                claimed.append(job.id)
            store.succeed(job.id, name, "ok")

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
    assert store.counts_by_status() == {"succeeded": 40}


def test_processes_starting_together_on_an_empty_postgresql_all_migrate(postgres_url):
    """Several pods starting at once: one migrates, the others wait for it (advisory lock) and start."""
    import subprocess
    import sys

    code = f"from bridge.jobs.store import JobStore; JobStore({postgres_url!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)]
    results = [(p.wait(120), p.stderr.read().decode()[-300:]) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    assert current(JobStore(postgres_url).engine) == "0003_claim_and_list_indexes"


def test_a_listing_judges_waiting_by_one_clock(store):
    """What ``status=waiting`` selects is shown ``waiting``, even when the next attempt comes due between
    the query and the answer being built (the API passes the filter's clock to both)."""
    from bridge.app.routers.jobs import job_out

    jid = enqueue(store, "a", max_attempts=2).job_id
    store.claim("w", 30)
    store.requeue(jid, "w", "CVAT down", base=1, cap=16, transient=True, window=3600)
    due = store.get(jid).available_at
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    then = due - timedelta(milliseconds=5)  # the query's clock: 5 ms before the next attempt
    (job,), total = store.list(JobFilter(status="waiting"), now=then)
    assert total == 1 and job_out(job, then).waiting
    assert not job_out(job, due + timedelta(milliseconds=5)).waiting  # once due, it is queued, not waiting
    assert store.list(JobFilter(status="waiting"), now=due + timedelta(milliseconds=5)) == ([], 0)


def test_a_worker_cut_off_inside_a_transaction_does_not_block_the_takeover(postgres_url):
    """The cut-off worker's heartbeat sent its UPDATE, then the network went: its server session waits,
    inside the transaction, holding the job's row lock. Claims skip locked rows, so without a limit no
    other worker could take the job over until TCP gave up on the session (hours)."""
    from bridge.jobs.store import PG_IDLE_IN_TRANSACTION_SECONDS

    cut_off, survivor = JobStore(postgres_url), JobStore(postgres_url)
    try:
        jid = enqueue(survivor, "a").job_id
        job = cut_off.claim("cut-off", 1.0)
        conn = cut_off.engine.connect()
        tx = conn.begin()
        conn.execute(update(Job).where(Job.id == jid).values(lease_until=utcnow() + timedelta(seconds=1)))
        stalled = time.monotonic()  # ... and its COMMIT never arrives
        time.sleep(1.2)  # the lease it holds runs out
        assert survivor.claim("survivor", 30) is None  # the row is locked: skipped
        taken = None
        while taken is None and time.monotonic() - stalled < PG_IDLE_IN_TRANSACTION_SECONDS + 10:
            time.sleep(0.2)
            taken = survivor.claim("survivor", 30)
        assert taken is not None and taken.id == job.id and taken.attempts == 2
        assert time.monotonic() - stalled >= PG_IDLE_IN_TRANSACTION_SECONDS - 0.5
        with contextlib.suppress(Exception):  # the server ended that session
            tx.rollback()
        conn.invalidate()
        assert not cut_off.heartbeat(jid, "cut-off", 30, token=job.lease_token)[0]  # the old holder is fenced off
    finally:
        cut_off.close()
        survivor.close()
