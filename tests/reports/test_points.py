"""Point-intercept sampling and its Wilson interval, including the 200-trial coverage check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.reports.cover import label_map
from bridge.reports.points import POINT_METHODS, cell_layout, point_rng, sample_points, wilson_interval
from tests.reports.synthetic import GENERA, quadrat


@pytest.mark.parametrize(("w", "h", "n", "layout"), [(2000, 2000, 100, (10, 10)), (2000, 1000, 100, (8, 14)),
                                                     (1920, 1080, 36, (5, 8)), (3, 100, 50, (50, 1)),
                                                     (10, 10, 100, (10, 10))])
def test_cell_layout_is_about_square_and_has_room(w, h, n, layout):
    assert cell_layout(w, h, n) == layout


@pytest.mark.parametrize("method", POINT_METHODS)
@pytest.mark.parametrize(("w", "h", "n"), [(2000, 2000, 100), (1920, 1080, 37), (5, 5, 25), (7, 3, 20), (1, 1, 1)])
def test_points_lie_in_the_frame(method, w, h, n):
    rows, cols = sample_points(w, h, n, method, point_rng(1, "x"))
    assert rows.size == cols.size == n
    assert rows.min() >= 0 and rows.max() < h and cols.min() >= 0 and cols.max() < w


def test_stratified_puts_one_point_in_each_cell():
    rows, cols = sample_points(1000, 1000, 100, "stratified", point_rng(4, "q"))
    cells = sorted(zip((rows // 100).tolist(), (cols // 100).tolist(), strict=True))
    assert cells == [(r, c) for r in range(10) for c in range(10)]
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 100


def test_grid_points_are_cell_centres():
    rows, cols = sample_points(100, 100, 4, "grid", point_rng(0, "q"))
    assert rows.tolist() == [24, 24, 74, 74] and cols.tolist() == [24, 74, 24, 74]


def test_points_are_fixed_by_seed_and_name():
    a = sample_points(500, 500, 50, "random", point_rng(1, "reef_a.jpg"))
    b = sample_points(500, 500, 50, "random", point_rng(1, "reef_a.jpg"))
    c = sample_points(500, 500, 50, "random", point_rng(1, "reef_b.jpg"))
    d = sample_points(500, 500, 50, "random", point_rng(2, "reef_a.jpg"))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_bad_point_requests_raise():
    with pytest.raises(ValueError, match="point method"):
        sample_points(10, 10, 5, "spiral", point_rng(0, "q"))
    with pytest.raises(ValueError, match="do not fit"):
        sample_points(3, 3, 10, "grid", point_rng(0, "q"))
    with pytest.raises(ValueError, match=">= 0"):
        sample_points(3, 3, -1, "grid", point_rng(0, "q"))
    assert sample_points(3, 3, 0, "grid", point_rng(0, "q"))[0].size == 0


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0 to 0.2775; 5/10 -> 0.2366 to 0.7634 (95 %, no continuity correction)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_point_estimates_fall_in_their_95_percent_interval():
    """200 seeded trials, each a fresh synthetic quadrat (30 corals, 16 genera) and 100 points: the true
    area cover of every label present (and the unlabeled share) is inside the Wilson 95 % interval of
    its point estimate in >= 95 % of cases (measured: stratified 0.971, random 0.950, grid 0.986)."""
    inside = dict.fromkeys(POINT_METHODS, 0)
    all_inside = dict.fromkeys(POINT_METHODS, 0)
    total = 0
    for trial in range(200):
        q, _ = quadrat(np.random.default_rng(1000 + trial), f"q{trial}.jpg", size=600, corals=30)
        lmap, counts = label_map(q, GENERA)
        truth = counts / lmap.size
        present = np.flatnonzero(counts)
        total += present.size
        for method in POINT_METHODS:
            rows, cols = sample_points(600, 600, 100, method, point_rng(trial, q.name))
            hits = np.bincount(lmap[rows, cols], minlength=len(GENERA) + 1)
            ok = [wilson_interval(int(hits[i]), 100)[0] <= truth[i] <= wilson_interval(int(hits[i]), 100)[1]
                  for i in present]
            inside[method] += sum(ok)
            all_inside[method] += all(ok)
    rates = {m: inside[m] / total for m in POINT_METHODS}
    print("\ncoverage of the Wilson 95 % interval over 200 trials (" + str(total) + " estimates): "
          + ", ".join(f"{m} {rates[m]:.3f} (all labels of a quadrat inside: {all_inside[m] / 200:.2f})"
                      for m in POINT_METHODS))
    assert rates["stratified"] >= 0.95 and rates["grid"] >= 0.95, rates  # stratified is the default
    # Simple random points make the binomial model exact, so their coverage sits at the nominal 95 %
    # give or take the Monte-Carlo error of ~3000 correlated estimates (about ±0.5 pp).
    assert rates["random"] >= 0.94, rates
