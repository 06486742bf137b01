"""The describe preflight: a header that does not fit the object is refused before any job exists,
naming every problem; with the check off, Salesforce fails the job instead."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

pytestmark = pytest.mark.usefixtures("results_base")


def write(tmp_path: Path, header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path = tmp_path / "data.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def run(source: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    op = SalesforceBulkIngestOperator(
        task_id="load", source=source, deferrable=False, poll_interval=0.05, max_poll_interval=0.1, **kwargs
    )
    return op.execute({"ti": FakeTI()})


def jobs(server: Any) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return response.json()["records"]


@pytest.mark.parametrize(
    ("kwargs", "header", "row", "expected"),
    [
        ({}, ["Name", "Nonexistent__c", "Bogus"], ["A", "x", "y"],
         ["column 'Nonexistent__c': Account has no such field", "column 'Bogus': Account has no such field"]),
        ({}, ["Name", "CreatedDate"], ["A", "2024-01-01T00:00:00Z"],
         ["column 'CreatedDate': CreatedDate cannot be set on insert (not createable)"]),
        ({"object_name": "Contact"}, ["FirstName", "Email"], ["Ann", "ann@example.com"],
         ["required field(s) missing for insert: LastName"]),
        ({"object_name": "Contact"}, ["LastName", "Acount.External_Id__c"], ["Smith", "X"],
         ["column 'Acount.External_Id__c': Contact has no relationship 'Acount'"]),
        ({"object_name": "Contact"}, ["LastName", "Account.Nope__c"], ["Smith", "X"],
         ["column 'Account.Nope__c': Account has no field 'Nope__c'"]),
        ({"object_name": "Contact"}, ["LastName", "Account.Name"], ["Smith", "Acme"],
         ["column 'Account.Name': Account.Name is not an external id or id lookup field"]),
        ({"operation": "upsert", "external_id_field": "Description"}, ["Name", "Description"], ["A", "d"],
         ["external_id_field 'Description': Account.Description is not an external id or id lookup field"]),
        ({"operation": "update"}, ["Id", "CreatedDate"], ["001000000000001AAA", "2024-01-01T00:00:00Z"],
         ["column 'CreatedDate': CreatedDate cannot be changed (not updateable)"]),
        ({"object_name": "Widget__x"}, ["Name"], ["A"],
         ["the object 'Widget__x' does not exist in this org"]),
    ],
)
def test_a_header_that_does_not_fit_is_refused_before_any_job(
    emulator, salesforce_conn, tmp_path, kwargs, header, row, expected
):
    salesforce_conn(emulator)
    with pytest.raises(AirflowFailException) as refused:
        run(write(tmp_path, header, [row]), **kwargs)
    message = str(refused.value)
    for problem in expected:
        assert problem in message
    assert jobs(emulator) == []


def test_a_header_that_fits_loads_including_a_parent_reference(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    run(write(tmp_path, ["Name", "External_Id__c"], [["Parent", "P1"]]))
    header = ["lastname", "External_Id__c", "account.external_id__c"]
    contacts = write(tmp_path, header, [["Smith", "C1", "P1"]])
    result = run(contacts, object_name="Contact", operation="upsert", external_id_field="External_Id__c")
    assert result["records_successful"] == 1
    (contact,) = emulator.records("Contact")
    (account,) = emulator.records("Account")
    assert contact["AccountId"] == account["Id"]


def test_describe_is_asked_once_per_object(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    run(write(tmp_path, ["Name", "External_Id__c"], [["Parent", "P1"]]))
    asked: list[str] = []
    real = SalesforceBulkHook.describe_object

    def describe(self: Any, object_name: str) -> Any:
        asked.append(object_name)
        return real(self, object_name)

    monkeypatch.setattr(SalesforceBulkHook, "describe_object", describe)
    source = write(tmp_path, ["LastName", "Account.External_Id__c", "ReportsTo.External_Id__c"],
                   [[f"L{i}", "P1", ""] for i in range(30)])
    run(source, object_name="Contact", max_records_per_job=10, multipart_max_bytes=0)
    assert sorted(asked) == ["Account", "Contact"]  # ReportsTo points at Contact: already described


def test_with_the_check_off_salesforce_fails_the_job(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    with pytest.raises(AirflowFailException, match="Field name not found : Nonexistent__c"):
        run(write(tmp_path, ["Name", "Nonexistent__c"], [["A", "x"]]), describe_check=False)
    assert len(jobs(emulator)) == 1
