"""The composition root's housekeeping: work dirs left by crashed attempts are removed (issue 11, case 9)."""

from __future__ import annotations

from bridge.jobs.store import JobStore
from bridge.runtime import Runtime
from tests.jobs.conftest import enqueue


def test_work_dirs_of_crashed_attempts_and_finished_jobs_are_swept(settings, tmp_path):
    store = JobStore(settings.resolved_database_url)
    try:
        crashed = enqueue(store, "crashed").job_id   # its earlier attempt died mid-stage
        running = enqueue(store, "running").job_id   # another worker is using its dir right now
        finished = enqueue(store, "finished").job_id
        store.claim("other", 60)  # claims `crashed` (oldest)…
        store.claim("other", 60)  # …and `running`
        job = store.claim("w", 60)
        assert job.id == finished
        store.succeed(finished, "w", "done", token=job.lease_token)
        root = settings.resolved_cache_dir / "work"
        for name in (f"job{crashed}-abc", f"job{running}-def", f"job{finished}-ghi", "job999-zzz", "unrelated"):
            (root / name).mkdir(parents=True)
            (root / name / "frame.png").write_bytes(b"x")
        runtime = Runtime(settings, store)
        crashed_job = store.get(crashed)
        removed = runtime.sweep_work_dirs(crashed_job)
        assert sorted(removed) == sorted([f"job{crashed}-abc", f"job{finished}-ghi", "job999-zzz"])
        assert sorted(p.name for p in root.iterdir()) == sorted([f"job{running}-def", "unrelated"])
    finally:
        store.close()


def test_a_job_attempt_queues_for_function_slots_by_its_age(settings):
    """The step context's Nuclio client waits for a function's slots as the job's id (oldest first)."""
    import threading
    import time

    from bridge.pipelines.base import MemoryProgress

    store = JobStore(settings.resolved_database_url)
    try:
        params = {"model_name": "pth-yolo"}
        older = enqueue(store, "older", params=params).job_id
        younger = enqueue(store, "younger", params=params).job_id
        runtime = Runtime(settings, store)
        for job_id in (younger, older):
            ctx = runtime.context_for(store.get(job_id), MemoryProgress(), threading.Event(),
                                      deadline=time.monotonic() + 60)
            assert ctx.nuclio.priority == job_id
        assert older < younger
    finally:
        store.close()
