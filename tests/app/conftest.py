"""App fixtures: the real app on SQLite and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bridge.app.deps import app_state
from bridge.app.factory import create_app

API_TOKEN = "api-token-for-tests"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def any_store_client(make_settings, store_url):
    """A TestClient that answers 500 instead of raising, so a test sees what CVAT would see."""
    app = create_app(make_settings(database_url=store_url), workers=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app_state(app).store.close()
