"""Detect benchmark: the bridge's ``run_detect`` against ``cvat_sdk.auto_annotation.annotate_task``.

Run: ``.venv/bin/python bench/detect.py [--quick]`` (``BENCH_BRIDGE_ROOT=/other/checkout`` measures another
checkout of the bridge on this same harness: before/after).

Every driver runs in one process against its own CVAT test double (given CVAT 2.73's cost shape, ``COSTS``
below, from shared/reference/cvat-performance.md) and the same fixed-latency Nuclio function
(``bench/functions/fixed_latency``, served with ``maxWorkers`` slots in its own process, as Nuclio runs a function
in its own container), each on a fresh task (no warm chunks):

- 200 frames (640×480 JPEG): ``annotate_task`` (one call in flight), the bridge at concurrency 1 (equal
  concurrency: what the bridge itself gains) and at concurrency 4 (4 calls in flight); the ratios say how
  much of the gain is concurrency;
- saturation = frames/s ÷ (calls in flight ÷ latency) for 200 and for 50 frames, with the ceiling a first
  chunk CVAT still has to build sets, and a diagnostic row with that chunk built beforehand;
- through the service: ``--service-jobs`` jobs (4) of 200 and of 50 frames set to "in progress" at once; CVAT's
  webhooks reach ``bridge serve`` (its own process, 4 calls in flight per function) as it starts by default
  (2 workers sharing the function's slots oldest job first, each queued job's first chunk built by CVAT when
  its webhook is acknowledged), with 1 worker, and without the warming (``BRIDGE_WARM_CHUNKS=0``),
  interleaved: the saturation of the whole run, of the first job (idle bridge) and between the function's
  first and last call (the function logs its calls: ``FIXED_LATENCY_LOG``);
- 50 frames of 5184×3888 JPEG (20 MP, ~5 MB each) with a 0-latency function, the bridge in a subprocess
  (``bench/_detect_rss.py``): its CPU per frame (model time excluded; goal < 40 ms) and peak RSS (goal
  < 1 GB); the CPU of one request body built the old way and the bridge's way, side by side.

The SDK side wraps the same HTTP function in a ``DetectionFunction``: ``detect()`` JPEG-encodes the
PIL image the SDK decoded, POSTs it like the bridge does and converts the boxes with SDK helpers.
Diagnostic rows (not goals): the bridge against a zero-cost double (its own overhead). The machine's load
average is printed with the numbers (shared machines make them noisy).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
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
ROOT = Path(os.environ.get("BENCH_BRIDGE_ROOT") or REPO).resolve()
"""The bridge under test (``BENCH_BRIDGE_ROOT``: another checkout, for before/after on this harness)."""
sys.path.insert(0, str(ROOT))

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
from tests.doubles.function_server import (  # noqa: E402
    free_port,
    load_function,
    serve_function,
    serve_in_thread,
)

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


def run_bridge(settings: Settings, task_id: int, job_id: int, function: str,
               chunk_size: int | None = None) -> tuple[float, Profile, str]:
    """Seconds for ``run_detect`` on ``job_id`` (inline, real clients), its profile and summary; the trigger
    says where the frames are (``chunk_size``) as CVAT's webhook does."""
    prof = Profile()
    with CvatClient.from_settings(settings) as cvat, NuclioClient.from_settings(settings) as nuclio:
        start = [0.0]
        instrument(cvat, nuclio, prof, lambda: start[0])
        # from_dict: a bridge under test whose Trigger predates the chunk hint ignores it (BENCH_BRIDGE_ROOT)
        trigger = Trigger.from_dict({"kind": "job_in_progress", "resource": "job", "resource_id": job_id,
                                     "task_id": task_id, "job_id": job_id, "start_frame": 0, "chunk_size": chunk_size})
        ctx = StepContext(trigger=trigger,
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(REPO),
                          env={**os.environ, "BENCH_BRIDGE_ROOT": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"RSS child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------------------------
def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frames of the throughput job")
    ap.add_argument("--small-job", type=int, default=50, help="frames of the small job (saturation)")
    ap.add_argument("--large-frames", type=int, default=50, help="5184×3888 frames of the RSS job (0: skip)")
    ap.add_argument("--latency", type=float, default=0.05, help="function latency in seconds")
    ap.add_argument("--workers", type=int, default=4, help="function maxWorkers = bridge concurrency")
    ap.add_argument("--boxes", type=int, default=5, help="boxes the function answers per frame")
    ap.add_argument("--service-jobs", type=int, default=4,
                    help="jobs queued at once through the bridge service (0: skip)")
    ap.add_argument("--quick", action="store_true", help="40 frames, 10 large frames (< 1 min)")
    args = ap.parse_args()
    if args.quick:
        args.frames, args.large_frames = min(args.frames, 40), min(args.large_frames, 10)
        args.small_job, args.service_jobs = min(args.small_job, 20), min(args.service_jobs, 3)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cvat_sdk").setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bridge_row(fn_url: str, costs: Costs | None, images: list[tuple[str, bytes]], tmp: Path, name: str,
               concurrency: int, *, warm_first_chunk: bool = False) -> tuple[float, Profile, str]:
    """``run_detect`` on a fresh one-job task of ``images`` (its own CVAT double); seconds, profile, summary.
    ``warm_first_chunk``: chunk 0 is read once before the clock starts (built, as if warmed earlier)."""
    with CvatDouble(costs=costs) if costs is not None else CvatDouble() as cvat:
        project = cvat.create_project("bench-detect", LABELS)
        task, job = new_task(cvat, project, name, images)
        if warm_first_chunk:
            httpx.get(f"{cvat.url}/api/tasks/{task}/data", params={"type": "chunk", "number": 0,
                                                                  "quality": "original"},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).raise_for_status()
        seconds, prof, summary = run_bridge(bridge_settings(cvat.url, fn_url, tmp / name, concurrency), task, job,
                                            SLOW, default_chunk_size(read_frame(*images[0])))
        check_shapes(cvat, task, len(images) * BOXES[0], f"run_detect ({name})")
    return seconds, prof, summary


BOXES = [5]  # boxes per frame (set from --boxes)


def window_sat(prof: Profile, bound: float) -> float:
    """Saturation from the run's first function call to its last answer (the run's fixed costs left out)."""
    return prof.detect_calls / max(1e-9, prof.last_result - prof.first_call) / bound


def calls_alone(fn_url: str, images: list[tuple[str, bytes]], concurrency: int) -> float:
    """Seconds for the bridge's Nuclio client to call the function once per image from ``concurrency``
    threads, nothing else (no CVAT, no shapes): the ceiling this harness leaves any driver."""
    from concurrent.futures import ThreadPoolExecutor

    settings = bridge_settings("http://127.0.0.1:9", fn_url, Path(tempfile.gettempdir()), concurrency)
    with NuclioClient.from_settings(settings) as nuclio, ThreadPoolExecutor(concurrency) as pool:
        nuclio.detect(SLOW, images[0][1])  # connect once
        t0 = time.perf_counter()
        list(pool.map(lambda item: nuclio.detect(SLOW, item[1]), images))
        return time.perf_counter() - t0


def service_round(fn_url: str, images: list[tuple[str, bytes]], tmp: Path, name: str, jobs: int,
                  concurrency: int, workers: int, warm: bool, calls_log: Path) -> dict[str, Any]:
    """``jobs`` one-job tasks of ``images`` set to "in progress" at once in a fresh CVAT double (CVAT's
    costs) whose webhook reaches ``bridge serve`` — its own process, as deployed, defaults but ``workers``
    workers, ``concurrency`` calls in flight per function and ``BRIDGE_WARM_CHUNKS`` 1 or 0: seconds from
    the state changes to the last job done, each job's claim-to-finish seconds (``started_at``/
    ``finished_at``) and the function's calls of the round (``calls_log``: their start and end)."""
    logged = calls_log.stat().st_size if calls_log.exists() else 0
    secret = "bench-secret-0123456789abcdef"
    port = free_port()
    with CvatDouble(costs=COSTS) as cvat:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "CVAT_", "NUCLIO_"))}
        env.update({"WEBHOOK_SECRET": secret, "BRIDGE_DATA_DIR": str(tmp / name), "CVAT_URL": cvat.url,
                    "CVAT_ACCESS_TOKEN": TOKEN, "NUCLIO_FUNCTION_URL": fn_url + "/{name}",
                    "NUCLIO_CONCURRENCY": str(concurrency), "BRIDGE_WORKERS": str(workers), "BRIDGE_PORT": str(port),
                    "BRIDGE_API_PROCESSES": "1", "BRIDGE_WARM_CHUNKS": "1" if warm else "0",
                    "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"})
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve"], cwd=str(tmp), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health?deep=false", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bridge serve did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
            project = cvat.create_project("bench-detect-service", LABELS)
            cvat.add_webhook(project, f"{base}/detect-model-webhook?model_name={SLOW}", ["update:job"],
                             secret=secret)
            made = [new_task(cvat, project, f"{name}-{i}", images) for i in range(jobs)]
            t0, wall0 = time.perf_counter(), time.time()
            for _, job in made:
                cvat.set_job_state(job, "in progress")
            while True:
                rows = httpx.get(f"{base}/jobs", params={"limit": jobs + 1}, timeout=10).json()["items"]
                if len(rows) == jobs and all(j["status"] in ("succeeded", "failed") for j in rows):
                    break
                if time.perf_counter() - t0 > 300:
                    raise SystemExit(f"{name}: jobs did not finish: {[(j['id'], j['status']) for j in rows]}")
                time.sleep(0.1)  # the jobs' own times come from the store: a slow poll only rounds the total
            seconds = time.perf_counter() - t0
            if any(j["status"] != "succeeded" for j in rows):
                raise SystemExit(f"{name}: {[(j['id'], j['status'], j['error']) for j in rows]}")
            runs = [_seconds(j["started_at"], j["finished_at"]) for j in sorted(rows, key=lambda j: j["id"])]
            ends = sorted(_at(j["finished_at"]) - wall0 for j in rows)
            for task, _ in made:
                check_shapes(cvat, task, len(images) * BOXES[0], f"bridge service ({name})")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    with calls_log.open() as log:
        log.seek(logged)
        calls = [tuple(float(v) for v in line.split()) for line in log if line.strip()]
    return {"seconds": seconds, "runs": runs, "ends": ends, "calls": calls}


def _seconds(start: str, end: str) -> float:
    return _at(end) - _at(start)


def _at(stamp: str) -> float:
    """An ISO time of the job store as a ``time.time()`` value."""
    from datetime import UTC, datetime

    when = datetime.fromisoformat(stamp)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


SERVICE_CONFIGS = ((2, True, "defaults: 2 workers, warm"), (1, True, "1 worker, warm"),
                   (2, False, "2 workers, no warm"))
"""(BRIDGE_WORKERS, BRIDGE_WARM_CHUNKS on, label) of the service rounds; the first is ``bridge serve``'s defaults."""


def service_rows(fn_url: str, images: list[tuple[str, bytes]], tmp: Path, jobs: int, concurrency: int,
                 latency: float, small: int, calls_log: Path, rounds: int = 2) -> list[tuple[int, str, float, float,
                                                                                            float]]:
    """Every ``SERVICE_CONFIGS`` entry, interleaved ``rounds`` times (order rotated), for jobs of
    ``len(images)`` and ``small`` frames; rows of (frames per job, config, saturation of the whole run, of
    the first job from its claim to its end, and between the function's first and last call)."""
    bound = concurrency / latency
    out = []
    for frames in (len(images), small):
        results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(SERVICE_CONFIGS))}
        for r in range(rounds):
            order = list(range(len(SERVICE_CONFIGS)))
            for i in order[r % len(order):] + order[:r % len(order)]:
                workers, warm, _ = SERVICE_CONFIGS[i]
                results[i].append(service_round(fn_url, images[:frames], tmp, f"svc-{frames}-{i}-{r}", jobs,
                                                concurrency, workers, warm, calls_log))
        for i, (_, _, label) in enumerate(SERVICE_CONFIGS):
            rs = results[i]
            whole = sum(jobs * frames / x["seconds"] for x in rs) / len(rs) / bound
            first = sum(frames / x["runs"][0] for x in rs) / len(rs) / bound
            busy = sum(len(x["calls"]) / (max(e for _, e in x["calls"]) - min(b for b, _ in x["calls"]))
                       for x in rs) / len(rs) / bound
            out.append((frames, label, whole, first, busy))
    return out


def encode_ratio(image: bytes, reps: int = 6) -> tuple[float, float | None]:
    """CPU ms to build the JSON body of one detector call, the old way (base64 ``str`` through
    ``json.dumps``) and the bridge's (``NuclioClient``'s ``Body``), interleaved; None when absent."""
    from bridge.nuclio import client as nuclio_client

    body_cls = getattr(nuclio_client, "Body", None)

    def old() -> int:
        return len(json.dumps({"image": base64.b64encode(image).decode("ascii")}, separators=(",", ":")).encode())

    from bridge.nuclio import images

    encode = getattr(images, "b64_bytes", base64.b64encode)  # the bridge's own base64 (pybase64 when present)

    def new() -> int:
        return len(body_cls({"image": "@@img@@"}, {"@@img@@": encode(image)}))  # type: ignore[misc]

    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(reps):
        for key, fn in (("old", old), ("new", new if body_cls else None)):
            if fn is None:
                continue
            c0 = time.process_time()
            fn()
            times[key].append((time.process_time() - c0) * 1000)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items() if v}
    return med["old"], med.get("new")


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Every measurement and the summary (scratch files under ``tmp``)."""
    BOXES[0] = args.boxes
    slow_env = {"FIXED_LATENCY_SECONDS": str(args.latency), "FIXED_LATENCY_BOXES": str(args.boxes)}
    fast_env = {"FIXED_LATENCY_SECONDS": "0", "FIXED_LATENCY_BOXES": str(args.boxes)}
    n, small_n, w = args.frames, args.small_job, args.workers
    bound = w / args.latency
    expected = n * args.boxes

    t_gen = time.perf_counter()
    images = small_frames(n)
    t_gen = time.perf_counter() - t_gen
    chunk = default_chunk_size(read_frame(*images[0]))
    print(f"detect benchmark: {n} and {small_n} frames 640x480 JPEG "
          f"({sum(len(d) for _, d in images) / n / 1e3:.0f} kB avg, chunks of {chunk}, made in {t_gen:.1f} s), "
          f"function latency {args.latency * 1e3:.0f} ms, {w} function workers, {args.boxes} boxes/frame; "
          f"bridge under test: {ROOT}; {load()}")
    print(f"CVAT double costs: {describe(COSTS)}")

    rows: list[tuple[str, int, float, int]] = []  # label, frames, seconds, calls in flight
    # each function in its own process, as Nuclio runs it (one URL each; the path names the function)
    calls_log = tmp / "calls.log"  # the slow function's calls (start, end), read by the service rounds
    with serve_function(FUNCTION_DIR, {**slow_env, "FIXED_LATENCY_LOG": str(calls_log)}, max_workers=w) as fn_url, \
            serve_function(FUNCTION_DIR, fast_env, max_workers=w) as fast_url:
        with CvatDouble(costs=COSTS) as cvat:
            project = cvat.create_project("bench-detect", LABELS)
            sdk_task, _ = new_task(cvat, project, "sdk", images)
            sdk_s = run_sdk(cvat.url, sdk_task, f"{fn_url}/{SLOW}/", tmp / "sdk-cache")
            check_shapes(cvat, sdk_task, expected, "annotate_task")
        rows.append(("cvat_sdk annotate_task (1 call in flight)", n, sdk_s, 1))
        print(f"  annotate_task done ({load()})", flush=True)
        one_s, _, _ = bridge_row(fn_url, COSTS, images, tmp, "bridge-1", 1)
        rows.append(("bridge run_detect, concurrency 1", n, one_s, 1))
        bridge_s, prof, summary = bridge_row(fn_url, COSTS, images, tmp, "bridge-4", w)
        rows.append((f"bridge run_detect, concurrency {w}", n, bridge_s, w))
        small_s, small_prof, _ = bridge_row(fn_url, COSTS, images[:small_n], tmp, "bridge-small", w)
        rows.append((f"bridge run_detect, concurrency {w}", small_n, small_s, w))
        warm_s, _, _ = bridge_row(fn_url, COSTS, images[:small_n], tmp, "bridge-small-warm", w, warm_first_chunk=True)
        rows.append(("  diag.: first chunk built before the run", small_n, warm_s, w))
        free_s, free_prof, _ = bridge_row(fn_url, None, images, tmp, "bridge-free", w)
        rows.append(("  diag.: zero-cost CVAT double", n, free_s, w))
        rows.append(("  diag.: the function calls alone, no CVAT", n, calls_alone(fn_url, images, w), w))
        with serve_in_thread(load_function(FUNCTION_DIR, slow_env), max_workers=w) as shared_url:
            rows.append(("  diag.: the same, function in this process", n, calls_alone(shared_url, images, w), w))
        print(f"  bridge rows done ({load()})", flush=True)

        print()
        print(f"{'driver':<46}{'frames':>7}{'seconds':>9}{'frames/s':>10}{'saturation':>11}")
        for label, frames, seconds, in_flight in rows:
            print(f"{label:<46}{frames:>7}{seconds:>9.2f}{frames / seconds:>10.1f}"
                  f"{frames / seconds / (in_flight / args.latency):>11.2f}")
        print(f"{'model bound (calls in flight / latency)':<46}{'':>7}{'':>9}{bound:>10.1f}   (1 in flight: "
              f"{1 / args.latency:.1f})")
        sdk_fps, one_fps, bridge_fps = n / sdk_s, n / one_s, n / bridge_s
        equal, four = one_fps / sdk_fps, bridge_fps / sdk_fps
        saturation, small_sat = bridge_fps / bound, small_n / small_s / bound
        print(f"\nbridge ÷ annotate_task at equal concurrency (1 call in flight each): {equal:.2f}x")
        print(f"bridge ({w} calls in flight) ÷ annotate_task (1 in flight): {four:.2f}x — of which "
              f"{four / equal:.2f}x is the {w} calls in flight (concurrency 1 → {w} for the bridge) and "
              f"{equal:.2f}x the bridge itself")
        print(f"saturation (frames/s ÷ (workers / latency)): {n} frames {saturation:.2f}, {small_n} frames "
              f"{small_sat:.2f}")
        first_chunk = COSTS.chunk_build_first + COSTS.chunk_read + 2 * COSTS.request
        for frames in (n, small_n):
            model = frames / bound
            print(f"  ceiling for {frames} frames with a first chunk CVAT still has to build "
                  f"(~{first_chunk:.2f} s before any frame) plus one write: "
                  f"{model / (model + first_chunk + COSTS.write_fixed):.2f}")
        model = n / bound
        print(f"bridge profile ({n} frames, concurrency {w}): first frame after {prof.first_frame:.2f} s (job, "
              f"labels, meta, first chunk); frame stream blocked {prof.stream_blocked:.2f} s in "
              f"{len(prof.chunk_waits)} chunk wait(s) [{', '.join(f'{x:.2f}' for x in prof.chunk_waits)}]; "
              f"{prof.detect_calls} detect calls, mean {prof.detect_seconds / max(1, prof.detect_calls) * 1e3:.0f} "
              f"ms, max {prof.max_in_flight} in flight; writes {len(prof.writes)} "
              f"call(s) [{', '.join(f'{x:.2f}' for x in prof.writes)}] s; ideal model time {model:.2f} s, "
              f"idle-worker time {bridge_s - model:.2f} s")
        print(f"  saturation between the first call and the last answer: {n} frames {window_sat(prof, bound):.2f}, "
              f"{small_n} frames {window_sat(small_prof, bound):.2f}")
        print(f"  {small_n} frames: first frame {small_prof.first_frame:.2f} s, stream blocked "
              f"{small_prof.stream_blocked:.2f} s, writes [{', '.join(f'{x:.2f}' for x in small_prof.writes)}] s")
        print(f"  zero-cost double: first frame {free_prof.first_frame:.2f} s, stream blocked "
              f"{free_prof.stream_blocked:.2f} s, writes {sum(free_prof.writes):.2f} s")
        print(f"  {summary}")

        service: list[tuple[int, str, float, float, float]] = []
        if args.service_jobs > 1:
            service = service_rows(fn_url, images, tmp, args.service_jobs, w, args.latency, small_n, calls_log)
            print(f"\nthrough the service: {args.service_jobs} jobs set to 'in progress' at once, webhooks acked by "
                  f"the bridge app ({w} calls in flight per function), interleaved, mean of 2 rounds each "
                  f"({load()}):")
            print(f"{'frames/job':>11}  {'bridge serve':<28}{'all jobs':>9}{'1st job':>9}{'calls window':>14}   "
                  "(saturation: state changes → last job done; the first job's claim → end; the function's "
                  "first call → last)")
            for frames, label, whole, first, busy in service:
                print(f"{frames:>11}  {label:<28}{whole:>9.2f}{first:>9.2f}{busy:>14.2f}")

        rss: dict[str, Any] | None = None
        per_frame_ms = old_ms = new_ms = None
        if args.large_frames:
            t_gen = time.perf_counter()
            big = large_frames(args.large_frames)
            t_gen = time.perf_counter() - t_gen
            avg = sum(len(d) for _, d in big) / len(big) / 1e6
            big_chunk = default_chunk_size(read_frame(*big[0]))
            old_ms, new_ms = encode_ratio(big[0][1])
            with CvatDouble(costs=COSTS) as cvat:
                project = cvat.create_project("bench-detect-rss", LABELS)
                task, job = new_task(cvat, project, "rss", big)
                del big
                rss = rss_child(cvat.url, fast_url, job, tmp / "rss", w)
                check_shapes(cvat, task, args.large_frames * args.boxes, "run_detect (RSS child)")
            per_frame_ms = rss["cpu_s"] * 1000 / args.large_frames if "cpu_s" in rss else None
            print(f"\n{args.large_frames} frames 5184x3888 (20 MP) JPEG ({avg:.1f} MB avg, chunks of {big_chunk}, "
                  f"made in {t_gen:.1f} s), 0-latency function (model time excluded), {w} workers, the bridge in a "
                  f"subprocess ({load()}):")
            shown = f"{per_frame_ms:.1f} ms" if per_frame_ms is not None else "n/a"
            print(f"  bridge CPU per frame {shown} (everything the bridge process did: chunk download and unzip, "
                  f"base64, body, HTTP, answer, shapes, writes); wall {rss['seconds']:.1f} s = "
                  f"{args.large_frames / rss['seconds']:.1f} frames/s")
            print(f"  request body of one frame, CPU: json.dumps of a base64 str {old_ms:.1f} ms, the bridge's "
                  + (f"Body {new_ms:.1f} ms ({old_ms / max(1e-9, new_ms):.1f}x less)" if new_ms else "Body: n/a"))
            print(f"  peak RSS: baseline {rss['baseline_rss_mb']:.0f} MB (after imports), peak "
                  f"{rss['peak_rss_mb']:.0f} MB (VmHWM; ru_maxrss {rss['ru_maxrss_mb']:.0f} MB carries the parent's "
                  "peak across exec)")

    print(f"\nSUMMARY ({load()})")
    print(f"  bridge ÷ annotate_task, equal concurrency        {equal:>8.2f}x")
    print(f"  bridge ÷ annotate_task, {w} vs 1 in flight  >= 3x   {four:>8.2f}x   {mark(four >= 3)}")
    print(f"  saturation {n} frames              >= 0.85   {saturation:>8.2f}    {mark(saturation >= 0.85)}")
    print(f"  saturation {small_n} frames               >= 0.6    {small_sat:>8.2f}    {mark(small_sat >= 0.6)}")
    for frames, label, whole, first, busy in service:
        if label == SERVICE_CONFIGS[0][2]:
            goal = 0.85 if frames == n else 0.6
            print(f"  service, {args.service_jobs} queued {frames}-frame jobs, whole run  >= {goal:<5} "
                  f"{whole:>6.2f}    {mark(whole >= goal)}   (first call → last: {busy:.2f} {mark(busy >= goal)}; "
                  f"the first job on an idle bridge: {first:.2f})")
    if per_frame_ms is not None:
        print(f"  20 MP bridge CPU per frame       < 40 ms  {per_frame_ms:>6.1f} ms   {mark(per_frame_ms < 40)}")
    if rss is not None:
        print(f"  peak RSS                         < 1 GB   {rss['peak_rss_mb']:>6.0f} MB   "
              f"{mark(rss['peak_rss_mb'] < 1024)}")
    else:
        print("  20 MP and peak RSS               skipped (--large-frames 0)")


if __name__ == "__main__":
    main()
