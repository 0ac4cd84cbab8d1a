"""LaMa inpainting with a TorchScript model (the simple-lama ``big-lama.pt`` convention).

``model(image, mask)``: image float [1, 3, H, W] RGB in 0..1, mask float [1, 1, H, W] 0/1, H and W
multiples of 8 -> [1, 3, H, W] in 0..1. The result is composited: pixels outside the mask are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODULO = 8


def load_inpainter(model_path: str, device: str) -> Any:
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"TorchScript model not found at MODEL_PATH={model_path!r}")
    import torch

    model = torch.jit.load(model_path, map_location=device)
    model.eval()
    return model


def _pad(array: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def inpaint(model: Any, image_rgb: np.ndarray, mask: np.ndarray, device: str) -> np.ndarray:
    """Fill ``mask`` (bool H x W) in ``image_rgb`` (uint8 H x W x 3); returns uint8 H x W x 3."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    if mask.shape != image_rgb.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{image_rgb.shape[1]}x{image_rgb.shape[0]}")
    mask = mask.astype(bool)
    if not mask.any():
        return image_rgb.copy()
    import torch

    height, width = mask.shape
    pad_h, pad_w = (-height) % MODULO, (-width) % MODULO
    img = torch.from_numpy(np.ascontiguousarray(_pad(image_rgb, pad_h, pad_w)))
    img = img.permute(2, 0, 1).unsqueeze(0).float().div(255.0).to(device)
    msk = torch.from_numpy(_pad(mask, pad_h, pad_w).astype(np.float32))[None, None].to(device)
    with torch.inference_mode():
        out = model(img, msk)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(img.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RuntimeError(f"inpainting model returned {shape}, expected {tuple(img.shape)}")
    result = out[0, :, :height, :width].permute(1, 2, 0).clamp(0.0, 1.0).mul(255.0).round()
    result = result.to(torch.uint8).cpu().numpy()
    return np.where(mask[:, :, None], result, image_rgb)
