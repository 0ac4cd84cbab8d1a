"""Wire format of ``pth-sam2-tracker``: CVAT 2.73 tracker requests and the compact per-object state.

Pure (numpy, OpenCV, stdlib): no torch, no Nuclio, no sibling import.

Request (what CVAT's lambda manager forwards, ``cvat/apps/lambda_manager/views.py``): ``image``,
``shapes`` and ``states``, index-aligned, one entry per tracked object. An object with a state is
tracked on the image; an object with a shape and no state starts tracking there. CVAT pads
``shapes`` with nulls when the UI continues with ``states`` only, and unsigns the states it signed
before handing them over, so a state arrives exactly as this module wrote it (JSON).

State (``ObjectState.to_json``): the object's last box, its velocity, the decoder's mask logits
inside that box resampled to ``GRID`` x ``GRID`` (int8) and an appearance template (the image
embedding pooled over the mask, int8). Its size does not depend on the image, the object or how long
it has been tracked: at most ``MAX_STATE_BYTES`` of compact JSON.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

SHAPE_TYPES = ("rectangle", "polygon", "mask")
STATE_VERSION = 1
GRID = 32  # side of the stored logits crop
LOGIT_SCALE = 4.0  # int8 units per logit unit: +-31.75 covers SAM's clamped +-32 logits
MAX_TEMPLATE = 1024  # most template components accepted back (hiera's embedding has 256)
MAX_STATE_BYTES = 2560  # bound on one state as compact JSON (GRID² logits + 256 template bytes in base64)
DEFAULT_MASK_THRESHOLD = 0.5


class RequestError(ValueError):
    """The request is malformed; the message says what and where (answered with HTTP 400)."""


@dataclass(frozen=True)
class Shape:
    """A shape to start tracking from. ``legacy``: it came as a bare point list (the pre-2.x tracker
    protocol, where a rectangle is ``[x1, y1, x2, y2]``) and is answered the same way."""

    type: str
    points: list[float]
    rotation: float = 0.0
    legacy: bool = False

    def echo(self) -> Any:
        """The shape as the answer to the frame it was given on (what it was, normalised)."""
        if self.legacy:
            return list(self.points)
        return {"type": self.type, "points": list(self.points)}


@dataclass(frozen=True)
class ObjectState:
    """What one object carries from frame to frame (see the module docstring)."""

    type: str
    width: int
    height: int
    box: np.ndarray  # x1, y1, x2, y2: pixel edges (x2, y2 exclusive), floats
    velocity: np.ndarray  # box centre motion, px per frame
    logits: np.ndarray  # GRID x GRID float32: the mask logits inside ``box``
    template: np.ndarray | None  # (C,) float32 unit vector, or None
    lost: int = 0  # consecutive frames without the object
    frames: int = 0  # frames tracked since the start
    legacy: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": STATE_VERSION, "t": self.type, "wh": [self.width, self.height],
            "box": [round(float(v), 1) for v in self.box], "vel": [round(float(v), 2) for v in self.velocity],
            "lg": pack_logits(self.logits),
            "tpl": None if self.template is None else pack_template(self.template),
            "lost": self.lost, "n": self.frames,
        }
        if self.legacy:
            out["legacy"] = True
        return out

    @classmethod
    def from_json(cls, value: Any, where: str) -> ObjectState:
        """Validate and decode; a malformed state is a ``RequestError`` naming the field."""
        if not isinstance(value, dict):
            raise RequestError(f"{where} must be a state object of this tracker, got {type(value).__name__}")
        if value.get("v") != STATE_VERSION:
            raise RequestError(f"{where} is not a state of this tracker (version {value.get('v')!r}, "
                               f"expected {STATE_VERSION}); start tracking again from a shape")
        kind = value.get("t")
        if kind not in SHAPE_TYPES:
            raise RequestError(f"{where}.t must be one of {', '.join(SHAPE_TYPES)}, got {kind!r}")
        wh = _numbers(value.get("wh"), 2, f"{where}.wh")
        if not all(v >= 1 and v == int(v) for v in wh):
            raise RequestError(f"{where}.wh must be two positive integers, got {value.get('wh')!r}")
        box = _numbers(value.get("box"), 4, f"{where}.box")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise RequestError(f"{where}.box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        velocity = _numbers(value.get("vel"), 2, f"{where}.vel")
        logits = unpack_logits(value.get("lg"), f"{where}.lg")
        template = None if value.get("tpl") is None else unpack_template(value["tpl"], f"{where}.tpl")
        counters = []
        for key in ("lost", "n"):
            v = value.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise RequestError(f"{where}.{key} must be a non-negative integer, got {v!r}")
            counters.append(v)
        return cls(kind, int(wh[0]), int(wh[1]), box, velocity, logits, template, counters[0], counters[1],
                   bool(value.get("legacy", False)))

    def rescaled(self, width: int, height: int) -> ObjectState:
        """The same state on a frame of another size (CVAT image tasks may mix sizes)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, box=self.box * np.array([sx, sy, sx, sy], np.float32),
                       velocity=self.velocity * np.array([sx, sy], np.float32))


@dataclass(frozen=True)
class TrackObject:
    """One entry of the request: a state (continue) or, without one, a shape (start)."""

    index: int
    shape: Shape | None
    state: ObjectState | None


@dataclass(frozen=True)
class TrackRequest:
    objects: list[TrackObject]
    threshold: float


# ---------------------------------------------------------------------------------------- request

def _numbers(value: Any, count: int | None, where: str) -> np.ndarray:
    if not isinstance(value, list) or (count is not None and len(value) != count):
        size = f"{count} numbers" if count is not None else "numbers"
        raise RequestError(f"{where} must be a list of {size}, got {value!r:.80}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RequestError(f"{where}[{i}] must be a finite number, got {v!r}")
    return np.asarray(value, np.float32)


def parse_shape(value: Any, where: str, supported: Sequence[str]) -> Shape:
    """``{"type", "points", "rotation"?...}`` (other keys ignored) or a bare ``[x1, y1, x2, y2]``."""
    if isinstance(value, list):
        if "rectangle" not in supported:
            raise RequestError(f"{where}: a bare point list means a rectangle, which is not supported here")
        pts = _numbers(value, 4, where)
        return Shape("rectangle", [float(v) for v in pts], legacy=True)
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be a shape object {{type, points}}, got {type(value).__name__}")
    kind = value.get("type")
    if kind not in supported:
        raise RequestError(f"{where}.type {kind!r} is not supported; this tracker supports {', '.join(supported)}")
    pts = _numbers(value.get("points"), None, f"{where}.points")
    if kind == "rectangle" and len(pts) != 4:
        raise RequestError(f"{where}.points of a rectangle must be [x1, y1, x2, y2], got {len(pts)} numbers")
    if kind == "polygon" and (len(pts) < 6 or len(pts) % 2):
        raise RequestError(f"{where}.points of a polygon must be at least 3 x, y pairs, got {len(pts)} numbers")
    if kind == "mask" and len(pts) < 5:
        raise RequestError(f"{where}.points of a mask must be CVAT RLE + [left, top, right, bottom]")
    rotation = value.get("rotation", 0) or 0
    if isinstance(rotation, bool) or not isinstance(rotation, (int, float)) or not math.isfinite(rotation):
        raise RequestError(f"{where}.rotation must be a number of degrees, got {rotation!r}")
    return Shape(kind, [float(v) for v in pts], float(rotation))


def _threshold(body: dict[str, Any]) -> float:
    value = body.get("threshold")
    if value is None:
        return DEFAULT_MASK_THRESHOLD
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise RequestError(f"'threshold' must be a number in (0, 1), got {value!r}")
    return float(value)


def parse_request(body: dict[str, Any], supported: Sequence[str], max_objects: int) -> TrackRequest:
    """``shapes``/``states`` (each optional, null entries allowed) -> one ``TrackObject`` per index."""
    lists = []
    for key in ("shapes", "states"):
        value = body.get(key)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise RequestError(f"'{key}' must be a list, got {type(value).__name__}")
        lists.append(value)
    shapes, states = lists
    count = max(len(shapes), len(states))
    if count == 0:
        raise RequestError("nothing to track: send 'shapes' to start or 'states' to continue")
    if count > max_objects:
        raise RequestError(f"too many objects: {count} > {max_objects}; split the request")
    objects = []
    for i in range(count):
        raw_state = states[i] if i < len(states) else None
        raw_shape = shapes[i] if i < len(shapes) else None
        if raw_state is not None:
            objects.append(TrackObject(i, None, ObjectState.from_json(raw_state, f"states[{i}]")))
        elif raw_shape is not None:
            objects.append(TrackObject(i, parse_shape(raw_shape, f"shapes[{i}]", supported), None))
        else:
            raise RequestError(f"object {i} has neither a shape nor a state")
    return TrackRequest(objects, _threshold(body))


# ------------------------------------------------------------------------------------ geometry

def rectangle_box(shape: Shape, width: int, height: int, where: str) -> np.ndarray:
    """The rectangle's axis-aligned box (the hull of a rotated one), clipped to the image."""
    x1, y1, x2, y2 = shape.points
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if shape.rotation:
        cx, cy, a = (x1 + x2) / 2, (y1 + y2) / 2, math.radians(shape.rotation)
        hw = (abs((x2 - x1) * math.cos(a)) + abs((y2 - y1) * math.sin(a))) / 2
        hh = (abs((x2 - x1) * math.sin(a)) + abs((y2 - y1) * math.cos(a))) / 2
        x1, y1, x2, y2 = cx - hw, cy - hh, cx + hw, cy + hh
    box = clip_box(np.array([x1, y1, x2, y2], np.float32), width, height)
    if box is None:
        raise RequestError(f"{where}: rectangle {shape.points} is not inside the {width}x{height} image "
                           "(at least 1 px in each direction)")
    return box


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """The box clipped to the image, None when less than 1 px of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return np.array([x1, y1, x2, y2], np.float32)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Pixel-edge box (x2, y2 exclusive) of the set pixels, None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def decode_rle(points: Sequence[float], width: int, height: int, where: str) -> np.ndarray:
    """CVAT mask ``points`` (run lengths over the inclusive bbox crop, row-major, first run zeros,
    then ``[left, top, right, bottom]``) -> bool H x W mask, checked against the image size."""
    if len(points) < 5 or any(v != int(v) or v < 0 for v in points):
        raise RequestError(f"{where}: mask points must be non-negative integers (RLE + bbox)")
    left, top, right, bottom = (int(v) for v in points[-4:])
    if not (0 <= left <= right < width and 0 <= top <= bottom < height):
        raise RequestError(f"{where}: mask bbox {[left, top, right, bottom]} does not fit the "
                           f"{width}x{height} image")
    runs = np.asarray(points[:-4], np.int64)
    crop_w, crop_h = right - left + 1, bottom - top + 1
    if int(runs.sum()) != crop_w * crop_h:
        raise RequestError(f"{where}: mask runs cover {int(runs.sum())} pixels, its bbox {crop_w * crop_h}")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    mask = np.zeros((height, width), bool)
    mask[top:bottom + 1, left:right + 1] = np.repeat(values, runs).reshape(crop_h, crop_w)
    return mask


def shape_mask(shape: Shape, width: int, height: int, where: str) -> np.ndarray:
    """A polygon (filled, even-odd like CVAT draws it) or a mask as a bool H x W mask; never empty."""
    if shape.type == "mask":
        mask = decode_rle(shape.points, width, height, where)
    elif shape.type == "polygon":
        pts = np.round(np.asarray(shape.points, np.float64).reshape(-1, 2)).astype(np.int32)
        canvas = np.zeros((height, width), np.uint8)
        cv2.fillPoly(canvas, [pts], 1)
        mask = canvas.astype(bool)
    else:
        raise ValueError(f"shape_mask takes a polygon or a mask, not a {shape.type}")
    if not mask.any():
        raise RequestError(f"{where}: the {shape.type} covers no pixel of the {width}x{height} image")
    return mask


# ----------------------------------------------------------------------------------- packing

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, size: int | None, where: str) -> bytes:
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where} is not valid base64: {exc}") from exc
    if size is not None and len(data) != size:
        raise RequestError(f"{where} must hold {size} bytes, got {len(data)}")
    return data


def pack_logits(logits: np.ndarray) -> str:
    """GRID x GRID float logits -> base64 of int8 (``LOGIT_SCALE`` units per logit)."""
    if logits.shape != (GRID, GRID):
        raise ValueError(f"logits must be {GRID} x {GRID}, got {logits.shape}")
    q = np.clip(np.round(logits.astype(np.float32) * LOGIT_SCALE), -127, 127).astype(np.int8)
    return _b64(q.tobytes())


def unpack_logits(value: Any, where: str) -> np.ndarray:
    data = _unb64(value, GRID * GRID, where)
    return np.frombuffer(data, np.int8).reshape(GRID, GRID).astype(np.float32) / LOGIT_SCALE


def pack_template(template: np.ndarray) -> str:
    """A direction vector -> base64 of int8 (scaled so the largest component is +-127)."""
    peak = float(np.abs(template).max())
    q = np.zeros(template.shape, np.int8) if peak == 0 else np.round(template / peak * 127).astype(np.int8)
    return _b64(q.tobytes())


def unpack_template(value: Any, where: str) -> np.ndarray:
    data = _unb64(value, None, where)
    if not 1 <= len(data) <= MAX_TEMPLATE:
        raise RequestError(f"{where} must hold 1..{MAX_TEMPLATE} bytes, got {len(data)}")
    return unit(np.frombuffer(data, np.int8).astype(np.float32))


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm == 0 else (vector / norm).astype(np.float32)
