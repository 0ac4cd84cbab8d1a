"""The double's in-memory CVAT: entities, their REST JSON, state rules and the events they fire."""

from __future__ import annotations

import contextlib
import copy
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .annotations import LabelRec, Validator, split_request
from .media import Frame
from .util import ApiError, Clock, Counter, bad_request, not_found, validate_target_url
from .webhooks import PROJECT_EVENTS, Webhook

LABEL_TYPES = (
    "any",
    "cuboid",
    "ellipse",
    "mask",
    "points",
    "polygon",
    "polyline",
    "rectangle",
    "skeleton",
    "tag",
)
INPUT_TYPES = ("select", "radio", "checkbox", "number", "text")
STAGES = ("annotation", "validation", "acceptance")
STATES = ("new", "in progress", "completed", "rejected")
_PALETTE = ("#33ddff", "#fa3253", "#34d1b7", "#ff007c", "#ddff33", "#24b353", "#b83df5", "#66ff66")


@dataclass
class User:
    id: int
    username: str
    first_name: str = ""
    last_name: str = ""

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


@dataclass
class Project:
    id: int
    name: str
    owner_id: int
    created_date: str
    updated_date: str
    label_ids: list[int] = field(default_factory=list)


@dataclass
class Task:
    id: int
    name: str
    project_id: int
    owner_id: int
    created_date: str
    updated_date: str
    segment_size: int = 0
    subset: str = ""
    bug_tracker: str = ""
    assignee_id: int | None = None
    phase: str = "new"  # new -> data (data id set) -> ready (frames processed)
    data_id: int | None = None
    frames: list[Frame] = field(default_factory=list)
    chunk_size: int = 0
    image_quality: int = 70
    status: str = "annotation"
    job_ids: list[int] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    upload_started: bool = False


@dataclass
class Job:
    id: int
    task_id: int
    start: int
    stop: int
    created_date: str
    updated_date: str
    stage: str = "annotation"
    state: str = "new"
    assignee_id: int | None = None
    assignee_updated_date: str | None = None
    tags: list[dict] = field(default_factory=list)
    shapes: list[dict] = field(default_factory=list)
    tracks: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.stage == "annotation":
            return "annotation"
        if self.stage == "acceptance" and self.state == "completed":
            return "completed"
        return "validation"


@dataclass
class Issue:
    id: int
    job_id: int
    frame: int
    position: list[float]
    owner_id: int
    message: str
    created_date: str
    updated_date: str
    resolved: bool = False


@dataclass
class Actor:
    """Who causes an action: a user over HTTP (``http``) or CVAT's RQ worker (``worker``)."""

    user: User
    base: str  # URL prefix of the request that caused it ("" inside the worker: relative URLs)
    kind: str = "http"

    def sender(self) -> dict:
        u = self.user
        if self.kind == "worker":
            return {"id": u.id, "username": u.username, "email": u.email}
        return {
            "url": f"{self.base}/api/users/{u.id}",
            "id": u.id,
            "username": u.username,
            "first_name": u.first_name,
            "last_name": u.last_name,
        }


def _diff(old: dict, new: dict) -> tuple[dict, dict]:
    """``before_update`` and ``changes`` (updated_date first) of two attname snapshots."""
    keys = ["updated_date"] + [k for k in new if k != "updated_date"]
    before, changes = {}, {}
    for k in keys:
        if k in old and old[k] != new.get(k):
            before[k] = old[k]
            changes[k] = {"from": old[k], "to": new.get(k)}
    return before, changes


class State:
    """All stored objects plus the rules that change them. Callers hold ``action()`` while mutating."""

    def __init__(self, *, bot_username: str, version: str):
        self.version = version
        self.lock = threading.RLock()
        self.clock = Clock()
        self.ids = {
            k: Counter(s)
            for k, s in (
                ("project", 1),
                ("task", 1),
                ("job", 11),
                ("label", 1),
                ("attr", 1),
                ("shape", 1),
                ("issue", 1),
                ("webhook", 1),
                ("delivery", 1),
                ("data", 1),
                ("user", 1),
            )
        }
        self.users: dict[int, User] = {}
        self.admin = self.user_named("admin")
        self.bot = self.user_named(bot_username)
        self.projects: dict[int, Project] = {}
        self.labels: dict[int, LabelRec] = {}
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self.issues: dict[int, Issue] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.requests: dict[str, dict] = {}
        self.chunks_seen: set[tuple] = set()
        self._batch: list[tuple[Webhook, str, dict]] | None = None
        self.submit: Callable[[list[tuple[Webhook, str, dict]]], None] = lambda batch: None

    # -- infrastructure -------------------------------------------------------------------------
    @contextlib.contextmanager
    def action(self) -> Iterator[list[tuple[Webhook, str, dict]]]:
        """Hold the lock while mutating; the outermost action hands its deliveries to ``submit``
        after releasing the lock (nothing is sent when the action fails)."""
        with self.lock:
            outer = self._batch is None
            if outer:
                self._batch = []
            batch = self._batch
            try:
                yield batch
            finally:
                if outer:
                    self._batch = None
        if outer and batch:
            self.submit(batch)

    def user_named(self, username: str) -> User:
        with self.lock:
            for u in self.users.values():
                if u.username == username:
                    return u
            u = User(id=self.ids["user"].next(), username=username)
            self.users[u.id] = u
            return u

    def emit(
        self,
        project_id: int | None,
        event: str,
        res_key: str,
        res: dict,
        actor: Actor | None,
        before: dict | None = None,
        changes: dict | None = None,
    ) -> None:
        assert self._batch is not None, "emit() outside action()"
        for hook in self.webhooks.values():
            if not hook.is_active or hook.project_id != project_id or event not in hook.events:
                continue
            if res_key == "request":
                payload = {"event": event, "request": copy.deepcopy(res), "webhook_id": hook.id}
            else:
                payload = {"event": event, "webhook_id": hook.id, res_key: copy.deepcopy(res)}
                if actor is not None:
                    payload["sender"] = actor.sender()
                if event.startswith("update:"):
                    payload["before_update"] = copy.deepcopy(before or {})
                    payload["changes"] = copy.deepcopy(changes or {})
            self._batch.append((hook, event, payload))

    # -- lookups --------------------------------------------------------------------------------
    def project(self, pid: int) -> Project:
        if pid not in self.projects:
            raise not_found()
        return self.projects[pid]

    def task(self, tid: int) -> Task:
        if tid not in self.tasks:
            raise not_found()
        return self.tasks[tid]

    def job(self, jid: int) -> Job:
        if jid not in self.jobs:
            raise not_found()
        return self.jobs[jid]

    def webhook(self, wid: int) -> Webhook:
        if wid not in self.webhooks:
            raise not_found()
        return self.webhooks[wid]

    def label(self, lid: int) -> LabelRec:
        if lid not in self.labels:
            raise not_found()
        return self.labels[lid]

    # -- serializers (REST JSON, CVAT 2.73 field order) -----------------------------------------
    def basic_user(self, uid: int | None, base: str) -> dict | None:
        if uid is None:
            return None
        u = self.users[uid]
        return {
            "url": f"{base}/api/users/{u.id}",
            "id": u.id,
            "username": u.username,
            "first_name": u.first_name,
            "last_name": u.last_name,
        }

    def user_json(self, u: User, base: str) -> dict:
        return {
            "url": f"{base}/api/users/{u.id}",
            "id": u.id,
            "username": u.username,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "email": u.email,
            "groups": ["admin"] if u.id == self.admin.id else ["user"],
            "is_staff": u.id == self.admin.id,
            "is_superuser": u.id == self.admin.id,
            "is_active": True,
            "last_login": None,
            "date_joined": "2026-01-01T00:00:00.000000Z",
            "has_analytics_access": False,
        }

    def project_json(self, p: Project, base: str) -> dict:
        tasks = [t for t in self.tasks.values() if t.project_id == p.id]
        return {
            "url": f"{base}/api/projects/{p.id}",
            "id": p.id,
            "name": p.name,
            "owner": self.basic_user(p.owner_id, base),
            "assignee": None,
            "guide_id": None,
            "bug_tracker": "",
            "task_subsets": sorted({t.subset for t in tasks if t.subset}),
            "created_date": p.created_date,
            "updated_date": p.updated_date,
            "status": "annotation",
            "dimension": "2d" if any(t.phase == "ready" for t in tasks) else None,
            "organization": None,
            "target_storage": None,
            "source_storage": None,
            "tasks": {"count": len(tasks), "url": f"{base}/api/tasks?project_id={p.id}"},
            "labels": {"url": f"{base}/api/labels?project_id={p.id}"},
            "assignee_updated_date": None,
        }

    @staticmethod
    def _attr_json(a: dict) -> dict:
        return {
            "id": a["id"],
            "name": a["name"],
            "mutable": a["mutable"],
            "input_type": a["input_type"],
            "default_value": a["default_value"],
            "values": list(a["values"]),
        }

    def label_json(self, lab: LabelRec) -> dict:
        out: dict[str, Any] = {
            "id": lab.id,
            "name": lab.name,
            "color": lab.color,
            "attributes": [self._attr_json(a) for a in lab.attributes],
            "type": lab.type,
        }
        if lab.parent_id is not None:
            out.update(has_parent=True, parent_id=lab.parent_id, project_id=lab.project_id, sublabels=[])
            return out
        if lab.type == "skeleton":
            out["svg"] = lab.svg
        out["sublabels"] = [
            {
                "id": s.id,
                "name": s.name,
                "color": s.color,
                "attributes": [self._attr_json(a) for a in s.attributes],
                "type": s.type,
                "has_parent": True,
            }
            for s in (self.labels[i] for i in lab.sublabel_ids)
        ]
        out.update(project_id=lab.project_id, parent_id=None, has_parent=False)
        return out

    def task_json(self, t: Task, base: str, *, worker: bool = False) -> dict:
        jobs = [self.jobs[j] for j in t.job_ids]
        p = self.projects[t.project_id]
        out: dict[str, Any] = {
            "url": f"{base}/api/tasks/{t.id}",
            "id": t.id,
            "name": t.name,
            "project_id": t.project_id,
            "project_name": None if worker else p.name,
            "owner": self.basic_user(t.owner_id, base),
            "assignee": self.basic_user(t.assignee_id, base),
            "bug_tracker": t.bug_tracker,
            "created_date": t.created_date,
            "updated_date": t.updated_date,
            "overlap": 0 if t.phase == "ready" else None,
            "segment_size": t.segment_size,
            "status": t.status,
        }
        if t.phase == "ready":
            out.update(
                data_chunk_size=t.chunk_size,
                data_original_chunk_type="imageset",
                data_compressed_chunk_type="imageset",
            )
        if t.phase != "new":
            out["data_cloud_storage_id"] = None
        out["guide_id"] = None
        if t.phase != "new":
            out["size"] = len(t.frames) if t.phase == "ready" else 0
        if t.phase == "ready":
            out["image_quality"] = t.image_quality
        ready = t.phase == "ready"
        out.update(
            {
                "data": t.data_id,
                "dimension": "2d" if ready else "",
                "mode": "annotation" if ready else "",
                "media_type": "image" if ready else "",
                "subset": t.subset,
                "organization_id": None,
                "organization": None,
                "target_storage": None,
                "source_storage": None,
                "jobs": {
                    "count": len(jobs),
                    "completed": sum(j.status == "completed" for j in jobs),
                    "validation": sum(j.status == "validation" for j in jobs),
                    "url": f"{base}/api/jobs?task_id={t.id}",
                },
                "labels": {"url": f"{base}/api/labels?task_id={t.id}"},
                "assignee_updated_date": None,
                "validation_mode": None,
                "consensus_enabled": False,
            }
        )
        return out

    def job_json(self, j: Job, base: str, *, worker: bool = False, fresh: bool = False) -> dict:
        """``fresh``: the snapshot CVAT's import worker sends in ``create:job`` (media fields empty)."""
        t = self.tasks[j.task_id]
        p = self.projects[t.project_id]
        media = not fresh
        return {
            "url": f"{base}/api/jobs/{j.id}",
            "id": j.id,
            "task_id": t.id,
            "task_name": None if worker else t.name,
            "project_id": p.id,
            "project_name": None if worker else p.name,
            "assignee": self.basic_user(j.assignee_id, base),
            "guide_id": None,
            "dimension": "2d" if media else "",
            "mode": "annotation" if media else "",
            "media_type": "image" if media else "",
            "bug_tracker": "",
            "status": j.status,
            "stage": j.stage,
            "state": j.state,
            "frame_count": j.stop - j.start + 1,
            "start_frame": j.start,
            "stop_frame": j.stop,
            "data_chunk_size": t.chunk_size if media else None,
            "data_compressed_chunk_type": "imageset" if media else "",
            "data_original_chunk_type": "imageset" if media else "",
            "created_date": j.created_date,
            "updated_date": j.updated_date,
            "issues": None
            if worker
            else {
                "url": f"{base}/api/issues?job_id={j.id}",
                "count": sum(i.job_id == j.id for i in self.issues.values()),
            },
            "labels": {"url": f"{base}/api/labels?job_id={j.id}"},
            "type": "annotation",
            "organization": None,
            "target_storage": None,
            "source_storage": None,
            "assignee_updated_date": j.assignee_updated_date,
            "parent_job_id": None,
            "replicas_count": 0,
            "consensus_replicas": 0,
        }

    def webhook_json(self, h: Webhook, base: str, *, for_ping: bool = False) -> dict:
        out = {
            "id": h.id,
            "url": f"{base}/api/webhooks/{h.id}",
            "target_url": h.target_url,
            "description": h.description,
            "type": "project",
            "content_type": h.content_type,
            "is_active": h.is_active,
            "enable_ssl": h.enable_ssl,
            "created_date": h.created_date,
            "updated_date": h.updated_date,
            "owner": self.basic_user(h.owner_id, base),
            "project_id": h.project_id,
            "organization": None,
            "events": sorted(h.events),
        }
        if h.deliveries and not for_ping:
            out["last_status"] = h.deliveries[-1]["status_code"]
            out["last_delivery_date"] = h.deliveries[-1]["updated_date"]
        return out

    def issue_json(self, i: Issue, base: str) -> dict:
        return {
            "id": i.id,
            "frame": i.frame,
            "position": list(i.position),
            "job": i.job_id,
            "owner": self.basic_user(i.owner_id, base),
            "assignee": None,
            "created_date": i.created_date,
            "updated_date": i.updated_date,
            "resolved": i.resolved,
            "comments": {"count": 1, "url": f"{base}/api/comments?issue_id={i.id}"},
        }

    def meta_json(self, t: Task, start: int, stop: int) -> dict:
        if t.phase != "ready":
            raise ApiError(400, "The task has no data")
        return {
            "chunks_updated_date": t.updated_date,
            "chunk_size": t.chunk_size,
            "size": stop - start + 1,
            "image_quality": t.image_quality,
            "start_frame": start,
            "stop_frame": stop,
            "frame_filter": "",
            "frames": [
                {
                    "width": f.width,
                    "height": f.height,
                    "name": f.name,
                    "related_files": 0,
                    "has_related_context": False,
                }
                for f in t.frames[start : stop + 1]
            ],
            "deleted_frames": [],
            "included_frames": None,
            "chapters": None,
            "storage": "local",
            "cloud_storage_id": None,
        }

    # -- projects and labels --------------------------------------------------------------------
    def _attributes(self, raw: Any, where: str) -> list[dict]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise bad_request(f"{where}: attributes must be a list", "labels")
        out, names = [], set()
        for a in raw:
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not a["name"]:
                raise bad_request(f"{where}: every attribute needs a name", "labels")
            if a["name"] in names:
                raise bad_request(f"{where}: attribute {a['name']!r} appears twice", "labels")
            names.add(a["name"])
            kind = a.get("input_type")
            values = a.get("values", [])
            if kind not in INPUT_TYPES:
                raise bad_request(f"{where}: input_type {kind!r} is not one of {INPUT_TYPES}", "labels")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad_request(f"{where}: attribute values must be a list of strings", "labels")
            if kind == "number":
                try:
                    lo, hi, step = (float(v) for v in values)
                except ValueError as e:
                    raise bad_request(
                        f"{where}: number attribute {a['name']!r} needs values "
                        "[min, max, step] as numeric strings",
                        "labels",
                    ) from e
                if lo > hi or step <= 0:
                    raise bad_request(f"{where}: number attribute {a['name']!r} has an empty range", "labels")
            if kind in ("select", "radio") and not values:
                raise bad_request(f"{where}: {kind} attribute {a['name']!r} needs values", "labels")
            default = a.get("default_value") or (values[0] if values else "")
            out.append(
                {
                    "id": self.ids["attr"].next(),
                    "name": a["name"],
                    "mutable": bool(a.get("mutable", False)),
                    "input_type": kind,
                    "default_value": default,
                    "values": list(values),
                }
            )
        return out

    def _make_label(self, raw: Any, project_id: int, parent_id: int | None, n: int) -> LabelRec:
        where = f"label {raw.get('name')!r}" if isinstance(raw, dict) else "label"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise bad_request("every label needs a non-empty name", "labels")
        ltype = raw.get("type", "any")
        if ltype not in LABEL_TYPES:
            raise bad_request(f"{where}: type {ltype!r} is not one of {LABEL_TYPES}", "labels")
        return LabelRec(
            id=self.ids["label"].next(),
            name=raw["name"],
            color=raw.get("color") or _PALETTE[n % 8],
            type=ltype,
            attributes=self._attributes(raw.get("attributes"), where),
            project_id=project_id,
            parent_id=parent_id,
        )

    def create_project(self, name: Any, labels: Any, actor: Actor) -> Project:
        if not isinstance(name, str) or not name.strip():
            raise bad_request("This field may not be blank.", "name")
        if labels is None:
            labels = []
        if not isinstance(labels, list):
            raise bad_request("Expected a list of labels", "labels")
        names = [lab.get("name") for lab in labels if isinstance(lab, dict)]
        if len(set(names)) != len(names):
            raise bad_request("All label names must be unique", "labels")
        now = self.clock.now()
        p = Project(
            id=self.ids["project"].next(),
            name=name,
            owner_id=actor.user.id,
            created_date=now,
            updated_date=now,
        )
        new = self._new_labels(p, labels, start=0)
        self.projects[p.id] = p
        for lab in new:
            self.labels[lab.id] = lab
        return p

    def _new_labels(self, p: Project, labels: list, *, start: int) -> list[LabelRec]:
        """Build the records of new top-level ``labels`` (and skeleton sublabels) of project ``p``."""
        new: list[LabelRec] = []
        for n, raw in enumerate(labels, start):
            lab = self._make_label(raw, p.id, None, n)
            new.append(lab)
            subs = raw.get("sublabels") or []
            if lab.type == "skeleton":
                if not subs or not isinstance(subs, list):
                    raise bad_request(f"skeleton label {lab.name!r} needs sublabels", "labels")
                if not isinstance(raw.get("svg"), str):
                    raise bad_request(f"skeleton label {lab.name!r} needs an svg", "labels")
                sub_names = [s.get("name") for s in subs if isinstance(s, dict)]
                if len(set(sub_names)) != len(subs):
                    raise bad_request(f"sublabel names of {lab.name!r} must be unique", "labels")
                svg = raw["svg"]
                for m, sraw in enumerate(subs):
                    sub = self._make_label(sraw, p.id, lab.id, m)
                    new.append(sub)
                    lab.sublabel_ids.append(sub.id)
                    # CVAT rewrites only literal data-label-name="<name>" (escaped SVG stays verbatim)
                    svg = svg.replace(f'data-label-name="{sub.name}"', f'data-label-id="{sub.id}"')
                lab.svg = svg
            elif subs:
                raise bad_request(f"label {lab.name!r}: only skeleton labels may have sublabels", "labels")
            p.label_ids.append(lab.id)
        return new

    def patch_project(self, p: Project, data: dict, actor: Actor) -> Project:
        """``PATCH /api/projects/{id}``: rename, add labels (no ``id``), delete (``id`` + ``deleted``)."""
        if "name" in data:
            if not isinstance(data["name"], str) or not data["name"].strip():
                raise bad_request("This field may not be blank.", "name")
            p.name = data["name"]
        labels = data.get("labels") or []
        if not isinstance(labels, list) or not all(isinstance(lab, dict) for lab in labels):
            raise bad_request("Expected a list of labels", "labels")
        for raw in labels:
            if raw.get("id") is not None:
                if raw["id"] not in p.label_ids:
                    raise bad_request(f"label {raw['id']} is not a label of project {p.id}", "labels")
                if raw.get("deleted"):
                    p.label_ids.remove(raw["id"])
        existing = {self.labels[i].name for i in p.label_ids}
        added = [raw for raw in labels if raw.get("id") is None]
        clash = [raw.get("name") for raw in added if raw.get("name") in existing]
        if clash:
            raise bad_request(f"label names already exist in the project: {clash}", "labels")
        new = self._new_labels(p, added, start=len(p.label_ids))
        for lab in new:
            self.labels[lab.id] = lab
        p.updated_date = self.clock.now()
        return p

    def project_labels(self, pid: int) -> list[LabelRec]:
        return [self.labels[i] for i in self.project(pid).label_ids]

    # -- tasks, data, jobs ----------------------------------------------------------------------
    def create_task(self, spec: dict, actor: Actor) -> Task:
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("This field may not be blank.", "name")
        pid = spec.get("project_id")
        if pid is None:
            raise bad_request("The double only supports tasks inside a project", "project_id")
        if not isinstance(pid, int) or pid not in self.projects:
            raise bad_request(f'Invalid pk "{pid}" - object does not exist.', "project_id")
        if spec.get("labels"):
            raise bad_request("Tasks inside a project use the project's labels", "labels")
        seg = spec.get("segment_size") or 0
        if not isinstance(seg, int) or seg < 0:
            raise bad_request("Ensure this value is greater than or equal to 0.", "segment_size")
        subset = spec.get("subset") or ""
        now = self.clock.now()
        t = Task(
            id=self.ids["task"].next(),
            name=name,
            project_id=pid,
            owner_id=actor.user.id,
            created_date=now,
            updated_date=now,
            segment_size=seg,
            subset=subset,
            bug_tracker=spec.get("bug_tracker") or "",
        )
        self.tasks[t.id] = t
        self.emit(pid, "create:task", "task", self.task_json(t, actor.base), actor)
        return t

    def _touch_task(
        self,
        t: Task,
        actor: Actor,
        fields: dict | None = None,
        *,
        worker: bool = False,
        extra_before: dict | None = None,
        extra_after: dict | None = None,
    ) -> None:
        """Save the task (``update_fields``) and emit ``update:task`` with the changed attnames."""
        fields = fields or {}
        old = {"updated_date": t.updated_date, **{k: getattr(t, k) for k in fields}, **(extra_before or {})}
        for k, v in fields.items():
            setattr(t, k, v)
        t.updated_date = self.clock.now()
        new = {"updated_date": t.updated_date, **{k: getattr(t, k) for k in fields}, **(extra_after or {})}
        before, changes = _diff(old, new)
        self.emit(
            t.project_id,
            "update:task",
            "task",
            self.task_json(t, actor.base, worker=worker),
            actor,
            before,
            changes,
        )

    def process_data(
        self, t: Task, frames: list[Frame], *, chunk_size: int, image_quality: int, actor: Actor
    ) -> dict:
        """Everything CVAT does from ``Upload-Finish`` to ``completed:request[create:task]``."""
        if not frames:
            raise bad_request("No media data found", "client_files")
        worker = Actor(actor.user, "", "worker")
        rq_id = f"action=create&target=task&target_id={t.id}"
        created = self.clock.now()
        t.phase = "data"
        self._touch_task(t, actor, {"data_id": self.ids["data"].next()}, extra_before={"data_id": None})
        t.frames = frames
        t.chunk_size = chunk_size
        t.image_quality = image_quality
        if not t.segment_size:
            t.segment_size = len(frames)
        started = self.clock.now()
        # the import worker saves overlap/dimension/mode/media_type, then creates the jobs
        t.phase = "ready"
        self._touch_task(
            t,
            worker,
            worker=True,
            extra_before={"overlap": None, "dimension": "", "mode": "", "media_type": ""},
            extra_after={"overlap": 0, "dimension": "2d", "mode": "annotation", "media_type": "image"},
        )
        for start in range(0, len(frames), t.segment_size):
            now = self.clock.now()
            j = Job(
                id=self.ids["job"].next(),
                task_id=t.id,
                start=start,
                stop=min(start + t.segment_size, len(frames)) - 1,
                created_date=now,
                updated_date=now,
            )
            self.jobs[j.id] = j
            t.job_ids.append(j.id)
            self.emit(
                t.project_id, "create:job", "job", self.job_json(j, "", worker=True, fresh=True), worker
            )
        self._touch_task(t, worker, worker=True)
        finished = self.clock.now()
        expiry = datetime.strptime(finished, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(minutes=8, seconds=20)
        request = {
            "status": "finished",
            "message": "",
            "id": rq_id,
            "operation": {
                "type": "create:task",
                "target": "task",
                "project_id": t.project_id,
                "task_id": t.id,
                "job_id": None,
                "org_id": None,
                "format": None,
                "lightweight": None,
            },
            "progress": 0.0,
            "created_date": created,
            "started_date": started,
            "finished_date": finished,
            "expiry_date": expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "owner": {"id": actor.user.id, "username": actor.user.username},
            "result_url": None,
            "result_id": None,
        }
        self.requests[rq_id] = request
        self.emit(t.project_id, "completed:request[create:task]", "request", request, None)
        return request

    def patch_job(self, j: Job, data: Any, actor: Actor) -> None:
        """``PATCH /api/jobs/{id}``: stage/state/assignee, derived status, task status, events."""
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        unknown = set(data) - {"stage", "state", "assignee"}
        if unknown:
            raise bad_request(f"Fields {sorted(unknown)} are read-only or unknown", "non_field_errors")
        stage, state = data.get("stage", j.stage), data.get("state")
        if stage not in STAGES:
            raise bad_request(f'"{stage}" is not a valid choice.', "stage")
        if state is not None and state not in STATES:
            raise bad_request(f'"{state}" is not a valid choice.', "state")
        if state is None:  # changing the stage without a state resets the state (JobWriteSerializer)
            state = "new" if stage != j.stage else j.state
        old = {
            "updated_date": j.updated_date,
            "status": j.status,
            "stage": j.stage,
            "state": j.state,
            "assignee_id": j.assignee_id,
            "assignee_updated_date": j.assignee_updated_date,
        }
        if "assignee" in data:
            a = data["assignee"]
            if a is not None and a not in self.users:
                raise bad_request(f'Invalid pk "{a}" - object does not exist.', "assignee")
            if a != j.assignee_id:
                j.assignee_id = a
                j.assignee_updated_date = self.clock.now()
        j.stage, j.state = stage, state
        j.updated_date = self.clock.now()
        new = {
            "updated_date": j.updated_date,
            "status": j.status,
            "stage": j.stage,
            "state": j.state,
            "assignee_id": j.assignee_id,
            "assignee_updated_date": j.assignee_updated_date,
        }
        before, changes = _diff(old, new)
        t = self.tasks[j.task_id]
        self.emit(t.project_id, "update:job", "job", self.job_json(j, actor.base), actor, before, changes)
        self._task_status(t, actor)

    def _task_status(self, t: Task, actor: Actor) -> None:
        statuses = [self.jobs[i].status for i in t.job_ids]
        status = (
            "annotation"
            if "annotation" in statuses
            else "validation"
            if "validation" in statuses
            else "completed"
        )
        self._touch_task(t, actor, {"status": status})

    def patch_task(self, t: Task, data: Any, actor: Actor) -> None:
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        allowed = {"name", "subset", "bug_tracker", "assignee_id"}
        unknown = set(data) - allowed
        if unknown:
            raise bad_request(f"Fields {sorted(unknown)} cannot be changed in the double", "non_field_errors")
        if "name" in data and (not isinstance(data["name"], str) or not data["name"].strip()):
            raise bad_request("This field may not be blank.", "name")
        if (
            "assignee_id" in data
            and data["assignee_id"] is not None
            and data["assignee_id"] not in self.users
        ):
            raise bad_request(f'Invalid pk "{data["assignee_id"]}" - object does not exist.', "assignee_id")
        self._touch_task(t, actor, data)

    def delete_task(self, t: Task, actor: Actor) -> None:
        for jid in t.job_ids:
            self.emit(t.project_id, "delete:job", "job", self.job_json(self.jobs[jid], actor.base), actor)
        self.emit(t.project_id, "delete:task", "task", self.task_json(t, actor.base), actor)
        for jid in t.job_ids:
            del self.jobs[jid]
        for iid in [i.id for i in self.issues.values() if i.job_id in t.job_ids]:
            del self.issues[iid]
        del self.tasks[t.id]

    # -- annotations ----------------------------------------------------------------------------
    def _validator(self, t: Task, frames: tuple[int, int]) -> Validator:
        p = self.projects[t.project_id]
        return Validator(self.labels, set(p.label_ids), frames, self.ids["shape"].next)

    def _touch_after_write(self, jobs: list[Job], actor: Actor) -> None:
        """``JobAnnotation._set_updated_date``: touch job(s), task and project (updated_date only)."""
        t = self.tasks[jobs[0].task_id]
        p = self.projects[t.project_id]
        for j in jobs:
            old = j.updated_date
            j.updated_date = self.clock.now()
            self.emit(
                p.id,
                "update:job",
                "job",
                self.job_json(j, actor.base),
                actor,
                {"updated_date": old},
                {"updated_date": {"from": old, "to": j.updated_date}},
            )
        self._touch_task(t, actor)
        old = p.updated_date
        p.updated_date = self.clock.now()
        self.emit(
            p.id,
            "update:project",
            "project",
            self.project_json(p, actor.base),
            actor,
            {"updated_date": old},
            {"updated_date": {"from": old, "to": p.updated_date}},
        )

    def write_annotations(
        self, jobs: list[Job], method: str, action: str | None, data: Any, actor: Actor
    ) -> dict:
        """PUT (replace), PATCH create/update/delete, or DELETE on one job or a whole task."""
        t = self.tasks[jobs[0].task_id]
        span = (min(j.start for j in jobs), max(j.stop for j in jobs))
        if method == "DELETE":
            removed = {"version": 0, "tags": [], "shapes": [], "tracks": [], "intervals": []}
            for j in jobs:
                removed["tags"] += j.tags
                removed["shapes"] += j.shapes
                removed["tracks"] += j.tracks
                j.tags, j.shapes, j.tracks = [], [], []
            self._touch_after_write(jobs, actor)
            return removed
        tags, shapes, tracks = split_request(data)
        v = self._validator(t, span)
        if method == "PATCH" and action not in ("create", "update", "delete"):
            raise bad_request(f"Please specify a correct 'action' for the request, not {action!r}")
        owner = {}  # object kind -> id -> job
        for j in jobs:
            for kind in ("tags", "shapes", "tracks"):
                for obj in getattr(j, kind):
                    owner.setdefault(kind, {})[obj["id"]] = j
        if method == "PATCH" and action == "delete":
            out = {"version": 0, "tags": [], "shapes": [], "tracks": [], "intervals": []}
            for kind, objs in (("tags", tags), ("shapes", shapes), ("tracks", tracks)):
                for obj in objs:
                    oid = obj.get("id") if isinstance(obj, dict) else None
                    j = owner.get(kind, {}).get(oid)
                    if j is not None:
                        stored = next(o for o in getattr(j, kind) if o["id"] == oid)
                        getattr(j, kind).remove(stored)
                        out[kind].append(stored)
            self._touch_after_write(jobs, actor)
            return out
        check = {"tags": v.tag, "shapes": v.shape, "tracks": v.track}
        done: dict[str, list[dict]] = {"tags": [], "shapes": [], "tracks": []}
        updates: list[tuple[str, Job, dict]] = []
        for kind, objs in (("tags", tags), ("shapes", shapes), ("tracks", tracks)):
            for i, obj in enumerate(objs):
                where = f"{kind}[{i}]"
                oid = obj.get("id") if isinstance(obj, dict) else None
                if method == "PATCH" and action == "create" and oid is not None:
                    raise bad_request(f"{where}: ids must not be set when creating objects (id={oid})", "id")
                if method == "PATCH" and action == "update" and oid is not None:
                    if oid not in owner.get(kind, {}):
                        raise bad_request(f"{where}: there is no {kind[:-1]} with id {oid} in this job", "id")
                    norm = check[kind](obj, where, keep_id=True)
                    updates.append((kind, owner[kind][oid], norm))
                else:
                    norm = check[kind](obj, where)
                done[kind].append(norm)
        if method == "PUT":
            for j in jobs:
                j.tags, j.shapes, j.tracks = [], [], []
        updated_ids = {(k, n["id"]) for k, _, n in updates}
        for kind, norm_list in done.items():
            for norm in norm_list:
                if (kind, norm["id"]) in updated_ids:
                    continue
                target = next(j for j in jobs if j.start <= norm["frame"] <= j.stop)
                getattr(target, kind).append(norm)
        for kind, j, norm in updates:
            lst = getattr(j, kind)
            lst[next(n for n, o in enumerate(lst) if o["id"] == norm["id"])] = norm
        self._touch_after_write(jobs, actor)
        return {"version": 0, **copy.deepcopy(done), "intervals": []}

    @staticmethod
    def read_annotations(jobs: list[Job]) -> dict:
        out = {"version": 0, "tags": [], "shapes": [], "tracks": [], "intervals": []}
        for j in jobs:
            out["tags"] += copy.deepcopy(j.tags)
            out["shapes"] += copy.deepcopy(j.shapes)
            out["tracks"] += copy.deepcopy(j.tracks)
        return out

    # -- issues ---------------------------------------------------------------------------------
    def create_issue(self, data: Any, actor: Actor) -> Issue:
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        jid = data.get("job")
        if not isinstance(jid, int) or jid not in self.jobs:
            raise bad_request(f'Invalid pk "{jid}" - object does not exist.', "job")
        j = self.jobs[jid]
        frame = data.get("frame")
        if not isinstance(frame, int) or not j.start <= frame <= j.stop:
            raise bad_request(
                f"frame {frame!r} is outside the job's frame range [{j.start}, {j.stop}]", "frame"
            )
        pos = data.get("position")
        if (
            not isinstance(pos, list)
            or len(pos) < 2
            or len(pos) % 2
            or not all(isinstance(p, int | float) and not isinstance(p, bool) for p in pos)
        ):
            raise bad_request("position must be a non-empty even-length list of numbers", "position")
        message = data.get("message")
        if not isinstance(message, str) or not message.strip():
            raise bad_request("This field may not be blank.", "message")
        now = self.clock.now()
        issue = Issue(
            id=self.ids["issue"].next(),
            job_id=jid,
            frame=frame,
            position=[float(p) for p in pos],
            owner_id=actor.user.id,
            message=message,
            created_date=now,
            updated_date=now,
        )
        self.issues[issue.id] = issue
        t = self.tasks[j.task_id]
        self.emit(t.project_id, "create:issue", "issue", self.issue_json(issue, actor.base), actor)
        return issue

    # -- webhooks -------------------------------------------------------------------------------
    def webhook_fields(self, data: dict, *, creating: bool, hook: Webhook | None = None) -> dict:
        out: dict[str, Any] = {}
        if creating:
            if data.get("type", "project") != "project":
                raise bad_request("The double supports project webhooks only", "type")
            pid = data.get("project_id")
            if not isinstance(pid, int) or pid not in self.projects:
                raise bad_request(f'Invalid pk "{pid}" - object does not exist.', "project_id")
            out["project_id"] = pid
            for req in ("target_url", "events"):
                if req not in data:
                    raise bad_request("This field is required.", req)
        else:
            for fixed in ("type", "project_id"):
                if fixed in data and data[fixed] != ("project" if fixed == "type" else hook.project_id):
                    raise bad_request("This field cannot be changed.", fixed)
        if "target_url" in data:
            validate_target_url(data["target_url"])
            out["target_url"] = data["target_url"]
        if "events" in data:
            events = data["events"]
            if not isinstance(events, list) or not events:
                raise bad_request("Expected a non-empty list of events.", "events")
            bad = [e for e in events if e not in PROJECT_EVENTS]
            if bad:
                raise bad_request(f"Project webhooks cannot subscribe to {bad}", "events")
            out["events"] = sorted(set(events))
        if "secret" in data:
            secret = data["secret"] if data["secret"] is not None else ""
            if not isinstance(secret, str) or len(secret) > 64:
                raise bad_request("Ensure this field has no more than 64 characters.", "secret")
            out["secret"] = secret
        if data.get("content_type", "application/json") != "application/json":
            raise bad_request(f'"{data["content_type"]}" is not a valid choice.', "content_type")
        for flag in ("is_active", "enable_ssl"):
            if flag in data:
                if not isinstance(data[flag], bool):
                    raise bad_request("Must be a valid boolean.", flag)
                out[flag] = data[flag]
        if "description" in data:
            out["description"] = data["description"] or ""
        return out

    def create_webhook(self, data: Any, actor: Actor) -> Webhook:
        if not isinstance(data, dict):
            raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
        fields = self.webhook_fields(data, creating=True)
        now = self.clock.now()
        hook = Webhook(
            id=self.ids["webhook"].next(),
            owner_id=actor.user.id,
            created_date=now,
            updated_date=now,
            secret=fields.pop("secret", ""),
            **fields,
        )
        self.webhooks[hook.id] = hook
        return hook


def natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]
