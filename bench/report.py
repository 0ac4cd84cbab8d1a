"""Cover report benchmark: 1,000 quadrats of 2000 × 2000 px with 30 corals each (goal: < 30 s on 2 cores).

Run: ``.venv/bin/python bench/report.py [--quadrats 1000] [--size 2000] [--corals 30] [--points 100]``

Rows, measured side by side in one run:

- measure (label map, overlaps, pixel and point counts) with 1 thread, 2 threads, and 2 processes;
- the report files: CSV tables + CoralNet points + PNG chart, and the Parquet tables;
- the whole report (measure with 2 threads + CSV files + PNG), which is what ``bridge report`` runs;
- a naive baseline on a subset: one full-frame ``polygon_to_mask`` per shape, painted in drawing order
  (ratio = naive ÷ ours per quadrat);
- the accuracy on these quadrats: max |area cover − exact polygon area| per genus, in percentage points.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.geometry.polygons import polygon_to_mask  # noqa: E402
from bridge.reports.cover import PointPlan, Quadrat, measure  # noqa: E402
from bridge.reports.report import ReportOptions, build_report, report_files  # noqa: E402
from bridge.reports.tables import parquet_available  # noqa: E402
from tests.reports.synthetic import GENERA, quadrat  # noqa: E402


def make_quadrats(n: int, size: int, corals: int) -> tuple[list[Quadrat], list[dict[str, float]]]:
    rng = np.random.default_rng(15)
    made = [quadrat(rng, f"site_2024_q{i:04d}.jpg", size=size, corals=corals) for i in range(n)]
    return [q for q, _ in made], [e for _, e in made]


def naive(q: Quadrat, labels: list[str]) -> np.ndarray:
    """Full-frame mask per shape (bridge.geometry.polygon_to_mask), painted bottom-up, then counted."""
    lmap = np.zeros((q.height, q.width), np.uint8)
    index = {name: i + 1 for i, name in enumerate(labels)}
    for r in sorted(q.regions, key=lambda r: (r.z_order, r.order)):
        lmap[polygon_to_mask(r.points, (q.width, q.height))] = index[r.label]
    return np.bincount(lmap.ravel(), minlength=len(labels) + 1)


def _measure_chunk(args: tuple[list[Quadrat], int]) -> int:
    chunk, points = args
    report = build_report(chunk, GENERA, ReportOptions(PointPlan(points)))
    return len(report.covers)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quadrats", type=int, default=1000)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--corals", type=int, default=30)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--naive", type=int, default=30, help="quadrats for the naive baseline")
    args = ap.parse_args()
    n = args.quadrats
    print(f"cover report bench: {n} quadrats of {args.size}×{args.size} px, {args.corals} corals each, "
          f"{args.points} points, {len(GENERA)} genera; {os.cpu_count()} CPUs visible")
    t_gen, (quadrats, exact) = timed(lambda: make_quadrats(n, args.size, args.corals))
    print(f"  synthetic quadrats generated in {t_gen:.1f} s (not part of the report time)")

    options = ReportOptions(PointPlan(args.points), quadrat_cm=100.0, plot=True)
    t1, rep1 = timed(lambda: build_report(quadrats, GENERA, options))
    t2, rep2 = timed(lambda: build_report(quadrats, GENERA, options, workers=2))
    half = n // 2
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_measure_chunk, [(quadrats[:1], 0), (quadrats[1:2], 0)]))  # start the processes
        tp, counts = timed(lambda: sum(pool.map(_measure_chunk, [(quadrats[:half], args.points),
                                                                   (quadrats[half:], args.points)])))
    assert counts == n and len(rep1.covers) == len(rep2.covers) == n
    t_csv, files = timed(lambda: report_files(rep2))
    if parquet_available():
        pq_opts = ReportOptions(PointPlan(args.points), quadrat_cm=100.0, format="parquet")
        pq_report = build_report(quadrats[:1], GENERA, pq_opts)
        pq_report.results = rep2.results
        t_pq, pq_files = timed(lambda: report_files(pq_report))
        pq_size = sum(len(v) for k, v in pq_files.items() if k.endswith(".parquet"))
    total = t2 + t_csv

    k = min(args.naive, n)
    t_naive, _ = timed(lambda: [naive(q, GENERA) for q in quadrats[:k]])
    t_ours, _ = timed(lambda: [measure(q, GENERA, PointPlan(0)) for q in quadrats[:k]])

    worst = max(abs(c.pixels[g] - e[g]) * 100.0 / c.total for c, e in zip(rep2.covers, exact, strict=True)
                for g in GENERA)
    same = report_files(rep1) == files

    print(f"\n{'row':<58} {'seconds':>8} {'ms/quadrat':>11}")
    rows = [("measure, 1 thread", t1), ("measure, 2 threads", t2), ("measure, 2 processes", tp),
            ("files: 3 CSV tables + CoralNet CSV + PNG chart", t_csv)]
    if parquet_available():
        rows.append(("files: 3 Parquet tables + CoralNet CSV", t_pq))
    rows.append(("whole report (2 threads + CSV files + PNG)", total))
    for name, t in rows:
        print(f"{name:<58} {t:>8.2f} {1000 * t / n:>11.2f}")
    print(f"\nnaive full-frame polygon_to_mask per shape: {1000 * t_naive / k:.1f} ms/quadrat vs ours "
          f"{1000 * t_ours / k:.1f} ms/quadrat over {k} quadrats (1 thread) -> naive/ours = {t_naive / t_ours:.2f}")
    print(f"2 threads / 1 thread = {t2 / t1:.2f}; 2 processes / 1 thread = {tp / t1:.2f}")
    sizes = ", ".join(f"{name} {len(data) / 1e6:.2f} MB" for name, data in sorted(files.items()))
    print(f"files: {sizes}" + (f"; Parquet tables {pq_size / 1e6:.2f} MB" if parquet_available() else
                               "; Parquet: pyarrow not installed"))
    print(f"1-thread and 2-thread reports byte-identical: {same}")
    print(f"max |area cover error| per genus vs exact polygon areas: {worst:.5f} pp (goal <= 0.1)")
    verdict = "PASS" if total < 30 else "FAIL"
    print(f"\nwhole report: {total:.1f} s for {n} quadrats (goal < 30 s on 2 cores): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
