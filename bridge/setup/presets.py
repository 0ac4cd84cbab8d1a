"""Project layouts for ``bridge setup``: which projects exist, their labels and their webhooks.

Built-in layouts follow the reference pipeline (reference-pipeline.md §2.1, §2.3):

- ``3-stage``: corners -> grid -> coral, 5 webhooks;
- ``2-stage``: corners -> coral (the crop step targets the coral project), 3 webhooks;
- ``1-stage``: a coral project with its detection webhook only.

A custom layout is a JSON file (``load_layout_file``)::

    {"projects": [
      {"key": "coral", "name": "my_corals", "labels": "coral_finegrained" | "labels.json" | [...],
       "webhooks": [{"route": "/detect-model-webhook",
                     "query": {"model_name": "pth-yolo-coralsegv4", "conv_mask_to_poly": true}},
                    {"route": "/crop-quadrat-and-create-new-task-webhook", "target": "other-key"}]}]}

``labels`` is a built-in set name, a label-export file (relative to the layout file) or an inline
list. ``target`` names the project whose id becomes ``target_proj_id``. ``events`` defaults per route.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.labels import BUILTIN_LABEL_SETS, builtin_labels, load_label_file, prepare_labels
from bridge.pipelines.registry import ROUTES

DETECT_ROUTE = "/detect-model-webhook"
CROP_ROUTE = "/crop-quadrat-and-create-new-task-webhook"
REMOVE_GRID_ROUTE = "/remove-grid-and-create-new-task-webhook"
SAM2_ROUTE = "/sam2-refine-webhook"
REPORT_ROUTE = "/webhooks/cover-report"
REPORT_EVENTS = ("update:task",)  # fires on the coral task's completion; needs no target project
JOB_EVENTS = ("update:job",)
TASK_EVENTS = ("update:task", "update:job")

# Every route of every pipeline and the events it needs, from the pipelines' specs.
ROUTE_EVENTS: dict[str, tuple[str, ...]] = {r.path: r.events for r in ROUTES}
# Routes that create a task in another project need its id (``target``).
TARGET_ROUTES = frozenset(r.path for r in ROUTES if r.needs_target)

# What a project webhook may subscribe to (cvat-contract.md §1.3).
_RESOURCE_ACTIONS = {"task", "job", "issue", "comment"}
_PROJECT_EVENTS = {"update:project", "delete:project"} | {
    f"{action}:{res}" for res in _RESOURCE_ACTIONS for action in ("create", "update", "delete")
}
_REQUEST_EVENT_RE = re.compile(
    r"^completed:request\[(export:annotations|export:dataset|export:backup|create:task|merge:task|"
    r"merge:job|calculate:quality)\]$"
)
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

LAYOUTS = ("3-stage", "2-stage", "1-stage")
DEFAULT_NAMES = {"corner": "corner_detection", "grid": "grid_detection", "coral": "coral_segmentation"}
DEFAULT_MODELS = {
    "corner": "pth-yolo-gridcorners",
    "grid": "pth-yolo-gridpose",
    "coral": "pth-yolo-coralsegv4",
}


@dataclass(frozen=True)
class HookSpec:
    """One webhook of a project: route, ordered query, events, and the target project key."""

    route: str
    events: tuple[str, ...]
    query: tuple[tuple[str, Any], ...] = ()
    target: str | None = None

    def query_dict(self) -> dict[str, Any]:
        return dict(self.query)


@dataclass(frozen=True)
class ProjectSpec:
    key: str
    name: str
    labels: list[dict[str, Any]] = field(hash=False)
    webhooks: tuple[HookSpec, ...] = ()


@dataclass(frozen=True)
class Layout:
    name: str
    projects: tuple[ProjectSpec, ...]

    def project(self, key: str) -> ProjectSpec:
        for p in self.projects:
            if p.key == key:
                return p
        raise ConfigError(f"layout {self.name!r} has no project {key!r}; projects: {', '.join(self.keys())}")

    def keys(self) -> list[str]:
        return [p.key for p in self.projects]


def detect_hook(model: str, *, masks_to_polygons: bool = False) -> HookSpec:
    query: tuple[tuple[str, Any], ...] = (("model_name", model),)
    if masks_to_polygons:
        query += (("conv_mask_to_poly", True),)
    return HookSpec(DETECT_ROUTE, JOB_EVENTS, query)


def builtin_layout(name: str, prefix: str = "") -> Layout:
    """One of ``LAYOUTS`` with project names ``prefix + corner_detection`` etc."""
    if name not in LAYOUTS:
        raise ConfigError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)} or --layout-file")

    def project(key: str, labels: str, *hooks: HookSpec) -> ProjectSpec:
        return ProjectSpec(key, prefix + DEFAULT_NAMES[key], builtin_labels(labels), tuple(hooks))

    coral = project(
        "coral", "coral_finegrained", detect_hook(DEFAULT_MODELS["coral"], masks_to_polygons=True)
    )
    if name == "1-stage":
        projects: tuple[ProjectSpec, ...] = (coral,)
    elif name == "2-stage":
        corner = project(
            "corner",
            "quadrat_corner",
            detect_hook(DEFAULT_MODELS["corner"]),
            HookSpec(CROP_ROUTE, TASK_EVENTS, target="coral"),
        )
        projects = (corner, coral)
    else:
        corner = project(
            "corner",
            "quadrat_corner",
            detect_hook(DEFAULT_MODELS["corner"]),
            HookSpec(CROP_ROUTE, TASK_EVENTS, target="grid"),
        )
        grid = project(
            "grid",
            "grid",
            detect_hook(DEFAULT_MODELS["grid"]),
            HookSpec(REMOVE_GRID_ROUTE, TASK_EVENTS, target="coral"),
        )
        projects = (corner, grid, coral)
    return validate_layout(Layout(name, projects))


def load_layout_file(path: Path | str, prefix: str = "") -> Layout:
    """A custom layout from JSON (see the module docstring); ``prefix`` is prepended to names."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"layout file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"layout file {path} is not readable JSON: {exc}") from exc
    try:
        return layout_from_dict(data, base_dir=path.parent, prefix=prefix, name=path.stem)
    except ConfigError as exc:
        raise ConfigError(f"layout file {path}: {exc}") from exc


def layout_from_dict(
    data: Any, *, base_dir: Path | None = None, prefix: str = "", name: str = "custom"
) -> Layout:
    if not isinstance(data, dict) or not isinstance(data.get("projects"), list) or not data["projects"]:
        raise ConfigError('expected {"projects": [...]} with at least one project')
    projects = []
    for i, raw in enumerate(data["projects"]):
        if not isinstance(raw, dict):
            raise ConfigError(f"project #{i + 1} must be an object")
        key = str(raw.get("key") or raw.get("name") or "")
        pname = raw.get("name")
        if not isinstance(pname, str) or not pname.strip():
            raise ConfigError(f"project #{i + 1} needs a 'name'")
        labels = resolve_labels(raw.get("labels"), base_dir, f"project {pname!r}")
        hooks = tuple(_hook_from_dict(h, pname) for h in raw.get("webhooks") or [])
        projects.append(ProjectSpec(key, prefix + pname.strip(), labels, hooks))
    return validate_layout(Layout(str(data.get("name") or name), tuple(projects)))


def resolve_labels(value: Any, base_dir: Path | None, what: str) -> list[dict[str, Any]]:
    """Labels given as a built-in set name, a file path, or an inline list."""
    if isinstance(value, list):
        return prepare_labels(value)
    if isinstance(value, str) and value in BUILTIN_LABEL_SETS:
        return builtin_labels(value)
    if isinstance(value, str) and value:
        p = Path(value)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return load_label_file(p)
    raise ConfigError(
        f"{what}: 'labels' must be a built-in set ({', '.join(BUILTIN_LABEL_SETS)}), a label file, or a list"
    )


def _hook_from_dict(raw: Any, project: str) -> HookSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("route"), str):
        raise ConfigError(f"project {project!r}: every webhook needs a 'route'")
    route = raw["route"] if raw["route"].startswith("/") else "/" + raw["route"]
    query = raw.get("query") or {}
    if not isinstance(query, dict):
        raise ConfigError(f"project {project!r}, {route}: 'query' must be an object")
    events = raw.get("events") or ROUTE_EVENTS.get(route)
    if not events:
        raise ConfigError(f"project {project!r}, {route}: unknown route, so 'events' must be given")
    target = raw.get("target")
    return HookSpec(route, tuple(events), tuple(query.items()), str(target) if target is not None else None)


def validate_layout(layout: Layout) -> Layout:
    """Check keys, names, events, targets and required query parameters; raise ``ConfigError``."""
    keys = layout.keys()
    names = [p.name for p in layout.projects]
    for label, values in (("key", keys), ("name", names)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ConfigError(f"layout {layout.name!r}: duplicate project {label}s: {', '.join(dupes)}")
    for p in layout.projects:
        if not _KEY_RE.match(p.key):
            raise ConfigError(f"project key {p.key!r}: use letters, digits, '-', '_' or '.'")
        if len(p.name) > 256:
            raise ConfigError(f"project name {p.name[:40]!r}...: CVAT allows at most 256 characters")
        detect = [h for h in p.webhooks if h.route == DETECT_ROUTE]
        if len(detect) > 1:
            raise ConfigError(
                f"project {p.name!r}: only one detection webhook per project (two would run both models)"
            )
        for h in p.webhooks:
            _validate_hook(h, p, keys)
    return layout


def _validate_hook(h: HookSpec, p: ProjectSpec, keys: list[str]) -> None:
    where = f"project {p.name!r}, webhook {h.route}"
    bad = [e for e in h.events if e not in _PROJECT_EVENTS and not _REQUEST_EVENT_RE.match(e)]
    if bad:
        raise ConfigError(f"{where}: a project webhook cannot subscribe to {', '.join(bad)}")
    if not h.events:
        raise ConfigError(f"{where}: no events")
    query = h.query_dict()
    if h.route == DETECT_ROUTE and not str(query.get("model_name") or "").strip():
        raise ConfigError(f"{where}: needs query model_name=<Nuclio function name>")
    if h.route in TARGET_ROUTES:
        if h.target is None and "target_proj_id" not in query:
            raise ConfigError(f"{where}: needs 'target' (the project that receives the new tasks)")
    if h.target is not None:
        if h.target not in keys:
            raise ConfigError(
                f"{where}: target {h.target!r} is not a project of this layout ({', '.join(keys)})"
            )
        if h.target == p.key:
            raise ConfigError(f"{where}: a project cannot target itself (tasks would loop)")
        if "target_proj_id" in query:
            raise ConfigError(f"{where}: give either 'target' or query target_proj_id, not both")


def with_labels(layout: Layout, overrides: Mapping[str, list[dict[str, Any]]]) -> Layout:
    """Replace the labels of projects by key."""
    projects = tuple(
        replace(p, labels=overrides[p.key]) if p.key in overrides else p for p in layout.projects
    )
    for key in overrides:
        layout.project(key)
    return validate_layout(Layout(layout.name, projects))


def with_models(layout: Layout, overrides: Mapping[str, str]) -> Layout:
    """Replace the detection function (``model_name``) of projects by key."""
    for key in overrides:
        p = layout.project(key)
        if not any(h.route == DETECT_ROUTE for h in p.webhooks):
            raise ConfigError(f"project {p.name!r} has no detection webhook to set a model on")
    projects = []
    for p in layout.projects:
        if p.key not in overrides:
            projects.append(p)
            continue
        hooks = tuple(
            replace(h, query=tuple((k, overrides[p.key] if k == "model_name" else v) for k, v in h.query))
            if h.route == DETECT_ROUTE
            else h
            for h in p.webhooks
        )
        projects.append(replace(p, webhooks=hooks))
    return validate_layout(Layout(layout.name, tuple(projects)))


def with_cover_report(layout: Layout, key: str = "coral", **query: Any) -> Layout:
    """Add the cover-report webhook (``/webhooks/cover-report`` + ``query``) to project ``key``
    (the coral stage), replacing one it already has."""
    p = layout.project(key)
    hook = HookSpec(REPORT_ROUTE, REPORT_EVENTS, tuple(query.items()))
    hooks = (*(h for h in p.webhooks if h.route != REPORT_ROUTE), hook)
    projects = tuple(replace(q, webhooks=hooks) if q.key == key else q for q in layout.projects)
    return validate_layout(Layout(layout.name, projects))
