"""A cover report: measure every quadrat, then build the tables and files (pure: bytes out).

Tables (``<name>.csv`` or ``<name>.parquet``):

- ``cover_per_quadrat``: one row per quadrat (= per source photo): where it comes from, size, the
  labeled / unlabeled share and one ``cover_pct:<label>`` column per label; ``error`` says why a
  quadrat could not be measured (its numbers are then empty).
- ``cover_long``: one row per quadrat × label (``unlabeled`` included): area in px (and cm² when the
  quadrat side is known), area cover, and the point-intercept estimate with its Wilson 95 % interval.
- ``cover_per_genus``: one row per label over all measured quadrats: mean / SD / SE / min / max of
  the area cover (the quadrat is the sampling unit), number of quadrats where it occurs, total area,
  mean point-intercept cover.

Plus ``coralnet_points.csv`` (``Name, Row, Column, Label``: CoralNet's annotation-upload CSV, rows
and columns 0-based pixels of the quadrat frame, empty label for a point on no shape),
``cover.png`` (stacked bars, optional) and ``report.json`` (parameters, labels, failures, scope).
Percentages are rounded to 1e-4 pp, areas in cm² to 1e-4 cm².
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BadGeometry
from bridge.reports.cover import Cover, PointPlan, Quadrat, measure
from bridge.reports.plot import stacked_bars_png
from bridge.reports.points import POINT_METHODS, wilson_interval
from bridge.reports.tables import FORMATS, ColumnType, Table, encode, require_parquet, to_csv

UNLABELED = "unlabeled"
INFO_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("source_name", "str"), ("source_task_id", "int"), ("source_frame", "int"),
    ("task_id", "int"), ("frame", "int"), ("frame_name", "str"),
)
REPORT_VERSION = 1


@dataclass(frozen=True)
class ReportOptions:
    """``quadrat_cm``: side of the (square) quadrat in cm, for areas in cm² (None: px only)."""

    points: PointPlan = field(default_factory=PointPlan)
    quadrat_cm: float | None = None
    format: str = "csv"
    plot: bool = False
    colors: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise on options that cannot work (before any CVAT read)."""
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.format == "parquet":
            require_parquet()
        if self.points.method not in POINT_METHODS:
            raise ValueError(f"point method must be one of {', '.join(POINT_METHODS)}, got {self.points.method!r}")
        if self.points.count < 0:
            raise ValueError("points must be >= 0")
        if self.quadrat_cm is not None and not self.quadrat_cm > 0:
            raise ValueError("quadrat_cm must be positive")


@dataclass(frozen=True)
class Failure:
    quadrat: Quadrat
    reason: str


@dataclass
class CoverReport:
    labels: list[str]
    options: ReportOptions
    results: list[Cover | Failure]

    @property
    def covers(self) -> list[Cover]:
        return [r for r in self.results if isinstance(r, Cover)]

    @property
    def failures(self) -> list[Failure]:
        return [r for r in self.results if isinstance(r, Failure)]

    @property
    def unlabeled_name(self) -> str:
        return UNLABELED if UNLABELED not in self.labels else f"{UNLABELED} (no shape)"


def _measure_one(quadrat: Quadrat, labels: Sequence[str], plan: PointPlan) -> Cover | Failure:
    try:
        return measure(quadrat, labels, plan)
    except (BadGeometry, ValueError) as exc:
        return Failure(quadrat, str(exc))


def build_report(quadrats: Iterable[Quadrat], labels: Sequence[str], options: ReportOptions, *,
                 workers: int = 1, on_quadrat: Callable[[Cover | Failure], None] | None = None) -> CoverReport:
    """Measure every quadrat (``workers`` threads); a quadrat with a bad shape becomes a ``Failure``."""
    options.check()
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError("label names must be unique")
    items = list(quadrats)
    results: list[Cover | Failure] = []

    def one(q: Quadrat) -> Cover | Failure:
        return _measure_one(q, labels, options.points)

    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cover") as pool:
            for result in pool.map(one, items):
                results.append(result)
                if on_quadrat:
                    on_quadrat(result)
    else:
        for q in items:
            results.append(one(q))
            if on_quadrat:
                on_quadrat(results[-1])
    return CoverReport(labels, options, results)


# --- numbers ------------------------------------------------------------------------------------------
def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 4) if whole else math.nan


def _cm2(px: int, quadrat: Quadrat, side_cm: float | None) -> float | None:
    if side_cm is None:
        return None
    return round(px * side_cm * side_cm / (quadrat.width * quadrat.height), 4)


def _info(q: Quadrat) -> tuple[Any, ...]:
    return tuple(q.info.get(name, q.name if name == "frame_name" else None) for name, _ in INFO_COLUMNS)


def per_quadrat_table(report: CoverReport) -> Table:
    labels = report.labels
    columns = (*INFO_COLUMNS, ("width_px", "int"), ("height_px", "int"), ("quadrat_cm", "float"),
               ("points", "int"), ("labeled_pct", "float"), ("unlabeled_pct", "float"),
               *((f"cover_pct:{lb}", "float") for lb in labels), ("error", "str"))
    rows = []
    side = None if report.options.quadrat_cm is None else float(report.options.quadrat_cm)
    for r in report.results:
        q = r.quadrat
        head = (*_info(q), q.width, q.height, side)
        if isinstance(r, Failure):
            rows.append((*head, None, None, None, *(None for _ in labels), r.reason))
            continue
        rows.append((*head, int(r.point_rows.size), _pct(r.total - r.unlabeled, r.total), _pct(r.unlabeled, r.total),
                     *(_pct(r.pixels[lb], r.total) for lb in labels), None))
    return Table(columns, rows)


def long_table(report: CoverReport) -> Table:
    columns = (*INFO_COLUMNS, ("label", "str"), ("area_px", "int"), ("area_cm2", "float"), ("cover_pct", "float"),
               ("points_hit", "int"), ("points", "int"), ("point_cover_pct", "float"),
               ("ci95_low_pct", "float"), ("ci95_high_pct", "float"))
    rows = []
    for c in report.covers:
        hits = c.point_hits(report.labels)
        n = int(c.point_rows.size)
        for lb, px, hit in [*((lb, c.pixels[lb], hits[lb]) for lb in report.labels),
                            (report.unlabeled_name, c.unlabeled, hits[""])]:
            low, high = wilson_interval(hit, n)
            rows.append((*_info(c.quadrat), lb, px, _cm2(px, c.quadrat, report.options.quadrat_cm),
                         _pct(px, c.total), hit, n, _pct(hit, n), round(100 * low, 4) if n else None,
                         round(100 * high, 4) if n else None))
    return Table(columns, rows)


def per_genus_table(report: CoverReport) -> Table:
    columns = (("label", "str"), ("quadrats", "int"), ("quadrats_present", "int"), ("mean_cover_pct", "float"),
               ("sd_cover_pct", "float"), ("se_cover_pct", "float"), ("min_cover_pct", "float"),
               ("max_cover_pct", "float"), ("area_px", "int"), ("area_cm2", "float"),
               ("point_mean_cover_pct", "float"))
    covers = report.covers
    side = report.options.quadrat_cm
    hits = [c.point_hits(report.labels) for c in covers]
    rows = []
    for lb in [*report.labels, report.unlabeled_name]:
        key = "" if lb == report.unlabeled_name else lb
        px = [c.unlabeled if not key else c.pixels[key] for c in covers]
        pct = [100.0 * p / c.total for p, c in zip(px, covers, strict=True)]
        pts = [100.0 * h[key] / c.point_rows.size for h, c in zip(hits, covers, strict=True) if c.point_rows.size]
        n = len(pct)
        mean = sum(pct) / n if n else math.nan
        sd = math.sqrt(sum((p - mean) ** 2 for p in pct) / (n - 1)) if n > 1 else math.nan
        area_cm2 = (round(sum(p * side * side / (c.total) for p, c in zip(px, covers, strict=True)), 4)
                    if side is not None else None)
        rows.append((lb, n, sum(1 for p in px if p > 0), _r(mean), _r(sd), _r(sd / math.sqrt(n) if n > 1 else math.nan),
                     _r(min(pct, default=math.nan)), _r(max(pct, default=math.nan)), sum(px), area_cm2,
                     _r(sum(pts) / len(pts) if pts else math.nan)))
    return Table(columns, rows)


def _r(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def coralnet_table(report: CoverReport) -> Table:
    """CoralNet's point CSV: image name, 0-based pixel row and column, label (empty = no shape)."""
    columns = (("Name", "str"), ("Row", "int"), ("Column", "int"), ("Label", "str"))
    names = ["", *report.labels]
    rows = []
    for c in report.covers:
        name = c.quadrat.info.get("frame_name") or c.quadrat.name
        for row, col, idx in zip(c.point_rows.tolist(), c.point_cols.tolist(), c.point_labels.tolist(), strict=True):
            rows.append((name, row, col, names[idx]))
    return Table(columns, rows)


# --- files ----------------------------------------------------------------------------------------------
def report_files(report: CoverReport, meta: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """File name → content for the whole report, deterministic for the same input."""
    fmt = report.options.format
    ext = "csv" if fmt == "csv" else "parquet"
    files = {
        f"cover_per_quadrat.{ext}": encode(per_quadrat_table(report), fmt),
        f"cover_long.{ext}": encode(long_table(report), fmt),
        f"cover_per_genus.{ext}": encode(per_genus_table(report), fmt),
        "coralnet_points.csv": to_csv(coralnet_table(report)),
    }
    if report.options.plot:
        names = [str(r.quadrat.info.get("source_name") or r.quadrat.name) for r in report.results]
        covers = [None if isinstance(r, Failure) else {lb: 100.0 * r.pixels[lb] / r.total for lb in report.labels}
                  for r in report.results]
        files["cover.png"] = stacked_bars_png(names, covers, report.labels, report.options.colors)
    summary = {
        "report": "coral cover",
        "version": REPORT_VERSION,
        "labels": report.labels,
        "unlabeled": report.unlabeled_name,
        "quadrats": len(report.results),
        "measured": len(report.covers),
        "failed": [{**dict(zip([k for k, _ in INFO_COLUMNS], _info(f.quadrat), strict=True)), "reason": f.reason}
                   for f in report.failures],
        "params": {"points": report.options.points.count, "point_method": report.options.points.method,
                   "seed": report.options.points.seed, "quadrat_cm": report.options.quadrat_cm,
                   "format": fmt, "plot": report.options.plot},
        "overlaps": "one label per pixel: the topmost shape (higher z_order, then higher shape id) wins; "
                    "same-label shapes count as their union",
        "pixels": "a polygon covers the pixels whose centre lies inside or on it (vertex (x, y) = centre of "
                  "pixel (x, y)); a mask covers its set pixels; the frame is the quadrat",
        "files": sorted([*files, "report.json"]),
        **(meta or {}),
    }
    files["report.json"] = (json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    return files
