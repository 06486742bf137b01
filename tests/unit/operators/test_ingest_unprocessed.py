"""Unprocessed rows (a job that failed or was aborted part-way) go into a new job; the rows that finally
failed are written again in the source's own columns and dialect, ready to fix and load."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.ingest import retries as retries_module
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

pytestmark = pytest.mark.usefixtures("results_base")


def write(path: Path, header: list[str], rows: list[list[Any]], *, delimiter: str = ",",
          terminator: str = "\n") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=terminator).writerows([header, *rows])
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    return str(path)


def run(source: str, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    op = SalesforceBulkIngestOperator(
        task_id="load", source=source, deferrable=False, poll_interval=0.05, max_poll_interval=0.1, **kwargs
    )
    return op.execute(context if context is not None else {"ti": FakeTI()})


def job_states(server: Any) -> list[str]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return sorted(job["state"] for job in response.json()["records"])


def test_unprocessed_rows_are_resubmitted_and_every_row_ends_once(
    emulator_factory, salesforce_conn, tmp_path, monkeypatch
):
    server = emulator_factory(batch_size=5, failing_batch=2)  # the first job fails after 5 rows
    salesforce_conn(server)
    real = retries_module.write_failed_rows

    def fault_gone_then_write(*args: Any, **kwargs: Any) -> Any:
        server.set_faults(failing_batch=None)
        return real(*args, **kwargs)

    monkeypatch.setattr(retries_module, "write_failed_rows", fault_gone_then_write)
    source = write(tmp_path / "a.csv", ["Name"], [[f"U{i:02d}"] for i in range(30)])
    result = run(source, max_records_per_job=10, job_concurrency=1, multipart_max_bytes=0)
    # Round 0: job 1 Failed after 5 rows, jobs 2 and 3 aborted before they started; round 1 sends 25 rows.
    assert result["retry_rounds"] == 1
    counts = (result["records_successful"], result["records_failed"], result["records_unprocessed"])
    assert counts == (30, 0, 0)
    assert result["unprocessed_records"] == []
    names = sorted(r["Name"] for r in server.records("Account"))
    assert names == [f"U{i:02d}" for i in range(30)]  # every row once: none lost, none doubled
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["rounds"][0]["retry"]["resubmitted"] == 25
    assert manifest["reconciled"] is True
    assert job_states(server).count("JobComplete") >= 1


def test_a_job_whose_data_was_rejected_is_not_resubmitted(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    source = write(tmp_path / "a.csv", ["Name", "Nonexistent__c"], [[f"V{i}", "x"] for i in range(4)])
    with pytest.raises(AirflowFailException, match="InvalidBatch"):
        run(source, describe_check=False)
    assert job_states(emulator) == ["Failed"]  # not sent again: it would fail the same way


def test_final_failures_are_written_in_the_source_columns_and_dialect_to_fix_and_reload(
    emulator, salesforce_conn, tmp_path
):
    salesforce_conn(emulator)
    rows = [["Good 1", "Hot", "1"], ["Bad 1", "Lukewarm", "2"], ["Good 2", "Warm", "3"],
            ["Bad; 2", "Tepid", "line one\r\nline two"]]
    source = write(tmp_path / "a.csv", ["Name", "Rating", "Description"], rows, delimiter=";",
                   terminator="\r\n")
    context = {"ti": FakeTI()}
    with pytest.raises(AirflowFailException, match="fix and load"):
        run(source, context, column_delimiter="SEMICOLON", line_ending="CRLF")
    pushed = context["ti"].xcoms["return_value"]
    reload_file = pushed["failed_rows_to_reload"]
    data = ObjectStoragePath(reload_file).read_bytes()
    assert data == (
        b"Name;Rating;Description\r\n"
        b"Bad 1;Lukewarm;2\r\n"
        b'"Bad; 2";Tepid;"line one\r\nline two"\r\n'
    )
    manifest = json.loads(ObjectStoragePath(pushed["manifest"]).read_text())
    assert manifest["failed_rows_to_reload"] == reload_file
    # The team fixes the ratings in that file and loads it as it is.
    fixed = tmp_path / "fixed.csv"
    fixed.write_bytes(data.replace(b"Lukewarm", b"Hot").replace(b"Tepid", b"Cold"))
    result = run(str(fixed), {"ti": FakeTI(run_id="run-2")}, column_delimiter="SEMICOLON", line_ending="CRLF")
    assert (result["records_successful"], result["records_failed"]) == (2, 0)
    assert result["failed_rows_to_reload"] is None
    assert sorted(r["Name"] for r in emulator.records("Account")) == ["Bad 1", "Bad; 2", "Good 1", "Good 2"]
