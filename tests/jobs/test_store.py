"""Job store semantics, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import update

from bridge.jobs.migrate import current
from bridge.jobs.models import Job, utcnow
from bridge.jobs.store import JobFilter, JobStore
from tests.jobs.conftest import enqueue


def test_migrations_are_applied_and_idempotent(store, store_url):
    assert current(store.engine) == "0001_jobs"
    JobStore(store_url).close()  # running the migration again is a no-op
    assert current(store.engine) == "0001_jobs"


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


def test_requeue_backoff_and_give_up(store):
    jid = enqueue(store, "a", max_attempts=2).job_id
    store.claim("w", 30)
    delay = store.requeue(jid, "w", "CVAT down", base=10, cap=20)
    assert 0 <= delay <= 10
    job = store.get(jid)
    assert job.status == "queued" and job.error == "CVAT down"
    with store._tx() as s:
        s.execute(update(Job).where(Job.id == jid).values(available_at=utcnow()))
    store.claim("w", 30)
    assert store.requeue(jid, "w", "CVAT down", base=10, cap=20) is None
    job = store.get(jid)
    assert job.status == "failed" and "gave up after 2 attempts" in job.error


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
