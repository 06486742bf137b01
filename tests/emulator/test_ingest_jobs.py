"""Ingest jobs against the emulator over loopback HTTP: lifecycle, validation, uploads, results, limits."""

from __future__ import annotations

import csv
import gzip
import io
import time

import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.emulator.worker import RESTART_MESSAGE

CREATE_KEYS = ["id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
               "externalIdFieldName", "concurrencyMode", "contentType", "apiVersion", "contentUrl",
               "lineEnding", "columnDelimiter"]
GET_KEYS = ["id", "operation", "object", "createdById", "createdDate", "systemModstamp", "state",
            "externalIdFieldName", "concurrencyMode", "contentType", "apiVersion", "jobType", "contentUrl",
            "lineEnding", "columnDelimiter", "numberRecordsProcessed", "numberRecordsFailed", "retries",
            "totalProcessingTime", "apiActiveProcessingTime", "apexProcessingTime"]


def accounts_csv(n: int, start: int = 0) -> bytes:
    lines = ["Name,NumberOfEmployees"] + [f"Account {i},{i}" for i in range(start, start + n)]
    return ("\n".join(lines) + "\n").encode()


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def wait_state(api: ApiSession, job_id: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = api.get(f"/jobs/ingest/{job_id}").json()
        if info["state"] == state:
            return info
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {state}")


def test_create_returns_jobinfo_in_salesforce_order(emulator):
    api = ApiSession(emulator)
    response = api.post("/jobs/ingest", json={"object": "Account", "operation": "insert"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    info = response.json()
    assert list(info) == CREATE_KEYS
    assert info["id"].startswith("750")
    assert len(info["id"]) == 18
    assert info["state"] == "Open"
    assert info["apiVersion"] == 60.0
    assert isinstance(info["apiVersion"], float)
    assert '"apiVersion":60.0' in response.text
    assert info["contentUrl"] == f"services/data/v60.0/jobs/ingest/{info['id']}/batches"
    assert info["externalIdFieldName"] is None
    assert info["createdDate"].endswith("+0000")
    assert len(info["createdDate"]) == 28


def test_full_lifecycle_counts_match_results(emulator):
    api = ApiSession(emulator)
    data = b"Name,NumberOfEmployees,Rating\nAcme,10,Hot\nBad,notanumber,Hot\nGlobex,5,Warm\n,3,Cold\n"
    job = api.create_ingest("Account")
    upload = api.upload(job["id"], data)
    assert upload.status_code == 201
    assert upload.content == b""
    closed = api.close(job["id"])
    assert closed.status_code == 200
    assert closed.json()["state"] == "UploadComplete"
    info = api.wait_job("ingest", job["id"])
    assert list(info) == GET_KEYS
    assert info["state"] == "JobComplete"
    assert info["jobType"] == "V2Ingest"
    assert info["numberRecordsProcessed"] == 4
    assert info["numberRecordsFailed"] == 2
    ok = api.get(f"/jobs/ingest/{job['id']}/successfulResults")
    failed = api.get(f"/jobs/ingest/{job['id']}/failedResults")
    unprocessed = api.get(f"/jobs/ingest/{job['id']}/unprocessedrecords")
    assert ok.headers["Content-Type"].startswith("text/csv")
    assert ok.text.startswith('"sf__Id","sf__Created",Name,NumberOfEmployees,Rating')
    assert len(parse(ok.text)) == 2
    assert len(parse(failed.text)) == 2
    assert parse(unprocessed.text) == []
    assert ok.headers["Content-Encoding"] == "gzip"  # requests sends Accept-Encoding: gzip by default
    identity = api.get(f"/jobs/ingest/{job['id']}/successfulResults", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in identity.headers
    assert int(identity.headers["Content-Length"]) == len(identity.content)
    assert identity.content == ok.content
    names = sorted(r["Name"] for r in emulator.records("Account"))
    assert names == ["Acme", "Globex"]


def test_result_paths_tolerate_case_slashes_and_gzip(emulator):
    api = ApiSession(emulator)
    info = api.run_ingest("Account", "insert", accounts_csv(3))
    plain = api.get(f"/jobs/ingest/{info['id']}/successfulResults").content
    for variant in ("unprocessedRecords", "UNPROCESSEDRECORDS", "unprocessedrecords/"):
        assert api.get(f"/jobs/ingest/{info['id']}/{variant}").status_code == 200
    raw = requests.get(api.url(f"/jobs/ingest/{info['id']}/successfulResults"),
                       headers={"Authorization": f"Bearer {api.token}", "Accept-Encoding": "gzip"},
                       stream=True, timeout=10)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw.raw.read()) == plain


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"object": "Nope__c", "operation": "insert"}, "INVALIDENTITY"),
        ({"object": "Account", "operation": "merge"}, "JSON_PARSER_ERROR"),
        ({"object": "Account"}, "INVALIDJOB"),
        ({"operation": "insert"}, "INVALIDJOB"),
        ({"object": "Account", "operation": "upsert"}, "INVALIDJOB"),
        ({"object": "Account", "operation": "upsert", "externalIdFieldName": "Name"}, "INVALIDJOB"),
        ({"object": "Account", "operation": "insert", "externalIdFieldName": "External_Id__c"}, "INVALIDJOB"),
        ({"object": "Account", "operation": "insert", "columnDelimiter": "COLON"}, "JSON_PARSER_ERROR"),
        ({"object": "Account", "operation": "insert", "lineEnding": "CR"}, "JSON_PARSER_ERROR"),
        ({"object": "Account", "operation": "insert", "contentType": "JSON"}, "JSON_PARSER_ERROR"),
        ({"object": "Account", "operation": "insert", "concurrencyMode": "Serial"}, "JSON_PARSER_ERROR"),
        ({"object": "Account", "operation": "insert", "assignmentRuleId": "garbage"}, "INVALIDJOB"),
        ({"object": "Account", "operation": "insert", "colour": "blue"}, "JSON_PARSER_ERROR"),
    ],
)
def test_create_validation(emulator, body, code):
    response = ApiSession(emulator).post("/jobs/ingest", json=body)
    assert response.status_code == 400
    errors = response.json()
    assert isinstance(errors, list)
    assert errors[0]["errorCode"] == code
    assert errors[0]["message"]


def test_create_rejects_non_json(emulator):
    api = ApiSession(emulator)
    response = api.post("/jobs/ingest", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert api.post("/jobs/ingest", json=["a"]).status_code == 400


def test_create_accepts_every_option(emulator):
    from airflow_provider_sfbulk.protocol.ids import to_18

    api = ApiSession(emulator)
    rule = to_18("01Q5fE000000001")
    info = api.create_ingest("Contact", "upsert", externalIdFieldName="external_id__c",
                             columnDelimiter="PIPE", lineEnding="CRLF", assignmentRuleId=rule,
                             contentType="CSV")
    assert info["externalIdFieldName"] == "External_Id__c"
    assert info["columnDelimiter"] == "PIPE"
    assert info["lineEnding"] == "CRLF"
    assert info["assignmentRuleId"] == rule
    old = api.post("/jobs/ingest", version="48.0",
                   json={"object": "Contact", "operation": "insert", "assignmentRuleId": rule})
    assert old.status_code == 400
    data = b"LastName|External_Id__c\r\nPipe|P-1\r\n"
    api.upload(info["id"], data).raise_for_status()
    api.close(info["id"]).raise_for_status()
    final = api.wait_job("ingest", info["id"])
    assert final["state"] == "JobComplete"
    assert final["numberRecordsFailed"] == 0
    assert [r["LastName"] for r in emulator.records("Contact")] == ["Pipe"]


def test_second_put_is_rejected_with_salesforce_text(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account")
    assert api.upload(job["id"], accounts_csv(1)).status_code == 201
    second = api.upload(job["id"], accounts_csv(1))
    assert second.status_code == 400
    assert second.json() == [{
        "errorCode": "INVALIDJOB",
        "message": f"Found multipe contents for job: <{job['id'][:15]}>, please 'Close' / 'Abort' / "
                   "'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on "
                   "a given Job.",
    }]


def test_put_after_close_and_empty_put(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account")
    empty = api.upload(job["id"], b"")
    assert empty.status_code == 400
    assert api.upload(job["id"], accounts_csv(1)).status_code == 201  # the empty one did not count
    api.close(job["id"]).raise_for_status()
    late = api.upload(job["id"], accounts_csv(1))
    assert late.status_code == 400
    assert late.json()[0]["errorCode"] in ("INVALIDJOBSTATE", "INVALIDJOB")


def test_chunked_upload_is_streamed(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account")

    def body():
        yield b"Name,NumberOfEmployees\n"
        for i in range(2000):
            yield f"Chunked {i},{i}\n".encode()

    response = api.put(f"/jobs/ingest/{job['id']}/batches", data=body(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 201
    api.close(job["id"]).raise_for_status()
    info = api.wait_job("ingest", job["id"])
    assert info["numberRecordsProcessed"] == 2000
    assert info["numberRecordsFailed"] == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_size_limit(emulator_factory, chunked):
    server = emulator_factory(max_upload_bytes=1000)
    api = ApiSession(server)
    job = api.create_ingest("Account")
    data = accounts_csv(200)
    assert len(data) > 1000
    payload = iter([data[i:i + 100] for i in range(0, len(data), 100)]) if chunked else data
    response = api.put(f"/jobs/ingest/{job['id']}/batches", data=payload,
                       headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_MAX_SIZE"
    small = api.upload(job["id"], accounts_csv(2))
    assert small.status_code == 201


def test_patch_transitions(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account")
    path = f"/jobs/ingest/{job['id']}"
    no_data = api.patch(path, json={"state": "UploadComplete"})
    assert no_data.status_code == 400
    for bad in ("JobComplete", "InProgress", "Open", "Failed"):
        response = api.patch(path, json={"state": bad})
        assert response.status_code == 400
        assert response.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    unknown = api.patch(path, json={"state": "Closed"})
    assert unknown.status_code == 400
    assert unknown.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    aborted = api.patch(path, json={"state": "Aborted"})
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "Aborted"
    for again in ("Aborted", "UploadComplete"):
        response = api.patch(path, json={"state": again})
        assert response.status_code == 400
        assert response.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert api.upload(job["id"], accounts_csv(1)).status_code == 400


def test_terminal_jobs_cannot_be_aborted_or_closed(emulator):
    api = ApiSession(emulator)
    info = api.run_ingest("Account", "insert", accounts_csv(2))
    for state in ("Aborted", "UploadComplete"):
        response = api.patch(f"/jobs/ingest/{info['id']}", json={"state": state})
        assert response.status_code == 400
        assert response.json()[0]["errorCode"] == "INVALIDJOBSTATE"


def test_results_not_available_before_the_end(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account")
    response = api.get(f"/jobs/ingest/{job['id']}/successfulResults")
    assert response.status_code == 400
    assert api.get(f"/jobs/ingest/{job['id']}/otherResults").status_code == 404


def test_abort_while_in_progress(emulator_factory):
    server = emulator_factory(batch_size=5, batch_delay=0.2)
    api = ApiSession(server)
    job = api.create_ingest("Account")
    api.upload(job["id"], accounts_csv(40)).raise_for_status()
    api.close(job["id"]).raise_for_status()
    wait_state(api, job["id"], "InProgress")
    aborted = api.patch(f"/jobs/ingest/{job['id']}", json={"state": "Aborted"})
    assert aborted.status_code == 200
    assert aborted.json()["state"] == "Aborted"
    assert server.wait_idle(20)
    info = api.get(f"/jobs/ingest/{job['id']}").json()
    assert info["state"] == "Aborted"
    assert info["numberRecordsProcessed"] < 40
    unprocessed = parse(api.get(f"/jobs/ingest/{job['id']}/unprocessedrecords").text)
    ok = parse(api.get(f"/jobs/ingest/{job['id']}/successfulResults").text)
    assert len(unprocessed) + len(ok) == 40
    assert len(server.records("Account")) == len(ok)  # committed rows stay


def test_progress_is_published_between_batches_and_batches_are_counted(emulator_factory):
    server = emulator_factory(batch_size=10, batch_delay=0.25)
    api = ApiSession(server)
    before = api.get("/limits").json()["DailyBulkApiBatches"]["Remaining"]
    job = api.create_ingest("Account")
    api.upload(job["id"], accounts_csv(35)).raise_for_status()
    api.close(job["id"]).raise_for_status()
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = api.get(f"/jobs/ingest/{job['id']}").json()
        if info["state"] == "InProgress":
            seen.add(info["numberRecordsProcessed"])
        if info["state"] == "JobComplete":
            break
        time.sleep(0.02)
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == 35
    assert seen & {10, 20, 30}, seen
    after = api.get("/limits").json()["DailyBulkApiBatches"]["Remaining"]
    assert before - after == 4


def test_failing_batch_fault(emulator_factory):
    server = emulator_factory(batch_size=10)
    server.set_faults(failing_batch=2)
    api = ApiSession(server)
    info = api.run_ingest("Account", "insert", accounts_csv(30))
    assert info["state"] == "Failed"
    assert info["errorMessage"]
    unprocessed = parse(api.get(f"/jobs/ingest/{info['id']}/unprocessedrecords").text)
    ok = parse(api.get(f"/jobs/ingest/{info['id']}/successfulResults").text)
    assert len(ok) == 10
    assert len(unprocessed) == 20
    server.set_faults(failing_batch=None)
    assert api.run_ingest("Account", "insert", accounts_csv(30, 100))["state"] == "JobComplete"


def test_lock_row_fault_via_admin_endpoint(emulator):
    response = requests.put(f"{emulator.base_url}/__emulator/faults", json={"lock_row_rate": 1.0}, timeout=10)
    assert response.status_code == 200
    assert response.json()["lock_row_rate"] == 1.0
    api = ApiSession(emulator)
    info = api.run_ingest("Account", "insert", accounts_csv(4))
    assert info["numberRecordsFailed"] == 4
    failed = parse(api.get(f"/jobs/ingest/{info['id']}/failedResults").text)
    assert all(r["sf__Error"].startswith("UNABLE_TO_LOCK_ROW") for r in failed)
    requests.delete(f"{emulator.base_url}/__emulator/faults", timeout=10).raise_for_status()
    assert api.run_ingest("Account", "insert", accounts_csv(4, 10))["numberRecordsFailed"] == 0


def test_delete(emulator):
    api = ApiSession(emulator)
    open_job = api.create_ingest("Account")
    refused = api.delete(f"/jobs/ingest/{open_job['id']}")
    assert refused.status_code == 400
    info = api.run_ingest("Account", "insert", accounts_csv(2))
    job_dir = emulator.data_dir / "jobs" / info["id"]
    assert job_dir.exists()
    deleted = api.delete(f"/jobs/ingest/{info['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert api.get(f"/jobs/ingest/{info['id']}").status_code == 404
    assert api.get(f"/jobs/ingest/{info['id']}/successfulResults").status_code == 404
    assert not job_dir.exists()


def test_list_jobs_paging(emulator_factory):
    server = emulator_factory(list_page_size=2)
    api = ApiSession(server)
    created = [api.create_ingest("Account")["id"] for _ in range(5)]
    api.post("/jobs/query", json={"operation": "query", "query": "SELECT Id FROM Account"}).raise_for_status()
    seen: list[str] = []
    url = "/jobs/ingest"
    pages = 0
    while url and pages < 10:
        page = api.get(url).json()
        pages += 1
        assert len(page["records"]) <= 2
        seen += [r["id"] for r in page["records"]]
        assert all(r["jobType"] == "V2Ingest" for r in page["records"])
        url = page["nextRecordsUrl"]
        assert page["done"] == (url is None)
        if url:
            assert url.startswith("/services/data/v60.0/jobs/ingest?queryLocator=")
    assert seen == created
    assert pages == 3
    assert api.get("/jobs/ingest?queryLocator=bogus").status_code == 400
    assert api.get("/jobs/ingest?jobType=Classic").json()["records"] == []
    assert len(api.get("/jobs/ingest?jobType=V2Ingest").json()["records"]) == 2
    assert api.get("/jobs/ingest?jobType=Nope").status_code == 400


def test_multipart_create_and_upload(emulator):
    api = ApiSession(emulator)
    files = {
        "job": (None, '{"object":"Contact","contentType":"CSV","operation":"insert","lineEnding":"LF"}',
                "application/json"),
        "content": ("content", b"FirstName,LastName\nAstro,Nomical\n", "text/csv"),
    }
    response = api.post("/jobs/ingest", files=files)
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["state"] == "UploadComplete"
    again = api.close(info["id"])
    assert again.status_code == 400
    final = api.wait_job("ingest", info["id"])
    assert final["state"] == "JobComplete"
    assert final["numberRecordsProcessed"] == 1
    assert emulator.records("Contact")[0]["LastName"] == "Nomical"


def test_multipart_errors(emulator_factory):
    server = emulator_factory(max_multipart_chars=40)
    api = ApiSession(server)
    job_part = (None, '{"object":"Contact","operation":"insert"}', "application/json")
    missing = api.post("/jobs/ingest", files={"job": job_part})
    assert missing.status_code == 400
    too_big = api.post("/jobs/ingest", files={"job": job_part,
                                              "content": ("content", b"LastName\n" + b"x" * 100, "text/csv")})
    assert too_big.status_code == 400
    assert too_big.json()[0]["errorCode"] == "EXCEEDED_MAX_SIZE"
    bad_job = api.post("/jobs/ingest", files={"job": (None, '{"object":"Nope","operation":"insert"}',
                                                      "application/json"),
                                              "content": ("content", b"LastName\nx\n", "text/csv")})
    assert bad_job.status_code == 400
    assert api.get("/jobs/ingest").json()["records"] == []


def test_retention_expires_jobs_and_files(emulator_factory):
    server = emulator_factory(retention=0.4, sweep_interval=3600)
    api = ApiSession(server)
    info = api.run_ingest("Account", "insert", accounts_csv(2))
    job_dir = server.data_dir / "jobs" / info["id"]
    assert api.get(f"/jobs/ingest/{info['id']}").status_code == 200
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = api.get(f"/jobs/ingest/{info['id']}/successfulResults").status_code
    assert status == 404
    assert api.get(f"/jobs/ingest/{info['id']}").json() == [
        {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    assert not job_dir.exists()


def test_retention_sweep_removes_untouched_jobs(emulator_factory):
    server = emulator_factory(retention=0.2, sweep_interval=3600)
    api = ApiSession(server)
    info = api.run_ingest("Account", "insert", accounts_csv(1))
    time.sleep(0.3)
    assert server.sweep() == [info["id"]]
    assert not (server.data_dir / "jobs" / info["id"]).exists()


def test_jobs_and_results_survive_restart(emulator_factory, tmp_path):
    data_dir = tmp_path / "durable"
    first = emulator_factory(data_dir=data_dir)
    api = ApiSession(first)
    info = api.run_ingest("Account", "insert", accounts_csv(3))
    results = api.get(f"/jobs/ingest/{info['id']}/successfulResults").content
    first.stop()
    second = emulator_factory(data_dir=data_dir)
    api2 = ApiSession(second)
    assert api2.get(f"/jobs/ingest/{info['id']}").json() == info
    assert api2.get(f"/jobs/ingest/{info['id']}/successfulResults").content == results
    assert len(second.records("Account")) == 3
    new = api2.create_ingest("Account")
    assert new["id"] != info["id"]


def test_restart_policy_for_interrupted_jobs(emulator_factory, tmp_path):
    data_dir = tmp_path / "restart"
    first = emulator_factory(data_dir=data_dir, workers=1, batch_size=2, batch_delay=0.3)
    api = ApiSession(first)
    running = api.create_ingest("Account")
    api.upload(running["id"], accounts_csv(20)).raise_for_status()
    api.close(running["id"]).raise_for_status()
    wait_state(api, running["id"], "InProgress")
    queued = api.create_ingest("Account")
    api.upload(queued["id"], accounts_csv(2, 500)).raise_for_status()
    api.close(queued["id"]).raise_for_status()
    first.stop()
    second = emulator_factory(data_dir=data_dir)
    api2 = ApiSession(second)
    interrupted = api2.get(f"/jobs/ingest/{running['id']}").json()
    assert interrupted["state"] == "Failed"
    assert interrupted["errorMessage"] == RESTART_MESSAGE
    for name in ("successfulResults", "failedResults", "unprocessedrecords"):
        assert api2.get(f"/jobs/ingest/{running['id']}/{name}").status_code == 200
    resumed = api2.wait_job("ingest", queued["id"])
    assert resumed["state"] == "JobComplete"
    assert resumed["numberRecordsProcessed"] == 2


def test_abort_before_processing_leaves_every_row_unprocessed(emulator):
    api = ApiSession(emulator)
    job = api.create_ingest("Account", columnDelimiter="SEMICOLON")
    api.upload(job["id"], b"Name;NumberOfEmployees\nA;1\nB;2\nC;3\n").raise_for_status()
    aborted = api.patch(f"/jobs/ingest/{job['id']}", json={"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"
    unprocessed = api.get(f"/jobs/ingest/{job['id']}/unprocessedrecords")
    assert unprocessed.text == 'Name;NumberOfEmployees\n"A";"1"\n"B";"2"\n"C";"3"\n'
    ok = api.get(f"/jobs/ingest/{job['id']}/successfulResults")
    assert ok.text == '"sf__Id";"sf__Created";Name;NumberOfEmployees\n'
    failed = api.get(f"/jobs/ingest/{job['id']}/failedResults")
    assert failed.text == '"sf__Id";"sf__Error";Name;NumberOfEmployees\n'
    assert emulator.records("Account") == []


def test_unexpected_server_errors_answer_json_500(emulator):
    import shutil

    emulator.seed("Account", 3)
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id FROM Account")
    shutil.rmtree(emulator.data_dir / "jobs" / info["id"] / "query")
    broken = api.get(f"/jobs/query/{info['id']}/results")
    assert broken.status_code == 500
    assert broken.json()[0]["errorCode"] == "UNKNOWN_EXCEPTION"
