"""Benchmark detector with a fixed latency: sleeps, then answers a fixed set of boxes.

``FIXED_LATENCY_SECONDS`` (default 0.05) is the time per call; ``FIXED_LATENCY_BOXES`` (default 5)
the number of rectangles answered, alternating labels ``car`` / ``person``, all inside the top-left
400×400 px (valid on any frame at least that large). The image is not decoded: the latency is the
model. ``user_data.max_in_flight`` records the most concurrent calls seen; with ``FIXED_LATENCY_LOG``
set, each call appends ``<start> <end>`` (``time.time()``) to that file.
"""

import os
import threading
import time


def init_context(context):
    ud = context.user_data
    ud.lock = threading.Lock()
    ud.in_flight = 0
    ud.max_in_flight = 0
    ud.calls = 0
    ud.latency = float(os.environ.get("FIXED_LATENCY_SECONDS", "0.05"))
    ud.boxes = int(os.environ.get("FIXED_LATENCY_BOXES", "5"))
    ud.log = os.environ.get("FIXED_LATENCY_LOG") or None


def handler(context, event):
    ud = context.user_data
    if not isinstance(event.body, dict) or "image" not in event.body:
        return context.Response(body='{"error": "no image"}', status_code=400, content_type="application/json")
    with ud.lock:
        ud.calls += 1
        ud.in_flight += 1
        ud.max_in_flight = max(ud.max_in_flight, ud.in_flight)
    start = time.time()
    try:
        time.sleep(ud.latency)
    finally:
        with ud.lock:
            ud.in_flight -= 1
            if ud.log:
                with open(ud.log, "a") as log:
                    log.write(f"{start:.6f} {time.time():.6f}\n")
    return [
        {"label": ("car", "person")[i % 2], "type": "rectangle", "confidence": "0.9",
         "points": [10.0 + 70 * i, 20.0 + 60 * i, 60.0 + 70 * i, 90.0 + 60 * i]}
        for i in range(ud.boxes)
    ]
