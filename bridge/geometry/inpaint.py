"""OpenCV Telea inpainting: the grid-removal fallback when no LaMa function is deployed."""

from __future__ import annotations

import cv2
import numpy as np

from bridge.errors import BadImage
from bridge.geometry.errors import GeometryError


def inpaint_telea(image: np.ndarray, mask: np.ndarray, radius: int = 5) -> np.ndarray:
    """Fill the nonzero pixels of ``mask`` (H×W) in ``image`` (H×W×3 or H×W, uint8) with Telea's method."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        got = getattr(image, "dtype", type(image).__name__)
        raise BadImage(f"cannot inpaint: image must be a uint8 H×W or H×W×3 array, got {got}")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise BadImage(f"cannot inpaint: image must have 1 or 3 channels, got shape {image.shape}")
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        got = getattr(mask, "shape", type(mask).__name__)
        raise GeometryError("bad_mask", f"inpaint mask must be a 2-D array, got {got!r}")
    if mask.shape != image.shape[:2]:
        raise GeometryError(
            "bad_mask", f"inpaint mask is {mask.shape[1]}×{mask.shape[0]} but the image is "
            f"{image.shape[1]}×{image.shape[0]}"
        )
    if isinstance(radius, bool) or int(radius) != radius or radius < 1:
        raise GeometryError("bad_size", f"inpaint radius must be a positive integer, got {radius!r}")
    mask_u8 = (mask != 0).view(np.uint8) * np.uint8(255) if mask.dtype != np.uint8 else mask
    if not mask_u8.any():
        return image.copy()
    src = np.ascontiguousarray(image)
    return cv2.inpaint(src, np.ascontiguousarray(mask_u8), int(radius), cv2.INPAINT_TELEA)
