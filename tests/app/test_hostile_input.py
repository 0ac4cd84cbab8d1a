"""Hostile input gets a 4xx with a reason, never a 5xx (CVAT retries 5xx for days), on SQLite and
PostgreSQL: deep JSON, ids the job store cannot hold, control characters in queries, odd numbers
and strings, function names that would steer the function URL elsewhere."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from bridge.app.deps import app_state
from bridge.app.factory import create_app
from bridge.events import MAX_ID
from bridge.pipelines.registry import ROUTES
from tests.conftest import load_sample, signed

DETECT = "/detect-model-webhook?model_name=pth-yolo-gridcorners"
CROP = "/crop-quadrat-and-create-new-task-webhook?target_proj_id=2"


def _url(spec) -> str:
    q = {"detect": "model_name=m", "crop_quadrat": "target_proj_id=2", "remove_grid": "target_proj_id=2",
         "sam2_refine": ""}.get(spec.pipeline, "")
    return f"{spec.path}?{q}"


def _event(sample: str, **overrides) -> dict:
    data = json.loads(load_sample(sample)["raw_body"])
    for path, value in overrides.items():
        node = data
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return data


def _jobs(client) -> list[dict]:
    r = client.get("/jobs")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _nested(depth: int) -> bytes:
    return b'{"event": "update:job", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [33, 100_000])
def test_deep_json_is_400_on_every_route(any_store_client, depth):
    body, headers = signed(_nested(depth))
    for spec in ROUTES:
        r = any_store_client.post(_url(spec), content=body, headers=headers)
        assert r.status_code == 400 and "nested deeper than 32" in r.json()["detail"], (spec.path, r.text)
    r = any_store_client.post("/test-webhook", content=body, headers=headers)
    assert r.status_code == 400 and "nested deeper" in r.json()["detail"]
    assert _jobs(any_store_client) == []


def test_test_webhook_checks_the_signature_before_parsing(any_store_client):
    deep = _nested(100_000)
    r = any_store_client.post("/test-webhook", content=deep)
    assert r.status_code == 401 and "missing X-Signature-256" in r.json()["detail"]
    body, headers = signed(deep, secret="another-secret")
    r = any_store_client.post("/test-webhook", content=body, headers=headers)
    assert r.status_code == 401 and r.json()["signature"] == "invalid" and "differs" in r.json()["detail"]


@pytest.mark.parametrize("field", ["job__id", "job__task_id", "job__project_id", "webhook_id", "sender__id"])
@pytest.mark.parametrize("value", [2**31, 2**63, 0])
def test_job_event_ids_out_of_store_range_are_422(any_store_client, field, value):
    body, headers = signed(_event("10-", **{field: value}))
    r = any_store_client.post(DETECT, content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert field.replace("__", ".") in r.json()["detail"] and f"1 to {MAX_ID}" in r.json()["detail"]
    assert _jobs(any_store_client) == []


@pytest.mark.parametrize("field", ["task__id", "task__project_id"])
def test_task_event_ids_out_of_store_range_are_422(any_store_client, field):
    body, headers = signed(_event("14-", **{field: 2**63}))
    r = any_store_client.post(CROP, content=body, headers=headers)
    assert r.status_code == 422 and f"1 to {MAX_ID}" in r.json()["detail"]


def test_largest_ids_are_stored_and_read_back(any_store_client):
    body, headers = signed(_event("10-", job__id=MAX_ID, job__task_id=MAX_ID, job__project_id=MAX_ID,
                                  webhook_id=MAX_ID, sender__id=MAX_ID))
    r = any_store_client.post(DETECT, content=body, headers=headers)
    assert r.status_code == 202, r.text
    job = any_store_client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["trigger"]["job_id"] == job["trigger"]["task_id"] == job["trigger"]["project_id"] == MAX_ID
    assert any_store_client.get(f"/jobs?job_id={MAX_ID}&task_id={MAX_ID}").json()["total"] == 1
    r = any_store_client.post(CROP.replace("=2", f"={MAX_ID + 1}"), content=body, headers=headers)
    assert r.status_code == 400 and "target_proj_id" in r.json()["detail"]


@pytest.mark.parametrize("query", ["pipeline=a%00b", "pipeline=%01", "status=queued%00", "pipeline=x%0Ay",
                                   "task_id=1&pipe%00line=d"])
def test_control_characters_in_job_queries_are_422(any_store_client, query):
    r = any_store_client.get(f"/jobs?{query}")
    assert r.status_code == 422 and "control character" in r.json()["detail"], r.text


def test_control_characters_in_webhook_queries_are_422(any_store_client):
    body, headers = signed(load_sample("10-")["raw_body"])
    r = any_store_client.post("/sam2-refine-webhook?labels=coral%00x", content=body, headers=headers)
    assert r.status_code == 422 and "control character" in r.json()["detail"]
    assert _jobs(any_store_client) == []


@pytest.mark.parametrize("raw", [
    b'{"event": "update:job", "job": {"id": 1e999}}',
    b'{"event": "update:job", "job": {"id": NaN}}',
    b'{"event": "update:job", "job": {"id": ' + b"9" * 5000 + b"}}",
    b'{"event": "update:job", "sender": {"username": "\\udc80"}}',
])
def test_numbers_and_strings_that_cannot_be_stored_are_400(any_store_client, raw):
    body, headers = signed(raw)
    for url in (DETECT, "/test-webhook?debug=true"):
        r = any_store_client.post(url, content=body, headers=headers)
        assert r.status_code == 400 and r.json()["detail"], (url, r.text)


def test_strange_but_storable_strings_are_kept(any_store_client):
    """NUL and other control characters inside JSON strings are valid JSON and the store keeps them."""
    body, headers = signed(_event("10-", sender__username="bot\u0000\u0007\u202e"))
    r = any_store_client.post(DETECT, content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert any_store_client.get(f"/jobs/{r.json()['job_id']}").json()["trigger"]["sender"] == "bot\u0000\u0007\u202e"


@pytest.mark.parametrize("header", ["sha256=" + "0" * 63, "sha256=" + "g" * 64, "sha1=" + "0" * 64,
                                    "sha256=" + "0" * 64 + "00", "sha256=" + "a" * 20_000])
def test_malformed_signature_header_is_401_before_the_body_is_read(any_store_client, header):
    r = any_store_client.post(DETECT, content=_nested(100_000), headers={"X-Signature-256": header})
    assert r.status_code == 401 and "malformed X-Signature-256" in r.json()["detail"]


def test_unknown_event_names_do_not_grow_metrics(any_store_client):
    for i in range(20):
        body, headers = signed({"event": f"update:job{i}"})
        assert any_store_client.post(DETECT, content=body, headers=headers).status_code == 200
    text = any_store_client.get("/metrics").text
    assert 'event="other",outcome="ignored"' in text and "update:job7" not in text


@pytest.mark.parametrize("query", [
    "/detect-model-webhook?model_name=evil.example.com",
    "/detect-model-webhook?model_name=pth-sam2.attacker.net",
    "/detect-model-webhook?model_name=a/b",
    "/detect-model-webhook?model_name=a:80",
    "/detect-model-webhook?model_name=a%40b",
    "/detect-model-webhook?model_name=-leading",
    "/detect-model-webhook?model_name=" + "a" * 64,
    "/detect-model-webhook?model_name=m&refine=true&sam2_function=sam.evil",
    "/sam2-refine-webhook?function=x.y",
    "/webhooks/sam2-refine?function=x..y",
])
def test_function_names_that_steer_the_url_are_400(any_store_client, query):
    body, headers = signed(load_sample("10-")["raw_body"])
    r = any_store_client.post(query, content=body, headers=headers)
    assert r.status_code == 400 and "is not a Nuclio function name" in r.json()["detail"], r.text
    assert _jobs(any_store_client) == []


def test_then_detect_is_checked_too(make_settings):
    from bridge.pipelines.registry import parse_params

    with pytest.raises(ValueError, match="not a Nuclio function name"):
        parse_params("crop_quadrat", {"target_proj_id": "2", "then_detect": "det.evil.io"})


@pytest.mark.parametrize("name", ["pth-yolo-coralsegv4", "pth-sam2", "pth-yolo-gridcorners", "box_segmenter",
                                  "Detector2", "a", "a" * 63])
def test_real_function_names_keep_working(any_store_client, name):
    body, headers = signed(load_sample("10-")["raw_body"])
    r = any_store_client.post(f"/detect-model-webhook?model_name={name}", content=body, headers=headers)
    assert r.status_code == 202 and any_store_client.get(f"/jobs/{r.json()['job_id']}").json()["params"][
        "model_name"] == name


def test_a_value_the_store_refuses_is_422_not_a_retried_5xx(make_settings, postgres_url):
    """Defence in depth: were a value to slip past validation, PostgreSQL's DataError is the value's fault."""
    import psycopg

    app = create_app(make_settings(database_url=postgres_url), workers=0)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE bridge_jobs ALTER COLUMN task_id TYPE smallint")
    body, headers = signed(_event("10-", job__task_id=40_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(DETECT, content=body, headers=headers)
        assert r.status_code == 422 and "value cannot be stored: smallint out of range" in r.json()["detail"]
        assert client.get("/jobs").json()["total"] == 0
    app_state(app).store.close()


def test_store_outage_is_503_on_every_route_that_needs_it(make_settings, postgres_url):
    import psycopg

    app = create_app(make_settings(database_url=postgres_url), workers=0)
    body, headers = signed(load_sample("10-")["raw_body"])
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(DETECT, content=body, headers=headers).status_code == 202
        admin, name = postgres_url.rsplit("/", 1)
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        r = client.post(DETECT.replace("gridcorners", "other"), content=body, headers=headers)
        assert r.status_code == 503 and "retry later" in r.json()["detail"]
        for url in ("/jobs", "/jobs/1"):
            r = client.get(url)
            assert r.status_code == 503 and r.json()["detail"] == "job store unavailable; retry later", r.text
    app_state(app).store.close()


def test_request_id_from_the_client_is_kept_only_when_short_and_plain(any_store_client):
    assert any_store_client.get("/health?deep=false", headers={"X-Request-ID": "cvat-42"}).headers[
        "x-request-id"] == "cvat-42"
    rid = any_store_client.get("/health?deep=false", headers={"X-Request-ID": "x" * 5000}).headers["x-request-id"]
    assert len(rid) == 12
