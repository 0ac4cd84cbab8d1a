"""Mask <-> polygon conversion and polygon hygiene for CVAT (flat ``[x0, y0, x1, y1, ...]`` lists).

Polygons from masks run through the centres of the boundary pixels, so ``polygon_to_mask`` of an
unsimplified polygon gives back the same pixels (minus holes: CVAT polygons have none).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bridge.geometry.errors import GeometryError, check_image_size

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly
_MIN_AREA = 1e-3  # px²: below this a polygon counts as degenerate


def _as_binary_u8(mask: np.ndarray) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.size == 0:
        got = getattr(mask, "shape", type(mask).__name__)
        raise GeometryError("bad_mask", f"mask must be a non-empty 2-D array, got {got!r}")
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    if mask.dtype == np.uint8:
        return np.ascontiguousarray(mask)
    return (mask != 0).view(np.uint8)


def _as_vertices(points: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_points", "polygon points must be numbers [x0, y0, x1, y1, ...]") from exc
    if arr.size % 2:
        raise GeometryError("bad_points", f"polygon needs an even number of coordinates, got {arr.size}")
    return arr.reshape(-1, 2)


def mask_to_polygons(
    mask: np.ndarray,
    *,
    tolerance: float = 1.0,
    min_area: float = 4.0,
    max_polygons: int | None = None,
) -> list[list[float]]:
    """Outer contours of ``mask`` (nonzero = inside) as flat polygons, largest first.

    Holes are dropped, fragments with area < ``min_area`` px² are dropped, contours are simplified
    with Douglas–Peucker (``tolerance`` px; <= 0 keeps every contour vertex) and each polygon keeps
    at least 3 vertices.
    """
    binary = _as_binary_u8(mask)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[float, np.ndarray]] = []
    for contour in contours:
        if len(contour) < 3:
            continue
        area = cv2.contourArea(contour)
        if area < min_area or area <= 0:
            continue
        poly = contour
        if tolerance > 0:
            simplified = cv2.approxPolyDP(contour, float(tolerance), True)
            if len(simplified) >= 3:
                poly = simplified
        found.append((area, poly))
    found.sort(key=lambda item: -item[0])
    if max_polygons is not None:
        found = found[: max(0, int(max_polygons))]
    return [poly.reshape(-1).astype(np.float64).tolist() for _, poly in found]


def simplify_polygon(points: Sequence[float], tolerance: float) -> list[float]:
    """Douglas–Peucker simplification of a closed polygon; kept vertices keep their exact values.

    Returns the input unchanged when ``tolerance <= 0`` or when simplifying would leave < 3 vertices.
    """
    if tolerance <= 0:
        return list(points)
    verts = _as_vertices(points)
    if len(verts) <= 3:
        return list(points)
    approx = cv2.approxPolyDP(verts.astype(np.float32).reshape(-1, 1, 2), float(tolerance), True)
    if len(approx) < 3:
        return list(points)
    # approxPolyDP returns a subset of the (float32) input vertices: map them back to the exact inputs.
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(verts.astype(np.float32)):
        lookup.setdefault((float(x), float(y)), i)
    keep = [lookup[(float(x), float(y))] for x, y in approx.reshape(-1, 2)]
    return verts[keep].reshape(-1).tolist()


def polygon_area(points: Sequence[float]) -> float:
    """Absolute shoelace area of a flat polygon (0.0 for fewer than 3 vertices)."""
    v = _as_vertices(points)
    if len(v) < 3:
        return 0.0
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _clip_to_rect(v: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland–Hodgman clip of polygon ``v`` against ``[0, w] × [0, h]``."""
    for axis, bound, keep_less in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if len(v) == 0:
            break
        inside = v[:, axis] <= bound if keep_less else v[:, axis] >= bound
        if inside.all():
            continue
        out: list[np.ndarray] = []
        prev, prev_in = v[-1], inside[-1]
        for cur, cur_in in zip(v, inside, strict=True):
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = prev + t * (cur - prev)
                cross[axis] = bound
                out.append(cross)
            if cur_in:
                out.append(cur)
            prev, prev_in = cur, cur_in
        v = np.array(out, dtype=np.float64).reshape(-1, 2)
    return v


def clean_polygon(points: Sequence[float], image_size: tuple[int, int] | None = None) -> list[float] | None:
    """Clip to the image ``[0, w] × [0, h]`` (when ``image_size`` is given), drop repeated
    consecutive vertices; None when fewer than 3 vertices or ~zero area remain (or non-finite input)."""
    v = _as_vertices(points)
    if len(v) and not np.isfinite(v).all():
        return None
    if image_size is not None:
        w, h = check_image_size(image_size)
        v = _clip_to_rect(v, float(w), float(h))
    if len(v):
        keep = np.any(v != np.roll(v, 1, axis=0), axis=1)
        if not keep.any():
            keep[0] = True
        v = v[keep]
    if len(v) < 3:
        return None
    flat = v.reshape(-1).tolist()
    if polygon_area(flat) < _MIN_AREA:
        return None
    return flat


def polygon_to_mask(points: Sequence[float], image_size: tuple[int, int]) -> np.ndarray:
    """Rasterise a flat polygon into a bool H×W mask (boundary pixels included)."""
    w, h = check_image_size(image_size)
    v = _as_vertices(points)
    mask = np.zeros((h, w), dtype=np.uint8)
    if len(v) >= 3:
        if not np.isfinite(v).all():
            raise GeometryError("bad_points", "polygon has non-finite coordinates")
        fixed = np.round(v * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.view(np.bool_)
