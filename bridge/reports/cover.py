"""Cover of one quadrat: every pixel gets at most one label, then pixels and points are counted.

The frame is the quadrat (a warped, grid-cleaned stage-4 frame), so cover = pixels of a label /
(width × height), and the unlabeled share is what no shape covers.

Overlaps: shapes are painted into one label map in CVAT's drawing order — ascending ``z_order``,
then ascending ``order`` (the CVAT shape id: on equal z the later shape is on top) — and a pixel
keeps the label of the topmost shape covering it. Shapes of the same label therefore count as
their union, and where different labels overlap only the top one counts: labels' covers plus
the unlabeled share always sum to exactly 100 % and no pixel is counted twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bridge.geometry.errors import GeometryError
from bridge.reports.points import point_rng, sample_points
from bridge.reports.raster import mask_pixels, paint_under, polygon_pixels

AREA_TYPES: tuple[str, ...] = ("polygon", "mask")


@dataclass(frozen=True)
class Region:
    """One polygon or mask shape of a quadrat (``points`` as CVAT stores them)."""

    label: str
    type: Literal["polygon", "mask"]
    points: Sequence[float]
    z_order: int = 0
    order: int = 0


@dataclass(frozen=True)
class Quadrat:
    """A frame to report on. ``info`` (task, frame, source photo, ...) is copied into every row."""

    name: str
    width: int
    height: int
    regions: Sequence[Region] = ()
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PointPlan:
    count: int = 100
    method: str = "stratified"
    seed: int = 0


@dataclass
class Cover:
    """What one quadrat measured: visible pixels per label (every label present, zeros included),
    and the point-intercept sample (pixel rows, cols and the label index under each, 0 = none)."""

    quadrat: Quadrat
    pixels: dict[str, int]
    unlabeled: int
    point_rows: np.ndarray
    point_cols: np.ndarray
    point_labels: np.ndarray

    @property
    def total(self) -> int:
        return self.quadrat.width * self.quadrat.height

    def point_hits(self, labels: Sequence[str]) -> dict[str, int]:
        """Points per label (in ``labels`` order, the order the map was painted with) and unlabeled."""
        counts = np.bincount(self.point_labels, minlength=len(labels) + 1)
        return {"": int(counts[0]), **{name: int(counts[i + 1]) for i, name in enumerate(labels)}}


def label_map(quadrat: Quadrat, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """H×W map of label indices (``labels[i]`` → ``i + 1``, 0 = no shape) where the topmost shape
    wins, and the pixel count of each index ``0..len(labels)``.

    Shapes are painted top-most first, each only onto pixels no shape above it took, so a shape's
    visible pixels are counted as it is painted (no pass over the whole frame).
    """
    index = {name: i + 1 for i, name in enumerate(labels)}
    w, h = quadrat.width, quadrat.height
    if w < 1 or h < 1:
        raise GeometryError("bad_size", f"quadrat {quadrat.name!r} has no pixels ({w}×{h})")
    out = np.zeros((h, w), dtype=np.uint8 if len(labels) < 255 else np.uint16)
    counts = np.zeros(len(labels) + 1, dtype=np.int64)
    regions = quadrat.regions
    top_first = sorted(range(len(regions)), key=lambda i: (regions[i].z_order, regions[i].order, i), reverse=True)
    for i in top_first:
        region = regions[i]
        if region.label not in index:
            raise ValueError(f"shape label {region.label!r} is not one of the report's labels")
        try:
            if region.type == "polygon":
                found = polygon_pixels(region.points, w, h)
            elif region.type == "mask":
                found = mask_pixels(region.points, w, h)
            else:
                raise GeometryError("bad_points", f"cannot measure the area of a {region.type!r} shape")
        except GeometryError as exc:
            raise GeometryError(exc.code, f"{region.label} {region.type} (shape {region.order}): {exc}") from exc
        if found is not None:
            counts[index[region.label]] += paint_under(out, *found, index[region.label])
    counts[0] = w * h - int(counts[1:].sum())
    return out, counts


def measure(quadrat: Quadrat, labels: Sequence[str], plan: PointPlan) -> Cover:
    """Area cover and the point sample of one quadrat (raises ``GeometryError`` on a bad shape)."""
    lmap, counts = label_map(quadrat, labels)
    rows, cols = sample_points(quadrat.width, quadrat.height, plan.count, plan.method,
                               point_rng(plan.seed, quadrat.name))
    return Cover(
        quadrat=quadrat,
        pixels={name: int(counts[i + 1]) for i, name in enumerate(labels)},
        unlabeled=int(counts[0]),
        point_rows=rows,
        point_cols=cols,
        point_labels=lmap[rows, cols].astype(np.int64),
    )
