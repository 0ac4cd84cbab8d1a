"""Frame decode/encode: formats, conversions, EXIF orientation ignored, clear errors."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from bridge.errors import BadImage
from bridge.geometry.images import decode_image, encode_image, image_size


def _frame(w: int = 64, h: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)  # blue block top-left (BGR)
    return img


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment carrying only the Orientation tag after SOI."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_png_round_trip_is_exact_and_size_is_read_from_header():
    img = _frame(70, 30)
    data = encode_image(img, "png")
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(decode_image(data), img)
    assert image_size(data) == (70, 30)


def test_jpeg_round_trip_is_close_and_quality_matters():
    img = cv2.GaussianBlur(_frame(80, 60), (7, 7), 0)
    hi, lo = encode_image(img, "jpeg", 95), encode_image(img, "jpg", 20)
    assert len(lo) < len(hi)
    out = decode_image(hi)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4
    assert image_size(hi) == (80, 60)


def test_grayscale_and_rgba_become_bgr():
    gray = np.tile(np.arange(40, dtype=np.uint8), (20, 1))
    out = decode_image(encode_image(gray, "png"))
    assert out.shape == (20, 40, 3)
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[..., 3] = 255
    out = decode_image(encode_image(rgba, "png"))
    assert out.shape == (10, 12, 3) and (out[..., 2] == 200).all()


def test_exif_orientation_is_not_applied():
    img = _frame(64, 32)
    data = _with_exif_orientation(encode_image(img, "jpeg"), 6)  # 6 = rotate 90° CW
    out = decode_image(data)
    assert out.shape == (32, 64, 3)  # raw pixels, not rotated
    assert image_size(data) == (64, 32)
    assert out[2, 2, 0] > 200 and out[2, 2, 2] < 60  # the blue block is still top-left


def test_image_size_of_other_formats_falls_back_to_decoding():
    ok, bmp = cv2.imencode(".bmp", _frame(33, 17))
    assert ok
    assert image_size(bmp.tobytes()) == (33, 17)


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "no data"), (b"not an image at all", "unknown or corrupt"), (b"\xff\xd8\xff\xe0garbage", "")],
)
def test_undecodable_bytes_raise_bad_image(data, reason):
    with pytest.raises(BadImage, match="cannot decode image") as err:
        decode_image(data)
    assert reason in str(err.value)
    with pytest.raises(BadImage):
        image_size(data)


def test_decode_rejects_non_bytes():
    with pytest.raises(BadImage, match="expected bytes"):
        decode_image("a string")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "img, fmt, kwargs, match",
    [
        (np.zeros((4, 4, 3), np.uint8), "gif", {}, "unknown format"),
        (np.zeros((4, 4, 3), np.float32), "png", {}, "uint8"),
        (np.zeros((4, 4, 5), np.uint8), "png", {}, "shape"),
        (np.zeros((4, 4, 3), np.uint8), "jpeg", {"quality": 0}, "quality"),
    ],
)
def test_encode_rejects_bad_input(img, fmt, kwargs, match):
    with pytest.raises(BadImage, match=match):
        encode_image(img, fmt, **kwargs)


def test_image_size_reads_headers_without_decoding():
    img = _frame(90, 50)
    ok, prog = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = prog.tobytes()
    assert image_size(data) == (90, 50)  # SOF2 (progressive) header
    assert image_size(data[:400]) == (90, 50)  # truncated body: the header alone is enough
    png = encode_image(img, "png")
    assert image_size(png[:40]) == (90, 50)
