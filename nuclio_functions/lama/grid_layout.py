"""The 117-point grid layout: an 11 x 11 lattice of grid-line crossings without its 4 corners.

Ids are row-major (top -> bottom, left -> right): row 0 -> ids 1..9 (c = 1..9), rows 1..9 ->
``id = 11 r + c - 1``, row 10 -> ``108 + c``. Pure Python/numpy; identical copy in ``gridpose/`` and
``lama/`` (a test keeps them equal).
"""

from __future__ import annotations

import numpy as np

LATTICE = 11
NUM_POINTS = LATTICE * LATTICE - 4  # 117
CORNERS = ((0, 0), (0, LATTICE - 1), (LATTICE - 1, LATTICE - 1), (LATTICE - 1, 0))


def point_id(row: int, col: int) -> int:
    """Skeleton element id (1..117) of lattice position (row, col); ValueError for the 4 corners."""
    if not (0 <= row < LATTICE and 0 <= col < LATTICE) or (row, col) in CORNERS:
        raise ValueError(f"({row}, {col}) is not one of the 117 grid points")
    if row == 0:
        return col
    if row == LATTICE - 1:
        return 108 + col
    return 11 * row + col - 1


def position(point: int) -> tuple[int, int]:
    """(row, col) of skeleton element id ``point`` (1..117)."""
    if not 1 <= point <= NUM_POINTS:
        raise ValueError(f"grid point id must be 1..{NUM_POINTS}, got {point}")
    if point <= 9:
        return 0, point
    if point <= 108:
        return (point - 10) // 11 + 1, (point - 10) % 11
    return LATTICE - 1, point - 108


def element_names() -> list[str]:
    return [str(i) for i in range(1, NUM_POINTS + 1)]


def lattice_template() -> np.ndarray:
    """(117, 2) normalised (x, y) of each id on an evenly spaced lattice whose corners are the image's."""
    rc = np.array([position(i) for i in range(1, NUM_POINTS + 1)], dtype=np.float64)
    return rc[:, ::-1] / (LATTICE - 1)
