"""Only what is configured is probed (issue 11, case 10, Nuclio part).

Before: with NUCLIO_FUNCTION_URL set (direct invocation) the client still asked the default dashboard
``http://nuclio:8070`` on every job (DNS lookups, "metadata unknown" warnings) and ``/health`` said
Nuclio was not ok until a call had happened. Every request the client makes is recorded here.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bridge.app.factory import create_app
from bridge.nuclio.client import NuclioClient, configured_dashboard
from bridge.runtime import Runtime
from tests.doubles.function_server import load_function, serve_in_thread
from tests.nuclio.conftest import FUNCTIONS, CountingTransport
from tests.nuclio.dashboard_double import serve_dashboard
from tests.nuclio.test_dashboard_mode import sleeper_config

PNG = cv2.imencode(".png", np.full((20, 30, 3), 255, np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def echo_url():
    with serve_in_thread({"echo": load_function(FUNCTIONS / "echo_detector")}) as url:
        yield url


def test_direct_mode_with_a_function_url_asks_no_dashboard(make_settings, echo_url):
    settings = make_settings(nuclio_function_url=echo_url + "/{name}", nuclio_concurrency=3)
    counting = CountingTransport()
    with NuclioClient.from_settings(settings, transport=counting) as client:
        assert client.dashboard_url is None
        items = client.detect("echo", PNG, threshold=0.5)
        assert client.function_info("echo") is None and client.dashboard_functions() is None
        assert client.concurrency_for("echo") == 3  # the configured value
        assert client.diagnose("echo") == []
    assert {"label": "frame", "type": "rectangle", "points": [0, 0, 30, 20], "confidence": "90"} in items
    assert counting.urls == [f"POST {echo_url}/echo/", f"GET {echo_url}/echo/"]  # the call, the ping


def test_a_configured_dashboard_is_still_asked(make_settings, echo_url):
    with serve_dashboard({"echo": sleeper_config(5)}, {}) as (_, dash_url):
        settings = make_settings(nuclio_function_url=echo_url + "/{name}", nuclio_dashboard_url=dash_url)
        counting = CountingTransport()
        with NuclioClient.from_settings(settings, transport=counting) as client:
            client.detect("echo", PNG)
            assert client.concurrency_for("echo") == 5  # maxWorkers from the dashboard
    assert counting.urls == [f"GET {dash_url}/api/functions/echo", f"POST {echo_url}/echo/"]


@pytest.mark.parametrize(("given", "dashboard"), [
    ({}, "http://nuclio:8070"),  # CVAT's serverless layout: nuclio-nuclio-{name} next to nuclio:8070
    ({"nuclio_function_url": "http://fn-{name}:8080"}, None),
    ({"nuclio_function_url": "http://fn-{name}:8080", "nuclio_host": "dash"}, "http://dash:8070"),
    ({"nuclio_function_url": "http://fn-{name}:8080", "nuclio_port": 9000}, "http://nuclio:9000"),
    ({"nuclio_function_url": "http://fn-{name}:8080", "nuclio_dashboard_url": "http://d:1"}, "http://d:1"),
    ({"nuclio_function_url": "http://fn-{name}:8080", "nuclio_invoke_method": "dashboard"}, "http://nuclio:8070"),
])
def test_which_dashboard_each_configuration_probes(make_settings, given, dashboard):
    assert configured_dashboard(make_settings(**given)) == dashboard


def test_the_environment_counts_as_configured(make_settings, monkeypatch):
    monkeypatch.setenv("NUCLIO_FUNCTION_URL", "http://fn-{name}:8080")
    assert configured_dashboard(make_settings()) is None
    monkeypatch.setenv("NUCLIO_HOST", "dash")
    assert configured_dashboard(make_settings()) == "http://dash:8070"


def test_dashboard_invocation_needs_a_dashboard():
    with pytest.raises(ValueError, match="needs a dashboard_url"):
        NuclioClient(invoke_method="dashboard", dashboard_url=None)


@pytest.mark.parametrize("watched", [["echo"], []])
def test_health_in_direct_mode_without_a_dashboard_pings_only_the_functions(make_settings, echo_url, watched):
    # Lives here rather than in tests/app/test_health.py (not this room's file); move it there if wished.
    settings = make_settings(nuclio_function_url=echo_url + "/{name}")
    counting = CountingTransport()
    client = NuclioClient.from_settings(settings, transport=counting)
    app = create_app(settings, workers=0, watch_functions=watched, runtime=Runtime(settings, nuclio=client))
    with TestClient(app) as http:
        nuclio = http.get("/health").json()["components"]["nuclio"]
    client.close()
    assert nuclio["ok"] is True
    assert nuclio["dashboard"] == {"url": None, "configured": False}
    assert nuclio["functions"] == {name: True for name in watched}
    assert counting.urls == [f"GET {echo_url}/{name}/" for name in watched]
