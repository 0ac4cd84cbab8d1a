"""Synthetic quadrats with known geometry: coral-like polygons whose exact areas are known."""

from __future__ import annotations

import math

import numpy as np

from bridge.geometry.polygons import polygon_area
from bridge.reports.cover import Quadrat, Region

GENERA = ["Acanthastrea", "Acropora", "Astreopora", "Atrea", "Fungia", "Goniastrea", "Leptastrea", "Merulinidae",
          "Millepora", "Montastrea", "Montipora", "Other", "Pavona/Leptoseris", "Pocillopora", "Porites",
          "Psammocora"]


def blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 48) -> list[float]:
    """A star-shaped (hence simple) lobed outline of mean radius ``r``; radius stays within r·[0.7, 1.3]."""
    t = np.sort(rng.uniform(0, 2 * math.pi, n))
    lobes, phase = int(rng.integers(2, 6)), rng.uniform(0, 2 * math.pi)
    rr = r * (1 + 0.3 * np.sin(lobes * t + phase))
    return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], axis=1).ravel().tolist()


def convex(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 24) -> list[float]:
    """A convex polygon: ``n`` random points of a circle, in angle order."""
    t = np.sort(rng.uniform(0, 2 * math.pi, n))
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).ravel().tolist()


def quadrat(rng: np.random.Generator, name: str, size: int = 2000, corals: int = 30,
            labels: list[str] = GENERA) -> tuple[Quadrat, dict[str, float]]:
    """``corals`` non-overlapping blobs (one per jittered grid cell) and the exact area per label (px²)."""
    cols = math.ceil(math.sqrt(corals))
    rows = math.ceil(corals / cols)
    cell_w, cell_h = size / cols, size / rows
    regions, exact = [], dict.fromkeys(labels, 0.0)
    for k in range(corals):
        r_max = 0.5 * min(cell_w, cell_h) / 1.3 - 1
        r = rng.uniform(0.15, 1.0) * r_max
        cx = (k % cols + 0.5) * cell_w + rng.uniform(-1, 1) * (0.5 * cell_w - 1.3 * r - 1)
        cy = (k // cols + 0.5) * cell_h + rng.uniform(-1, 1) * (0.5 * cell_h - 1.3 * r - 1)
        label = labels[int(rng.integers(len(labels)))]
        pts = blob(rng, cx, cy, r)
        regions.append(Region(label, "polygon", pts, order=k))
        exact[label] += polygon_area(pts)
    return Quadrat(name, size, size, tuple(regions), {"frame_name": name}), exact


def clip_convex(subject: list[float], clip: list[float]) -> list[float]:
    """Sutherland–Hodgman: ``subject`` ∩ ``clip`` for a convex ``clip`` (counter- or clockwise)."""
    c = np.asarray(clip, float).reshape(-1, 2)
    orient = np.sign(polygon_signed_area(clip))
    out = np.asarray(subject, float).reshape(-1, 2)
    for a, b in zip(c, np.roll(c, -1, axis=0), strict=True):
        if len(out) == 0:
            break

        def side(p: np.ndarray, a: np.ndarray = a, b: np.ndarray = b) -> float:
            return orient * ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))

        result = []
        prev = out[-1]
        for cur in out:
            if side(cur) >= 0:
                if side(prev) < 0:
                    result.append(_cross(prev, cur, a, b))
                result.append(cur)
            elif side(prev) >= 0:
                result.append(_cross(prev, cur, a, b))
            prev = cur
        out = np.array(result).reshape(-1, 2)
    return out.ravel().tolist()


def polygon_signed_area(points: list[float]) -> float:
    v = np.asarray(points, float).reshape(-1, 2)
    x, y = v[:, 0], v[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _cross(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d1, d2 = q - p, b - a
    denom = d1[0] * d2[1] - d1[1] * d2[0]
    t = ((a[0] - p[0]) * d2[1] - (a[1] - p[1]) * d2[0]) / denom
    return p + t * d1
