"""run_concurrently and HookPerThread: order, bounded concurrency, first error wins, one hook per thread."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_sfbulk.common.threads import Cancelled, HookPerThread, run_concurrently


def test_results_come_back_in_item_order():
    def work(item: int) -> int:
        time.sleep(0.01 * (5 - item))  # later items finish first
        return item * 10

    assert run_concurrently(work, [1, 2, 3, 4], concurrency=3, name="t") == [10, 20, 30, 40]


def test_never_more_than_concurrency_at_once():
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(item: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    run_concurrently(work, list(range(12)), concurrency=3, name="t")
    assert peak == 3


def test_one_item_or_concurrency_one_runs_in_the_calling_thread():
    seen: list[str] = []

    def work(item: int) -> None:
        seen.append(threading.current_thread().name)

    run_concurrently(work, [1], concurrency=4, name="t")
    run_concurrently(work, [1, 2], concurrency=1, name="t")
    assert seen == [threading.current_thread().name] * 3


def test_first_error_stops_the_rest_and_is_raised():
    stop = threading.Event()
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            raise KeyError("boom")
        if stop.wait(2):
            raise Cancelled
        return item

    with pytest.raises(KeyError, match="boom"):
        run_concurrently(work, list(range(20)), concurrency=2, name="t", stop=stop)
    assert stop.is_set()
    assert len(started) < 20  # items not started yet were cancelled


def test_cancelled_is_never_the_error_raised():
    stop = threading.Event()

    def work(item: int) -> int:
        if item == 1:
            time.sleep(0.05)
            raise ValueError("the real failure")
        if stop.wait(2):
            raise Cancelled
        return item

    with pytest.raises(ValueError, match="the real failure"):
        run_concurrently(work, [0, 1], concurrency=2, name="t", stop=stop)


def test_bad_concurrency_is_refused():
    with pytest.raises(ValueError, match="concurrency"):
        run_concurrently(lambda item: item, [1], concurrency=0, name="t")


class _Hook:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_one_hook_per_thread_and_all_closed():
    main = _Hook()
    hooks = HookPerThread(_Hook, main=main)
    got: dict[str, _Hook] = {}

    def work(item: int) -> None:
        hook = hooks.get()
        assert hooks.get() is hook
        got[threading.current_thread().name] = hook
        time.sleep(0.02)

    run_concurrently(work, list(range(6)), concurrency=3, name="t")
    assert hooks.get() is main
    made = set(map(id, got.values()))
    assert len(made) == 3
    hooks.close()
    assert all(hook.closed for hook in got.values())
    assert not main.closed
