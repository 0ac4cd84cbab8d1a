"""Reading quadrats from CVAT (the double, through the real cvat-sdk client) and writing report files."""

from __future__ import annotations

import pytest

from bridge.cvat.types import TaskInfo
from bridge.errors import LabelMismatch, NotFound, PermanentError
from bridge.reports.collect import (
    build_and_write,
    collect_task,
    existing_report_files,
    lineage,
    make_report,
    parent_task_id,
    project_task_ids,
    report_dir,
    write_report,
)
from bridge.reports.cover import PointPlan
from bridge.reports.report import ReportOptions
from tests.reports.conftest import SIDE, draw_corals, make_chain, png, standard_shapes


def test_parent_task_id_reads_the_last_marker():
    assert parent_task_id("site 7 · quadrat (from task #12) · grid removed (from task #13)") == 13
    assert parent_task_id("site 7 · quadrat (from task #12)") == 12
    assert parent_task_id("site 7 (from task #x)") is None and parent_task_id("plain") is None


def test_lineage_follows_names_back_to_the_source(cvat, client):
    chain = make_chain(cvat, "lineage")
    lin = lineage(client, client.get_task(chain.coral))
    assert [t.id for t in lin.tasks] == [chain.source, chain.warped, chain.coral]
    assert lin.source_task_id == chain.source and lin.missing is None


def test_lineage_stops_at_a_missing_or_looping_task(cvat, client):
    p = cvat.create_project("orphans", [{"name": "A", "type": "polygon"}])
    orphan = cvat.create_task(p, "x · grid removed (from task #987654)", [("a.png", png(10, 10, 0))])
    lin = lineage(client, client.get_task(orphan))
    assert lin.missing == 987654 and lin.source_task_id == 987654 and "no longer exists" in lin.note
    loop = TaskInfo(5, "y (from task #5)", p, 1, "", 0, "")
    assert "loop" in lineage(client, loop).note


def test_collect_task_reads_area_shapes_and_source_frames(cvat, client):
    chain = make_chain(cvat, "collect")
    draw_corals(chain, standard_shapes(chain))
    data = collect_task(client, chain.coral)
    assert data.labels == ["Acropora", "Porites", "Pocillopora"]  # area labels only, in CVAT order
    assert data.ignored_shapes == {"rectangle": 1}
    by_name = {q.name: q for q in data.quadrats}
    assert sorted(by_name) == ["reef_a.png", "reef_b.png", "reef_c.png"]
    # source photos: the corner task holds reef_b, reef_a, reef_c in that order
    assert {n: q.info["source_frame"] for n, q in by_name.items()} == {"reef_a.png": 1, "reef_b.png": 0,
                                                                       "reef_c.png": 2}
    assert all(q.info["source_task_id"] == chain.source and q.info["task_id"] == chain.coral for q in data.quadrats)
    a = by_name["reef_a.png"]
    assert (a.width, a.height, a.info["frame"]) == (SIDE, SIDE, 0)
    assert sorted(r.label for r in a.regions) == ["Acropora", "Porites"]
    assert {r.type for r in by_name["reef_b.png"].regions} == {"polygon", "mask"}
    assert by_name["reef_c.png"].regions == ()


def test_a_task_without_area_labels_is_refused(cvat, client):
    p = cvat.create_project("corners only", [{"name": "pt", "type": "points"}])
    task = cvat.create_task(p, "t", [("a.png", png(10, 10, 0))])
    with pytest.raises(LabelMismatch, match="no polygon or mask labels"):
        collect_task(client, task)
    with pytest.raises(NotFound):
        collect_task(client, 987654)


def test_project_report_covers_every_task(cvat, client, tmp_path):
    chain = make_chain(cvat, "project")
    draw_corals(chain, standard_shapes(chain))
    second = cvat.create_task(chain.coral_project, "second batch", [("reef_z.png", png(SIDE, SIDE, 5))])
    assert project_task_ids(client, chain.coral_project) == [chain.coral, second]
    report, meta = make_report(client, ReportOptions(PointPlan(10)), project_id=chain.coral_project)
    assert [r.quadrat.name for r in report.results] == ["reef_b.png", "reef_a.png", "reef_c.png", "reef_z.png"]
    assert meta["scope"] == {"project_id": chain.coral_project, "completed_only": False}
    assert [t["task_id"] for t in meta["tasks"]] == [chain.coral, second]
    assert "repeated_image_names" not in meta
    third = cvat.create_task(chain.coral_project, "redo", [("reef_a.png", png(SIDE, SIDE, 6))])
    _, meta = make_report(client, ReportOptions(PointPlan(10)), project_id=chain.coral_project)
    assert meta["repeated_image_names"] == ["reef_a.png"] and len(meta["tasks"]) == 3 and third
    with pytest.raises(PermanentError, match="no completed tasks"):
        make_report(client, ReportOptions(), project_id=chain.coral_project, completed_only=True)
    with pytest.raises(NotFound):
        project_task_ids(client, 987654)


def test_write_report_is_atomic_idempotent_and_drops_stale_files(tmp_path):
    out = report_dir(tmp_path, task_id=3)
    assert out == tmp_path / "reports" / "task-3"
    first = write_report({"cover_long.csv": b"a\n", "report.json": b"{}\n"}, out)
    mtime = first[0].stat().st_mtime_ns
    (out / "notes.txt").write_text("mine")
    write_report({"cover_long.csv": b"a\n", "report.json": b"{}\n"}, out)
    assert first[0].stat().st_mtime_ns == mtime  # unchanged bytes: not rewritten
    write_report({"cover_long.parquet": b"P", "report.json": b"{}\n"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["cover_long.parquet", "notes.txt", "report.json"]
    assert [p.name for p in existing_report_files(tmp_path, task_id=3)] == ["cover_long.parquet", "report.json"]
    assert existing_report_files(tmp_path, project_id=3) == []


def test_build_and_write_twice_gives_identical_files(cvat, client, tmp_path):
    chain = make_chain(cvat, "twice")
    draw_corals(chain, standard_shapes(chain))
    options = ReportOptions(PointPlan(50, "stratified", 4), quadrat_cm=25.0, plot=True)
    _, paths = build_and_write(client, options, tmp_path / "r", task_id=chain.coral)
    before = {p.name: p.read_bytes() for p in paths}
    _, again = build_and_write(client, options, tmp_path / "r", task_id=chain.coral)
    assert {p.name: p.read_bytes() for p in again} == before
    assert "cover.png" in before and "coralnet_points.csv" in before
