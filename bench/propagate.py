"""Propagate benchmark: the bridge's ``propagate`` pipeline against calling the tracker frame by frame.

Run: ``.venv/bin/python bench/propagate.py [--frames 120] [--objects 4] [--sam2]``

Both sides run in one process against the same CVAT test double (CVAT 2.73's cost shape, as
``bench/detect.py``) and the same tracker function served over HTTP, interleaved (A, B, A, B):

- **frame by frame** — what CVAT's UI does with a tracker: for every frame, read that frame from CVAT
  (``GET /api/tasks/{id}/data?type=frame&quality=original``), call the tracker with the objects'
  states, keep the answers; the shapes would then be saved by the UI;
- **pipeline** — ``bridge.pipelines.propagate.propagate_job``: frames streamed by original chunk
  (prefetched), one tracker call per frame for every object, the tracks written in batches at the end
  (`lost_after` high: both sides call the tracker on every frame, lost objects included).

Default tracker: the E2E blob tracker (``tests/e2e/functions/blob_tracker``, ~1 ms a call), so the rows
show the bridge's and CVAT's share. ``--sam2``: the real SAM 2 tracker (random hiera-tiny, encoder at
256 px, CPU), where the model dominates. Rows: frames/s each side, their ratio, and the pipeline's
peak RSS growth (it must not grow with the number of frames).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
# bench/sam2.py would shadow the sam2 package the tracker imports: drop this script's folder from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

from bench.detect import COSTS, describe  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.cvat.client import CvatClient  # noqa: E402
from bridge.cvat.types import Shape  # noqa: E402
from bridge.events import Trigger  # noqa: E402
from bridge.nuclio.client import NuclioClient  # noqa: E402
from bridge.pipelines.base import MemoryProgress, StepContext  # noqa: E402
from bridge.pipelines.params import PropagateParams  # noqa: E402
from bridge.pipelines.propagate import propagate_job  # noqa: E402
from tests.doubles.cvat_double import CvatDouble  # noqa: E402
from tests.doubles.function_server import load_function, serve_in_thread  # noqa: E402

LABELS = [{"name": "fish", "type": "rectangle", "attributes": []}]


def frames(n: int, objects: int, size: tuple[int, int] = (640, 480)) -> list[tuple[str, bytes]]:
    """``objects`` bright squares drifting right 2 px per frame on a dark, noisy background."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 40, (size[1], size[0]), dtype=np.uint8)
        for k in range(objects):
            x, y = 20 + 2 * i + 10 * k, 30 + 100 * k
            img[y:y + 40, x:x + 40] = 230
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append((f"f_{i:04d}.jpg", data.tobytes()))
    return out


def boxes(objects: int) -> list[list[float]]:
    return [[20.0 + 10 * k, 30.0 + 100 * k, 60.0 + 10 * k, 70.0 + 100 * k] for k in range(objects)]


def frame_by_frame(cvat: CvatClient, http: httpx.Client, fn_url: str, task_id: int, n: int, objects: int) -> float:
    """The UI's way: one frame read and one tracker call per frame."""
    sdk = cvat._sdk()  # noqa: SLF001 - the same authenticated session the bridge uses
    started = time.perf_counter()
    states = None
    for i in range(n):
        _, resp = sdk.api_client.tasks_api.retrieve_data(task_id, type="frame", number=i, quality="original",
                                                         _parse_response=False)
        image = base64.b64encode(resp.data).decode()
        body = ({"image": image, "shapes": [{"type": "rectangle", "points": b} for b in boxes(objects)],
                 "states": []} if states is None else {"image": image, "states": states})
        answer = http.post(fn_url, json=body, timeout=300).json()
        states = answer["states"]
    return n / (time.perf_counter() - started)


def pipeline(cvat: CvatClient, nuclio: NuclioClient, settings: Settings, job_id: int, task_id: int, fish: int,
             n: int, objects: int, function: str) -> tuple[float, float]:
    """The bridge's propagate pipeline over the job: frames/s and RSS growth (MB)."""
    cvat.create_shapes(job_id, [Shape(type="rectangle", label_id=fish, frame=0, points=b, source="manual")
                                for b in boxes(objects)], [])
    ctx = StepContext(trigger=Trigger(kind="job_completed", resource="job", resource_id=job_id, job_id=job_id,
                                      task_id=task_id), params=PropagateParams(function=function, lost_after=1000),
                      settings=settings.pipelines, cvat=cvat, nuclio=nuclio, progress=MemoryProgress(), job_id=None)
    rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    result = propagate_job(ctx, job_id, ctx.params)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    assert result.frames_failed == 0, result.summary
    return n / seconds, (psutil.Process().memory_info().rss - rss) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sam2", action="store_true", help="the real SAM 2 tracker (random hiera-tiny, 256 px)")
    args = ap.parse_args()
    if args.sam2:
        env = {"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_WARMUP": "0", "SAM2_IMAGE_SIZE": "256",
               "SAM2_TRACKER_MAX_SCALE_CHANGE": "1000"}
        fn, name = load_function(REPO / "nuclio_functions" / "sam2_tracker", env), "pth-sam2-tracker"
    else:
        fn, name = load_function(REPO / "tests" / "e2e" / "functions" / "blob_tracker"), "blob-tracker"
    print(f"propagate: {args.frames} frames of 640x480, {args.objects} objects, tracker {name}; "
          f"CVAT double: {describe(COSTS)}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with CvatDouble(costs=COSTS) as double, serve_in_thread({name: fn}, max_workers=1) as fn_url, \
            httpx.Client() as http:
        settings = Settings(_env_file=None, webhook_secret="bench-secret-0123456789", cvat_url=double.url,
                            cvat_username="bridge-bot", cvat_password="bridge-pass",
                            nuclio_function_url=fn_url + "/{name}", data_dir=Path("/tmp/bench-propagate"),
                            nuclio_timeout=600)
        project = double.create_project("fish", LABELS)
        fish = double.label_id(project, "fish")
        images = frames(args.frames, args.objects)
        rows: dict[str, list[float]] = {"frame by frame": [], "pipeline": [], "rss": []}
        with CvatClient.from_settings(settings) as cvat, NuclioClient.from_settings(settings) as nuclio:
            for r in range(args.rounds):
                a = double.create_task(project, f"ui {r}", images, segment_size=args.frames)
                rows["frame by frame"].append(frame_by_frame(cvat, http, f"{fn_url}/{name}", a, args.frames,
                                                             args.objects))
                b = double.create_task(project, f"bridge {r}", images, segment_size=args.frames)
                (job,) = double.job_ids(b)
                fps, rss = pipeline(cvat, nuclio, settings, job, b, fish, args.frames, args.objects, name)
                rows["pipeline"].append(fps)
                rows["rss"].append(rss)
    ui, br = rows["frame by frame"], rows["pipeline"]
    print(f"{'row':<42}{'per round':>30}")
    print(f"{'frame by frame (UI way), frames/s':<42}{'  '.join(f'{v:8.2f}' for v in ui):>30}")
    print(f"{'propagate pipeline, frames/s':<42}{'  '.join(f'{v:8.2f}' for v in br):>30}")
    print(f"{'pipeline / frame by frame':<42}{'  '.join(f'{b / u:8.2f}' for b, u in zip(br, ui, strict=True)):>30}")
    print(f"{'pipeline RSS growth, MB':<42}{'  '.join(f'{v:8.1f}' for v in rows['rss']):>30}")


if __name__ == "__main__":
    main()
