"""Wire formats of the SAM 2 functions: request validation and CVAT-shaped outputs.

Pure (numpy, OpenCV); imports no sibling module so ``sam2_auto`` can load a copy of it.

* ``parse_*`` turn a decoded JSON body into a request or raise ``RequestError`` (HTTP 400) with a
  precise reason. Coordinates are checked against the image size by ``check_prompt``.
* ``encode_rle``: CVAT mask RLE (runs over the bbox crop, starting with zeros) + inclusive
  ``[left, top, right, bottom]`` — interactor ``shapes[].points`` and REST mask ``points``.
* ``encode_raw_crop``: the Nuclio *detector* ``mask`` field — raw 0/1 crop + ``[xtl, ytl, xbr, ybr]``.
* ``mask_to_polygons``: outer contours (``cv2.findContours`` + ``approxPolyDP``) as flat lists.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np

DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_POLYGON_EPSILON = 2.5


class RequestError(ValueError):
    """The request is malformed; the message says what and where (answered with HTTP 400)."""


class Prompt(NamedTuple):
    """One SAM prompt in image pixels: positive and negative points (N x 2) and an x1,y1,x2,y2 box."""

    pos: np.ndarray
    neg: np.ndarray
    box: np.ndarray | None

    @property
    def is_empty(self) -> bool:
        """No positive point and no box: nothing to segment (negative points alone select nothing)."""
        return len(self.pos) == 0 and self.box is None


@dataclass(frozen=True)
class InteractorRequest:
    image: bytes
    prompt: Prompt
    threshold: float


@dataclass(frozen=True)
class BatchRequest:
    image: bytes
    prompts: list[Prompt]
    multimask: bool
    threshold: float


@dataclass(frozen=True)
class DetectorRequest:
    image: bytes
    threshold: float


# ---------------------------------------------------------------------------------------------- input

def parse_body(body: Any) -> dict[str, Any]:
    """Nuclio hands JSON bodies over as a dict; anything else (bytes, str) is parsed here."""
    if isinstance(body, (bytes, bytearray, str)):
        if not body:
            raise RequestError("empty request body; expected a JSON object")
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def decode_b64(body: dict[str, Any], field: str = "image") -> bytes:
    """The base64 field as bytes (a ``data:...;base64,`` prefix is tolerated)."""
    value = body.get(field)
    if value is None:
        raise RequestError(f"'{field}' is missing; expected a base64-encoded image")
    if not isinstance(value, str):
        raise RequestError(f"'{field}' must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"'{field}' is not valid base64: {exc}") from exc
    if not data:
        raise RequestError(f"'{field}' is empty")
    return data


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> H x W x 3 uint8 RGB (grey/alpha/16-bit converted).

    The EXIF orientation is applied: CVAT shows (and takes coordinates on) frames rotated by
    their EXIF tag, while an original-quality frame may still be the raw file with the tag."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise RequestError(f"'image' could not be decoded as an image ({len(data)} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _points(value: Any, where: str, required: bool) -> np.ndarray:
    if value is None:
        if required:
            raise RequestError(f"'{where}' is missing; send [] when there are no points")
        return np.zeros((0, 2), np.float32)
    if not isinstance(value, list):
        raise RequestError(f"'{where}' must be a list of [x, y] pairs, got {type(value).__name__}")
    pts = []
    for i, p in enumerate(value):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise RequestError(f"'{where}[{i}]' must be an [x, y] pair, got {p!r}")
        pts.append((_number(p[0], f"'{where}[{i}][0]'"), _number(p[1], f"'{where}[{i}][1]'")))
    return np.asarray(pts, np.float32).reshape(-1, 2)


def _box(value: Any, where: str) -> np.ndarray | None:
    """``[x1,y1,x2,y2]`` or CVAT's ``[[x1,y1],[x2,y2]]`` -> ordered (4,) array; None when absent.

    Absent is ``null`` or ``[]``: the CVAT UI sends ``"obj_bbox": []`` whenever no box is drawn
    (cvat-ui ``convertShapesForInteractor`` reduces an empty selection to ``[]``) and CVAT's lambda
    manager drops only ``None`` values, so ``[]`` reaches the function on every point-only click."""
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
        value = [*value[0], *value[1]]
    if not isinstance(value, list) or len(value) != 4:
        raise RequestError(f"'{where}' must be [x1, y1, x2, y2] or [[x1, y1], [x2, y2]], got {value!r}")
    x1, y1, x2, y2 = (_number(v, f"'{where}[{i}]'") for i, v in enumerate(value))
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise RequestError(f"'{where}' is degenerate (under 1 px wide or high): {value!r}")
    return np.asarray([x1, y1, x2, y2], np.float32)


def _threshold(body: dict[str, Any], default: float, low_open: bool) -> float:
    value = body.get("threshold")
    if value is None:
        return default
    t = _number(value, "'threshold'")
    if not (0.0 < t < 1.0 if low_open else 0.0 <= t <= 1.0):
        raise RequestError(f"'threshold' must be in {'(0, 1)' if low_open else '[0, 1]'}, got {t}")
    return t


def _prompt(pos: np.ndarray, neg: np.ndarray, box: np.ndarray | None, where: str) -> Prompt:
    if len(pos) == 0 and box is None:
        raise RequestError(f"{where} needs at least one positive point or a box")
    return Prompt(pos, neg, box)


def parse_interactor(body: Any) -> InteractorRequest:
    """CVAT interactor (2.60+): ``image``, ``pos_points``, ``neg_points`` (both required, may be
    empty), ``obj_bbox`` (``[[x1,y1],[x2,y2]]``, ``[]`` or null), optional ``threshold`` (mask
    probability). Empty parts are absent. A prompt with no positive point and no box (a lone
    negative click, which CVAT allows with ``min_pos_points: 0``) is valid: it has no object
    (``Prompt.is_empty``) and is answered with no shapes rather than an error."""
    body = parse_body(body)
    image = decode_b64(body)
    pos = _points(body.get("pos_points"), "pos_points", required=True)
    neg = _points(body.get("neg_points"), "neg_points", required=True)
    box = _box(body.get("obj_bbox"), "obj_bbox")
    return InteractorRequest(image, Prompt(pos, neg, box), _threshold(body, DEFAULT_MASK_THRESHOLD, low_open=True))


def parse_batch(body: Any, max_prompts: int) -> BatchRequest:
    """Bridge batch: ``image``, ``prompts: [{bbox, pos_points, neg_points}]``, ``multimask_output``."""
    body = parse_body(body)
    image = decode_b64(body)
    prompts = body.get("prompts")
    if not isinstance(prompts, list):
        raise RequestError(f"'prompts' must be a list of prompt objects, got {type(prompts).__name__}")
    if not prompts:
        raise RequestError("'prompts' is empty; send at least one prompt")
    if len(prompts) > max_prompts:
        raise RequestError(f"too many prompts: {len(prompts)} > {max_prompts}; split the request")
    multimask = body.get("multimask_output", False)
    if not isinstance(multimask, bool):
        raise RequestError(f"'multimask_output' must be true or false, got {multimask!r}")
    parsed = []
    for i, p in enumerate(prompts):
        if not isinstance(p, dict):
            raise RequestError(f"'prompts[{i}]' must be an object, got {type(p).__name__}")
        unknown = set(p) - {"bbox", "pos_points", "neg_points"}
        if unknown:
            raise RequestError(f"'prompts[{i}]' has unknown keys {sorted(unknown)}")
        pos = _points(p.get("pos_points"), f"prompts[{i}].pos_points", required=False)
        neg = _points(p.get("neg_points"), f"prompts[{i}].neg_points", required=False)
        box = _box(p.get("bbox"), f"prompts[{i}].bbox")
        parsed.append(_prompt(pos, neg, box, f"'prompts[{i}]'"))
    return BatchRequest(image, parsed, multimask, _threshold(body, DEFAULT_MASK_THRESHOLD, low_open=True))


def parse_detector(body: Any) -> DetectorRequest:
    """CVAT detector: ``image`` and optional ``threshold`` (minimum predicted IoU, [0, 1])."""
    body = parse_body(body)
    image = decode_b64(body)
    return DetectorRequest(image, _threshold(body, 0.0, low_open=False))


def check_prompt(prompt: Prompt, width: int, height: int, where: str = "the request") -> None:
    """Every point and the box must lie inside the image (0 <= x <= W, 0 <= y <= H)."""
    for name, pts in (("pos_points", prompt.pos), ("neg_points", prompt.neg)):
        for i, (x, y) in enumerate(pts):
            if not (0 <= x <= width and 0 <= y <= height):
                raise RequestError(
                    f"{where}: {name}[{i}] = [{x:g}, {y:g}] is outside the {width}x{height} image")
    if prompt.box is not None:
        x1, y1, x2, y2 = prompt.box
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise RequestError(
                f"{where}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the {width}x{height} image")


# --------------------------------------------------------------------------------------------- output

def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight inclusive ``(left, top, right, bottom)`` of the set pixels, None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    bbox = mask_bbox(mask)
    if bbox is None:
        raise ValueError("mask is empty; CVAT cannot store an empty mask")
    left, top, right, bottom = bbox
    return mask[top:bottom + 1, left:right + 1].astype(bool), bbox


def encode_rle(mask: np.ndarray) -> list[int]:
    """CVAT RLE of the tight crop (row-major, first run counts zeros) + inclusive bbox."""
    crop, bbox = _crop(mask)
    flat = crop.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs] + list(bbox)


def encode_raw_crop(mask: np.ndarray) -> list[int]:
    """Nuclio detector ``mask``: the tight crop's 0/1 values row-major + ``[xtl, ytl, xbr, ybr]``."""
    crop, bbox = _crop(mask)
    return crop.astype(np.uint8).ravel().tolist() + list(bbox)


def mask_to_polygons(mask: np.ndarray, epsilon: float = DEFAULT_POLYGON_EPSILON) -> list[list[int]]:
    """Outer contours simplified with tolerance ``epsilon`` px, largest first, as ``[x0,y0,x1,y1,...]``.
    Contours that collapse to fewer than 3 vertices or zero area are dropped."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in sorted(contours, key=cv2.contourArea, reverse=True):
        approx = cv2.approxPolyDP(c, epsilon, True) if epsilon > 0 else c
        approx = approx.reshape(-1, 2)
        if len(approx) >= 3 and cv2.contourArea(approx) > 0:
            polys.append([int(v) for v in approx.ravel()])
    return polys


def interactor_shape(mask: np.ndarray) -> dict[str, Any]:
    """One ``shapes[]`` entry of CVAT's 2.60+ interactor response."""
    return {"type": "mask", "points": encode_rle(mask), "group": 0, "source": "semi-auto",
            "attributes": [], "occluded": False, "rotation": 0}


def batch_result(mask: np.ndarray, score: float, epsilon: float) -> dict[str, Any]:
    """One ``results[]`` entry of the batch protocol; an empty mask becomes ``{"error": ...}``."""
    bbox = mask_bbox(mask)
    if bbox is None:
        return {"error": "empty mask: the model found no object for this prompt"}
    return {"mask": encode_rle(mask), "polygons": mask_to_polygons(mask, epsilon), "score": float(score),
            "bbox": list(bbox)}


def detector_item(mask: np.ndarray, score: float, label: str, epsilon: float) -> dict[str, Any] | None:
    """CVAT detector item (``type: mask`` with raw ``mask`` and the largest polygon as ``points``),
    or None when the mask yields no valid polygon (empty or thinner than a pixel)."""
    polys = mask_to_polygons(mask, epsilon)
    if not polys:
        return None
    return {"label": label, "type": "mask", "points": polys[0], "mask": encode_raw_crop(mask),
            "confidence": float(score)}
