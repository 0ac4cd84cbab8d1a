"""SAM 2 function benchmark: embedding cache and batched decoding, measured side by side.

    .venv/bin/python bench/sam2.py [--device cpu|cuda] [--config configs/sam2.1/sam2.1_hiera_t.yaml]
                                   [--checkpoint PATH] [--size 1920x1080] [--prompts 16] [--repeats 3]

Runs the function's own request path (``protocol`` parsing -> ``Sam2Service`` -> JSON answer), no HTTP.
Random weights (no ``--checkpoint``) are fine for timing: the network's cost does not depend on them.

1. First click on a new image (cache miss: decode + encode + decode mask) vs a second click on the
   same image (cache hit: prompt encoder + mask decoder only). Goal: second/first <= 0.15.
2. K box prompts on one image (embedding cached): one batch request vs K one-prompt requests.
3. With ``--pipeline``: K rectangles through the ``sam2_refine`` pipeline (``refine_job`` against the
   CVAT test double, the function served over loopback HTTP): batched calls vs one call per prompt.
4. Tracker (``nuclio_functions/sam2_tracker``, ``--tracker-frames`` 200, 0 skips): a synthetic
   ``--tracker-size`` video (a disk and a block moving), three objects (rectangle, polygon, mask)
   started on frame 0 and continued frame by frame through the function's handler, with CVAT's
   signing of the states in between (as ``POST /api/lambda/functions/pth-sam2-tracker`` does).
   Frames/s at the config's encoder input 1024 and at 512 (``--tracker-speed-frames`` each), then
   all frames at ``--tracker-image-size`` (default 256, so 200 frames take ~2 min on 2 cores) with
   process RSS and the largest signed state per frame, first vs last (goal: flat; the encoder input
   changes the time per frame, not what is kept). Random weights segment nothing in particular, so the
   scale guard is opened (``SAM2_TRACKER_MAX_SCALE_CHANGE``) to keep every object on the found
   path (mask decode, polygon / RLE encoding), which is what a real track costs.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from cvat_sdk.masks import encode_mask

FUNCTION_DIR = Path(__file__).resolve().parents[1] / "nuclio_functions" / "sam2"


def _image_b64(width: int, height: int, variant: int) -> str:
    rng = np.random.default_rng(variant)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, variant % 256)], -1).astype(np.uint8)
    for _ in range(12):
        c = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(img, c, int(rng.integers(20, max(21, height // 6))), rng.integers(0, 255, 3).tolist(), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    ap.add_argument("--checkpoint", default="", help="checkpoint path; empty = random weights")
    ap.add_argument("--size", default="1920x1080", help="image WIDTHxHEIGHT")
    ap.add_argument("--prompts", type=int, default=16, help="K box prompts for the batch comparison")
    ap.add_argument("--repeats", type=int, default=3, help="images (first/second click) and batch rounds")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--pipeline", action="store_true", help="also time refine_job, batched vs per prompt")
    ap.add_argument("--tracker-frames", type=int, default=200, help="tracker frames (0: skip the tracker rows)")
    ap.add_argument("--tracker-speed-frames", type=int, default=5, help="tracker frames timed at inputs 1024 and 512")
    ap.add_argument("--tracker-size", default="320x240", help="tracker video WIDTHxHEIGHT")
    ap.add_argument("--tracker-image-size", type=int, default=256,
                    help="tracker encoder input (SAM2_IMAGE_SIZE) of the long memory run")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    # This script is itself named sam2.py: drop its folder from the path so ``import sam2`` finds
    # Meta's package, then make the function's modules importable.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(FUNCTION_DIR))
    import torch
    from cache import EmbeddingCache
    from model import Sam2Model
    from protocol import parse_batch, parse_interactor
    from service import Sam2Service, ServiceConfig

    t0 = time.perf_counter()
    model = Sam2Model.load(args.config, args.checkpoint or None, args.device)
    model.warm_up()
    load_s = time.perf_counter() - t0
    service = Sam2Service(model, EmbeddingCache(4 * 1024**3, 3600), ServiceConfig())
    sync = torch.cuda.synchronize if model.device.startswith("cuda") else (lambda: None)

    def click(image: str, x: float, y: float) -> None:
        body = {"image": image, "pos_points": [[x, y]], "neg_points": [], "obj_bbox": None}
        json.dumps(service.interact(parse_interactor(body)))
        sync()

    first, second = [], []
    for r in range(args.repeats):
        image = _image_b64(width, height, 1000 + r)
        first.append(_timed(lambda image=image: click(image, width * 0.4, height * 0.4)))
        second.append(_timed(lambda image=image: click(image, width * 0.6, height * 0.55)))

    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(args.prompts):
        x1, y1 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        x2, y2 = min(width, x1 + rng.uniform(40, width * 0.2)), min(height, y1 + rng.uniform(40, height * 0.2))
        boxes.append([x1, y1, x2, y2])
    image = _image_b64(width, height, 7)
    service.batch(parse_batch({"image": image, "prompts": [{"bbox": boxes[0]}]}, 10**6))  # cache the embedding

    def batch_call() -> None:
        json.dumps(service.batch(parse_batch({"image": image, "prompts": [{"bbox": b} for b in boxes]}, 10**6)))
        sync()

    def per_prompt_calls() -> None:
        for b in boxes:
            json.dumps(service.batch(parse_batch({"image": image, "prompts": [{"bbox": b}]}, 10**6)))
        sync()

    batch_ms = [_timed(batch_call) for _ in range(args.repeats)]
    single_ms = [_timed(per_prompt_calls) for _ in range(args.repeats)]

    f, s = statistics.median(first), statistics.median(second)
    b, p = statistics.median(batch_ms), statistics.median(single_ms)
    k = args.prompts
    res = {
        "config": args.config, "weights": args.checkpoint or "random", "device": model.device,
        "torch_threads": torch.get_num_threads(), "image": f"{width}x{height}", "load_s": round(load_s, 2),
        "first_click_ms": round(f, 1), "second_click_ms": round(s, 1), "second_over_first": round(s / f, 4),
        "k_prompts": k, "batch_ms": round(b, 1), "per_prompt_ms": round(p, 1),
        "batch_prompts_per_s": round(k / b * 1000, 1), "per_prompt_prompts_per_s": round(k / p * 1000, 1),
        "batch_over_per_prompt_time": round(b / p, 4),
    }
    print(f"SAM 2 bench: {res['config']} ({res['weights']} weights) on {res['device']}, "
          f"{res['torch_threads']} torch threads, image {res['image']}, {args.repeats} repeats (median), "
          f"model load + warm-up {res['load_s']} s")
    rows = [
        ("first click, new image (encode)", f"{f:9.1f} ms", ""),
        ("second click, same image (cache hit)", f"{s:9.1f} ms", ""),
        ("  ratio second / first", f"{s / f:9.3f}", "goal <= 0.15: " + ("met" if s / f <= 0.15 else "NOT met")),
        (f"{k} boxes, one batch request", f"{b:9.1f} ms", f"{res['batch_prompts_per_s']:8.1f} prompts/s"),
        (f"{k} boxes, {k} one-prompt requests", f"{p:9.1f} ms", f"{res['per_prompt_prompts_per_s']:8.1f} prompts/s"),
        ("  ratio batch / per-prompt time", f"{b / p:9.3f}", f"speed-up x{p / b:.2f}"),
    ]
    if args.pipeline:
        pb, pp = _pipeline_bench(service, base64.b64decode(image), boxes, args.repeats)
        res.update(pipeline_batch_prompts_per_s=round(k / pb, 1), pipeline_per_prompt_prompts_per_s=round(k / pp, 1))
        rows.append((f"refine_job, {k} rectangles, batched", f"{pb * 1000:9.1f} ms",
                     f"{k / pb:8.1f} prompts/s (one call per prompt: {k / pp:.1f}/s, x{pp / pb:.2f})"))
    if args.tracker_frames > 0:
        tracker_rows, tracker_res = _tracker_bench(args)
        rows.extend(tracker_rows)
        res.update(tracker_res)
    for name, value, note in rows:
        print(f"  {name:<40} {value:>14}   {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _video_frame(width: int, height: int, k: int) -> tuple[str, list[dict]]:
    """Frame ``k`` of the synthetic video (JPEG base64) and the three objects' shapes on it."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 3 + k) % 90 + 40, (yy * 5) % 70 + 50, np.full_like(xx, 70)], -1).astype(np.uint8)
    r = max(8, height // 10)
    cx = int(width * 0.2 + (k * 2) % int(width * 0.5))
    cy = int(height * 0.4 + 10 * np.sin(k / 10))
    cv2.circle(img, (cx, cy), r, (40, 220, 250), -1)
    bx = int(width * 0.7 - (k % int(width * 0.4)))
    cv2.rectangle(img, (bx, int(height * 0.65)), (bx + 2 * r, int(height * 0.65) + 2 * r), (200, 60, 40), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    disk = np.zeros((height, width), np.uint8)
    cv2.circle(disk, (cx, cy), r, 1, -1)
    shapes = [{"type": "rectangle", "points": [cx - r, cy - r, cx + r, cy + r]},
              {"type": "polygon", "points": [bx, int(height * 0.65), bx + 2 * r, int(height * 0.65),
                                             bx + 2 * r, int(height * 0.65) + 2 * r, bx, int(height * 0.65) + 2 * r]},
              {"type": "mask", "points": encode_mask(disk.astype(bool))}]
    return base64.b64encode(buf.tobytes()).decode(), shapes


def _track(fn: object, signer: object, frames: list[str], shapes: list[dict],
           on_frame: Callable[[int, list[str]], None]) -> float:
    """Start on frame 0 and continue over the rest like CVAT does (states signed between calls);
    returns the seconds spent in the frames after the first."""
    import yaml

    from tests.nuclio_functions.cvat_lambda import function_metadata, tracker_answer, tracker_payload

    meta = function_metadata(yaml.safe_load((FUNCTION_DIR.parent / "sam2_tracker" / "function.yaml").read_text()))

    def call(request: dict, image: str) -> dict:
        status, answer = fn.call(tracker_payload(meta, request, image, signer))  # type: ignore[attr-defined]
        if status != 200:
            raise RuntimeError(f"tracker answered {status}: {answer}")
        return json.loads(json.dumps(tracker_answer(meta, answer, signer)))

    answer = call({"frame": 0, "shapes": shapes}, frames[0])
    t0 = time.perf_counter()
    for k, image in enumerate(frames[1:], start=1):
        answer = call({"frame": k, "states": answer["states"]}, image)
        on_frame(k, answer["states"])
    return time.perf_counter() - t0


def _tracker_bench(args: argparse.Namespace) -> tuple[list[tuple[str, str, str]], dict[str, object]]:
    repo = FUNCTION_DIR.parents[1]
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    from tests.doubles.function_server import load_function
    from tests.nuclio_functions.cvat_lambda import TimestampSigner

    width, height = (int(v) for v in args.tracker_size.lower().split("x"))
    n = args.tracker_frames
    frames, shapes = [], []
    for k in range(n):
        image, shp = _video_frame(width, height, k)
        frames.append(image)
        shapes = shapes or shp
    env = {"SAM2_CHECKPOINT": args.checkpoint, "SAM2_CONFIG": args.config, "SAM2_DEVICE": args.device,
           "SAM2_WARMUP": "1", "SAM2_CACHE_MB": "32", "SAM2_TRACKER_MAX_SCALE_CHANGE": "1000"}
    signer = TimestampSigner("bench-secret", "cvat-tracker-state:pth-sam2-tracker")

    def load(size: int) -> object:
        return load_function(FUNCTION_DIR.parent / "sam2_tracker", {**env, "SAM2_IMAGE_SIZE": str(size)})

    # 1. speed at the config's 1024 input and at 512, a few frames each
    k_speed = max(2, min(args.tracker_speed_frames + 1, n))
    fps = {}
    for size in (1024, 512):
        fps[size] = (k_speed - 1) / _track(load(size), signer, frames[:k_speed], shapes, lambda k, s: None)
    # 2. memory over the whole video at --tracker-image-size
    rss: list[float] = []
    state_sizes: list[int] = []

    def record(k: int, states: list[str]) -> None:
        rss.append(_rss_mb())
        state_sizes.append(max(len(s) for s in states))

    size = args.tracker_image_size
    fps[size] = (n - 1) / _track(load(size), signer, frames, shapes, record)
    early = min(20, len(rss)) - 1  # the embedding cache (32 MB) is full by then
    growth = rss[-1] - rss[early]
    slope_kb = float(np.polyfit(np.arange(early, len(rss)), rss[early:], 1)[0] * 1024) if len(rss) - early > 2 else 0.0
    # flat: no RSS growth once the embedding cache is full, and the state varies only by a few digits
    flat = growth < 20 and max(state_sizes) - min(state_sizes) < 64
    res: dict[str, object] = {
        "tracker_video": f"{width}x{height}", "tracker_objects": 3, "tracker_frames": n,
        "tracker_fps_by_encoder_input": {str(k): round(v, 3) for k, v in fps.items()},
        "tracker_rss_mb_at_frame": {str(k + 1): round(rss[k], 1) for k in (early, len(rss) // 2 - 1, len(rss) - 1)},
        "tracker_rss_growth_mb": round(growth, 1), "tracker_rss_slope_kb_per_frame": round(slope_kb, 1),
        "tracker_state_bytes_first": state_sizes[0], "tracker_state_bytes_last": state_sizes[-1],
        "tracker_state_bytes_min": min(state_sizes), "tracker_state_bytes_max": max(state_sizes),
    }
    rows = []
    for enc in sorted(fps, reverse=True):
        frames_run = n - 1 if enc == size else k_speed - 1
        note = f"{1000 / fps[enc]:.0f} ms/frame over {frames_run} frames; x{fps[enc] / fps[1024]:.2f} vs enc 1024"
        rows.append((f"tracker, 3 objects, {width}x{height}, enc {enc}", f"{fps[enc]:9.2f} fps", note))
    rows += [
        (f"  RSS frame {early + 1} -> {len(rss)} (enc {size})", f"{rss[early]:7.0f} MB",
         f"-> {rss[-1]:.0f} MB ({growth:+.1f} MB, {slope_kb:+.1f} KB/frame; embedding cache 32 MB)"),
        ("  signed state per object, first / last", f"{state_sizes[0]:7d} B",
         f"/ {state_sizes[-1]} B (range {min(state_sizes)}..{max(state_sizes)} B): "
         + ("flat" if flat else "NOT flat")),
    ]
    return rows, res


def _pipeline_bench(service: object, image: bytes, boxes: list[list[float]], repeats: int) -> tuple[float, float]:
    """Median seconds of ``refine_job`` over one frame with ``boxes`` drawn as rectangles: batched
    (the pipeline's default) and with one prompt per function call."""
    repo = FUNCTION_DIR.parents[1]
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    from protocol import parse_batch

    from bridge.config import Settings
    from bridge.cvat.client import CvatClient
    from bridge.cvat.types import Shape
    from bridge.events import Trigger
    from bridge.nuclio.client import NuclioClient
    from bridge.pipelines import sam2_refine
    from bridge.pipelines.base import MemoryProgress, StepContext
    from bridge.pipelines.params import Sam2RefineParams
    from tests.doubles.cvat_double import CvatDouble
    from tests.doubles.function_server import free_port, serve_in_thread

    class Served:  # the batch protocol of the already built service, for the loopback server
        name = "sam2"

        def call_raw(self, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
            answer = service.batch(parse_batch(json.loads(body), 10**6))  # type: ignore[attr-defined]
            return 200, "application/json", json.dumps(answer).encode()

    times: dict[int, list[float]] = {sam2_refine.MAX_PROMPTS_PER_CALL: [], 1: []}
    with CvatDouble() as cvat, serve_in_thread(Served(), max_workers=2) as url:  # type: ignore[arg-type]
        client = CvatClient(cvat.url, access_token="test-token", timeout=60, retries=0)
        nuclio = NuclioClient(function_url=url, dashboard_url=f"http://127.0.0.1:{free_port()}", timeout=600)
        project = cvat.create_project("bench", [{"name": "object"}])
        label = cvat.label_id(project, "object")
        settings = Settings(_env_file=None, cvat_url=cvat.url, cvat_access_token="test-token", allow_unsigned=True)
        original = sam2_refine.MAX_PROMPTS_PER_CALL
        try:
            for r in range(repeats):
                for per_call in times:
                    task = cvat.create_task(project, f"t{r}-{per_call}", [("frame.jpg", image)])
                    (job,) = cvat.job_ids(task)
                    client.create_shapes(job, [Shape("rectangle", label, 0, [float(v) for v in b], source="manual")
                                               for b in boxes])
                    ctx = StepContext(trigger=Trigger("job_in_progress", "job", job, project, task, job),
                                      params=Sam2RefineParams(), settings=settings, cvat=client, nuclio=nuclio,
                                      progress=MemoryProgress())
                    sam2_refine.MAX_PROMPTS_PER_CALL = per_call
                    t0 = time.perf_counter()
                    sam2_refine.refine_job(ctx, job, "sam2", conv_mask_to_poly=True, keep_prompts=False)
                    times[per_call].append(time.perf_counter() - t0)
        finally:
            sam2_refine.MAX_PROMPTS_PER_CALL = original
            client.close()
            nuclio.close()
    return statistics.median(times[original]), statistics.median(times[1])


if __name__ == "__main__":
    main()
