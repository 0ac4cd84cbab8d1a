"""Webhook delivery as CVAT's ``cvat_worker_webhooks`` does it: signed JSON POSTs, recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RESOURCES = ("task", "job", "issue", "comment")
REQUEST_EVENTS = tuple(
    f"completed:request[{op}]"
    for op in (
        "export:annotations",
        "export:dataset",
        "export:backup",
        "create:task",
        "merge:task",
        "merge:job",
        "calculate:quality",
    )
)
#: Events a project webhook may subscribe to (v2.73 ``event_type.py``), with their UI group.
PROJECT_EVENTS: dict[str, str] = {
    "update:project": "Project",
    "delete:project": "Project",
    **{f"{a}:{r}": r.capitalize() for r in RESOURCES for a in ("create", "update", "delete")},
    **{e: "Requests" for e in REQUEST_EVENTS},
}
PROJECT_EVENTS["completed:request[create:task]"] = "Task data creation"


@dataclass
class Webhook:
    """A stored webhook (the secret never leaves the double through the API)."""

    id: int
    project_id: int
    target_url: str
    events: list[str]
    secret: str
    owner_id: int
    created_date: str
    updated_date: str
    description: str = ""
    is_active: bool = True
    enable_ssl: bool = True
    content_type: str = "application/json"
    deliveries: list[dict] = field(default_factory=list)


def signature(secret: str, body: bytes) -> str:
    """``X-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Sender:
    """Sends deliveries in order from a background thread (``thread``) or inline (``sync``)."""

    def __init__(
        self,
        *,
        mode: str,
        version: str,
        record: Callable[[Webhook, str, bytes, int, str, int], None],
        shuffle: Callable[[], bool],
        duplicates: Callable[[], int],
    ):
        if mode not in ("thread", "sync"):
            raise ValueError(f"deliver must be 'thread' or 'sync', not {mode!r}")
        self.mode = mode
        self.user_agent = f"CVAT/{version} python-requests/2.33.1"
        self._record = record
        self._shuffle = shuffle
        self._duplicates = duplicates
        self._queue: queue.Queue[list[tuple[Webhook, str, dict]] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(
            timeout=httpx.Timeout(10.0, connect=3.0), follow_redirects=True, trust_env=False
        )
        self.rng = random.Random()

    def start(self) -> None:
        if self.mode == "thread" and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cvat-double-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=15)
            self._thread = None
        self._http.close()

    def submit(self, batch: list[tuple[Webhook, str, dict]]) -> None:
        """Queue the deliveries one action caused (a batch), in emission order unless shuffled."""
        if not batch:
            return
        batch = list(batch)
        if self._shuffle():
            self.rng.shuffle(batch)
        if self.mode == "sync":
            for item in batch:
                self._send_all(*item)
            return
        with self._cond:
            self._pending += 1
        self._queue.put(batch)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._pending} webhook batch(es) still queued after {timeout} s")
                self._cond.wait(left)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            try:
                for item in batch:
                    self._send_all(*item)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _send_all(self, hook: Webhook, event: str, payload: dict) -> None:
        body = json.dumps(payload).encode()
        for _ in range(max(1, self._duplicates())):
            self.send(hook, event, body)

    def send(self, hook: Webhook, event: str, body: bytes) -> tuple[int, str]:
        """POST one delivery; connection errors record 502, read timeouts 504 (as CVAT)."""
        headers = {
            "User-Agent": self.user_agent,
            "Accept-Encoding": "gzip",
            "Accept": "*/*",
            "Content-Type": "application/json",
        }
        if hook.secret:
            headers["X-Signature-256"] = signature(hook.secret, body)
        started = time.monotonic()
        try:
            resp = self._http.post(hook.target_url, content=body, headers=headers)
            status, text = resp.status_code, resp.text if len(resp.content) <= 2**20 else ""
        except httpx.TimeoutException as e:
            status, text = (502 if isinstance(e, httpx.ConnectTimeout) else 504), ""
        except httpx.HTTPError:
            status, text = 502, ""
        duration_ms = int((time.monotonic() - started) * 1000)
        self._record(hook, event, body, status, text, duration_ms)
        return status, text
