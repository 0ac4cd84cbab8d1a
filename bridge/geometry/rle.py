"""The two mask encodings CVAT uses, kept apart on purpose.

- CVAT RLE (REST ``points`` of ``type: "mask"``, interactor shapes): run lengths of the bbox crop,
  row-major, starting with a run of zeros, then ``[left, top, right, bottom]`` inclusive.
  Identical to ``cvat_sdk.masks.encode_mask`` / ``decode_mask``.
- Nuclio detector ``mask`` field: the raw 0/1 crop, row-major, then ``[xtl, ytl, xbr, ybr]`` inclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bridge.geometry.errors import GeometryError, check_image_size


def _as_bool(mask: np.ndarray) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
        got = getattr(mask, "shape", type(mask).__name__)
        raise GeometryError("bad_mask", f"mask must be a non-empty 2-D array, got {got!r}")
    return mask if mask.dtype == np.bool_ else mask != 0


def _ints(values: Sequence[float], what: str) -> np.ndarray:
    """Numbers -> int64 array; integer-valued floats allowed, anything else is an error."""
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_rle", f"{what} must be a list of numbers") from exc
    if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
        raise GeometryError("bad_rle", f"{what} contains non-integer values")
    return arr.astype(np.int64)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight inclusive bbox ``(left, top, right, bottom)`` of the nonzero pixels; None if empty."""
    m = _as_bool(mask)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _check_bbox(bbox: Sequence[int], w: int, h: int, code: str) -> tuple[int, int, int, int]:
    vals = _ints(bbox, "bbox")
    if vals.size != 4:
        raise GeometryError(code, f"bbox must be [left, top, right, bottom], got {list(bbox)!r}")
    left, top, right, bottom = (int(v) for v in vals)
    if not (0 <= left <= right < w and 0 <= top <= bottom < h):
        raise GeometryError(
            code, f"bbox {[left, top, right, bottom]} (inclusive) does not fit a {w}×{h} image"
        )
    return left, top, right, bottom


def mask_to_cvat_rle(mask: np.ndarray, bbox: Sequence[int] | None = None) -> list[float]:
    """CVAT RLE of ``mask`` (nonzero = on) cropped to ``bbox`` = inclusive ``[l, t, r, b]``
    (default: the tight bbox). Equals ``cvat_sdk.masks.encode_mask(mask, bbox=[l, t, r+1, b+1])``.
    An empty mask (or crop) raises ``GeometryError("empty_mask")``.
    """
    m = _as_bool(mask)
    h, w = m.shape
    if bbox is None:
        tight = mask_bbox(m)
        if tight is None:
            raise GeometryError("empty_mask", "empty mask")
        left, top, right, bottom = tight
    else:
        left, top, right, bottom = _check_bbox(bbox, w, h, "bad_mask")
    crop = m[top : bottom + 1, left : right + 1]
    if not crop.any():
        raise GeometryError("empty_mask", "empty mask")
    return crop_to_cvat_rle(crop, left, top)


def crop_to_cvat_rle(crop: np.ndarray, left: int, top: int) -> list[int]:
    """CVAT RLE of a whole 2-D crop placed at ``(left, top)``: run lengths starting with zeros,
    then the inclusive ``[l, t, r, b]`` of the crop (empty pixels at its edges kept)."""
    c = _as_bool(crop)
    flat = c.ravel()
    if flat.size == 0:
        raise GeometryError("empty_mask", "cannot encode an empty mask crop")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = [int(r) for r in np.diff(bounds)]
    if flat[0]:
        runs.insert(0, 0)
    h, w = c.shape
    return runs + [int(left), int(top), int(left) + w - 1, int(top) + h - 1]


def cvat_rle_to_mask(points: Sequence[float], width: int, height: int) -> np.ndarray:
    """Decode CVAT RLE + inclusive bbox into a bool ``height × width`` mask."""
    w, h = check_image_size((width, height))
    vals = _ints(points, "CVAT mask points")
    if vals.size < 5:
        raise GeometryError("bad_rle", f"CVAT mask needs at least 5 numbers, got {vals.size}")
    runs = vals[:-4]
    left, top, right, bottom = _check_bbox(vals[-4:], w, h, "bad_rle")
    if (runs < 0).any():
        raise GeometryError("bad_rle", "CVAT mask has negative run lengths")
    cw, ch = right - left + 1, bottom - top + 1
    if int(runs.sum()) != cw * ch:
        raise GeometryError(
            "bad_rle", f"CVAT mask runs cover {int(runs.sum())} pixels but the bbox has {cw}×{ch} = {cw * ch}"
        )
    values = (np.arange(runs.size) & 1).astype(np.bool_)
    out = np.zeros((h, w), dtype=np.bool_)
    out[top : bottom + 1, left : right + 1] = np.repeat(values, runs).reshape(ch, cw)
    return out


def detector_mask_to_mask(raw: Sequence[float], width: int, height: int) -> np.ndarray:
    """Decode a Nuclio detector ``mask`` (raw 0/1 crop + inclusive bbox) into a bool H×W mask."""
    w, h = check_image_size((width, height))
    try:
        arr = np.asarray(raw, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_detector_mask", "detector mask must be a flat list of numbers") from exc
    if arr.size < 5:
        raise GeometryError("bad_detector_mask", f"detector mask needs at least 5 numbers, got {arr.size}")
    try:
        left, top, right, bottom = _check_bbox(arr[-4:], w, h, "bad_detector_mask")
    except GeometryError as exc:
        raise GeometryError("bad_detector_mask", f"detector mask: {exc}") from exc
    cw, ch = right - left + 1, bottom - top + 1
    body = arr[:-4]
    if body.size != cw * ch:
        raise GeometryError(
            "bad_detector_mask",
            f"detector mask has {body.size} values but its bbox {[left, top, right, bottom]} "
            f"needs {cw}×{ch} = {cw * ch}",
        )
    if not np.isfinite(body).all():
        raise GeometryError("bad_detector_mask", "detector mask contains non-finite values")
    out = np.zeros((h, w), dtype=np.bool_)
    out[top : bottom + 1, left : right + 1] = (body != 0).reshape(ch, cw)
    return out


def mask_to_detector_mask(mask: np.ndarray) -> list[int]:
    """Nuclio detector ``mask`` field for ``mask``: raw 0/1 tight crop + inclusive bbox."""
    m = _as_bool(mask)
    bbox = mask_bbox(m)
    if bbox is None:
        raise GeometryError("empty_mask", "empty mask")
    left, top, right, bottom = bbox
    crop = m[top : bottom + 1, left : right + 1].ravel().astype(np.uint8)
    return crop.tolist() + [left, top, right, bottom]


def scale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask to ``size`` = (w, h).

    uint8 masks stay uint8 (values kept); any other dtype is treated as nonzero = on and returns bool.
    """
    w, h = check_image_size(size)
    if isinstance(mask, np.ndarray) and mask.ndim == 2 and mask.size and mask.dtype == np.uint8:
        return cv2.resize(np.ascontiguousarray(mask), (w, h), interpolation=cv2.INTER_NEAREST)
    src = np.ascontiguousarray(_as_bool(mask)).view(np.uint8)
    return cv2.resize(src, (w, h), interpolation=cv2.INTER_NEAREST).view(np.bool_)
