"""The ``cover_report`` pipeline run inline against the CVAT double, and its route parameters."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from pydantic import ValidationError

from bridge.cvat.types import Shape
from bridge.errors import LabelMismatch, PermanentError
from bridge.events import Trigger
from bridge.pipelines.base import MemoryProgress, StepContext
from bridge.pipelines.params import CoverReportParams
from bridge.pipelines.registry import ROUTES, load_pipeline, parse_params, trigger_kind
from bridge.reports.tables import ParquetUnavailable
from tests.reports.conftest import draw_corals, make_chain, png, standard_shapes


def context(settings, client, task_id: int, project_id: int, params: CoverReportParams) -> StepContext:
    trigger = Trigger(kind="task_completed", resource="task", resource_id=task_id, project_id=project_id,
                      task_id=task_id, event="update:task")
    return StepContext(trigger=trigger, params=params, settings=settings, cvat=client, nuclio=None,  # type: ignore[arg-type]
                       progress=MemoryProgress())


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_route_parameters_and_trigger():
    assert any(r.path == "/webhooks/cover-report" and r.pipeline == "cover_report" for r in ROUTES)
    params = parse_params("cover_report", {"points": "50", "point_method": "grid", "quadrat_cm": "100",
                                           "plot": "false"})
    assert params == CoverReportParams(points=50, point_method="grid", quadrat_cm=100.0, plot=False)
    assert trigger_kind("cover_report", params) == "task_completed"
    for bad in ({"points": "-1"}, {"point_method": "spiral"}, {"quadrat_cm": "0"}, {"format": "xlsx"}, {"x": "1"}):
        with pytest.raises(ValidationError):
            parse_params("cover_report", bad)
    assert load_pipeline("cover_report").params_model is CoverReportParams


def test_pipeline_writes_the_report_and_notes_where(cvat, client, make_settings):
    settings = make_settings()
    chain = make_chain(cvat, "pipe")
    draw_corals(chain, standard_shapes(chain))
    ctx = context(settings, client, chain.coral, chain.coral_project, CoverReportParams(quadrat_cm=50.0))
    result = load_pipeline("cover_report").run(ctx)
    out = settings.data_dir / "reports" / f"task-{chain.coral}"
    assert ctx.progress.notes["report_dir"] == str(out)
    assert sorted(ctx.progress.notes["report_files"]) == sorted(p.name for p in out.iterdir())
    assert (result.frames_total, result.frames_failed, ctx.progress.total, ctx.progress.done) == (3, 0, 3, 3)
    assert "3 of 3 quadrats" in result.summary and "Acropora" in result.summary

    rows = {r["source_name"]: r for r in read_csv(out / "cover_per_quadrat.csv")}
    assert sorted(rows) == ["reef_a.png", "reef_b.png", "reef_c.png"]
    a, b, c = rows["reef_a.png"], rows["reef_b.png"], rows["reef_c.png"]
    assert (a["cover_pct:Acropora"], a["cover_pct:Porites"], a["cover_pct:Pocillopora"]) == ("7.0", "4.0", "0.0")
    assert (b["cover_pct:Acropora"], b["cover_pct:Pocillopora"], b["unlabeled_pct"]) == ("8.0", "2.0", "90.0")
    assert c["unlabeled_pct"] == "100.0"
    assert {r["source_task_id"] for r in rows.values()} == {str(chain.source)}
    assert (a["source_frame"], b["source_frame"], c["source_frame"]) == ("1", "0", "2")
    points = read_csv(out / "coralnet_points.csv")
    assert len(points) == 300 and set(points[0]) == {"Name", "Row", "Column", "Label"}
    assert {p["Label"] for p in points} <= {"", "Acropora", "Porites", "Pocillopora"}
    meta = json.loads((out / "report.json").read_text())
    assert meta["tasks"][0]["lineage"]["task_ids"] == [chain.source, chain.warped, chain.coral]
    assert meta["tasks"][0]["ignored_shapes"] == {"rectangle": 1}

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    load_pipeline("cover_report").run(context(settings, client, chain.coral, chain.coral_project,
                                              CoverReportParams(quadrat_cm=50.0)))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # rerun: the same files


def test_a_bad_shape_is_a_frame_error_and_the_rest_is_reported(cvat, client, make_settings):
    settings = make_settings()
    chain = make_chain(cvat, "bad mask")
    shapes = standard_shapes(chain)
    # a mask whose bbox lies outside the 100 × 100 frame (the double, like CVAT, does not check it)
    shapes[2] = [Shape("mask", cvat.label_id(chain.coral_project, "Pocillopora"), 2, [0.0, 4.0, 150.0, 150.0,
                                                                                         151.0, 151.0])]
    draw_corals(chain, shapes)
    ctx = context(settings, client, chain.coral, chain.coral_project, CoverReportParams(format="parquet"))
    result = load_pipeline("cover_report").run(ctx)
    assert result.frames_failed == 1 and result.partial
    assert list(ctx.progress.errors) == [2] and "does not fit the 100×100 frame" in ctx.progress.errors[2]
    out = settings.data_dir / "reports" / f"task-{chain.coral}"
    assert (out / "cover_per_quadrat.parquet").is_file() and not (out / "cover_per_quadrat.csv").exists()


def test_nothing_measurable_fails_the_job(cvat, client, make_settings):
    settings = make_settings()
    p = cvat.create_project("no areas", [{"name": "pt", "type": "points"}])
    task = cvat.create_task(p, "t", [("a.png", png(10, 10, 0))])
    with pytest.raises(LabelMismatch):
        load_pipeline("cover_report").run(context(settings, client, task, p, CoverReportParams()))
    p2 = cvat.create_project("all bad", [{"name": "A", "type": "mask"}])
    task2 = cvat.create_task(p2, "t", [("a.png", png(10, 10, 0))])
    client.create_shapes(cvat.job_ids(task2)[0], [Shape("mask", cvat.label_id(p2, "A"), 0, [0, 1, 20, 20, 20, 20])])
    with pytest.raises(PermanentError, match="no quadrat of task"):
        load_pipeline("cover_report").run(context(settings, client, task2, p2, CoverReportParams()))
    assert not (settings.data_dir / "reports" / f"task-{task2}").exists()


def test_parquet_without_pyarrow_fails_before_reading_cvat(monkeypatch, make_settings):
    monkeypatch.setitem(sys.modules, "pyarrow", None)

    class NoCvat:
        def __getattr__(self, name):
            raise AssertionError(f"CVAT was called ({name})")

    ctx = context(make_settings(), NoCvat(), 1, 1, CoverReportParams(format="parquet"))
    with pytest.raises(ParquetUnavailable, match="pyarrow"):
        load_pipeline("cover_report").run(ctx)
