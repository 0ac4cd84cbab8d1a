"""Polygons and CVAT masks → pixels: exact on lattice shapes, unbiased on drawn outlines, and the
same pixels as ``bridge.geometry`` for masks and traced contours."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridge.geometry.errors import GeometryError
from bridge.geometry.polygons import mask_to_polygons, polygon_area, polygon_to_mask
from bridge.geometry.rle import cvat_rle_to_mask, mask_to_cvat_rle
from bridge.reports.raster import mask_pixels, paint_under, polygon_pixels
from tests.reports.synthetic import blob


def full(found, width: int, height: int) -> np.ndarray:
    out = np.zeros((height, width), bool)
    if found is not None:
        top, left, crop = found
        out[top : top + crop.shape[0], left : left + crop.shape[1]] |= crop
    return out


def perimeter(points) -> float:
    v = np.asarray(points, float).reshape(-1, 2)
    return float(np.hypot(*(np.roll(v, -1, axis=0) - v).T).sum())


def test_lattice_rectangle_includes_its_outline():
    got = full(polygon_pixels([10, 10, 49, 10, 49, 29, 10, 29], 100, 60), 100, 60)
    expected = np.zeros((60, 100), bool)
    expected[10:30, 10:50] = True
    assert np.array_equal(got, expected)


def test_half_pixel_rectangle_counts_its_exact_area():
    found = polygon_pixels([9.5, 9.5, 49.5, 9.5, 49.5, 29.5, 9.5, 29.5], 100, 60)
    assert full(found, 100, 60).sum() == 800 == polygon_area([9.5, 9.5, 49.5, 9.5, 49.5, 29.5, 9.5, 29.5])


def test_traced_contours_give_back_the_mask_exactly():
    rng = np.random.default_rng(3)
    for _ in range(150):
        mask = np.zeros((220, 260), np.uint8)
        cv2.ellipse(mask, (int(rng.integers(40, 220)), int(rng.integers(40, 180))),
                    (int(rng.integers(1, 60)), int(rng.integers(1, 60))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        (poly,) = mask_to_polygons(mask, tolerance=0, min_area=0)
        assert np.array_equal(full(polygon_pixels(poly, 260, 220), 260, 220), mask.astype(bool))
        # and the same pixels as the bridge's own polygon -> mask conversion of that contour
        assert np.array_equal(polygon_to_mask(poly, (260, 220)), mask.astype(bool))


def test_drawn_outlines_are_unbiased_unlike_outline_drawing():
    """Pixel count − exact area, per unit of perimeter: ~0 here, ~+0.46 for cv2.fillPoly's drawn outline."""
    rng = np.random.default_rng(4)
    ours, fill = [], []
    for _ in range(120):
        pts = blob(rng, rng.uniform(300, 700), rng.uniform(300, 700), rng.uniform(5, 200))
        area, per = polygon_area(pts), perimeter(pts)
        ours.append((full(polygon_pixels(pts, 1000, 1000), 1000, 1000).sum() - area) / per)
        fill.append((polygon_to_mask(pts, (1000, 1000)).sum() - area) / per)
    assert abs(np.mean(ours)) < 0.02, np.mean(ours)
    assert 0.4 < np.mean(fill) < 0.5, np.mean(fill)


def test_polygons_are_clipped_to_the_frame():
    got = full(polygon_pixels([-20, -20, 9, -20, 9, 4, -20, 4], 30, 30), 30, 30)
    assert got.sum() == 10 * 5 and got[:5, :10].all()
    assert polygon_pixels([40, 40, 60, 40, 60, 60], 30, 30) is None


def test_self_crossing_outline_uses_even_odd():
    bow_tie = [0.5, 0.5, 40.5, 40.5, 40.5, 0.5, 0.5, 40.5]  # two triangles meeting at (20.5, 20.5)
    count = full(polygon_pixels(bow_tie, 50, 50), 50, 50).sum()
    assert abs(count - 2 * 400) <= 42  # two triangles of 400 px², ± the pixels on their shared diagonals


@pytest.mark.parametrize("points", [[1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 0, 5, 0, float("nan"), 5], ["a", 1, 2, 3, 4, 5]])
def test_bad_polygons_raise_bad_points(points):
    with pytest.raises(GeometryError) as err:
        polygon_pixels(points, 10, 10)
    assert err.value.code == "bad_points"


def test_masks_decode_on_their_bbox_like_the_full_frame_decoder():
    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = rng.random((40, 50)) > 0.6
        mask[0, 0] = True
        rle = mask_to_cvat_rle(mask)
        assert np.array_equal(full(mask_pixels(rle, 50, 40), 50, 40), cvat_rle_to_mask(rle, 50, 40))


def test_bad_masks_raise():
    rle = mask_to_cvat_rle(np.ones((5, 5), bool))  # bbox [0, 0, 4, 4]
    with pytest.raises(GeometryError, match="does not fit the 4×4 frame"):
        mask_pixels(rle, 4, 4)
    assert full(mask_pixels([3, 1, 0, 0, 1, 1], 10, 10), 10, 10).sum() == 1  # valid: only (1, 1) is set
    with pytest.raises(GeometryError) as err:
        mask_pixels([5, 0, 0, 1, 1], 10, 10)  # runs cover 5 px of a 4 px bbox
    assert err.value.code == "bad_rle"
    with pytest.raises(GeometryError):
        mask_pixels([1, 2], 10, 10)
    with pytest.raises(GeometryError, match="whole pixels"):
        mask_pixels([0, 1, 0.5, 0, 0.5, 0], 10, 10)


def test_paint_under_never_overwrites_and_counts_what_it_set():
    target = np.zeros((4, 4), np.uint8)
    assert paint_under(target, 0, 0, np.ones((2, 3), bool), 2) == 6
    assert paint_under(target, 1, 1, np.ones((2, 2), bool), 5) == 2
    assert target.tolist() == [[2, 2, 2, 0], [2, 2, 2, 0], [0, 5, 5, 0], [0, 0, 0, 0]]
