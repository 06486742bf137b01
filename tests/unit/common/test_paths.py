"""Results and state folders: layout, safe names, configured base."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.paths import (
    results_base,
    safe_name,
    task_results_path,
    task_state_path,
    to_storage_path,
)


def _context(**ti: object) -> dict[str, object]:
    values = {"dag_id": "d", "run_id": "manual__2026-01-02T03:04:05+00:00", "task_id": "t", "map_index": -1,
              "try_number": 2}
    values.update(ti)
    return {"ti": SimpleNamespace(**values)}


def test_local_paths_become_file_uris(tmp_path):
    path = to_storage_path(str(tmp_path / "x.csv"))
    assert isinstance(path, ObjectStoragePath)
    assert str(path) == f"file://{tmp_path}/x.csv"
    assert to_storage_path(path) is path
    assert str(to_storage_path("file:///a/b")) == "file:///a/b"


def test_uris_keep_their_scheme():
    assert to_storage_path("s3://bucket/key.csv").protocol == "s3"


def test_base_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "base"))
    assert str(results_base()) == f"file://{tmp_path}/base"


def test_default_base_under_airflow_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert str(results_base()) == f"file://{tmp_path}/sfbulk-results"


def test_layout_per_try_and_state(tmp_path):
    base = str(tmp_path)
    results = task_results_path(_context(), base)
    state = task_state_path(_context(), base)
    run = "manual__2026-01-02T03%3A04%3A05%2B00%3A00"
    assert str(results) == f"file://{tmp_path}/d/{run}/t/try-2"
    assert str(state) == f"file://{tmp_path}/d/{run}/t/state"
    assert str(task_results_path(_context(try_number=3), base)).endswith("/t/try-3")
    assert str(task_state_path(_context(try_number=3), base)) == str(state)


def test_mapped_tasks_get_their_own_folder(tmp_path):
    assert str(task_results_path(_context(map_index=4), str(tmp_path))).endswith("/t/map-4/try-2")


@pytest.mark.parametrize("raw", ["a/b", "..", ".", "", "x y", "ü"])
def test_safe_names_are_one_distinct_folder(raw):
    name = safe_name(raw)
    assert "/" not in name
    assert name not in ("", ".", "..")
    assert " " not in name
    assert name.isascii()


def test_safe_names_do_not_collide():
    assert safe_name("a:b") != safe_name("a_b") != safe_name("a%3Ab")


def test_uri_with_connection():
    from airflow_provider_sfbulk.common.paths import storage_conn_id

    path = to_storage_path("s3://bucket/key.csv", conn_id="aws_results")
    assert storage_conn_id(path) == "aws_results"
    assert storage_conn_id(to_storage_path("s3://bucket/key.csv")) is None
