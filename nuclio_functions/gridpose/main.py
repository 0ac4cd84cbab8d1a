"""Nuclio entry point of ``pth-yolo-gridpose``: 117 grid points as a ``grid`` skeleton.

Env: MODEL_PATH (YOLO detection weights), CONF (0.1), IMGSZ (720), MAX_COST (0.12), MAX_DET (300),
TEMPLATE_PATH (optional ``.npy`` of 117 normalised points in id order), DEVICE (auto), WARMUP (true).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from function_io import (
    BadRequest,
    decode_image,
    env_bool,
    env_float,
    env_imgsz,
    env_int,
    env_str,
    error_response,
    json_response,
    optional_number,
    read_body,
    torch_device,
)
from grid_layout import element_names, lattice_template
from keypoint_detector import KeypointDetector, load_yolo
from template_matching import check_template, load_template

LABEL = "grid"
ELEMENT_NAMES = element_names()  # "1".."117", row-major over the 11 x 11 lattice minus its corners
DEFAULT_TEMPLATE = lattice_template()


def init_context(context: Any) -> None:
    env = os.environ
    template_path = env.get("TEMPLATE_PATH", "").strip()
    template = (load_template(template_path, len(ELEMENT_NAMES)) if template_path
                else check_template(DEFAULT_TEMPLATE, len(ELEMENT_NAMES)))
    device = torch_device(env.get("DEVICE", "").strip() or None)
    detector = KeypointDetector(
        model=load_yolo(env_str(env, "MODEL_PATH"), task="detect"),
        label=LABEL, element_names=ELEMENT_NAMES, template=template,
        max_cost=env_float(env, "MAX_COST", 0.12, 1e-6, 10.0),
        conf=env_float(env, "CONF", 0.1, 0.0, 1.0),
        imgsz=env_imgsz(env, "IMGSZ", 720),
        max_det=env_int(env, "MAX_DET", 300, 1, 10000),
        device=device,
    )
    if env_bool(env, "WARMUP", True):
        detector(np.zeros((64, 64, 3), np.uint8))
    context.user_data.detector = detector
    context.logger.info(f"gridpose ready on {device}")


def handler(context: Any, event: Any) -> Any:
    try:
        body = read_body(event)
        image = decode_image(body)
        threshold = optional_number(body, "threshold", 0.0, 1.0)
    except BadRequest as exc:
        return error_response(context, 400, str(exc))
    try:
        items = context.user_data.detector(image, conf=threshold)
    except Exception as exc:  # noqa: BLE001 - any model failure becomes a 500 with its reason
        context.logger.error(f"gridpose failed: {exc!r}")
        return error_response(context, 500, f"inference failed: {type(exc).__name__}: {exc}")
    return json_response(context, items)
