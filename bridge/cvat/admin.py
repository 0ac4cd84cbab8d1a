"""Project, label and webhook administration on cvat-sdk (used by ``bridge setup``).

Requests go through the SDK's typed API (so what is sent is checked against CVAT's schema);
responses are read as plain JSON, so a server newer or older than the SDK does not trip the
SDK's strict response models. Every failure is raised as a ``bridge.errors`` type
(``CvatUnavailable``, ``NotFound``, ``CvatRejected``) by ``bridge.cvat.connection.map_errors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cvat_sdk import Client
from cvat_sdk.api_client import models

from bridge.cvat.connection import map_errors
from bridge.cvat.types import ProjectInfo
from bridge.errors import CvatRejected, PermanentError

_PAGE_SIZE = 100
_MAX_PAGES = 1000


@dataclass(frozen=True)
class WebhookInfo:
    """A project webhook as CVAT reports it (the secret is write-only and never returned)."""

    id: int
    project_id: int | None
    target_url: str
    events: tuple[str, ...]
    is_active: bool
    enable_ssl: bool
    content_type: str
    description: str
    last_status: int | None


@dataclass(frozen=True)
class WebhookSpec:
    """What a project webhook should be; ``secret`` None leaves CVAT's stored secret as it is."""

    target_url: str
    events: tuple[str, ...]
    description: str = ""
    secret: str | None = None
    is_active: bool = True
    enable_ssl: bool = True
    content_type: str = "application/json"


@dataclass(frozen=True)
class PingResult:
    """The delivery record CVAT made for a ping (sent synchronously from ``cvat_server``)."""

    webhook_id: int
    delivery_id: int | None
    status_code: int | None
    response: str


class CvatAdmin:
    """Administrative operations on one logged-in ``cvat_sdk.Client`` (owned by the caller)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._api = client.api_client

    # --- projects ------------------------------------------------------------------------------
    def find_project(self, name: str) -> ProjectInfo | None:
        """The project named exactly ``name``; None if there is none; ``CvatRejected`` if several."""
        found = [
            ProjectInfo(id=int(p["id"]), name=str(p["name"]))
            for p in self._pages(
                lambda **kw: self._api.projects_api.list(name=name, **kw), f"listing projects named {name!r}"
            )
            if p.get("name") == name
        ]
        if len(found) > 1:
            ids = ", ".join(str(p.id) for p in found)
            raise CvatRejected(
                f"several CVAT projects are named {name!r} (ids {ids}); rename all but one, or use --prefix"
            )
        return found[0] if found else None

    def get_project(self, project_id: int) -> ProjectInfo:
        with map_errors(f"reading project {project_id}"):
            _, resp = self._api.projects_api.retrieve(project_id, _parse_response=False)
        data = _json(resp, f"project {project_id}")
        return ProjectInfo(id=int(data["id"]), name=str(data["name"]))

    def create_project(self, name: str, labels: Sequence[dict[str, Any]]) -> ProjectInfo:
        """Create a project with ``labels`` (dicts as ``bridge.labels.prepare_labels`` returns)."""
        request = _model(models.ProjectWriteRequest, f"project {name!r}", name=name, labels=list(labels))
        with map_errors(f"creating project {name!r}"):
            _, resp = self._api.projects_api.create(request, _parse_response=False)
        data = _json(resp, f"created project {name!r}")
        return ProjectInfo(id=int(data["id"]), name=str(data["name"]))

    # --- labels ----------------------------------------------------------------------------------
    def get_labels(self, project_id: int) -> list[dict[str, Any]]:
        """The project's top-level labels as plain dicts, skeleton ``sublabels`` nested inside."""
        labels = list(
            self._pages(
                lambda **kw: self._api.labels_api.list(project_id=project_id, **kw),
                f"reading labels of project {project_id}",
            )
        )
        return [label for label in labels if not label.get("parent_id") and not label.get("has_parent")]

    def add_labels(self, project_id: int, labels: Sequence[dict[str, Any]]) -> None:
        """Add new labels to an existing project (PATCH the project with labels that carry no id)."""
        if not labels:
            return
        request = _model(
            models.PatchedProjectWriteRequest, f"labels for project {project_id}", labels=list(labels)
        )
        names = ", ".join(str(label.get("name")) for label in labels)
        with map_errors(f"adding labels {names} to project {project_id}"):
            self._api.projects_api.partial_update(
                project_id, patched_project_write_request=request, _parse_response=False
            )

    # --- webhooks --------------------------------------------------------------------------------
    def list_webhooks(self, project_id: int) -> list[WebhookInfo]:
        return [
            _webhook(w)
            for w in self._pages(
                lambda **kw: self._api.webhooks_api.list(project_id=project_id, **kw),
                f"listing webhooks of project {project_id}",
            )
            if w.get("project_id") in (None, project_id)
        ]

    def create_webhook(self, project_id: int, spec: WebhookSpec) -> WebhookInfo:
        fields = _webhook_fields(spec)
        request = _model(
            models.WebhookWriteRequest,
            f"webhook {spec.target_url}",
            type="project",
            project_id=project_id,
            **fields,
        )
        with map_errors(f"creating webhook {spec.target_url} on project {project_id}"):
            _, resp = self._api.webhooks_api.create(request, _parse_response=False)
        return _webhook(_json(resp, "created webhook"))

    def update_webhook(self, webhook_id: int, spec: WebhookSpec) -> WebhookInfo:
        request = _model(
            models.PatchedWebhookWriteRequest, f"webhook {spec.target_url}", **_webhook_fields(spec)
        )
        with map_errors(f"updating webhook {webhook_id} ({spec.target_url})"):
            _, resp = self._api.webhooks_api.partial_update(
                webhook_id, patched_webhook_write_request=request, _parse_response=False
            )
        return _webhook(_json(resp, f"updated webhook {webhook_id}"))

    def ping_webhook(self, webhook_id: int) -> PingResult:
        """Ask CVAT to ping the webhook now; returns the recorded delivery (status and response)."""
        with map_errors(f"pinging webhook {webhook_id}"):
            _, resp = self._api.webhooks_api.create_ping(webhook_id, _parse_response=False)
        data = _json(resp, f"ping of webhook {webhook_id}")
        status = data.get("status_code")
        response = data.get("response")
        if response is not None and not isinstance(response, str):
            response = json.dumps(response)
        return PingResult(
            webhook_id=webhook_id,
            delivery_id=int(data["id"]) if data.get("id") is not None else None,
            status_code=int(status) if status is not None else None,
            response=response or "",
        )

    # --- plumbing ----------------------------------------------------------------------------------
    def _pages(self, call: Callable[..., Any], what: str) -> Iterator[dict[str, Any]]:
        """Yield every result of a paginated list call."""
        for page in range(1, _MAX_PAGES + 1):
            with map_errors(what):
                _, resp = call(page=page, page_size=_PAGE_SIZE, _parse_response=False)
            data = _json(resp, what)
            results = data.get("results") if isinstance(data, dict) else data
            if not isinstance(results, list):
                raise PermanentError(f"{what}: CVAT answered without a 'results' list")
            yield from results
            if not isinstance(data, dict) or not data.get("next") or not results:
                return
        raise PermanentError(f"{what}: more than {_MAX_PAGES} pages; giving up")


def _webhook_fields(spec: WebhookSpec) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "target_url": spec.target_url,
        "events": list(spec.events),
        "description": spec.description,
        "is_active": spec.is_active,
        "enable_ssl": spec.enable_ssl,
        "content_type": spec.content_type,
    }
    if spec.secret is not None:
        fields["secret"] = spec.secret
    return fields


def _model(cls: Any, what: str, **fields: Any) -> Any:
    """Build an SDK request model; a value CVAT's schema refuses becomes ``CvatRejected``."""
    try:
        return cls(**fields)
    except Exception as exc:  # the generated models raise several ApiTypeError/ValueError kinds
        raise CvatRejected(f"{what}: not accepted by CVAT's schema ({type(exc).__name__}: {exc})") from exc


def _json(resp: Any, what: str) -> Any:
    raw = getattr(resp, "data", resp)
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"{what}: CVAT answered with something that is not JSON") from exc


def _webhook(data: dict[str, Any]) -> WebhookInfo:
    last = data.get("last_status")
    return WebhookInfo(
        id=int(data["id"]),
        project_id=data.get("project_id"),
        target_url=str(data.get("target_url") or ""),
        events=tuple(sorted(str(e) for e in data.get("events") or [])),
        is_active=bool(data.get("is_active", True)),
        enable_ssl=bool(data.get("enable_ssl", True)),
        content_type=str(data.get("content_type") or "application/json"),
        description=str(data.get("description") or ""),
        last_status=int(last) if isinstance(last, int) else None,
    )
