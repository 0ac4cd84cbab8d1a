"""Request parsing, responses and env settings shared by this repo's Nuclio functions.

Every function directory carries an identical copy of this file so that each one deploys alone
(a test keeps the copies identical). Nothing here knows about models.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

MAX_IMAGE_PIXELS = 100_000_000  # refuse absurd frames before allocating them


class BadRequest(ValueError):
    """The request is malformed; the handler answers 400 with this message."""


def read_body(event: Any) -> dict[str, Any]:
    """Return the JSON object of a Nuclio event (Nuclio hands undecodable JSON through as bytes)."""
    body = event.body
    if isinstance(body, bytes | bytearray | str):
        if not body:
            raise BadRequest("empty request body; expected a JSON object")
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def b64_bytes(body: Mapping[str, Any], key: str) -> bytes:
    """Decode the base64 string ``body[key]`` (a ``data:...;base64,`` prefix is accepted)."""
    if key not in body or body[key] is None:
        raise BadRequest(f"missing '{key}' (base64-encoded image)")
    value = body[key]
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"'{key}' is not valid base64: {exc}") from exc
    if not data:
        raise BadRequest(f"'{key}' is empty")
    return data


def _imdecode(data: bytes, key: str, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise BadRequest(f"'{key}' could not be decoded as an image (PNG, JPEG, ...)")
    if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise BadRequest(f"'{key}' is too large: {image.shape[1]}x{image.shape[0]} pixels")
    return image


def decode_image(body: Mapping[str, Any], key: str = "image") -> np.ndarray:
    """Decode ``body[key]`` to an 8-bit 3-channel **BGR** array (H, W, 3)."""
    image = _imdecode(b64_bytes(body, key), key, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(image)


def decode_mask(body: Mapping[str, Any], key: str = "mask") -> np.ndarray:
    """Decode ``body[key]`` (an image, normally a single-channel PNG) to a bool (H, W) array.

    A pixel is "on" where any colour channel is nonzero (an alpha channel is ignored).
    """
    image = _imdecode(b64_bytes(body, key), key, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        return np.any(image[:, :, :3] != 0, axis=2)
    return image != 0


def encode_png_b64(image_bgr: np.ndarray) -> str:
    """Encode an 8-bit BGR (or grey) image as base64 PNG."""
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def optional_number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    """``body[key]`` as a float in [lo, hi], or None when absent/null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{key}' must be a number, got {type(value).__name__}")
    if not lo <= float(value) <= hi:
        raise BadRequest(f"'{key}' must be within [{lo}, {hi}], got {value}")
    return float(value)


def json_response(context: Any, body: Any, status_code: int = 200) -> Any:
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status_code)


def error_response(context: Any, status_code: int, message: str) -> Any:
    return json_response(context, {"error": message}, status_code)


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """A required (no default) or defaulted string setting from ``environ`` (the function's env)."""
    value = environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise RuntimeError(f"environment variable {name} is required")
    return default


def env_float(environ: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env_str(environ, name, str(default))
    try:
        value = float(raw)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}={raw!r} is not a number") from exc
    if not lo <= value <= hi:
        raise RuntimeError(f"environment variable {name}={value} must be within [{lo}, {hi}]")
    return value


def env_int(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env_str(environ, name, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}={raw!r} is not an integer") from exc
    if not lo <= value <= hi:
        raise RuntimeError(f"environment variable {name}={value} must be within [{lo}, {hi}]")
    return value


def env_imgsz(environ: Mapping[str, str], name: str, default: int) -> int:
    """Model input size, rounded up to YOLO's stride of 32 (as ultralytics would, minus its warning)."""
    value = env_int(environ, name, default, 32, 8192)
    return -(-value // 32) * 32


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_str(environ, name, "true" if default else "false").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise RuntimeError(f"environment variable {name}={raw!r} is not a boolean")


def torch_device(name: str | None = None) -> str:
    """``name`` if given, else ``cuda:0`` when a GPU is visible, else ``cpu``."""
    if name:
        return name
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
