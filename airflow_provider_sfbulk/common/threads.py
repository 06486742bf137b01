"""Work on a few threads, with one hook per thread, stopping at the first error.

A ``requests.Session`` (so a :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`) must not be
shared between threads; the access token is cached per connection and is shared anyway. Uploads, result
downloads and page downloads all run the same way: :func:`run_concurrently` with a :class:`HookPerThread`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from airflow_provider_sfbulk.exceptions import Cancelled

__all__ = ["Cancelled", "HookPerThread", "run_concurrently"]

H = TypeVar("H")
T = TypeVar("T")
R = TypeVar("R")


class HookPerThread(Generic[H]):
    """One object (a hook) per thread, made on first use and closed together.

    :param factory: makes a new hook.
    :param main: the object the main thread uses (the operator's own hook); not closed here.
    """

    def __init__(self, factory: Callable[[], H], *, main: H | None = None) -> None:
        self._factory = factory
        self._main = main
        self._local = threading.local()
        self._made: list[H] = []
        self._lock = threading.Lock()

    def get(self) -> H:
        """The hook of the calling thread."""
        if self._main is not None and threading.current_thread() is threading.main_thread():
            return self._main
        hook: H | None = getattr(self._local, "hook", None)
        if hook is None:
            hook = self._factory()
            self._local.hook = hook
            with self._lock:
                self._made.append(hook)
        return hook

    def close(self) -> None:
        """Close every hook this object made (those with a ``close`` method)."""
        with self._lock:
            made, self._made = self._made, []
        self._local = threading.local()
        for hook in made:
            close = getattr(hook, "close", None)
            if close is not None:
                close()


def run_concurrently(
    work: Callable[[T], R],
    items: Sequence[T],
    *,
    concurrency: int,
    name: str,
    stop: threading.Event | None = None,
) -> list[R]:
    """Run ``work(item)`` for every item, at most ``concurrency`` at once; results in item order.

    With one item or ``concurrency == 1`` everything runs in the calling thread, one item after the
    other. Otherwise, at the first error the items not started yet are cancelled, ``stop`` is set (work
    in flight may watch it and raise :class:`Cancelled`), the running ones are waited for, and the first
    error that is not :class:`Cancelled` is raised.

    :param name: prefix of the worker threads' names.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if len(items) <= 1 or concurrency == 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix=name) as pool:
        futures: list[Future[R]] = [pool.submit(work, item) for item in items]
        pending: set[Future[R]] = set(futures)
        error: BaseException | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                failure = None if future.cancelled() else future.exception()
                if failure is not None and error is None and not isinstance(failure, Cancelled):
                    error = failure
            if error is not None and pending:
                if stop is not None:
                    stop.set()
                for future in pending:
                    future.cancel()
        if error is not None:
            raise error
    return [future.result() for future in futures]
