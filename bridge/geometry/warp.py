"""Quadrat warp: the 4 corners of the ``quadrat_corner`` skeleton -> an axis-aligned square image.

Corner order is literal, never re-sorted: sublabel "1".."4" = top-left, top-right, bottom-right,
bottom-left. Bad corners raise ``GeometryError`` (a ``BadGeometry``) whose ``code`` is one of
``corner_count``, ``invalid_point``, ``out_of_bounds``, ``self_crossing``, ``too_small``,
``not_convex``, ``wrong_orientation`` (checked in that order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from bridge.errors import BadImage
from bridge.geometry.errors import GeometryError, check_image_size

CORNER_NAMES = ("top-left", "top-right", "bottom-right", "bottom-left")


def _corner(i: int) -> str:
    return f"corner {i + 1} ({CORNER_NAMES[i]})"


def validate_corners(
    corners: Sequence[tuple[float, float] | None],
    image_size: tuple[int, int],
    *,
    tolerance: float = 0.02,
    min_area_fraction: float = 0.01,
) -> np.ndarray:
    """Check 4 corners (TL, TR, BR, BL) on an image of ``image_size`` (w, h); return float64 (4, 2).

    Corners may lie outside ``[0, w-1] × [0, h-1]`` by up to ``tolerance × max(w, h)`` pixels; they
    are returned unchanged (not clipped) so the warp keeps its true geometry.
    """
    w, h = check_image_size(image_size)
    if isinstance(corners, np.ndarray) and corners.ndim == 2 and corners.shape[1] == 2:
        corners = [tuple(c) for c in corners]
    try:
        items = list(corners)
    except TypeError as exc:
        raise GeometryError("corner_count", f"corners must be a list of 4 points, got {corners!r}") from exc
    missing = [i + 1 for i, c in enumerate(items[:4]) if c is None] + list(range(len(items) + 1, 5))
    if len(items) > 4:
        raise GeometryError("corner_count", f"expected exactly 4 corners, got {len(items)}", count=len(items))
    if missing:
        names = ", ".join(f"{i} ({CORNER_NAMES[i - 1]})" for i in missing)
        word = "corner" if len(missing) == 1 else "corners"
        raise GeometryError(
            "corner_count", f"need exactly 4 quadrat corners: {word} {names} missing", missing=missing
        )
    pts = np.empty((4, 2), dtype=np.float64)
    for i, c in enumerate(items):
        try:
            x, y = c
            pts[i] = float(x), float(y)
        except (TypeError, ValueError) as exc:
            raise GeometryError("invalid_point", f"{_corner(i)} is not an (x, y) pair: {c!r}") from exc
        if not np.isfinite(pts[i]).all():
            raise GeometryError("invalid_point", f"{_corner(i)} has a non-finite coordinate: {c!r}")

    margin = tolerance * max(w, h)
    for i, (x, y) in enumerate(pts):
        if x < -margin or x > w - 1 + margin or y < -margin or y > h - 1 + margin:
            raise GeometryError(
                "out_of_bounds",
                f"{_corner(i)} at ({x:.1f}, {y:.1f}) is outside the {w}×{h} image",
                corner=i + 1,
                point=(float(x), float(y)),
            )

    if _segments_cross(pts[1], pts[2], pts[3], pts[0]):
        raise GeometryError(
            "self_crossing",
            "quadrat edges cross: left and right are swapped (corners 1/2 or 3/4 exchanged); "
            "order must be 1=top-left, 2=top-right, 3=bottom-right, 4=bottom-left",
        )
    if _segments_cross(pts[0], pts[1], pts[2], pts[3]):
        raise GeometryError(
            "self_crossing",
            "quadrat edges cross: top and bottom are swapped (corners 2/3 or 1/4 exchanged); "
            "order must be 1=top-left, 2=top-right, 3=bottom-right, 4=bottom-left",
        )

    area = _signed_area(pts)
    if abs(area) < min_area_fraction * w * h or abs(area) < 1.0:
        raise GeometryError(
            "too_small",
            f"quadrat area {abs(area):.0f} px² is below {min_area_fraction:.1%} of the {w}×{h} image",
            area=abs(area),
        )
    turns = _turns(pts)
    if not ((turns > 0).all() or (turns < 0).all()):
        bad = int(np.argmin(turns * np.sign(area)))
        raise GeometryError(
            "not_convex", f"quadrat is not convex: it bends inwards at {_corner(bad)}", corner=bad + 1
        )
    if area < 0:
        raise GeometryError(
            "wrong_orientation",
            "corners are counter-clockwise: output would be flipped "
            "(order must be 1=top-left, 2=top-right, 3=bottom-right, 4=bottom-left)",
        )
    return pts


def _signed_area(p: np.ndarray) -> float:
    """Shoelace area; positive = clockwise on screen (image y axis points down)."""
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _turns(p: np.ndarray) -> np.ndarray:
    """Cross product of (incoming, outgoing) edges at each vertex."""
    a = p - np.roll(p, 1, axis=0)
    b = np.roll(p, -1, axis=0) - p
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    """True when segments ab and cd properly intersect (cross each other)."""

    def orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    d1, d2 = orient(a, b, c), orient(a, b, d)
    d3, d4 = orient(c, d, a), orient(c, d, b)
    return d1 * d2 < 0 and d3 * d4 < 0


def output_size(corners: np.ndarray, size: int | None = None) -> tuple[int, int]:
    """Square output ``(w, h)``: side = longest quadrat edge (rounded) by default, else ``size``."""
    if size is not None:
        numeric = isinstance(size, int | float | np.integer) and not isinstance(size, bool)
        if not numeric or int(size) != size or size < 2:
            raise GeometryError("bad_size", f"output size must be an integer >= 2, got {size!r}")
        return int(size), int(size)
    pts = np.asarray(corners, dtype=np.float64).reshape(4, 2)
    edges = np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1)
    side = max(2, int(round(float(edges.max()))))
    return side, side


def corner_homography(corners: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """3×3 homography mapping TL, TR, BR, BL to (0,0), (w-1,0), (w-1,h-1), (0,h-1)."""
    w, h = check_image_size(out_size)
    src = np.asarray(corners, dtype=np.float64).reshape(4, 2)
    dst = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    a = np.zeros((8, 8))
    rhs = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        rhs[2 * i], rhs[2 * i + 1] = u, v
    try:
        coef = np.linalg.solve(a, rhs)
    except np.linalg.LinAlgError as exc:
        raise GeometryError("too_small", "corners are degenerate (collinear): no homography exists") from exc
    return np.append(coef, 1.0).reshape(3, 3)


@dataclass
class WarpResult:
    """Warped image, the homography used (source -> output pixels) and the output ``(w, h)``."""

    image: np.ndarray
    homography: np.ndarray
    size: tuple[int, int]


def warp_quadrat(
    image: np.ndarray,
    corners: Sequence[tuple[float, float] | None] | np.ndarray,
    size: int | None = None,
    *,
    interpolation: int = cv2.INTER_LINEAR,
) -> WarpResult:
    """Validate ``corners`` against ``image`` and warp the quadrat to a square (see ``output_size``)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        got = getattr(image, "shape", type(image).__name__)
        raise BadImage(f"cannot warp: expected an H×W[×C] image array, got {got!r}")
    h_img, w_img = image.shape[:2]
    pts = validate_corners(corners, (w_img, h_img))
    out = output_size(pts, size)
    hom = corner_homography(pts, out)
    warped = cv2.warpPerspective(image, hom, out, flags=interpolation, borderMode=cv2.BORDER_CONSTANT)
    return WarpResult(image=warped, homography=hom, size=out)


def transform_points(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply homography ``h`` to N×2 points; returns float64 N×2."""
    hom = np.asarray(h, dtype=np.float64)
    if hom.shape != (3, 3):
        raise GeometryError("bad_points", f"homography must be 3×3, got shape {hom.shape}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise GeometryError("bad_points", f"points must be N×2, got shape {pts.shape}")
    proj = pts @ hom[:, :2].T + hom[:, 2]
    z = proj[:, 2:3]
    if np.any(np.abs(z) < 1e-12):
        raise GeometryError("bad_points", "a point maps to infinity under this homography")
    return proj[:, :2] / z

