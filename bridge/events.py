"""CVAT webhook payloads (2.73+ and older) and the rules that turn an event into a trigger.

Knows nothing of HTTP or storage. ``decide`` is pure: envelope + what the route acts on →
``Decision`` (ping, ignore with a reason, or trigger with a content-based dedupe key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TriggerKind = Literal["job_in_progress", "job_completed", "task_completed"]


@dataclass(frozen=True)
class Trigger:
    """The CVAT transition that started a job (built by ``bridge.events``, stored with the job)."""

    kind: TriggerKind
    resource: Literal["job", "task"]
    resource_id: int
    project_id: int | None = None
    task_id: int | None = None
    job_id: int | None = None
    event: str = ""
    webhook_id: int | None = None
    sender: str | None = None
    start_frame: int | None = None
    chunk_size: int | None = None
    """Where the job's frames are, as the webhook said (a run starts reading its first chunk at once)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource": self.resource,
            "resource_id": self.resource_id,
            "project_id": self.project_id,
            "task_id": self.task_id,
            "job_id": self.job_id,
            "event": self.event,
            "webhook_id": self.webhook_id,
            "sender": self.sender,
            "start_frame": self.start_frame,
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trigger:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


IN_PROGRESS = "in progress"
COMPLETED = "completed"
_NOISE_FIELDS = frozenset({"updated_date"})

MAX_ID = 2**31 - 1
"""CVAT ids are PostgreSQL ``integer`` keys, and the job store keeps them in ``Integer`` columns."""
MAX_DEPTH = 32
"""Deepest JSON nesting accepted (real CVAT payloads nest 3 levels)."""

CvatId = Annotated[int, Field(ge=1, le=MAX_ID)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Sender(_Open):
    """Both CVAT shapes: a user request ``{url,id,username,first_name,last_name}``
    or an RQ worker ``{id,username,email}``."""

    id: CvatId | None = None
    username: str | None = None


class Change(_Open):
    from_: Any = Field(None, alias="from")
    to: Any = None


class JobPayload(_Open):
    id: CvatId
    task_id: CvatId | None = None
    project_id: CvatId | None = None
    state: str | None = None
    stage: str | None = None
    status: str | None = None
    type: str | None = None
    updated_date: str | None = None


class TaskPayload(_Open):
    id: CvatId
    name: str | None = None
    project_id: CvatId | None = None
    status: str | None = None
    subset: str | None = None
    updated_date: str | None = None


class Envelope(_Open):
    """The top level of every CVAT webhook body."""

    event: str = Field(min_length=1, max_length=200)
    webhook_id: CvatId | None = None
    webhook: dict[str, Any] | None = None
    sender: Sender | None = None
    job: JobPayload | None = None
    task: TaskPayload | None = None
    project: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    before_update: dict[str, Any] | None = None
    changes: dict[str, Change] | None = None

    @field_validator("sender", mode="before")
    @classmethod
    def _sender(cls, v: Any) -> Any:
        # Simplified docs show a bare username string; accept it rather than reject the event.
        return {"username": v} if isinstance(v, str) else v

    @property
    def resource(self) -> str:
        return self.event.split(":", 1)[-1]

    @property
    def action(self) -> str:
        return self.event.split(":", 1)[0]


def _count(value: Any, *, least: int) -> int | None:
    """``value`` when it is a plain int in ``least..MAX_ID`` (a webhook field read leniently)."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_ID:
        return None
    return value


def image_layout(env: Envelope) -> tuple[int | None, int | None]:
    """``(start_frame, data_chunk_size)`` of the event's job (or task: start 0) when CVAT's payload says
    and its data are images stored as image chunks; ``(None, None)`` otherwise (read leniently: a field
    missing or odd never rejects the event)."""
    payload: JobPayload | TaskPayload | None = env.job or env.task
    if payload is None:
        return None, None
    extra = payload.model_extra or {}
    if extra.get("media_type", "image") != "image" or extra.get("data_original_chunk_type", "imageset") != "imageset":
        return None, None
    if env.job is not None and (env.job.type or "annotation") != "annotation":
        return None, None
    size = _count(extra.get("data_chunk_size"), least=1)
    start = 0 if env.job is None else _count(extra.get("start_frame"), least=0)
    return (start, size) if size is not None and start is not None else (None, None)


def first_chunk(env: Envelope, *, whole_task: bool) -> tuple[int, int] | None:
    """``(task_id, chunk)``: the original chunk a run on this event reads first — the chunk holding the
    job's first frame, or the task's frame 0 when the run reads the whole task (``image_layout``)."""
    start, size = image_layout(env)
    task_id = env.job.task_id if env.job is not None else env.task.id if env.task is not None else None
    if task_id is None or start is None or size is None:
        return None
    return task_id, (0 if whole_task else start) // size


class PayloadError(ValueError):
    """The body is not a CVAT webhook payload; the message says why (answered with ``status``:
    400 when the body is not acceptable JSON, 422 when the JSON is not a CVAT payload)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _check_tree(data: Any, max_depth: int) -> None:
    """Iteratively (no recursion): nesting depth and strings that cannot be stored or echoed."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            items = (node,)
            depth -= 1
        if depth > max_depth:
            raise PayloadError(f"JSON is nested deeper than {max_depth} levels; not a CVAT webhook payload", 400)
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise PayloadError("body has a string with an unpaired UTF-16 surrogate escape", 400) from exc
            elif isinstance(item, dict | list):
                stack.append((item, depth + 1))


def load_json(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that fails with a ``PayloadError`` (never RecursionError, never an unbounded
    integer, NaN or Infinity) and refuses nesting deeper than ``max_depth``."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise PayloadError(f"JSON is nested deeper than {max_depth} levels; not a CVAT webhook payload",
                           400) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integer digit limit, NaN
        raise PayloadError(f"body is not valid JSON: {str(exc)[:200]}", 400) from exc
    _check_tree(data, max_depth)
    return data


def parse_envelope(raw: bytes) -> tuple[Envelope, dict[str, Any]]:
    """Parse raw bytes into (envelope, dict). Raises ``PayloadError`` with a precise reason."""
    data = load_json(raw)
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {type(data).__name__}", 400)
    try:
        env = Envelope.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        why = first["msg"]
        if first["type"] in ("less_than_equal", "greater_than_equal"):
            why += f" (CVAT ids are integers from 1 to {MAX_ID})"
        raise PayloadError(f"not a CVAT webhook payload: {where}: {why}") from exc
    return env, data


@dataclass(frozen=True)
class Decision:
    action: Literal["ping", "ignore", "trigger"]
    reason: str
    trigger: Trigger | None = None
    dedupe_key: str | None = None


def _changed_fields(env: Envelope) -> tuple[dict[str, Any], bool] | None:
    """Changed field → new value (None when unknown), and whether the payload is 2.73+ (``changes``)."""
    if env.changes is not None:
        return {k: c.to for k, c in env.changes.items()}, True
    if env.before_update is not None:
        return dict.fromkeys(env.before_update), False
    return None


def _transition(env: Envelope, field: str, target: str, current: str | None) -> tuple[bool, str]:
    changed = _changed_fields(env)
    if changed is None:
        return False, "update without 'changes' or 'before_update': nothing changed"
    fields, modern = changed
    if not fields:
        return False, "update with empty 'changes': nothing changed"
    if set(fields) <= _NOISE_FIELDS:
        return False, "only 'updated_date' changed (annotation save or touch)"
    if field not in fields:
        return False, f"'{field}' did not change (changed: {', '.join(sorted(fields))})"
    if modern:
        new = fields[field]
    else:
        new = current
        if env.before_update and env.before_update.get(field) == current:
            return False, f"'{field}' unchanged ({current!r})"
    if new != target:
        return False, f"'{field}' changed to {new!r}, not {target!r}"
    return True, f"{field} → {target!r}"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def dedupe_key(pipeline: str, params: dict[str, Any], env: Envelope, resource_id: int) -> str:
    """Content-based key: identical for CVAT retries *and* manual redeliveries (keys reordered),
    identical across two webhooks delivering the same transition, different for a new transition."""
    changed = (
        {k: v.to for k, v in env.changes.items()} if env.changes is not None else env.before_update
    )
    res = env.job if env.resource == "job" else env.task
    material = {
        "pipeline": pipeline,
        "params": params,
        "event": env.event,
        "resource_id": resource_id,
        "changes": changed,
        "updated_date": res.updated_date if res else None,
    }
    return hashlib.sha256(_canonical(material).encode()).hexdigest()


def decide(
    env: Envelope,
    *,
    kind: TriggerKind,
    pipeline: str,
    params: dict[str, Any],
    own_username: str | None = None,
) -> Decision:
    """Whether this event triggers ``pipeline`` (acting on ``kind``)."""
    if env.event == "ping":
        return Decision("ping", "ping: nothing to do")
    if env.action != "update":
        return Decision("ignore", f"'{env.event}' events are not acted on (only transitions in update events)")

    sender = env.sender.username if env.sender else None
    if kind in ("job_in_progress", "job_completed"):
        if env.resource != "job" or env.job is None:
            return Decision("ignore", f"this route acts on job state changes, not '{env.event}'")
        job = env.job
        if job.type not in (None, "annotation"):
            return Decision("ignore", f"job {job.id} is a '{job.type}' job, not an annotation job")
        target = IN_PROGRESS if kind == "job_in_progress" else COMPLETED
        ok, why = _transition(env, "state", target, job.state)
        if not ok:
            return Decision("ignore", f"job {job.id}: {why}")
        if own_username and sender == own_username and kind != "job_in_progress":
            return Decision("ignore", f"job {job.id}: change made by the bridge's own user {sender!r}")
        start_frame, chunk_size = image_layout(env)
        trig = Trigger(kind=kind, resource="job", resource_id=job.id, project_id=job.project_id,
                       task_id=job.task_id, job_id=job.id, event=env.event,
                       webhook_id=env.webhook_id, sender=sender, start_frame=start_frame, chunk_size=chunk_size)
        return Decision("trigger", f"job {job.id}: {why}", trig, dedupe_key(pipeline, params, env, job.id))

    # task_completed
    if env.resource != "task" or env.task is None:
        return Decision("ignore", f"this route acts on task status → 'completed', not '{env.event}'")
    task = env.task
    ok, why = _transition(env, "status", COMPLETED, task.status)
    if not ok:
        return Decision("ignore", f"task {task.id}: {why}")
    if own_username and sender == own_username:
        return Decision("ignore", f"task {task.id}: change made by the bridge's own user {sender!r}")
    trig = Trigger(kind="task_completed", resource="task", resource_id=task.id, project_id=task.project_id,
                   task_id=task.id, event=env.event, webhook_id=env.webhook_id, sender=sender)
    return Decision("trigger", f"task {task.id}: {why}", trig, dedupe_key(pipeline, params, env, task.id))
