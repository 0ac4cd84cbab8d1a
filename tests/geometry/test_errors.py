"""GeometryError: a BadGeometry with a code; survives pickling; compact id lists."""

from __future__ import annotations

import pickle

import pytest

from bridge.errors import BadGeometry, PermanentError
from bridge.geometry.errors import GeometryError, check_image_size, compact_ids


def test_geometry_error_is_a_permanent_bad_geometry_with_code():
    err = GeometryError("grid_missing", "grid needs all 117 points", ids=[1, 2])
    assert isinstance(err, BadGeometry) and isinstance(err, PermanentError)
    assert (err.code, str(err), err.details) == ("grid_missing", "grid needs all 117 points", {"ids": [1, 2]})
    back = pickle.loads(pickle.dumps(err))
    assert (back.code, str(back), back.details) == (err.code, str(err), err.details)


def test_compact_ids():
    assert compact_ids([10, 1, 2, 3, 7, 9, 3]) == "1-3, 7, 9-10"
    assert compact_ids([5]) == "5"
    assert compact_ids([]) == ""


@pytest.mark.parametrize("bad", [(0, 5), (5, -1), (1.5, 2), "ab", None, (1, 2, 3)])
def test_check_image_size_rejects(bad):
    with pytest.raises(GeometryError) as err:
        check_image_size(bad)
    assert err.value.code == "bad_size"
