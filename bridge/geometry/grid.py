"""The 117-point ``grid`` skeleton: an 11×11 lattice of grid-line intersections without its corners.

Ids "1".."117" are row-major: row 0 -> ids 1..9 (c = 1..9); rows 1..9 -> ``11·r + c − 1`` (c = 0..10);
row 10 -> ``108 + c`` (c = 1..9). On a warped quadrat the 4 missing lattice corners are the image
corners (0,0), (w-1,0), (w-1,h-1), (0,h-1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from bridge.geometry.errors import GeometryError, check_image_size, compact_ids

GRID_POINTS = 117
LATTICE = 11
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def grid_id_to_rc(i: int) -> tuple[int, int]:
    """Grid point id (1..117) -> lattice (row, column), both 0..10."""
    if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 1 <= i <= GRID_POINTS:
        raise GeometryError("bad_grid_id", f"grid point id must be an integer 1..{GRID_POINTS}, got {i!r}")
    i = int(i)
    if i <= 9:
        return 0, i
    if i <= 108:
        return (i - 10) // 11 + 1, (i - 10) % 11
    return 10, i - 108


def rc_to_grid_id(r: int, c: int) -> int | None:
    """Lattice (row, column) -> grid point id; None for the 4 lattice corners (not in the skeleton)."""
    if not (0 <= r < LATTICE and 0 <= c < LATTICE):
        raise GeometryError("bad_grid_id", f"lattice position must be within 0..10, got ({r}, {c})")
    if r in (0, LATTICE - 1) and c in (0, LATTICE - 1):
        return None
    if r == 0:
        return c
    if r == LATTICE - 1:
        return 108 + c
    return 11 * r + c - 1


def keypoints_to_points(
    keypoints: Sequence[Sequence[float] | None],
) -> dict[int, tuple[float, float] | None]:
    """``[[x, y] × 117]`` (index = id − 1) -> ``{id: (x, y) | None}``.

    ``None``, non-finite values and COCO-style ``[x, y, v]`` with ``v == 0`` become ``None``.
    """
    if len(keypoints) > GRID_POINTS:
        raise GeometryError(
            "grid_missing", f"expected at most {GRID_POINTS} grid keypoints, got {len(keypoints)}"
        )
    out: dict[int, tuple[float, float] | None] = {}
    for idx, kp in enumerate(keypoints):
        point: tuple[float, float] | None = None
        if kp is not None:
            try:
                x, y = float(kp[0]), float(kp[1])
                visible = len(kp) < 3 or float(kp[2]) != 0
            except (TypeError, ValueError, IndexError) as exc:
                raise GeometryError(
                    "invalid_point", f"grid keypoint {idx + 1} is not [x, y]: {kp!r}"
                ) from exc
            if visible and math.isfinite(x) and math.isfinite(y):
                point = (x, y)
        out[idx + 1] = point
    return out


def validate_grid_points(
    points: Mapping[int, tuple[float, float] | None],
    image_size: tuple[int, int],
    *,
    tolerance: float = 0.02,
) -> np.ndarray:
    """Check all 117 points are present and inside the image; return float64 (117, 2), row = id − 1.

    Points outside ``[0, w-1] × [0, h-1]`` by at most ``tolerance × max(w, h)`` are clipped;
    further out -> ``out_of_bounds``. Absent/None/non-finite -> ``grid_missing``.
    """
    w, h = check_image_size(image_size)
    unknown = [k for k in points if not (isinstance(k, int | np.integer) and 1 <= k <= GRID_POINTS)]
    if unknown:
        raise GeometryError(
            "bad_grid_id", f"unknown grid point ids {unknown[:10]!r} (expected 1..{GRID_POINTS})"
        )
    out = np.full((GRID_POINTS, 2), np.nan)
    for k, p in points.items():
        if p is None:
            continue
        try:
            out[int(k) - 1] = float(p[0]), float(p[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise GeometryError("invalid_point", f"grid point {k} is not an (x, y) pair: {p!r}") from exc
    missing = (np.flatnonzero(~np.isfinite(out).all(axis=1)) + 1).tolist()
    if missing:
        raise GeometryError(
            "grid_missing",
            f"grid needs all {GRID_POINTS} points: {len(missing)} missing or outside "
            f"(ids {compact_ids(missing)})",
            ids=missing,
        )
    margin = tolerance * max(w, h)
    x, y = out[:, 0], out[:, 1]
    far = (x < -margin) | (x > w - 1 + margin) | (y < -margin) | (y > h - 1 + margin)
    if far.any():
        ids = (np.flatnonzero(far) + 1).tolist()
        raise GeometryError(
            "out_of_bounds",
            f"{len(ids)} grid points lie outside the {w}×{h} image (ids {compact_ids(ids)})",
            ids=ids,
        )
    np.clip(out[:, 0], 0, w - 1, out=out[:, 0])
    np.clip(out[:, 1], 0, h - 1, out=out[:, 1])
    return out


def _check_points117(points117: np.ndarray) -> np.ndarray:
    pts = np.asarray(points117, dtype=np.float64)
    if pts.shape != (GRID_POINTS, 2) or not np.isfinite(pts).all():
        raise GeometryError(
            "bad_points",
            f"expected {GRID_POINTS}×2 finite grid points (use validate_grid_points), got {pts.shape}",
        )
    return pts


def grid_lattice(points117: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(117, 2) points -> (11, 11, 2) lattice ``[row, col] = (x, y)``, corners = image corners."""
    w, h = check_image_size(image_size)
    pts = _check_points117(points117)
    lattice = np.empty((LATTICE, LATTICE, 2), dtype=np.float64)
    lattice[0, 1:10] = pts[0:9]
    lattice[1:10, :] = pts[9:108].reshape(9, LATTICE, 2)
    lattice[10, 1:10] = pts[108:117]
    lattice[0, 0] = (0, 0)
    lattice[0, 10] = (w - 1, 0)
    lattice[10, 10] = (w - 1, h - 1)
    lattice[10, 0] = (0, h - 1)
    return lattice


def grid_mask(
    points117: np.ndarray,
    image_size: tuple[int, int],
    *,
    line_width: int = 30,
    dilation: int = 0,
    include_border: bool = True,
) -> np.ndarray:
    """uint8 H×W mask, 255 on grid lines: polylines ``line_width`` px thick along every lattice row
    and column (rows/columns 0 and 10 only when ``include_border``), then an optional elliptic
    dilation by ``dilation`` px."""
    w, h = check_image_size(image_size)
    if isinstance(line_width, bool) or int(line_width) != line_width or line_width < 1:
        raise GeometryError("bad_size", f"line_width must be a positive integer, got {line_width!r}")
    if isinstance(dilation, bool) or int(dilation) != dilation or dilation < 0:
        raise GeometryError("bad_size", f"dilation must be an integer >= 0, got {dilation!r}")
    lattice = grid_lattice(points117, (w, h))
    fixed = np.round(lattice * (1 << _SHIFT)).astype(np.int32)
    lines = range(LATTICE) if include_border else range(1, LATTICE - 1)
    polylines = [fixed[r] for r in lines] + [np.ascontiguousarray(fixed[:, c]) for c in lines]
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.polylines(mask, polylines, False, 255, thickness=int(line_width), lineType=cv2.LINE_8, shift=_SHIFT)
    if dilation:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(dilation) + 1, 2 * int(dilation) + 1))
        mask = cv2.dilate(mask, kernel)
    return mask
