"""YOLO instance segmentation -> CVAT detector ``mask`` items (raw mask crop + polygon)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def load_yolo_seg(model_path: str) -> Any:
    """Load YOLO segmentation weights from a local path only (a bare name would trigger a download)."""
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model weights not found at MODEL_PATH={model_path!r}")
    from ultralytics import YOLO

    model = YOLO(model_path)
    if model.task != "segment":
        raise ValueError(f"{model_path} holds a {model.task!r} model; "
                         "coral segmentation needs a 'segment' model")
    return model


def parse_class_names(value: str) -> list[str]:
    """Class names from a JSON list, or from a file holding a JSON list or one name per line."""
    text = value.strip()
    if not text.startswith("[") and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8").strip()
        if not text.startswith("["):
            names = [line.strip() for line in text.splitlines() if line.strip()]
            return _check_names(names)
    try:
        names = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CLASS_NAMES is neither a JSON list nor a readable file: {value[:80]!r}") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("CLASS_NAMES must be a JSON list of strings")
    return _check_names(names)


def _check_names(names: list[str]) -> list[str]:
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ValueError("CLASS_NAMES must hold at least one non-empty name")
    if len(set(names)) != len(names):
        raise ValueError("CLASS_NAMES holds duplicate names (CVAT maps labels by name)")
    return names


def confidence_value(score: float) -> str:
    """CVAT number attribute value: an integer string 0..100."""
    return str(int(round(min(max(float(score), 0.0), 1.0) * 100)))


def mask_to_cvat(mask: np.ndarray) -> list[int] | None:
    """Raw CVAT detector mask: the bbox crop flattened row-major (0/1) + inclusive [xtl, ytl, xbr, ybr]."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    crop = mask[top:bottom + 1, left:right + 1].astype(np.uint8).ravel().tolist()
    return crop + [left, top, right, bottom]


def simplify_polygon(contour: np.ndarray, epsilon: float, width: int, height: int) -> list[float]:
    """Flat [x0, y0, ...] of the simplified closed contour, clipped to the image; [] if < 3 vertices."""
    pts = np.asarray(contour, dtype=np.float32).reshape(-1, 2)
    if len(pts) < 3:
        return []
    if epsilon > 0:
        pts = cv2.approxPolyDP(pts.reshape(-1, 1, 2), epsilon, True).reshape(-1, 2)
    pts = np.clip(pts, [0, 0], [width - 1, height - 1])
    # drop consecutive duplicates that clipping may create
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(np.diff(pts, axis=0) != 0, axis=1)
    pts = pts[keep]
    if len(pts) >= 2 and np.all(pts[0] == pts[-1]):
        pts = pts[:-1]
    if len(pts) < 3:
        return []
    return [round(float(v), 2) for v in pts.ravel()]


def mask_contour(mask: np.ndarray) -> np.ndarray:
    """Largest external contour of a binary mask, (K, 2)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float32)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)


@dataclass
class Segmenter:
    """A loaded YOLO-seg model and the settings it is run with."""

    model: Any
    class_names: list[str]
    conf: float
    iou: float
    imgsz: int
    max_det: int
    device: str
    poly_epsilon: float = 1.0

    def __post_init__(self) -> None:
        model_classes = len(self.model.names)
        if model_classes != len(self.class_names):
            raise ValueError(f"the model has {model_classes} classes "
                             f"but CLASS_NAMES has {len(self.class_names)}")

    def __call__(self, image_bgr: np.ndarray, conf: float | None = None) -> list[dict[str, Any]]:
        height, width = image_bgr.shape[:2]
        result = self.model.predict(image_bgr, conf=self.conf if conf is None else conf, iou=self.iou,
                                    imgsz=self.imgsz, max_det=self.max_det, retina_masks=True,
                                    device=self.device, verbose=False)[0]
        if result.masks is None or result.boxes is None or len(result.boxes) == 0:
            return []
        masks = result.masks.data.cpu().numpy() > 0.5
        contours = result.masks.xy
        classes = result.boxes.cls.cpu().numpy().astype(int)
        scores = result.boxes.conf.cpu().numpy().astype(float)
        items = []
        for mask, contour, cls, score in zip(masks, contours, classes, scores, strict=True):
            if mask.shape != (height, width):
                mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            raw = mask_to_cvat(mask)
            if raw is None:
                continue
            polygon = simplify_polygon(contour, self.poly_epsilon, width, height)
            if not polygon:
                polygon = simplify_polygon(mask_contour(mask), self.poly_epsilon, width, height)
            if not polygon:
                continue  # a speck too small to outline; CVAT cannot store it as a polygon
            items.append({
                "label": self.class_names[cls],
                "type": "mask",
                "points": polygon,
                "mask": raw,
                "confidence": float(score),
                "attributes": [{"name": "confidence", "value": confidence_value(score)}],
            })
        return items
