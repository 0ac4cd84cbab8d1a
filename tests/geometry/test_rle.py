"""CVAT RLE == cvat_sdk.masks; detector raw masks round-trip; bad encodings rejected."""

from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bridge.geometry.errors import GeometryError
from bridge.geometry.rle import (
    cvat_rle_to_mask,
    detector_mask_to_mask,
    mask_bbox,
    mask_to_cvat_rle,
    mask_to_detector_mask,
    scale_mask,
)


def _example() -> np.ndarray:
    """cvat-contract.md §3.6: 6 wide × 4 high, ones at rows 1–2, columns 2–4."""
    m = np.zeros((4, 6), bool)
    m[1:3, 2:5] = True
    return m


def test_worked_example_from_the_contract():
    m = _example()
    assert mask_to_cvat_rle(m) == [0, 6, 2, 1, 4, 2]
    assert mask_to_cvat_rle(m, bbox=[0, 0, 5, 3]) == [8, 3, 3, 3, 7, 0, 0, 5, 3]
    assert np.array_equal(cvat_rle_to_mask([8, 3, 3, 3, 7, 0, 0, 5, 3], 6, 4), m)
    assert mask_bbox(m) == (2, 1, 4, 2)


_masks = st.integers(1, 24).flatmap(
    lambda h: st.integers(1, 24).flatmap(lambda w: arrays(np.bool_, (h, w)))
)


@settings(max_examples=300, deadline=None)
@given(_masks)
def test_rle_equals_cvat_sdk_on_random_masks(m):
    if not m.any():
        with pytest.raises(GeometryError) as err:
            mask_to_cvat_rle(m)
        assert err.value.code == "empty_mask" and str(err.value) == "empty mask"
        return
    ours = mask_to_cvat_rle(m)
    assert ours == encode_mask(m)
    h, w = m.shape
    assert np.array_equal(cvat_rle_to_mask(ours, w, h), decode_mask(ours, image_width=w, image_height=h))
    assert np.array_equal(cvat_rle_to_mask(ours, w, h), m)
    full = mask_to_cvat_rle(m, bbox=[0, 0, w - 1, h - 1])
    assert full == encode_mask(m, bbox=[0, 0, w, h])
    assert np.array_equal(cvat_rle_to_mask(full, w, h), m)


@settings(max_examples=150, deadline=None)
@given(_masks)
def test_detector_mask_round_trip(m):
    h, w = m.shape
    if not m.any():
        with pytest.raises(GeometryError):
            mask_to_detector_mask(m)
        return
    raw = mask_to_detector_mask(m)
    left, top, right, bottom = raw[-4:]
    assert (left, top, right, bottom) == mask_bbox(m)
    assert len(raw) - 4 == (right - left + 1) * (bottom - top + 1)
    assert set(raw[:-4]) <= {0, 1}
    assert np.array_equal(detector_mask_to_mask(raw, w, h), m)


def test_large_mask_is_encoded_without_python_loops():
    rng = np.random.default_rng(0)
    m = rng.random((2000, 3000)) > 0.5  # ~3 million runs
    assert mask_to_cvat_rle(m) == encode_mask(m)


def test_uint8_masks_count_nonzero_as_on():
    m = _example().astype(np.uint8) * 255
    assert mask_to_cvat_rle(m) == [0, 6, 2, 1, 4, 2]
    assert mask_to_detector_mask(m) == [1] * 6 + [2, 1, 4, 2]


def test_detector_mask_length_must_match_bbox():
    with pytest.raises(GeometryError) as err:
        detector_mask_to_mask([1, 1, 1, 1, 1, 2, 1, 4, 2], 6, 4)
    assert err.value.code == "bad_detector_mask"
    assert "has 5 values" in str(err.value) and "3×2 = 6" in str(err.value)
    with pytest.raises(GeometryError, match="does not fit"):
        detector_mask_to_mask([1] * 6 + [2, 1, 6, 2], 6, 4)
    with pytest.raises(GeometryError, match="at least 5"):
        detector_mask_to_mask([1, 2], 6, 4)
    assert detector_mask_to_mask([1.0] * 6 + [2.0, 1.0, 4.0, 2.0], 6, 4).sum() == 6


@pytest.mark.parametrize(
    "points, match",
    [
        ([1, 2, 3], "at least 5"),
        ([0, 5, 2, 1, 4, 2], "cover 5 pixels but the bbox has 3×2 = 6"),
        ([0, 6, 2, 1, 6, 2], "does not fit"),
        ([0, 6.5, 2, 1, 4, 2], "non-integer"),
        ([-1, 7, 2, 1, 4, 2], "negative"),
    ],
)
def test_bad_rle_is_rejected(points, match):
    with pytest.raises(GeometryError, match=match) as err:
        cvat_rle_to_mask(points, 6, 4)
    assert err.value.code == "bad_rle"


def test_bbox_argument_validation_and_empty_crop():
    m = _example()
    with pytest.raises(GeometryError, match="does not fit"):
        mask_to_cvat_rle(m, bbox=[0, 0, 6, 3])
    with pytest.raises(GeometryError, match="empty mask"):
        mask_to_cvat_rle(m, bbox=[0, 0, 1, 3])
    assert mask_bbox(np.zeros((3, 3), bool)) is None


def test_scale_mask_nearest_neighbour():
    m = _example()
    up = scale_mask(m, (12, 8))
    assert up.dtype == np.bool_ and up.shape == (8, 12)
    assert np.array_equal(up, np.kron(m, np.ones((2, 2), bool)))
    assert np.array_equal(scale_mask(up, (6, 4)), m)
    labels = np.array([[0, 3], [7, 0]], np.uint8)
    assert scale_mask(labels, (4, 4)).tolist() == [[0, 0, 3, 3], [0, 0, 3, 3], [7, 7, 0, 0], [7, 7, 0, 0]]
