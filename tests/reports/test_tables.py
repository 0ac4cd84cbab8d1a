"""CSV and Parquet encodings of report tables."""

from __future__ import annotations

import io
import math
import sys

import pytest

from bridge.reports.tables import ParquetUnavailable, Table, encode, parquet_available, to_csv, to_parquet

TABLE = Table((("name", "str"), ("n", "int"), ("pct", "float"), ("ok", "bool")),
              [("a, b", 1, 12.5, True), ("é/ü", None, math.nan, False), ("c", 3, None, None)])


def test_csv_quotes_and_leaves_missing_cells_empty():
    assert to_csv(TABLE).decode("utf-8") == 'name,n,pct,ok\n"a, b",1,12.5,true\né/ü,,,false\nc,3,,\n'


def test_parquet_round_trips_types_and_nulls():
    pq = pytest.importorskip("pyarrow.parquet")
    data = to_parquet(TABLE)
    table = pq.read_table(io.BytesIO(data))
    assert [str(t) for t in table.schema.types] == ["string", "int64", "double", "bool"]
    assert table.to_pylist() == [{"name": "a, b", "n": 1, "pct": 12.5, "ok": True},
                                 {"name": "é/ü", "n": None, "pct": None, "ok": False},
                                 {"name": "c", "n": 3, "pct": None, "ok": None}]
    assert to_parquet(TABLE) == data  # deterministic bytes


def test_parquet_without_pyarrow_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert not parquet_available()
    with pytest.raises(ParquetUnavailable, match="needs the 'pyarrow' package.*format=csv"):
        to_parquet(TABLE)
    assert encode(TABLE, "csv") == to_csv(TABLE)


def test_unknown_format_raises():
    with pytest.raises(ValueError, match="csv, parquet"):
        encode(TABLE, "xlsx")
