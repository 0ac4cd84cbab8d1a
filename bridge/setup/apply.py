"""Make CVAT match a layout: projects with their labels, and project webhooks — idempotently.

``apply_layout`` compares what CVAT has with the layout and only writes differences, so a second
run reports ``unchanged`` everywhere and sends no write request. Webhooks are matched to the
layout by project and route path (so a changed ``BRIDGE_PUBLIC_URL`` updates them instead of
adding duplicates). The secret is write-only in CVAT; a fingerprint of it (an HMAC, not the
secret) is kept in the webhook description so that a changed ``WEBHOOK_SECRET`` is noticed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from bridge.cvat.admin import CvatAdmin, WebhookInfo, WebhookSpec
from bridge.labels import label_summary, svg_refers_to
from bridge.setup.presets import HookSpec, Layout, ProjectSpec
from bridge.setup.urls import build_target_url, check_target_url, loopback_warning

Mode = Literal["apply", "dry-run", "check"]
MANAGED_MARK = "managed by cvat-bridge setup"
FAILED_STATUSES = frozenset({"missing", "conflict", "failed"})
CHANGED_STATUSES = frozenset({"created", "updated"})


@dataclass(frozen=True)
class Outcome:
    """One line of the report: ``kind`` project|labels|webhook|ping, a subject, a status, details."""

    kind: str
    subject: str
    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def line(self) -> str:
        text = f"{self.kind:<8} {self.subject}: {self.status}"
        return f"{text} — {self.detail}" if self.detail else text


@dataclass(frozen=True)
class ManagedWebhook:
    project: str
    webhook_id: int
    target_url: str


@dataclass
class SetupReport:
    outcomes: list[Outcome] = field(default_factory=list)
    project_ids: dict[str, int] = field(default_factory=dict)
    webhooks: list[ManagedWebhook] = field(default_factory=list)

    def add(self, kind: str, subject: str, status: str, detail: str = "") -> Outcome:
        outcome = Outcome(kind, subject, status, detail)
        self.outcomes.append(outcome)
        return outcome

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)

    @property
    def changed(self) -> bool:
        return any(o.status in CHANGED_STATUSES for o in self.outcomes)


def secret_fingerprint(secret: str | None) -> str:
    """A short, non-reversible tag of the secret for the webhook description."""
    if not secret:
        return "no secret"
    digest = hmac.new(secret.encode("utf-8"), b"cvat-bridge webhook secret", hashlib.sha256).hexdigest()
    return f"secret {digest[:12]}"


def hook_url(public_url: str, hook: HookSpec, project_ids: dict[str, int]) -> str:
    query = dict(hook.query)
    if hook.target is not None:
        query["target_proj_id"] = project_ids[hook.target]
    return build_target_url(public_url, hook.route, query)


def validate_urls(layout: Layout, public_url: str) -> list[str]:
    """Check every target URL of the layout (with stand-in project ids); return loopback warnings."""
    fake_ids = {p.key: 1 for p in layout.projects}
    for p in layout.projects:
        for h in p.webhooks:
            check_target_url(hook_url(public_url, h, fake_ids))
    check_target_url(public_url)
    warning = loopback_warning(public_url)
    return [warning] if warning else []


def apply_layout(
    admin: CvatAdmin,
    layout: Layout,
    *,
    public_url: str,
    secret: str | None,
    mode: Mode = "apply",
    report: SetupReport | None = None,
) -> SetupReport:
    """Create or verify projects, labels and webhooks of ``layout``; see the module docstring.

    ``mode``: ``apply`` writes what differs; ``dry-run`` reports what would change; ``check``
    writes nothing and reports anything missing or different as a failure. Outcomes are added
    to ``report`` (a new one by default) as they happen, so a caller still has them on an error.
    """
    report = report if report is not None else SetupReport()
    for warning in validate_urls(layout, public_url):
        report.add("url", public_url, "warning", warning)
    for project in layout.projects:
        _ensure_project(admin, project, mode, report)
    for project in layout.projects:
        _ensure_webhooks(admin, layout, project, public_url, secret, mode, report)
    return report


# --- projects and labels ---------------------------------------------------------------------------
def _ensure_project(admin: CvatAdmin, spec: ProjectSpec, mode: Mode, report: SetupReport) -> None:
    found = admin.find_project(spec.name)
    n = len(spec.labels)
    if found is None:
        if mode == "apply":
            created = admin.create_project(spec.name, spec.labels)
            report.project_ids[spec.key] = created.id
            report.add("project", spec.name, "created", f"id {created.id}, {n} labels")
        elif mode == "dry-run":
            report.add("project", spec.name, "would create", f"{n} labels")
        else:
            report.add("project", spec.name, "missing", "run `bridge setup` to create it")
        return
    report.project_ids[spec.key] = found.id
    report.add("project", spec.name, "unchanged", f"id {found.id}")
    _ensure_labels(admin, spec, found.id, mode, report)


def _ensure_labels(
    admin: CvatAdmin, spec: ProjectSpec, project_id: int, mode: Mode, report: SetupReport
) -> None:
    existing = {str(label.get("name")): label for label in admin.get_labels(project_id)}
    missing = [label for label in spec.labels if label["name"] not in existing]
    conflicts = []
    for label in spec.labels:
        have = existing.get(label["name"])
        if have is None:
            continue
        want_name, want_type, want_subs = label_summary(label)
        _, have_type, have_subs = label_summary(have)
        if want_type != have_type and "any" not in (want_type, have_type):
            conflicts.append(f"{want_name!r} is {have_type}, the layout wants {want_type}")
        elif want_subs != have_subs:
            lost = sorted(set(want_subs) - set(have_subs), key=_natural)
            conflicts.append(
                f"skeleton {want_name!r} lacks sublabels {', '.join(lost[:8])}"
                f"{'...' if len(lost) > 8 else ''}"
                if lost
                else f"skeleton {want_name!r} has other sublabels than the layout"
            )
        elif have.get("type") == "skeleton":
            _check_svg(have, spec.name, report)
    subject = spec.name
    if conflicts:
        report.add("labels", subject, "conflict", "; ".join(conflicts) + " (fix the project in CVAT)")
    if not missing:
        if not conflicts:
            report.add("labels", subject, "unchanged", f"{len(spec.labels)} labels present")
        return
    names = ", ".join(label["name"] for label in missing)
    if mode == "apply":
        admin.add_labels(project_id, missing)
        report.add("labels", subject, "updated", f"added {names}")
    elif mode == "dry-run":
        report.add("labels", subject, "would update", f"would add {names}")
    else:
        report.add("labels", subject, "missing", f"lacks {names}; run `bridge setup` to add them")


def _check_svg(label: dict, project: str, report: SetupReport) -> None:
    sub_ids = {int(s["id"]) for s in label.get("sublabels") or [] if isinstance(s.get("id"), int)}
    refs = svg_refers_to(str(label.get("svg") or ""))
    if sub_ids and refs and not refs <= sub_ids:
        report.add(
            "labels",
            project,
            "warning",
            f"skeleton {label.get('name')!r}: its SVG refers to label ids of another CVAT instance, so the "
            "skeleton editor misplaces points; recreate the label from the preset (see docs/deployment.md)",
        )


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


# --- webhooks -------------------------------------------------------------------------------------
def _ensure_webhooks(
    admin: CvatAdmin,
    layout: Layout,
    spec: ProjectSpec,
    public_url: str,
    secret: str | None,
    mode: Mode,
    report: SetupReport,
) -> None:
    if not spec.webhooks:
        return
    project_id = report.project_ids.get(spec.key)
    existing: list[WebhookInfo] = admin.list_webhooks(project_id) if project_id is not None else []
    description = f"{MANAGED_MARK} ({layout.name}); {secret_fingerprint(secret)}"
    for hook in spec.webhooks:
        subject = f"{spec.name} {hook.route}"
        unresolved = [k for k in [spec.key, hook.target] if k is not None and k not in report.project_ids]
        if unresolved:
            missing = ", ".join(repr(layout.project(k).name) for k in unresolved)
            status = "would create" if mode == "dry-run" else "missing"
            report.add("webhook", subject, status, f"after project {missing} exists")
            continue
        if project_id is None:  # unreachable: the project key was checked just above
            continue
        url = check_target_url(hook_url(public_url, hook, report.project_ids))
        want = WebhookSpec(
            target_url=url,
            events=tuple(sorted(hook.events)),
            description=description,
            secret=secret or "",
            is_active=True,
            enable_ssl=urlsplit(url).scheme == "https",
        )
        same_route = [w for w in existing if urlsplit(w.target_url).path.rstrip("/") == hook.route]
        current = next((w for w in same_route if w.target_url == url), same_route[0] if same_route else None)
        for extra in same_route:
            if current is not None and extra.id != current.id:
                report.add(
                    "webhook",
                    subject,
                    "warning",
                    f"webhook {extra.id} ({extra.target_url}) also calls this route: "
                    "the step would run twice; "
                    "delete it in CVAT (Project > Actions > Setup webhooks)",
                )
        if current is None:
            _create_hook(admin, project_id, spec.name, want, subject, mode, report)
            continue
        diffs = _differences(current, want)
        if not diffs:
            report.webhooks.append(ManagedWebhook(spec.name, current.id, url))
            report.add("webhook", subject, "unchanged", f"id {current.id}, {url}")
        elif mode == "apply":
            updated = admin.update_webhook(current.id, want)
            report.webhooks.append(ManagedWebhook(spec.name, updated.id, url))
            report.add("webhook", subject, "updated", f"id {updated.id}: {', '.join(diffs)}")
        else:
            report.webhooks.append(ManagedWebhook(spec.name, current.id, current.target_url))
            status = "would update" if mode == "dry-run" else "conflict"
            hint = "" if mode == "dry-run" else "; run `bridge setup` to update it"
            report.add("webhook", subject, status, f"id {current.id}: {', '.join(diffs)}{hint}")


def _create_hook(
    admin: CvatAdmin,
    project_id: int,
    project_name: str,
    want: WebhookSpec,
    subject: str,
    mode: Mode,
    report: SetupReport,
) -> None:
    url = want.target_url
    if mode == "apply":
        created = admin.create_webhook(project_id, want)
        report.webhooks.append(ManagedWebhook(project_name, created.id, url))
        report.add("webhook", subject, "created", f"id {created.id}, {url}")
    elif mode == "dry-run":
        report.add("webhook", subject, "would create", url)
    else:
        report.add("webhook", subject, "missing", f"{url}; run `bridge setup` to create it")


def _differences(have: WebhookInfo, want: WebhookSpec) -> list[str]:
    diffs = []
    if have.target_url != want.target_url:
        diffs.append(f"target URL {have.target_url} -> {want.target_url}")
    if tuple(sorted(have.events)) != tuple(sorted(want.events)):
        diffs.append(f"events {','.join(have.events)} -> {','.join(want.events)}")
    if have.is_active != want.is_active:
        diffs.append("activate")
    if have.enable_ssl != want.enable_ssl:
        diffs.append(f"SSL verification -> {'on' if want.enable_ssl else 'off'}")
    if have.content_type != want.content_type:
        diffs.append(f"content type -> {want.content_type}")
    if have.description != want.description:
        diffs.append("secret or description")
    return diffs
