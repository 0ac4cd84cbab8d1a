"""/health component checks against a real (loopback) Nuclio dashboard and function."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from tests.doubles.function_server import free_port, load_function, serve_in_thread
from tests.nuclio.conftest import FUNCTIONS
from tests.nuclio.dashboard_double import serve_dashboard


def test_nuclio_reported_from_dashboard_and_functions(make_settings):
    functions = {"echo": load_function(FUNCTIONS / "echo_detector")}
    with serve_in_thread(functions) as fn_url, serve_dashboard({"echo": {"metadata": {"name": "echo"}}}, {}) as (
            _, dash_url):
        settings = make_settings(nuclio_dashboard_url=dash_url, nuclio_function_url=fn_url + "/{name}")
        app = create_app(settings, workers=0, watch_functions=["echo"])
        with TestClient(app) as client:
            nuclio = client.get("/health").json()["components"]["nuclio"]
    assert nuclio["ok"] is True and nuclio["functions"] == {"echo": True}
    assert nuclio["dashboard"]["reachable"] is True and nuclio["dashboard"]["functions"] == ["echo"]


def test_nuclio_down_is_reported_in_the_body_not_as_a_failed_liveness(make_settings):
    closed = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(nuclio_dashboard_url=closed, nuclio_function_url=closed + "/{name}")
    with TestClient(create_app(settings, workers=0, watch_functions=["pth-lama"])) as client:
        r = client.post("/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    nuclio = r.json()["components"]["nuclio"]
    assert nuclio["ok"] is False and nuclio["functions"] == {"pth-lama": False}
    assert nuclio["dashboard"]["reachable"] is False
