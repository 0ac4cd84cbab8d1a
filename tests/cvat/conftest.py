"""Fixtures shared by the CVAT client tests."""

from __future__ import annotations

import pytest

from tests.doubles.cvat_double import CvatDouble


@pytest.fixture(scope="module")
def cvat():
    """One CVAT test double per test module (each module seeds its own project)."""
    with CvatDouble() as double:
        yield double
