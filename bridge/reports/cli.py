"""``bridge report --project P | --task T``: cover report files from CVAT, printed paths and a per-genus table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.config import Settings

# Kept literal so that ``bridge --help`` does not import numpy/OpenCV (tests check they match).
POINT_METHODS = ("stratified", "random", "grid")
FORMATS = ("csv", "parquet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--task", type=int, metavar="T", help="a coral-stage task")
    scope.add_argument("--project", type=int, metavar="P", help="every task of a coral-stage project")
    p.add_argument("--points", type=int, default=100, help="point-intercept points per quadrat (default 100)")
    p.add_argument("--method", choices=POINT_METHODS, default="stratified", help="point layout")
    p.add_argument("--seed", type=int, default=0, help="seed of the point positions")
    p.add_argument("--quadrat-cm", type=float, help="quadrat side in cm (adds areas in cm²)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="table format (parquet needs pyarrow)")
    p.add_argument("--plot", action="store_true", help="also write cover.png (stacked bars per quadrat)")
    p.add_argument("--completed-only", action="store_true", help="with --project: only completed tasks")
    p.add_argument("--out", type=Path, help="output folder (default <data_dir>/reports/task-T or project-P)")
    p.add_argument("--workers", type=int, default=1, help="threads measuring quadrats")


def run_report(settings: Settings, args: argparse.Namespace) -> int:
    from bridge.cvat.client import CvatClient
    from bridge.reports.collect import build_and_write, report_dir
    from bridge.reports.cover import PointPlan
    from bridge.reports.report import ReportOptions, per_genus_table

    if args.points < 0 or args.seed < 0 or args.workers < 1:
        print("bridge report: --points and --seed must be >= 0, --workers >= 1", file=sys.stderr)
        return 2
    if args.quadrat_cm is not None and not args.quadrat_cm > 0:
        print("bridge report: --quadrat-cm must be positive", file=sys.stderr)
        return 2
    options = ReportOptions(PointPlan(args.points, args.method, args.seed), args.quadrat_cm, args.format, args.plot)
    out = args.out or report_dir(settings.data_dir, task_id=args.task, project_id=args.project)
    try:
        options.check()
        with CvatClient.from_settings(settings) as cvat:
            report, paths = build_and_write(cvat, options, out, task_id=args.task, project_id=args.project,
                                            completed_only=args.completed_only, workers=args.workers)
    except (BridgeError, ValueError) as exc:
        print(f"bridge report: {exc}", file=sys.stderr)
        return 1
    print(f"{len(report.covers)} of {len(report.results)} quadrats measured; files in {out}:")
    for path in paths:
        print(f"  {path.name}")
    for f in report.failures:
        print(f"  FAILED {f.quadrat.name} (task {f.quadrat.info.get('task_id')}): {f.reason}")
    table = per_genus_table(report)
    print(f"\n{'label':<24} {'quadrats':>8} {'mean %':>8} {'sd %':>8} {'points %':>9}")
    for row in table.rows:
        label, n, _present, mean, sd = row[:5]
        print(f"{str(label)[:24]:<24} {n:>8} {_num(mean):>8} {_num(sd):>8} {_num(row[-1]):>9}")
    return 1 if report.failures else 0


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
