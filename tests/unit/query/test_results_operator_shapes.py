"""The results operator reads query jobs through the same extraction path: every resultPages shape works.

Kept beside the extract tests (issue 16): the operator is only the wiring, the paging is the extract's.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.operators.results import SalesforceBulkJobResultsOperator


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "dag", "run", "results", -1, 1

    def __init__(self) -> None:
        self.xcom_push = mock.Mock()


def _rows(uris: list[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for uri in uris:
        reader = csv.reader(io.StringIO(ObjectStoragePath(uri).read_text(), newline=""))
        next(reader)
        rows.extend(map(tuple, reader))
    return rows


@pytest.mark.parametrize(
    ("shape", "paging"),
    [("documented", "resultPages"), ("documented-singular", "resultPages"), ("chunks", "resultPages"),
     ("missing", "locator")],
)
def test_query_results_in_every_result_pages_shape(
    emulator_factory: Any, salesforce_conn: Any, tmp_path: Path, shape: str, paging: str
) -> None:
    server = emulator_factory(result_pages_shape=shape, default_page_records=15)  # 8 pages: two calls
    salesforce_conn(server)
    server.seed("Account", 110, seed=9)
    job = ApiSession(server).run_query("SELECT Id, Name FROM Account")
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=job["id"], job_kind="query",
                                          results_path=str(tmp_path / "q"))
    result = op.execute({"ti": FakeTI()})
    assert result["records"] == 110
    assert len(result["results"]) == 8
    expected = sorted((r["Id"], r["Name"] or "") for r in server.records("Account"))
    assert sorted(_rows(result["results"])) == expected
    manifest = json.loads((tmp_path / "q" / job["id"] / "manifest.json").read_text())
    assert manifest["paging"] == paging
    assert (manifest["paging_fallback"] is not None) == (shape == "missing")
