"""Fuzzing: never a 5xx, on SQLite and on PostgreSQL (when BRIDGE_TEST_POSTGRES_URL is set).

Schemathesis drives every route from the app's own OpenAPI schema; Hypothesis sends signed CVAT-shaped
deliveries with ids of any size and type and JSON nested to any depth."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.app.deps import app_state
from bridge.app.factory import create_app
from bridge.config import Settings
from bridge.pipelines.registry import ROUTES
from tests.conftest import load_sample, signed

STORES = ["sqlite"] + (["postgresql"] if "BRIDGE_TEST_POSTGRES_URL" in os.environ else [])


class _Target:
    """The ASGI app under test, switched per store by the ``fuzz_target`` fixture (the schema is loaded once)."""

    def __init__(self) -> None:
        self.app = None

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


def _app(settings_factory, url: str):
    # Unsigned, so fuzzed bodies reach parsing, transition rules and the job store (signatures: test_webhooks).
    return create_app(settings_factory(webhook_secret=None, allow_unsigned=True, database_url=url,
                                       nuclio_function_url="http://127.0.0.1:9/{name}"), workers=0)


TARGET = _Target()
_SCHEMA_DIR = tempfile.mkdtemp(prefix="bridge-fuzz-")
TARGET.app = create_app(Settings(_env_file=None, allow_unsigned=True, data_dir=Path(_SCHEMA_DIR), workers=0,
                                 cvat_url="http://127.0.0.1:9"), workers=0)
schema = schemathesis.openapi.from_asgi("/openapi.json", TARGET)


@pytest.fixture(params=STORES)
def fuzz_target(request, make_settings, tmp_path):
    url = (f"sqlite:///{tmp_path / 'fuzz.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    previous, TARGET.app = TARGET.app, _app(make_settings, url)
    yield TARGET.app
    app_state(TARGET.app).store.close()
    TARGET.app = previous


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_answers_5xx(fuzz_target, case):
    if case.path == "/health":
        case.query = {**(case.query or {}), "deep": "false"}  # the deep check is covered elsewhere
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")


# --- CVAT-shaped deliveries with hostile ids and nesting ---------------------------------------------

ID_PATHS = [("job", "id"), ("job", "task_id"), ("job", "project_id"), ("task", "id"), ("task", "project_id"),
            (None, "webhook_id"), ("sender", "id")]

ids = st.one_of(
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4), st.none(), st.booleans(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def deliveries(draw) -> bytes:
    data = json.loads(load_sample(draw(st.sampled_from(["10-", "14-", "01-", "12-"])))["raw_body"])
    for parent, key in draw(st.lists(st.sampled_from(ID_PATHS), max_size=3, unique=True)):
        node = data if parent is None else data.get(parent)
        if isinstance(node, dict):
            node[key] = draw(ids)
    if draw(st.booleans()):
        data.setdefault("changes", {})["state"] = {"from": draw(json_values), "to": draw(json_values)}
    raw = json.dumps(data)
    depth = draw(st.sampled_from([0, 0, 31, 32, 33, 900, 5_000, 60_000]))
    if depth:
        raw = raw[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    return raw.encode()


def _url(spec) -> str:
    q = {"detect": "model_name=m", "crop_quadrat": "target_proj_id=2", "remove_grid": "target_proj_id=2"}
    return f"{spec.path}?{q.get(spec.pipeline, '')}"


@given(body=deliveries(), spec=st.sampled_from(ROUTES))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_ids_and_nesting_never_5xx(any_store_client, body, spec):
    signed_body, headers = signed(body)
    for url in (_url(spec), "/test-webhook?debug=true"):
        r = any_store_client.post(url, content=signed_body, headers=headers)
        assert r.status_code < 500, f"{url}: {r.status_code} {r.text[:300]}"
        if r.status_code == 202:
            job = any_store_client.get(f"/jobs/{r.json()['job_id']}")
            assert job.status_code == 200, job.text[:300]
            trigger = job.json()["trigger"]
            assert all(1 <= trigger[k] <= 2**31 - 1 for k in ("resource_id", "task_id") if trigger.get(k))
