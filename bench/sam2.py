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
    for name, value, note in rows:
        print(f"  {name:<40} {value:>14}   {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


def _pipeline_bench(service: object, image: bytes, boxes: list[list[float]], repeats: int) -> tuple[float, float]:
    """Median seconds of ``refine_job`` over one frame with ``boxes`` drawn as rectangles: batched
    (the pipeline's default) and with one prompt per function call."""
    repo = FUNCTION_DIR.parents[1]
    if str(repo) not in sys.path:
        sys.path.append(str(repo))
    from protocol import parse_batch

    from bridge.app.settings import Settings
    from bridge.cvat.client import CvatClient
    from bridge.cvat.types import Shape
    from bridge.nuclio.client import NuclioClient
    from bridge.pipelines import sam2_refine
    from bridge.pipelines.base import MemoryProgress, StepContext, Trigger
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
