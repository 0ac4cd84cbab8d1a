"""Shared fixtures: settings on a temp data dir, the real CVAT webhook samples, PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.app.security import sign
from bridge.config import Settings

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES_DIR = FIXTURES / "cvat-samples"
SECRET = "bridge-secret"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def load_sample(name: str) -> dict[str, Any]:
    """A real CVAT 2.73 delivery: ``raw_body`` (the exact signed bytes), ``headers``, ``body``."""
    path = next(SAMPLES_DIR.glob(f"{name}*.json"))
    return json.loads(path.read_text())


def all_samples() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.glob("*.json"))


def signed(body: bytes | str | dict, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return body, {"X-Signature-256": sign(secret.encode(), body), "Content-Type": "application/json"}


@pytest.fixture
def make_settings(tmp_path: Path):
    def _make(**kw: Any) -> Settings:
        base: dict[str, Any] = dict(webhook_secret=SECRET, data_dir=tmp_path / "data",
                                    cvat_url="http://127.0.0.1:9", workers=0, poll_seconds=0.05,
                                    retry_base_seconds=0.01, retry_max_seconds=0.05, report_issues=False)
        base.update(kw)
        return Settings(_env_file=None, **base)

    return _make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


def _pg_admin_url() -> str:
    return os.environ.get("BRIDGE_TEST_POSTGRES_URL", DEFAULT_PG)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test. Required (fails) when BRIDGE_TEST_POSTGRES_URL is set;
    skipped only when it is unset and no local server answers."""
    import psycopg

    admin = _pg_admin_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if "BRIDGE_TEST_POSTGRES_URL" in os.environ:
            raise
        pytest.skip(f"no PostgreSQL at {admin}: {exc}")
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
