"""A function's slots go to the oldest job first, and never leave a job without one (``bridge.nuclio.slots``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.nuclio.slots import Slots
from tests.nuclio.conftest import make_client, served


def _until(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def _queue(slots: Slots, priorities: list[float], order: list[float]) -> list[threading.Thread]:
    threads = []
    for i, priority in enumerate(priorities):
        thread = threading.Thread(target=lambda p=priority: (slots.acquire(p, timeout=5), order.append(p)),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        _until(lambda n=i + 1: len(slots._waiting) == n)  # queued in this order
    return threads


def test_a_freed_slot_goes_to_the_oldest_waiting_job_not_the_first_to_ask():
    slots = Slots(1)
    assert slots.acquire(9)
    order: list[float] = []
    threads = _queue(slots, [5, 3, 4], order)
    for holder in (9, 3, 4):  # each grant keeps the only slot until it is released here
        slots.release(holder)
        _until(lambda n=len(order) + 1: len(order) >= n)
    for thread in threads:
        thread.join(5)
    assert order == [3, 4, 5]


def test_a_job_holding_no_slot_is_served_before_an_older_job_that_holds_one():
    slots = Slots(2)
    assert slots.acquire(1) and slots.acquire(1)  # the old job holds every slot
    order: list[float] = []
    _queue(slots, [1, 1, 2], order)  # it wants more; a younger job wants one
    slots.release(1)
    _until(lambda: len(order) == 1)
    assert order == [2]  # the younger job is not starved
    slots.release(1)
    _until(lambda: len(order) == 2)
    assert order == [2, 1]  # both hold one now: the older job first
    assert slots.in_use == 2


def test_a_wait_that_times_out_leaves_the_queue_and_is_never_granted():
    slots = Slots(1)
    assert slots.acquire(1)
    start = time.monotonic()
    assert slots.acquire(0, timeout=0.1) is False
    assert time.monotonic() - start >= 0.1
    assert slots._waiting == []
    slots.release(1)
    assert slots.in_use == 0
    assert slots.acquire(5, timeout=0)  # the freed slot was not kept for the waiter that left


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(0)
    slots = Slots(2)
    assert slots.acquire(1)
    with pytest.raises(ValueError, match="not held"):
        slots.release(2)


def test_many_threads_never_hold_more_than_the_size():
    slots = Slots(3)
    held, most, lock = [0], [0], threading.Lock()

    def call(i: int) -> None:
        assert slots.acquire(i % 5, timeout=10)
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        time.sleep(0.001)
        with lock:
            held[0] -= 1
        slots.release(i % 5)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(call, range(400)))
    assert most[0] == 3 and slots.in_use == 0 and slots._waiting == []


def test_the_client_serves_the_older_job_first_over_http():
    """Two jobs' views of one client share a function's 4 slots. The younger job asks first and fills them;
    the older job asks next: of the 4 slots freed next, 3 go to the older job and 1 to the younger (it holds
    none then). A plain semaphore serves in arrival order: the younger job's next 4 calls would go first."""
    done: list[int] = []
    lock = threading.Lock()
    with served("sleeper", max_workers=4) as (fn, url), \
            make_client(url, function_concurrency={"sleeper": 4}) as client:
        client.invoke("sleeper", {"sleep": 0})  # connected; the slots exist

        def job(job_id: int, delay: float) -> None:
            view = client.with_deadline(None, priority=job_id)
            assert view.priority == job_id
            time.sleep(delay)

            def call(_: int) -> None:
                view.invoke("sleeper", {"sleep": 0.25})
                with lock:
                    done.append(job_id)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(call, range(8)))

        with ThreadPoolExecutor(2) as jobs:
            younger = jobs.submit(job, 2, 0.0)
            older = jobs.submit(job, 1, 0.08)
            younger.result(), older.result()
    assert fn.context.user_data.max_in_flight == 4
    assert done[:4] == [2, 2, 2, 2]  # the younger job's first calls filled the slots
    assert sorted(done[4:8]) == [1, 1, 1, 2]  # then the older job first, the younger one kept one
