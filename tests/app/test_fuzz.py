"""Schemathesis fuzzing of every route from the app's own OpenAPI schema: never a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from bridge.app.factory import create_app
from bridge.app.settings import Settings

_DATA = Path(tempfile.mkdtemp(prefix="bridge-fuzz-"))
APP = create_app(
    # Unsigned, so fuzzed bodies reach parsing, transition rules and the job store (signatures: test_webhooks).
    Settings(_env_file=None, allow_unsigned=True, data_dir=_DATA, cvat_url="http://127.0.0.1:9",
             workers=0, nuclio_function_url="http://127.0.0.1:9/{name}", report_issues=False),
    workers=0,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_route_answers_5xx(case):
    if case.path == "/health":
        case.query = {**(case.query or {}), "deep": "false"}  # the deep check is covered elsewhere
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")
