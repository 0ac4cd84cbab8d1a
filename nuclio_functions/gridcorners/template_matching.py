"""Assign detected points to an ordered keypoint template (Hungarian matching with a cost bound).

Pure numpy/scipy. Identical copy in ``gridcorners/`` and ``gridpose/`` (a test keeps them equal).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def load_template(path: str, expected_points: int) -> np.ndarray:
    """Load a (K, 2) template of normalised (x, y) positions from a ``.npy`` file and check it."""
    template = np.load(path, allow_pickle=False)
    return check_template(template, expected_points)


def check_template(template: np.ndarray, expected_points: int) -> np.ndarray:
    template = np.asarray(template, dtype=np.float64)
    if template.shape != (expected_points, 2):
        raise ValueError(f"template must have shape ({expected_points}, 2), got {template.shape}")
    if not np.all(np.isfinite(template)):
        raise ValueError("template holds non-finite values")
    if template.min() < -0.5 or template.max() > 1.5:
        raise ValueError("template positions must be normalised to the image size (about 0..1)")
    return template


def match_to_template(points: np.ndarray, template: np.ndarray, max_cost: float) -> np.ndarray:
    """For each template point, the index of its matched detection, or -1.

    ``points`` (N, 2) and ``template`` (K, 2) are both normalised by the image size. The cost of a pair
    is their Euclidean distance; pairs farther apart than ``max_cost`` are never matched. Costs are
    capped at ``max_cost`` (the price of leaving a point unmatched) before solving, so the assignment
    maximises the total saving ``max_cost - distance``: a spurious detection never displaces a closer
    one to grab a farther template point, and missing points and outliers are both allowed.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    template = np.asarray(template, dtype=np.float64).reshape(-1, 2)
    if max_cost <= 0:
        raise ValueError(f"max_cost must be positive, got {max_cost}")
    assignment = np.full(len(template), -1, dtype=np.int64)
    if len(points) == 0 or len(template) == 0:
        return assignment
    cost = np.linalg.norm(template[:, None, :] - points[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(np.minimum(cost, max_cost))
    keep = cost[rows, cols] < max_cost
    assignment[rows[keep]] = cols[keep]
    return assignment
