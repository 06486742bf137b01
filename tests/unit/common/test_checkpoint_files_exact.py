"""Checkpoint documents, exact values (mutation testing found these only partly pinned).

Which paths count as local, the exact JSON written (compact for checkpoints, as asked otherwise), the
object-store branch, the checkpoint's task-state-store protocol and its error texts.
"""

from __future__ import annotations

import datetime
import io
import os
import pathlib
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.checkpoint import CHECKPOINT_FILE, TaskCheckpoint
from airflow_provider_sfbulk.common.json_files import is_local, local_path, write_json_atomic
from airflow_provider_sfbulk.common.paths import to_storage_path

WHEN = datetime.datetime(2024, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (ObjectStoragePath("file:///tmp/a/doc.json"), "/tmp/a/doc.json"),
        (pathlib.Path("/tmp/b.json"), "/tmp/b.json"),  # no protocol attribute at all
        (SimpleNamespace(protocol="local", path="/tmp/c.json"), "/tmp/c.json"),
        (SimpleNamespace(protocol=None, path="/tmp/d.json"), "/tmp/d.json"),
        (SimpleNamespace(protocol="", path="/tmp/e.json"), "/tmp/e.json"),
        (SimpleNamespace(protocol="s3", path="bucket/f.json"), None),
        (SimpleNamespace(protocol="FILE", path="/tmp/g.json"), None),
    ],
)
def test_local_path_by_protocol(path: Any, expected: str | None) -> None:
    assert local_path(path) == expected
    assert is_local(path) is (expected is not None)


def test_written_json_is_exactly_as_asked(tmp_path: pathlib.Path) -> None:
    target = to_storage_path(str(tmp_path / "doc.json"))
    document = {"b": 1, "a": [WHEN]}
    write_json_atomic(target, document)
    assert (tmp_path / "doc.json").read_text() == '{"b": 1, "a": ["2024-06-01 12:00:00+00:00"]}'
    write_json_atomic(target, document, indent=2)
    assert (tmp_path / "doc.json").read_text() == (
        '{\n  "b": 1,\n  "a": [\n    "2024-06-01 12:00:00+00:00"\n  ]\n}'
    )
    assert write_json_atomic(target, document, compact=True) == str(target)
    assert (tmp_path / "doc.json").read_text() == '{"a":["2024-06-01 12:00:00+00:00"],"b":1}'


class _ObjectPath:
    """An object-store path: records the folder creation and the one whole-object write."""

    protocol = "s3"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.data = io.BytesIO()
        self.data.close = lambda: None  # type: ignore[method-assign]
        self.parent = SimpleNamespace(mkdir=lambda **kw: self.calls.append(("mkdir", kw)))

    def open(self, mode: str) -> io.BytesIO:
        self.calls.append(("open", mode))
        return self.data

    def __str__(self) -> str:
        return "s3://bucket/run/doc.json"


def test_object_store_documents_are_one_whole_put() -> None:
    path = _ObjectPath()
    assert write_json_atomic(path, {"x": WHEN}, compact=True) == "s3://bucket/run/doc.json"  # type: ignore[arg-type]
    assert path.calls == [("mkdir", {"parents": True, "exist_ok": True}), ("open", "wb")]
    assert path.data.getvalue() == b'{"x":"2024-06-01 12:00:00+00:00"}'


def test_checkpoint_file_is_compact_json(tmp_path: pathlib.Path) -> None:
    checkpoint = TaskCheckpoint(folder=to_storage_path(str(tmp_path)))
    checkpoint.set("b", {"k": 1})
    checkpoint.set("a", [1, 2])
    assert (tmp_path / CHECKPOINT_FILE).read_text() == '{"a":[1,2],"b":{"k":1}}'


def test_checkpoint_error_texts(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError) as caught:
        TaskCheckpoint()
    assert str(caught.value) == "TaskCheckpoint needs a task state store or a folder"
    checkpoint = TaskCheckpoint(folder=to_storage_path(str(tmp_path)))
    with pytest.raises(ValueError) as caught:
        checkpoint.set("k", None)
    assert str(caught.value) == "a checkpoint value cannot be None; use delete()"
    (tmp_path / CHECKPOINT_FILE).write_text("[1]")
    with pytest.raises(ValueError) as caught:
        TaskCheckpoint(folder=to_storage_path(str(tmp_path))).get("k")
    where = to_storage_path(str(tmp_path)) / CHECKPOINT_FILE
    assert str(caught.value) == f"the checkpoint {where} does not hold a JSON object"


class _StrictStore:
    """Airflow's store signature taken literally: ``get`` needs its default."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_store_backend_reads_with_an_explicit_default() -> None:
    store = _StrictStore()
    checkpoint = TaskCheckpoint.for_task({"task_state_store": store})
    assert checkpoint.backend == "task_state_store"
    assert checkpoint.get("k", "dflt") == "dflt"
    checkpoint.set("k", 3)
    assert store.data == {"sfbulk.k": 3}
    assert checkpoint.get("k") == 3


def test_a_store_without_the_store_methods_falls_back_to_the_file(tmp_path: pathlib.Path) -> None:
    folder = to_storage_path(str(tmp_path))
    checkpoint = TaskCheckpoint.for_task({"task_state_store": object()}, fallback_dir=folder)
    assert checkpoint.backend == "file"
    assert checkpoint.location == str(folder / CHECKPOINT_FILE)


def test_a_crash_before_the_rename_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = to_storage_path(str(tmp_path / "m.json"))
    write_json_atomic(target, {"old": True})
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        replaced.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_json_atomic(target, {"new": True})
    [(temporary, final)] = replaced  # local files: a temporary name beside the target, then one rename
    assert final == str(tmp_path / "m.json")
    assert temporary.startswith(f"{final}.")
    assert temporary.endswith(".tmp")

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"newer": True})
    assert (tmp_path / "m.json").read_text() == '{"new": true}'
    assert os.listdir(tmp_path) == ["m.json"]
