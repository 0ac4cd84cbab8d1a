"""Nuclio entry point of ``pth-yolo-coralsegv4``: coral instances as CVAT ``mask`` items with polygons.

Env: MODEL_PATH (YOLO-seg weights), CLASS_NAMES (JSON list or file; default the 16 genera of the CVAT
label export ``labels.json`` next to this file, in YOLO class order), CONF_THRESHOLD (0.25; a request
``threshold`` overrides it), IOU_THRESHOLD (0.5), IMGSZ (1920), MAX_DET (300),
POLY_EPSILON (1.0 px, 0 = no simplification), DEVICE (auto), WARMUP (true).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
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
from segmenter import Segmenter, load_yolo_seg, parse_class_names

LABELS_FILE = Path(__file__).with_name("labels.json")  # real CVAT export: 16 genera, YOLO class 0..15


def default_class_names() -> list[str]:
    return [label["name"] for label in json.loads(LABELS_FILE.read_text(encoding="utf-8"))]


def init_context(context: Any) -> None:
    env = os.environ
    raw_names = env.get("CLASS_NAMES", "").strip()
    class_names = parse_class_names(raw_names) if raw_names else default_class_names()
    device = torch_device(env.get("DEVICE", "").strip() or None)
    segmenter = Segmenter(
        model=load_yolo_seg(env_str(env, "MODEL_PATH")),
        class_names=class_names,
        conf=env_float(env, "CONF_THRESHOLD", 0.25, 0.0, 1.0),
        iou=env_float(env, "IOU_THRESHOLD", 0.5, 0.0, 1.0),
        imgsz=env_imgsz(env, "IMGSZ", 1920),
        max_det=env_int(env, "MAX_DET", 300, 1, 10000),
        device=device,
        poly_epsilon=env_float(env, "POLY_EPSILON", 1.0, 0.0, 100.0),
    )
    if env_bool(env, "WARMUP", True):
        segmenter(np.zeros((64, 64, 3), np.uint8))
    context.user_data.segmenter = segmenter
    context.logger.info(f"coralseg ready on {device} with {len(class_names)} classes")


def handler(context: Any, event: Any) -> Any:
    try:
        body = read_body(event)
        image = decode_image(body)
        threshold = optional_number(body, "threshold", 0.0, 1.0)
    except BadRequest as exc:
        return error_response(context, 400, str(exc))
    try:
        items = context.user_data.segmenter(image, conf=threshold)
    except Exception as exc:  # noqa: BLE001 - any model failure becomes a 500 with its reason
        context.logger.error(f"coralseg failed: {exc!r}")
        return error_response(context, 500, f"inference failed: {type(exc).__name__}: {exc}")
    return json_response(context, items)
