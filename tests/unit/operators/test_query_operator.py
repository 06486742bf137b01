"""SalesforceBulkQueryOperator against the emulator, driven directly.

(execute / execute_complete / on_kill)
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from _fakes import FakeTI
from _threading_compat import operator_thread
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer
from airflow_provider_sfbulk.hooks import bulk as bulk_hooks
from airflow_provider_sfbulk.links.job import LINK_XCOM_KEY
from airflow_provider_sfbulk.operators.query import STATE_KEY, SalesforceBulkQueryOperator
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


def make_context(try_number: int = 1) -> dict[str, Any]:
    return {"ti": FakeTI(try_number, task_id="extract")}


@pytest.fixture(autouse=True)
def fast_hook_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks built by the operator retry quickly (the default policy waits up to a minute)."""
    monkeypatch.setattr(bulk_hooks, "DEFAULT_RETRY_POLICY", RetryPolicy(2, 0.01, 0.02))


def operator(**kwargs: Any) -> SalesforceBulkQueryOperator:
    kwargs.setdefault("soql", "SELECT Id, Name FROM Account")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    return SalesforceBulkQueryOperator(task_id="extract", **kwargs)


async def _first_event(trigger: SalesforceBulkJobTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def run_deferrable(op: SalesforceBulkQueryOperator, context: dict[str, Any]) -> dict[str, Any]:
    """As Airflow does it: on TaskDeferred, rebuild the trigger from its serialised form, run it, resume."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        classpath, kwargs = deferred.trigger.serialize()
        assert classpath == "airflow_provider_sfbulk.triggers.job.SalesforceBulkJobTrigger"
        assert kwargs["job_kind"] == "query"
        payload = asyncio.run(_first_event(SalesforceBulkJobTrigger(**kwargs)))
        return getattr(op, deferred.method_name)(context, event=payload, **(deferred.kwargs or {}))


def rows_of(uris: list[str]) -> list[list[str]]:
    rows: list[list[str]] = []
    for uri in uris:
        data = Path(uri.removeprefix("file://")).read_bytes()
        if uri.endswith(".gz"):
            data = gzip.decompress(data)
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        next(reader)
        rows.extend(reader)
    return rows


def query_jobs(server: EmulatorServer) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/query")
    response.raise_for_status()
    return response.json()["records"]


@contextmanager
def busy_worker(server: EmulatorServer) -> Iterator[Callable[[], None]]:
    """Keep the emulator's only job thread busy with a slow ingest job, so a query job stays queued
    (``UploadComplete``) until the returned ``release()`` aborts the blocker."""
    api = ApiSession(server)
    job = api.create_ingest("Account", "insert")
    api.upload(job["id"], b"Name\n" + b"".join(b"Blocker %d\n" % i for i in range(200))).raise_for_status()
    api.close(job["id"]).raise_for_status()
    deadline = time.monotonic() + 10
    while api.get(f"/jobs/ingest/{job['id']}").json()["state"] != "InProgress":
        assert time.monotonic() < deadline, "the blocker job did not start"
        time.sleep(0.01)

    def release() -> None:
        api.patch(f"/jobs/ingest/{job['id']}", json={"state": "Aborted"})

    try:
        yield release
    finally:
        release()


def wait_for_query_job(server: EmulatorServer, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = query_jobs(server)
        if jobs:
            return jobs[0]
        assert time.monotonic() < deadline, "the operator created no query job"
        time.sleep(0.02)


@pytest.fixture
def slow_emulator(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """One job thread; ingest batches of 1 row taking 0.05 s each (a blocker runs ~10 s unless aborted)."""
    return emulator_factory(workers=1, batch_size=1, batch_delay=0.05)


# --------------------------------------------------------------------------------------------- tests


def test_extract_in_the_worker(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 120, seed=3)
    context = make_context()
    result = operator(max_records_per_page=50, output_mode="single").execute(context)
    assert result["record_count"] == 120
    assert result["columns"] == ["Id", "Name"]
    assert len(result["files"]) == 1
    assert result["results_path"].startswith(f"file://{results_base}/dag/run-1/extract/try-1")
    assert sorted(map(tuple, rows_of(result["files"]))) == sorted(
        (r["Id"], r["Name"]) for r in emulator.records("Account")
    )
    assert [job["id"] for job in query_jobs(emulator)] == [result["job_id"]]
    link = {"instance_url": emulator.base_url, "job_ids": [result["job_id"]]}
    assert context["ti"].xcoms[LINK_XCOM_KEY] == link
    assert TaskCheckpoint.for_task(context).get(STATE_KEY) is None  # cleared after success
    manifest = json.loads(Path(result["manifest"].removeprefix("file://")).read_text())
    assert [page["record_count"] for page in manifest["pages"]] == [50, 50, 20]


def test_extract_deferrable_gzip_pages(emulator, salesforce_conn, results_base, tmp_path) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 90, seed=3)
    op = operator(
        deferrable=True,
        max_records_per_page=40,
        output_compression="gzip",
        results_path=str(tmp_path / "extract"),
    )
    result = run_deferrable(op, make_context())
    assert [Path(uri).name for uri in result["files"]] == ["part-00000.csv.gz", "part-00001.csv.gz",
                                                           "part-00002.csv.gz"]
    assert result["results_path"] == f"file://{tmp_path}/extract"
    assert len(rows_of(result["files"])) == 90


def test_bad_soql_fails_at_once_with_salesforce_message(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    expected = r"(?s)Salesforce rejected the query: HTTP 400 INVALID_FIELD.*No such column .Nope."
    with pytest.raises(AirflowFailException, match=expected):
        operator(soql="SELECT Id, Nope FROM Account").execute(make_context())
    assert query_jobs(emulator) == []


def test_bad_operation_fails(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    with pytest.raises(AirflowFailException, match="'query' or 'queryAll'"):
        operator(operation="queryEverything").execute(make_context())


def test_parameters_are_checked_at_parse_time() -> None:
    with pytest.raises(ValueError, match="output_mode"):
        operator(output_mode="both")
    with pytest.raises(ValueError, match="output_compression"):
        operator(output_compression="zip")
    with pytest.raises(ValueError, match="column_delimiter"):
        operator(column_delimiter=";")
    with pytest.raises(ValueError, match="concurrency"):
        operator(download_concurrency=0)


def test_failed_job_fails_the_task_with_its_error_message(
    slow_emulator, salesforce_conn, results_base
) -> None:
    from airflow_provider_sfbulk.protocol.states import JobState

    salesforce_conn(slow_emulator)
    context = make_context()
    errors: list[BaseException] = []
    with busy_worker(slow_emulator) as release:
        thread = operator_thread(lambda: _capture(errors, operator().execute, context))
        thread.start()
        job = wait_for_query_job(slow_emulator)
        # Salesforce fails the query (not for running too long) while it is still queued.
        slow_emulator.app.store.update_job(
            job["id"], only_if_state=[JobState.UPLOAD_COMPLETE], state=JobState.FAILED,
            error_message="InternalServerError : an unexpected error occurred",
        )
        release()
        thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], AirflowException)
    assert not isinstance(errors[0], AirflowFailException)  # a retry may help: not a timeout
    assert str(errors[0]) == (
        f"Salesforce query job {job['id']} ended Failed: InternalServerError : an unexpected error occurred"
    )
    # The checkpoint keeps the failed job; a retry runs the query again instead of reusing it.
    assert TaskCheckpoint.for_task(context).get(STATE_KEY)["job_id"] == job["id"]
    slow_emulator.seed("Account", 3, seed=1)
    result = operator().execute(make_context(try_number=2))
    assert result["job_id"] != job["id"]
    assert result["record_count"] == len(slow_emulator.records("Account"))  # seeded + the blocker's rows


def test_kill_aborts_the_running_job(slow_emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(slow_emulator)
    op = operator()
    errors: list[BaseException] = []
    with busy_worker(slow_emulator):
        thread = operator_thread(lambda: _capture(errors, op.execute, make_context()))
        thread.start()
        job = wait_for_query_job(slow_emulator)
        deadline = time.monotonic() + 10
        while not op._active_job_ids:  # the operator is waiting for its job
            assert time.monotonic() < deadline
            time.sleep(0.01)
        op.on_kill()
        thread.join(30)
    assert not thread.is_alive()
    assert ApiSession(slow_emulator).get(f"/jobs/query/{job['id']}").json()["state"] == "Aborted"
    assert len(errors) == 1
    assert "ended Aborted" in str(errors[0])


def test_no_abort_on_kill_when_disabled(slow_emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(slow_emulator)
    op = operator(cancel_on_kill=False)
    op._active_job_ids = []
    with busy_worker(slow_emulator):
        job = ApiSession(slow_emulator).post("/jobs/query", json={"operation": "query",
                                                                 "query": "SELECT Id FROM Account"}).json()
        op._active_job_ids = [job["id"]]
        op._active_job_kind = "query"
        op.on_kill()
        assert ApiSession(slow_emulator).get(f"/jobs/query/{job['id']}").json()["state"] == "UploadComplete"


def test_retry_reuses_the_job_and_resumes(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 100, seed=5)
    op = operator(max_records_per_page=25, download_concurrency=1, page_attempts=1)
    first = make_context(try_number=1)
    # Hooks make 2 attempts: the first page fails on both, then the emulator is healthy again.
    emulator.set_faults([{"status": 503, "method": "GET", "path": "/results$", "times": 2}])
    with pytest.raises(AirflowException):
        op.execute(first)
    state = TaskCheckpoint.for_task(first).get(STATE_KEY)
    assert state["results_path"].endswith("/try-1")

    second = make_context(try_number=2)
    result = operator(max_records_per_page=25, download_concurrency=1, page_attempts=1).execute(second)
    assert result["job_id"] == state["job_id"]
    assert [job["id"] for job in query_jobs(emulator)] == [state["job_id"]]  # the query ran once
    assert result["results_path"] == state["results_path"]  # the first try's folder, resumed
    assert result["record_count"] == 100
    expected = sorted(r["Id"] for r in emulator.records("Account"))
    assert sorted(row[0] for row in rows_of(result["files"])) == expected


def test_changed_query_is_not_served_by_the_old_job(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 10, seed=5)
    context = make_context()
    checkpoint = TaskCheckpoint.for_task(context)
    checkpoint.set(STATE_KEY, {"job_id": "750000000000000AAA", "fingerprint": {"soql": "SELECT Id FROM Lead"},
                               "results_path": "file:///nowhere"})
    result = operator().execute(context)
    assert result["job_id"] != "750000000000000AAA"
    assert result["record_count"] == 10


def test_execute_complete_error_event(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    with pytest.raises(AirflowException, match="waiting for the Salesforce Bulk jobs failed: boom"):
        operator().execute_complete(make_context(), event={"status": "error", "message": "boom",
                                                           "job_kind": "query", "jobs": []})


def test_template_fields() -> None:
    assert SalesforceBulkQueryOperator.template_ext == (".soql", ".sql")
    assert SalesforceBulkQueryOperator.template_fields_renderers == {"soql": "sql"}
    assert {"soql", "operation", "results_path", "salesforce_conn_id"} <= set(
        SalesforceBulkQueryOperator.template_fields
    )


def _capture(errors: list[BaseException], func: Callable[..., Any], *args: Any) -> None:
    try:
        func(*args)
    except BaseException as err:
        errors.append(err)


def test_a_results_path_object_is_used_as_given(emulator, salesforce_conn, results_base, tmp_path,
                                                monkeypatch) -> None:
    """An ObjectStoragePath keeps its object-store connection: the extract gets that object, not its text."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.operators import query as query_module

    salesforce_conn(emulator)
    emulator.seed("Account", 5, seed=1)
    folder = ObjectStoragePath(f"file://{tmp_path}/given")
    seen: list[Any] = []
    real = query_module.extract_query_results

    def spy(factory: Any, job_id: str, destination: Any, options: Any) -> Any:
        seen.append(destination)
        return real(factory, job_id, destination, options)

    monkeypatch.setattr(query_module, "extract_query_results", spy)
    result = operator(results_path=folder).execute(make_context())
    assert seen == [folder]
    assert seen[0] is folder
    assert result["record_count"] == 5


# --- issue 16: resultPages shapes, the daily query job preflight, job statistics, query timeouts ----------


def _expected_rows(server: EmulatorServer) -> list[tuple[str, str]]:
    return sorted((r["Id"], r["Name"] or "") for r in server.records("Account"))


def task_log_lines(capsys: pytest.CaptureFixture[str], text: str, level: str | None = None) -> list[str]:
    """Lines of the task's log (the operator logs through Airflow's logging, to the console) with ``text``."""
    captured = capsys.readouterr()
    lines = (captured.out + captured.err).splitlines()
    return [line for line in lines if text in line and (level is None or level in line.lower())]


def _manifest(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(result["manifest"].removeprefix("file://")).read_text())


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
@pytest.mark.parametrize(
    ("shape", "paging"),
    [("documented", "resultPages"), ("documented-singular", "resultPages"), ("chunks", "resultPages"),
     ("missing", "locator")],
)
def test_every_result_pages_shape_extracts_every_record(
    emulator_factory, salesforce_conn, results_base, shape, paging, deferrable
) -> None:
    server = emulator_factory(result_pages_shape=shape)
    salesforce_conn(server)
    server.seed("Account", 130, seed=4)
    # 7 pages of 20: two resultPages calls of up to 5 links each.
    result = run_deferrable(operator(deferrable=deferrable, max_records_per_page=20), make_context())
    assert sorted(map(tuple, rows_of(result["files"]))) == _expected_rows(server)
    assert len(result["files"]) == 7
    manifest = _manifest(result)
    assert manifest["paging"] == paging
    assert (manifest["paging_fallback"] is not None) == (shape == "missing")


def test_job_statistics_are_logged_recorded_and_sent(emulator, salesforce_conn, results_base, capsys) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 30, seed=4)
    with mock.patch("airflow_provider_sfbulk.operators.query.Stats") as stats:
        result = operator(operation="queryAll").execute(make_context())
    job = ApiSession(emulator).get(f"/jobs/query/{result['job_id']}").json()
    assert isinstance(job["totalProcessingTime"], int)
    assert job["retries"] == 0
    tags = {"operation": "queryAll"}
    stats.incr.assert_any_call("sfbulk.query.retries", 0, tags=tags)
    stats.timing.assert_called_once_with(
        "sfbulk.query.processing_ms", job["totalProcessingTime"], tags=tags
    )
    manifest = _manifest(result)
    assert (manifest["retries"], manifest["total_processing_time"]) == (0, job["totalProcessingTime"])
    line = f"Query job {result['job_id']} ended JobComplete: 30 record(s), retries=0, "
    assert task_log_lines(capsys, f"{line}totalProcessingTime={job['totalProcessingTime']} ms", "info")


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
@pytest.mark.parametrize(
    ("style", "message", "retries"),
    [("retries", "InternalServerError : Retried more than 15 times", 15),
     ("timeout", "QUERY_TIMEOUT : Your query request was running for too long.", 0)],
)
def test_a_query_that_ran_too_long_fails_with_salesforce_advice(
    emulator_factory, salesforce_conn, results_base, style, message, retries, deferrable
) -> None:
    server = emulator_factory(query_timeout_records=10, query_timeout_style=style)
    salesforce_conn(server)
    server.seed("Account", 11, seed=4)
    with mock.patch("airflow_provider_sfbulk.operators.query.Stats") as stats, \
            pytest.raises(AirflowFailException) as failed:
        run_deferrable(operator(deferrable=deferrable, auto_slice=False), make_context())
    (job,) = query_jobs(server)
    text = str(failed.value)
    assert text.startswith(f"Salesforce query job {job['id']} ended Failed: {message} (retries={retries}, ")
    assert "apply a filter and try again" in text
    assert "split the query into smaller ones, e.g. by CreatedDate" in text
    stats.incr.assert_any_call("sfbulk.query.retries", retries, tags={"operation": "query"})


def test_a_query_under_the_timeout_threshold_completes(
    emulator_factory, salesforce_conn, results_base
) -> None:
    server = emulator_factory(query_timeout_records=10)
    salesforce_conn(server)
    server.seed("Account", 10, seed=4)
    assert operator().execute(make_context())["record_count"] == 10


def test_preflight_refuses_when_no_daily_query_job_is_left(
    emulator_factory, salesforce_conn, results_base, capsys
) -> None:
    server = emulator_factory(daily_bulk_v2_query_jobs=1)
    salesforce_conn(server)
    server.seed("Account", 3, seed=4)
    operator().execute(make_context())  # the last one of the day, with a warning
    assert task_log_lines(capsys, "only 0 of the org's 1 DailyBulkV2QueryJobs will be left", "warning")
    refused = "used all 1 of its DailyBulkV2QueryJobs for today; no query job was created"
    with pytest.raises(AirflowFailException, match=refused):
        operator().execute(make_context())
    assert len(query_jobs(server)) == 1
    result = operator(limits_check="warn").execute(make_context())
    assert result["record_count"] == 3
    assert task_log_lines(capsys, "creating one anyway (limits_check='warn')", "warning")
    assert operator(limits_check="off").execute(make_context())["record_count"] == 3
    assert len(query_jobs(server)) == 3


@pytest.mark.parametrize(("share", "warned"), [(0.1, False), (0.9, True)])
def test_preflight_warns_below_the_share(
    emulator_factory, salesforce_conn, results_base, capsys, share, warned
) -> None:
    server = emulator_factory(daily_bulk_v2_query_jobs=5)
    salesforce_conn(server)
    operator(limits_warn_share=share).execute(make_context())
    expected = "Preflight: only 4 of the org's 5 DailyBulkV2QueryJobs will be left today after this one"
    lines = task_log_lines(capsys, "Preflight:")
    warnings = [line for line in lines if expected in line and "(under 90 %)" in line]
    warnings = [line for line in warnings if "warning" in line.lower()]  # "[warning ]" or "WARNING -"
    assert warnings == (lines if warned else [])
    assert len(lines) == 1  # one preflight line: a warning or the info line


def test_preflight_is_skipped_when_the_job_is_reused(
    emulator_factory, salesforce_conn, results_base
) -> None:
    server = emulator_factory(daily_bulk_v2_query_jobs=1)
    salesforce_conn(server)
    context = make_context()
    job = ApiSession(server).run_query("SELECT Id, Name FROM Account")  # uses up the day's allowance
    TaskCheckpoint.for_task(context).set(STATE_KEY, {
        "job_id": job["id"], "fingerprint": operator()._fingerprint(),
        "results_path": f"file://{results_base}/reused"})
    assert operator().execute(make_context(try_number=2))["job_id"] == job["id"]


def test_limits_parameters_are_checked_at_parse_time() -> None:
    with pytest.raises(ValueError, match="limits_check"):
        operator(limits_check="maybe")
    with pytest.raises(ValueError, match="limits_warn_share"):
        operator(limits_warn_share=1.5)
