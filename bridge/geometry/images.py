"""Frame bytes <-> BGR arrays. EXIF orientation is never applied: CVAT serves and annotates raw pixels."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from bridge.errors import BadImage

_FORMATS = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}
# JPEG start-of-frame markers carrying the frame size (not DHT/JPG/DAC: C4, C8, CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes to an H×W×3 uint8 BGR array (grayscale/alpha/16-bit converted).

    Raises ``BadImage("cannot decode image: ...")`` for empty or undecodable data.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadImage(f"cannot decode image: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BadImage("cannot decode image: no data (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        raise BadImage(f"cannot decode image: {exc.err or exc}") from exc
    if img is None:
        head = bytes(data[:8]).hex()
        raise BadImage(f"cannot decode image: unknown or corrupt format ({len(data)} bytes, starts {head})")
    return img


def encode_image(img: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """Encode an H×W×3 (or H×W) uint8 BGR array as ``"jpeg"`` (``quality`` 1..100) or ``"png"``."""
    ext = _FORMATS.get(fmt.lower()) if isinstance(fmt, str) else None
    if ext is None:
        raise BadImage(f"cannot encode image: unknown format {fmt!r} (use 'jpeg' or 'png')")
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        kind = getattr(img, "dtype", type(img).__name__)
        raise BadImage(f"cannot encode image: expected a uint8 array, got {kind}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))) or img.size == 0:
        raise BadImage(f"cannot encode image: expected H×W or H×W×3, got shape {img.shape}")
    if ext == ".jpg":
        if not 1 <= int(quality) <= 100:
            raise BadImage(f"cannot encode image: jpeg quality must be 1..100, got {quality}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, out = cv2.imencode(ext, img, params)
    if not ok:
        raise BadImage(f"cannot encode image as {fmt}")
    return out.tobytes()


def image_size(data: bytes) -> tuple[int, int]:
    """Return ``(width, height)`` of encoded image bytes.

    PNG and JPEG sizes are read from their headers without decoding; other formats are decoded.
    """
    raw = bytes(data[:64]) if isinstance(data, bytes | bytearray | memoryview) else b""
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR" and len(raw) >= 24:
        w, h = struct.unpack(">II", raw[16:24])
        if w > 0 and h > 0:
            return int(w), int(h)
    elif raw.startswith(b"\xff\xd8"):
        size = _jpeg_size(bytes(data))
        if size is not None:
            return size
    img = decode_image(data)
    return int(img.shape[1]), int(img.shape[0])


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk JPEG segments to the first SOF marker; None if the stream looks malformed."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # scan data or end of image before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (int(w), int(h)) if w > 0 and h > 0 else None
        i += 2 + length
    return None
