from __future__ import annotations

import pytest

from bridge.jobs.store import JobStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    s = JobStore(store_url)
    yield s
    s.close()


def enqueue(store: JobStore, key: str, *, flight: str | None = None, pipeline: str = "detect",
            max_attempts: int = 3, params: dict | None = None):
    trigger = {"kind": "job_in_progress", "resource": "job", "resource_id": 1, "job_id": 1, "task_id": 1}
    return store.enqueue(pipeline=pipeline, params=params or {}, trigger=trigger,
                         dedupe_key=key, flight_key=flight or f"{pipeline}:job:{key}", max_attempts=max_attempts)
