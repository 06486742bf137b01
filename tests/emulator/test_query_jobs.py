"""Query jobs against the emulator over loopback HTTP: create, paging, resultPages, gzip, versions."""

from __future__ import annotations

import csv
import gzip
import io

import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession

CREATE_KEYS = ["id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
               "concurrencyMode", "contentType", "apiVersion", "lineEnding", "columnDelimiter"]
GET_KEYS = ["id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
            "concurrencyMode", "contentType", "apiVersion", "jobType", "lineEnding", "columnDelimiter",
            "numberRecordsProcessed", "retries", "totalProcessingTime", "isPkChunkingSupported"]


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_create_and_complete(emulator):
    emulator.seed("Account", 12)
    api = ApiSession(emulator)
    response = api.post("/jobs/query", json={"operation": "query", "query": "SELECT Id, Name FROM account"})
    assert response.status_code == 200
    created = response.json()
    assert list(created) == CREATE_KEYS
    assert created["state"] == "UploadComplete"
    assert created["object"] == "Account"
    assert created["id"].startswith("750")
    info = api.wait_job("query", created["id"])
    assert list(info) == GET_KEYS
    assert info["state"] == "JobComplete"
    assert info["jobType"] == "V2Query"
    assert info["numberRecordsProcessed"] == 12
    result = api.get(f"/jobs/query/{created['id']}/results")
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/csv")
    assert result.headers["Sforce-Locator"] == "null"
    assert result.headers["Sforce-NumberOfRecords"] == "12"
    assert result.text.startswith('"Id","Name"')
    assert len(rows(result.text)) == 12


@pytest.mark.parametrize(
    ("soql", "codes"),
    [
        ("SELECT Foo__c FROM Account", {"INVALID_FIELD"}),
        ("SELECT Id FROM Nope__c", {"INVALID_TYPE"}),
        ("SELEC Id FROM Account", {"MALFORMED_QUERY"}),
        ("SELECT Id FROM Account GROUP BY Name", {"MALFORMED_QUERY", "API_ERROR", "INVALID_FIELD"}),
    ],
)
def test_bad_soql_is_rejected_at_create(emulator, soql, codes):
    api = ApiSession(emulator)
    response = api.post("/jobs/query", json={"operation": "query", "query": soql})
    assert response.status_code == 400
    error = response.json()[0]
    assert error["errorCode"] in codes
    assert error["message"]
    assert api.get("/jobs/query").json()["records"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"query": "SELECT Id FROM Account"},
        {"operation": "select", "query": "SELECT Id FROM Account"},
        {"operation": "query"},
        {"operation": "query", "query": "SELECT Id FROM Account", "columnDelimiter": "DASH"},
        {"operation": "query", "query": "SELECT Id FROM Account", "lineEnding": "CR"},
        {"operation": "query", "query": "SELECT Id FROM Account", "contentType": "XML"},
    ],
)
def test_create_validation(emulator, body):
    response = ApiSession(emulator).post("/jobs/query", json=body)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] in ("INVALIDJOB", "JSON_PARSER_ERROR")


def test_paging_with_locators_and_jsforce_paths(emulator):
    emulator.seed("Account", 25)
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id, Name FROM Account ORDER BY Name")
    seen: list[str] = []
    counts: list[int] = []
    locator = None
    for _ in range(10):
        suffix = f"&locator={locator}" if locator else ""
        page = api.get(f"//jobs/query//{info['id']}/results?maxRecords=10{suffix}")
        assert page.status_code == 200
        assert page.text.startswith('"Id","Name"')  # every page carries its header row
        page_rows = rows(page.text)
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(page_rows)
        counts.append(len(page_rows))
        seen += [r["Id"] for r in page_rows]
        locator = page.headers["Sforce-Locator"]
        if locator == "null":
            break
    assert counts == [10, 10, 5]
    assert len(set(seen)) == 25
    assert api.get(f"/jobs/query/{info['id']}/results?locator=bm9wZQ").status_code == 400
    assert api.get(f"/jobs/query/{info['id']}/results?maxRecords=0").status_code == 400
    assert api.get(f"/jobs/query/{info['id']}/results?maxRecords=abc").status_code == 400


def test_zero_rows(emulator):
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id FROM Account")
    page = api.get(f"/jobs/query/{info['id']}/results")
    assert page.status_code == 200
    assert page.headers["Sforce-NumberOfRecords"] == "0"
    assert page.headers["Sforce-Locator"] == "null"


def test_results_need_the_same_api_version(emulator):
    emulator.seed("Account", 2)
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id FROM Account")
    assert api.get(f"/jobs/query/{info['id']}/results").status_code == 200
    other = api.get(f"/jobs/query/{info['id']}/results", version="59.0")
    assert other.status_code == 409
    assert other.json()[0]["errorCode"]
    assert api.get(f"/jobs/query/{info['id']}", version="59.0").status_code == 200


def test_result_pages(emulator):
    emulator.seed("Account", 23)
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id FROM Account")
    url = f"/jobs/query/{info['id']}/resultPages?maxRecords=2"
    urls: list[str] = []
    calls = 0
    while url and calls < 10:
        body = api.get(url).json()
        calls += 1
        assert len(body["resultPages"]) <= 5
        urls += [p["resultUrl"] for p in body["resultPages"]]
        url = body["nextRecordsUrl"]
        assert body["done"] == (url is None)
    assert calls == 3
    assert len(urls) == 12
    assert urls[0] == f"/services/data/v60.0/jobs/query/{info['id']}/results?maxRecords=2"
    total = 0
    for result_url in urls:
        page = api.get(result_url)
        assert page.status_code == 200
        total += int(page.headers["Sforce-NumberOfRecords"])
    assert total == 23
    assert api.get(f"/jobs/query/{info['id']}/resultPages", version="57.0").status_code == 404
    assert api.get(f"/jobs/query/{info['id']}/resultPages?locator=%%%").status_code == 400


def test_gzip_results(emulator):
    emulator.seed("Account", 50)
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id, Name, AnnualRevenue FROM Account")
    url = api.url(f"/jobs/query/{info['id']}/results")
    headers = {"Authorization": f"Bearer {api.token}"}
    plain = requests.get(url, headers={**headers, "Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in plain.headers
    assert int(plain.headers["Content-Length"]) == len(plain.content)
    zipped = requests.get(url, headers={**headers, "Accept-Encoding": "gzip, deflate"}, stream=True,
                          timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Sforce-NumberOfRecords"] == "50"
    assert gzip.decompress(zipped.raw.read()) == plain.content


def test_query_all_sees_deleted_rows(emulator):
    api = ApiSession(emulator)
    inserted = api.run_ingest("Account", "insert", b"Name\nKeep\nGone\n")
    ok = rows(api.get(f"/jobs/ingest/{inserted['id']}/successfulResults").text)
    gone = next(r["sf__Id"] for r in ok if r["Name"] == "Gone")
    deleted = api.run_ingest("Account", "delete", f"Id\n{gone}\n".encode())
    assert deleted["numberRecordsFailed"] == 0
    live = api.run_query("SELECT Id FROM Account")
    everything = api.run_query("SELECT Id FROM Account", operation="queryAll")
    assert live["numberRecordsProcessed"] == 1
    assert everything["numberRecordsProcessed"] == 2
    assert everything["operation"] == "queryAll"


def test_abort_delete_and_list(emulator):
    api = ApiSession(emulator)
    before = api.get("/limits").json()["DailyBulkV2QueryJobs"]["Remaining"]
    created = api.post("/jobs/query", json={"operation": "query", "query": "SELECT Id FROM Account"}).json()
    abort = api.patch(f"/jobs/query/{created['id']}", json={"state": "Aborted"})
    if abort.status_code == 200:  # the job may already have finished; then Aborted is illegal
        assert abort.json()["state"] == "Aborted"
        assert api.get(f"/jobs/query/{created['id']}/results").status_code == 400
    else:
        assert abort.status_code == 400
        assert abort.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert api.patch(f"/jobs/query/{created['id']}", json={"state": "UploadComplete"}).status_code == 400
    listed = api.get("/jobs/query").json()
    assert [r["id"] for r in listed["records"]] == [created["id"]]
    assert listed["records"][0]["jobType"] == "V2Query"
    assert api.get("/jobs/ingest").json()["records"] == []
    assert api.get(f"/jobs/ingest/{created['id']}").status_code == 404  # a query job is not an ingest job
    assert api.delete(f"/jobs/query/{created['id']}").status_code == 204
    assert api.get(f"/jobs/query/{created['id']}").status_code == 404
    after = api.get("/limits").json()["DailyBulkV2QueryJobs"]["Remaining"]
    assert before - after == 1


def test_query_results_survive_restart(emulator_factory, tmp_path):
    data_dir = tmp_path / "q"
    first = emulator_factory(data_dir=data_dir, seed_records={"Contact": 7})
    api = ApiSession(first)
    info = api.run_query("SELECT Id, LastName, Account.Name FROM Contact", columnDelimiter="SEMICOLON",
                         lineEnding="CRLF")
    body = api.get(f"/jobs/query/{info['id']}/results").content
    assert b"\r\n" in body
    assert b'"Id";"LastName";"Account.Name"' in body
    first.stop()
    second = emulator_factory(data_dir=data_dir)
    assert ApiSession(second).get(f"/jobs/query/{info['id']}/results").content == body
