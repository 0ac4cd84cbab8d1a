"""Fitting frames into a body budget and restoring inpainted output."""

import cv2
import numpy as np
import pytest

from bridge.errors import BadImage, FunctionFailed
from bridge.nuclio import images


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def _noise(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_fitting_image_is_sent_untouched():
    data = _png(_noise(64, 48))
    fitted = images.fit_images(data, images.b64_len(len(data)))
    assert fitted.image is data and not fitted.reencoded and fitted.scale.is_identity


def test_png_is_first_reencoded_as_jpeg_at_full_size():
    smooth = np.dstack([np.tile(np.arange(256, dtype=np.uint8), (256, 1))] * 3)
    data = _png(_noise(256, 256) // 8 + smooth // 2)
    budget = images.b64_len(len(data)) - 1
    fitted = images.fit_images(data, budget)
    assert images.is_jpeg(fitted.image) and fitted.reencoded
    assert images.image_size(fitted.image) == (256, 256)
    assert images.b64_len(len(fitted.image)) <= budget


def test_downscale_until_it_fits_with_the_mask_scaled_alike():
    img = _noise(1200, 800)
    mask = np.zeros((800, 1200), np.uint8)
    mask[:, 600:602] = 255  # a 2 px line must survive downscaling
    budget = 120_000
    fitted = images.fit_images(_png(img), budget, _png(mask))
    w, h = images.image_size(fitted.image)
    assert (w, h) == (fitted.scale.sent_width, fitted.scale.sent_height) and w < 1200
    assert abs(w / h - 1.5) < 0.01
    used = images.b64_len(len(fitted.image)) + images.b64_len(len(fitted.mask))
    assert images.GOOD_ENOUGH * budget * 0.8 <= used <= budget  # the largest size that fits, roughly
    small_mask = images.decode_image(fitted.mask, grayscale=True)
    assert small_mask.shape == (h, w)
    assert set(np.unique(small_mask)) == {0, 255}
    assert (small_mask[:, int(600 * w / 1200)] == 255).all()


def test_impossible_budget_and_bad_input_are_explained():
    with pytest.raises(FunctionFailed, match="body too large: a 300x300 image cannot be made to fit 100 "):
        images.fit_images(_png(_noise(300, 300)), 100)
    with pytest.raises(BadImage, match="cannot be decoded"):
        images.fit_images(b"not an image at all" * 100, 10)
    with pytest.raises(BadImage, match="mask is 10x10 but the image is 300x300"):
        images.fit_images(_png(_noise(300, 300)), 1000, _png(np.zeros((10, 10), np.uint8)))


def test_restore_inpainted_keeps_original_outside_the_mask():
    orig = _noise(100, 80)
    mask = np.zeros((80, 100), np.uint8)
    mask[10:20, 30:60] = 1
    small = np.full((40, 50, 3), (0, 255, 0), np.uint8)
    out = images.decode_image(images.restore_inpainted(_png(orig), _png(mask), _png(small)))
    assert out.shape == orig.shape
    assert (out[mask == 0] == orig[mask == 0]).all()
    assert (out[mask > 0] == (0, 255, 0)).all()
