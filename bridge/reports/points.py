"""Point-intercept emulation (as CPCe / CoralNet do): N points per quadrat, the label under each one,
and the binomial (Wilson score) 95 % interval of the resulting cover estimate.

Points are pixels ``(row, column)``, 0-based from the top-left — CoralNet's convention for its
point CSV — so "the label under a point" is the label-map value of that pixel.

Methods (CoralNet's names):

- ``stratified``: the quadrat is cut into ``rows × cols`` cells (as square as the frame allows) and
  one uniformly random pixel is drawn per cell. When ``rows × cols > N`` a seeded random subset of
  N cells gets a point. Default: unbiased and less variable than simple random sampling, so the
  binomial interval is conservative for it.
- ``random``: N uniformly random pixels (simple random sampling; the binomial model is exact).
- ``grid``: the centre pixel of each cell (systematic sampling; when ``rows × cols > N`` a seeded
  random subset of N cells is used).
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np

PointMethod = Literal["stratified", "random", "grid"]
POINT_METHODS: tuple[str, ...] = ("stratified", "random", "grid")
Z95 = 1.959963984540054


def point_rng(seed: int, name: str) -> np.random.Generator:
    """A generator fixed by ``seed`` and the quadrat's name (stable across runs and machines)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def cell_layout(width: int, height: int, count: int) -> tuple[int, int]:
    """``(rows, cols)`` of cells for ``count`` points: about square cells, ``rows × cols >= count``."""
    cols = min(width, max(1, round(math.sqrt(count * width / height))))
    rows = min(height, math.ceil(count / cols))
    while rows * cols < count:  # only when a side is shorter than the layout wants
        cols = min(width, cols + 1)
        rows = min(height, math.ceil(count / cols))
    return rows, cols


def sample_points(width: int, height: int, count: int, method: str,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points as (rows, cols) int arrays, in a fixed order (cell row-major for cell methods)."""
    if method not in POINT_METHODS:
        raise ValueError(f"point method must be one of {', '.join(POINT_METHODS)}, got {method!r}")
    if count < 0:
        raise ValueError(f"point count must be >= 0, got {count}")
    if count > width * height:
        raise ValueError(f"{count} points do not fit a {width}×{height} quadrat")
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if method == "random":
        return rng.integers(0, height, count), rng.integers(0, width, count)
    n_rows, n_cols = cell_layout(width, height, count)
    cells = np.arange(n_rows * n_cols)
    if cells.size > count:
        cells = np.sort(rng.choice(cells, size=count, replace=False))
    row_edges = np.floor(np.linspace(0, height, n_rows + 1)).astype(np.int64)
    col_edges = np.floor(np.linspace(0, width, n_cols + 1)).astype(np.int64)
    r, c = cells // n_cols, cells % n_cols
    top, bottom = row_edges[r], row_edges[r + 1]
    left, right = col_edges[c], col_edges[c + 1]
    if method == "grid":
        return (top + bottom - 1) // 2, (left + right - 1) // 2
    return rng.integers(top, bottom), rng.integers(left, right)


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``hits / n`` (NaNs when ``n == 0``)."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= hits <= n:
        raise ValueError(f"hits must be within 0..{n}, got {hits}")
    p = hits / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == n else min(1.0, centre + half)
    return low, high
