"""External id, unique and parent-reference matching: case-insensitive unless the field is caseSensitive."""

from __future__ import annotations

import csv
import io
import json

import pytest

from airflow_provider_sfbulk.emulator.testing import ApiSession


def results(api: ApiSession, job_id: str, name: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(api.get(f"/jobs/ingest/{job_id}/{name}").text, newline="")))[1:]


def run(api: ApiSession, obj: str, operation: str, data: str,
        **body) -> tuple[list[list[str]], list[list[str]]]:
    info = api.run_ingest(obj, operation, data.encode(), **body)
    assert info["state"] == "JobComplete", info
    return results(api, info["id"], "successfulResults"), results(api, info["id"], "failedResults")


def test_upsert_matches_external_id_in_any_case(emulator):
    api = ApiSession(emulator)
    ok, _ = run(api, "Account", "insert", "Name,External_Id__c\nAcme,EXT-1\n")
    acme_id = ok[0][0]
    ok, failed = run(api, "Account", "upsert", "Name,External_Id__c\nAcme Renamed,ext-1\n",
                     externalIdFieldName="External_Id__c")
    assert failed == []
    assert ok == [[acme_id, "false", "Acme Renamed", "ext-1"]]
    records = emulator.records("Account")
    assert [(r["Id"], r["Name"]) for r in records] == [(acme_id, "Acme Renamed")]


def test_unique_violation_ignores_case(emulator):
    api = ApiSession(emulator)
    ok, _ = run(api, "Account", "insert", "Name,External_Id__c\nAcme,EXT-1\n")
    ok2, failed = run(api, "Account", "insert",
                      "Name,External_Id__c\nOther,ext-1\nThird,eXt-2\nFourth,EXT-2\n")
    assert [row[2] for row in ok2] == ["Third"]
    assert [row[1] for row in failed] == [
        "DUPLICATE_VALUE:duplicate value found: External_Id__c duplicates value on record with id: "
        f"{ok[0][0][:15]}:--",
        "DUPLICATE_VALUE:duplicate value found: <unknown> duplicates value on record with id: <unknown>:--",
    ]


def test_same_key_twice_in_one_upsert_batch(emulator):
    api = ApiSession(emulator)
    ok, failed = run(api, "Account", "upsert", "Name,External_Id__c\nOne,K-1\nTwo,k-1\n",
                     externalIdFieldName="External_Id__c")
    assert ok == []
    assert [row[1] for row in failed] == [
        "DUPLICATE_VALUE:Duplicate external id specified: K-1:External_Id__c --",
        "DUPLICATE_VALUE:Duplicate external id specified: k-1:External_Id__c --",
    ]


def test_parent_reference_by_external_id_in_any_case(emulator):
    api = ApiSession(emulator)
    ok, _ = run(api, "Account", "insert", "Name,External_Id__c\nAcme,EXT-1\n")
    contacts, failed = run(api, "Contact", "insert", "LastName,Account.External_Id__c\nDoe,ext-1\n")
    assert failed == []
    assert emulator.records("Contact")[0]["AccountId"] == ok[0][0]
    assert contacts[0][3] == "ext-1"


@pytest.fixture
def case_sensitive(emulator_factory, tmp_path):
    schema = {"objects": {
        "Parent__c": {"keyPrefix": "a10", "fields": {
            "Code__c": {"type": "string", "length": 20, "externalId": True, "unique": True,
                        "caseSensitive": True},
            "Loose__c": {"type": "string", "length": 20, "unique": True}}},
        "Child__c": {"keyPrefix": "a11", "fields": {
            "Name": {"type": "string"},
            "Parent__c": {"type": "reference", "referenceTo": "Parent__c",
                          "relationshipName": "Parent__r"}}}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    return emulator_factory(schema_path=path)


def test_case_sensitive_field_keeps_case_apart(case_sensitive):
    api = ApiSession(case_sensitive)
    ok, _ = run(api, "Parent__c", "insert", "Code__c\nABC\n")
    ok, failed = run(api, "Parent__c", "upsert", "Code__c\nabc\n", externalIdFieldName="Code__c")
    assert failed == []
    assert ok[0][1] == "true"  # a new record: "abc" is not "ABC"
    assert sorted(r["Code__c"] for r in case_sensitive.records("Parent__c")) == ["ABC", "abc"]
    _, failed = run(api, "Parent__c", "insert", "Code__c\nABC\n")
    assert failed[0][1].startswith("DUPLICATE_VALUE:duplicate value found: Code__c duplicates value")
    children, failed = run(api, "Child__c", "insert", "Name,Parent__r.Code__c\nexact,ABC\nwrong,Abc\n")
    assert [row[2] for row in children] == ["exact"]
    assert [row[1] for row in failed] == [
        "INVALID_FIELD:Foreign key external ID: Abc not found for field Code__c in entity Parent__c:--"]


def test_non_external_unique_field_folds_by_default(case_sensitive):
    api = ApiSession(case_sensitive)
    ok, failed = run(api, "Parent__c", "insert", "Code__c,Loose__c\nX1,Same\nX2,SAME\n")
    assert [row[2] for row in ok] == ["X1"]
    assert failed[0][1] == ("DUPLICATE_VALUE:duplicate value found: <unknown> duplicates value on record "
                            "with id: <unknown>:--")
