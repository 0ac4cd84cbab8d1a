"""Mask -> polygons (outer only, specks dropped, simplified), polygon hygiene and rasterisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.geometry.errors import GeometryError
from bridge.geometry.polygons import (
    clean_polygon,
    mask_to_polygons,
    polygon_area,
    polygon_to_mask,
    simplify_polygon,
)


def _vertices(poly: list[float]) -> np.ndarray:
    return np.asarray(poly).reshape(-1, 2)


def test_ring_gives_only_the_outer_polygon():
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 70, 1, -1)
    cv2.circle(mask, (100, 100), 40, 0, -1)  # the hole
    polys = mask_to_polygons(mask, tolerance=1.0)
    assert len(polys) == 1
    filled = polygon_to_mask(polys[0], (200, 200))
    assert filled[100, 100]  # the hole is filled: CVAT polygons have no holes
    assert abs(polygon_area(polys[0]) - np.pi * 70**2) < 0.03 * np.pi * 70**2


def test_specks_dropped_and_largest_first():
    mask = np.zeros((300, 300), bool)
    mask[10:60, 10:60] = True  # 2500 px
    mask[100:200, 100:220] = True  # 12000 px
    mask[250:280, 20:40] = True  # 600 px
    mask[5, 290] = True  # 1 px speck
    mask[290:292, 290:292] = True  # 2×2 speck: contour area 1 px² < min_area
    polys = mask_to_polygons(mask)
    assert len(polys) == 3
    areas = [polygon_area(p) for p in polys]
    assert areas == sorted(areas, reverse=True)
    assert _vertices(polys[0]).min(axis=0).tolist() == [100, 100]
    assert len(mask_to_polygons(mask, max_polygons=2)) == 2
    assert len(mask_to_polygons(mask, min_area=3000)) == 1
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)


def test_unsimplified_polygons_rasterise_back_to_the_same_pixels():
    rng = np.random.default_rng(3)
    mask = np.zeros((240, 320), np.uint8)
    for _ in range(6):  # star-ish hole-free blobs
        cx, cy = rng.integers(40, 280), rng.integers(40, 200)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = rng.uniform(8, 35, 9)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    n, _ = cv2.connectedComponents(mask, connectivity=8)
    polys = mask_to_polygons(mask, tolerance=0, min_area=0)
    assert len(polys) == n - 1
    rebuilt = np.zeros(mask.shape, bool)
    for p in polys:
        rebuilt |= polygon_to_mask(p, (320, 240))
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], -1, 1, -1)
    assert np.array_equal(rebuilt, filled.astype(bool))


def test_simplification_reduces_vertices_within_tolerance():
    mask = np.zeros((400, 400), np.uint8)
    cv2.circle(mask, (200, 200), 150, 1, -1)
    raw = mask_to_polygons(mask, tolerance=0)[0]
    simple = mask_to_polygons(mask, tolerance=2.5)[0]
    assert len(simple) < len(raw) / 4
    assert abs(polygon_area(simple) - polygon_area(raw)) / polygon_area(raw) < 0.02


def test_accepts_bool_uint8_and_other_dtypes():
    m = np.zeros((50, 50), np.float32)
    m[10:30, 10:30] = 0.7
    expected = mask_to_polygons(m > 0)
    assert mask_to_polygons(m) == expected == mask_to_polygons((m > 0).astype(np.uint8) * 255)
    assert mask_to_polygons(np.zeros((10, 10), bool)) == []
    with pytest.raises(GeometryError) as err:
        mask_to_polygons(np.zeros((3, 3, 3), np.uint8))
    assert err.value.code == "bad_mask"


def test_simplify_polygon_keeps_exact_values_and_three_vertices():
    square = [0.1, 0.1, 5.3, 0.2, 10.7, 0.1, 10.6, 10.3, 0.2, 10.4]
    out = simplify_polygon(square, 1.0)
    assert len(out) == 8 and set(out) <= set(square)  # the near-collinear vertex is gone, values exact
    assert simplify_polygon(square, 0) == square and simplify_polygon(square, -1) == square
    sliver = [0.0, 0.0, 50.0, 0.4, 100.0, 0.0, 50.0, 0.3]
    assert len(simplify_polygon(sliver, 10.0)) >= 6
    tri = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert simplify_polygon(tri, 100.0) == tri


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 500), st.floats(0, 500)), min_size=3, max_size=60), st.floats(0.1, 50))
def test_simplify_never_returns_fewer_than_three_vertices(verts, tol):
    flat = [v for xy in verts for v in xy]
    out = simplify_polygon(flat, tol)
    assert len(out) >= 6 and len(out) % 2 == 0 and len(out) <= len(flat)


def test_polygon_area():
    assert polygon_area([0, 0, 4, 0, 4, 3, 0, 3]) == 12.0
    assert polygon_area([0, 0, 0, 3, 4, 3, 4, 0]) == 12.0  # orientation does not matter
    assert polygon_area([0, 0, 1, 1]) == 0.0
    with pytest.raises(GeometryError, match="even"):
        polygon_area([0, 0, 1])


def test_clean_polygon():
    assert clean_polygon([0, 0, 10, 0, 10, 0, 10, 10, 0, 10, 0, 0]) == [10, 0, 10, 10, 0, 10, 0, 0]
    assert clean_polygon([0, 0, 10, 0]) is None  # 2 vertices
    assert clean_polygon([0, 0, 5, 5, 10, 10]) is None  # collinear: zero area
    assert clean_polygon([0, 0, 1, 0, float("nan"), 1]) is None
    # half outside: clipped to the image [0, w] × [0, h], area = the visible part
    clipped = clean_polygon([-10, 10, 30, 10, 30, 50, -10, 50], (20, 40))
    assert clipped is not None
    v = _vertices(clipped)
    assert v[:, 0].min() == 0 and v[:, 0].max() == 20 and v[:, 1].max() == 40
    assert polygon_area(clipped) == pytest.approx(20 * 30)
    assert clean_polygon([100, 100, 120, 100, 120, 120], (50, 50)) is None  # fully outside


def test_polygon_to_mask():
    m = polygon_to_mask([2, 1, 5, 1, 5, 3, 2, 3], (8, 6))
    assert m.dtype == np.bool_ and m.shape == (6, 8)
    assert m.sum() == 4 * 3 and m[1:4, 2:6].all()
    assert not polygon_to_mask([1, 1, 2, 2], (8, 6)).any()
    with pytest.raises(GeometryError):
        polygon_to_mask([1, 1, 2, 2, 3], (8, 6))
