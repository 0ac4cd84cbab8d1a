"""Read what the bridge needs from a Nuclio function config (dashboard ``GET /api/functions/{name}``).

CVAT reads ``metadata.annotations.type`` and the JSON string ``metadata.annotations.spec``; the
bridge also needs the HTTP trigger's ``maxWorkers`` / ``maxRequestBodySize`` and ``eventTimeout``
to size its concurrency, body budget and timeouts. Problems are collected, never raised, so one
broken function does not hide the others.
"""

from __future__ import annotations

import json
import re
from typing import Any

FUNCTION_TYPES = ("detector", "interactor", "reid", "tracker")
LABEL_TYPES = ("any", "rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask",
               "skeleton", "tag")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float | None:
    """Go duration (``"30s"``, ``"1m30s"``, ``"500ms"``) or a number of seconds → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def check_labels(spec: Any) -> list[str]:
    """Problems with a parsed ``spec`` labels list, as CVAT would see them."""
    if not isinstance(spec, list):
        return [f"metadata.annotations.spec must be a JSON list of labels, got {type(spec).__name__}"]
    problems: list[str] = []
    seen: set[str] = set()
    for i, label in enumerate(spec):
        if not isinstance(label, dict) or not isinstance(label.get("name"), str) or not label["name"]:
            problems.append(f"label {i} has no 'name': {label!r:.120}")
            continue
        name = label["name"]
        if name in seen:
            problems.append(f"label name {name!r} appears twice")
        seen.add(name)
        kind = label.get("type", "any")
        if kind not in LABEL_TYPES:
            problems.append(f"label {name!r} has unknown type {kind!r}")
        if kind == "skeleton" and not (label.get("sublabels") and label.get("svg")):
            problems.append(f"skeleton label {name!r} needs 'sublabels' and 'svg'")
    return problems


def _http_trigger(spec: dict[str, Any]) -> dict[str, Any] | None:
    triggers = spec.get("triggers")
    if not isinstance(triggers, dict):
        return None
    for trigger in triggers.values():
        if isinstance(trigger, dict) and trigger.get("kind") == "http":
            return trigger
    return None


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def parse_function_config(config: Any, name: str) -> dict[str, Any]:
    """Nuclio function config → ``{"name", "type", "spec", "max_workers", "event_timeout", "max_body",
    "problems"}`` (``spec`` is the parsed labels list, or ``None`` when it cannot be parsed)."""
    if isinstance(config, dict) and "metadata" not in config and isinstance(config.get(name), dict):
        config = config[name]  # some dashboards wrap the config in {name: config}
    problems: list[str] = []
    if not isinstance(config, dict):
        return {"name": name, "type": None, "spec": None, "max_workers": None, "event_timeout": None,
                "max_body": None, "problems": [f"function config is not an object: {config!r:.120}"]}
    metadata = config.get("metadata") if isinstance(config.get("metadata"), dict) else {}
    annotations = metadata.get("annotations") if isinstance(metadata.get("annotations"), dict) else {}
    spec = config.get("spec") if isinstance(config.get("spec"), dict) else {}

    kind = annotations.get("type")
    raw_spec = annotations.get("spec")
    # No type and no labels: a function only the bridge calls (pth-lama), kept out of the project CVAT
    # lists; nothing to check. A type CVAT does not know is a problem (CVAT 2.73 500s on it).
    bridge_only = kind is None and raw_spec is None
    if kind not in FUNCTION_TYPES and not bridge_only:
        problems.append(f"metadata.annotations.type is {kind!r}; CVAT lists only {', '.join(FUNCTION_TYPES)}")
    labels: list[Any] | None = None
    if raw_spec is None:
        if not bridge_only:
            problems.append("metadata.annotations.spec is missing")
    else:
        try:
            parsed = json.loads(raw_spec) if isinstance(raw_spec, str) else raw_spec
        except json.JSONDecodeError as exc:
            problems.append(f"metadata.annotations.spec is not valid JSON: {exc}")
        else:
            label_problems = check_labels(parsed)
            problems.extend(label_problems)
            labels = parsed if isinstance(parsed, list) else None

    trigger = _http_trigger(spec) or {}
    attributes = trigger.get("attributes") if isinstance(trigger.get("attributes"), dict) else {}
    max_workers = _positive_int(trigger.get("maxWorkers") or trigger.get("numWorkers"))
    max_body = _positive_int(attributes.get("maxRequestBodySize"))
    return {
        "name": metadata.get("name") or name,
        "type": kind,
        "spec": labels,
        "max_workers": max_workers,
        "event_timeout": parse_duration(spec.get("eventTimeout")),
        "max_body": max_body,
        "problems": problems,
    }
