"""Scale-back math: coordinates, inclusive boxes, raw detector masks and CVAT RLE."""

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bridge.errors import FunctionFailed
from bridge.geometry.rle import crop_to_cvat_rle
from bridge.nuclio import scaling
from bridge.nuclio.scaling import Scale


def test_rle_matches_the_contract_worked_example():
    m = np.zeros((4, 6), bool)
    m[1:3, 2:5] = True
    assert crop_to_cvat_rle(m[1:3, 2:5], 2, 1) == [0, 6, 2, 1, 4, 2]
    assert crop_to_cvat_rle(m, 0, 0) == [8, 3, 3, 3, 7, 0, 0, 5, 3]
    crop, box = scaling.decode_rle([8, 3, 3, 3, 7, 0, 0, 5, 3])
    assert box == (0, 0, 5, 3)
    assert (crop == m).all()


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9))), st.integers(0, 5), st.integers(0, 5))
def test_rle_agrees_with_cvat_sdk(crop, left, top):
    h, w = crop.shape
    ours = crop_to_cvat_rle(crop, left, top)
    full = np.zeros((top + h + 2, left + w + 2), bool)
    full[top:top + h, left:left + w] = crop
    sdk = encode_mask(full, bbox=[left, top, left + w, top + h])
    assert ours == [int(v) for v in sdk]
    decoded, box = scaling.decode_rle(ours)
    assert (decoded == crop).all() and box == (left, top, left + w - 1, top + h - 1)


def test_decode_rle_rejects_inconsistent_runs():
    with pytest.raises(FunctionFailed, match="cover 5 pixels"):
        scaling.decode_rle([2, 3, 0, 0, 2, 2])  # bbox holds 9 pixels
    with pytest.raises(FunctionFailed, match="at least 5"):
        scaling.decode_rle([0, 0, 1, 1])


def test_up_box_covers_every_original_pixel_of_a_sent_pixel():
    s = Scale(1000, 600, 250, 150)  # factor 4
    assert s.up_box(0, 0, 0, 0) == (0, 0, 3, 3)
    assert s.up_box(10, 20, 19, 29) == (40, 80, 79, 119)
    assert s.up_box(249, 149, 249, 149) == (996, 596, 999, 599)
    odd = Scale(1000, 1000, 300, 300)  # 3.333...: pixel 1 covers 3.33..6.67 → 3..6
    assert odd.up_box(1, 1, 1, 1) == (3, 3, 6, 6)
    assert odd.up_box(299, 0, 299, 0)[2] == 999


def test_up_crop_is_nearest_neighbour_and_exact_for_integer_factors():
    s = Scale(8, 6, 4, 3)
    crop = np.array([[1, 0], [0, 1]], bool)
    big, box = s.up_crop(crop, 1, 1)
    assert box == (2, 2, 5, 5)
    expected = np.kron(crop, np.ones((2, 2), bool))
    assert (big == expected).all()


def test_up_crop_every_original_pixel_takes_its_sent_pixel():
    s = Scale(1000, 700, 300, 210)
    rng = np.random.default_rng(3)
    small = rng.random((210, 300)) > 0.5
    big, box = s.up_crop(small, 0, 0)
    assert box == (0, 0, 999, 699)
    ys = np.arange(700) * 210 // 700
    xs = np.arange(1000) * 300 // 1000
    assert (big == small[np.ix_(ys, xs)]).all()


def test_scale_rle_maps_a_box_mask_to_the_covering_box():
    s = Scale(400, 200, 100, 50)
    small = crop_to_cvat_rle(np.ones((3, 5), bool), 10, 20)
    big = scaling.scale_rle(small, s)
    crop, box = scaling.decode_rle(big)
    assert box == (40, 80, 59, 91)
    assert crop.all()
    full = decode_mask(big, image_width=400, image_height=200)
    assert full.sum() == 20 * 12


def test_scale_raw_mask_and_identity():
    s = Scale(30, 30, 10, 10)
    out = scaling.scale_raw_mask([1, 0, 0, 1, 2, 2, 3, 3], s)
    crop = np.array(out[:-4]).reshape(6, 6)
    assert out[-4:] == [6, 6, 11, 11]
    assert (crop == np.kron([[1, 0], [0, 1]], np.ones((3, 3), int))).all()
    assert scaling.scale_raw_mask([1, 0, 0, 1, 2, 2, 3, 3], Scale.identity()) == [1, 0, 0, 1, 2, 2, 3, 3]
    with pytest.raises(FunctionFailed, match="raw row-major crop expected"):
        scaling.scale_raw_mask([0, 3, 2, 2, 3, 3], s)  # RLE where a raw crop belongs


def test_scale_detection_all_types():
    s = Scale(1000, 500, 100, 50)
    items = [
        {"label": "r", "type": "rectangle", "points": [1, 2, 3, 4], "rotation": 30},
        {"label": "e", "type": "ellipse", "points": [50, 25, 75, 12.5]},
        {"label": "p", "type": "polygon", "points": [0, 0, 100, 0, 0, 50]},
        {"label": "s", "type": "skeleton", "elements": [{"label": "a", "type": "points", "points": [10, 5]}]},
        {"label": "m", "type": "mask", "mask": [1, 99, 49, 99, 49], "points": [99, 49, 100, 50, 99, 50]},
        {"label": "t", "type": "tag"},
    ]
    out = [scaling.scale_detection(i, s) for i in items]
    assert out[0]["points"] == [10, 20, 30, 40] and out[0]["rotation"] == 30
    assert out[1]["points"] == [500, 250, 750, 125]
    assert out[2]["points"] == [0, 0, 1000, 0, 0, 500]
    assert out[3]["elements"][0]["points"] == [100, 50]
    assert out[4]["mask"] == [1] * 100 + [990, 490, 999, 499]
    assert out[4]["points"] == [990, 490, 1000, 500, 990, 500]
    assert out[5] == {"label": "t", "type": "tag"}
    assert items[0]["points"] == [1, 2, 3, 4]  # inputs are not mutated
    with pytest.raises(FunctionFailed, match="odd length"):
        scaling.scale_detection({"type": "points", "points": [1, 2, 3]}, s)


def test_prompts_go_down_and_sam_results_come_back_up():
    s = Scale(2000, 1000, 500, 250)
    prompt = {"bbox": [400, 200, 800, 600], "pos_points": [[1000, 500]], "neg_points": [], "id": 7}
    assert scaling.scale_prompt_down(prompt, s) == {
        "bbox": [100, 50, 200, 150], "pos_points": [[250, 125]], "neg_points": [], "id": 7}
    result = {"mask": crop_to_cvat_rle(np.ones((2, 2), bool), 100, 50), "polygons": [[100, 50, 102, 52]],
              "score": 0.9}
    up = scaling.scale_sam_result(result, s)
    assert up["polygons"] == [[400, 200, 408, 208]]
    assert scaling.decode_rle(up["mask"])[1] == (400, 200, 407, 207)
    assert scaling.scale_sam_result({"error": "x"}, s) == {"error": "x"}


def test_scale_shape_mask_is_rle_and_other_types_are_points():
    s = Scale(20, 20, 10, 10)
    mask = {"type": "mask", "points": [0, 1, 3, 3, 3, 3]}
    assert scaling.decode_rle(scaling.scale_shape(mask, s)["points"])[1] == (6, 6, 7, 7)
    assert scaling.scale_shape({"type": "polygon", "points": [1, 1, 2, 2, 3, 1]}, s)["points"] == [
        2, 2, 4, 4, 6, 2]
