"""Ingest operator: operations, failure policy (retry of failed rows, lock retry, max_failed_records),
Failed jobs, preflight limits, hardDelete guard and bad inputs, against the emulator."""

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


def write(path: Path, header: list[str], rows: list[list[Any]], terminator: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def run(source: str, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    op = SalesforceBulkIngestOperator(task_id="load", source=source, **kwargs)
    return op.execute(context if context is not None else {"ti": FakeTI()})


def jobs(server) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return response.json()["records"]


def rows(uri: str) -> list[dict[str, str]]:
    with ObjectStoragePath(uri).open("rb") as handle:
        return list(csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline="")))


def test_upsert_with_parent_reference(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    run(write(tmp_path / "a.csv", ["Name", "External_Id__c"], [["Parent A", "PA"], ["Parent B", "PB"]]))
    contacts = write(tmp_path / "c.csv", ["LastName", "External_Id__c", "Account.External_Id__c"],
                     [["Smith", "C1", "PA"], ["Jones", "C2", "PB"]])
    first = run(contacts, object_name="Contact", operation="upsert", external_id_field="External_Id__c")
    assert first["records_successful"] == 2
    again = write(tmp_path / "c2.csv", ["LastName", "External_Id__c", "Account.External_Id__c"],
                  [["Smith-Renamed", "C1", "PB"], ["New", "C3", "PA"]])
    second = run(again, object_name="Contact", operation="upsert", external_id_field="External_Id__c")
    assert second["records_successful"] == 2
    created = {r["sf__Created"] for uri in second["successful_results"] for r in rows(uri)}
    assert created == {"true", "false"}
    accounts = {a["External_Id__c"]: a["Id"] for a in emulator.records("Account")}
    by_key = {c["External_Id__c"]: c for c in emulator.records("Contact")}
    assert len(by_key) == 3
    assert by_key["C1"]["LastName"] == "Smith-Renamed"
    assert by_key["C1"]["AccountId"] == accounts["PB"]
    assert by_key["C3"]["AccountId"] == accounts["PA"]


def test_hard_delete_needs_explicit_permission(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    run(write(tmp_path / "a.csv", ["Name"], [["X"], ["Y"]]))
    ids = write(tmp_path / "ids.csv", ["Id"], [[r["Id"]] for r in emulator.records("Account")])
    before = len(jobs(emulator))
    with pytest.raises(AirflowFailException, match="allow_hard_delete"):
        run(ids, operation="hardDelete")
    assert len(jobs(emulator)) == before
    result = run(ids, operation="hardDelete", allow_hard_delete=True)
    assert result["records_successful"] == 2
    assert emulator.records("Account", include_deleted=True) == []


def test_soft_delete_goes_to_recycle_bin(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    run(write(tmp_path / "a.csv", ["Name"], [["X"], ["Y"]]))
    ids = write(tmp_path / "ids.csv", ["Id"], [[r["Id"]] for r in emulator.records("Account")])
    assert run(ids, operation="delete")["records_successful"] == 2
    assert emulator.records("Account") == []
    assert len(emulator.records("Account", include_deleted=True)) == 2


def test_failed_rows_fail_the_task_after_results_are_written(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    source = write(tmp_path / "a.csv", ["Name", "Rating"], [["A", "Hot"], ["B", "Lukewarm"], ["C", ""]])
    context = {"ti": FakeTI()}
    with pytest.raises(AirflowFailException, match="1 row"):
        run(source, context)
    pushed = context["ti"].xcoms["return_value"]
    assert (pushed["records_successful"], pushed["records_failed"]) == (2, 1)
    (failed_file,) = pushed["failed_results"]
    assert rows(failed_file)[0]["Name"] == "B"
    assert run(source, max_failed_records=1)["records_failed"] == 1


def test_retry_of_only_the_failed_rows(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    emulator.set_faults(lock_row_rate=0.5, seed=7)
    real = retries_module.write_failed_rows

    def clear_faults_then_write(*args: Any, **kwargs: Any) -> Any:
        emulator.set_faults(lock_row_rate=0.0)  # the locks are gone by the time the retry runs
        return real(*args, **kwargs)

    monkeypatch.setattr(retries_module, "write_failed_rows", clear_faults_then_write)
    data = [[f"Acme {i}", "Hot"] for i in range(30)] + [["Bad", "Lukewarm"]]
    result = run(write(tmp_path / "a.csv", ["Name", "Rating"], data), retry_failed_records=2,
                 max_failed_records=1)
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    first, second = manifest["rounds"]
    locked = first["retry"]["rows"]
    assert 0 < locked < 30
    assert first["retry"]["by_code"] == {"UNABLE_TO_LOCK_ROW": locked}
    assert second["records"] == locked  # only the locked rows went to the retry job
    assert result["retry_rounds"] == 1
    assert len(result["job_ids"]) == 2
    assert (result["records_successful"], result["records_failed"]) == (30, 1)
    (final_failed,) = result["failed_results"]
    assert [r["Name"] for r in rows(final_failed)] == ["Bad"]  # retried rows are not final failures
    names = sorted(r["Name"] for r in emulator.records("Account"))
    assert names == sorted(f"Acme {i}" for i in range(30))  # each row once


def test_lock_retry_falls_back_to_one_job_at_a_time(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    emulator.set_faults(lock_row_rate=0.6, seed=3)
    real = retries_module.write_failed_rows

    def clear_faults_then_write(*args: Any, **kwargs: Any) -> Any:
        emulator.set_faults(lock_row_rate=0.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(retries_module, "write_failed_rows", clear_faults_then_write)
    source = write(tmp_path / "a.csv", ["Name"], [[f"N{i}"] for i in range(40)])
    result = run(source, lock_retry=True, max_records_per_job=10, job_concurrency=4, multipart_max_bytes=0)
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["rounds"][0]["concurrency"] == 4
    assert manifest["rounds"][1]["concurrency"] == 1
    assert manifest["rounds"][1]["retried_codes"] == ["UNABLE_TO_LOCK_ROW"]
    assert result["records_successful"] == 40
    assert len(emulator.records("Account")) == 40


def test_failed_job_fails_with_salesforce_message(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(failing_batch=1)
    salesforce_conn(server)
    context = {"ti": FakeTI()}
    with pytest.raises(AirflowFailException, match="Failed to process batch 1"):
        run(write(tmp_path / "a.csv", ["Name"], [["A"], ["B"]]), context, multipart_max_bytes=0)
    pushed = context["ti"].xcoms["return_value"]
    assert pushed["records_unprocessed"] == 2
    (unprocessed,) = pushed["unprocessed_records"]
    assert [r["Name"] for r in rows(unprocessed)] == ["A", "B"]


def test_preflight_fails_before_any_job(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(daily_bulk_api_batches=1)
    salesforce_conn(server)
    source = write(tmp_path / "a.csv", ["Name"], [[f"N{i}"] for i in range(4)])
    with pytest.raises(AirflowFailException, match="DailyBulkApiBatches"):
        run(source, max_records_per_job=2)
    assert jobs(server) == []
    result = run(source, max_records_per_job=2, limits_check="warn", multipart_max_bytes=0)
    assert result["records_successful"] == 4


BAD_INPUTS = {
    "missing file": (None, "insert", {}),
    "empty file": (b"", "insert", {}),
    "header only": (b"Name,Rating\n", "insert", {}),
    "unbalanced quotes": (b'Name,Rating\n"Acme,Hot\n', "insert", {}),
    "delete without Id": (b"Name\nAcme\n", "delete", {}),
    "delete with extra column": (b"Id,Name\n001000000000001AAA,Acme\n", "delete", {}),
    "upsert without key column": (b"Name\nAcme\n", "upsert", {"external_id_field": "External_Id__c"}),
    "wrong delimiter": (b"Name;Rating\nAcme;Hot\n", "insert", {}),
    "wrong line ending": (b"Name,Rating\r\nAcme,Hot\r\n", "insert", {}),
    "invalid UTF-8": (b"Name,Rating\nAc\xffme,Hot\n", "insert", {}),
    "ragged row": (b"Name,Rating\nAcme\n", "insert", {}),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_any_job(emulator, salesforce_conn, tmp_path, case):
    salesforce_conn(emulator)
    content, operation, extra = BAD_INPUTS[case]
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(AirflowFailException) as failure:
        run(str(source), operation=operation, **extra)
    assert str(source) in str(failure.value) or "does not exist" in str(failure.value)
    assert jobs(emulator) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operation": "merge"}, "operation must be one of"),
        ({"operation": "upsert"}, "external_id_field"),
        ({"column_delimiter": "COLON"}, "delimiter"),
    ],
)
def test_bad_parameters_fail_before_any_job(emulator, salesforce_conn, tmp_path, kwargs, message):
    salesforce_conn(emulator)
    source = write(tmp_path / "a.csv", ["Name"], [["A"]])
    with pytest.raises(AirflowFailException, match=message):
        run(source, **kwargs)
    assert jobs(emulator) == []


def test_after_a_failed_job_no_further_job_starts(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(failing_batch=1)
    salesforce_conn(server)
    context = {"ti": FakeTI()}
    source = write(tmp_path / "a.csv", ["Name"], [[f"N{i}"] for i in range(30)])
    with pytest.raises(AirflowFailException, match="Failed to process batch 1"):
        run(source, context, max_records_per_job=10, job_concurrency=1, multipart_max_bytes=0,
            retry_unprocessed_records=False)
    states = sorted(job["state"] for job in jobs(server))
    assert states == ["Aborted", "Aborted", "Failed"]  # the two jobs still Open were never started
    pushed = context["ti"].xcoms["return_value"]
    assert pushed["records_unprocessed"] == 30
    assert pushed["records_successful"] == 0


def test_preflight_warns_before_the_daily_cap(
    emulator_factory, salesforce_conn, tmp_path, capsys, monkeypatch
):
    from airflow_provider_sfbulk.operators import ingest as ingest_operator_module

    server = emulator_factory(daily_bulk_api_batches=10)
    salesforce_conn(server)
    sent: list[str] = []
    monkeypatch.setattr(ingest_operator_module.Stats, "incr", lambda name, *a, **k: sent.append(name))
    source = write(tmp_path / "a.csv", ["Name"], [[f"N{i}"] for i in range(10)])
    result = run(source, max_records_per_job=1, multipart_max_bytes=0, limits_warn_share=0.2)  # 10 of 10 left
    assert result["records_successful"] == 10
    captured = capsys.readouterr()
    assert "less than limits_warn_share=0.2" in captured.out + captured.err
    assert "sfbulk.limits.daily_batches_low" in sent
    sent.clear()
    run(write(tmp_path / "b.csv", ["Name"], [["X"]]), limits_check="off")
    assert "sfbulk.limits.daily_batches_low" not in sent
