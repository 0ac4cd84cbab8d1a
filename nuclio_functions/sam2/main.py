"""Nuclio entry of ``pth-sam2``: CVAT interactor and the bridge's batch protocol (see README.md).

``init_context`` reads the environment once, builds the model (one per worker process), warms it
up and stores a ``Sam2Service`` on ``context.user_data``. ``handler`` dispatches on the body:
a ``prompts`` key means the batch protocol, otherwise the CVAT interactor protocol.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Mapping
from typing import Any

from cache import EmbeddingCache
from model import DEFAULT_CONFIG, Sam2Model
from protocol import RequestError, parse_batch, parse_body, parse_interactor
from service import Sam2Service, ServiceConfig


def _env_number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw.strip() else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0/true/false), got {raw!r}")


def checkpoint_from_env(env: Mapping[str, str]) -> str | None:
    """``SAM2_CHECKPOINT``: a file path; set but empty means random weights (test-only)."""
    if "SAM2_CHECKPOINT" not in env:
        raise ValueError("SAM2_CHECKPOINT is not set: give the checkpoint path "
                         "(or an empty value for random weights, tests only)")
    return env["SAM2_CHECKPOINT"].strip() or None


def build_service(env: Mapping[str, str], log: Any) -> Sam2Service:
    checkpoint = checkpoint_from_env(env)
    config = env.get("SAM2_CONFIG", "").strip() or DEFAULT_CONFIG
    t0 = time.perf_counter()
    model = Sam2Model.load(config, checkpoint, env.get("SAM2_DEVICE", "auto"),
                           decoder_batch=int(_env_number(env, "SAM2_DECODER_BATCH", 0, 0)))
    if checkpoint is None:
        log.warning("SAM2_CHECKPOINT is empty: RANDOM WEIGHTS, TEST-ONLY MODE; masks are meaningless")
    if env_flag(env, "SAM2_WARMUP", True):
        model.warm_up()
    cache = EmbeddingCache(int(_env_number(env, "SAM2_CACHE_MB", 1024, 0) * 1024 * 1024),
                           _env_number(env, "SAM2_CACHE_TTL_S", 600, 1))
    svc_config = ServiceConfig(multimask=env.get("SAM2_MULTIMASK", "always").strip().lower() or "always",
                               polygon_epsilon=_env_number(env, "SAM2_POLYGON_EPSILON", 2.5, 0),
                               max_prompts=int(_env_number(env, "SAM2_MAX_PROMPTS", 256, 1)))
    log.info(f"SAM 2 ready: {model.model_id} on {model.device} in {time.perf_counter() - t0:.1f} s")
    return Sam2Service(model, cache, svc_config)


def init_context(context: Any) -> None:
    context.user_data.service = build_service(os.environ, context.logger)


def _reply(context: Any, body: Any, status: int) -> Any:
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status)


def handler(context: Any, event: Any) -> Any:
    service: Sam2Service = context.user_data.service
    try:
        body = parse_body(event.body)
        if "prompts" in body:
            result = service.batch(parse_batch(body, service.config.max_prompts))
        else:
            result = service.interact(parse_interactor(body))
        return _reply(context, result, 200)
    except RequestError as exc:
        return _reply(context, {"error": str(exc)}, 400)
    except Exception as exc:  # noqa: BLE001 - any other failure is the function's fault: 500 with a reason
        context.logger.error(f"sam2 handler failed: {traceback.format_exc()}")
        return _reply(context, {"error": f"{type(exc).__name__}: {exc}"}, 500)
