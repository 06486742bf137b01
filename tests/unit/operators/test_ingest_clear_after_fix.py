"""Clearing an ingest task after fixing its input: a fresh load when the earlier attempt loaded nothing,
a refusal naming the jobs when it loaded rows, ``restart_load`` to start over, the same outcome when
nothing changed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.operators.ingest import STATE_KEY, SalesforceBulkIngestOperator

pytestmark = pytest.mark.usefixtures("results_base")


def write(path: Path, header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def operator(source: str, **kwargs: Any) -> SalesforceBulkIngestOperator:
    # Jobs must really fail here (a column Salesforce does not know), so the describe check is off.
    kwargs.setdefault("describe_check", False)
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    return SalesforceBulkIngestOperator(
        task_id="load", source=source, deferrable=False, poll_interval=0.05, max_poll_interval=0.1,
        max_records_per_job=5, multipart_max_bytes=0, **kwargs,
    )


def jobs(server: Any) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return response.json()["records"]


def test_fixed_file_after_a_load_that_loaded_nothing_starts_afresh(
    emulator, salesforce_conn, tmp_path, capsys
):
    salesforce_conn(emulator)
    path = tmp_path / "accounts.csv"
    source = write(path, ["Name", "Nonexistent__c"], [[f"A{i}", "x"] for i in range(8)])
    with pytest.raises(AirflowFailException, match="did not complete"):
        operator(source).execute({"ti": FakeTI(1)})
    failed_jobs = {job["id"] for job in jobs(emulator)}
    assert len(failed_jobs) == 2
    write(path, ["Name"], [[f"A{i}"] for i in range(8)])  # the fix: the bad column removed
    result = operator(source).execute({"ti": FakeTI(2)})
    assert result["records_successful"] == 8
    assert not failed_jobs & set(result["job_ids"])
    assert sorted(r["Name"] for r in emulator.records("Account")) == [f"A{i}" for i in range(8)]
    captured = capsys.readouterr()
    assert "loaded no row and the source" in captured.out + captured.err


def test_changed_parameters_after_a_load_that_loaded_nothing_start_afresh(
    emulator, salesforce_conn, tmp_path
):
    salesforce_conn(emulator)
    source = write(tmp_path / "c.csv", ["LastName", "Nonexistent__c"], [[f"L{i}", "x"] for i in range(3)])
    with pytest.raises(AirflowFailException, match="did not complete"):
        operator(source, object_name="Contact").execute({"ti": FakeTI(1)})
    with pytest.raises(AirflowFailException, match="did not complete"):  # a fresh load of the new parameters
        operator(source, object_name="Contact", column_delimiter="COMMA", max_bytes_per_job=10_000).execute(
            {"ti": FakeTI(2)}
        )
    assert len(jobs(emulator)) == 2


def test_fixed_file_after_rows_were_loaded_is_refused_naming_jobs_then_restart_load(
    emulator, salesforce_conn, tmp_path
):
    salesforce_conn(emulator)
    path = tmp_path / "accounts.csv"
    rows = [[f"B{i}", "Hot"] for i in range(6)] + [["Bad", "Lukewarm"]]  # Rating is a restricted picklist
    source = write(path, ["Name", "Rating"], rows)
    with pytest.raises(AirflowFailException, match="1 row"):
        operator(source).execute({"ti": FakeTI(1)})
    first_jobs = sorted(job["id"] for job in jobs(emulator))
    write(path, ["Name", "Rating"], rows[:-1] + [["Bad", "Warm"]])
    with pytest.raises(AirflowFailException) as refused:
        operator(source).execute({"ti": FakeTI(2)})
    message = str(refused.value)
    assert "loaded 6 of 7 row(s)" in message
    assert all(job_id in message for job_id in first_jobs)
    assert "restart_load=True" in message
    assert sorted(job["id"] for job in jobs(emulator)) == first_jobs  # nothing new was created
    result = operator(source, restart_load="True").execute({"ti": FakeTI(3)})
    assert result["records_successful"] == 7
    names = sorted(r["Name"] for r in emulator.records("Account"))
    assert names.count("B0") == 2  # insert again: restarting loads the rows a second time, as documented


def test_nothing_changed_reports_the_same_outcome_and_loads_nothing(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    source = write(tmp_path / "a.csv", ["Name", "Rating"], [["C1", "Hot"], ["Bad", "Lukewarm"]])
    for try_number in (1, 2):
        with pytest.raises(AirflowFailException, match="1 row"):
            operator(source).execute({"ti": FakeTI(try_number)})
    assert len(jobs(emulator)) == 1
    assert [r["Name"] for r in emulator.records("Account")] == ["C1"]


def test_restart_load_aborts_the_earlier_jobs_still_open(emulator, salesforce_conn, tmp_path, monkeypatch):
    from airflow_provider_sfbulk.ingest.loader import PartLoader

    salesforce_conn(emulator)
    source = write(tmp_path / "a.csv", ["Name"], [[f"D{i}"] for i in range(10)])

    def crash(self: Any, part: Any) -> None:
        raise RuntimeError("worker died after the uploads")

    real_close = PartLoader.close
    monkeypatch.setattr(PartLoader, "close", crash)
    with pytest.raises(RuntimeError):
        operator(source).execute({"ti": FakeTI(1)})
    monkeypatch.setattr(PartLoader, "close", real_close)
    earlier = {job["id"] for job in jobs(emulator)}
    context = {"ti": FakeTI(2)}
    result = operator(source, restart_load=True).execute(context)
    states = {job["id"]: job["state"] for job in jobs(emulator)}
    assert {states[job_id] for job_id in earlier} == {"Aborted"}
    assert not earlier & set(result["job_ids"])
    assert sorted(r["Name"] for r in emulator.records("Account")) == sorted(f"D{i}" for i in range(10))
    assert TaskCheckpoint.for_task(context).get(STATE_KEY) is None
