"""The whole product on loopback: the CVAT test double, the bridge app (uvicorn, real workers) and
Nuclio function handlers served over HTTP. CVAT sends signed webhooks to the bridge exactly as
configured by a user; tests act like annotators on the double and watch ``/jobs``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.app.factory import create_app
from bridge.config import Settings
from bridge.jobs.store import JobStore
from tests.doubles.cvat_double import Costs, CvatDouble
from tests.doubles.cvat_double.server import ServerThread
from tests.doubles.fault_proxy import FaultProxy
from tests.doubles.function_server import LoadedFunction, free_port, serve_in_thread

SECRET = "bridge-secret"
API_TOKEN = "e2e-api-token"  # retry/cancel over HTTP need BRIDGE_API_TOKEN; Stack.http sends it
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Stack:
    cvat: CvatDouble
    bridge_url: str
    functions_url: str
    settings: Settings
    store: JobStore
    proxy: FaultProxy
    http: httpx.Client = field(default_factory=lambda: httpx.Client(
        timeout=30, headers={"Authorization": f"Bearer {API_TOKEN}"}))

    def hook(self, project_id: int, route: str, events: list[str], **params: Any) -> int:
        """Add a project webhook pointing at a bridge route, as a user would in CVAT's UI."""
        query = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items())
        url = f"{self.bridge_url}{route}" + (f"?{query}" if query else "")
        return self.cvat.add_webhook(project_id, url, events, secret=SECRET)

    def jobs(self, **filters: Any) -> list[dict]:
        resp = self.http.get(f"{self.bridge_url}/jobs", params={"limit": 200, **filters})
        resp.raise_for_status()
        return resp.json()["items"]

    def job(self, job_id: int) -> dict:
        resp = self.http.get(f"{self.bridge_url}/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()

    def wait_for(self, check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        """Poll ``check`` until it returns something truthy (webhooks and workers are asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            self.cvat.wait_idle(timeout=10)
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; bridge jobs: {self.jobs()}")
            time.sleep(0.05)

    def settle(self, timeout: float = 60.0, *, expect: int | None = None) -> list[dict]:
        """Wait until every webhook is delivered and every bridge job is finished; returns the jobs."""
        def done() -> list[dict] | None:
            items = self.jobs()
            if expect is not None and len(items) < expect:
                return None
            if all(j["status"] in TERMINAL for j in items):
                # a finished job may have fired webhooks (new tasks, job states): check once more
                self.cvat.wait_idle(timeout=10)
                again = self.jobs()
                if len(again) == len(items) and all(j["status"] in TERMINAL for j in again):
                    return again
            return None

        return self.wait_for(done, timeout, "all bridge jobs to finish")


@contextlib.contextmanager
def running_stack(tmp_path: Path, functions: dict[str, LoadedFunction], *, workers: int = 2,
                  costs: Costs | None = None, function_workers: int = 2,
                  **settings_kw: Any) -> Iterator[Stack]:
    """Start the double, the function server (``<url>/<name>``) and the bridge wired together.

    The bridge reaches CVAT through a ``FaultProxy`` (``stack.proxy``) that relays everything until a
    test arms a fault on a request."""
    with CvatDouble(costs=costs) as cvat, serve_in_thread(functions, max_workers=function_workers) as fn_url, \
            FaultProxy(int(cvat.url.rsplit(":", 1)[1])) as proxy:
        base: dict[str, Any] = dict(
            webhook_secret=SECRET, data_dir=tmp_path / "data", cvat_url=proxy.url,
            cvat_username="bridge-bot", cvat_password="bridge-pass",
            nuclio_function_url=fn_url + "/{name}", nuclio_dashboard_url=f"http://127.0.0.1:{free_port()}",
            nuclio_concurrency=function_workers, workers=workers, poll_seconds=0.05,
            retry_base_seconds=0.05, retry_max_seconds=0.2, report_issues=True, api_token=API_TOKEN,
        )
        base.update(settings_kw)
        settings = Settings(_env_file=None, **base)
        store = JobStore(settings.resolved_database_url)
        app = create_app(settings, store=store)
        server = ServerThread(app, lifespan="on", name="bridge-http")  # lifespan starts the workers
        server.start(timeout=20)
        stack = Stack(cvat=cvat, bridge_url=f"http://127.0.0.1:{server.port}", functions_url=fn_url, proxy=proxy,
                      settings=settings, store=store)
        try:
            yield stack
        finally:
            stack.http.close()
            server.stop()
            store.close()


def annotate(stack: Stack, job_id: int, shapes: list) -> list[int]:
    """Draw ``shapes`` (``bridge.cvat.types.Shape``, source "manual") in a job, as an annotator would."""
    return annotate_with(stack.settings.cvat_url, job_id, shapes)


def annotate_with(cvat_url: str, job_id: int, shapes: list) -> list[int]:
    """``annotate`` against the CVAT (double) at ``cvat_url``."""
    from bridge.cvat.client import CvatClient

    with CvatClient(cvat_url, username="bridge-bot", password="bridge-pass") as client:
        return client.create_shapes(job_id, shapes, [], batch_size=500)
