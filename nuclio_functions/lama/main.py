"""Nuclio entry point of ``pth-lama``: inpaint an image under a mask (grid removal).

Request: ``{"image": b64, "mask": b64 PNG (nonzero = fill)}``, or for compatibility
``{"image": b64, "keypoints": [[x, y] | null] * 117, "line_width"?: int}`` (the mask is then drawn
here along every row and column of the 11 x 11 grid lattice). Response:
``{"image": b64 PNG, "width", "height", "masked_pixels"}``, the same size as the input.

Env: MODEL_PATH (TorchScript big-lama), DEVICE (auto), LINE_WIDTH (30, keypoints mode default),
WARMUP (true).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
from function_io import (
    BadRequest,
    decode_image,
    decode_mask,
    encode_png_b64,
    env_bool,
    env_int,
    env_str,
    error_response,
    json_response,
    optional_number,
    read_body,
    torch_device,
)
from grid_mask import grid_mask, parse_keypoints
from inpainter import inpaint, load_inpainter

MAX_LINE_WIDTH = 500


def init_context(context: Any) -> None:
    env = os.environ
    device = torch_device(env.get("DEVICE", "").strip() or None)
    model = load_inpainter(env_str(env, "MODEL_PATH"), device)
    context.user_data.model = model
    context.user_data.device = device
    context.user_data.line_width = env_int(env, "LINE_WIDTH", 30, 1, MAX_LINE_WIDTH)
    if env_bool(env, "WARMUP", True):
        probe = np.zeros((64, 64), bool)
        probe[28:36, :] = True
        inpaint(model, np.zeros((64, 64, 3), np.uint8), probe, device)
    context.logger.info(f"lama ready on {device}")


def read_mask(body: dict[str, Any], width: int, height: int, default_line_width: int) -> np.ndarray:
    """The fill mask of a request: a decoded ``mask`` PNG, or one drawn from ``keypoints``."""
    has_mask, has_keypoints = body.get("mask") is not None, body.get("keypoints") is not None
    if has_mask and has_keypoints:
        raise BadRequest("give either 'mask' or 'keypoints', not both")
    if has_mask:
        mask = decode_mask(body)
        if mask.shape != (height, width):
            raise BadRequest(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}")
        return mask
    if has_keypoints:
        line_width = optional_number(body, "line_width", 1, MAX_LINE_WIDTH)
        if line_width is not None and line_width != int(line_width):
            raise BadRequest(f"'line_width' must be an integer, got {body['line_width']}")
        try:
            points = parse_keypoints(body["keypoints"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return grid_mask(points, width, height, int(line_width or default_line_width))
    raise BadRequest("missing 'mask' (base64 PNG) or 'keypoints' (117 grid points)")


def handler(context: Any, event: Any) -> Any:
    try:
        body = read_body(event)
        image = decode_image(body)
        height, width = image.shape[:2]
        mask = read_mask(body, width, height, context.user_data.line_width)
    except BadRequest as exc:
        return error_response(context, 400, str(exc))
    try:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        result = inpaint(context.user_data.model, rgb, mask, context.user_data.device)
        encoded = encode_png_b64(cv2.cvtColor(result, cv2.COLOR_RGB2BGR))
    except Exception as exc:  # noqa: BLE001 - any model failure becomes a 500 with its reason
        context.logger.error(f"lama failed: {exc!r}")
        return error_response(context, 500, f"inpainting failed: {type(exc).__name__}: {exc}")
    return json_response(context, {"image": encoded, "width": width, "height": height,
                                   "masked_pixels": int(mask.sum())})
