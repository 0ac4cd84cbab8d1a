"""Detect benchmark: the bridge's ``run_detect`` against ``cvat_sdk.auto_annotation.annotate_task``.

Run: ``.venv/bin/python bench/detect.py [--quick]``

Both drivers run in one process against the same CVAT test double (given CVAT 2.73's cost shape,
``COSTS`` below, from shared/reference/cvat-performance.md) and the same fixed-latency Nuclio function
(``bench/functions/fixed_latency``, served with ``maxWorkers`` slots), each on its own fresh task
of the same frames so neither sees the other's shapes or warm chunks:

- frames/s for a 200-frame job (640×480 JPEG): bridge ÷ SDK (goal ≥ 3×), and the bridge's
  saturation = frames/s ÷ (workers ÷ latency) (goal ≥ 0.9), with a profile of where its time went;
- peak RSS of ``run_detect`` over 50 frames of 5184×3888 JPEG (~5 MB each) with a 0-latency
  function, measured in a subprocess (``bench/_detect_rss.py``) so only the bridge counts (goal < 1 GB).

The SDK side wraps the same HTTP function in a ``DetectionFunction``: ``detect()`` JPEG-encodes the
PIL image the SDK decoded, POSTs it like the bridge does and converts the boxes with SDK helpers.
Diagnostic row (not a goal): the bridge against a zero-cost double (its own overhead).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import PIL.Image
from cvat_sdk.api_client import models
from cvat_sdk.auto_annotation import (
    DetectionFunctionContext,
    DetectionFunctionSpec,
    annotate_task,
    label_spec,
    rectangle,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.config import Settings  # noqa: E402
from bridge.cvat.client import CvatClient  # noqa: E402
from bridge.cvat.connection import make_sdk_client  # noqa: E402
from bridge.events import Trigger  # noqa: E402
from bridge.nuclio.client import NuclioClient  # noqa: E402
from bridge.pipelines.base import MemoryProgress, StepContext  # noqa: E402
from bridge.pipelines.detect import run_detect  # noqa: E402
from bridge.pipelines.params import DetectParams  # noqa: E402
from tests.doubles.cvat_double import Costs, CvatDouble  # noqa: E402
from tests.doubles.cvat_double.media import default_chunk_size, read_frame  # noqa: E402
from tests.doubles.function_server import LoadedFunction, load_function, serve_in_thread  # noqa: E402

FUNCTION_DIR = Path(__file__).resolve().parent / "functions" / "fixed_latency"
SLOW, FAST = "bench-fixed-latency", "bench-fast"
TOKEN = "test-token"  # the double's personal access token (Bearer), as the bridge is deployed
LABELS = [{"name": "car", "type": "rectangle", "attributes": []},
          {"name": "person", "type": "rectangle", "attributes": []}]

#: CVAT 2.73's cost shape (cvat-performance.md §1-3, §6): token-auth request ~30 ms, a write ~80 ms
#: fixed + 0.25 ms/shape, a chunk read ~150 ms plus ~0.8 s to build it on its first read, and a
#: CPU-bound server that runs about 2 requests at once.
COSTS = Costs(request=0.03, write_fixed=0.08, write_per_shape=0.00025, chunk_read=0.15,
              chunk_build_first=0.8, concurrency=2)


def describe(costs: Costs) -> str:
    return (f"request {costs.request * 1e3:.0f} ms, write {costs.write_fixed * 1e3:.0f} ms + "
            f"{costs.write_per_shape * 1e3:.2f} ms/shape, chunk read {costs.chunk_read * 1e3:.0f} ms "
            f"(+{costs.chunk_build_first * 1e3:.0f} ms first build), {costs.concurrency or 'unlimited'} "
            f"request(s) at a time")


# --- frames -----------------------------------------------------------------------------------------
def small_frames(n: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[tuple[str, bytes]]:
    """``n`` varied JPEGs: a random gradient, a dozen shapes, light noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        a, b, c = rng.uniform(0, 1, 3)
        img = np.stack([(xx / w * 255 * a), (yy / h * 255 * b), ((xx + yy) / (w + h) * 255 * c)], -1)
        img = img.astype(np.uint8)
        for _ in range(12):
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), int(rng.integers(10, 120)), color, -1)
            else:
                cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 200)), y + int(rng.integers(10, 200))), color, -1)
        img = cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))
        out.append((f"frame_{i:05d}.jpg", _jpeg(img, 90)))
    return out


def large_frames(n: int, seed: int = 1, size: tuple[int, int] = (5184, 3888)) -> list[tuple[str, bytes]]:
    """``n`` camera-sized JPEGs (~5-6 MB at quality 90): gradient + 40 discs + blocky noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    pad = 128
    noise = cv2.resize(rng.integers(0, 25, (h // 2 + pad, w // 2 + pad, 3), dtype=np.uint8),
                       (w + 2 * pad, h + 2 * pad), interpolation=cv2.INTER_NEAREST)
    yy, xx = np.mgrid[0:h:8, 0:w:8]
    out = []
    for i in range(n):
        small = np.stack([(xx * 255 // w + 17 * i) % 256, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1)
        img = cv2.resize(small.astype(np.uint8), (w, h))
        for _ in range(40):
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(50, 600)), color, -1)
        dx, dy = (int(v) for v in rng.integers(0, pad, 2))
        img = cv2.add(img, noise[dy:dy + h, dx:dx + w])
        img = cv2.subtract(img, noise[pad - dy:pad - dy + h, pad - dx:pad - dx + w])
        out.append((f"large_{i:05d}.jpg", _jpeg(img, 90)))
    return out


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def new_task(cvat: CvatDouble, project: int, name: str, images: list[tuple[str, bytes]]) -> tuple[int, int]:
    """A one-job task with CVAT's default chunk size for the frame size; returns (task id, job id)."""
    chunk = default_chunk_size(read_frame(*images[0]))
    task = cvat.create_task(project, name, images, chunk_size=chunk)
    (job,) = cvat.job_ids(task)
    return task, job


# --- the SDK side -------------------------------------------------------------------------------------
class HttpDetector:
    """A ``cvat_sdk`` ``DetectionFunction`` that calls the Nuclio function over HTTP."""

    def __init__(self, url: str, labels: Sequence[str]):
        self.url = url
        self.ids = {name: i for i, name in enumerate(labels)}
        self.http = httpx.Client(timeout=60)
        self._spec = DetectionFunctionSpec(labels=[label_spec(n, i, type="rectangle") for n, i in self.ids.items()])

    @property
    def spec(self) -> DetectionFunctionSpec:
        return self._spec

    def detect(self, context: DetectionFunctionContext, image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=95)
        resp = self.http.post(self.url, json={"image": base64.b64encode(buf.getvalue()).decode()})
        resp.raise_for_status()
        return [rectangle(self.ids[item["label"]], [float(p) for p in item["points"]])
                for item in resp.json() if item.get("type") == "rectangle" and item.get("label") in self.ids]


def run_sdk(cvat_url: str, task_id: int, function_url: str, cache_dir: Path) -> float:
    """Seconds for ``annotate_task`` over the whole task (fresh chunk cache)."""
    client = make_sdk_client(cvat_url, access_token=TOKEN, cache_dir=cache_dir)
    detector = HttpDetector(function_url, [d["name"] for d in LABELS])
    try:
        t0 = time.perf_counter()
        annotate_task(client, task_id, detector)  # type: ignore[arg-type]  # a structural DetectionFunction
        return time.perf_counter() - t0
    finally:
        detector.http.close()
        client.close()


# --- the bridge side ----------------------------------------------------------------------------------
@dataclass
class Profile:
    """Where ``run_detect``'s wall time went (filled by wrappers on the client instances)."""

    first_frame: float = 0.0
    stream_blocked: float = 0.0
    chunk_waits: list[float] = field(default_factory=list)
    detect_calls: int = 0
    first_call: float = 0.0
    last_result: float = 0.0
    detect_seconds: float = 0.0
    max_in_flight: int = 0
    writes: list[float] = field(default_factory=list)
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)


def instrument(cvat: CvatClient, nuclio: NuclioClient, prof: Profile, t0: Callable[[], float]) -> None:
    """Wrap (on these instances only) frame streaming, detection calls and shape writes with timers."""
    iter_frames, detect, create_shapes = cvat.iter_frames, nuclio.detect, cvat.create_shapes

    def timed_frames(task_id: int, frames: Sequence[int], **kw: Any) -> Iterator[tuple[int, bytes]]:
        gen = iter_frames(task_id, frames, **kw)
        while True:
            start = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                return
            waited = time.perf_counter() - start
            prof.stream_blocked += waited
            if waited > 0.05:
                prof.chunk_waits.append(waited)
            if not prof.first_frame:
                prof.first_frame = time.perf_counter() - t0()
            yield item

    def timed_detect(function: str, image: bytes, **kw: Any) -> list[dict]:
        start = time.perf_counter()
        with prof._lock:
            prof._in_flight += 1
            prof.max_in_flight = max(prof.max_in_flight, prof._in_flight)
            prof.first_call = prof.first_call or start
        try:
            return detect(function, image, **kw)
        finally:
            end = time.perf_counter()
            with prof._lock:
                prof._in_flight -= 1
                prof.detect_calls += 1
                prof.detect_seconds += end - start
                prof.last_result = max(prof.last_result, end)

    def timed_write(*args: Any, **kw: Any) -> list[int]:
        start = time.perf_counter()
        try:
            return create_shapes(*args, **kw)
        finally:
            prof.writes.append(time.perf_counter() - start)

    cvat.iter_frames = timed_frames  # type: ignore[method-assign]
    nuclio.detect = timed_detect  # type: ignore[method-assign]
    cvat.create_shapes = timed_write  # type: ignore[method-assign]


def closed_port_url() -> str:
    """An http URL nobody listens on (no Nuclio dashboard: function metadata unknown, as without one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def bridge_settings(cvat_url: str, function_url: str, data_dir: Path, workers: int) -> Settings:
    return Settings(_env_file=None, webhook_secret="x" * 32, data_dir=data_dir, cvat_url=cvat_url,
                    cvat_access_token=TOKEN, nuclio_function_url=function_url + "/{name}",
                    nuclio_dashboard_url=closed_port_url(), nuclio_concurrency=workers)


def run_bridge(settings: Settings, task_id: int, job_id: int, function: str) -> tuple[float, Profile, str]:
    """Seconds for ``run_detect`` on ``job_id`` (inline, real clients), its profile and summary."""
    prof = Profile()
    with CvatClient.from_settings(settings) as cvat, NuclioClient.from_settings(settings) as nuclio:
        start = [0.0]
        instrument(cvat, nuclio, prof, lambda: start[0])
        ctx = StepContext(trigger=Trigger(kind="job_in_progress", resource="job", resource_id=job_id,
                                          task_id=task_id, job_id=job_id),
                          params=DetectParams(model_name=function), settings=settings, cvat=cvat, nuclio=nuclio,
                          progress=MemoryProgress())
        start[0] = time.perf_counter()
        result = run_detect(ctx, job_id, function)
        seconds = time.perf_counter() - start[0]
    if result.frames_failed:
        raise SystemExit(f"bridge run failed on {result.frames_failed} frames: {result.summary}")
    return seconds, prof, result.summary


def check_shapes(cvat: CvatDouble, task_id: int, expected: int, who: str) -> int:
    got = len(cvat.shapes(task_id=task_id))
    if got != expected:
        raise SystemExit(f"{who}: task {task_id} has {got} shapes, expected {expected}")
    return got


# --- peak RSS in a subprocess ---------------------------------------------------------------------------
def rss_child(cvat_url: str, function_url: str, job_id: int, data_dir: Path, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "_detect_rss.py"), "--cvat-url", cvat_url,
           "--token", TOKEN, "--function-url", function_url + "/{name}", "--dashboard-url", closed_port_url(),
           "--function", FAST, "--job", str(job_id), "--data-dir", str(data_dir), "--concurrency", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO))
    if proc.returncode != 0:
        raise SystemExit(f"RSS child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------------------------
def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frames of the throughput job")
    ap.add_argument("--large-frames", type=int, default=50, help="5184×3888 frames of the RSS job (0: skip)")
    ap.add_argument("--latency", type=float, default=0.05, help="function latency in seconds")
    ap.add_argument("--workers", type=int, default=4, help="function maxWorkers = bridge concurrency")
    ap.add_argument("--boxes", type=int, default=5, help="boxes the function answers per frame")
    ap.add_argument("--quick", action="store_true", help="40 frames, 10 large frames (< 1 min)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.large_frames = min(args.frames, 40), min(args.large_frames, 10)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cvat_sdk").setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Both measurements and the summary (scratch files under ``tmp``)."""
    slow = load_function(FUNCTION_DIR, {"FIXED_LATENCY_SECONDS": str(args.latency),
                                        "FIXED_LATENCY_BOXES": str(args.boxes)})
    fast = load_function(FUNCTION_DIR, {"FIXED_LATENCY_SECONDS": "0", "FIXED_LATENCY_BOXES": str(args.boxes)})
    functions: dict[str, LoadedFunction] = {SLOW: slow, FAST: fast}
    n, bound = args.frames, args.workers / args.latency
    expected = n * args.boxes

    t_gen = time.perf_counter()
    images = small_frames(n)
    t_gen = time.perf_counter() - t_gen
    chunk = default_chunk_size(read_frame(*images[0]))
    print(f"detect benchmark: {n} frames 640x480 JPEG ({sum(len(d) for _, d in images) / n / 1e3:.0f} kB avg, "
          f"chunks of {chunk}, made in {t_gen:.1f} s), function latency {args.latency * 1e3:.0f} ms, "
          f"{args.workers} function workers, {args.boxes} boxes/frame")
    print(f"CVAT double costs: {describe(COSTS)}")

    with serve_in_thread(functions, max_workers=args.workers) as fn_url:
        with CvatDouble(costs=COSTS) as cvat:
            project = cvat.create_project("bench-detect", LABELS)
            sdk_task, _ = new_task(cvat, project, "sdk", images)
            bridge_task, bridge_job = new_task(cvat, project, "bridge", images)

            sdk_s = run_sdk(cvat.url, sdk_task, f"{fn_url}/{SLOW}/", tmp / "sdk-cache")
            check_shapes(cvat, sdk_task, expected, "annotate_task")
            slow.context.user_data.max_in_flight = 0
            settings = bridge_settings(cvat.url, fn_url, tmp / "bridge", args.workers)
            bridge_s, prof, summary = run_bridge(settings, bridge_task, bridge_job, SLOW)
            check_shapes(cvat, bridge_task, expected, "run_detect")
            fn_in_flight = slow.context.user_data.max_in_flight
        # Same bridge run with CVAT answering instantly: what the bridge itself costs.
        with CvatDouble() as free:
            project = free.create_project("bench-detect", LABELS)
            task, job = new_task(free, project, "bridge-free", images)
            free_s, free_prof, _ = run_bridge(bridge_settings(free.url, fn_url, tmp / "free", args.workers),
                                              task, job, SLOW)
            check_shapes(free, task, expected, "run_detect (zero-cost double)")

        sdk_fps, bridge_fps, free_fps = n / sdk_s, n / bridge_s, n / free_s
        ratio, saturation = bridge_fps / sdk_fps, bridge_fps / bound
        steady = prof.detect_calls / max(1e-9, prof.last_result - prof.first_call) / bound
        print()
        print(f"{'driver':<46}{'seconds':>9}{'frames/s':>10}{'shapes':>8}")
        print(f"{'cvat_sdk annotate_task (sequential)':<46}{sdk_s:>9.2f}{sdk_fps:>10.1f}{expected:>8}")
        print(f"{f'bridge run_detect (concurrency {args.workers})':<46}{bridge_s:>9.2f}{bridge_fps:>10.1f}"
              f"{expected:>8}")
        print(f"{'bridge run_detect, zero-cost double (diag.)':<46}{free_s:>9.2f}{free_fps:>10.1f}{expected:>8}")
        print(f"{'model bound (workers / latency)':<46}{n / bound:>9.2f}{bound:>10.1f}")
        print(f"\nbridge ÷ sdk: {ratio:.2f}x    saturation: {bridge_fps:.1f} / {bound:.0f} = {saturation:.2f}"
              f"    (first call -> last result: {steady:.2f}; zero-cost double: {free_fps / bound:.2f})")
        model = n * args.latency / args.workers
        print(f"bridge profile: first frame after {prof.first_frame:.2f} s (job, labels, annotations, meta, "
              f"first chunk); frame stream blocked {prof.stream_blocked:.2f} s in {len(prof.chunk_waits)} chunk "
              f"wait(s) [{', '.join(f'{w:.2f}' for w in prof.chunk_waits)}]; {prof.detect_calls} detect calls, "
              f"mean {prof.detect_seconds / max(1, prof.detect_calls) * 1e3:.0f} ms, max {prof.max_in_flight} in "
              f"flight (function saw {fn_in_flight}); writes {len(prof.writes)} call(s) "
              f"[{', '.join(f'{w:.2f}' for w in prof.writes)}] s; ideal model time {model:.2f} s, "
              f"idle-worker time {bridge_s - model:.2f} s")
        print(f"  zero-cost double: first frame {free_prof.first_frame:.2f} s, stream blocked "
              f"{free_prof.stream_blocked:.2f} s, writes {sum(free_prof.writes):.2f} s")
        print(f"  {summary}")

        rss: dict[str, Any] | None = None
        if args.large_frames:
            t_gen = time.perf_counter()
            big = large_frames(args.large_frames)
            t_gen = time.perf_counter() - t_gen
            avg = sum(len(d) for _, d in big) / len(big) / 1e6
            big_chunk = default_chunk_size(read_frame(*big[0]))
            with CvatDouble(costs=COSTS) as cvat:
                project = cvat.create_project("bench-detect-rss", LABELS)
                task, job = new_task(cvat, project, "rss", big)
                del big
                rss = rss_child(cvat.url, fn_url, job, tmp / "rss", args.workers)
                check_shapes(cvat, task, args.large_frames * args.boxes, "run_detect (RSS child)")
            print(f"\npeak RSS: {args.large_frames} frames 5184x3888 JPEG ({avg:.1f} MB avg, chunks of "
                  f"{big_chunk}, "
                  f"made in {t_gen:.1f} s), 0-latency function, {args.workers} workers, in a subprocess: "
                  f"baseline {rss['baseline_rss_mb']:.0f} MB (after imports), peak {rss['peak_rss_mb']:.0f} MB "
                  f"(VmHWM; ru_maxrss {rss['ru_maxrss_mb']:.0f} MB carries the parent's peak across exec), "
                  f"run {rss['seconds']:.1f} s = {args.large_frames / rss['seconds']:.1f} frames/s")

    print("\nSUMMARY")
    print(f"  bridge ÷ annotate_task  >= 3x     {ratio:>8.2f}x   {mark(ratio >= 3)}")
    print(f"  saturation              >= 0.9    {saturation:>8.2f}    {mark(saturation >= 0.9)}")
    if rss is not None:
        print(f"  peak RSS                < 1 GB    {rss['peak_rss_mb']:>6.0f} MB   {mark(rss['peak_rss_mb'] < 1024)}")
    else:
        print("  peak RSS                < 1 GB    skipped (--large-frames 0)")


if __name__ == "__main__":
    main()
