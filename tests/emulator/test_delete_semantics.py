"""Deleting a record: master-detail children go with it, lookups are cleared or block the delete."""

from __future__ import annotations

import csv
import io
import json

import pytest

from airflow_provider_sfbulk.emulator.testing import ApiSession

SCHEMA = {"objects": {
    "Master__c": {"keyPrefix": "a20", "fields": {"Name": {"type": "string"}}},
    "Detail__c": {"keyPrefix": "a21", "fields": {
        "Name": {"type": "string"},
        "Master__c": {"type": "reference", "referenceTo": "Master__c", "relationshipName": "Master__r",
                      "masterDetail": True}}},
    "Line__c": {"keyPrefix": "a22", "fields": {
        "Name": {"type": "string"},
        "Detail__c": {"type": "reference", "referenceTo": "Detail__c", "relationshipName": "Detail__r",
                      "masterDetail": True}}},
    "Note__c": {"keyPrefix": "a23", "fields": {
        "Name": {"type": "string"},
        "Master__c": {"type": "reference", "referenceTo": "Master__c", "relationshipName": "Master__r"}}},
    "Lock__c": {"keyPrefix": "a24", "labelPlural": "Locks", "fields": {
        "Name": {"type": "string"},
        "Target__c": {"type": "reference", "referenceTo": "Detail__c", "relationshipName": "Target__r",
                      "deleteConstraint": "Restrict"}}},
}}


class Org:
    def __init__(self, server) -> None:
        self.server = server
        self.api = ApiSession(server)

    def load(self, obj: str, data: str) -> list[str]:
        info = self.api.run_ingest(obj, "insert", data.encode())
        assert info["numberRecordsFailed"] == 0, self.results(info["id"], "failedResults")
        return [row[0] for row in self.results(info["id"], "successfulResults")]

    def results(self, job_id: str, name: str) -> list[list[str]]:
        text = self.api.get(f"/jobs/ingest/{job_id}/{name}").text
        return list(csv.reader(io.StringIO(text, newline="")))[1:]

    def delete(self, operation: str, ids: list[str]) -> tuple[dict, list[list[str]], list[list[str]]]:
        info = self.api.run_ingest("Master__c" if ids[0].startswith("a20") else "Detail__c", operation,
                                   ("Id\n" + "".join(f"{i}\n" for i in ids)).encode())
        return info, self.results(info["id"], "successfulResults"), self.results(info["id"], "failedResults")

    def ids(self, obj: str, *, include_deleted: bool = False) -> list[str]:
        return sorted(r["Id"] for r in self.server.records(obj, include_deleted=include_deleted))

    def query(self, soql: str, operation: str = "query") -> list[dict[str, str]]:
        info = self.api.run_query(soql, operation)
        assert info["state"] == "JobComplete"
        return list(csv.DictReader(io.StringIO(self.api.get(f"/jobs/query/{info['id']}/results").text)))


@pytest.fixture
def org(emulator_factory, tmp_path) -> Org:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    org = Org(emulator_factory(schema_path=path))
    m1, m2 = org.load("Master__c", "Name\nM1\nM2\n")
    d1, d2, d3 = org.load("Detail__c", f"Name,Master__c\nD1,{m1}\nD2,{m1}\nD3,{m2}\n")
    org.load("Line__c", f"Name,Detail__c\nL1,{d1}\nL2,{d3}\n")
    org.load("Note__c", f"Name,Master__c\nN1,{m1}\nN2,{m2}\n")
    org.m1, org.m2, org.d1, org.d2, org.d3 = m1, m2, d1, d2, d3  # type: ignore[attr-defined]
    return org


def test_delete_cascades_to_details_and_clears_lookups(org):
    info, ok, failed = org.delete("delete", [org.m1])
    assert (info["state"], info["numberRecordsProcessed"],
            info["numberRecordsFailed"]) == ("JobComplete", 1, 0)
    assert [row[0] for row in ok] == [org.m1]
    assert failed == []
    assert org.ids("Master__c") == [org.m2]
    assert org.ids("Detail__c") == [org.d3]
    assert [r["Name"] for r in org.server.records("Line__c")] == ["L2"]
    notes = {r["Name"]: r["Master__c"] for r in org.server.records("Note__c")}
    assert notes == {"N1": None, "N2": org.m2}
    # soft-deleted details are in the recycle bin: queryAll sees them with IsDeleted true
    everything = org.query("SELECT Id, Name, IsDeleted FROM Detail__c", "queryAll")
    assert sorted((r["Name"], r["IsDeleted"]) for r in everything) == [
        ("D1", "true"), ("D2", "true"), ("D3", "false")]
    assert [r["Name"] for r in org.query("SELECT Name FROM Line__c")] == ["L2"]
    assert sorted(r["Name"] for r in org.query("SELECT Name FROM Line__c", "queryAll")) == ["L1", "L2"]


def test_hard_delete_removes_the_whole_tree(org):
    org.delete("delete", [org.m1])  # the details go to the recycle bin first
    info, ok, failed = org.delete("hardDelete", [org.m1])
    assert (len(ok), failed) == (1, [])
    assert info["state"] == "JobComplete"
    assert org.ids("Master__c", include_deleted=True) == [org.m2]
    assert org.ids("Detail__c", include_deleted=True) == [org.d3]
    assert [r["Name"] for r in org.server.records("Line__c", include_deleted=True)] == ["L2"]
    assert len(org.query("SELECT Id FROM Detail__c", "queryAll")) == 1


def test_restrict_blocks_the_delete_down_the_tree(org):
    org.load("Lock__c", f"Name,Target__c\nK1,{org.d3}\n")
    info, ok, failed = org.delete("delete", [org.m1, org.m2])
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (2, 1)
    assert [row[0] for row in ok] == [org.m1]
    # the message names the record the restricting one points at (D3, deleted through M2's cascade)
    assert failed == [[org.m2, "DELETE_FAILED:Your attempt to delete D3 could not be completed because it is "
                       "associated with the following locks.: K1:--", org.m2]]
    assert org.ids("Master__c") == [org.m2]
    assert org.ids("Detail__c") == [org.d3]  # nothing under the blocked master moved
    assert {r["Name"]: r["Master__c"] for r in org.server.records("Note__c")}["N2"] == org.m2


def test_restrict_directly_and_soft_deleted_children_do_not_block(org):
    lock = org.load("Lock__c", f"Name,Target__c\nK1,{org.d1}\n")[0]
    _, ok, failed = org.delete("hardDelete", [org.d1])
    assert ok == []
    assert failed[0][1].startswith("DELETE_FAILED:Your attempt to delete D1 could not be completed")
    info = org.api.run_ingest("Lock__c", "delete", f"Id\n{lock}\n".encode())
    assert info["numberRecordsFailed"] == 0
    _, ok, failed = org.delete("delete", [org.d1])
    assert ([row[0] for row in ok], failed) == ([org.d1], [])
    assert [r["Name"] for r in org.server.records("Line__c")] == ["L2"]


def test_default_schema_deletes_contacts_with_their_account(emulator):
    api = ApiSession(emulator)
    account = api.run_ingest("Account", "insert", b"Name\nAcme\n")
    results = api.get(f"/jobs/ingest/{account['id']}/successfulResults").text
    acme = list(csv.reader(io.StringIO(results)))[1][0]
    api.run_ingest("Contact", "insert", f"LastName,AccountId\nDoe,{acme}\n".encode())
    api.run_ingest("Invoice__c", "insert", f"Invoice_Number__c,Amount__c,Account__c\nI-1,5,{acme}\n".encode())
    info = api.run_ingest("Account", "delete", f"Id\n{acme}\n".encode())
    assert info["numberRecordsFailed"] == 0
    assert emulator.records("Contact") == []
    assert [r["IsDeleted"] for r in emulator.records("Contact", include_deleted=True)] == ["true"]
    assert [r["Account__c"] for r in emulator.records("Invoice__c")] == [None]
