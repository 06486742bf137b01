"""ingest_results: counting writer (records, sha256, restart), failed-row split, base operator wait."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, TaskDeferred
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.ingest.results import CountingWriter, write_failed_rows
from airflow_provider_sfbulk.operators.base import DEADLINE_KEY, SalesforceBulkBaseOperator
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


def _csv(rows: list[list[str]], terminator: str) -> bytes:
    import csv

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=terminator, quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue().encode()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.lists(st.text(alphabet='a,"\n\r é', max_size=6), min_size=2, max_size=2), max_size=8),
    chunk=st.integers(min_value=1, max_value=7),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_counting_writer_counts_records_whatever_the_chunks(rows, chunk, terminator):
    data = _csv([["h1", "h2"], *rows], terminator)
    out = io.BytesIO()
    writer = CountingWriter(out)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    assert writer.records == len(rows)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert out.getvalue() == data


def test_counting_writer_edge_cases():
    for data, expected in [(b"", 0), (b"h\n", 0), (b"h\nx", 1), (b'h\n"a\nb"\n', 1), (b"h\r\nx\r\ny\r\n", 2)]:
        writer = CountingWriter(io.BytesIO())
        writer.write(data)
        assert writer.records == expected, data


def test_counting_writer_restarts_only_from_the_start():
    out = io.BytesIO()
    writer = CountingWriter(out)
    writer.write(b"h\nx\n")
    assert writer.seekable()
    with pytest.raises(OSError, match="only seeks back"):
        writer.seek(2)
    writer.seek(writer.tell() - writer.bytes_written)
    writer.truncate()
    writer.write(b"h\ny\nz\n")
    assert writer.records == 2
    assert out.getvalue() == b"h\ny\nz\n"
    assert writer.sha256 == hashlib.sha256(b"h\ny\nz\n").hexdigest()


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
        [(str(to_storage_path(first)), {"UNABLE_TO_LOCK_ROW"}), (str(to_storage_path(second)), {"X"})],
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
    outcome = Waiter(task_id="w", deferrable=True).wait_for_jobs(context, [job["id"]], "ingest", method_name="x")
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
