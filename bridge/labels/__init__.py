"""Label schemas for ``bridge setup``: loading CVAT label exports and making them creatable.

A label export (``GET /api/labels`` or the project "Constructor > Raw" text) cannot be sent back
unchanged: the skeleton ``svg`` is HTML-escaped and its ``data-label-id`` values are the ids of the
instance that exported it. ``prepare_labels`` unescapes the SVG, rewrites every
``data-label-id="…"`` as ``data-label-name="<sublabel name>"`` (CVAT turns names into the new ids
on creation) and strips instance fields (ids, project/task ids, parent flags).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

LABELS_DIR = Path(__file__).resolve().parent

# Built-in label sets (file name in bridge/labels/ without ".json").
BUILTIN_LABEL_SETS = ("quadrat_corner", "grid", "coral_finegrained")

_LABEL_KEYS = ("name", "color", "type", "attributes", "sublabels", "svg")
_SUBLABEL_KEYS = ("name", "color", "type", "attributes")
_ATTRIBUTE_KEYS = ("name", "mutable", "input_type", "default_value", "values")
_LABEL_TYPES = {
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
}
_INPUT_TYPES = {"select", "radio", "checkbox", "number", "text"}
_LABEL_ID_RE = re.compile(r"""data-label-id\s*=\s*(["'])(\d+)\1""")
_NODE_ID_RE = re.compile(r"""data-node-id\s*=\s*(["'])(\d+)\1""")


def load_label_file(path: Path | str) -> list[dict[str, Any]]:
    """Read a CVAT label export (a JSON list of labels, or ``{"labels": [...]}``) and prepare it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"label file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"label file {path} is not readable JSON: {exc}") from exc
    if isinstance(data, dict) and "labels" in data:
        data = data["labels"]
    elif isinstance(data, dict) and "results" in data:  # a saved GET /api/labels page
        data = data["results"]
    try:
        return prepare_labels(data)
    except ConfigError as exc:
        raise ConfigError(f"label file {path}: {exc}") from exc


def builtin_labels(name: str) -> list[dict[str, Any]]:
    """One of ``BUILTIN_LABEL_SETS``, prepared for project creation."""
    if name not in BUILTIN_LABEL_SETS:
        raise ConfigError(f"unknown label set {name!r}; built-in sets: {', '.join(BUILTIN_LABEL_SETS)}")
    return load_label_file(LABELS_DIR / f"{name}.json")


def prepare_labels(labels: Any) -> list[dict[str, Any]]:
    """Validate a list of label dicts and return clean copies ready for ``ProjectWriteRequest``."""
    if not isinstance(labels, list) or not labels:
        raise ConfigError("labels must be a non-empty JSON list of label objects")
    out = [_prepare_label(label, i) for i, label in enumerate(labels)]
    names = [label["name"] for label in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate label names: {', '.join(dupes)}")
    return out


def _prepare_label(label: Any, index: int) -> dict[str, Any]:
    if not isinstance(label, dict) or not isinstance(label.get("name"), str) or not label["name"].strip():
        raise ConfigError(f"label #{index + 1} needs a non-empty 'name'")
    name = label["name"]
    clean = {k: label[k] for k in _LABEL_KEYS if k in label and label[k] is not None}
    clean.setdefault("type", "any")
    if clean["type"] not in _LABEL_TYPES:
        raise ConfigError(f"label {name!r}: unknown type {clean['type']!r}")
    clean["attributes"] = [_prepare_attribute(a, name) for a in label.get("attributes") or []]
    subs = label.get("sublabels") or []
    if clean["type"] == "skeleton":
        if not subs:
            raise ConfigError(f"skeleton label {name!r} has no sublabels")
        clean["sublabels"] = [_prepare_sublabel(s, name) for s in subs]
        sub_names = [s["name"] for s in clean["sublabels"]]
        if len(set(sub_names)) != len(sub_names):
            raise ConfigError(f"skeleton label {name!r} has duplicate sublabel names")
        clean["svg"] = fix_skeleton_svg(label.get("svg") or "", subs, name)
    else:
        if subs:
            raise ConfigError(f"label {name!r} has sublabels but is not a skeleton")
        clean.pop("sublabels", None)
        clean.pop("svg", None)
    return clean


def _prepare_sublabel(sub: Any, parent: str) -> dict[str, Any]:
    if not isinstance(sub, dict) or not isinstance(sub.get("name"), str) or not sub["name"]:
        raise ConfigError(f"skeleton {parent!r}: every sublabel needs a 'name'")
    clean = {k: sub[k] for k in _SUBLABEL_KEYS if k in sub and sub[k] is not None}
    clean.setdefault("type", "points")
    clean["attributes"] = [
        _prepare_attribute(a, f"{parent}/{sub['name']}") for a in sub.get("attributes") or []
    ]
    return clean


def _prepare_attribute(attr: Any, owner: str) -> dict[str, Any]:
    if not isinstance(attr, dict) or not attr.get("name") or attr.get("input_type") not in _INPUT_TYPES:
        raise ConfigError(
            f"label {owner!r}: each attribute needs a 'name' and an 'input_type' among "
            f"{', '.join(sorted(_INPUT_TYPES))}"
        )
    clean = {k: attr[k] for k in _ATTRIBUTE_KEYS if k in attr and attr[k] is not None}
    clean["values"] = [str(v) for v in clean.get("values") or []]
    clean.setdefault("mutable", False)
    return clean


def fix_skeleton_svg(svg: str, sublabels: list[dict[str, Any]], parent: str = "") -> str:
    """Unescape an exported skeleton SVG and refer to sublabels by name instead of instance id.

    Ids are matched to sublabels by the sublabels' own ``id`` when the export carries them;
    otherwise by rank (CVAT exports sublabels in id order), cross-checked with ``data-node-id``.
    An SVG already written with ``data-label-name`` is returned unescaped and otherwise unchanged.
    """
    svg = html.unescape(svg).strip()
    if not svg:
        raise ConfigError(f"skeleton {parent!r} has no 'svg' (CVAT needs the node layout)")
    ids = [int(m.group(2)) for m in _LABEL_ID_RE.finditer(svg)]
    if not ids:
        return svg
    names = [str(s["name"]) for s in sublabels]
    by_own_id = {int(s["id"]): str(s["name"]) for s in sublabels if isinstance(s.get("id"), int)}
    if by_own_id and set(ids) <= set(by_own_id):
        mapping = by_own_id
    else:
        distinct = sorted(set(ids))
        if len(distinct) != len(names) or len(ids) != len(distinct):
            raise ConfigError(
                f"skeleton {parent!r}: the SVG refers to {len(distinct)} label ids "
                f"({len(ids)} nodes) but there are {len(names)} sublabels"
            )
        mapping = dict(zip(distinct, names, strict=True))
        _cross_check_nodes(svg, mapping, names, parent)

    bad = sorted(n for n in mapping.values() if '"' in n or "<" in n or ">" in n)
    if bad:
        raise ConfigError(
            f"skeleton {parent!r}: sublabel names may not contain quotes or angle brackets: {bad}"
        )

    def _by_name(m: re.Match[str]) -> str:
        # CVAT replaces the literal text data-label-name="<name>" with the new id: no escaping.
        return f'data-label-name="{mapping[int(m.group(2))]}"'

    return _LABEL_ID_RE.sub(_by_name, svg)


def _cross_check_nodes(svg: str, mapping: dict[int, str], names: list[str], parent: str) -> None:
    """Where nodes carry ``data-node-id`` = position, it must agree with the id rank mapping."""
    for element in re.split(r"(?=<)", svg):
        label = _LABEL_ID_RE.search(element)
        node = _NODE_ID_RE.search(element)
        if not (label and node):
            continue
        pos = int(node.group(2))
        if 1 <= pos <= len(names) and names[pos - 1] != mapping[int(label.group(2))]:
            raise ConfigError(
                f"skeleton {parent!r}: node {pos} refers to label id {label.group(2)}, which does not "
                "follow the sublabel order; give the sublabels their exported 'id' values"
            )


def label_summary(label: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """What must match between a preset label and a project label: name, type, sublabel names."""
    subs = tuple(sorted(str(s.get("name")) for s in label.get("sublabels") or []))
    return str(label.get("name")), str(label.get("type") or "any"), subs


def svg_refers_to(svg: str) -> set[int]:
    """Label ids a stored skeleton SVG refers to (``data-label-id``)."""
    return {int(m.group(2)) for m in _LABEL_ID_RE.finditer(html.unescape(svg or ""))}
