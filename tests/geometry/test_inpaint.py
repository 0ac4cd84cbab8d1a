"""Telea inpainting removes drawn grid lines: residual on line pixels drops sharply."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridge.errors import BadImage
from bridge.geometry.errors import GeometryError
from bridge.geometry.grid import GRID_POINTS, grid_id_to_rc, grid_mask
from bridge.geometry.inpaint import inpaint_telea


def _background(w: int, h: int) -> np.ndarray:
    """Smooth coloured 'reef' texture: gradients plus low-frequency blobs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    b = 90 + 60 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    g = 120 + 0.15 * xx - 0.1 * yy
    r = 100 + 50 * np.cos((xx + yy) / 45.0)
    return np.clip(np.dstack([b, g, r]), 0, 255).astype(np.uint8)


def test_inpainting_removes_grid_lines():
    w = h = 320
    clean = _background(w, h)
    xs = np.linspace(0, w - 1, 11)
    pts = np.array([(xs[c], xs[r]) for r, c in (grid_id_to_rc(i) for i in range(1, GRID_POINTS + 1))])
    lines = grid_mask(pts, (w, h), line_width=5) > 0
    photo = clean.copy()
    photo[lines] = (235, 235, 235)  # white quadrat string
    mask = grid_mask(pts, (w, h), line_width=9)  # the bridge masks a little wider than the lines
    assert mask[lines].all()
    before = np.abs(photo.astype(int) - clean.astype(int))[lines].mean()
    out = inpaint_telea(photo, mask, radius=5)
    after = np.abs(out.astype(int) - clean.astype(int))[lines].mean()
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert before > 80
    assert after < 0.1 * before, (before, after)
    assert np.array_equal(out[mask == 0], photo[mask == 0])  # pixels outside the mask untouched


def test_empty_mask_returns_a_copy_and_bool_masks_work():
    img = _background(40, 30)
    out = inpaint_telea(img, np.zeros((30, 40), bool))
    assert np.array_equal(out, img) and out is not img
    m = np.zeros((30, 40), bool)
    m[10:12, :] = True
    damaged = img.copy()
    damaged[m] = 0
    assert np.abs(inpaint_telea(damaged, m).astype(int) - img.astype(int))[m].mean() < 20


def test_gray_images_are_supported():
    img = cv2.cvtColor(_background(40, 30), cv2.COLOR_BGR2GRAY)
    m = np.zeros((30, 40), np.uint8)
    m[5:7, 5:30] = 255
    assert inpaint_telea(img, m).shape == (30, 40)


def test_shape_and_type_mismatches_are_rejected():
    img = _background(40, 30)
    with pytest.raises(GeometryError, match="mask is 30×40 but the image is 40×30") as err:
        inpaint_telea(img, np.zeros((40, 30), np.uint8))
    assert err.value.code == "bad_mask"
    with pytest.raises(BadImage):
        inpaint_telea(img.astype(np.float32), np.zeros((30, 40), np.uint8))
    with pytest.raises(GeometryError):
        inpaint_telea(img, np.zeros((30, 40), np.uint8), radius=0)
