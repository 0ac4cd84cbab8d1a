"""Dashboard invocation: headers, relay, metadata-driven concurrency, ping."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.errors import FunctionFailed
from bridge.nuclio.client import NuclioClient
from tests.nuclio.conftest import served
from tests.nuclio.dashboard_double import serve_dashboard


def sleeper_config(max_workers: int) -> dict:
    return {"metadata": {"name": "pth-sleeper", "annotations": {"type": "detector", "spec": "[]"}},
            "spec": {"eventTimeout": "30s", "triggers": {"myHttpTrigger": {
                "kind": "http", "maxWorkers": max_workers, "attributes": {"maxRequestBodySize": 33554432}}}}}


def test_dashboard_headers_and_concurrency_from_max_workers():
    with served("sleeper", max_workers=8) as (fn, url), \
            serve_dashboard({"pth-sleeper": sleeper_config(2)}, {"pth-sleeper": url}) as (dash, dash_url):
        client = NuclioClient(invoke_method="dashboard", dashboard_url=dash_url, namespace="nuclio",
                              project="cvat", timeout=6.2, concurrency=8, backoff_base=0.01)
        with client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.invoke("pth-sleeper", {"sleep": 0.1}), range(8)))
            assert client.concurrency_for("pth-sleeper") == 2
            assert client.ping("pth-sleeper") and not client.ping("pth-other")
    assert len(answers) == 8 and fn.context.user_data.calls == 8
    assert fn.context.user_data.max_in_flight == 2
    headers = dash.invocations[0]
    assert {k: headers[k] for k in ("x-nuclio-function-name", "x-nuclio-path", "x-nuclio-project-name",
                                    "x-nuclio-function-namespace", "x-nuclio-invoke-via",
                                    "x-nuclio-invoke-timeout")} == {
        "x-nuclio-function-name": "pth-sleeper", "x-nuclio-path": "/", "x-nuclio-project-name": "cvat",
        "x-nuclio-function-namespace": "nuclio", "x-nuclio-invoke-via": "domain-name",
        "x-nuclio-invoke-timeout": "7s"}
    assert len(dash.invocations) == 8


def test_dashboard_unknown_function_fails_with_the_status():
    with serve_dashboard({}, {}) as (_, dash_url), \
            NuclioClient(invoke_method="dashboard", dashboard_url=dash_url) as client:
        with pytest.raises(FunctionFailed, match="'pth-nope' answered HTTP 404: function not found"):
            client.invoke("pth-nope", {})
