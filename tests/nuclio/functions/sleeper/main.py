"""Test function with a fixed latency that measures how many events it runs at once.

``user_data.max_in_flight`` is the highest number of concurrent handler calls seen; each answer
also carries it. Body: ``{"sleep": seconds}`` (default ``SLEEPER_SECONDS`` or 0.2).
"""

import os
import threading
import time


def init_context(context):
    context.user_data.lock = threading.Lock()
    context.user_data.in_flight = 0
    context.user_data.max_in_flight = 0
    context.user_data.calls = 0
    context.user_data.default_sleep = float(os.environ.get("SLEEPER_SECONDS", "0.2"))


def handler(context, event):
    ud = context.user_data
    with ud.lock:
        ud.calls += 1
        ud.in_flight += 1
        ud.max_in_flight = max(ud.max_in_flight, ud.in_flight)
    try:
        time.sleep(float(event.body.get("sleep", ud.default_sleep)))
    finally:
        with ud.lock:
            ud.in_flight -= 1
    return {"max_in_flight": ud.max_in_flight, "calls": ud.calls}
