"""Geometry benchmarks, measured side by side in one run (median of >= 5 repeats).

Run: ``.venv/bin/python bench/geometry.py [--repeats N]``

- warp of a 5184×3888 frame: ``warp_quadrat`` ÷ bare ``cv2.warpPerspective`` (goal <= 1.3);
- grid-mask build for a 1920² and a 5184² warped frame (absolute ms);
- mask -> polygons on a 20 MP mask with a few hundred blobs: ``mask_to_polygons`` ÷ skimage
  ``find_contours`` + ``approximate_polygon(tolerance=2.5)`` (lower is better);
- CVAT RLE of the same mask: ``mask_to_cvat_rle`` ÷ ``cvat_sdk.masks.encode_mask``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.geometry.grid import GRID_POINTS, grid_id_to_rc, grid_mask  # noqa: E402
from bridge.geometry.polygons import mask_to_polygons  # noqa: E402
from bridge.geometry.rle import mask_to_cvat_rle  # noqa: E402
from bridge.geometry.warp import corner_homography, output_size, warp_quadrat  # noqa: E402

FRAME_W, FRAME_H = 5184, 3888
CORNERS = [(820.0, 310.0), (4420.0, 420.0), (4300.0, 3560.0), (700.0, 3420.0)]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def side_by_side(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Interleave a and b so drift (thermal, caches) hits both alike; medians in seconds."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, 1)[0])
        tb.append(timed(b, 1)[0])
    return statistics.median(ta), statistics.median(tb)


def synthetic_frame(rng: np.random.Generator) -> np.ndarray:
    small = rng.integers(0, 256, (FRAME_H // 8, FRAME_W // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR)


def lattice_points(side: int, rng: np.random.Generator) -> np.ndarray:
    step = (side - 1) / 10
    pts = np.array([(c * step, r * step) for r, c in (grid_id_to_rc(i) for i in range(1, GRID_POINTS + 1))])
    return np.clip(pts + rng.uniform(-0.01 * side, 0.01 * side, pts.shape), 0, side - 1)


def blob_mask(rng: np.random.Generator, blobs: int) -> np.ndarray:
    mask = np.zeros((FRAME_H, FRAME_W), np.uint8)
    for _ in range(blobs):
        cx, cy = int(rng.integers(100, FRAME_W - 100)), int(rng.integers(100, FRAME_H - 100))
        n = 12
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(12, 60, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask.view(np.bool_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--blobs", type=int, default=400)
    args = parser.parse_args()
    repeats = max(5, args.repeats)
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, str]] = []

    frame = synthetic_frame(rng)
    pts = np.array(CORNERS)
    size = output_size(pts)
    hom = corner_homography(pts, size)
    t_ours, t_bare = side_by_side(
        lambda: warp_quadrat(frame, CORNERS),
        lambda: cv2.warpPerspective(frame, hom, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT),
        repeats,
    )
    rows.append(
        (f"warp 5184×3888 -> {size[0]}² (warp_quadrat ÷ cv2.warpPerspective)",
         f"{t_ours * 1e3:.1f} / {t_bare * 1e3:.1f} ms", f"{t_ours / t_bare:.3f} (goal <= 1.3)")
    )

    for side in (1920, 5184):
        grid = lattice_points(side, rng)
        t, _ = timed(lambda grid=grid, side=side: grid_mask(grid, (side, side), line_width=30), repeats)
        t_d, _ = timed(
            lambda grid=grid, side=side: grid_mask(grid, (side, side), line_width=30, dilation=3), repeats
        )
        label = f"grid_mask {side}² (line 30 px; + dilation 3 px)"
        rows.append((label, f"{t * 1e3:.1f}; {t_d * 1e3:.1f} ms", "-"))

    from skimage.measure import approximate_polygon, find_contours

    mask = blob_mask(rng, args.blobs)

    def skimage_polygons() -> list[np.ndarray]:
        return [approximate_polygon(c, tolerance=2.5) for c in find_contours(mask.view(np.uint8), 0.5)]

    t_ours, t_sk = side_by_side(lambda: mask_to_polygons(mask, tolerance=2.5), skimage_polygons, repeats)
    n_ours = len(mask_to_polygons(mask, tolerance=2.5))
    n_sk = len(skimage_polygons())
    rows.append(
        (f"mask->polygons 20 MP, {args.blobs} blobs (ours {n_ours} polys ÷ skimage {n_sk} contours)",
         f"{t_ours * 1e3:.1f} / {t_sk * 1e3:.1f} ms", f"{t_ours / t_sk:.3f}")
    )

    from cvat_sdk.masks import encode_mask

    t_ours, t_sdk = side_by_side(lambda: mask_to_cvat_rle(mask), lambda: encode_mask(mask), repeats)
    assert mask_to_cvat_rle(mask) == encode_mask(mask)
    rows.append(
        ("CVAT RLE 20 MP (mask_to_cvat_rle ÷ cvat_sdk encode_mask)",
         f"{t_ours * 1e3:.1f} / {t_sdk * 1e3:.1f} ms", f"{t_ours / t_sdk:.3f}")
    )

    threads = cv2.getNumThreads()
    print(f"geometry bench: median of {repeats} runs, OpenCV {cv2.__version__}, {threads} threads")
    widths = [max(len(r[i]) for r in rows + [("case", "time", "ratio")]) for i in range(3)]
    for r in [("case", "time", "ratio")] + rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)))


if __name__ == "__main__":
    main()
