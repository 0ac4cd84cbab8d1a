"""Start-up errors: every bad configuration makes the real ``bridge`` command (a subprocess, in an empty
folder, with none of the caller's bridge variables) exit non-zero with one line saying what to fix —
never a traceback. Read-only commands run without WEBHOOK_SECRET; a generic DATABASE_URL is ignored."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.startup import StartupError, check_database_url, describe_settings_error, load_settings, one_line
from bridge.jobs.store import JobStore

SECRET = "startup-test-secret-0123456789"
OURS = ("WEBHOOK_SECRET", "BRIDGE_", "CVAT_", "NUCLIO_", "DATABASE_URL", "AUTO_ANN_TIMEOUT", "CACHE_DIR", "LOG_")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: connections are refused


def bridge(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    clean.update({"BRIDGE_DATA_DIR": str(tmp_path / "data"), "CVAT_URL": f"http://127.0.0.1:{closed_port()}",
                  "BRIDGE_PORT": str(closed_port()), "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    clean.update(env)
    clean = {k: v for k, v in clean.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=tmp_path, env=clean, text=True,
                          capture_output=True, timeout=timeout)


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # log lines (warnings) may come before it


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not LOG_RECORD.match(ln)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bridge: ")
    return lines[0]


PG_REFUSED = f"postgresql://bridge:hunter2@127.0.0.1:{closed_port()}/bridge"
BAD_DATABASES = [
    (PG_REFUSED, ["cannot open the job store", "PostgreSQL running", "***"]),
    ("mysql://bridge:hunter2@db.example/bridge", ["unsupported database 'mysql'", "postgresql://", "***"]),
    ("postgres://bridge:hunter2@db.example/bridge", ["write postgresql://", "***"]),
    ("postgresql+psycopg2://bridge@db.example/bridge", ["driver 'psycopg2'"]),
    ("just some words", ["is not a database URL"]),
]


@pytest.mark.parametrize("url,expected", BAD_DATABASES, ids=["refused", "mysql", "postgres-scheme", "driver", "junk"])
def test_bad_database_url_is_one_line_for_serve(tmp_path, url, expected):
    line = one_error_line(bridge(tmp_path, "serve", WEBHOOK_SECRET=SECRET, BRIDGE_DATABASE_URL=url))
    for text in expected:
        assert text in line, line
    assert "hunter2" not in line  # the password is never printed


@pytest.mark.parametrize("command", [["worker"], ["jobs", "list"], ["jobs", "show", "1"]])
def test_unreachable_database_for_worker_and_jobs(tmp_path, command):
    line = one_error_line(bridge(tmp_path, *command, WEBHOOK_SECRET=SECRET, BRIDGE_DATABASE_URL=PG_REFUSED))
    assert "cannot open the job store" in line and "Connection refused" in line


def test_sqlite_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = one_error_line(bridge(tmp_path, "jobs", "list", BRIDGE_DATA_DIR=str(blocker / "data")))
    assert "cannot create the job store" in line and "BRIDGE_DATA_DIR" in line


@pytest.mark.parametrize("env,expected", [
    ({"CVAT_URL": "cvat-server:8080"}, "CVAT_URL='cvat-server:8080': the CVAT URL needs an explicit http://"),
    ({"CVAT_URL": "http://cvat_server:8080"}, "underscores"),
    ({"BRIDGE_WORKERS": "two"}, "BRIDGE_WORKERS='two': Input should be a valid integer"),
    ({"WEBHOOK_SECRET": None}, "WEBHOOK_SECRET is not set"),
    ({"WEBHOOK_SECRET": "changeme"}, "placeholder"),
    ({"NUCLIO_FUNCTION_URL": "http://fn:8080"}, "must contain '{name}'"),
], ids=["cvat-no-scheme", "cvat-underscore", "workers", "no-secret", "placeholder-secret", "function-url"])
def test_bad_settings_are_one_line(tmp_path, env, expected):
    line = one_error_line(bridge(tmp_path, "serve", **{"WEBHOOK_SECRET": SECRET, **env}))
    assert line.startswith("bridge: configuration error: ")
    assert expected in line, line


@pytest.mark.parametrize("command", [["setup", "--dry-run"], ["report", "--task", "1"]])
def test_commands_that_log_in_to_cvat_need_credentials(tmp_path, command):
    line = one_error_line(bridge(tmp_path, *command, WEBHOOK_SECRET=SECRET))
    assert "no CVAT credentials" in line and "CVAT_ACCESS_TOKEN" in line
    half = one_error_line(bridge(tmp_path, *command, WEBHOOK_SECRET=SECRET, CVAT_USERNAME="bot"))
    assert "set CVAT_PASSWORD too" in half


def test_unreachable_cvat_for_report_is_one_line(tmp_path):
    proc = bridge(tmp_path, "report", "--task", "1", CVAT_USERNAME="bot", CVAT_PASSWORD="pw")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], proc.stderr


def test_read_only_commands_need_no_secret_and_ignore_a_generic_database_url(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'data' / 'bridge.db'}")
    store.enqueue(pipeline="detect", params={"model_name": "m"}, dedupe_key="k", flight_key="detect:job:7",
                  trigger={"kind": "job_in_progress", "resource": "job", "resource_id": 7, "job_id": 7}, max_attempts=3)
    store.close()
    generic = f"postgresql://someone:else@127.0.0.1:{closed_port()}/their_app"
    proc = bridge(tmp_path, "jobs", "list", DATABASE_URL=generic)
    assert proc.returncode == 0, proc.stderr
    assert "(1 of 1)" in proc.stdout and "detect" in proc.stdout
    assert "DATABASE_URL is set but ignored" in proc.stderr and "else" not in proc.stderr
    shown = bridge(tmp_path, "jobs", "show", "1")
    assert shown.returncode == 0 and '"pipeline": "detect"' in shown.stdout
    # serving webhooks still needs the secret
    assert "WEBHOOK_SECRET is not set" in one_error_line(bridge(tmp_path, "serve"))


def test_check_reports_the_database_in_one_line(tmp_path):
    proc = bridge(tmp_path, "check", WEBHOOK_SECRET=SECRET, BRIDGE_DATABASE_URL=PG_REFUSED)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    (db,) = [ln for ln in proc.stdout.splitlines() if "database" in ln]
    assert "FAILED: cannot open the job store" in db


# --- the functions themselves ------------------------------------------------------------------------------
def test_one_line_and_messages():
    assert one_line("a\n  b\tc\n") == "a b c"
    assert len(one_line("x" * 5000)) == 600
    assert str(StartupError("two\nlines")) == "two lines"
    with pytest.raises(StartupError, match="unsupported database 'oracle'"):
        check_database_url("oracle://u:p@h/db")
    check_database_url("sqlite:///data/bridge.db")
    check_database_url("postgresql+psycopg://u@h/db")


def test_load_settings_without_secret_ignores_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(OURS):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WEBHOOK_SECRET", "changeme")  # a placeholder: refused where webhooks are received
    with pytest.raises(StartupError, match="placeholder"):
        load_settings()
    settings = load_settings(needs_secret=False)
    assert settings.secret_bytes() is None


def test_describe_settings_error_hides_secret_values():
    from pydantic import BaseModel, Field, ValidationError

    class Model(BaseModel):
        api_token: int = Field(validation_alias="BRIDGE_API_TOKEN")

    with pytest.raises(ValidationError) as info:
        Model.model_validate({"BRIDGE_API_TOKEN": "s3cr3t-value"})
    text = describe_settings_error(info.value)
    assert text.startswith("BRIDGE_API_TOKEN: ") and "s3cr3t" not in text


def test_every_setting_and_route_parameter_is_documented():
    from bridge.config import Settings
    from bridge.pipelines.registry import ROUTES

    root = Path(__file__).resolve().parents[2]
    example = (root / ".env.example").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    names = {a for f in Settings.model_fields.values() if f.validation_alias for a in f.validation_alias.choices
             if a.isupper()}
    assert {"WEBHOOK_SECRET", "BRIDGE_POLL_SECONDS", "CVAT_TOKEN", "BRIDGE_CVAT_UI_URL"} <= names
    assert sorted(n for n in names if not re.search(rf"\b{n}\b", example)) == []
    params = {p for r in ROUTES for p in r.params_model.model_fields}
    assert sorted(p for p in params if f"`{p}`" not in readme) == []
    for text in ("GET /redoc", "?deep=false", "project_id=", "DATABASE_URL"):
        assert text in readme
