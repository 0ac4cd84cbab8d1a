"""Turning a Nuclio detector's output into CVAT shapes and tags (contract §3.5, §4.4).

Labels are matched by exact name (skeleton elements by sublabel name). Nothing is dropped
silently: unknown labels are counted in ``Conversion.unmatched_labels`` and every invalid item,
element or attribute leaves a reason in ``Conversion.dropped``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cvat_sdk.masks import encode_mask

from bridge.cvat.types import AttributeSpec, LabelSpec, Shape, Tag, Track
from bridge.errors import FunctionFailed
from bridge.geometry.polygons import polygon_area, simplify_polygon

SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
_FIXED_POINTS = {"rectangle": 4, "ellipse": 4, "cuboid": 16}
_MIN_VERTICES = {"polygon": 3, "polyline": 2, "points": 1}
CONFIDENCE_ATTRIBUTE = "confidence"


@dataclass
class Conversion:
    """Result of converting one frame's detector output."""

    shapes: list[Shape] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    unmatched_labels: dict[str, int] = field(default_factory=dict)  # function label → items dropped
    dropped: list[str] = field(default_factory=list)  # one reason per dropped item/element/attribute
    below_threshold: int = 0  # items dropped because their confidence was below the threshold


class _Skip(Exception):
    """An item (or part of it) is invalid; the message is the reason."""


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Skip(f"{what} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise _Skip(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _Skip(f"{what} is not finite: {value!r}")
    return number


def _flat_points(raw: Any, what: str) -> list[float]:
    if not isinstance(raw, list | tuple):
        raise _Skip(f"{what} has no points list")
    flat: list[Any] = []
    for p in raw:  # accept [[x, y], ...] as well as [x, y, ...]
        if isinstance(p, list | tuple):
            flat.extend(p)
        else:
            flat.append(p)
    return [_as_float(v, f"{what} coordinate") for v in flat]


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class DetectorConverter:
    """Converts detector items (``[{"label", "type", "points", ...}]``) for one label set.

    ``image_size`` passed to :meth:`convert` is ``(width, height)``. Coordinates are clipped
    to ``[0, width] × [0, height]``; mask boxes to pixel indices ``0..width-1 / 0..height-1``.
    """

    def __init__(
        self,
        labels: list[LabelSpec],
        *,
        conv_mask_to_poly: bool = False,
        threshold: float | None = None,
        polygon_tolerance: float = 0.0,
        source: str = "auto",
    ) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        if polygon_tolerance < 0:
            raise ValueError(f"polygon_tolerance must be >= 0, got {polygon_tolerance}")
        self.labels = {label.name: label for label in labels}
        self.conv_mask_to_poly = conv_mask_to_poly
        self.threshold = threshold
        self.polygon_tolerance = polygon_tolerance
        self.source = source

    # --- public ---------------------------------------------------------------------------
    def convert(self, items: list[dict], frame: int, image_size: tuple[int, int]) -> Conversion:
        """Convert one frame's detector output; raises ``FunctionFailed`` if it is not a list."""
        if not isinstance(items, list):
            raise FunctionFailed(
                f"detector output must be a JSON list of shapes, got {type(items).__name__}"
            )
        width, height = (int(v) for v in image_size)
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {image_size}")
        result = Conversion()
        unmatched: Counter[str] = Counter()
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                result.dropped.append(f"item {index} is not an object: {item!r:.80}")
                continue
            name = item.get("label")
            if not isinstance(name, str) or not name:
                result.dropped.append(f"item {index} has no label name")
                continue
            label = self.labels.get(name)
            if label is None:
                unmatched[name] += 1
                continue
            try:
                self._convert_item(item, label, frame, width, height, result)
            except _Skip as exc:
                result.dropped.append(f"{exc} (label {name})")
        result.unmatched_labels = dict(unmatched)
        return result

    # --- items ----------------------------------------------------------------------------
    def _convert_item(
        self, item: dict, label: LabelSpec, frame: int, width: int, height: int, out: Conversion
    ) -> None:
        kind = item.get("type")
        if kind == "mask" and self.conv_mask_to_poly and item.get("points"):
            kind = "polygon"
        if kind != "tag" and kind not in SHAPE_TYPES:
            raise _Skip(f"unknown shape type {kind!r}")
        self._check_label_type(label, kind)

        confidence = self._confidence(item)
        if self.threshold is not None and confidence is not None and confidence < self.threshold:
            out.below_threshold += 1
            return
        attributes = self._attributes(item, label, confidence, out.dropped)

        if kind == "tag":
            out.tags.append(Tag(label_id=label.id, frame=frame, source=self.source, attributes=attributes))
            return

        if kind == "skeleton":
            points: list[float] = []
            elements = self._elements(item, label, frame, width, height, out.dropped)
        elif kind == "mask":
            points = self._mask(item, width, height)
            elements = []
        else:
            points = self._geometry(kind, item, width, height)
            elements = []

        rotation = 0.0
        if kind in ("rectangle", "ellipse") and item.get("rotation") is not None:
            rotation = _as_float(item["rotation"], "rotation") % 360.0
        group = item.get("group_id", item.get("group", 0)) or 0
        if isinstance(group, bool) or not isinstance(group, int) or group < 0:
            raise _Skip(f"group_id must be a non-negative integer, got {group!r}")
        z_order = item.get("z_order", 0) or 0
        if isinstance(z_order, bool) or not isinstance(z_order, int):
            raise _Skip(f"z_order must be an integer, got {z_order!r}")
        out.shapes.append(
            Shape(
                type=kind,
                label_id=label.id,
                frame=frame,
                points=points,
                source=self.source,
                score=confidence,
                attributes=attributes,
                elements=elements,
                occluded=bool(item.get("occluded", False)),
                outside=bool(item.get("outside", False)),
                z_order=z_order,
                rotation=rotation,
                group=group,
            )
        )

    @staticmethod
    def _check_label_type(label: LabelSpec, kind: str) -> None:
        ltype = label.type or "any"
        if ltype == kind or {ltype, kind} == {"mask", "polygon"}:
            return
        if ltype == "any" and kind != "skeleton":
            return
        raise _Skip(f"a {kind} cannot be stored under a {ltype} label")

    # --- confidence and attributes ----------------------------------------------------------
    @staticmethod
    def _confidence(item: dict) -> float | None:
        raw = item.get("confidence")
        from_attr = False
        if raw is None:
            for attr in item.get("attributes") or []:
                if isinstance(attr, dict) and attr.get("name") == CONFIDENCE_ATTRIBUTE:
                    raw, from_attr = attr.get("value"), True
                    break
        if raw is None:
            return None
        value = _as_float(raw, "confidence")
        if value > 1.0 and (from_attr or value <= 100.0):
            value /= 100.0  # "87" (percent, the CVAT attribute convention)
        if not 0.0 <= value <= 1.0:
            raise _Skip(f"confidence {raw!r} is outside 0..1 (or 0..100)")
        return value

    def _attributes(
        self, item: dict, label: LabelSpec, confidence: float | None, dropped: list[str]
    ) -> dict[int, str]:
        values: dict[int, str] = {}
        raw_attrs = item.get("attributes") or []
        if not isinstance(raw_attrs, list):
            dropped.append(f"attributes of a {label.name} item are not a list; ignored")
            raw_attrs = []
        for attr in raw_attrs:
            if not isinstance(attr, dict) or not isinstance(attr.get("name"), str):
                dropped.append(f"attribute {attr!r:.60} is not {{name, value}} (label {label.name})")
                continue
            name = attr["name"]
            if name == CONFIDENCE_ATTRIBUTE:
                continue  # handled through ``confidence`` below
            spec = label.attributes.get(name)
            if spec is None:
                dropped.append(f"attribute {name!r} does not exist on label {label.name}")
                continue
            try:
                values[spec.id] = validate_attribute(spec, attr.get("value"))
            except ValueError as exc:
                dropped.append(f"{exc} (label {label.name})")
        conf_spec = label.attributes.get(CONFIDENCE_ATTRIBUTE)
        if conf_spec is not None and confidence is not None and conf_spec.input_type in ("number", "text"):
            values[conf_spec.id] = confidence_value(conf_spec, confidence)
        return values

    # --- geometry ---------------------------------------------------------------------------
    def _geometry(self, kind: str, item: dict, width: int, height: int) -> list[float]:
        pts = _flat_points(item.get("points"), kind)
        if kind in _FIXED_POINTS:
            if len(pts) != _FIXED_POINTS[kind]:
                raise _Skip(f"{kind} with {len(pts)} numbers (needs {_FIXED_POINTS[kind]})")
        elif len(pts) % 2:
            raise _Skip(f"{kind} with an odd number of coordinates ({len(pts)})")
        xy = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        xy[:, 0] = np.clip(xy[:, 0], 0.0, float(width))
        xy[:, 1] = np.clip(xy[:, 1], 0.0, float(height))

        if kind == "rectangle":
            (x1, y1), (x2, y2) = np.sort(xy, axis=0)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                raise _Skip("rectangle with zero area")
            return [float(x1), float(y1), float(x2), float(y2)]
        if kind == "ellipse":
            (cx, cy), (rx, ry) = xy
            if abs(rx - cx) <= 0 or abs(ry - cy) <= 0:
                raise _Skip("ellipse with a zero radius")
            return [float(v) for v in xy.ravel()]
        if kind == "cuboid":
            return [float(v) for v in xy.ravel()]

        minimum = _MIN_VERTICES[kind]
        if len(xy) < minimum:
            raise _Skip(f"{kind} with {len(xy)} vertices (needs at least {minimum})")
        if kind == "polygon":
            flat = [float(v) for v in xy.ravel()]
            if polygon_area(flat) <= 0:
                raise _Skip("polygon with zero area")
            simplified = simplify_polygon(flat, self.polygon_tolerance)
            return simplified if polygon_area(simplified) > 0 else flat
        elif kind == "polyline" and np.all(xy == xy[0]):
            raise _Skip("polyline with zero length")
        return [float(v) for v in xy.ravel()]

    def _mask(self, item: dict, width: int, height: int) -> list[float]:
        raw = item.get("mask")
        if not isinstance(raw, list) or len(raw) < 5:
            raise _Skip("mask item without a 'mask' list (raw 0/1 crop + [xtl, ytl, xbr, ybr])")
        return raw_mask_to_rle(raw, width, height)

    def _elements(
        self, item: dict, label: LabelSpec, frame: int, width: int, height: int, dropped: list[str]
    ) -> list[Shape]:
        if not label.sublabels:
            raise _Skip(f"label {label.name} has no sublabels for a skeleton")
        raw_elements = item.get("elements")
        if not isinstance(raw_elements, list) or not raw_elements:
            raise _Skip("skeleton without elements")
        found: dict[str, tuple[float, float, bool, dict[int, str]]] = {}
        for raw in raw_elements:
            name = raw.get("label") if isinstance(raw, dict) else None
            sub = label.sublabels.get(name) if isinstance(name, str) else None
            if sub is None:
                dropped.append(f"skeleton element {name!r} is not a sublabel of {label.name}")
                continue
            if name in found:
                dropped.append(f"skeleton element {name!r} given twice (label {label.name}); first kept")
                continue
            if raw.get("type", "points") != "points":
                dropped.append(f"skeleton element {name!r} has type {raw.get('type')!r}, not points")
                continue
            try:
                pts = _flat_points(raw.get("points"), f"skeleton element {name!r}")
                if len(pts) != 2:
                    raise _Skip(f"skeleton element {name!r} with {len(pts)} numbers (needs 2)")
            except _Skip as exc:
                dropped.append(f"{exc} (label {label.name}); marked outside")
                continue
            x = min(max(pts[0], 0.0), float(width))
            y = min(max(pts[1], 0.0), float(height))
            attrs: dict[int, str] = {}
            for attr in raw.get("attributes") or []:
                spec = sub.attributes.get(attr.get("name")) if isinstance(attr, dict) else None
                if spec is None:
                    dropped.append(f"attribute {attr!r:.60} does not exist on sublabel {name!r}")
                    continue
                try:
                    attrs[spec.id] = validate_attribute(spec, attr.get("value"))
                except ValueError as exc:
                    dropped.append(f"{exc} (sublabel {name!r} of {label.name})")
            found[name] = (x, y, bool(raw.get("outside", False)), attrs)
        visible = [(x, y) for x, y, outside, _ in found.values() if not outside]
        if not visible:
            raise _Skip("skeleton with every element outside")
        cx = float(np.mean([p[0] for p in visible]))
        cy = float(np.mean([p[1] for p in visible]))
        elements = []
        for name, sub in label.sublabels.items():
            x, y, outside, attrs = found.get(name, (cx, cy, True, {}))
            elements.append(
                Shape(
                    type="points", label_id=sub.id, frame=frame, points=[x, y],
                    source=self.source, attributes=attrs, outside=outside,
                )
            )
        return elements


# --- helpers usable on their own ---------------------------------------------------------------
def validate_attribute(spec: AttributeSpec, value: Any) -> str:
    """The CVAT string for ``value`` under ``spec``; ``ValueError`` says why it is invalid."""
    if value is None:
        raise ValueError(f"attribute {spec.name!r} has no value")
    text = _attr_text(value).strip()
    kind = spec.input_type
    if kind in ("select", "radio"):
        if text not in spec.values:
            raise ValueError(f"attribute {spec.name!r}={text!r} is not one of {spec.values}")
        return text
    if kind == "checkbox":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"attribute {spec.name!r}={text!r} is not true/false")
        return text.lower()
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"attribute {spec.name!r}={text!r} is not a number") from None
        low, high = _number_range(spec)
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"attribute {spec.name!r}={text!r} is outside {low:g}..{high:g}")
        return str(int(number)) if number.is_integer() else repr(number)
    return text  # text


def _number_range(spec: AttributeSpec) -> tuple[float, float]:
    try:
        return float(spec.values[0]), float(spec.values[1])
    except (IndexError, ValueError):
        return -math.inf, math.inf


def confidence_value(spec: AttributeSpec, confidence: float) -> str:
    """``confidence`` (0..1) as the integer percent string a CVAT number attribute accepts."""
    low, high = _number_range(spec)
    percent = min(max(round(confidence * 100), low), high)
    return str(int(percent))


def raw_mask_to_rle(raw: list[Any], width: int, height: int) -> list[float]:
    """Nuclio detector ``mask`` (flat 0/1 crop + inclusive ``[xtl, ytl, xbr, ybr]``) → CVAT RLE.

    The crop is clipped to the image, tightened to its non-zero pixels and encoded exactly as
    ``cvat_sdk.masks.encode_mask`` does (runs start with zeros; inclusive ``[l, t, r, b]``).
    """
    try:
        xtl, ytl, xbr, ybr = (int(round(_as_float(v, "mask box"))) for v in raw[-4:])
    except _Skip as exc:
        raise _Skip(str(exc)) from None
    crop_w, crop_h = xbr - xtl + 1, ybr - ytl + 1
    if crop_w <= 0 or crop_h <= 0:
        raise _Skip(f"mask with an empty box {[xtl, ytl, xbr, ybr]}")
    body = raw[:-4]
    if len(body) != crop_w * crop_h:
        raise _Skip(f"mask with {len(body)} values for a {crop_w}x{crop_h} box")
    try:
        crop = np.asarray(body, dtype=np.float64).reshape(crop_h, crop_w)
    except (TypeError, ValueError):
        raise _Skip("mask values are not numbers") from None
    if not np.all(np.isfinite(crop)):
        raise _Skip("mask values are not finite")
    bitmap = crop > 0.5 if crop.max(initial=0) <= 1.0 else crop > 127
    # clip the box to the image
    x0, y0 = max(xtl, 0), max(ytl, 0)
    x1, y1 = min(xbr, width - 1), min(ybr, height - 1)
    if x0 > x1 or y0 > y1:
        raise _Skip("mask lies outside the image")
    bitmap = bitmap[y0 - ytl : y1 - ytl + 1, x0 - xtl : x1 - xtl + 1]
    if not bitmap.any():
        raise _Skip("empty mask")
    encoded = encode_mask(bitmap)
    left, top, right, bottom = encoded[-4:]
    return [float(v) for v in encoded[:-4]] + [float(left + x0), float(top + y0), float(right + x0),
                                                float(bottom + y0)]


# --- JSON (CVAT REST) form ----------------------------------------------------------------------
def shape_to_json(s: Shape) -> dict[str, Any]:
    """A ``Shape`` as CVAT's ``LabeledShapeRequest`` JSON (ids included only when set)."""
    data: dict[str, Any] = {
        "type": s.type,
        "label_id": s.label_id,
        "frame": s.frame,
        "points": [float(p) for p in s.points],
        "source": s.source,
        "occluded": s.occluded,
        "outside": s.outside,
        "z_order": s.z_order,
        "rotation": s.rotation,
        "group": s.group,
        "attributes": [{"spec_id": k, "value": v} for k, v in s.attributes.items()],
        "elements": [shape_to_json(e) for e in s.elements],
    }
    if s.score is not None:
        data["score"] = s.score
    if s.id is not None:
        data["id"] = s.id
    return data


def shape_from_request_json(d: dict[str, Any]) -> Shape:
    """A ``Shape`` from CVAT's shape JSON (as read from or sent to ``/annotations``)."""
    try:
        return Shape(
            type=str(d["type"]),
            label_id=int(d["label_id"]),
            frame=int(d.get("frame", 0)),
            points=[float(p) for p in d.get("points") or []],
            source=str(d.get("source") or "manual"),
            score=None if d.get("score") is None else float(d["score"]),
            attributes={int(a["spec_id"]): str(a["value"]) for a in d.get("attributes") or []},
            elements=[shape_from_request_json(e) for e in d.get("elements") or []],
            occluded=bool(d.get("occluded", False)),
            outside=bool(d.get("outside", False)),
            z_order=int(d.get("z_order") or 0),
            rotation=float(d.get("rotation") or 0.0),
            group=int(d.get("group") or 0),
            id=None if d.get("id") is None else int(d["id"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a CVAT shape: {exc!r} in {str(d)[:120]}") from exc


def track_to_json(t: Track) -> dict[str, Any]:
    """A ``Track`` as CVAT's ``LabeledTrackRequest`` JSON."""
    data: dict[str, Any] = {
        "label_id": t.label_id,
        "frame": t.frame,
        "source": t.source,
        "group": t.group,
        "attributes": [{"spec_id": k, "value": v} for k, v in t.attributes.items()],
        "shapes": [{"type": s.type, "frame": s.frame, "points": [float(p) for p in s.points],
                    "outside": s.outside, "occluded": s.occluded, "z_order": s.z_order, "rotation": s.rotation,
                    "attributes": [{"spec_id": k, "value": v} for k, v in s.attributes.items()]}
                   for s in t.shapes],
        "elements": [],
    }
    if t.id is not None:
        data["id"] = t.id
    return data


def track_from_json(d: dict[str, Any]) -> Track:
    label = int(d["label_id"])
    return Track(
        label_id=label, frame=int(d.get("frame", 0)), source=str(d.get("source") or "manual"),
        group=int(d.get("group") or 0), id=None if d.get("id") is None else int(d["id"]),
        attributes={int(a["spec_id"]): str(a["value"]) for a in d.get("attributes") or []},
        shapes=[Shape(type=str(s["type"]), label_id=label, frame=int(s["frame"]),
                      points=[float(p) for p in s.get("points") or []], outside=bool(s.get("outside", False)),
                      occluded=bool(s.get("occluded", False)), z_order=int(s.get("z_order") or 0),
                      rotation=float(s.get("rotation") or 0.0))
                for s in d.get("shapes") or []],
    )


def tag_to_json(t: Tag) -> dict[str, Any]:
    data: dict[str, Any] = {
        "label_id": t.label_id,
        "frame": t.frame,
        "source": t.source,
        "group": 0,
        "attributes": [{"spec_id": k, "value": v} for k, v in t.attributes.items()],
    }
    if t.id is not None:
        data["id"] = t.id
    return data


def tag_from_json(d: dict[str, Any]) -> Tag:
    try:
        return Tag(
            label_id=int(d["label_id"]),
            frame=int(d.get("frame", 0)),
            source=str(d.get("source") or "manual"),
            attributes={int(a["spec_id"]): str(a["value"]) for a in d.get("attributes") or []},
            id=None if d.get("id") is None else int(d["id"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a CVAT tag: {exc!r} in {str(d)[:120]}") from exc
