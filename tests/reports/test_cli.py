"""``bridge report`` against the CVAT double."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bridge.cli import main
from bridge.reports import cli as report_cli
from bridge.reports.points import POINT_METHODS
from bridge.reports.tables import FORMATS
from tests.reports.conftest import TOKEN, draw_corals, make_chain, standard_shapes


@pytest.fixture
def env(cvat, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("WEBHOOK_SECRET", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("CVAT_URL", cvat.url)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("BRIDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_choices_match_the_report_modules():
    assert report_cli.POINT_METHODS == POINT_METHODS and report_cli.FORMATS == FORMATS


def test_report_for_a_task_into_the_data_dir(cvat, env, capsys):
    chain = make_chain(cvat, "cli")
    draw_corals(chain, standard_shapes(chain))
    assert main(["report", "--task", str(chain.coral), "--points", "20", "--plot"]) == 0
    out = env / "data" / "reports" / f"task-{chain.coral}"
    printed = capsys.readouterr().out
    assert "3 of 3 quadrats measured" in printed and str(out) in printed and "Acropora" in printed
    assert (out / "cover.png").is_file()
    rows = list(csv.DictReader(io.StringIO((out / "coralnet_points.csv").read_text())))
    assert len(rows) == 60
    assert json.loads((out / "report.json").read_text())["params"]["points"] == 20


def test_report_for_a_project_as_parquet(cvat, env):
    pq = pytest.importorskip("pyarrow.parquet")
    chain = make_chain(cvat, "cli project")
    draw_corals(chain, standard_shapes(chain))
    assert main(["report", "--project", str(chain.coral_project), "--format", "parquet", "--out",
                 str(env / "out"), "--method", "grid", "--quadrat-cm", "50"]) == 0
    table = pq.read_table(env / "out" / "cover_per_genus.parquet").to_pylist()
    acro = next(r for r in table if r["label"] == "Acropora")
    assert acro["quadrats"] == 3 and acro["mean_cover_pct"] == round((7 + 8 + 0) / 3, 4)
    assert acro["area_cm2"] == round(1500 * 2500 / 10000, 4)


def test_bad_arguments_and_unknown_task(cvat, env, capsys):
    assert main(["report", "--task", "1", "--points", "-5"]) == 2
    assert main(["report", "--task", "987654"]) == 1
    assert "987654" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--task", "1", "--project", "2"])
