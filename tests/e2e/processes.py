"""The bridge as real processes (``bridge serve`` / ``bridge worker``) for tests that kill or freeze them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.harness import SECRET

REPO = Path(__file__).resolve().parents[2]


def bridge_env(tmp_path: Path, *, cvat_url: str, functions_url: str, database_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "CVAT_", "NUCLIO_"))}
    env.update({
        "WEBHOOK_SECRET": SECRET, "BRIDGE_DATABASE_URL": database_url, "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "CVAT_URL": cvat_url, "CVAT_USERNAME": "bridge-bot", "CVAT_PASSWORD": "bridge-pass",
        "NUCLIO_FUNCTION_URL": functions_url + "/{name}", "BRIDGE_POLL_SECONDS": "0.05",
        "BRIDGE_RETRY_BASE_SECONDS": "0.1", "BRIDGE_RETRY_MAX_SECONDS": "0.5", "BRIDGE_REPORT_ISSUES": "false",
        "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO",
    })
    env.update(extra)
    return env


class BridgeProcess:
    """One ``bridge`` command as a child process; its output goes to ``log``."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> BridgeProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child for its life
        out.write(f"--- start {' '.join(self.args)}\n".encode())
        out.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *self.args], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """``kill -9``: no cleanup, leases left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"bridge exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", params={"deep": "false"}, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # noqa: S110 - not up yet
            time.sleep(0.05)
        raise AssertionError(f"bridge not healthy after {timeout} s: {self.log.read_text()[-3000:]}")
