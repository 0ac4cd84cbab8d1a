"""The stacked bar chart: bars of the right colours and heights, failed quadrats, many quadrats."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridge.reports.plot import UNLABELED_BGR, hex_to_bgr, label_colors, stacked_bars_png


def decode(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def column_colours(img: np.ndarray, x: int) -> list[tuple[int, int, int]]:
    """Distinct colours of column ``x`` from the bottom of the plot up, with their run lengths."""
    runs: list[tuple[int, int, int]] = []
    lengths: list[int] = []
    for px in img[::-1, x]:
        colour = tuple(int(v) for v in px)
        if runs and runs[-1] == colour:
            lengths[-1] += 1
        else:
            runs.append(colour)
            lengths.append(1)
    return [(*c, n) for c, n in zip(runs, lengths, strict=True)]


def test_bars_stack_labels_bottom_up_then_unlabeled():
    labels = ["Acropora", "Porites"]
    colors = {"Acropora": "#22db5a"}
    png = stacked_bars_png(["q1", "q2"], [{"Acropora": 25.0, "Porites": 50.0}, None], labels, colors)
    img = decode(png)
    acro, porites = hex_to_bgr("#22db5a"), label_colors(labels, colors)["Porites"]
    # the first bar starts at x = 56 (left margin); the plot is 400 px high
    runs = [r for r in column_colours(img, 60) if r[3] > 5]
    coloured = [(r[:3], r[3]) for r in runs if r[:3] in (acro, porites, UNLABELED_BGR)]
    assert [c for c, _ in coloured] == [acro, porites, UNLABELED_BGR]
    assert [n for _, n in coloured] == pytest.approx([100, 200, 100], abs=2)
    # the failed quadrat (second bar: pitch 48 px) is an outlined cross, no fill
    second = img[36:437, 56 + 48 : 56 + 48 + 36].reshape(-1, 3)
    colours = {tuple(int(v) for v in px) for px in second}
    assert acro not in colours and porites not in colours and UNLABELED_BGR not in colours
    assert (160, 160, 160) in colours


def test_many_quadrats_draw_without_names_and_stay_deterministic():
    covers = [{"A": float(i % 50), "B": 10.0} for i in range(1000)]
    png = stacked_bars_png([f"q{i}" for i in range(1000)], covers, ["A", "B"])
    img = decode(png)
    assert img.shape[1] < 2500 and img.shape[0] < 600
    assert png == stacked_bars_png([f"q{i}" for i in range(1000)], covers, ["A", "B"])


def test_colour_helpers_and_bad_input():
    assert hex_to_bgr("#102030") == (0x30, 0x20, 0x10)
    with pytest.raises(ValueError):
        hex_to_bgr("#12345")
    with pytest.raises(ValueError, match="same length"):
        stacked_bars_png(["a"], [], ["A"])
    assert len(set(label_colors([f"L{i}" for i in range(20)]).values())) == 20
