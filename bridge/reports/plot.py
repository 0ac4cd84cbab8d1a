"""A stacked bar chart of cover per quadrat as PNG bytes, drawn with OpenCV (no plotting library).

One bar per quadrat, labels stacked bottom-up in report order, the unlabeled share in light grey
on top (every bar reaches 100 %); a failed quadrat is an empty bar with a cross. Label colours
come from ``colors`` (``#rrggbb``, e.g. the CVAT preset's) or a fixed palette. Text is ASCII
(OpenCV's Hershey fonts); other characters are drawn as ``?``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

Bgr = tuple[int, int, int]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
           "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79")
UNLABELED_BGR: Bgr = (225, 225, 225)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK: Bgr = (0, 0, 0)
_PLOT_H = 400


def hex_to_bgr(value: str) -> Bgr:
    v = value.strip().lstrip("#")
    if len(v) != 6:
        raise ValueError(f"colour must be #rrggbb, got {value!r}")
    r, g, b = (int(v[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def label_colors(labels: Sequence[str], colors: Mapping[str, str] | None = None) -> dict[str, Bgr]:
    """A BGR colour per label: ``colors[label]`` when given, else the palette in label order."""
    given = colors or {}
    return {name: hex_to_bgr(given[name]) if name in given else hex_to_bgr(PALETTE[i % len(PALETTE)])
            for i, name in enumerate(labels)}


def _ascii(text: str, limit: int) -> str:
    text = text.encode("ascii", "replace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "~"


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4) -> None:
    cv2.putText(img, text, org, _FONT, scale, _BLACK, 1, cv2.LINE_AA)


def _vertical_text(text: str, scale: float = 0.35) -> np.ndarray:
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    tile = np.full((th + base + 2, tw + 2, 3), 255, np.uint8)
    _text(tile, text, (1, th + 1), scale)
    return cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)


def _stack(img: np.ndarray, cover: Mapping[str, float], labels: Sequence[str], palette: Mapping[str, Bgr],
           x0: int, x1: int, top: int, base: int) -> None:
    """One bar: labels bottom-up (cumulative, so rounding never leaves gaps), unlabeled on top."""
    acc = 0.0
    y_prev = base
    for lb in labels:
        acc += max(0.0, float(cover.get(lb, 0.0)))
        y = base - round(min(acc, 100.0) * _PLOT_H / 100)
        if y < y_prev:
            cv2.rectangle(img, (x0, y), (x1, y_prev - 1), palette[lb], -1)
        y_prev = y
    if y_prev > top:
        cv2.rectangle(img, (x0, top), (x1, y_prev - 1), UNLABELED_BGR, -1)


def stacked_bars_png(names: Sequence[str], covers: Sequence[Mapping[str, float] | None],
                     labels: Sequence[str], colors: Mapping[str, str] | None = None,
                     title: str = "Cover per quadrat (%)") -> bytes:
    """PNG of one bar per quadrat; ``covers[i]`` maps label → percent (None = failed quadrat)."""
    if len(names) != len(covers):
        raise ValueError("names and covers must have the same length")
    palette = label_colors(labels, colors)
    n = max(1, len(names))
    pitch = int(np.clip(900 // n, 2, 48))
    bar = max(1, pitch - max(1, pitch // 4))
    show_names = pitch >= 12
    name_h = max((_vertical_text(_ascii(s, 28)).shape[0] for s in names), default=0) if show_names else 0
    present = [lb for lb in labels if any(c and c.get(lb, 0) > 0 for c in covers)]
    legend = [*present, "unlabeled"]
    legend_w = 24 + max(cv2.getTextSize(_ascii(s, 32), _FONT, 0.4, 1)[0][0] for s in legend)
    left, top, gap = 56, 36, 16
    plot_w = n * pitch
    width = left + plot_w + gap + legend_w + 10
    height = max(top + _PLOT_H + 8 + name_h + 20, top + 20 * len(legend) + 20)
    img = np.full((height, width, 3), 255, np.uint8)
    _text(img, _ascii(title, 80), (left, 22), 0.5)
    base = top + _PLOT_H
    for pct in range(0, 101, 20):
        y = base - round(pct * _PLOT_H / 100)
        cv2.line(img, (left - 4, y), (left + plot_w, y), (235, 235, 235) if pct else _BLACK, 1)
        _text(img, f"{pct}", (left - 34, y + 4))
    for i, cover in enumerate(covers):
        x0 = left + i * pitch
        x1 = x0 + bar - 1
        if cover is None:
            for a, b in (((x0, top), (x1, base)), ((x0, base), (x1, top))):
                cv2.line(img, a, b, (160, 160, 160), 1)
            cv2.rectangle(img, (x0, top), (x1, base), (160, 160, 160), 1)
        else:
            _stack(img, cover, labels, palette, x0, x1, top, base)
        if show_names:
            tile = _vertical_text(_ascii(names[i], 28))
            th, tw = tile.shape[:2]
            cx = x0 + (bar - tw) // 2
            tx0, tx1 = max(0, cx), min(width, cx + tw)
            img[base + 6 : base + 6 + th, tx0:tx1] = tile[:, tx0 - cx : tx1 - cx]
    if not show_names:
        _text(img, f"{len(names)} quadrats", (left, base + 16))
    lx = left + plot_w + gap
    for j, lb in enumerate(legend):
        y = top + 20 * j
        colour = UNLABELED_BGR if lb == "unlabeled" else palette[lb]
        cv2.rectangle(img, (lx, y), (lx + 12, y + 12), colour, -1)
        cv2.rectangle(img, (lx, y), (lx + 12, y + 12), (120, 120, 120), 1)
        _text(img, _ascii(lb, 32), (lx + 18, y + 11))
    ok, data = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("OpenCV could not encode the chart as PNG")
    return data.tobytes()
