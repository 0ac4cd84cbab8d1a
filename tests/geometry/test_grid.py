"""117-point grid: id <-> (row, col), validation, lattice and the line mask vs independently drawn lines."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.geometry.errors import GeometryError
from bridge.geometry.grid import (
    GRID_POINTS,
    grid_id_to_rc,
    grid_lattice,
    grid_mask,
    keypoints_to_points,
    rc_to_grid_id,
    validate_grid_points,
)
from tests.geometry.grid_export import SVG_NODES


def test_id_rc_round_trip_covers_the_lattice_without_corners():
    seen = set()
    for i in range(1, GRID_POINTS + 1):
        r, c = grid_id_to_rc(i)
        assert rc_to_grid_id(r, c) == i
        seen.add((r, c))
    corners = {(0, 0), (0, 10), (10, 0), (10, 10)}
    assert seen == {(r, c) for r in range(11) for c in range(11)} - corners
    assert all(rc_to_grid_id(r, c) is None for r, c in corners)
    assert (grid_id_to_rc(1), grid_id_to_rc(9), grid_id_to_rc(10), grid_id_to_rc(20)) == (
        (0, 1), (0, 9), (1, 0), (1, 10)
    )
    assert (grid_id_to_rc(108), grid_id_to_rc(109), grid_id_to_rc(117)) == ((9, 10), (10, 1), (10, 9))


@pytest.mark.parametrize("bad", [0, 118, -1, 1.5, "3", True])
def test_bad_ids_are_rejected(bad):
    with pytest.raises(GeometryError) as err:
        grid_id_to_rc(bad)
    assert err.value.code == "bad_grid_id"
    with pytest.raises(GeometryError):
        rc_to_grid_id(11, 0)


def test_mapping_matches_the_real_cvat_export_layout():
    """The export's SVG places node N at canvas (x, y): x must follow the column, y the row."""
    ids = np.array([n[0] for n in SVG_NODES])
    assert sorted(ids.tolist()) == list(range(1, GRID_POINTS + 1))
    rc = np.array([grid_id_to_rc(int(i)) for i in ids], dtype=float)
    xy = np.array([(n[1], n[2]) for n in SVG_NODES])
    for axis, col in ((0, 1), (1, 0)):  # x ~ column, y ~ row
        coef = np.polyfit(rc[:, col], xy[:, axis], 1)
        resid = xy[:, axis] - np.polyval(coef, rc[:, col])
        assert coef[0] > 5  # ~9 canvas units per lattice step, increasing
        assert np.abs(resid).max() < coef[0] / 2  # never closer to a neighbouring row/column


def _lattice_points(w: int, h: int, jitter: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A slightly irregular 11×11 lattice on a w×h warped frame; returns (lattice, points117)."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(0, w - 1, 11)
    ys = np.linspace(0, h - 1, 11)
    lat = np.stack(np.meshgrid(xs, ys), axis=-1)
    lat[1:10, :, 0] += rng.uniform(-jitter, jitter, (9, 11))
    lat[:, 1:10, 1] += rng.uniform(-jitter, jitter, (11, 9))
    lat[..., 0] = np.clip(lat[..., 0], 0, w - 1)
    lat[..., 1] = np.clip(lat[..., 1], 0, h - 1)
    pts = np.array([lat[grid_id_to_rc(i)] for i in range(1, GRID_POINTS + 1)])
    return lat, pts


def _drawn_lines(lattice: np.ndarray, w: int, h: int, width: float, border: bool) -> np.ndarray:
    """Independent reference: pixels within width/2 of any lattice segment (exact distances)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w), bool)
    idx = range(11) if border else range(1, 10)
    segments = [(lattice[r, c], lattice[r, c + 1]) for r in idx for c in range(10)]
    segments += [(lattice[r, c], lattice[r + 1, c]) for c in idx for r in range(10)]
    for a, b in segments:
        d = b - a
        t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / float(d @ d), 0, 1)
        out |= np.hypot(xx - a[0] - t * d[0], yy - a[1] - t * d[1]) <= width / 2
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("border", [True, False])
def test_grid_mask_matches_drawn_lines(border):
    w, h, width = 420, 380, 12
    lattice, pts = _lattice_points(w, h, jitter=6)
    assert np.allclose(grid_lattice(pts, (w, h)), lattice)
    mask = grid_mask(pts, (w, h), line_width=width, include_border=border)
    assert mask.dtype == np.uint8 and mask.shape == (h, w)
    assert set(np.unique(mask).tolist()) == {0, 255}
    iou = _iou(mask > 0, _drawn_lines(lattice, w, h, width, border))
    assert iou >= 0.9, iou


def test_border_and_dilation_add_coverage():
    w = h = 300
    _, pts = _lattice_points(w, h, jitter=4)
    inner = grid_mask(pts, (w, h), line_width=8, include_border=False) > 0
    full = grid_mask(pts, (w, h), line_width=8) > 0
    dilated = grid_mask(pts, (w, h), line_width=8, dilation=3) > 0
    # the left frame edge is covered only with the border (inner rows still touch it where they end)
    assert inner[:, :3].mean() < 0.4 and full[:, :3].all()
    assert (full & ~inner).sum() > 0 and not (inner & ~full).any()
    assert not (full & ~dilated).any()
    # 3 px of elliptic dilation widens an 8 px line to ~14 px: area grows by roughly 14/8
    assert 1.4 < dilated.sum() / full.sum() < 1.9


def test_validate_reports_missing_ids_compactly():
    _, pts = _lattice_points(500, 500, jitter=3)
    points = {i + 1: tuple(p) for i, p in enumerate(pts)}
    for i in (5, 6, 7, 50):
        points[i] = None
    del points[117]
    with pytest.raises(GeometryError) as err:
        validate_grid_points(points, (500, 500))
    assert err.value.code == "grid_missing"
    assert "5 missing or outside (ids 5-7, 50, 117)" in str(err.value)
    assert err.value.details["ids"] == [5, 6, 7, 50, 117]


def test_validate_out_of_bounds_and_clipping():
    _, pts = _lattice_points(500, 400, jitter=3)
    points = {i + 1: (float(x), float(y)) for i, (x, y) in enumerate(pts)}
    points[1] = (points[1][0], -5.0)  # 5 px above: within 2 % of 500 -> clipped to 0
    points[60] = (520.0, 200.0)  # 21 px right of x = 499: outside the 10 px tolerance
    points[61] = (-30.0, 200.0)
    with pytest.raises(GeometryError) as err:
        validate_grid_points(points, (500, 400))
    assert err.value.code == "out_of_bounds" and "ids 60-61" in str(err.value)
    points[60], points[61] = (505.0, 200.0), (10.0, 200.0)
    out = validate_grid_points(points, (500, 400))
    assert out.shape == (117, 2) and out.dtype == np.float64
    assert out[0, 1] == 0.0 and out[59, 0] == 499.0 and out[60, 0] == 10.0


def test_validate_rejects_unknown_ids():
    with pytest.raises(GeometryError) as err:
        validate_grid_points({0: (1.0, 1.0), 118: (2.0, 2.0)}, (10, 10))
    assert err.value.code == "bad_grid_id"


def test_keypoints_list_form():
    _, pts = _lattice_points(300, 300, jitter=2)
    kps: list = [[float(x), float(y)] for x, y in pts]
    kps[3] = None
    kps[4] = [1.0, 2.0, 0]  # COCO "not labelled"
    kps[5] = [float("nan"), 1.0]
    points = keypoints_to_points(kps)
    assert set(points) == set(range(1, 118))
    assert points[4] is None and points[5] is None and points[6] is None
    assert points[1] == (kps[0][0], kps[0][1])
    with pytest.raises(GeometryError) as err:
        validate_grid_points(points, (300, 300))
    assert err.value.details["ids"] == [4, 5, 6]
    with pytest.raises(GeometryError):
        keypoints_to_points([[0, 0]] * 118)
    with pytest.raises(GeometryError) as err:
        keypoints_to_points([["x", "y"]])
    assert err.value.code == "invalid_point"


def test_mask_rejects_bad_arguments():
    _, pts = _lattice_points(100, 100, jitter=1)
    with pytest.raises(GeometryError):
        grid_mask(pts[:100], (100, 100))
    with pytest.raises(GeometryError):
        grid_mask(pts, (100, 100), line_width=0)
    with pytest.raises(GeometryError):
        grid_mask(pts, (0, 100))
