"""Painting CVAT polygons and masks into a label map (one label index per pixel).

Convention (the bridge's, see ``bridge.geometry.polygons``): the polygon vertex ``(x, y)`` is the
centre of pixel ``(x, y)``. A pixel belongs to a polygon when its centre lies inside **or on** the
outline (even-odd rule for self-crossing outlines). This is an unbiased area estimate for drawn
polygons (for a generic outline the pixel count equals its area up to sampling noise), and it gives
back exactly the pixels of a mask whose contour ``bridge.geometry.polygons.mask_to_polygons``
traced through its boundary pixel centres. (``polygon_to_mask`` also draws the outline itself, which
adds about half a pixel along the whole perimeter: right for round-tripping, biased for areas.)

Masks are CVAT RLE (``bridge.geometry.rle``): each set pixel counts once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bridge.geometry.errors import GeometryError
from bridge.geometry.rle import cvat_rle_to_mask

_EPS = 1e-7  # coordinates within this of a pixel centre count as on it


def _vertices(points: Sequence[float]) -> np.ndarray:
    try:
        v = np.asarray(points, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_points", "polygon points must be numbers [x0, y0, x1, y1, ...]") from exc
    if v.size % 2 or v.size < 6:
        raise GeometryError("bad_points", f"a polygon needs at least 3 vertices (an even list), got {v.size} numbers")
    if not np.isfinite(v).all():
        raise GeometryError("bad_points", "polygon has non-finite coordinates")
    return v.reshape(-1, 2)


def polygon_pixels(points: Sequence[float], width: int, height: int) -> tuple[int, int, np.ndarray] | None:
    """The polygon's pixels inside a ``width × height`` frame as ``(top, left, bool crop)``; None if none."""
    v = _vertices(points)
    (xmin, ymin), (xmax, ymax) = v.min(axis=0), v.max(axis=0)
    r0, r1 = max(0, math.ceil(ymin - _EPS)), min(height - 1, math.floor(ymax + _EPS))
    c0, c1 = max(0, math.ceil(xmin - _EPS)), min(width - 1, math.floor(xmax + _EPS))
    if r0 > r1 or c0 > c1:
        return None
    rows, cols = r1 - r0 + 1, c1 - c0 + 1
    nxt = np.concatenate([v[1:], v[:1]])
    x0, y0, x1, y1 = v[:, 0], v[:, 1], nxt[:, 0], nxt[:, 1]
    slanted = y0 != y1
    sx0, sy0 = x0[slanted], y0[slanted]
    slope = (x1[slanted] - sx0) / (y1[slanted] - sy0)
    ylo, yhi = np.minimum(sy0, y1[slanted]), np.maximum(sy0, y1[slanted])

    # Every pixel-centre row each non-horizontal edge reaches (closed range), and where it crosses.
    lo = np.maximum(np.ceil(ylo - _EPS), r0).astype(np.int64)
    n = np.maximum(np.minimum(np.floor(yhi + _EPS), r1).astype(np.int64) - lo + 1, 0)
    edge = np.repeat(np.arange(n.size), n)
    row = np.arange(edge.size, dtype=np.int64) - np.repeat(np.cumsum(n) - n - lo, n)
    x = sx0[edge] + (row - sy0[edge]) * slope[edge]

    # Interior: crossings counted half-open in y (so every row meets an even number of edges),
    # sorted along each row and paired left to right into spans of pixel centres.
    inner = (row >= ylo[edge]) & (row < yhi[edge])
    ri, xi = row[inner], x[inner]
    order = np.argsort((ri - r0) * (xmax - xmin + 2.0) + (xi - xmin))
    ri, xi = ri[order], xi[order]
    start = np.maximum(np.ceil(xi[0::2] - _EPS), c0).astype(np.int64)
    end = np.minimum(np.floor(xi[1::2] + _EPS), c1).astype(np.int64)
    keep = start <= end
    base = (ri[0::2][keep] - r0) * cols - c0
    # Spans are ordered row-major by start; their flat bounds cut the crop into alternating runs
    # (the running maximum merges spans that touch where two edges meet on a pixel centre).
    bounds = np.empty(2 * base.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, rows * cols
    bounds[1:-1:2] = base + start[keep]
    bounds[2:-1:2] = base + end[keep] + 1
    runs = np.diff(np.maximum.accumulate(bounds))
    crop = np.repeat(np.arange(runs.size) % 2 == 1, runs).reshape(rows, cols)

    # Outline: pixel centres lying exactly on an edge (the boundary pixels of traced contours).
    on = np.abs(x - np.rint(x)) <= _EPS
    bx, by = np.rint(x[on]).astype(np.int64), row[on]
    flat = ~slanted & (np.abs(y0 - np.rint(y0)) <= _EPS) & (y0 >= r0) & (y0 <= r1)
    if flat.any():
        fx0, fx1 = np.minimum(x0[flat], x1[flat]), np.maximum(x0[flat], x1[flat])
        flo = np.maximum(np.ceil(fx0 - _EPS), c0).astype(np.int64)
        fn = np.maximum(np.minimum(np.floor(fx1 + _EPS), c1).astype(np.int64) - flo + 1, 0)
        item = np.repeat(np.arange(fn.size), fn)
        bx = np.concatenate([bx, np.arange(item.size, dtype=np.int64) - np.repeat(np.cumsum(fn) - fn - flo, fn)])
        by = np.concatenate([by, np.rint(y0[flat]).astype(np.int64)[item]])
    if bx.size:
        inside = (bx >= c0) & (bx <= c1)
        crop[by[inside] - r0, bx[inside] - c0] = True
    return r0, c0, crop


def mask_pixels(points: Sequence[float], width: int, height: int) -> tuple[int, int, np.ndarray]:
    """A CVAT RLE mask (runs + inclusive ``[left, top, right, bottom]``) as ``(top, left, bool crop)``.

    Decoded by ``bridge.geometry.rle.cvat_rle_to_mask`` on its own bbox (no full-frame array).
    """
    if len(points) < 5:
        raise GeometryError("bad_rle", f"CVAT mask needs at least 5 numbers, got {len(points)}")
    try:
        bbox = [float(p) for p in points[-4:]]
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_rle", "CVAT mask bbox must be numbers") from exc
    if not all(math.isfinite(b) and b == int(b) for b in bbox):
        raise GeometryError("bad_rle", f"CVAT mask bbox must be whole pixels, got {bbox}")
    left, top, right, bottom = (int(b) for b in bbox)
    if not (0 <= left <= right < width and 0 <= top <= bottom < height):
        raise GeometryError("bad_rle", f"mask bbox {[left, top, right, bottom]} (inclusive) does not fit "
                                       f"the {width}×{height} frame")
    cw, ch = right - left + 1, bottom - top + 1
    crop = cvat_rle_to_mask([*points[:-4], 0, 0, cw - 1, ch - 1], cw, ch)
    return top, left, crop


def paint_under(target: np.ndarray, top: int, left: int, crop: np.ndarray, value: int) -> int:
    """Set ``value`` where ``crop`` (placed at ``(top, left)``) is true and ``target`` is still 0;
    returns how many pixels it set. Painting shapes top-most first gives each pixel its top label."""
    h, w = crop.shape
    region = target[top : top + h, left : left + w]
    free = region == 0
    free &= crop
    np.copyto(region, value, where=free, casting="unsafe")
    return int(np.count_nonzero(free))
