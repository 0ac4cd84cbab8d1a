"""Child of ``bench/detect.py``: run the bridge's ``run_detect`` on one job and report peak RSS.

Runs in its own process so that only the bridge's memory counts (the CVAT double and the function
server stay in the parent). Prints one JSON line: baseline RSS (after imports and client setup),
peak RSS, seconds and what ``run_detect`` wrote.

The peak is ``VmHWM`` (this process's own high-water mark). ``ru_maxrss`` is reported too, but on
Linux it survives ``execve``: a child spawned by ``subprocess`` (vfork + exec) starts with the
*parent's* peak, so it over-reports whenever the parent was bigger.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_BRIDGE_ROOT") or str(Path(__file__).resolve().parents[1]))

from bridge.config import Settings  # noqa: E402
from bridge.cvat.client import CvatClient  # noqa: E402
from bridge.events import Trigger  # noqa: E402
from bridge.nuclio.client import NuclioClient  # noqa: E402
from bridge.pipelines.base import MemoryProgress, StepContext  # noqa: E402
from bridge.pipelines.detect import run_detect  # noqa: E402
from bridge.pipelines.params import DetectParams  # noqa: E402


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``: now, ``VmHWM``: peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb() -> float:
    """``ru_maxrss`` (KB on Linux) in MB; includes the parent's peak, see the module docstring."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cvat-url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--function-url", required=True, help="URL template with {name}")
    ap.add_argument("--dashboard-url", required=True)
    ap.add_argument("--function", required=True)
    ap.add_argument("--job", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = Settings(_env_file=None, webhook_secret="x" * 32, data_dir=Path(args.data_dir),
                        cvat_url=args.cvat_url, cvat_access_token=args.token,
                        nuclio_function_url=args.function_url, nuclio_dashboard_url=args.dashboard_url,
                        nuclio_concurrency=args.concurrency)
    with CvatClient.from_settings(settings) as cvat, NuclioClient.from_settings(settings) as nuclio:
        job = cvat.get_job(args.job)  # opens the SDK client: part of the baseline, as in a worker
        ctx = StepContext(trigger=Trigger(kind="job_in_progress", resource="job", resource_id=args.job,
                                          task_id=job.task_id, job_id=args.job),
                          params=DetectParams(model_name=args.function), settings=settings, cvat=cvat,
                          nuclio=nuclio, progress=MemoryProgress())
        baseline, baseline_peak = status_mb("VmRSS"), status_mb("VmHWM")
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        result = run_detect(ctx, args.job, args.function)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    print(json.dumps({"baseline_rss_mb": baseline, "baseline_peak_mb": baseline_peak,
                      "peak_rss_mb": status_mb("VmHWM"), "ru_maxrss_mb": maxrss_mb(), "seconds": seconds, "cpu_s": cpu,
                      "frames": result.frames_total, "failed": result.frames_failed,
                      "shapes": result.shapes_written, "summary": result.summary}))


if __name__ == "__main__":
    main()
