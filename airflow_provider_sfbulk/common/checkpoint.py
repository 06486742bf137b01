"""Crash-safe progress of one task across retries.

Where the running Airflow offers it (3.3+: ``context["task_state_store"]``), values go to Airflow's task
state store, which keeps them for the task instance across tries. Elsewhere (Airflow 2.11, 3.0-3.2) they
go to one JSON document under :func:`~airflow_provider_sfbulk.common.paths.task_state_path` (or a folder the
caller names), next to the result files. Either way:

- values are JSON (str, int, float, bool, list, dict);
- :meth:`TaskCheckpoint.set` is durable before it returns: the task state store call is synchronous; the
  file is written to a temporary name, flushed and fsynced, then renamed over the old one (object stores
  without rename get a single whole-object ``PUT``, which is atomic there);
- one :class:`TaskCheckpoint` may be used from several threads at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.json_files import read_json, write_json_atomic
from airflow_provider_sfbulk.common.paths import task_state_path
from airflow_provider_sfbulk.hooks.bulk import SUPERVISOR_TURN

__all__ = ["CHECKPOINT_FILE", "TaskCheckpoint"]

#: Name of the JSON document of the file backend.
CHECKPOINT_FILE = "checkpoint.json"


class TaskCheckpoint:
    """Keys and JSON values that survive a crash and a retry of one task instance.

    Build it with :meth:`for_task`; the constructor is for tests and special cases.

    :param store: an object with ``get(key, default)``, ``set(key, value)`` and ``delete(key)`` (Airflow's
        task state store), or ``None`` for the file backend.
    :param folder: folder of the file backend.
    :param prefix: prefix of every key (keeps several users of one task's store apart).
    """

    def __init__(
        self, *, store: Any = None, folder: ObjectStoragePath | None = None, prefix: str = "sfbulk."
    ) -> None:
        if store is None and folder is None:
            raise ValueError("TaskCheckpoint needs a task state store or a folder")
        self._store = store
        self._folder = folder
        self._prefix = prefix
        self._lock = threading.RLock()
        self._cache: dict[str, Any] | None = None

    @classmethod
    def for_task(
        cls, context: Mapping[str, Any], fallback_dir: ObjectStoragePath | None = None
    ) -> TaskCheckpoint:
        """The checkpoint of the task instance in ``context``.

        :param fallback_dir: folder of the file backend when no task state store exists (default
            ``task_state_path(context)``).
        """
        store = None
        try:
            store = context.get("task_state_store")
        except AttributeError:  # pragma: no cover - a context that is not a mapping
            store = None
        if store is not None and all(hasattr(store, name) for name in ("get", "set", "delete")):
            return cls(store=store)
        return cls(folder=fallback_dir if fallback_dir is not None else task_state_path(context))

    @property
    def backend(self) -> str:
        """``"task_state_store"`` or ``"file"``."""
        return "task_state_store" if self._store is not None else "file"

    @property
    def location(self) -> str:
        """Where the values live (for logs): the file URI, or ``task_state_store``."""
        if self._folder is not None:
            return str(self._folder / CHECKPOINT_FILE)
        return "task_state_store"

    # --- API ----------------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value of ``key``, or ``default``."""
        with self._lock:
            if self._store is not None:
                with SUPERVISOR_TURN:  # a message to Airflow: the worker threads take turns (hooks/bulk.py)
                    value = self._store.get(self._prefix + key, None)
                return default if value is None else value
            return self._load().get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON) under ``key``; durable when this returns."""
        if value is None:
            raise ValueError("a checkpoint value cannot be None; use delete()")
        json.dumps(value)  # fail early on values that are not JSON
        with self._lock:
            if self._store is not None:
                with SUPERVISOR_TURN:
                    self._store.set(self._prefix + key, value)
                return
            data = dict(self._load())
            data[key] = value
            self._save(data)

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when it is absent)."""
        with self._lock:
            if self._store is not None:
                with SUPERVISOR_TURN:
                    self._store.delete(self._prefix + key)
                return
            data = dict(self._load())
            if key in data:
                del data[key]
                self._save(data)

    # --- file backend -------------------------------------------------------------------------------------

    def _file(self) -> ObjectStoragePath:
        assert self._folder is not None
        return self._folder / CHECKPOINT_FILE

    def _load(self) -> dict[str, Any]:
        if self._cache is None:
            document = read_json(self._file())
            if document is None:
                document = {}
            if not isinstance(document, dict):
                raise ValueError(f"the checkpoint {self._file()} does not hold a JSON object")
            self._cache = document
        return self._cache

    def _save(self, data: dict[str, Any]) -> None:
        write_json_atomic(self._file(), data, compact=True)
        self._cache = data
