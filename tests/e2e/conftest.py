"""Fixtures for the end-to-end tests: images, label sets, loaded test functions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from tests.doubles.function_server import LoadedFunction, load_function

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures"


def label_export(name: str) -> list[dict]:
    """A real CVAT label export (reference presets) from tests/fixtures/labels/."""
    return json.loads((FIXTURES / "labels" / f"{name}.json").read_text(encoding="utf-8"))


def e2e_function(name: str, env: dict[str, str] | None = None) -> LoadedFunction:
    return load_function(HERE / "functions" / name, env)


def blobs_png(width: int, height: int, boxes: list[tuple[int, int, int, int]], *, white: bool = False) -> bytes:
    """A dark PNG with bright rectangles (x1, y1, x2, y2 exclusive); all white when ``white``."""
    img = np.full((height, width), 255 if white else 20, np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 230
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()
