"""Report tables and files from measured quadrats (pure: no CVAT)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from bridge.reports.cover import PointPlan, Quadrat, Region, label_map
from bridge.reports.points import wilson_interval
from bridge.reports.report import (
    Failure,
    ReportOptions,
    build_report,
    coralnet_table,
    long_table,
    per_genus_table,
    per_quadrat_table,
    report_files,
)
from bridge.reports.tables import ParquetUnavailable

A = [10, 10, 49, 10, 49, 29, 10, 29]  # 40 × 20 = 800 px
B = [40, 20, 59, 20, 59, 39, 40, 39]  # 20 × 20 = 400 px, over A where they meet (z_order 1)


def info(frame: int, name: str) -> dict:
    return {"source_name": name, "source_task_id": 1, "source_frame": frame + 3, "task_id": 7, "frame": frame,
            "frame_name": name}


@pytest.fixture
def report():
    q0 = Quadrat("a.jpg", 100, 100, (Region("Acropora", "polygon", A), Region("Porites", "polygon", B, z_order=1)),
                 info(0, "a.jpg"))
    q1 = Quadrat("b.jpg", 100, 100, (Region("Acropora", "polygon", A),), info(1, "b.jpg"))
    bad = Quadrat("c.jpg", 100, 100, (Region("Porites", "mask", [5, 0, 0, 1, 1]),), info(2, "c.jpg"))
    options = ReportOptions(PointPlan(25, "stratified", 1), quadrat_cm=50.0, plot=True)
    return build_report([q0, q1, bad], ["Acropora", "Porites"], options)


def rows(table) -> list[dict]:
    return [dict(zip(table.names, r, strict=True)) for r in table.rows]


def test_per_quadrat_rows_sum_to_100_and_say_why_a_quadrat_failed(report):
    t = rows(per_quadrat_table(report))
    assert [r["frame_name"] for r in t] == ["a.jpg", "b.jpg", "c.jpg"]
    first = t[0]
    assert first["cover_pct:Acropora"] == 7.0 and first["cover_pct:Porites"] == 4.0  # 800 − 100 overlap, 400
    assert first["labeled_pct"] + first["unlabeled_pct"] == 100.0
    assert first["source_frame"] == 3 and first["points"] == 25 and first["quadrat_cm"] == 50.0
    assert t[1]["cover_pct:Acropora"] == 8.0 and t[1]["cover_pct:Porites"] == 0.0
    assert t[2]["labeled_pct"] is None and "runs cover" in t[2]["error"]
    assert isinstance(report.results[2], Failure)


def test_long_rows_carry_area_points_and_wilson_interval(report):
    t = rows(long_table(report))
    assert len(t) == 2 * 3  # measured quadrats × (labels + unlabeled)
    acro = t[0]
    assert (acro["label"], acro["area_px"], acro["area_cm2"], acro["cover_pct"]) == ("Acropora", 700, 175.0, 7.0)
    low, high = wilson_interval(acro["points_hit"], 25)
    assert acro["ci95_low_pct"] == round(100 * low, 4) and acro["ci95_high_pct"] == round(100 * high, 4)
    assert sum(r["points_hit"] for r in t[:3]) == 25 and t[2]["label"] == "unlabeled"
    assert sum(r["area_px"] for r in t[:3]) == 100 * 100


def test_per_genus_summarises_over_measured_quadrats(report):
    t = {r["label"]: r for r in rows(per_genus_table(report))}
    acro = t["Acropora"]
    assert acro["quadrats"] == 2 and acro["quadrats_present"] == 2
    assert acro["mean_cover_pct"] == 7.5 and acro["sd_cover_pct"] == round(math.sqrt(0.5), 4)
    assert acro["se_cover_pct"] == 0.5 and acro["min_cover_pct"] == 7.0 and acro["max_cover_pct"] == 8.0
    assert acro["area_px"] == 1500 and acro["area_cm2"] == 375.0
    assert t["Porites"]["quadrats_present"] == 1
    assert t["unlabeled"]["mean_cover_pct"] == 100 - 7.5 - 2.0


def test_coralnet_points_are_the_labels_under_the_points(report):
    t = coralnet_table(report)
    assert t.names == ["Name", "Row", "Column", "Label"]
    assert len(t.rows) == 2 * 25
    q0 = report.results[0]
    lmap, _ = label_map(q0.quadrat, report.labels)
    names = ["", *report.labels]
    for name, row, col, label in t.rows[:25]:
        assert name == "a.jpg" and 0 <= row < 100 and 0 <= col < 100 and label == names[lmap[row, col]]


def test_files_are_deterministic_and_complete(report):
    files = report_files(report, {"scope": {"task_id": 7}})
    assert sorted(files) == ["coralnet_points.csv", "cover.png", "cover_long.csv", "cover_per_genus.csv",
                             "cover_per_quadrat.csv", "report.json"]
    assert report_files(report, {"scope": {"task_id": 7}}) == files
    meta = json.loads(files["report.json"])
    assert meta["scope"] == {"task_id": 7} and meta["measured"] == 2 and meta["quadrats"] == 3
    assert meta["failed"][0]["frame_name"] == "c.jpg" and meta["params"]["points"] == 25
    header = next(csv.reader(io.StringIO(files["coralnet_points.csv"].decode())))
    assert header == ["Name", "Row", "Column", "Label"]


def test_parquet_tables_hold_the_same_rows_as_csv(report):
    pq = pytest.importorskip("pyarrow.parquet")
    options = ReportOptions(report.options.points, report.options.quadrat_cm, "parquet", False)
    as_parquet = build_report([r.quadrat for r in report.results], report.labels, options)
    files = report_files(as_parquet)
    assert "cover.png" not in files and "coralnet_points.csv" in files
    table = pq.read_table(io.BytesIO(files["cover_per_quadrat.parquet"]))
    assert table.to_pylist() == rows(per_quadrat_table(report))


def test_options_are_checked_before_work(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ParquetUnavailable):
        build_report([], ["A"], ReportOptions(format="parquet"))
    with pytest.raises(ValueError, match="point method"):
        build_report([], ["A"], ReportOptions(PointPlan(10, "spiral")))
    with pytest.raises(ValueError, match="unique"):
        build_report([], ["A", "A"], ReportOptions())


def test_threads_give_the_same_report():
    rng = np.random.default_rng(0)
    quadrats = [Quadrat(f"q{i}", 300, 300, tuple(
        Region(str(rng.integers(3)), "polygon", (rng.uniform(0, 300, 8)).tolist(), order=j) for j in range(10)))
        for i in range(12)]
    one = report_files(build_report(quadrats, ["0", "1", "2"], ReportOptions(plot=True)))
    two = report_files(build_report(quadrats, ["0", "1", "2"], ReportOptions(plot=True), workers=3))
    assert one == two


def test_a_label_named_unlabeled_does_not_collide():
    q = Quadrat("u", 10, 10, (Region("unlabeled", "polygon", [0, 0, 4, 0, 4, 4, 0, 4]),))
    r = build_report([q], ["unlabeled"], ReportOptions(PointPlan(0)))
    assert [row[0] for row in per_genus_table(r).rows] == ["unlabeled", "unlabeled (no shape)"]
