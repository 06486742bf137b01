"""The record clock: ingest changes are stamped with ``records.clock`` (SystemModstamp, LastModifiedDate,
CreatedDate), and a half-open datetime filter on ``SystemModstamp`` puts a record stamped exactly on a
bound in the interval that starts there, deletions included with ``queryAll``."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from airflow_provider_sfbulk.emulator import records
from airflow_provider_sfbulk.emulator.testing import ApiSession

T0 = datetime(2024, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
BOUND = datetime(2024, 3, 2, 0, 0, 0, tzinfo=timezone.utc)


def _rows(api: ApiSession, soql: str, operation: str = "query") -> list[dict[str, str]]:
    info = api.run_query(soql, operation)
    assert info["state"] == "JobComplete", info
    return list(csv.DictReader(io.StringIO(api.get(f"/jobs/query/{info['id']}/results").text)))


def _stamp(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(records, "clock", lambda: moment)


def test_changes_are_stamped_with_the_clock(emulator, monkeypatch):
    api = ApiSession(emulator)
    _stamp(monkeypatch, T0)
    assert api.run_ingest("Account", "insert", b"Name\nAcme\n")["numberRecordsProcessed"] == 1
    (record,) = emulator.records("Account")
    assert record["CreatedDate"] == record["SystemModstamp"] == "2024-03-01T10:00:00.000Z"
    _stamp(monkeypatch, BOUND)
    api.run_ingest("Account", "update", f"Id,Name\n{record['Id']},Acme 2\n".encode())
    (updated,) = emulator.records("Account")
    assert updated["CreatedDate"] == "2024-03-01T10:00:00.000Z"
    assert updated["LastModifiedDate"] == updated["SystemModstamp"] == "2024-03-02T00:00:00.000Z"


def test_half_open_interval_on_the_bound_and_deleted_rows(emulator, monkeypatch):
    api = ApiSession(emulator)
    _stamp(monkeypatch, T0)
    api.run_ingest("Account", "insert", b"Name\nBefore\nOnBound\nDeleted\n")
    ids = {r["Name"]: r["Id"] for r in emulator.records("Account")}
    _stamp(monkeypatch, BOUND)
    api.run_ingest("Account", "update", f"Id,Name\n{ids['OnBound']},OnBound\n".encode())
    api.run_ingest("Account", "delete", f"Id\n{ids['Deleted']}\n".encode())
    first = "SELECT Name, IsDeleted FROM Account WHERE SystemModstamp >= 2024-03-01T00:00:00Z AND " \
        "SystemModstamp < 2024-03-02T00:00:00Z"
    second = "SELECT Name, IsDeleted FROM Account WHERE SystemModstamp >= 2024-03-02T00:00:00Z AND " \
        "SystemModstamp < 2024-03-03T00:00:00Z"
    assert [r["Name"] for r in _rows(api, first)] == ["Before"]
    assert [r["Name"] for r in _rows(api, second)] == ["OnBound"]  # query hides the deleted row
    assert sorted((r["Name"], r["IsDeleted"]) for r in _rows(api, second, "queryAll")) == [
        ("Deleted", "true"),
        ("OnBound", "false"),
    ]
