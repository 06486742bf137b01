"""Threads that call ``BaseOperator.execute`` in tests (to kill a task while it runs).

Airflow 2.11's ``ExecutorSafeguard`` keeps its registry in a ``threading.local`` initialised only in the
thread that imported Airflow, so ``execute`` in any other thread fails with ``AttributeError: callers``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def operator_thread(target: Callable[[], Any]) -> threading.Thread:
    """A (not yet started) thread running ``target``, ready to call an operator's ``execute``."""

    def run() -> None:
        try:
            from airflow.models.baseoperator import ExecutorSafeguard
        except ImportError:  # Airflow versions without the safeguard
            pass
        else:
            sentinel = getattr(ExecutorSafeguard, "_sentinel", None)
            if sentinel is not None and not hasattr(sentinel, "callers"):
                sentinel.callers = {}
        target()

    return threading.Thread(target=run)
