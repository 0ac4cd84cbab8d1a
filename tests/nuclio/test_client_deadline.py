"""Every call ends by its time limit, whatever the server does (issue 11, case 4).

Real sockets on loopback (``fault_server``): httpx's timeouts are per read, so a server trickling one
byte per second never trips them; the client's own deadline must. Bounds are generous (2 loaded cores):
each asserts "seconds, not minutes".
"""

import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from bridge.errors import FunctionUnavailable
from tests.nuclio.conftest import make_client, served
from tests.nuclio.fault_server import serve_faults

SLACK = 2.0  # seconds allowed past a limit on a loaded machine


def _timed_failure(call) -> tuple[float, str]:
    start = time.monotonic()
    with pytest.raises(FunctionUnavailable) as err:
        call()
    return time.monotonic() - start, str(err.value)


@pytest.mark.parametrize("mode", ["trickle_body", "trickle_all", "silent_after_headers"])
def test_one_attempt_ends_at_the_function_timeout(mode):
    with serve_faults(mode) as (state, url), make_client(url, timeout=2.0, retries=0) as client:
        elapsed, msg = _timed_failure(lambda: client.invoke("slow", {"a": 1}))
    assert elapsed < 2.0 + SLACK, f"{mode}: {elapsed:.1f} s"
    assert elapsed > 1.5
    assert state.requests == 1
    assert msg.startswith(f"function 'slow' at {url}/ timed out: ")
    assert "after 1 attempt(s)" in msg and "NUCLIO_FUNCTION_TIMEOUTS" in msg


def test_trickled_answer_reports_what_arrived():
    with serve_faults("trickle_body") as (_, url), make_client(url, timeout=2.5, retries=0) as client:
        _, msg = _timed_failure(lambda: client.invoke("slow", {}))
    assert "no complete answer within 2.5 s (" in msg and "bytes received)" in msg


def test_a_server_that_never_reads_the_body_cannot_hold_the_send():
    # 24 MB: more than loopback's socket buffers, so the send itself blocks.
    with serve_faults("no_read") as (_, url), make_client(url, timeout=2.0, retries=0) as client:
        elapsed, msg = _timed_failure(lambda: client.invoke("slow", {"blob": "x" * 24_000_000}))
    assert elapsed < 2.0 + SLACK
    assert "timed out" in msg


def test_retries_are_bounded_too():
    with serve_faults("trickle_body") as (state, url), \
            make_client(url, timeout=1.5, retries=2, backoff_base=0.01, backoff_max=0.02) as client:
        elapsed, msg = _timed_failure(lambda: client.invoke("slow", {}))
    assert state.requests == 3 and "after 3 attempt(s)" in msg
    assert elapsed < 3 * 1.5 + SLACK


def test_the_callers_deadline_cuts_the_attempt_and_stops_retrying():
    with serve_faults("trickle_body") as (state, url), make_client(url, timeout=60, retries=4) as client:
        deadline = time.monotonic() + 2.0
        elapsed, msg = _timed_failure(lambda: client.invoke("slow", {}, deadline=deadline))
    assert elapsed < 2.0 + SLACK
    assert state.requests == 1
    assert "the caller's deadline passed" in msg and "AUTO_ANN_TIMEOUT" in msg


def test_a_passed_deadline_sends_nothing():
    with serve_faults("body", body=b"[]") as (state, url), make_client(url) as client:
        with pytest.raises(FunctionUnavailable, match="not called: the caller's deadline has passed"):
            client.detect("fn", b"\x89PNG not even decoded", deadline=time.monotonic() - 1)
    assert state.requests == 0


def test_a_deadline_view_bounds_calls_made_from_pool_threads():
    """What a pipeline does: frames mapped over a thread pool (no contextvars there) through one view."""
    with serve_faults("trickle_body") as (state, url), make_client(url, timeout=60, retries=3) as client:
        view = client.with_deadline(time.monotonic() + 2.0)
        start = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(view.invoke, "slow", {"frame": i}) for i in range(3)]
            errors = [f.exception() for f in futures]
        elapsed = time.monotonic() - start
        view.close()  # a view does not close the client's connections
        assert not client._http.is_closed
    assert all(isinstance(e, FunctionUnavailable) and "caller's deadline" in str(e) for e in errors)
    assert elapsed < 2.0 + SLACK
    # Two slots (NUCLIO_CONCURRENCY=2): the third call waited for one, and that wait is bounded too.
    assert state.requests == 2
    assert sum("while waiting for a free slot" in str(e) for e in errors) == 1


def test_a_deadline_view_leaves_fast_calls_alone():
    image = cv2.imencode(".png", np.full((20, 30, 3), 255, np.uint8))[1].tobytes()
    with served("echo_detector") as (fn, url), make_client(url) as client:
        view = client.with_deadline(time.monotonic() + 30)
        items = view.detect("echo_detector", image, deadline=time.monotonic() + 60)
        assert client.with_deadline(None).detect("echo_detector", image) == items
    assert {"label": "frame", "type": "rectangle", "points": [0, 0, 30, 20], "confidence": "90"} in items
    assert fn.context.user_data.calls == 2
