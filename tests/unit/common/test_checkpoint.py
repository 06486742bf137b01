"""TaskCheckpoint: file backend (durable, atomic) and Airflow's task state store."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_sfbulk.common.checkpoint import CHECKPOINT_FILE, TaskCheckpoint
from airflow_provider_sfbulk.common.paths import to_storage_path


class FakeStore:
    """The task state store interface (get/set/delete), in memory."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        assert value is not None
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def _context(tmp_path, **extra: Any) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    return {"ti": ti, **extra}


def test_file_backend_survives_a_new_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path))
    first = TaskCheckpoint.for_task(_context(tmp_path))
    assert first.backend == "file"
    first.set("parts", [{"index": 0, "job_id": "750x"}])
    first.set("deadline", 12.5)
    second = TaskCheckpoint.for_task(_context(tmp_path))
    assert second.get("parts") == [{"index": 0, "job_id": "750x"}]
    assert second.get("deadline") == 12.5
    assert second.get("missing", "d") == "d"
    second.delete("parts")
    assert TaskCheckpoint.for_task(_context(tmp_path)).get("parts") is None
    stored = json.loads((tmp_path / "d" / "r" / "t" / "state" / CHECKPOINT_FILE).read_text())
    assert stored == {"deadline": 12.5}
    # no temporary file left behind
    assert [p.name for p in (tmp_path / "d" / "r" / "t" / "state").iterdir()] == [CHECKPOINT_FILE]


def test_fallback_dir(tmp_path):
    checkpoint = TaskCheckpoint.for_task(_context(tmp_path), fallback_dir=to_storage_path(tmp_path / "s"))
    checkpoint.set("k", {"a": 1})
    assert json.loads((tmp_path / "s" / CHECKPOINT_FILE).read_text()) == {"k": {"a": 1}}


def test_task_state_store_is_preferred(tmp_path):
    store = FakeStore()
    checkpoint = TaskCheckpoint.for_task(_context(tmp_path, task_state_store=store))
    assert checkpoint.backend == "task_state_store"
    checkpoint.set("k", 1)
    assert store.data == {"sfbulk.k": 1}
    assert checkpoint.get("k") == 1
    checkpoint.delete("k")
    assert checkpoint.get("k", "gone") == "gone"
    assert not list(tmp_path.iterdir())


def test_values_must_be_json(tmp_path):
    checkpoint = TaskCheckpoint(folder=to_storage_path(tmp_path))
    with pytest.raises(TypeError):
        checkpoint.set("k", object())
    with pytest.raises(ValueError):
        checkpoint.set("k", None)


def test_threads_do_not_lose_updates(tmp_path):
    checkpoint = TaskCheckpoint(folder=to_storage_path(tmp_path))

    def work(n: int) -> None:
        for i in range(10):
            checkpoint.set(f"k{n}-{i}", i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    fresh = TaskCheckpoint(folder=to_storage_path(tmp_path))
    assert all(fresh.get(f"k{n}-{i}") == i for n in range(4) for i in range(10))


def test_store_calls_take_turns_with_the_hooks_messages_to_airflow():
    """A task state store call is a message to Airflow's supervisor, like the hook's connection look-up: under
    dag.test() the in-process channel removes its global while it answers one, so a second thread's message
    at that moment fails ("cannot import name 'SUPERVISOR_COMMS'"). Both take the same turn."""
    from airflow_provider_sfbulk.hooks.bulk import SUPERVISOR_TURN

    calls: list[str] = []

    class Store:
        def get(self, key: str, default: Any = None) -> Any:
            calls.append("get")
            return default

        def set(self, key: str, value: Any) -> None:
            calls.append("set")

        def delete(self, key: str) -> None:
            calls.append("delete")

    checkpoint = TaskCheckpoint(store=Store())
    worker = threading.Thread(
        target=lambda: (checkpoint.set("a", 1), checkpoint.get("a"), checkpoint.delete("a"))
    )
    with SUPERVISOR_TURN:  # another thread is talking to Airflow
        worker.start()
        worker.join(0.3)
        assert worker.is_alive()
        assert calls == []
    worker.join(10)
    assert not worker.is_alive()
    assert calls == ["set", "get", "delete"]
