"""Grid-line mask from the 117 grid keypoints (compatibility input of ``pth-lama``).

The lattice's 4 missing corners are the image corners (the quadrat was warped onto the image), so
every row and column of the 11 x 11 lattice, edges included, becomes a thick polyline through its
known points. A missing inner point is skipped (the line runs straight between its neighbours); a
missing point on the lattice border is extrapolated from the two points inward of it, so lines still
reach the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from grid_layout import LATTICE, NUM_POINTS, position

_SHIFT = 4  # sub-pixel bits for cv2.polylines


def parse_keypoints(keypoints: Any) -> list[tuple[float, float] | None]:
    """Validate ``[[x, y] | [x, y, v] | null] * 117``; ``v == 0`` (COCO "not labelled") means missing."""
    if not isinstance(keypoints, list) or len(keypoints) != NUM_POINTS:
        got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
        raise ValueError(f"'keypoints' must be a list of {NUM_POINTS} entries ([x, y] or null), got {got}")
    points: list[tuple[float, float] | None] = []
    for i, kp in enumerate(keypoints, start=1):
        if kp is None:
            points.append(None)
            continue
        if (not isinstance(kp, list) or len(kp) not in (2, 3)
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in kp)):
            raise ValueError(f"keypoint {i} must be [x, y], [x, y, visibility] or null, got {kp!r}")
        if not all(math.isfinite(v) for v in kp):
            raise ValueError(f"keypoint {i} holds a non-finite value: {kp!r}")
        points.append(None if len(kp) == 3 and kp[2] == 0 else (float(kp[0]), float(kp[1])))
    return points


def lattice_points(points: Sequence[tuple[float, float] | None], width: int, height: int) -> np.ndarray:
    """(11, 11, 2) pixel positions, NaN where unknown; the corners are the image corners."""
    lattice = np.full((LATTICE, LATTICE, 2), np.nan)
    last = LATTICE - 1
    lattice[0, 0], lattice[0, last] = (0, 0), (width - 1, 0)
    lattice[last, last], lattice[last, 0] = (width - 1, height - 1), (0, height - 1)
    for point_id, xy in enumerate(points, start=1):
        if xy is not None:
            lattice[position(point_id)] = xy
    for point_id in range(1, NUM_POINTS + 1):
        r, c = position(point_id)
        if not np.isnan(lattice[r, c]).any():
            continue
        step = (1 if r == 0 else -1 if r == last else 0, 1 if c == 0 else -1 if c == last else 0)
        if step != (0, 0):
            near = lattice[r + step[0], c + step[1]]
            far = lattice[r + 2 * step[0], c + 2 * step[1]]
            lattice[r, c] = 2 * near - far  # NaN stays NaN when either is unknown
    return lattice


def _draw_line(mask: np.ndarray, pts: np.ndarray, line_width: int) -> None:
    pts = pts[~np.isnan(pts).any(axis=1)]
    if len(pts) >= 2:
        fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [fixed], False, 255, thickness=line_width, lineType=cv2.LINE_8, shift=_SHIFT)


def grid_mask(points: Sequence[tuple[float, float] | None], width: int, height: int,
              line_width: int) -> np.ndarray:
    """Bool (height, width) mask covering every lattice row and column with lines ``line_width`` px thick."""
    if line_width < 1:
        raise ValueError(f"line width must be >= 1 px, got {line_width}")
    lattice = lattice_points(points, width, height)
    mask = np.zeros((height, width), np.uint8)
    for i in range(LATTICE):
        _draw_line(mask, lattice[i, :], line_width)
        _draw_line(mask, lattice[:, i], line_width)
    return mask > 0
