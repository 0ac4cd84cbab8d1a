"""YOLO point detection + template matching -> one CVAT skeleton detector item.

Identical copy in ``gridcorners/`` and ``gridpose/`` (a test keeps them equal); each function's
``main.py`` supplies its template, skeleton label and element names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from template_matching import match_to_template


def load_yolo(model_path: str, task: str) -> Any:
    """Load YOLO weights from a local path only (a bare name would trigger a download)."""
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"model weights not found at MODEL_PATH={model_path!r}")
    from ultralytics import YOLO

    model = YOLO(model_path)
    if model.task != task:
        raise ValueError(f"{model_path} holds a {model.task!r} model; this function needs a {task!r} model")
    return model


def confidence_value(score: float) -> str:
    """CVAT number attribute value: an integer string 0..100."""
    return str(int(round(min(max(float(score), 0.0), 1.0) * 100)))


def skeleton_item(label: str, element_names: list[str], template: np.ndarray, centres: np.ndarray,
                  scores: np.ndarray, width: int, height: int, max_cost: float) -> dict[str, Any] | None:
    """Build the skeleton item from detection centres (pixels) and scores; None if nothing matched.

    Matched elements take their detection's centre; unmatched ones are ``outside: 1`` at the template
    position (CVAT would otherwise insert them at the centroid). The skeleton confidence is the mean
    score of the matched detections.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    size = np.array([width, height], dtype=np.float64)
    assignment = match_to_template(centres / size, template, max_cost)
    matched = assignment >= 0
    if not matched.any():
        return None
    elements = []
    for name, det, tpl in zip(element_names, assignment, template, strict=True):
        if det >= 0:
            x, y = centres[det]
        else:
            x, y = np.clip(tpl, 0.0, 1.0) * (size - 1)
        elements.append({"label": name, "type": "points", "points": [float(x), float(y)],
                         "outside": 0 if det >= 0 else 1})
    confidence = float(scores[assignment[matched]].mean())
    return {"label": label, "type": "skeleton", "points": [], "elements": elements, "confidence": confidence,
            "attributes": [{"name": "confidence", "value": confidence_value(confidence)}]}


@dataclass
class KeypointDetector:
    """A loaded YOLO detector plus the template it reports against."""

    model: Any
    label: str
    element_names: list[str]
    template: np.ndarray
    max_cost: float
    conf: float
    imgsz: int
    max_det: int
    device: str

    def __post_init__(self) -> None:
        if len(self.element_names) != len(self.template):
            raise ValueError(f"{len(self.element_names)} element names for "
                             f"{len(self.template)} template points")

    def detect_points(self, image_bgr: np.ndarray,
                      conf: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Box centres (N, 2) in pixels and their scores (N,)."""
        result = self.model.predict(image_bgr, conf=self.conf if conf is None else conf, imgsz=self.imgsz,
                                    max_det=self.max_det, device=self.device, verbose=False)[0]
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 2)), np.zeros(0)
        return boxes.xywh[:, :2].cpu().numpy().astype(np.float64), boxes.conf.cpu().numpy().astype(np.float64)

    def __call__(self, image_bgr: np.ndarray, conf: float | None = None) -> list[dict[str, Any]]:
        """CVAT detector response: ``[]`` or one skeleton item."""
        centres, scores = self.detect_points(image_bgr, conf)
        height, width = image_bgr.shape[:2]
        item = skeleton_item(self.label, self.element_names, self.template, centres, scores, width, height,
                             self.max_cost)
        return [] if item is None else [item]
