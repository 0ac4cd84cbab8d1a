"""Typed tables and their byte encodings (CSV always; Parquet when ``pyarrow`` is importable).

Encodings are deterministic: the same rows give the same bytes (no timestamps; floats are rounded
by the report before they get here), so a report rerun over unchanged annotations rewrites
identical files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bridge.errors import ConfigError

ColumnType = Literal["str", "int", "float", "bool"]
FORMATS: tuple[str, ...] = ("csv", "parquet")


class ParquetUnavailable(ConfigError):
    """Parquet output was asked for but ``pyarrow`` is not installed."""


@dataclass(frozen=True)
class Table:
    """Named, typed columns and rows (tuples in column order); ``None`` is a missing value."""

    columns: tuple[tuple[str, ColumnType], ...]
    rows: Sequence[tuple[Any, ...]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(table: Table) -> bytes:
    """UTF-8 CSV with a header row, ``\\n`` line ends, empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.names)
    for row in table.rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def require_parquet() -> None:
    if not parquet_available():
        raise ParquetUnavailable("Parquet output needs the 'pyarrow' package, which is not installed: "
                                 "pip install pyarrow (or use format=csv)")


def to_parquet(table: Table) -> bytes:
    """One Parquet file (zstd, no pandas metadata); raises ``ParquetUnavailable`` without pyarrow."""
    require_parquet()
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    arrays = [
        pa.array([None if isinstance(row[i], float) and math.isnan(row[i]) else row[i] for row in table.rows],
                 type=types[kind])
        for i, (_, kind) in enumerate(table.columns)
    ]
    schema = pa.schema([pa.field(name, types[kind]) for name, kind in table.columns])
    out = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), out, compression="zstd")
    return out.getvalue()


def encode(table: Table, fmt: str) -> bytes:
    if fmt == "csv":
        return to_csv(table)
    if fmt == "parquet":
        return to_parquet(table)
    raise ValueError(f"table format must be one of {', '.join(FORMATS)}, got {fmt!r}")
