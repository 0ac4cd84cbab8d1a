"""Area cover on synthetic quadrats with known polygons: accuracy, overlaps, masks vs polygons."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.geometry.errors import GeometryError
from bridge.geometry.polygons import mask_to_polygons, polygon_area, polygon_to_mask
from bridge.geometry.rle import mask_to_cvat_rle
from bridge.reports.cover import PointPlan, Quadrat, Region, label_map, measure
from tests.reports.synthetic import GENERA, clip_convex, convex, quadrat

NO_POINTS = PointPlan(count=0)


def pp(px: float, q: Quadrat) -> float:
    return 100.0 * px / (q.width * q.height)


@pytest.fixture(scope="module")
def quadrats():
    rng = np.random.default_rng(2024)
    return [quadrat(rng, f"q{i}.jpg", size=2000, corals=30) for i in range(8)]


def test_area_cover_error_per_genus_is_below_a_tenth_of_a_point(quadrats):
    worst = 0.0
    for q, exact in quadrats:
        cover = measure(q, GENERA, NO_POINTS)
        for g in GENERA:
            worst = max(worst, abs(pp(cover.pixels[g] - exact[g], q)))
        assert sum(cover.pixels.values()) + cover.unlabeled == q.width * q.height
    print(f"\nmax |area cover error| per genus over {len(quadrats)} quadrats of 2000² × 30 corals: {worst:.5f} pp")
    assert worst <= 0.1
    assert worst <= 0.01  # in fact two orders of magnitude better


def test_overlaps_resolve_by_z_order_and_same_label_shapes_count_once():
    rng = np.random.default_rng(8)
    for _ in range(20):
        a1 = convex(rng, 400, 500, rng.uniform(150, 250))
        a2 = convex(rng, 550, 450, rng.uniform(150, 250))  # same label, overlaps a1
        b = convex(rng, 500, 600, rng.uniform(100, 250))  # other label, on top (z_order 1)
        q = Quadrat("o", 1000, 1000, (Region("A", "polygon", a1, z_order=0, order=9),
                                       Region("B", "polygon", b, z_order=1, order=1),
                                       Region("A", "polygon", a2, z_order=0, order=5)))
        cover = measure(q, ["A", "B"], NO_POINTS)
        area = polygon_area
        a1a2 = clip_convex(a1, a2)
        union_a = area(a1) + area(a2) - area(a1a2)
        under_b = area(clip_convex(a1, b)) + area(clip_convex(a2, b)) - area(clip_convex(a1a2, b))
        assert abs(pp(cover.pixels["B"] - area(b), q)) < 0.01
        assert abs(pp(cover.pixels["A"] - (union_a - under_b), q)) < 0.01
        assert cover.pixels["A"] + cover.pixels["B"] + cover.unlabeled == 1000 * 1000


def test_drawing_order_z_then_shape_id_then_position():
    square = [10, 10, 29, 10, 29, 29, 10, 29]

    def top(*regions: Region) -> int:
        return int(label_map(Quadrat("t", 40, 40, regions), ["A", "B"])[0][20, 20])

    assert top(Region("A", "polygon", square, z_order=2, order=1),
               Region("B", "polygon", square, z_order=1, order=9)) == 1
    assert top(Region("A", "polygon", square, order=7), Region("B", "polygon", square, order=3)) == 1
    assert top(Region("A", "polygon", square, order=3), Region("B", "polygon", square, order=7)) == 2
    assert top(Region("A", "polygon", square), Region("B", "polygon", square)) == 2  # later in the list


def test_heavy_overlaps_are_never_counted_twice():
    rng = np.random.default_rng(9)
    labels = ["A", "B", "C"]
    regions = tuple(Region(labels[i % 3], "polygon", convex(rng, *rng.uniform(100, 400, 2), rng.uniform(50, 200)),
                           z_order=int(rng.integers(0, 3)), order=i) for i in range(40))
    q = Quadrat("h", 500, 500, regions)
    cover = measure(q, labels, NO_POINTS)
    assert sum(cover.pixels.values()) + cover.unlabeled == 500 * 500
    for lb in labels:  # a label never shows more than the union of its own shapes
        alone = measure(Quadrat("h", 500, 500, tuple(r for r in regions if r.label == lb)), labels, NO_POINTS)
        assert cover.pixels[lb] <= alone.pixels[lb]
        assert alone.pixels[lb] < sum(polygon_area(r.points) for r in regions if r.label == lb)  # they overlap


def _as_masks(q: Quadrat) -> Quadrat:
    regions = tuple(Region(r.label, "mask", mask_to_cvat_rle(polygon_to_mask(r.points, (q.width, q.height))),
                           r.z_order, r.order) for r in q.regions)
    return Quadrat(q.name, q.width, q.height, regions)


def _as_traced_polygons(q: Quadrat, tolerance: float) -> Quadrat:
    regions = []
    for r in q.regions:
        (poly,) = mask_to_polygons(polygon_to_mask(r.points, (q.width, q.height)), tolerance=tolerance, min_area=0)
        regions.append(Region(r.label, "polygon", poly, r.z_order, r.order))
    return Quadrat(q.name, q.width, q.height, tuple(regions))


def test_masks_and_polygons_give_the_same_cover(quadrats):
    """The same corals as CVAT masks and as polygons, through bridge.geometry's own conversions."""
    worst = {"polygon vs its polygon_to_mask mask": 0.0, "mask vs traced polygon (tolerance 0)": 0.0,
             "mask vs traced polygon (tolerance 1 px)": 0.0}
    for q, _ in quadrats:
        as_polygons = measure(q, GENERA, NO_POINTS)
        masks = measure(_as_masks(q), GENERA, NO_POINTS)
        traced = measure(_as_traced_polygons(q, 0.0), GENERA, NO_POINTS)
        simplified = measure(_as_traced_polygons(q, 1.0), GENERA, NO_POINTS)
        for g in GENERA:
            for key, other, ref in (("polygon vs its polygon_to_mask mask", as_polygons, masks),
                                    ("mask vs traced polygon (tolerance 0)", traced, masks),
                                    ("mask vs traced polygon (tolerance 1 px)", simplified, masks)):
                worst[key] = max(worst[key], abs(pp(other.pixels[g] - ref.pixels[g], q)))
    print("\nmax per-genus difference: " + "; ".join(f"{k} {v:.4f} pp" for k, v in worst.items()))
    assert worst["mask vs traced polygon (tolerance 0)"] == 0.0
    assert all(v <= 0.1 for v in worst.values())


def test_point_labels_are_the_label_map_under_each_point(quadrats):
    q, _ = quadrats[0]
    cover = measure(q, GENERA, PointPlan(100, "stratified", 3))
    lmap, _ = label_map(q, GENERA)
    assert cover.point_rows.size == 100
    assert np.array_equal(cover.point_labels, lmap[cover.point_rows, cover.point_cols])
    again = measure(q, GENERA, PointPlan(100, "stratified", 3))
    assert np.array_equal(again.point_rows, cover.point_rows) and np.array_equal(again.point_cols, cover.point_cols)


def test_bad_shapes_and_labels_raise_with_the_shape():
    with pytest.raises(GeometryError, match="A polygon \\(shape 42\\)"):
        measure(Quadrat("b", 10, 10, (Region("A", "polygon", [1, 1, 2, 2], order=42),)), ["A"], NO_POINTS)
    with pytest.raises(ValueError, match="'Z' is not one of the report's labels"):
        measure(Quadrat("b", 10, 10, (Region("Z", "polygon", [1, 1, 5, 1, 5, 5]),)), ["A"], NO_POINTS)
    with pytest.raises(GeometryError, match="no pixels"):
        measure(Quadrat("b", 0, 10), ["A"], NO_POINTS)


def test_an_empty_quadrat_is_all_unlabeled():
    cover = measure(Quadrat("e", 30, 20), ["A"], PointPlan(12))
    assert cover.pixels == {"A": 0} and cover.unlabeled == 600
    assert cover.point_hits(["A"]) == {"": 12, "A": 0}
