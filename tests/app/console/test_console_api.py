"""The console's HTTP side without a browser: the page and the offline docs are local-only, reads follow
BRIDGE_API_TOKEN, thumbnails come from the CVAT double through the real client and are made once."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from bridge.jobs.store import JobStore
from tests.doubles.cvat_double import CvatDouble
from tests.e2e.conftest import blobs_png

TOKEN = "console-api-token"


def enqueue(store: JobStore, *, task_id: int | None, pipeline: str = "detect", key: str = "k") -> int:
    trigger = {"kind": "job_in_progress", "resource": "job", "resource_id": 3, "job_id": 3, "project_id": 1,
               "task_id": task_id}
    return store.enqueue(pipeline=pipeline, params={"model_name": "m"}, trigger=trigger, dedupe_key=key,
                         flight_key=f"{pipeline}:job:{key}", max_attempts=3).job_id


@pytest.fixture
def cvat():
    with CvatDouble() as double:
        yield double


@pytest.fixture
def client(make_settings, cvat):
    settings = make_settings(api_token=TOKEN, cvat_url=cvat.url, cvat_username="bridge-bot",
                             cvat_password="bridge-pass")
    store = JobStore(settings.resolved_database_url)
    app = create_app(settings, store=store, workers=0)
    with TestClient(app) as c:
        c.store = store
        c.settings = settings
        yield c
    store.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_page_and_docs_load_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "console.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/docs", "/redoc"):
        html = client.get(path)
        assert html.status_code == 200 and "connect-src 'self'" in html.headers["content-security-policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for src in sources:
            assert client.get(src).status_code == 200, src
    assert client.get("/docs/oauth2-redirect").status_code == 200
    ops = client.get("/openapi.json").json()["paths"]
    assert "/console/api/jobs/{job_id}/frames/{frame}/{side}.jpg" in ops and "/" not in ops


def test_reads_follow_the_api_token(client):
    config = client.get("/console/api/config").json()  # always open: it says whether to ask for a token
    assert config["token_required"] is True and config["changes_enabled"] is True
    for path in ("/console/api/session", "/console/api/projects", "/console/api/projects/1",
                 "/console/api/jobs/1/frames", "/console/api/jobs/1/frames/0/before.jpg"):
        assert client.get(path).status_code == 401, path
    session = client.get("/console/api/session", headers=auth()).json()
    assert session["cvat_ui_url"] == client.settings.cvat_url  # BRIDGE_CVAT_UI_URL unset: CVAT_URL
    assert "detect" in session["pipelines"] and "/detect-model-webhook" in session["routes"]["detect"]


def test_thumbnail_from_cvat_is_made_once(client, cvat):
    project = cvat.create_project("p", [{"name": "coral", "type": "any", "attributes": []}])
    big = np.zeros((600, 800, 3), np.uint8)
    big[:, :400] = (0, 0, 255)
    ok, data = cv2.imencode(".png", big)
    task = cvat.create_task(project, "t", [("a.png", blobs_png(100, 90, [])), ("b.png", data.tobytes())])
    job_id = enqueue(client.store, task_id=task)
    frames = client.get(f"/console/api/jobs/{job_id}/frames", headers=auth())
    assert frames.status_code == 200 and frames.json() == []  # nothing failed, no new task: nothing to show

    url = f"/console/api/jobs/{job_id}/frames/1/before.jpg"
    first = client.get(url, headers=auth())
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    thumb = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (192, 256, 3) and thumb[:, :100].mean(axis=(0, 1))[2] > 200  # the red left half
    reads = sum(1 for _, path in cvat.requests if "/data" in path)
    assert reads >= 1  # the frame was read from CVAT
    assert client.get(url, headers=auth()).content == first.content
    assert sum(1 for _, path in cvat.requests if "/data" in path) == reads  # the second one came from disk
    assert list((client.settings.resolved_cache_dir / "thumbs").rglob("1-256.jpg"))


@pytest.mark.parametrize("path,status,reason", [
    ("/console/api/jobs/99/frames/0/before.jpg", 404, "job 99 not found"),
    ("/console/api/jobs/{job}/frames/0/after.jpg", 404, "has not created a task yet"),
    ("/console/api/jobs/{job}/frames/5/before.jpg", 404, "outside task"),
    ("/console/api/jobs/{job}/frames/0/sideways.jpg", 422, "side"),
    ("/console/api/jobs/{job}/frames/-1/before.jpg", 422, "frame"),
])
def test_thumbnail_errors_say_why(client, cvat, path, status, reason):
    project = cvat.create_project("p", [{"name": "coral", "type": "any", "attributes": []}])
    task = cvat.create_task(project, "t", [("a.png", blobs_png(100, 90, []))])
    job_id = enqueue(client.store, task_id=task)
    resp = client.get(path.format(job=job_id), headers=auth())
    assert resp.status_code == status and reason in resp.json()["detail"], resp.text


def test_thumbnail_when_cvat_is_down_or_job_has_no_task(make_settings):
    settings = make_settings(cvat_url="http://127.0.0.1:9", cvat_username="u", cvat_password="p",
                             cvat_ui_url="https://cvat.example.org/")
    store = JobStore(settings.resolved_database_url)
    with TestClient(create_app(settings, store=store, workers=0)) as c:
        assert c.get("/console/api/session").json()["cvat_ui_url"] == "https://cvat.example.org"
        job_id = enqueue(store, task_id=4)
        down = c.get(f"/console/api/jobs/{job_id}/frames/0/before.jpg")
        assert down.status_code == 503 and "CVAT" in down.json()["detail"]
        no_task = enqueue(store, task_id=None, key="other")
        resp = c.get(f"/console/api/jobs/{no_task}/frames/0/before.jpg")
        assert resp.status_code == 404 and "no source task" in resp.json()["detail"]
    store.close()
