"""ingest.results (downloads counted through the tee, the manifest), failed-row split, base operator wait."""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.results import MANIFEST_NAME, download_job_results, write_manifest
from airflow_provider_sfbulk.operators.base import DEADLINE_KEY, SalesforceBulkBaseOperator
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


def test_download_job_results_counts_and_hashes_what_it_stores(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    job_id = ApiSession(emulator).run_ingest(
        "Account", "insert", b'Name,NumberOfEmployees\nAcme,1\n"Two\nLines ""quoted""",2\n,3\n'
    )["id"]
    with SalesforceBulkHook() as hook:
        results = download_job_results(hook, job_id, to_storage_path(tmp_path))
    assert (results.successful, results.failed, results.unprocessed) == (2, 1, 0)
    for name, found in results.files.items():
        stored = (tmp_path / job_id / f"{name}.csv").read_bytes()
        assert (found.bytes, found.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert b'"Two\nLines ""quoted"""' in (tmp_path / job_id / "successfulResults.csv").read_bytes()


def test_write_manifest_replaces_the_file_whole(tmp_path):
    folder = to_storage_path(tmp_path / "out")
    first = write_manifest(folder, {"jobs": [1, 2, 3], "note": "first"})
    assert first.endswith(f"/out/{MANIFEST_NAME}")
    write_manifest(folder, {"jobs": []})
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text()) == {"jobs": []}
    assert [p.name for p in (tmp_path / "out").iterdir()] == [MANIFEST_NAME]  # no temporary file left

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    with pytest.raises(RuntimeError):
        write_manifest(folder, {"jobs": [Unprintable()]})
    # A write that fails half-way leaves the previous manifest whole, not an empty or partial file.
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text()) == {"jobs": []}


def test_write_failed_rows_splits_by_code(tmp_path):
    first = tmp_path / "f1.csv"
    first.write_bytes(
        b'"sf__Id","sf__Error",Name,Rating\n'
        b'"","UNABLE_TO_LOCK_ROW:unable to obtain exclusive access:--","A, Inc","Hot"\n'
        b'"","INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:bad:Rating --","B","Nope"\n'
    )
    second = tmp_path / "f2.csv"
    second.write_bytes(b'"sf__Id","sf__Error",Rating,Name\n"","UNABLE_TO_LOCK_ROW:x:--","Cold","C\n2"\n')
    kept, retry = io.BytesIO(), io.BytesIO()
    split = write_failed_rows(
        [(to_storage_path(first), {"UNABLE_TO_LOCK_ROW"}), (to_storage_path(second), {"X"})],
        kept_out=kept, retry_out=retry,
    )
    assert (split.retried, split.kept) == (1, 2)
    assert retry.getvalue() == b'Name,Rating\n"A, Inc",Hot\n'
    assert kept.getvalue().splitlines()[0] == b"sf__Id,sf__Error,Name,Rating"
    assert b'"C\n2"' in kept.getvalue()  # mapped by column name, quoted newline kept


class Waiter(SalesforceBulkBaseOperator):
    def execute(self, context: Any) -> Any:
        return None


class FakeTI:
    dag_id, run_id, task_id, map_index, try_number = "d", "r", "w", -1, 1


@pytest.fixture
def context(tmp_path, monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path))
    return {"ti": FakeTI()}


def test_wait_defers_with_persisted_absolute_deadline(emulator, salesforce_conn, context):
    salesforce_conn(emulator)
    job = ApiSession(emulator).create_ingest("Account")  # Open: never terminal by itself
    op = Waiter(task_id="w", deferrable=True, timeout=100, poll_interval=0.1)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.wait_for_jobs(context, [job["id"]], "ingest", method_name="done", kwargs={"a": 1})
    trigger = deferred.value.trigger
    assert isinstance(trigger, SalesforceBulkJobTrigger)
    assert deferred.value.method_name == "done"
    assert deferred.value.kwargs == {"a": 1}
    assert before + 100 <= trigger.deadline <= time.time() + 100
    assert TaskCheckpoint.for_task(context).get(DEADLINE_KEY) == trigger.deadline
    with pytest.raises(TaskDeferred) as again:  # a retry keeps the deadline
        Waiter(task_id="w", deferrable=True, timeout=100).wait_for_jobs(
            context, [job["id"]], "ingest", method_name="done"
        )
    assert again.value.trigger.deadline == trigger.deadline


def test_wait_does_not_defer_finished_jobs_and_polls_otherwise(emulator, salesforce_conn, context):
    salesforce_conn(emulator)
    job = ApiSession(emulator).run_ingest("Account", "insert", b"Name\nA\n")
    waiter = Waiter(task_id="w", deferrable=True)
    outcome = waiter.wait_for_jobs(context, [job["id"]], "ingest", method_name="x")
    assert outcome.status == "success"
    outcome = Waiter(task_id="w", deferrable=False, poll_interval=0.05).wait_for_jobs(
        context, [job["id"]], "ingest", method_name="x"
    )
    assert outcome.status == "success"


def test_polling_times_out_at_the_deadline(emulator, salesforce_conn, context):
    salesforce_conn(emulator)
    job = ApiSession(emulator).create_ingest("Account")  # stays Open
    op = Waiter(task_id="w", timeout=0.3, poll_interval=0.05)
    outcome = op.wait_for_jobs(context, [job["id"]], "ingest", method_name="x")
    assert outcome.status == "timeout"


def test_outcome_from_event():
    op = Waiter(task_id="w")
    with pytest.raises(AirflowException, match="boom"):
        op.outcome_from_event({"status": "error", "job_kind": "ingest", "message": "boom", "jobs": []})
    with pytest.raises(AirflowException, match="malformed|expected"):
        op.outcome_from_event({"status": "weird"})
    with pytest.raises(AirflowException):
        op.outcome_from_event(None)
    event = {"status": "success", "job_kind": "ingest", "message": "ok",
             "jobs": [{"id": "750x", "state": "JobComplete", "error_message": None,
                       "number_records_processed": 1, "number_records_failed": 0}]}
    assert op.outcome_from_event(event).jobs[0].id == "750x"
    assert op._active_job_ids == ["750x"]
