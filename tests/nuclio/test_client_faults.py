"""Fault injection with respx: each failure gives the right error type, message and attempt count."""

import base64
import json

import cv2
import httpx
import numpy as np
import pytest
import respx

from bridge.config import Settings
from bridge.errors import FunctionFailed, FunctionUnavailable
from bridge.nuclio import scaling
from bridge.nuclio.client import NuclioClient

URL = "http://nuclio-nuclio-pth-test:8080/"
DASH = "http://nuclio:8070"


def client(**kwargs) -> NuclioClient:
    """A client with tiny backoff; inside ``respx.mock`` the dashboard knows no function (404)."""
    respx.get(url__startswith=DASH).mock(return_value=httpx.Response(404))
    defaults = {"backoff_base": 0.001, "backoff_max": 0.002, "retries": 3,
                "function_concurrency": {"pth-test": 1}}
    return NuclioClient(**{**defaults, **kwargs})


def png(w: int = 8, h: int = 6) -> bytes:
    return cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes()


@respx.mock
def test_read_timeouts_are_retried_then_unavailable_with_a_timeout_hint():
    route = respx.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with client(retries=3) as c, pytest.raises(FunctionUnavailable) as err:
        c.invoke("pth-test", {"a": 1})
    assert route.call_count == 4
    msg = str(err.value)
    assert "timed out: no answer within 120 s (ReadTimeout) after 4 attempt(s)" in msg
    assert "NUCLIO_FUNCTION_TIMEOUTS" in msg and "eventTimeout" in msg


@respx.mock
def test_connect_errors_are_bounded_by_retries():
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    with client(retries=0) as c, pytest.raises(FunctionUnavailable, match="after 1 attempt"):
        c.invoke("pth-test", {})
    assert route.call_count == 1


@respx.mock
def test_dashboard_unreachable_names_the_dashboard_namespace_and_project():
    route = respx.post(f"{DASH}/api/function_invocations").mock(side_effect=httpx.ConnectError("refused"))
    with client(retries=1, invoke_method="dashboard") as c, pytest.raises(FunctionUnavailable) as err:
        c.invoke("pth-test", {})
    assert route.call_count == 2
    assert str(err.value) == (
        "function 'pth-test' not reachable through the Nuclio dashboard at "
        "http://nuclio:8070/api/function_invocations: ConnectError: refused after 2 attempt(s); is the "
        "dashboard up, and the function deployed in namespace 'nuclio', project 'cvat'? "
        "name is case-sensitive")


@respx.mock
@pytest.mark.parametrize("status", [503, 408, 504, 502])
def test_retryable_statuses_then_success(status):
    route = respx.post(URL).mock(side_effect=[httpx.Response(status, text="busy"),
                                              httpx.Response(status, text="busy"),
                                              httpx.Response(200, json={"ok": 1})])
    with client() as c:
        assert c.invoke("pth-test", {"a": 1}) == {"ok": 1}
    assert route.call_count == 3
    assert json.loads(route.calls[0].request.content) == {"a": 1}


@respx.mock
def test_503_forever_is_unavailable_after_exactly_retries_plus_one():
    route = respx.post(URL).mock(return_value=httpx.Response(503, text="no available worker"))
    with client(retries=5) as c, pytest.raises(FunctionUnavailable) as err:
        c.invoke("pth-test", {})
    assert route.call_count == 6
    assert "busy (503, no free worker): no available worker after 6 attempt(s)" in str(err.value)


@respx.mock
def test_500_with_body_is_not_retried_and_quotes_the_body():
    route = respx.post(URL).mock(return_value=httpx.Response(500, text="CUDA out of memory\n" + "x" * 1000))
    with client() as c, pytest.raises(FunctionFailed) as err:
        c.invoke("pth-test", {})
    assert route.call_count == 1
    msg = str(err.value)
    assert msg.startswith("function 'pth-test' answered HTTP 500: CUDA out of memory x")
    assert msg.endswith("...") and len(msg) < 400


@respx.mock
@pytest.mark.parametrize(("response", "match"), [
    (httpx.Response(200, text="{not json"), "invalid JSON"),
    (httpx.Response(404, text="not found"), "HTTP 404: not found"),
    (httpx.Response(200, json={"shapes": "nope"}), "must answer"),
])
def test_bad_answers_fail_once(response, match):
    route = respx.post(URL).mock(return_value=response)
    with client() as c, pytest.raises(FunctionFailed, match=match):
        c.detect("pth-test", png())
    assert route.call_count == 1


@respx.mock
def test_detect_payload_threshold_and_extra():
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=[]))
    with client() as c:
        assert c.detect("pth-test", png(), threshold=0.25, extra={"roi": None}) == []
        assert c.detect("pth-test", png()) == []
    first = json.loads(route.calls[0].request.content)
    assert first["threshold"] == 0.25 and first["roi"] is None
    assert base64.b64decode(first["image"]) == png()
    assert set(json.loads(route.calls[1].request.content)) == {"image"}


@respx.mock
def test_legacy_interactor_mask_becomes_an_rle_shape():
    legacy = [[0, 0, 0], [0, 1, 1]]
    respx.post(URL).mock(return_value=httpx.Response(200, json={"mask": legacy}))
    with client() as c:
        out = c.interact("pth-test", png(3, 2), pos_points=[[1, 1]])
    (shape,) = out["shapes"]
    assert shape["type"] == "mask" and shape["points"] == [4, 2, 0, 0, 2, 1]
    crop, _ = scaling.decode_rle(shape["points"])
    assert (crop == np.array(legacy, bool)).all()


@respx.mock
def test_sam_result_count_must_match_prompts():
    respx.post(URL).mock(return_value=httpx.Response(200, json={"results": [{"error": "x"}]}))
    with client() as c, pytest.raises(FunctionFailed, match="with 2 entries"):
        c.segment_prompts("pth-test", png(), [{"bbox": [0, 0, 1, 1]}, {"pos_points": [[1, 1]]}])


@respx.mock
def test_inpaint_rejects_bad_base64_and_missing_image():
    route = respx.post(URL).mock(side_effect=[httpx.Response(200, json={"image": "%%%"}),
                                              httpx.Response(200, json={"width": 3})])
    with client() as c:
        with pytest.raises(FunctionFailed, match="invalid base64"):
            c.inpaint("pth-test", png(), png())
        with pytest.raises(FunctionFailed, match=r"must answer \{\"image\""):
            c.inpaint("pth-test", png(), png())
    sent = json.loads(route.calls[0].request.content)
    assert set(sent) == {"image", "mask"}


@respx.mock
def test_per_function_and_explicit_timeouts_reach_httpx():
    seen = []

    def record(request):
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    respx.post(url__regex=r"http://nuclio-nuclio-.*:8080/").mock(side_effect=record)
    limits = {"pth-lama": 1, "pth-test": 1}
    with client(function_timeouts={"pth-lama": 300}, function_concurrency=limits) as c:
        c.invoke("pth-lama", {})
        c.invoke("pth-test", {})
        c.invoke("pth-test", {}, timeout=7)
    assert [t["read"] for t in seen] == [300, 120, 7]
    assert all(t["connect"] == 5.0 for t in seen)


@respx.mock
def test_function_info_parses_the_dashboard_config_and_is_cached():
    config = {"metadata": {"name": "pth-sam2", "annotations": {"type": "interactor", "spec": "[]"}},
              "spec": {"eventTimeout": "30s", "triggers": {"http": {
                  "kind": "http", "maxWorkers": 3, "attributes": {"maxRequestBodySize": 33554432}}}}}
    route = respx.get(f"{DASH}/api/functions/pth-sam2").mock(return_value=httpx.Response(200, json=config))
    respx.get(f"{DASH}/api/functions/pth-missing").mock(return_value=httpx.Response(404))
    with NuclioClient() as c:
        info = c.function_info("pth-sam2")
        assert info == {"name": "pth-sam2", "type": "interactor", "spec": [], "max_workers": 3,
                        "event_timeout": 30.0, "max_body": 33554432, "problems": []}
        assert c.concurrency_for("pth-sam2") == 3
        assert c.function_info("pth-missing") is None
        assert c.concurrency_for("pth-missing") == 2
    assert route.call_count == 1
    assert route.calls[0].request.headers["x-nuclio-function-namespace"] == "nuclio"
    assert route.calls[0].request.headers["x-nuclio-project-name"] == "cvat"


@respx.mock
def test_unreachable_dashboard_means_unknown_and_configured_concurrency_wins():
    route = respx.get(url__startswith=DASH).mock(side_effect=httpx.ConnectError("no dashboard"))
    with NuclioClient(concurrency=3, function_concurrency={"pth-lama": 1}) as c:
        assert c.function_info("pth-x") is None
        assert c.concurrency_for("pth-x") == 3
        assert c.concurrency_for("pth-lama") == 1
        assert route.call_count == 1  # "unknown" is remembered for a while...
        assert c.function_info("pth-x", refresh=True) is None
        assert route.call_count == 2  # ...unless a refresh is asked for


@respx.mock
def test_unknown_function_info_is_asked_again_after_the_ttl(monkeypatch):
    from bridge.nuclio import client as client_module

    route = respx.get(url__startswith=DASH).mock(return_value=httpx.Response(404))
    with NuclioClient() as c:
        assert c.function_info("pth-x") is None and c.function_info("pth-x") is None
        assert route.call_count == 1
        monkeypatch.setattr(client_module, "UNKNOWN_TTL", 0.0)
        assert c.function_info("pth-x") is None
        assert route.call_count == 2


def test_from_settings_takes_every_nuclio_field():
    settings = Settings(allow_unsigned=True, nuclio_invoke_method="dashboard",
                        nuclio_dashboard_url="http://nuclio-dashboard:8070", nuclio_namespace="ns",
                        nuclio_project="proj", nuclio_timeout=30,
                        nuclio_function_timeouts='{"pth-lama": 300}',
                        nuclio_concurrency=3, nuclio_function_concurrency='{"pth-lama": 1}',
                        nuclio_max_body_bytes=4096, nuclio_retries=7, nuclio_max_response_bytes=5000)
    with NuclioClient.from_settings(settings) as c:
        assert (c.invoke_method, c.dashboard_url, c.namespace, c.project) == (
            "dashboard", "http://nuclio-dashboard:8070", "ns", "proj")
        assert (c.timeout_for("pth-lama"), c.timeout_for("other"), c.concurrency) == (300, 30, 3)
        assert (c.concurrency_for("pth-lama"), c.max_body_bytes, c.retries) == (1, 4096, 7)
        assert c.max_response_bytes == 5000
        assert c.url_for("pth-lama") == "http://nuclio-dashboard:8070/api/function_invocations"


def test_bad_construction_values_are_refused():
    with pytest.raises(ValueError, match="invoke_method"):
        NuclioClient(invoke_method="grpc")
    with pytest.raises(ValueError, match="concurrency >= 1"):
        NuclioClient(concurrency=0)
    with pytest.raises(ValueError, match="function_concurrency values must be >= 1"):
        NuclioClient(function_concurrency={"x": 0})


@respx.mock
def test_invoke_over_the_client_budget_is_refused_without_a_request():
    with client(max_body_bytes=2048) as c, pytest.raises(FunctionFailed, match="NUCLIO_MAX_BODY_BYTES=2048"):
        c.invoke("pth-test", {"blob": "x" * 4096})


@respx.mock
def test_inpaint_output_of_another_size_is_brought_back_to_the_original():
    original = np.full((6, 8, 3), 200, np.uint8)
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:4] = 255
    padded = np.zeros((16, 16, 3), np.uint8)  # e.g. a model that pads to a multiple of 8 and forgets to crop
    answer = base64.b64encode(cv2.imencode(".png", padded)[1].tobytes()).decode()
    junk = base64.b64encode(b"junk").decode()
    respx.post(URL).mock(side_effect=[httpx.Response(200, json={"image": answer}),
                                      httpx.Response(200, json={"image": junk})])
    with client() as c:
        out = cv2.imdecode(np.frombuffer(c.inpaint("pth-test", cv2.imencode(".png", original)[1].tobytes(),
                                                    cv2.imencode(".png", mask)[1].tobytes()), np.uint8),
                           cv2.IMREAD_COLOR)
        with pytest.raises(FunctionFailed, match="the inpainted image cannot be decoded"):
            c.inpaint("pth-test", png(), png())
    assert out.shape == (6, 8, 3)
    assert (out[mask == 0] == 200).all() and (out[mask > 0] == 0).all()


@respx.mock
def test_ping_counts_a_busy_function_as_reachable():
    respx.get("http://nuclio-nuclio-busy:8080/").mock(side_effect=httpx.ReadTimeout("waiting for a worker"))
    respx.get("http://nuclio-nuclio-gone:8080/").mock(side_effect=httpx.ConnectError("Name or service"))
    respx.get("http://nuclio-nuclio-up:8080/").mock(return_value=httpx.Response(405))
    with NuclioClient() as c:
        assert c.ping("busy") and c.ping("up") and not c.ping("gone")


def _config(**trigger_attrs) -> dict:
    return {"metadata": {"name": "pth-test", "annotations": {"type": "detector", "spec": "[{bad"}},
            "spec": {"eventTimeout": "5m", "triggers": {"http": {"kind": "http", **trigger_attrs}}}}


@respx.mock
def test_diagnose_reports_every_mismatch():
    respx.get(f"{DASH}/api/functions/pth-test").mock(return_value=httpx.Response(200, json=_config(
        maxWorkers=1, attributes={"maxRequestBodySize": 4 * 1024 * 1024})))
    respx.get(URL).mock(side_effect=httpx.ConnectError("refused"))
    with client(function_concurrency={"pth-test": 2}) as c:
        problems = c.diagnose("pth-test")
        assert c.body_budget("pth-test") == 4 * 1024 * 1024
    assert len(problems) == 4, problems
    assert "not reachable at http://nuclio-nuclio-pth-test:8080/" in problems[0]
    assert "spec is not valid JSON" in problems[1]
    assert "client timeout 120 s is shorter than its eventTimeout 300 s" in problems[2]
    assert "NUCLIO_FUNCTION_CONCURRENCY 2 exceeds its maxWorkers 1" in problems[3]


@respx.mock
def test_diagnose_all_well_and_unknown_in_dashboard_mode():
    respx.get(URL).mock(return_value=httpx.Response(200))
    with client() as c:
        assert c.diagnose("pth-test") == []
    with client(invoke_method="dashboard") as c:
        assert c.diagnose("pth-test") == [
            "the Nuclio dashboard at http://nuclio:8070 cannot be reached or does not know 'pth-test': "
            "is it deployed in namespace 'nuclio'? name is case-sensitive"]


@respx.mock
def test_known_max_request_body_size_lowers_the_budget_before_any_413():
    respx.get(f"{DASH}/api/functions/pth-test").mock(return_value=httpx.Response(200, json=_config(
        maxWorkers=1, attributes={"maxRequestBodySize": 50_000})))
    route = respx.post(URL).mock(return_value=httpx.Response(200, json=[]))
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    big = cv2.imencode(".png", noise)[1].tobytes()
    assert len(big) > 300_000
    with client() as c:
        assert c.detect("pth-test", big) == []
    assert route.call_count == 1
    sent = route.calls[0].request.content
    assert len(sent) <= 50_000
    image = base64.b64decode(json.loads(sent)["image"])
    small = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[1] < 400 and abs(small.shape[1] / small.shape[0] - 4 / 3) < 0.02
