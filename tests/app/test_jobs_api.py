"""Job API: filters, pagination, retry, cancel, bearer token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from bridge.jobs.store import JobStore
from tests.app.conftest import API_TOKEN


def _enqueue(store: JobStore, n: int, pipeline: str = "detect", task_id: int = 1):
    ids = []
    for i in range(n):
        r = store.enqueue(pipeline=pipeline, params={"model_name": "m"},
                          trigger={"kind": "job_in_progress", "resource": "job", "resource_id": 100 + i,
                                   "task_id": task_id, "job_id": 100 + i, "project_id": 1},
                          dedupe_key=f"{pipeline}-{task_id}-{i}", flight_key=f"{pipeline}:job:{100 + i}",
                          max_attempts=3)
        ids.append(r.job_id)
    return ids


@pytest.fixture
def app_and_store(make_settings):
    settings = make_settings(api_token=API_TOKEN)
    store = JobStore(settings.resolved_database_url)
    app = create_app(settings, store=store, workers=0)
    with TestClient(app, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
        yield c, store


def test_list_filters_and_pagination(app_and_store):
    c, store = app_and_store
    _enqueue(store, 3, "detect", task_id=1)
    _enqueue(store, 2, "crop_quadrat", task_id=2)
    assert c.get("/jobs").json()["total"] == 5
    assert c.get("/jobs?pipeline=crop_quadrat").json()["total"] == 2
    assert c.get("/jobs?task_id=1").json()["total"] == 3
    assert c.get("/jobs?job_id=101").json()["total"] == 2
    page = c.get("/jobs?limit=2&offset=2").json()
    assert page["total"] == 5 and len(page["items"]) == 2
    assert c.get("/jobs?status=failed").json()["total"] == 0
    assert c.get("/jobs?status=bogus").status_code == 422


def test_show_cancel_retry(app_and_store):
    c, store = app_and_store
    (jid,) = _enqueue(store, 1)
    job = c.get(f"/jobs/{jid}").json()
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 0}
    assert c.post(f"/jobs/{jid}/cancel").json()["status"] == "cancelled"
    assert store.claim("w", 10) is None  # a cancelled job is never claimed
    assert c.post(f"/jobs/{jid}/retry").json()["status"] == "queued"
    claimed = store.claim("w", 10)
    assert claimed.id == jid
    assert c.post(f"/jobs/{jid}/retry").status_code == 409  # running
    assert c.post(f"/jobs/{jid}/cancel").json()["cancel_requested"] is True
    assert c.get("/jobs/999").status_code == 404
    assert c.post("/jobs/999/retry").status_code == 404


def test_bearer_token(make_settings):
    s = make_settings(api_token="t0ken-value")
    app = create_app(s, workers=0)
    with TestClient(app) as c:
        assert c.get("/jobs").status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer t0ken-value"}).status_code == 200
        assert c.post("/jobs/1/retry").status_code == 401
        assert c.post("/jobs/1/cancel", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/jobs/1/cancel", headers={"Authorization": "Bearer t0ken-value"}).status_code == 404
        assert c.get("/health?deep=false").status_code == 200  # health stays open


def test_changes_are_refused_without_a_configured_token(make_settings):
    """No BRIDGE_API_TOKEN: reads stay open, retry/cancel are 403 with what to do, and change nothing."""
    settings = make_settings()
    store = JobStore(settings.resolved_database_url)
    (jid,) = _enqueue(store, 1)
    with TestClient(create_app(settings, store=store, workers=0)) as c:
        assert c.get("/jobs").json()["total"] == 1 and c.get(f"/jobs/{jid}").status_code == 200
        for action in ("cancel", "retry"):
            for headers in ({}, {"Authorization": "Bearer anything"}):
                r = c.post(f"/jobs/{jid}/{action}", headers=headers)
                assert r.status_code == 403 and "set BRIDGE_API_TOKEN" in r.json()["detail"], r.text
        assert c.get(f"/jobs/{jid}").json()["status"] == "queued"
        assert c.get(f"/jobs/{jid}").json()["cancel_requested"] is False
    assert store.claim("w", 10).id == jid  # still claimable: the cancel did not happen
