"""``CvatDouble``: a stateful fake CVAT 2.73 server on loopback, plus helpers that act like a human."""

from __future__ import annotations

import copy
import json
from types import TracebackType
from typing import Any

from .media import read_frame
from .routes import Api, Costs
from .server import ServerThread, build_app
from .state import Actor, State
from .util import ApiError
from .webhooks import Sender, Webhook


class CvatDouble:
    """``with CvatDouble() as cvat:`` serves CVAT's REST API at ``cvat.url`` and sends webhooks.

    Seeding helpers (``create_project``, ``create_task``, ``set_job_state``, ...) act like a user in
    the UI and fire the webhooks real CVAT fires. ``deliveries`` and ``requests`` record traffic;
    ``shuffle_deliveries`` / ``duplicate_deliveries`` inject delivery faults."""

    def __init__(
        self,
        *,
        username: str = "bridge-bot",
        password: str = "bridge-pass",
        token: str = "test-token",
        costs: Costs | None = None,
        version: str = "2.73.0",
        deliver: str = "thread",
    ):
        self.costs = costs or Costs()
        self.deliveries: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.shuffle_deliveries: bool = False
        self.duplicate_deliveries: int = 1
        self.state = State(bot_username=username, version=version)
        self.sender = Sender(
            mode=deliver,
            version=version,
            record=self._record,
            shuffle=lambda: self.shuffle_deliveries,
            duplicates=lambda: self.duplicate_deliveries,
        )
        self.state.submit = self.sender.submit
        self.api = Api(
            self.state,
            username=username,
            password=password,
            token=token,
            costs=self.costs,
            sender=self.sender,
            request_log=self.requests,
        )
        self._server = ServerThread(build_app(self.api))
        self.url = f"http://127.0.0.1:{self._server.port}"
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> CvatDouble:
        if not self._started:
            self.sender.start()
            self._server.start()
            self._started = True
        return self

    def close(self) -> None:
        self._server.stop()
        self.sender.stop()
        self._started = False

    def __enter__(self) -> CvatDouble:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _record(
        self, hook: Webhook, event: str, body: bytes, status: int, response: str, duration_ms: int
    ) -> None:
        payload = json.loads(body)
        with self.state.lock:
            now = self.state.clock.now()
            hook.deliveries.append(
                {
                    "id": self.state.ids["delivery"].next(),
                    "webhook_id": hook.id,
                    "event": event,
                    "status_code": status,
                    "redelivery": False,
                    "attempt": 1,
                    "request_duration": duration_ms,
                    "created_date": now,
                    "updated_date": now,
                    "changed_fields": "",
                    "request": str(payload),
                    "response": response,
                    "_payload": payload,
                }
            )
            self.deliveries.append(
                {
                    "webhook_id": hook.id,
                    "event": event,
                    "url": hook.target_url,
                    "status_code": status,
                    "response": response,
                    "body": body,
                }
            )

    def _actor(self, username: str | None = None) -> Actor:
        user = self.state.admin if username is None else self.state.user_named(username)
        return Actor(user, self.url)

    def chunks_built(self, task_id: int) -> set[int]:
        """First frames of the chunks of ``task_id`` that CVAT has built (its media cache holds them)."""
        with self.api._cost_lock:
            return {key[1] for key, built in self.api._chunk_builds.items() if key[0] == task_id and built.is_set()}

    # -- seeding: what a human does in the UI ---------------------------------------------------
    def create_project(self, name: str, labels: list[dict]) -> int:
        """A project with CVAT label dicts (skeleton sublabels + svg, attributes); returns its id."""
        with self.state.action():
            return self.state.create_project(name, copy.deepcopy(labels), self._actor()).id

    def create_task(
        self,
        project_id: int,
        name: str,
        images: list[tuple[str, bytes]],
        *,
        segment_size: int | None = None,
        subset: str = "",
        chunk_size: int = 36,
    ) -> int:
        """A task whose frames are ``images`` in the given order (like ``sorting_method=predefined``)."""
        names = [n for n, _ in images]
        if len(set(names)) != len(names):
            raise ValueError("image names must be unique")
        frames = [read_frame(n, d) for n, d in images]
        actor = self._actor()
        with self.state.action():
            t = self.state.create_task(
                {"name": name, "project_id": project_id, "segment_size": segment_size, "subset": subset},
                actor,
            )
        with self.state.action():
            self.state.process_data(t, frames, chunk_size=chunk_size, image_quality=70, actor=actor)
        return t.id

    def add_webhook(
        self, project_id: int, target_url: str, events: list[str], secret: str | None = "bridge-secret"
    ) -> int:
        with self.state.action():
            hook = self.state.create_webhook(
                {
                    "type": "project",
                    "project_id": project_id,
                    "target_url": target_url,
                    "events": list(events),
                    "secret": secret or "",
                },
                self._actor(),
            )
            return hook.id

    def set_job_state(self, job_id: int, state: str, *, user: str = "annotator") -> None:
        with self.state.action():
            self.state.patch_job(self.state.job(job_id), {"state": state}, self._actor(user))

    def set_job_stage(
        self, job_id: int, stage: str, state: str | None = None, *, user: str = "annotator"
    ) -> None:
        """Extra helper: PATCH stage (and optionally state) as ``user``."""
        data: dict[str, Any] = {"stage": stage}
        if state is not None:
            data["state"] = state
        with self.state.action():
            self.state.patch_job(self.state.job(job_id), data, self._actor(user))

    def complete_task(self, task_id: int, *, user: str = "annotator") -> None:
        """Every job -> stage acceptance, state completed (one PATCH each); task status -> completed."""
        for jid in self.job_ids(task_id):
            with self.state.action():
                self.state.patch_job(
                    self.state.job(jid), {"stage": "acceptance", "state": "completed"}, self._actor(user)
                )

    # -- inspection -----------------------------------------------------------------------------
    def job_ids(self, task_id: int) -> list[int]:
        with self.state.lock:
            return sorted(self.state.task(task_id).job_ids)

    def job(self, job_id: int) -> dict:
        """Extra helper: the job as ``GET /api/jobs/{id}`` returns it."""
        with self.state.lock:
            return self.state.job_json(self.state.job(job_id), self.url)

    def label_id(self, project_id: int, name: str, sublabel: str | None = None) -> int:
        with self.state.lock:
            for lab in self.state.project_labels(project_id):
                if lab.name != name:
                    continue
                if sublabel is None:
                    return lab.id
                for sid in lab.sublabel_ids:
                    if self.state.labels[sid].name == sublabel:
                        return sid
                raise KeyError(f"label {name!r} of project {project_id} has no sublabel {sublabel!r}")
        raise KeyError(f"project {project_id} has no label {name!r}")

    def shapes(self, *, job_id: int | None = None, task_id: int | None = None) -> list[dict]:
        with self.state.lock:
            return self.state.read_annotations(self._jobs(job_id, task_id))["shapes"]

    def tags(self, *, job_id: int | None = None, task_id: int | None = None) -> list[dict]:
        with self.state.lock:
            return self.state.read_annotations(self._jobs(job_id, task_id))["tags"]

    def _jobs(self, job_id: int | None, task_id: int | None) -> list:
        if job_id is not None:
            return [self.state.job(job_id)]
        if task_id is not None:
            return [self.state.jobs[j] for j in self.state.task(task_id).job_ids]
        return list(self.state.jobs.values())

    def issues(self, *, job_id: int | None = None) -> list[dict]:
        with self.state.lock:
            return [
                {**self.state.issue_json(i, self.url), "message": i.message}
                for i in sorted(self.state.issues.values(), key=lambda i: i.id)
                if job_id is None or i.job_id == job_id
            ]

    def tasks(self, project_id: int | None = None) -> list[dict]:
        with self.state.lock:
            return [
                self.state.task_json(t, self.url)
                for t in sorted(self.state.tasks.values(), key=lambda t: t.id)
                if project_id is None or t.project_id == project_id
            ]

    def frame_names(self, task_id: int) -> list[str]:
        with self.state.lock:
            return [f.name for f in self.state.task(task_id).frames]

    def frame_bytes(self, task_id: int, frame: int) -> bytes:
        with self.state.lock:
            frames = self.state.task(task_id).frames
            if not 0 <= frame < len(frames):
                raise IndexError(f"task {task_id} has no frame {frame} (size {len(frames)})")
            return frames[frame].data

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued webhook delivery has been sent."""
        self.sender.wait_idle(timeout)


__all__ = ["ApiError", "Costs", "CvatDouble"]
