"""write_json_atomic: whole documents only, on local and object-store paths."""

from __future__ import annotations

import os

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.json_files import read_json, write_json_atomic
from airflow_provider_sfbulk.common.paths import to_storage_path


def test_local_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = to_storage_path(str(tmp_path / "deep" / "manifest.json"))
    write_json_atomic(target, {"a": 1, "text": "é"}, indent=2)
    write_json_atomic(target, {"b": [1, 2]})
    assert read_json(target) == {"b": [1, 2]}
    assert os.listdir(tmp_path / "deep") == ["manifest.json"]


def test_compact_form_sorts_keys(tmp_path):
    target = to_storage_path(str(tmp_path / "c.json"))
    write_json_atomic(target, {"b": 1, "a": 2}, compact=True)
    assert (tmp_path / "c.json").read_text() == '{"a":2,"b":1}'


def test_a_failed_write_keeps_the_old_document(tmp_path):
    target = to_storage_path(str(tmp_path / "m.json"))
    write_json_atomic(target, {"old": True})
    with pytest.raises(TypeError):
        _unserialisable(target)
    assert read_json(target) == {"old": True}
    assert os.listdir(tmp_path) == ["m.json"]


def _unserialisable(target: ObjectStoragePath) -> None:
    class Boom:
        def __str__(self) -> str:
            raise TypeError("cannot serialise")

    write_json_atomic(target, {"bad": Boom()})


def test_missing_or_empty_file_reads_as_none(tmp_path):
    assert read_json(to_storage_path(str(tmp_path / "nope.json"))) is None
    (tmp_path / "empty.json").write_text("  ")
    assert read_json(to_storage_path(str(tmp_path / "empty.json"))) is None
