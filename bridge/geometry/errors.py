"""``GeometryError``: a ``BadGeometry`` with a machine-readable ``code``.

Every validator in this package raises ``GeometryError`` (catch it as ``BadGeometry``); ``code``
tells bad cases apart and ``details`` carries the offending corners/ids for reports.

Codes: ``corner_count``, ``invalid_point``, ``out_of_bounds``, ``self_crossing``, ``not_convex``,
``too_small``, ``wrong_orientation``, ``grid_missing``, ``bad_grid_id``, ``bad_points``,
``bad_size``, ``bad_mask``, ``empty_mask``, ``bad_rle``, ``bad_detector_mask``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.errors import BadGeometry


class GeometryError(BadGeometry):
    """Invalid geometry; ``code`` is a stable identifier, the message is for users."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple:
        return (_rebuild, (self.code, str(self), self.details))

    def __repr__(self) -> str:
        return f"GeometryError(code={self.code!r}, message={str(self)!r})"


def _rebuild(code: str, message: str, details: dict[str, Any]) -> GeometryError:
    return GeometryError(code, message, **details)


def compact_ids(ids: Iterable[int]) -> str:
    """Format ids as compact ranges: ``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    values = sorted(set(ids))
    parts: list[str] = []
    start = prev = None
    for v in values:
        if start is None:
            start = prev = v
        elif v == prev + 1:
            prev = v
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = v
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def check_image_size(image_size: Any) -> tuple[int, int]:
    """Validate an image size ``(w, h)`` of positive integers and return it as ints."""
    try:
        w, h = image_size
        wi, hi = int(w), int(h)
    except (TypeError, ValueError) as exc:
        raise GeometryError("bad_size", f"image size must be (width, height), got {image_size!r}") from exc
    if wi != w or hi != h or wi <= 0 or hi <= 0:
        raise GeometryError("bad_size", f"image size must be two positive integers, got {image_size!r}")
    return wi, hi
