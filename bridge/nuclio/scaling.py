"""Map function results from a downscaled image back to the original resolution (pure math).

When a frame is too big for a function's request body the client sends a smaller copy; a
``Scale`` records both sizes. Coordinates go up with ``x * W / w``; pixel boxes (inclusive, as
in CVAT masks) go up so that every original pixel whose area falls in a sent pixel is covered:
``left' = left * W // w`` and ``right' = ceil((right + 1) * W / w) - 1``. Mask pixels are mapped
back nearest-neighbour: original pixel ``X`` takes the value of sent pixel ``X * w // W``.

Two mask encodings exist and stay separate here:

* detector ``mask``: the *raw* crop, row-major 0/1 values followed by ``[xtl, ytl, xbr, ybr]``;
* CVAT RLE (interactor shapes, SAM 2 results, REST ``points``): run lengths starting with a run
  of zeros over the row-major crop, followed by ``[left, top, right, bottom]`` (inclusive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import FunctionFailed
from bridge.geometry.rle import crop_to_cvat_rle

# Detector item keys whose values are flat [x0, y0, x1, y1, ...] coordinate lists.
_POINT_KEYS = ("points",)


@dataclass(frozen=True)
class Scale:
    """Original size ``(width, height)`` and the size actually sent ``(sent_width, sent_height)``."""

    width: int
    height: int
    sent_width: int
    sent_height: int

    @classmethod
    def identity(cls, width: int = 1, height: int = 1) -> Scale:
        return cls(width, height, width, height)

    @property
    def is_identity(self) -> bool:
        return self.width == self.sent_width and self.height == self.sent_height

    @property
    def factor(self) -> float:
        """Sent / original along x (``< 1`` when downscaled); for logs."""
        return self.sent_width / self.width

    # --- coordinates ----------------------------------------------------------------------------
    def up_x(self, x: float) -> float:
        return x * self.width / self.sent_width

    def up_y(self, y: float) -> float:
        return y * self.height / self.sent_height

    def down_x(self, x: float) -> float:
        return x * self.sent_width / self.width

    def down_y(self, y: float) -> float:
        return y * self.sent_height / self.height

    def up_flat(self, flat: Sequence[float]) -> list[float]:
        """Scale a flat ``[x0, y0, x1, y1, ...]`` list up to the original resolution."""
        if len(flat) % 2:
            raise FunctionFailed(f"points list has an odd length ({len(flat)}): {list(flat)[:8]}...")
        return [self.up_x(v) if i % 2 == 0 else self.up_y(v) for i, v in enumerate(flat)]

    def down_flat(self, flat: Sequence[float], ndigits: int = 2) -> list[float]:
        """Flat ``[x, y, x, y, ...]`` image coordinates in the sent image's."""
        return [c for i in range(0, len(flat) - 1, 2) for c in self.down_point(flat[i:i + 2], ndigits)]

    def down_point(self, point: Sequence[float], ndigits: int = 2) -> list[float]:
        """Scale one ``[x, y]`` prompt point down to the sent image (unchanged when not scaled)."""
        x, y = point
        if self.is_identity:
            return [x, y]
        return [round(self.down_x(float(x)), ndigits), round(self.down_y(float(y)), ndigits)]

    # --- inclusive pixel boxes ------------------------------------------------------------------
    def up_box(self, left: int, top: int, right: int, bottom: int) -> tuple[int, int, int, int]:
        """Map an inclusive pixel box of the sent image to the original image (clipped)."""
        w, h, sw, sh = self.width, self.height, self.sent_width, self.sent_height
        new_left = min(left * w // sw, w - 1)
        new_top = min(top * h // sh, h - 1)
        new_right = min(-(-(right + 1) * w // sw) - 1, w - 1)
        new_bottom = min(-(-(bottom + 1) * h // sh) - 1, h - 1)
        return max(new_left, 0), max(new_top, 0), max(new_right, new_left), max(new_bottom, new_top)

    def up_crop(self, crop: np.ndarray, left: int, top: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Nearest-neighbour map of a mask crop at ``(left, top)`` to the original resolution."""
        ch, cw = crop.shape
        box = self.up_box(left, top, left + cw - 1, top + ch - 1)
        new_left, new_top, new_right, new_bottom = box
        rows = np.arange(new_top, new_bottom + 1) * self.sent_height // self.height - top
        cols = np.arange(new_left, new_right + 1) * self.sent_width // self.width - left
        rows = np.clip(rows, 0, ch - 1)
        cols = np.clip(cols, 0, cw - 1)
        return crop[np.ix_(rows, cols)], box


def _int_box(values: Sequence[Any], what: str) -> tuple[int, int, int, int]:
    try:
        left, top, right, bottom = (int(round(float(v))) for v in values)
    except (TypeError, ValueError) as exc:
        raise FunctionFailed(f"{what}: bbox {list(values)} is not four numbers") from exc
    if right < left or bottom < top or left < 0 or top < 0:
        raise FunctionFailed(f"{what}: bbox {[left, top, right, bottom]} is empty or negative")
    return left, top, right, bottom


# --- CVAT RLE ------------------------------------------------------------------------------------
def decode_rle(points: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """CVAT RLE + ``[l, t, r, b]`` → (bool crop of shape ``(b-t+1, r-l+1)``, box)."""
    if len(points) < 5:
        raise FunctionFailed(f"RLE mask needs at least 5 numbers, got {len(points)}")
    left, top, right, bottom = _int_box(points[-4:], "RLE mask")
    width, height = right - left + 1, bottom - top + 1
    runs = np.asarray(points[:-4], dtype=np.int64)
    if (runs < 0).any():
        raise FunctionFailed("RLE mask has a negative run length")
    total = int(runs.sum())
    if total != width * height:
        raise FunctionFailed(
            f"RLE mask runs cover {total} pixels but the bbox {[left, top, right, bottom]} "
            f"holds {width * height}"
        )
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(height, width), (left, top, right, bottom)


def scale_rle(points: Sequence[float], scale: Scale) -> list[int]:
    """Rescale a CVAT RLE mask (with its bbox) to the original resolution."""
    crop, (left, top, _, _) = decode_rle(points)
    if scale.is_identity:
        return [int(v) for v in points]
    big, (new_left, new_top, _, _) = scale.up_crop(crop, left, top)
    return crop_to_cvat_rle(big, new_left, new_top)


# --- detector raw masks -------------------------------------------------------------------------
def scale_raw_mask(mask: Sequence[float], scale: Scale) -> list[int]:
    """Rescale a detector ``mask`` (raw 0/1 crop + ``[xtl, ytl, xbr, ybr]``)."""
    if len(mask) < 5:
        raise FunctionFailed(f"detector mask needs a crop and a bbox, got {len(mask)} numbers")
    left, top, right, bottom = _int_box(mask[-4:], "detector mask")
    width, height = right - left + 1, bottom - top + 1
    if len(mask) - 4 != width * height:
        raise FunctionFailed(
            f"detector mask has {len(mask) - 4} values but its bbox {[left, top, right, bottom]} "
            f"holds {width * height} (raw row-major crop expected, not RLE)"
        )
    crop = np.asarray(mask[:-4], dtype=np.float64).reshape(height, width) > 0
    if scale.is_identity:
        return crop.astype(np.uint8).ravel().tolist() + [left, top, right, bottom]
    big, box = scale.up_crop(crop, left, top)
    return big.astype(np.uint8).ravel().tolist() + list(box)


# --- result documents ---------------------------------------------------------------------------
def scale_detection(item: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """One CVAT detector item (any type, skeleton elements included) at the original resolution."""
    if not isinstance(item, dict):
        raise FunctionFailed(f"detector item is not an object: {item!r:.200}")
    if scale.is_identity:
        return item
    out = dict(item)
    for key in _POINT_KEYS:
        if isinstance(out.get(key), list):
            out[key] = scale.up_flat(out[key])
    if isinstance(out.get("mask"), list):
        out["mask"] = scale_raw_mask(out["mask"], scale)
    if isinstance(out.get("elements"), list):
        out["elements"] = [scale_detection(el, scale) for el in out["elements"]]
    return out


def scale_shape(shape: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """One interactor shape: ``mask`` points are RLE, other types are flat coordinates."""
    if not isinstance(shape, dict):
        raise FunctionFailed(f"interactor shape is not an object: {shape!r:.200}")
    if scale.is_identity:
        return shape
    out = dict(shape)
    points = out.get("points")
    if isinstance(points, list):
        out["points"] = scale_rle(points, scale) if out.get("type") == "mask" else scale.up_flat(points)
    if isinstance(out.get("elements"), list):
        out["elements"] = [scale_shape(el, scale) for el in out["elements"]]
    return out


def scale_sam_result(result: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """One SAM 2 batch result (``{"mask", "polygons", "score"}`` or ``{"error"}``)."""
    if not isinstance(result, dict):
        raise FunctionFailed(f"SAM 2 result is not an object: {result!r:.200}")
    if scale.is_identity or "error" in result:
        return result
    out = dict(result)
    if isinstance(out.get("mask"), list):
        out["mask"] = scale_rle(out["mask"], scale)
    if isinstance(out.get("polygons"), list):
        out["polygons"] = [scale.up_flat(p) for p in out["polygons"]]
    return out


def scale_prompt_down(prompt: dict[str, Any], scale: Scale) -> dict[str, Any]:
    """A SAM 2 prompt (``bbox`` ``[x1,y1,x2,y2]``, ``pos_points``, ``neg_points``) in sent coordinates."""
    if scale.is_identity:
        return prompt
    out = dict(prompt)
    bbox = out.get("bbox")
    if bbox is not None:
        x1, y1, x2, y2 = bbox
        out["bbox"] = scale.down_point([x1, y1]) + scale.down_point([x2, y2])
    for key in ("pos_points", "neg_points"):
        if out.get(key):
            out[key] = [scale.down_point(p) for p in out[key]]
    return out


def fit_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """``(width, height) * factor``, rounded, at least 1×1."""
    return max(1, math.floor(width * factor + 0.5)), max(1, math.floor(height * factor + 0.5))
