"""Nuclio entry of ``pth-sam2-tracker``: SAM 2 as a CVAT tracker function (see README.md).

``init_context`` reads the environment once, builds the model (one per worker process), warms it
up and stores a ``Sam2Tracker`` on ``context.user_data``; ``handler`` parses the request
(``wire``), tracks (``tracker``) and answers ``{"shapes", "states"}``; 400 for a bad request, 500
for anything else.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Mapping
from typing import Any

import tracker
import wire
from shared import cache, model, protocol


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float = float("inf")) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value:g}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0/true/false), got {raw!r}")


def config_from_env(env: Mapping[str, str]) -> tracker.TrackerConfig:
    return tracker.TrackerConfig(
        max_objects=int(_number(env, "SAM2_TRACKER_MAX_OBJECTS", 64, 1)),
        mask_prompt=_flag(env, "SAM2_TRACKER_MASK_PROMPT", True),
        similarity_weight=_number(env, "SAM2_TRACKER_SIMILARITY_WEIGHT", 1.0, 0),
        min_similarity=_number(env, "SAM2_TRACKER_MIN_SIMILARITY", -1.0, -1, 1),
        max_scale_change=_number(env, "SAM2_TRACKER_MAX_SCALE_CHANGE", 2.0, 1.01),
        polygon_epsilon=_number(env, "SAM2_POLYGON_EPSILON", 1.0, 0),
    )


def build_tracker(env: Mapping[str, str], log: Any) -> tracker.Sam2Tracker:
    if "SAM2_CHECKPOINT" not in env:
        raise ValueError("SAM2_CHECKPOINT is not set: give the checkpoint path "
                         "(or an empty value for random weights, tests only)")
    checkpoint = env["SAM2_CHECKPOINT"].strip() or None
    config = env.get("SAM2_CONFIG", "").strip() or model.DEFAULT_CONFIG
    size_raw = env.get("SAM2_IMAGE_SIZE", "").strip()
    image_size = int(_number(env, "SAM2_IMAGE_SIZE", 0, 0)) if size_raw else None
    tracker_config = config_from_env(env)
    t0 = time.perf_counter()
    sam = model.Sam2Model.load(config, checkpoint, env.get("SAM2_DEVICE", "auto"), image_size=image_size)
    if checkpoint is None:
        log.warning("SAM2_CHECKPOINT is empty: RANDOM WEIGHTS, TEST-ONLY MODE; tracks are meaningless")
    if _flag(env, "SAM2_WARMUP", True):
        sam.warm_up()
    embeddings = cache.EmbeddingCache(int(_number(env, "SAM2_CACHE_MB", 128, 0) * 1024 * 1024),
                                      _number(env, "SAM2_CACHE_TTL_S", 120, 1))
    log.info(f"SAM 2 tracker ready: {sam.model_id} on {sam.device} in {time.perf_counter() - t0:.1f} s")
    return tracker.Sam2Tracker(sam, embeddings, tracker_config)


def init_context(context: Any) -> None:
    context.user_data.tracker = build_tracker(os.environ, context.logger)


def _reply(context: Any, body: Any, status: int) -> Any:
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status)


def handler(context: Any, event: Any) -> Any:
    service: tracker.Sam2Tracker = context.user_data.tracker
    try:
        body = protocol.parse_body(event.body)
        image = protocol.decode_b64(body)
        request = wire.parse_request(body, service.config.supported, service.config.max_objects)
        return _reply(context, service.track(image, request), 200)
    except (protocol.RequestError, wire.RequestError) as exc:
        return _reply(context, {"error": str(exc)}, 400)
    except Exception as exc:  # noqa: BLE001 - any other failure is the function's fault: 500 with a reason
        context.logger.error(f"sam2_tracker handler failed: {traceback.format_exc()}")
        return _reply(context, {"error": f"{type(exc).__name__}: {exc}"}, 500)
