"""Quadrat warp: a projected marked square warps back within 1 px; each bad corner case has its code."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import BadGeometry, BadImage
from bridge.geometry.errors import GeometryError
from bridge.geometry.warp import (
    WarpResult,
    corner_homography,
    output_size,
    transform_points,
    validate_corners,
    warp_quadrat,
)

SIDE = 600
# Marker centres in the square; the extra (60, 150) dot breaks every symmetry (flip/rotation).
MARKERS = [(x, y) for y in (100, 300, 500) for x in (100, 300, 500)] + [(60, 160)]
FRAME = (1600, 1200)
CORNERS = [(310.0, 180.0), (1350.0, 260.0), (1240.0, 1090.0), (250.0, 980.0)]  # TL, TR, BR, BL


def _marked_square() -> np.ndarray:
    img = np.full((SIDE, SIDE, 3), 235, np.uint8)
    for x, y in MARKERS:
        cv2.circle(img, (x * 16, y * 16), 14 * 16, (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    return img


def _dark_centroids(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroids of the dark blobs."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
    weight = np.clip(235 - gray, 0, None)
    n, labels = cv2.connectedComponents((weight > 40).astype(np.uint8))
    out = []
    for i in range(1, n):
        blob = cv2.dilate((labels == i).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        ys, xs = np.nonzero(blob)
        wts = weight[ys, xs]
        out.append((np.dot(xs, wts) / wts.sum(), np.dot(ys, wts) / wts.sum()))
    return np.array(out)


def _project_square(square: np.ndarray) -> np.ndarray:
    """Render the square into a FRAME-sized photo with its corners landing on CORNERS."""
    s = SIDE - 1
    h = cv2.getPerspectiveTransform(
        np.float32([[0, 0], [s, 0], [s, s], [0, s]]), np.float32(CORNERS)
    )
    return cv2.warpPerspective(square, h, FRAME, flags=cv2.INTER_CUBIC, borderValue=(90, 120, 60))


def test_projected_square_warps_back_within_one_pixel():
    photo = _project_square(_marked_square())
    result = warp_quadrat(photo, CORNERS, size=SIDE)
    assert isinstance(result, WarpResult)
    assert result.size == (SIDE, SIDE) and result.image.shape == (SIDE, SIDE, 3)
    found = _dark_centroids(result.image)
    assert len(found) == len(MARKERS)
    for mx, my in MARKERS:
        dist = np.hypot(found[:, 0] - mx, found[:, 1] - my).min()
        assert dist < 1.0, f"marker {(mx, my)} is {dist:.2f} px away after the warp"
    # the homography maps the corners onto the output corners
    mapped = transform_points(result.homography, np.array(CORNERS))
    s = SIDE - 1
    assert np.allclose(mapped, [[0, 0], [s, 0], [s, s], [0, s]], atol=1e-6)


def test_default_output_keeps_resolution():
    photo = _project_square(_marked_square())
    result = warp_quadrat(photo, CORNERS)
    edges = [np.hypot(*np.subtract(CORNERS[(i + 1) % 4], CORNERS[i])) for i in range(4)]
    side = round(max(edges))
    assert result.size == (side, side) == output_size(np.array(CORNERS))
    assert result.image.shape[:2] == (side, side)
    assert output_size(np.array(CORNERS), 1920) == (1920, 1920)


def test_grayscale_image_and_interpolation_flag():
    photo = cv2.cvtColor(_project_square(_marked_square()), cv2.COLOR_BGR2GRAY)
    result = warp_quadrat(photo, CORNERS, size=300, interpolation=cv2.INTER_NEAREST)
    assert result.image.shape == (300, 300)
    values = set(np.unique(result.image).tolist())
    assert values <= set(np.unique(photo).tolist())  # nearest neighbour invents no new values


def test_transform_points_inverse_round_trip():
    h = corner_homography(np.array(CORNERS), (500, 500))
    pts = np.array([[400.0, 400.0], [1000.0, 700.0], [700.0, 300.0]])
    back = transform_points(np.linalg.inv(h), transform_points(h, pts))
    assert np.allclose(back, pts, atol=1e-6)
    with pytest.raises(BadGeometry, match="N×2"):
        transform_points(h, np.zeros((3, 3)))


def _code(corners, size=FRAME, **kw) -> GeometryError:
    with pytest.raises(GeometryError) as err:
        validate_corners(corners, size, **kw)
    assert isinstance(err.value, BadGeometry)
    return err.value


def test_missing_corner_names_the_missing_corner():
    err = _code([CORNERS[0], CORNERS[1], None, CORNERS[3]])
    assert err.code == "corner_count"
    assert "corner 3 (bottom-right) missing" in str(err)
    assert err.details["missing"] == [3]


def test_too_few_and_too_many_corners():
    err = _code(CORNERS[:2])
    assert err.code == "corner_count" and "corners 3 (bottom-right), 4 (bottom-left) missing" in str(err)
    err = _code(CORNERS + [(1.0, 1.0)])
    assert err.code == "corner_count" and "got 5" in str(err)


def test_swapped_top_corners_are_self_crossing():
    tl, tr, br, bl = CORNERS
    err = _code([tr, tl, br, bl])
    assert err.code == "self_crossing"
    assert "left and right are swapped" in str(err)
    err = _code([tl, br, tr, bl])
    assert err.code == "self_crossing" and "top and bottom are swapped" in str(err)


def test_counter_clockwise_corners_would_flip_the_output():
    tl, tr, br, bl = CORNERS
    err = _code([tr, tl, bl, br])  # a mirror image: each corner valid but the walk is CCW
    assert err.code == "wrong_orientation"
    assert "corners are counter-clockwise: output would be flipped" in str(err)


def test_out_of_bounds_names_corner_and_position():
    corners = list(CORNERS)
    corners[1] = (1900.0, 260.0)
    err = _code(corners)
    assert err.code == "out_of_bounds"
    assert "corner 2 (top-right) at (1900.0, 260.0)" in str(err) and "1600×1200" in str(err)
    # within tolerance (2 % of 1600 = 32 px) is accepted and not clipped
    corners[1] = (1620.0, -20.0)
    assert validate_corners(corners, FRAME)[1].tolist() == [1620.0, -20.0]


def test_tiny_quadrat_is_too_small():
    err = _code([(10, 10), (40, 10), (40, 40), (10, 40)])
    assert err.code == "too_small" and "below 1.0%" in str(err)
    err = _code([(10, 10), (10, 10), (10, 10), (10, 10)], min_area_fraction=0)
    assert err.code == "too_small"


def test_non_convex_quadrat():
    err = _code([(100, 100), (900, 100), (900, 800), (700, 300)])
    assert err.code == "not_convex" and "corner 4 (bottom-left)" in str(err)


def test_non_finite_and_malformed_corners():
    assert _code([(np.nan, 1.0)] + CORNERS[1:]).code == "invalid_point"
    assert _code([(1.0,)] + CORNERS[1:]).code == "invalid_point"


def test_warp_rejects_bad_image():
    with pytest.raises(BadImage):
        warp_quadrat(np.zeros((0, 0, 3), np.uint8), CORNERS)
    with pytest.raises(GeometryError) as err:
        warp_quadrat(np.zeros((100, 100, 3), np.uint8), CORNERS)  # corners beyond a 100×100 image
    assert err.value.code == "out_of_bounds"


@st.composite
def _convex_quads(draw):
    """Random clockwise convex quads: perturbed rectangle corners in a 1000×800 image."""
    x0, y0 = draw(st.floats(0, 300)), draw(st.floats(0, 250))
    x1, y1 = draw(st.floats(650, 999)), draw(st.floats(500, 799))
    jitter = [draw(st.floats(-60, 60)) for _ in range(8)]
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return [
        (min(max(x + jitter[2 * i], 0.0), 999.0), min(max(y + jitter[2 * i + 1], 0.0), 799.0))
        for i, (x, y) in enumerate(pts)
    ]


@settings(max_examples=60, deadline=None)
@given(_convex_quads(), st.integers(16, 2000))
def test_valid_quads_map_exactly_onto_the_output_corners(quad, side):
    pts = validate_corners(quad, (1000, 800))
    assert pts.dtype == np.float64 and pts.shape == (4, 2)
    h = corner_homography(pts, (side, side))
    mapped = transform_points(h, pts)
    s = side - 1
    assert np.allclose(mapped, [[0, 0], [s, 0], [s, s], [0, s]], atol=1e-6 * side)


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, "big", True])
def test_output_size_rejects_bad_sizes(bad):
    with pytest.raises(GeometryError) as err:
        output_size(np.array(CORNERS), bad)
    assert err.value.code == "bad_size"
