"""DetectorConverter: Nuclio detector items → CVAT shapes (contract §3.5, §3.6, §4.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cvat.shapes import (
    DetectorConverter,
    confidence_value,
    raw_mask_to_rle,
    shape_from_request_json,
    shape_to_json,
    tag_from_json,
    tag_to_json,
    validate_attribute,
)
from bridge.cvat.types import AttributeSpec, LabelSpec, Shape, Tag
from bridge.errors import FunctionFailed
from tests.cvat.label_fixtures import corner_labels, genera_labels, grid_labels

W, H = 200, 100


def any_labels() -> list[LabelSpec]:
    kinds = ["rectangle", "polyline", "points", "ellipse", "cuboid", "mask", "tag"]
    labels = [LabelSpec(id=i + 1, name=k, type=k) for i, k in enumerate(kinds)]
    labels.append(
        LabelSpec(
            id=50, name="thing", type="any",
            attributes={
                "color": AttributeSpec(60, "color", "select", ["red", "green"], "red", False),
                "size": AttributeSpec(61, "size", "number", ["0", "10", "1"], "0", True),
                "hidden": AttributeSpec(62, "hidden", "checkbox", ["false"], "false", True),
                "note": AttributeSpec(63, "note", "text", [], "", True),
            },
        )
    )
    return labels


def convert(items, labels=None, **kw):
    return DetectorConverter(labels or any_labels(), **kw).convert(items, frame=7, image_size=(W, H))


def full_mask(crop: np.ndarray, left: int, top: int, width: int = W, height: int = H) -> np.ndarray:
    m = np.zeros((height, width), dtype=bool)
    m[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    return m


# --- every output type ---------------------------------------------------------------------------
def test_rectangle_is_sorted_clipped_and_keeps_rotation_group_outside():
    out = convert([{"label": "rectangle", "type": "rectangle", "points": [150, 80, 10, -5],
                    "rotation": 370, "group_id": 3, "outside": True, "z_order": 2}])
    (s,) = out.shapes
    assert (s.type, s.label_id, s.frame, s.source) == ("rectangle", 1, 7, "auto")
    assert s.points == [10.0, 0.0, 150.0, 80.0]
    assert s.rotation == pytest.approx(10.0)
    assert (s.group, s.outside, s.z_order) == (3, True, 2)
    assert out.dropped == [] and out.unmatched_labels == {}


def test_polygon_under_an_any_label_with_attributes():
    out = convert([{"label": "thing", "type": "polygon", "points": [[10, 10], [50, 10], [50, 40]],
                    "attributes": [{"name": "color", "value": "green"}, {"name": "size", "value": 3},
                                   {"name": "hidden", "value": True}, {"name": "note", "value": "hi"}]}])
    (s,) = out.shapes
    assert s.points == [10, 10, 50, 10, 50, 40]
    assert s.attributes == {60: "green", 61: "3", 62: "true", 63: "hi"}


def test_polyline_points_ellipse_cuboid():
    cuboid = [float(v) for v in range(10, 26)]
    out = convert([
        {"label": "polyline", "type": "polyline", "points": [0, 0, 300, 50]},
        {"label": "points", "type": "points", "points": [5, 6]},
        {"label": "ellipse", "type": "ellipse", "points": [50, 50, 70, 40], "rotation": 30},
        {"label": "cuboid", "type": "cuboid", "points": cuboid},
    ])
    assert [s.type for s in out.shapes] == ["polyline", "points", "ellipse", "cuboid"]
    assert out.shapes[0].points == [0, 0, W, 50]  # clipped to the image
    assert out.shapes[1].points == [5, 6]
    assert out.shapes[2].points == [50, 50, 70, 40] and out.shapes[2].rotation == 30
    assert out.shapes[3].points == cuboid
    assert out.dropped == []


def test_tag_becomes_a_tag():
    out = convert([{"label": "tag", "type": "tag", "confidence": 0.5}])
    assert out.shapes == []
    assert out.tags == [Tag(label_id=7, frame=7, source="auto", attributes={})]


def test_source_is_configurable():
    out = convert([{"label": "points", "type": "points", "points": [1, 2]}], source="semi-auto")
    assert out.shapes[0].source == "semi-auto"


# --- masks -----------------------------------------------------------------------------------------
def test_mask_raw_crop_becomes_cvat_rle_and_round_trips():
    rng = np.random.default_rng(1)
    crop = rng.random((12, 9)) > 0.4
    left, top = 30, 20
    raw = crop.astype(int).ravel().tolist() + [left, top, left + 8, top + 11]
    out = convert([{"label": "mask", "type": "mask", "mask": raw, "points": []}])
    (s,) = out.shapes
    assert s.type == "mask"
    expected = full_mask(crop, left, top)
    assert np.array_equal(decode_mask(s.points, image_width=W, image_height=H), expected)
    assert s.points == [float(v) for v in encode_mask(expected)]


def test_mask_partly_outside_the_image_is_clipped():
    crop = np.ones((10, 10), dtype=bool)
    raw = crop.astype(int).ravel().tolist() + [W - 4, H - 3, W + 5, H + 6]
    (s,) = convert([{"label": "mask", "type": "mask", "mask": raw}]).shapes
    decoded = decode_mask(s.points, image_width=W, image_height=H)
    assert decoded.sum() == 4 * 3 and decoded[H - 3 :, W - 4 :].all()


def test_mask_with_polygon_points_and_conv_mask_to_poly_becomes_polygon():
    labels = [LabelSpec(id=9, name="coral", type="mask")]
    crop = np.ones((5, 5), dtype=int)
    item = {"label": "coral", "type": "mask", "mask": crop.ravel().tolist() + [10, 10, 14, 14],
            "points": [10, 10, 14, 10, 14, 14, 10, 14]}
    as_poly = convert([item], labels, conv_mask_to_poly=True).shapes[0]
    assert as_poly.type == "polygon" and as_poly.points == [10, 10, 14, 10, 14, 14, 10, 14]
    assert convert([item], labels).shapes[0].type == "mask"
    no_points = dict(item, points=[])
    assert convert([no_points], labels, conv_mask_to_poly=True).shapes[0].type == "mask"


@pytest.mark.parametrize(
    "mask, reason",
    [
        ([0] * 25 + [10, 10, 14, 14], "empty mask"),
        ([1] * 24 + [10, 10, 14, 14], "mask with 24 values for a 5x5 box"),
        ([1, 5, 5, 1, 1], "mask with an empty box"),
        (None, "mask item without a 'mask' list"),
        ([1] * 4 + [500, 500, 501, 501], "mask lies outside the image"),
    ],
)
def test_bad_masks_are_dropped_with_a_reason(mask, reason):
    out = convert([{"label": "mask", "type": "mask", "mask": mask}])
    assert out.shapes == []
    assert len(out.dropped) == 1 and reason in out.dropped[0] and "label mask" in out.dropped[0]


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 12), w=st.integers(1, 12), left=st.integers(0, 30), top=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1), density=st.floats(0.05, 0.95),
)
def test_raw_mask_encoder_matches_cvat_sdk(h, w, left, top, seed, density):
    crop = np.random.default_rng(seed).random((h, w)) < density
    if not crop.any():
        crop[0, 0] = True
    raw = crop.astype(int).ravel().tolist() + [left, top, left + w - 1, top + h - 1]
    expected = full_mask(crop, left, top, 50, 40)
    rle = raw_mask_to_rle(raw, 50, 40)
    assert rle == [float(v) for v in encode_mask(expected)]
    assert np.array_equal(decode_mask(rle, image_width=50, image_height=40), expected)


# --- skeletons -----------------------------------------------------------------------------------
def corner_item(points: dict[str, tuple[float, float]], outside=()) -> dict:
    return {"label": "quadrat_corner", "type": "skeleton", "confidence": 0.87,
            "elements": [{"label": k, "type": "points", "points": list(v), "outside": int(k in outside)}
                         for k, v in points.items()]}


def test_quadrat_corner_skeleton_maps_sublabels_and_adds_missing_ones_outside():
    labels = corner_labels()
    (label,) = labels
    item = corner_item({"1": (10, 10), "2": (190, 12), "3": (188, 90)})
    out = DetectorConverter(labels).convert([item], frame=3, image_size=(W, H))
    (s,) = out.shapes
    assert s.type == "skeleton" and s.points == [] and s.label_id == label.id
    assert [e.label_id for e in s.elements] == [label.sublabels[k].id for k in ("1", "2", "3", "4")]
    assert all(e.type == "points" and e.frame == 3 for e in s.elements)
    assert [e.outside for e in s.elements] == [False, False, False, True]
    assert s.elements[3].points == pytest.approx([(10 + 190 + 188) / 3, (10 + 12 + 90) / 3])
    conf = label.attributes["confidence"]
    assert s.score == pytest.approx(0.87) and s.attributes == {conf.id: "87"}


def test_skeleton_with_every_element_outside_is_dropped():
    item = corner_item({"1": (1, 1), "2": (2, 2)}, outside=("1", "2"))
    out = DetectorConverter(corner_labels()).convert([item], frame=0, image_size=(W, H))
    assert out.shapes == [] and "every element outside" in out.dropped[0]


def test_skeleton_unknown_element_is_reported_and_rest_kept():
    item = corner_item({"1": (1, 1), "2": (2, 2), "3": (3, 3), "4": (4, 4), "5": (5, 5)})
    out = DetectorConverter(corner_labels()).convert([item], frame=0, image_size=(W, H))
    assert len(out.shapes[0].elements) == 4
    assert out.dropped == ["skeleton element '5' is not a sublabel of quadrat_corner"]


def test_grid_skeleton_with_117_points():
    labels = grid_labels()
    (label,) = labels
    assert len(label.sublabels) == 117
    rng = np.random.default_rng(0)
    pts = {str(i): tuple(rng.uniform(0, 100, 2)) for i in range(1, 118)}
    out = DetectorConverter(labels).convert(
        [dict(corner_item(pts), label="grid")], frame=0, image_size=(W, H)
    )
    (s,) = out.shapes
    assert len(s.elements) == 117 and not any(e.outside for e in s.elements)
    by_id = {e.label_id: e.points for e in s.elements}
    for name, xy in pts.items():
        assert by_id[label.sublabels[name].id] == pytest.approx(list(xy))


def test_skeleton_under_a_non_skeleton_label_is_dropped():
    out = convert([{"label": "thing", "type": "skeleton", "elements": []}])
    assert out.shapes == [] and "cannot be stored under a any label" in out.dropped[0]


# --- labels, confidence, attributes ---------------------------------------------------------------
def test_unmatched_labels_are_counted_not_silently_dropped():
    labels = genera_labels()
    poly = [10, 10, 40, 10, 40, 40]
    out = DetectorConverter(labels).convert(
        [{"label": "Acropora", "type": "polygon", "points": poly},
         {"label": "Group1", "type": "polygon", "points": poly},
         {"label": "Group1", "type": "polygon", "points": poly},
         {"label": "acropora", "type": "polygon", "points": poly}],
        frame=0, image_size=(W, H),
    )
    assert len(out.shapes) == 1
    assert out.unmatched_labels == {"Group1": 2, "acropora": 1}


def test_confidence_becomes_score_and_integer_percent_attribute():
    labels = genera_labels()
    acropora = next(label for label in labels if label.name == "Acropora")
    conf_id = acropora.attributes["confidence"].id
    poly = [10, 10, 40, 10, 40, 40]
    out = DetectorConverter(labels).convert(
        [{"label": "Acropora", "type": "polygon", "points": poly, "confidence": 0.87},
         {"label": "Acropora", "type": "polygon", "points": poly,
          "attributes": [{"name": "confidence", "value": "42"}]},
         {"label": "Acropora", "type": "polygon", "points": poly}],
        frame=0, image_size=(W, H),
    )
    a, b, c = out.shapes
    assert a.score == pytest.approx(0.87) and a.attributes == {conf_id: "87"}
    assert b.score == pytest.approx(0.42) and b.attributes == {conf_id: "42"}
    assert c.score is None and c.attributes == {}


def test_confidence_attribute_is_clamped_to_its_range():
    spec = AttributeSpec(1, "confidence", "number", ["10", "50", "1"], "50", True)
    assert confidence_value(spec, 0.87) == "50"
    assert confidence_value(spec, 0.01) == "10"
    assert confidence_value(spec, 0.333) == "33"


def test_threshold_drops_low_confidence_items_only():
    items = [{"label": "points", "type": "points", "points": [1, 1], "confidence": c} for c in (0.2, 0.6)]
    items.append({"label": "points", "type": "points", "points": [1, 1]})  # no confidence: kept
    out = convert(items, threshold=0.5)
    assert [s.score for s in out.shapes] == [0.6, None]
    assert out.below_threshold == 1 and out.dropped == []


def test_invalid_attributes_are_dropped_with_reasons_and_shape_kept():
    out = convert([{"label": "thing", "type": "points", "points": [1, 1],
                    "attributes": [{"name": "color", "value": "pink"}, {"name": "size", "value": "11"},
                                   {"name": "size", "value": "big"}, {"name": "hidden", "value": "maybe"},
                                   {"name": "weight", "value": "3"}]}])
    assert out.shapes[0].attributes == {}
    assert len(out.dropped) == 5
    assert "'color'='pink' is not one of ['red', 'green']" in out.dropped[0]
    assert "outside 0..10" in out.dropped[1]
    assert "not a number" in out.dropped[2]
    assert "not true/false" in out.dropped[3]
    assert "'weight' does not exist on label thing" in out.dropped[4]


def test_validate_attribute_number_formats():
    spec = AttributeSpec(1, "n", "number", ["0", "100", "1"], "0", True)
    assert validate_attribute(spec, 87.0) == "87"
    assert validate_attribute(spec, "2.5") == "2.5"
    with pytest.raises(ValueError, match="outside"):
        validate_attribute(spec, -1)


# --- degenerate input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "item, reason",
    [
        ({"type": "polygon", "points": [1, 1, 5, 5]}, "polygon with 2 vertices (needs at least 3)"),
        ({"type": "polygon", "points": [0, 0, 5, 5, 10, 10]}, "polygon with zero area"),
        ({"type": "polygon", "points": [1, 1, 5, 5, 9]}, "odd number of coordinates"),
        ({"type": "polygon", "points": [1, 1, math.nan, 5, 9, 9]}, "not finite"),
        ({"type": "polygon", "points": [300, 0, 400, 50, 500, 80]}, "polygon with zero area"),
        ({"type": "polygon", "points": None}, "has no points list"),
        ({"type": "polygon", "points": [1, "x", 5, 5, 9, 1]}, "not a number"),
        ({"type": "banana", "points": [1, 1]}, "unknown shape type 'banana'"),
    ],
)
def test_degenerate_polygons_are_dropped_with_a_reason(item, reason):
    labels = [LabelSpec(id=3, name="Acropora", type="polygon")]
    out = DetectorConverter(labels).convert([dict(item, label="Acropora")], frame=0, image_size=(W, H))
    assert out.shapes == []
    assert len(out.dropped) == 1 and reason in out.dropped[0] and out.dropped[0].endswith("(label Acropora)")


@pytest.mark.parametrize(
    "item, reason",
    [
        ({"label": "rectangle", "type": "rectangle", "points": [5, 5, 5, 20]}, "rectangle with zero area"),
        ({"label": "rectangle", "type": "rectangle", "points": [1, 2, 3]}, "rectangle with 3 numbers"),
        ({"label": "polyline", "type": "polyline", "points": [4, 4]}, "polyline with 1 vertices"),
        ({"label": "polyline", "type": "polyline", "points": [4, 4, 4, 4]}, "zero length"),
        ({"label": "points", "type": "points", "points": []}, "points with 0 vertices"),
        ({"label": "ellipse", "type": "ellipse", "points": [5, 5, 5, 9]}, "zero radius"),
        ({"label": "cuboid", "type": "cuboid", "points": [1] * 8}, "cuboid with 8 numbers"),
        ({"label": "rectangle", "type": "polygon", "points": [0, 0, 9, 0, 9, 9]}, "under a rectangle label"),
        ({"label": "points", "type": "points", "points": [1, 1], "confidence": 7000}, "confidence"),
        ({"label": "points", "type": "points", "points": [1, 1], "group_id": -1}, "group_id"),
        ({"type": "points", "points": [1, 1]}, "item 0 has no label name"),
    ],
)
def test_other_degenerate_items_are_dropped(item, reason):
    out = convert([item])
    assert out.shapes == [] and out.tags == []
    assert len(out.dropped) == 1 and reason in out.dropped[0]


def test_non_object_items_are_reported():
    out = convert(["oops", 3])
    assert len(out.dropped) == 2 and "is not an object" in out.dropped[0]


def test_output_that_is_not_a_list_is_a_function_failure():
    with pytest.raises(FunctionFailed, match="must be a JSON list"):
        convert({"predictions": []})


def test_bad_converter_arguments():
    with pytest.raises(ValueError, match="threshold"):
        DetectorConverter([], threshold=1.5)
    with pytest.raises(ValueError, match="image_size"):
        DetectorConverter([]).convert([], frame=0, image_size=(0, 10))


def test_polygon_simplification_keeps_at_least_three_vertices():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = np.stack([100 + 40 * np.cos(t), 50 + 40 * np.sin(t)], axis=1).ravel().tolist()
    labels = [LabelSpec(id=3, name="c", type="polygon")]
    item = {"label": "c", "type": "polygon", "points": circle}
    full = DetectorConverter(labels).convert([item], frame=0, image_size=(W, H)).shapes[0]
    simple = DetectorConverter(labels, polygon_tolerance=1.0).convert([item], frame=0, image_size=(W, H))
    assert len(full.points) == 400
    assert 6 <= len(simple.shapes[0].points) < 100
    tiny = {"label": "c", "type": "polygon", "points": [0, 0, 2, 0, 1, 1]}
    kept = DetectorConverter(labels, polygon_tolerance=50).convert([tiny], frame=0, image_size=(W, H))
    assert len(kept.shapes[0].points) == 6


# --- JSON helpers ------------------------------------------------------------------------------------
def test_shape_json_round_trip_with_elements():
    s = Shape(type="skeleton", label_id=1, frame=2, points=[], score=0.5, attributes={4: "87"}, group=1,
              elements=[Shape(type="points", label_id=2, frame=2, points=[1.0, 2.0], outside=True)])
    data = shape_to_json(s)
    assert data["attributes"] == [{"spec_id": 4, "value": "87"}] and "id" not in data
    assert data["elements"][0]["outside"] is True
    assert shape_from_request_json(data) == s
    t = Tag(label_id=3, frame=1, attributes={5: "x"}, id=9)
    assert tag_from_json(tag_to_json(t)) == t
    with pytest.raises(ValueError, match="not a CVAT shape"):
        shape_from_request_json({"points": []})


def test_confidence_attribute_of_another_kind_is_left_alone():
    label = LabelSpec(id=1, name="x", type="points", attributes={
        "confidence": AttributeSpec(9, "confidence", "select", ["low", "high"], "low", True)})
    out = convert([{"label": "x", "type": "points", "points": [1, 1], "confidence": 0.9}], [label])
    assert out.shapes[0].score == 0.9 and out.shapes[0].attributes == {}
