"""Validate and normalise annotation objects (shapes, tags, tracks) the way CVAT's serializers do."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .util import bad_request

SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
SOURCES = ("manual", "auto", "semi-auto", "file", "consensus")


@dataclass
class LabelRec:
    """A stored label (top-level or skeleton sublabel)."""

    id: int
    name: str
    color: str
    type: str
    attributes: list[dict]
    svg: str = ""
    project_id: int | None = None
    parent_id: int | None = None
    sublabel_ids: list[int] = field(default_factory=list)


def _points(shape_type: str, raw: Any, where: str) -> list[float]:
    if raw is None:
        raw = []
    if not isinstance(raw, list) or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) for p in raw
    ):
        raise bad_request(f"{where}: points must be a list of finite numbers", "points")
    n = len(raw)
    ok = {
        "rectangle": n == 4,
        "ellipse": n == 4,
        "polygon": n >= 6 and n % 2 == 0,
        "polyline": n >= 4 and n % 2 == 0,
        "points": n >= 2 and n % 2 == 0,
        "cuboid": n == 16,
        "mask": n >= 5,
        "skeleton": n == 0,
    }[shape_type]
    if not ok:
        raise bad_request(f"{where}: {n} points is not valid for a {shape_type}", "points")
    if shape_type == "mask":
        if any(p < 0 or p != int(p) for p in raw):
            raise bad_request(f"{where}: mask RLE and bbox must be non-negative integers", "points")
        left, top, right, bottom = raw[-4:]
        if right < left or bottom < top:
            raise bad_request(f"{where}: mask bbox [{left}, {top}, {right}, {bottom}] is inverted", "points")
        if sum(raw[:-4]) != (right - left + 1) * (bottom - top + 1):
            raise bad_request(f"{where}: mask RLE does not cover its bbox", "points")
    return [float(p) for p in raw]


class Validator:
    """Checks objects against a project's labels and a job's frame range; assigns ids."""

    def __init__(
        self,
        labels: dict[int, LabelRec],
        top_level: set[int],
        frames: tuple[int, int],
        next_id: Callable[[], int],
    ):
        self.labels = labels
        self.top_level = top_level
        self.start, self.stop = frames
        self.next_id = next_id

    # -- pieces ---------------------------------------------------------------------------------
    def _label(self, obj: dict, allowed: set[int], where: str) -> LabelRec:
        label_id = obj.get("label_id")
        if not isinstance(label_id, int) or isinstance(label_id, bool) or label_id not in allowed:
            raise bad_request(f"{where}: label_id {label_id!r} is not a label of this project", "label_id")
        return self.labels[label_id]

    def _frame(self, obj: dict, where: str) -> int:
        frame = obj.get("frame")
        if not isinstance(frame, int) or isinstance(frame, bool):
            raise bad_request(f"{where}: frame must be an integer", "frame")
        if not self.start <= frame <= self.stop:
            raise bad_request(
                f"{where}: frame {frame} is outside the job's frame range [{self.start}, {self.stop}]",
                "frame",
            )
        return frame

    def _attributes(self, raw: Any, label: LabelRec, where: str) -> list[dict]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise bad_request(f"{where}: attributes must be a list", "attributes")
        specs = {a["id"]: a for a in label.attributes}
        out = []
        for item in raw:
            spec_id = item.get("spec_id") if isinstance(item, dict) else None
            value = item.get("value") if isinstance(item, dict) else None
            if spec_id not in specs:
                raise bad_request(
                    f"{where}: attribute spec_id {spec_id!r} does not belong to label {label.name!r}",
                    "attributes",
                )
            if not isinstance(value, str):
                raise bad_request(f"{where}: attribute value must be a string", "attributes")
            spec = specs[spec_id]
            kind = spec["input_type"]
            if kind == "number":
                lo, hi = float(spec["values"][0]), float(spec["values"][1])
                try:
                    num = float(value)
                except ValueError:
                    num = math.nan
                if not (math.isfinite(num) and lo <= num <= hi):
                    raise bad_request(
                        f"{where}: value {value!r} of number attribute {spec['name']!r} "
                        f"must be a numeric string in [{spec['values'][0]}, "
                        f"{spec['values'][1]}]",
                        "attributes",
                    )
            elif kind in ("select", "radio") and value not in spec["values"]:
                raise bad_request(f"{where}: value {value!r} is not one of {spec['values']}", "attributes")
            elif kind == "checkbox" and value not in ("true", "false"):
                raise bad_request(f"{where}: checkbox value must be 'true' or 'false'", "attributes")
            out.append({"spec_id": spec_id, "value": value})
        return out

    @staticmethod
    def _common(obj: dict, where: str) -> dict:
        source = obj.get("source", "manual")
        if source not in SOURCES:
            raise bad_request(f"{where}: source {source!r} is not one of {SOURCES}", "source")
        group = obj.get("group", 0)
        if group is not None and (not isinstance(group, int) or group < 0):
            raise bad_request(f"{where}: group must be a non-negative integer", "group")
        return {"group": group if group is not None else 0, "source": source}

    @staticmethod
    def _geometry(obj: dict, shape_type: str, where: str) -> dict:
        out = {}
        for key in ("occluded", "outside"):
            value = obj.get(key, False)
            if not isinstance(value, bool):
                raise bad_request(f"{where}: {key} must be a boolean", key)
            out[key] = value
        z_order = obj.get("z_order", 0)
        rotation = obj.get("rotation", 0.0)
        if not isinstance(z_order, int) or isinstance(z_order, bool):
            raise bad_request(f"{where}: z_order must be an integer", "z_order")
        if not isinstance(rotation, int | float) or isinstance(rotation, bool):
            raise bad_request(f"{where}: rotation must be a number", "rotation")
        out.update(
            z_order=z_order,
            rotation=float(rotation) % 360.0,
            points=_points(shape_type, obj.get("points"), where),
        )
        return out

    @staticmethod
    def _score(obj: dict, where: str) -> float:
        score = obj.get("score", 1.0)
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
            raise bad_request(f"{where}: score must be a number in [0, 1]", "score")
        return float(score)

    def _type(self, obj: dict, where: str) -> str:
        shape_type = obj.get("type")
        if shape_type not in SHAPE_TYPES:
            raise bad_request(f'{where}: "{shape_type}" is not a valid choice.', "type")
        return shape_type

    # -- objects --------------------------------------------------------------------------------
    def shape(self, obj: Any, where: str, *, keep_id: bool = False) -> dict:
        if not isinstance(obj, dict):
            raise bad_request(f"{where}: must be an object")
        shape_type = self._type(obj, where)
        label = self._label(obj, self.top_level, where)
        frame = self._frame(obj, where)
        elements_raw = obj.get("elements") or []
        if shape_type == "skeleton":
            if not label.sublabel_ids:
                raise bad_request(f"{where}: label {label.name!r} is not a skeleton", "label_id")
            if not elements_raw:
                raise bad_request(f"{where}: a skeleton needs at least one element", "elements")
        elif elements_raw:
            raise bad_request(f"{where}: only skeletons may have elements", "elements")
        out = {
            "type": shape_type,
            **self._geometry(obj, shape_type, where),
            "id": obj["id"] if keep_id else self.next_id(),
            "frame": frame,
            "label_id": label.id,
            **self._common(obj, where),
            "attributes": self._attributes(obj.get("attributes"), label, where),
        }
        elements = []
        seen: set[int] = set()
        for i, el in enumerate(elements_raw):
            ew = f"{where}.elements[{i}]"
            if not isinstance(el, dict):
                raise bad_request(f"{ew}: must be an object")
            if el.get("type") != "points":
                raise bad_request(f"{ew}: skeleton elements must be of type 'points'", "type")
            sub = self._label(el, set(label.sublabel_ids), ew)
            if sub.id in seen:
                raise bad_request(f"{ew}: sublabel {sub.name!r} appears twice", "label_id")
            seen.add(sub.id)
            elements.append(
                {
                    "type": "points",
                    **self._geometry(el, "points", ew),
                    "id": self.next_id(),
                    "frame": frame,
                    "label_id": sub.id,
                    **self._common(el, ew),
                    "attributes": self._attributes(el.get("attributes"), sub, ew),
                    "score": self._score(el, ew),
                }
            )
        out["elements"] = elements
        out["score"] = self._score(obj, where)
        return out

    def tag(self, obj: Any, where: str, *, keep_id: bool = False) -> dict:
        if not isinstance(obj, dict):
            raise bad_request(f"{where}: must be an object")
        label = self._label(obj, self.top_level, where)
        return {
            "id": obj["id"] if keep_id else self.next_id(),
            "frame": self._frame(obj, where),
            "label_id": label.id,
            **self._common(obj, where),
            "attributes": self._attributes(obj.get("attributes"), label, where),
        }

    def track(self, obj: Any, where: str, *, keep_id: bool = False) -> dict:
        if not isinstance(obj, dict):
            raise bad_request(f"{where}: must be an object")
        label = self._label(obj, self.top_level, where)
        shapes_raw = obj.get("shapes")
        if not isinstance(shapes_raw, list) or not shapes_raw:
            raise bad_request(f"{where}: a track needs at least one shape", "shapes")
        shapes = []
        for i, s in enumerate(shapes_raw):
            sw = f"{where}.shapes[{i}]"
            if not isinstance(s, dict):
                raise bad_request(f"{sw}: must be an object")
            shape_type = self._type(s, sw)
            shapes.append(
                {
                    "type": shape_type,
                    **self._geometry(s, shape_type, sw),
                    "id": self.next_id(),
                    "frame": self._frame(s, sw),
                    "attributes": self._attributes(s.get("attributes"), label, sw),
                }
            )
        return {
            "id": obj["id"] if keep_id else self.next_id(),
            "frame": self._frame(obj, where),
            "label_id": label.id,
            **self._common(obj, where),
            "shapes": shapes,
            "attributes": self._attributes(obj.get("attributes"), label, where),
            "elements": [],
        }


def split_request(data: Any) -> tuple[list, list, list]:
    """``(tags, shapes, tracks)`` of a LabeledData request body, or a 400."""
    if not isinstance(data, dict):
        raise bad_request("Invalid data. Expected a dictionary.", "non_field_errors")
    parts = []
    for key in ("tags", "shapes", "tracks"):
        value = data.get(key, [])
        if value is None:
            value = []
        if not isinstance(value, list):
            raise bad_request(f"Expected a list of items but got type {type(value).__name__!r}.", key)
        parts.append(value)
    return parts[0], parts[1], parts[2]
