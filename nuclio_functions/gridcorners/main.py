"""Nuclio entry point of ``pth-yolo-gridcorners``: quadrat corners as a ``quadrat_corner`` skeleton.

Env: MODEL_PATH (YOLO detection weights), CONF (0.1), IMGSZ (720), MAX_COST (0.3), MAX_DET (50),
TEMPLATE_PATH (optional ``.npy`` of 4 normalised points, TL, TR, BR, BL), DEVICE (auto), WARMUP (true).
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
from keypoint_detector import KeypointDetector, load_yolo
from template_matching import check_template, load_template

LABEL = "quadrat_corner"
ELEMENT_NAMES = ["1", "2", "3", "4"]  # TL, TR, BR, BL
DEFAULT_TEMPLATE = np.array([[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]])


def init_context(context: Any) -> None:
    env = os.environ
    template_path = env.get("TEMPLATE_PATH", "").strip()
    template = (load_template(template_path, len(ELEMENT_NAMES)) if template_path
                else check_template(DEFAULT_TEMPLATE, len(ELEMENT_NAMES)))
    device = torch_device(env.get("DEVICE", "").strip() or None)
    detector = KeypointDetector(
        model=load_yolo(env_str(env, "MODEL_PATH"), task="detect"),
        label=LABEL, element_names=ELEMENT_NAMES, template=template,
        max_cost=env_float(env, "MAX_COST", 0.3, 1e-6, 10.0),
        conf=env_float(env, "CONF", 0.1, 0.0, 1.0),
        imgsz=env_imgsz(env, "IMGSZ", 720),
        max_det=env_int(env, "MAX_DET", 50, 1, 10000),
        device=device,
    )
    if env_bool(env, "WARMUP", True):
        detector(np.zeros((64, 64, 3), np.uint8))
    context.user_data.detector = detector
    context.logger.info(f"gridcorners ready on {device}")


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
        context.logger.error(f"gridcorners failed: {exc!r}")
        return error_response(context, 500, f"inference failed: {type(exc).__name__}: {exc}")
    return json_response(context, items)
