"""Function answers are streamed and refused past NUCLIO_MAX_RESPONSE_BYTES (issue 11, case 7).

Before: a 150 MB answer was read whole and decoded (+1.7 GB RSS). The servers here stream 150 MB
from a generator over loopback; while the client reads, its peak RSS growth is sampled (psutil) and its
peak of traced Python allocations measured (tracemalloc: immune to the allocator reusing freed memory).
"""

import threading
import time
import tracemalloc
from collections.abc import Callable

import psutil
import pytest

from bridge.errors import FunctionFailed
from bridge.nuclio.client import DEFAULT_MAX_RESPONSE
from tests.nuclio.conftest import make_client
from tests.nuclio.fault_server import serve_faults

HUGE = 150_000_000
MiB = 1024 * 1024


def memory_of(call: Callable[[], object]) -> tuple[int, int, BaseException | None]:
    """Run ``call``; return (highest RSS seen minus RSS before, peak traced allocations, in bytes; the
    exception it raised)."""
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    error: BaseException | None = None
    tracemalloc.start()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - returned for the test to check
        error = exc
    finally:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        done.set()
        sampler.join()
    return max(peak[0], proc.memory_info().rss) - before, traced, error


def test_a_streamed_150_mb_answer_stops_at_the_limit_with_memory_bounded():
    with serve_faults("huge", size=HUGE) as (_, url), \
            make_client(url, max_response_bytes=16 * MiB, retries=0) as client:
        growth, traced, error = memory_of(lambda: client.invoke("big", {}))
    assert isinstance(error, FunctionFailed)
    assert str(error) == (f"function 'big' answer larger than {16 * MiB} bytes; stopped reading it. "
                          f"Raise NUCLIO_MAX_RESPONSE_BYTES if the function really answers that much")
    assert growth < 100 * MiB and traced < 100 * MiB, (growth / MiB, traced / MiB)
    assert traced < 2 * 16 * MiB  # the limit, not the answer, sizes what is held


def test_a_declared_150_mb_answer_is_refused_before_reading_at_the_default_limit():
    assert 32 * MiB < DEFAULT_MAX_RESPONSE < HUGE
    with serve_faults("huge", size=HUGE, declare=True) as (_, url), make_client(url, retries=0) as client:
        growth, traced, error = memory_of(lambda: client.invoke("big", {}))
    assert isinstance(error, FunctionFailed)
    assert f"answer larger than {DEFAULT_MAX_RESPONSE} bytes (Content-Length {HUGE})" in str(error)
    assert growth < 100 * MiB and traced < 100 * MiB, (growth / MiB, traced / MiB)


def test_a_huge_error_answer_is_read_for_its_excerpt_only():
    with serve_faults("huge", size=HUGE, status=500) as (_, url), make_client(url, retries=0) as client:
        growth, traced, error = memory_of(lambda: client.invoke("big", {}))
    assert isinstance(error, FunctionFailed)
    assert str(error).startswith("function 'big' answered HTTP 500: [0,0,0,")
    assert str(error).endswith("...") and len(str(error)) < 400
    assert growth < 100 * MiB and traced < 100 * MiB, (growth / MiB, traced / MiB)


@pytest.mark.parametrize("chunked", [False, True])
def test_an_answer_of_exactly_the_limit_is_accepted_one_byte_less_is_not(chunked):
    body = b"[" + b"1," * 40_000 + b"1]"
    with serve_faults("body", body=body, chunked=chunked) as (_, url):
        with make_client(url, max_response_bytes=len(body)) as client:
            assert client.invoke("fn", {}) == [1] * 40_001
        with make_client(url, max_response_bytes=len(body) - 1, retries=3) as client, \
                pytest.raises(FunctionFailed, match=f"answer larger than {len(body) - 1} bytes"):
            client.invoke("fn", {})
