"""SalesforceBulkJobResultsOperator: result files of finished jobs to storage, paths and counts to XCom."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowException, ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.exceptions import SalesforceBulkBadRequestError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.operators.results import SalesforceBulkJobResultsOperator


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "dag", "run", "results", -1, 1

    def __init__(self) -> None:
        self.xcom_push = mock.Mock()


def _ingest(api: ApiSession, data: bytes) -> str:
    return api.run_ingest("Account", "insert", data)["id"]


def test_ingest_results_written_and_counted(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    ok = _ingest(api, b'Name,NumberOfEmployees\nAcme,1\n"Multi\nLine",2\n')
    mixed = _ingest(api, b"Name,NumberOfEmployees\nGood,3\n,4\n")  # a missing required Name fails
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids={"job_ids": [ok, mixed]},
                                          results_path=str(tmp_path / "out"))
    result = op.execute({"ti": FakeTI()})
    assert result["records_successful"] == 3
    assert result["records_failed"] == 1
    assert result["records_unprocessed"] == 0
    assert len(result["successful_results"]) == 2
    assert result["failed_results"] == [f"file://{tmp_path}/out/{mixed}/failedResults.csv"]
    failed = ObjectStoragePath(result["failed_results"][0]).read_text()
    assert "REQUIRED_FIELD_MISSING" in failed
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    files = manifest["jobs"][0]["files"]
    assert files["successfulResults"]["records"] == 2  # the quoted newline is one record
    assert len(files["successfulResults"]["sha256"]) == 64
    json.dumps(result)


def test_query_results_pages(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(default_page_records=25)  # 100 rows: four pages
    salesforce_conn(server)
    server.seed("Account", 100, seed=3)
    job = ApiSession(server).run_query("SELECT Id, Name FROM Account")
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=job["id"], job_kind="query",
                                          results_path=str(tmp_path / "q"))
    result = op.execute({"ti": FakeTI()})
    assert result["records"] == 100
    assert result["results"] == [f"file://{tmp_path}/q/{job['id']}/part-0000{i}.csv" for i in range(4)]
    expected = {"id": job["id"], "state": "JobComplete", "error_message": None, "records": 100}
    assert result["jobs"] == [expected]
    rows = []
    for uri in result["results"]:
        lines = ObjectStoragePath(uri).read_text().splitlines()
        assert lines[0] == '"Id","Name"'  # every page keeps its header
        rows.extend(lines[1:])
    assert len(rows) == len(set(rows)) == 100
    # The job's own manifest, as the query operator writes it; the task's manifest points at it.
    job_manifest = json.loads((tmp_path / "q" / job["id"] / "manifest.json").read_text())
    assert job_manifest["complete"] is True
    assert [page["record_count"] for page in job_manifest["pages"]] == [25] * 4
    task_manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert task_manifest["jobs"][0]["manifest"] == f"file://{tmp_path}/q/{job['id']}/manifest.json"
    json.dumps(result)


def test_query_page_count_mismatch_fails_naming_the_page(emulator_factory, salesforce_conn, tmp_path,
                                                         monkeypatch):
    server = emulator_factory(default_page_records=25)
    salesforce_conn(server)
    server.seed("Account", 60, seed=3)
    job = ApiSession(server).run_query("SELECT Id, Name FROM Account")
    real = SalesforceBulkHook.download_query_page

    def over_reports_the_last_page(self, job_id, writable, locator=None, **kwargs):
        page = real(self, job_id, writable, locator=locator, **kwargs)
        if page.record_count == 10:
            return dataclasses.replace(page, record_count=page.record_count + 1)
        return page

    monkeypatch.setattr(SalesforceBulkHook, "download_query_page", over_reports_the_last_page)
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=job["id"], job_kind="query",
                                          results_path=str(tmp_path))
    with pytest.raises(AirflowException, match=r"page 2 \(locator '\w+'\) holds 10 record\(s\) but its "
                                               r"Sforce-NumberOfRecords header says 11"):
        op.execute({"ti": FakeTI()})


def test_query_results_resume_keeps_the_stored_pages(
    emulator_factory, salesforce_conn, tmp_path, monkeypatch
):
    server = emulator_factory(default_page_records=25)
    salesforce_conn(server)
    server.seed("Account", 100, seed=3)
    job = ApiSession(server).run_query("SELECT Id, Name FROM Account")
    real = SalesforceBulkHook.download_query_page
    downloads: list[str | None] = []
    refused: list[str | None] = []

    finished: list[str | None] = []

    def refuses_the_last_page(self, job_id, writable, locator=None, **kwargs):
        downloads.append(locator)
        if refused and locator == refused[0]:
            deadline = time.monotonic() + 10
            while len(finished) < 3 and time.monotonic() < deadline:  # fail once the others are stored
                time.sleep(0.01)
            raise SalesforceBulkBadRequestError("locator refused", status=400, error_code="INVALID_LOCATOR")
        page = real(self, job_id, writable, locator=locator, **kwargs)
        finished.append(locator)
        return page

    monkeypatch.setattr(SalesforceBulkHook, "download_query_page", refuses_the_last_page)
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=job["id"], job_kind="query",
                                          results_path=str(tmp_path))
    with SalesforceBulkHook() as hook:
        refused.append(hook.get_result_pages(job["id"])[-1].locator)
    with pytest.raises(SalesforceBulkBadRequestError):
        op.execute({"ti": FakeTI()})
    folder = tmp_path / job["id"]
    stored = json.loads((folder / "manifest.json").read_text())["pages"]
    assert [page["index"] for page in stored] == [0, 1, 2]
    kept = {page["file"]: (folder / page["file"]).stat().st_mtime_ns for page in stored}

    refused.clear()
    downloads.clear()
    result = op.execute({"ti": FakeTI()})
    assert result["records"] == 100
    assert len(downloads) == 4 - len(stored)  # only the pages the folder lacked
    assert {name: (folder / name).stat().st_mtime_ns for name in kept} == kept


def test_running_job_without_wait_fails(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    job = ApiSession(emulator).create_ingest("Account")
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=[job["id"]], wait_for_completion=False,
                                          results_path=str(tmp_path))
    with pytest.raises(AirflowException, match="not finished"):
        op.execute({"ti": FakeTI()})


def test_failed_job_written_then_fails_when_asked(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(failing_batch=1)
    salesforce_conn(server)
    job_id = _ingest(ApiSession(server), b"Name\nA\nB\n")
    ti: Any = FakeTI()
    op = SalesforceBulkJobResultsOperator(task_id="results", job_ids=[job_id], fail_on_job_failure=True,
                                          results_path=str(tmp_path), poll_interval=0.05)
    with pytest.raises(AirflowException, match="Failed"):
        op.execute({"ti": ti})
    pushed = ti.xcom_push.call_args_list[-1].kwargs["value"]
    assert pushed["records_unprocessed"] == 2
    assert (tmp_path / job_id / "unprocessedrecords.csv").read_text().splitlines()[1:] == ['"A"', '"B"']


def test_results_operator_does_not_abort_jobs_it_did_not_create_unless_asked(
    emulator, salesforce_conn, tmp_path
):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    job = api.create_ingest("Account")  # an Open job: the operator would wait for it
    watcher = SalesforceBulkJobResultsOperator(
        task_id="results", job_ids=[job["id"]], results_path=str(tmp_path)
    )
    assert watcher.cancel_on_kill is False
    watcher._active_job_ids = [job["id"]]  # as while waiting
    watcher.on_kill()
    assert api.get(f"/jobs/ingest/{job['id']}").json()["state"] == "Open"
    owner = SalesforceBulkJobResultsOperator(
        task_id="results", job_ids=[job["id"]], results_path=str(tmp_path), cancel_on_kill=True
    )
    owner._active_job_ids = [job["id"]]
    owner.on_kill()
    assert api.get(f"/jobs/ingest/{job['id']}").json()["state"] == "Aborted"
