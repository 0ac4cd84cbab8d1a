"""Webhook intake over the real ASGI app with the real CVAT 2.73 deliveries and signatures."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from bridge.pipelines.registry import ROUTES
from tests.conftest import all_samples, load_sample, signed

DETECT = "/detect-model-webhook?model_name=pth-yolo-gridcorners"
CROP = "/crop-quadrat-and-create-new-task-webhook?target_proj_id=2"


@pytest.fixture
def client(settings):
    app = create_app(settings, workers=0)
    with TestClient(app) as c:
        yield c


def _post_sample(client, url, name, headers=None):
    s = load_sample(name)
    h = {"X-Signature-256": s["headers"]["X-Signature-256"], "Content-Type": "application/json"}
    if headers is not None:
        h = headers
    return client.post(url, content=s["raw_body"].encode(), headers=h)


def _jobs(client):
    return client.get("/jobs").json()["items"]


def _url(spec):
    q = {"detect": "model_name=m", "crop_quadrat": "target_proj_id=2", "remove_grid": "target_proj_id=2",
         "sam2_refine": ""}.get(spec.pipeline, "")
    return f"{spec.path}?{q}"


@pytest.mark.parametrize("path", all_samples(), ids=lambda p: p.stem)
@pytest.mark.parametrize("spec", ROUTES, ids=lambda s: s.path)
def test_every_sample_on_every_route_is_accepted(client, path, spec):
    s = json.loads(path.read_text())
    assert s["signature_valid_for_secret"] and s["secret"] == "bridge-secret"
    r = client.post(_url(spec), content=s["raw_body"].encode(),
                    headers={"X-Signature-256": s["headers"]["X-Signature-256"]})
    assert r.status_code in (200, 202), r.text
    if r.status_code == 200:
        assert r.json()["status"] in ("ok", "ignored")


def test_detect_route_creates_one_job_for_ten_deliveries(client):
    ids = {_post_sample(client, DETECT, "10-").json()["job_id"] for _ in range(10)}
    assert len(ids) == 1
    jobs = _jobs(client)
    assert len(jobs) == 1
    job = jobs[0]
    assert job["pipeline"] == "detect" and job["status"] == "queued"
    assert job["params"] == {"model_name": "pth-yolo-gridcorners", "conv_mask_to_poly": False, "refine": False}
    body = load_sample("10-")["body"]
    assert job["trigger"]["job_id"] == body["job"]["id"] and job["trigger"]["task_id"] == body["job"]["task_id"]


def test_first_delivery_is_queued_then_duplicate(client):
    first = _post_sample(client, DETECT, "10-")
    second = _post_sample(client, DETECT, "10-")
    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == "queued" and second.json()["status"] == "duplicate"


def test_manual_redelivery_with_reordered_keys_is_a_duplicate(client):
    first = _post_sample(client, DETECT, "10-").json()["job_id"]
    data = json.loads(load_sample("10-")["raw_body"])
    body, headers = signed(json.dumps(dict(reversed(list(data.items())))))
    r = client.post(DETECT, content=body, headers=headers)
    assert r.status_code == 202 and r.json()["job_id"] == first and r.json()["status"] == "duplicate"


def test_task_completion_creates_a_job_on_crop_route(client):
    r = _post_sample(client, CROP, "14-")
    assert r.status_code == 202
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["pipeline"] == "crop_quadrat" and job["params"]["target_proj_id"] == 2
    assert job["trigger"]["resource"] == "task"


def test_job_event_on_crop_route_and_task_event_on_detect_route_are_ignored(client):
    assert _post_sample(client, CROP, "10-").json()["status"] == "ignored"
    assert _post_sample(client, DETECT, "14-").json()["status"] == "ignored"
    assert _jobs(client) == []


@pytest.mark.parametrize("name", ["05-", "06-"])
def test_updated_date_only_ignored(client, name):
    matching = DETECT if load_sample(name)["body"]["event"] == "update:job" else CROP
    for url in (DETECT, CROP):
        r = _post_sample(client, url, name)
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        if url == matching:
            assert "updated_date" in r.json()["reason"]
    assert _jobs(client) == []


def test_wrong_secret_and_missing_header_are_401_without_job(client):
    body, headers = signed(load_sample("10-")["raw_body"], secret="not-the-secret")
    r = client.post(DETECT, content=body, headers=headers)
    assert r.status_code == 401 and "differs" in r.json()["detail"]
    r = _post_sample(client, DETECT, "10-", headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and "missing" in r.json()["detail"]
    tampered = load_sample("10-")["raw_body"].replace('"in progress"', '"completed"', 1).encode()
    r = client.post(DETECT, content=tampered,
                    headers={"X-Signature-256": load_sample("10-")["headers"]["X-Signature-256"]})
    assert r.status_code == 401
    assert _jobs(client) == []


def test_unsigned_needs_explicit_opt_in(make_settings):
    with pytest.raises(ValueError, match="BRIDGE_ALLOW_UNSIGNED"):
        make_settings(webhook_secret=None)
    app = create_app(make_settings(webhook_secret=None, allow_unsigned=True), workers=0)
    with TestClient(app) as c:
        r = c.post(DETECT, content=load_sample("10-")["raw_body"].encode())
        assert r.status_code == 202


@pytest.mark.parametrize("body,code", [(b"{oops", 400), (b"[]", 400), (b'{"x": 1}', 422),
                                       (b'{"event": "update:job", "job": {"id": "x"}}', 422)])
def test_malformed_bodies_are_4xx(client, body, code):
    b, headers = signed(body)
    r = client.post(DETECT, content=b, headers=headers)
    assert r.status_code == code and r.json()["detail"]


def test_bad_query_params(client):
    r = _post_sample(client, "/detect-model-webhook", "10-")
    assert r.status_code == 400 and "model_name" in r.json()["detail"]
    r = _post_sample(client, "/crop-quadrat-and-create-new-task-webhook?target_proj_id=abc", "14-")
    assert r.status_code == 400 and "target_proj_id" in r.json()["detail"]
    # ping still succeeds (CVAT's Ping button), with a warning naming the problem
    r = _post_sample(client, "/crop-quadrat-and-create-new-task-webhook", "01-")
    assert r.status_code == 200 and "target_proj_id" in r.json()["warning"]
    assert _jobs(client) == []


def test_legacy_route_fixes_the_follow_up_model(client):
    r = _post_sample(client, "/remove-grid-and-detect-corals-webhook?target_proj_id=3", "14-")
    job = client.get(f"/jobs/{r.json()['job_id']}").json()
    assert job["pipeline"] == "remove_grid"
    assert job["params"]["then_detect"] == "pth-yolo-coralsegv4" and job["params"]["conv_mask_to_poly"] is True


def test_same_transition_on_two_routes_gives_two_jobs(client):
    a = _post_sample(client, DETECT, "10-").json()["job_id"]
    b = _post_sample(client, "/sam2-refine-webhook", "10-").json()["job_id"]
    assert a != b


def test_test_webhook_is_a_dry_run(client):
    r = _post_sample(client, "/test-webhook?target_proj_id=2&model_name=m&debug=true", "14-")
    out = r.json()
    assert out["signature"] == "valid" and out["payload"]["event"] == "update:task"
    assert out["decisions"]["/crop-quadrat-and-create-new-task-webhook"]["action"] == "trigger"
    assert out["decisions"]["/detect-model-webhook"]["action"] == "ignore"
    assert _jobs(client) == []


def test_health_get_and_post(client):
    for method in ("get", "post"):
        r = getattr(client, method)("/health?deep=false")
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert r.json()["components"]["database"]["ok"] is True
    r = client.post("/health", json={"event": "ping"})
    body = r.json()
    assert r.status_code == 200  # CVAT unreachable is reported in the body, liveness stays 200
    assert body["components"]["cvat"]["ok"] is False and body["components"]["cvat"]["error"]


def test_metrics_count_outcomes(client):
    _post_sample(client, DETECT, "10-")
    _post_sample(client, DETECT, "10-")
    _post_sample(client, DETECT, "05-")
    text = client.get("/metrics").text
    assert 'bridge_webhooks_total{event="update:job",outcome="queued",route="/detect-model-webhook"} 1.0' in text
    assert 'outcome="duplicate"' in text and 'outcome="ignored"' in text
    assert 'bridge_jobs{status="queued"} 1.0' in text


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    for route in ROUTES:
        assert route.path in spec["paths"], route.path
        assert spec["paths"][route.path]["post"]["summary"]
    for path in ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/retry", "/jobs/{job_id}/cancel", "/health", "/metrics"):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 200
