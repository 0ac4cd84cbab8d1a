"""Nuclio entry of ``pth-sam2-auto``: SAM 2 automatic masks as a CVAT detector (see README.md).

The model and wire-format code is shared with the interactor: ``model.py`` and ``protocol.py``
live once, in ``nuclio_functions/sam2/``. ``deploy.sh`` copies them next to this file before
``nuctl deploy``; in a source checkout they are loaded from ``../sam2`` instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

SHARED_DIR = "sam2"  # sibling function dir holding the shared modules in a source checkout


def load_shared(name: str) -> ModuleType:
    """Import ``<name>.py`` from this directory (deployed) or from ``../sam2`` (source checkout),
    under a private module name so it never shadows another function's module of the same name."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / SHARED_DIR):
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(f"sam2_auto_shared_{name}", path)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"{name}.py not found next to {here} nor in ../{SHARED_DIR}: deploy with "
                      "nuclio_functions/sam2_auto/deploy.sh, which copies the shared modules")


model = load_shared("model")
protocol = load_shared("protocol")

# env name -> (generator keyword, type, default); see SAM2AutomaticMaskGenerator.__init__
GENERATOR_ENV: dict[str, tuple[str, type, Any]] = {
    "SAM2_AUTO_POINTS_PER_SIDE": ("points_per_side", int, 32),
    "SAM2_AUTO_POINTS_PER_BATCH": ("points_per_batch", int, 64),
    "SAM2_AUTO_PRED_IOU_THRESH": ("pred_iou_thresh", float, 0.8),
    "SAM2_AUTO_STABILITY_SCORE_THRESH": ("stability_score_thresh", float, 0.95),
    "SAM2_AUTO_STABILITY_SCORE_OFFSET": ("stability_score_offset", float, 1.0),
    "SAM2_AUTO_BOX_NMS_THRESH": ("box_nms_thresh", float, 0.7),
    "SAM2_AUTO_CROP_N_LAYERS": ("crop_n_layers", int, 0),
    "SAM2_AUTO_CROP_N_POINTS_DOWNSCALE_FACTOR": ("crop_n_points_downscale_factor", int, 1),
    "SAM2_AUTO_MIN_MASK_REGION_AREA": ("min_mask_region_area", int, 0),
    "SAM2_AUTO_USE_M2M": ("use_m2m", bool, False),
    "SAM2_AUTO_MULTIMASK_OUTPUT": ("multimask_output", bool, True),
}


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return low in ("1", "true", "yes", "on")
        value = kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {kind.__name__}, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {raw!r}")
    return value


def generator_params(env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of ``SAM2AutomaticMaskGenerator`` from ``SAM2_AUTO_*`` variables."""
    params = {}
    for name, (kwarg, kind, default) in GENERATOR_ENV.items():
        raw = env.get(name, "")
        params[kwarg] = _parse(name, raw, kind) if raw.strip() else default
    return params


class AutoDetector:
    """Automatic masks -> CVAT detector items of one label."""

    def __init__(self, auto: Any, label: str, polygon_epsilon: float, max_masks: int):
        self.auto = auto
        self.label = label
        self.polygon_epsilon = polygon_epsilon
        self.max_masks = max_masks

    def detect(self, req: Any) -> list[dict[str, Any]]:
        """Items with predicted IoU >= ``req.threshold``, best first, at most ``max_masks``."""
        image = protocol.decode_image(req.image)
        items = []
        for pred in self.auto.generate(image):
            if len(items) >= self.max_masks or pred.score < req.threshold:
                break
            item = protocol.detector_item(pred.mask, pred.score, self.label, self.polygon_epsilon)
            if item is not None:
                items.append(item)
        return items


def build_detector(env: Mapping[str, str], log: Any) -> AutoDetector:
    if "SAM2_CHECKPOINT" not in env:
        raise ValueError("SAM2_CHECKPOINT is not set: give the checkpoint path "
                         "(or an empty value for random weights, tests only)")
    checkpoint = env["SAM2_CHECKPOINT"].strip() or None
    config = env.get("SAM2_CONFIG", "").strip() or model.DEFAULT_CONFIG
    t0 = time.perf_counter()
    sam = model.load_sam2(config, checkpoint, model.pick_device(env.get("SAM2_DEVICE", "auto")))
    if checkpoint is None:
        log.warning("SAM2_CHECKPOINT is empty: RANDOM WEIGHTS, TEST-ONLY MODE; masks are meaningless")
    auto = model.AutoMaskModel(sam, generator_params(env))
    if _parse("SAM2_WARMUP", env.get("SAM2_WARMUP", "1") or "1", bool):
        auto.warm_up()
    epsilon = _parse("SAM2_POLYGON_EPSILON", env.get("SAM2_POLYGON_EPSILON", "") or "2.5", float)
    max_masks = _parse("SAM2_AUTO_MAX_MASKS", env.get("SAM2_AUTO_MAX_MASKS", "") or "256", int)
    detector = AutoDetector(auto, env.get("SAM2_AUTO_LABEL", "").strip() or "object", epsilon, max_masks)
    log.info(f"SAM 2 automatic masks ready: {config} on {auto.device} in {time.perf_counter() - t0:.1f} s")
    return detector


def init_context(context: Any) -> None:
    context.user_data.detector = build_detector(os.environ, context.logger)


def _reply(context: Any, body: Any, status: int) -> Any:
    return context.Response(body=json.dumps(body), headers={}, content_type="application/json",
                            status_code=status)


def handler(context: Any, event: Any) -> Any:
    detector: AutoDetector = context.user_data.detector
    try:
        return _reply(context, detector.detect(protocol.parse_detector(event.body)), 200)
    except protocol.RequestError as exc:
        return _reply(context, {"error": str(exc)}, 400)
    except Exception as exc:  # noqa: BLE001 - any other failure is the function's fault: 500 with a reason
        context.logger.error(f"sam2_auto handler failed: {traceback.format_exc()}")
        return _reply(context, {"error": f"{type(exc).__name__}: {exc}"}, 500)
