"""Real DAGs with SalesforceBulkQueryOperator run by ``dag.test()`` against the emulator (Airflow 3.x here;
scripts/test also runs them on Airflow 2.11): small and multi-page extracts over resultPages and over the
Sforce-Locator chain, deferrable and polling, queryAll seeing deleted rows, gzip and plain output, one file
or one per page, a page that fails once, a Failed job, bad SOQL, a .soql template file, a retried
task that reuses its job, and a query too big for one job delivered in slices. Every extract is compared
row for row with the emulator's records."""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.listeners import hookimpl

from airflow_provider_sfbulk.emulator import records
from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer
from airflow_provider_sfbulk.hooks import bulk as bulk_hooks
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.protocol.waiting import PollSchedule

pytestmark = pytest.mark.dag

DAG_SOURCE = '''
import datetime
import json
from pathlib import Path

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
try:
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:
    from airflow.operators.python import PythonOperator

from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

SPEC = json.loads(Path(__file__).with_suffix(".json").read_text())


def record(ti, task_ids, out):
    values = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in task_ids}
    Path(out).write_text(json.dumps(values))


with DAG(
    SPEC["dag_id"],
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    template_searchpath=SPEC.get("template_searchpath"),
) as dag:
    extracts = []
    for task in SPEC["tasks"]:
        kwargs = dict(task["kwargs"])
        if "retry_delay" in kwargs:
            kwargs["retry_delay"] = datetime.timedelta(seconds=kwargs["retry_delay"])
        if "min_slice" in kwargs:
            kwargs["min_slice"] = datetime.timedelta(seconds=kwargs["min_slice"])
        extracts.append(SalesforceBulkQueryOperator(task_id=task["task_id"], **kwargs))
    report = PythonOperator(
        task_id="report", python_callable=record,
        op_kwargs={"task_ids": [t["task_id"] for t in SPEC["tasks"]], "out": SPEC["report"]},
        trigger_rule="all_done",
    )
    extracts >> report
'''

SOQL = "SELECT Id, Name, Description FROM Account"
TRICKY = [
    ("Multi Line", "first line\nsecond line"),
    ('Quote "Corp"', 'he said "hi", then left'),
    ("Comma, Inc", "a,b,c"),
    ("CRLF Ltd", "one\r\ntwo"),
    ("Ünïcödé GmbH", "✓ ok"),
]


class DagRunner:
    def __init__(self, write_dag: Any, tmp_path: Path) -> None:
        self.write_dag = write_dag
        self.tmp_path = tmp_path
        self.states: dict[str, str] = {}
        self.tries: dict[str, int] = {}
        self.errors: dict[str, str] = {}  # {task_id: the exception that failed it}, see FailureListener

    def run(self, dag_id: str, tasks: list[dict[str, Any]], **spec: Any) -> tuple[str, dict[str, Any]]:
        """Run the DAG; returns the states of the extract tasks (``{task_id: state}``, as one string for the
        success checks) and the XCom values the report task saw."""
        report = self.tmp_path / f"{dag_id}-report.json"
        for task in tasks:
            kwargs = task["kwargs"]
            kwargs.setdefault("poll_interval", 0.05)
            kwargs.setdefault("max_poll_interval", 0.2)
        module = self.write_dag(dag_id, DAG_SOURCE, {"dag_id": dag_id, "tasks": tasks, "report": str(report),
                                                     **spec})
        run = module.dag.test()
        assert run is not None
        instances = [ti for ti in run.get_task_instances() if ti.task_id != "report"]
        states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in instances}
        self.states = states
        self.tries = {ti.task_id: ti.try_number for ti in instances}
        values = json.loads(report.read_text()) if report.exists() else {}
        summary = "success" if all(value == "success" for value in states.values()) else f"failed {states}"
        return summary, values


class FailureListener:
    """An Airflow listener keeping the exception that failed each task. Not read from the task logs: under
    pytest, Airflow 3.0's ``dag.test()`` prints no task failure (and gives callbacks no exception)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self.errors[task_instance.task_id] = str(error)


@pytest.fixture
def dags(write_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagRunner]:
    try:  # the task runner's listeners: the Task SDK's own since Airflow 3.2, Airflow's before
        from airflow.sdk.listener import get_listener_manager
    except ImportError:
        from airflow.listeners.listener import get_listener_manager

    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    # Hooks built inside the tasks retry quickly (the default policy waits up to a minute).
    monkeypatch.setattr(bulk_hooks, "DEFAULT_RETRY_POLICY", RetryPolicy(2, 0.01, 0.02))
    runner = DagRunner(write_dag, tmp_path)
    listener = FailureListener(runner.errors)
    manager = get_listener_manager()
    manager.add_listener(listener)
    yield runner
    manager.pm.unregister(listener)


def _hook() -> SalesforceBulkHook:
    return SalesforceBulkHook("salesforce_bulk_default", retry_policy=RetryPolicy(3, 0.01, 0.02))


def _ingest(hook: SalesforceBulkHook, operation: str, header: list[str], rows: list[Any]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    job = hook.create_ingest_job("Account", operation)
    hook.upload_job_data(job.id, buffer.getvalue().encode("utf-8"))
    hook.close_job(job.id)
    outcome = hook.wait_for_jobs([job.id], "ingest", schedule=PollSchedule(0.02, 1.5, 0.2),
                                 deadline=time.time() + 30)
    assert outcome.succeeded, outcome.message


def _load(server: EmulatorServer, seeded: int = 300) -> None:
    """Seeded rows plus rows with quoted line breaks, quotes and delimiters ingested through the hook."""
    server.seed("Account", seeded, seed=11)
    with _hook() as hook:
        _ingest(hook, "insert", ["Name", "Description"], TRICKY)


def _rows(uris: list[str], delimiter: str = ",") -> tuple[list[str], list[tuple[str, ...]]]:
    header: list[str] = []
    rows: list[tuple[str, ...]] = []
    for uri in uris:
        data = Path(uri.removeprefix("file://")).read_bytes()
        if uri.endswith(".gz"):
            data = gzip.decompress(data)
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter)
        file_header = next(reader)
        assert not header or header == file_header
        header = file_header
        rows.extend(tuple(row) for row in reader)
    return header, rows


def _expected(
    server: EmulatorServer, fields: list[str], *, include_deleted: bool = False
) -> list[tuple[str, ...]]:
    return sorted(
        tuple("" if record[name] is None else str(record[name]) for name in fields)
        for record in server.records("Account", include_deleted=include_deleted)
    )


def _query_jobs(server: EmulatorServer) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/query")
    response.raise_for_status()
    return response.json()["records"]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_small_and_multi_page_extracts(emulator, salesforce_conn, dags, tmp_path, deferrable) -> None:
    salesforce_conn(emulator)
    _load(emulator)
    state, values = dags.run(
        f"query_pages_{deferrable}",
        [
            {"task_id": "small", "kwargs": {"soql": "SELECT Id, Name FROM Account WHERE Name = 'Comma, Inc'",
                                            "deferrable": deferrable}},
            {"task_id": "result_pages", "kwargs": {"soql": SOQL, "deferrable": deferrable,
                                                   "max_records_per_page": 70, "download_concurrency": 3}},
            {"task_id": "locator", "kwargs": {"soql": SOQL, "deferrable": deferrable,
                                              "use_result_pages": False, "max_records_per_page": 70,
                                              "results_path": str(tmp_path / "locator")}},
        ],
    )
    assert state == "success"
    small = values["small"]
    assert small["record_count"] == 1
    assert _rows(small["files"]) == (["Id", "Name"], [tuple(
        (r["Id"], r["Name"]) for r in emulator.records("Account") if r["Name"] == "Comma, Inc")[0]])
    for task_id in ("result_pages", "locator"):
        result = values[task_id]
        assert result["record_count"] == 305
        assert len(result["files"]) == 5  # 305 rows in pages of 70
        header, rows = _rows(result["files"])
        assert header == result["columns"] == ["Id", "Name", "Description"]
        assert sorted(rows) == _expected(emulator, ["Id", "Name", "Description"])
        manifest = json.loads(Path(result["manifest"].removeprefix("file://")).read_text())
        assert manifest["paging"] == ("locator" if task_id == "locator" else "resultPages")
        assert [page["record_count"] for page in manifest["pages"]] == [70, 70, 70, 70, 25]
    assert values["locator"]["results_path"] == f"file://{tmp_path}/locator"


def test_query_all_sees_deleted_rows(emulator, salesforce_conn, dags) -> None:
    salesforce_conn(emulator)
    _load(emulator, seeded=40)
    doomed = [[r["Id"]] for r in emulator.records("Account")[:12]]
    with _hook() as hook:
        _ingest(hook, "delete", ["Id"], doomed)
    soql = "SELECT Id, Name, IsDeleted FROM Account"
    state, values = dags.run(
        "query_all",
        [{"task_id": "live", "kwargs": {"soql": soql, "output_mode": "single"}},
         {"task_id": "everything",
          "kwargs": {"soql": soql, "operation": "queryAll", "output_mode": "single"}}],
    )
    assert state == "success"
    _, live = _rows(values["live"]["files"])
    _, everything = _rows(values["everything"]["files"])
    assert len(live) == 45 - 12
    assert len(everything) == 45
    assert sorted(row[:2] for row in everything) == _expected(emulator, ["Id", "Name"], include_deleted=True)
    assert {row[0] for row in everything if row[2] == "true"} == {row[0] for row in doomed}
    assert not any(row[2] == "true" for row in live)


@pytest.mark.parametrize("compression", [None, "gzip"], ids=["plain", "gzip"])
@pytest.mark.parametrize("output_mode", ["single", "pages"])
def test_output_shapes(emulator, salesforce_conn, dags, compression, output_mode) -> None:
    salesforce_conn(emulator)
    _load(emulator, seeded=150)
    state, values = dags.run(
        f"query_output_{output_mode}_{compression}",
        [{"task_id": "extract", "kwargs": {"soql": SOQL, "output_mode": output_mode,
                                           "output_compression": compression, "max_records_per_page": 40,
                                           "column_delimiter": "SEMICOLON", "line_ending": "CRLF"}}],
    )
    assert state == "success"
    result = values["extract"]
    suffix = ".csv.gz" if compression else ".csv"
    assert all(uri.endswith(suffix) for uri in result["files"])
    assert len(result["files"]) == (1 if output_mode == "single" else 4)
    header, rows = _rows(result["files"], delimiter=";")
    assert header == ["Id", "Name", "Description"]
    assert sorted(rows) == _expected(emulator, ["Id", "Name", "Description"])
    if output_mode == "single":
        data = Path(result["files"][0].removeprefix("file://")).read_bytes()
        text = gzip.decompress(data) if compression else data
        assert text.count(b'"Id";"Name";"Description"\r\n') == 1  # one header, none repeated


def test_a_page_that_fails_once_is_retried(emulator, salesforce_conn, dags) -> None:
    salesforce_conn(emulator)
    _load(emulator, seeded=100)
    emulator.set_faults([{"status": 503, "method": "GET", "path": "/results$", "times": 1}])
    state, values = dags.run(
        "query_page_retry",
        [{"task_id": "extract", "kwargs": {"soql": SOQL, "max_records_per_page": 30}}],
    )
    assert state == "success"
    fired = ApiSession(emulator).get("/__emulator/faults").json()["rules"][0]["fired"]
    assert fired == 1
    _, rows = _rows(values["extract"]["files"])
    assert sorted(rows) == _expected(emulator, ["Id", "Name", "Description"])


def test_failed_job_and_bad_soql_fail_their_tasks(emulator_factory, salesforce_conn, dags) -> None:
    from airflow_provider_sfbulk.protocol.states import JobState

    # One job thread, kept busy by a slow ingest job, so the query job waits in the queue long enough for
    # "Salesforce" to mark it Failed. The blocker would take 200 s (it is aborted as soon as the query job
    # is failed): long enough for a slow dag.test() start on a loaded machine.
    server = emulator_factory(workers=1, batch_size=1, batch_delay=0.05)
    salesforce_conn(server)
    api = ApiSession(server)
    blocker = api.create_ingest("Account", "insert")
    api.upload(blocker["id"], b"Name\n" + b"".join(b"B %d\n" % i for i in range(4000))).raise_for_status()
    api.close(blocker["id"]).raise_for_status()

    import threading

    def fail_query_job() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = [j for j in api.get("/jobs/query").json()["records"] if j["state"] == "UploadComplete"]
            if jobs:
                server.app.store.update_job(
                    jobs[0]["id"], only_if_state=[JobState.UPLOAD_COMPLETE], state=JobState.FAILED,
                    error_message="Query too complex: add a filter",
                )
                api.patch(f"/jobs/ingest/{blocker['id']}", json={"state": "Aborted"})
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=fail_query_job)
    watcher.start()
    try:
        state, values = dags.run(
            "query_failures",
            [{"task_id": "failed_job", "kwargs": {"soql": SOQL, "deferrable": True}},
             {"task_id": "bad_soql", "kwargs": {"soql": "SELECT Id, Nope__c FROM Account"}}],
        )
    finally:
        watcher.join(30)
        api.patch(f"/jobs/ingest/{blocker['id']}", json={"state": "Aborted"})
    assert "failed" in state
    assert {task_id: value.split(".")[-1].lower() for task_id, value in dags.states.items()} == {
        "failed_job": "failed", "bad_soql": "failed"}
    assert values == {"failed_job": None, "bad_soql": None}
    assert "ended Failed: Query too complex: add a filter" in dags.errors["failed_job"]
    assert "Salesforce rejected the query" in dags.errors["bad_soql"]
    assert "No such column 'Nope__c' on entity 'Account'" in dags.errors["bad_soql"]
    assert [job["state"] for job in _query_jobs(server)] == ["Failed"]  # bad SOQL created no job


def test_soql_template_file(emulator, salesforce_conn, dags, tmp_path) -> None:
    salesforce_conn(emulator)
    _load(emulator, seeded=20)
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "accounts.soql").write_text(
        "SELECT Id, Name FROM Account WHERE Name = '{{ params.name }}'\n"
    )
    state, values = dags.run(
        "query_template",
        [{"task_id": "extract", "kwargs": {"soql": "accounts.soql", "params": {"name": "Multi Line"}}}],
        template_searchpath=str(queries),
    )
    assert state == "success"
    _, rows = _rows(values["extract"]["files"])
    assert [row[1] for row in rows] == ["Multi Line"]


def test_a_retried_task_reuses_its_job(emulator, salesforce_conn, dags) -> None:
    salesforce_conn(emulator)
    _load(emulator, seeded=120)
    # The first try's hooks (2 attempts each) meet two 503s on the first page and give up; the retry finds
    # the job finished and downloads without running the query again.
    emulator.set_faults([{"status": 503, "method": "GET", "path": "/results$", "times": 2}])
    state, values = dags.run(
        "query_retry",
        [{"task_id": "extract", "kwargs": {"soql": SOQL, "max_records_per_page": 50, "page_attempts": 1,
                                           "download_concurrency": 1, "retries": 1, "retry_delay": 0}}],
    )
    assert state == "success"
    assert dags.tries["extract"] == 2
    result = values["extract"]
    jobs = _query_jobs(emulator)
    assert [job["id"] for job in jobs] == [result["job_id"]]  # one query job for both tries
    assert "/try-1" in result["results_path"]
    _, rows = _rows(result["files"])
    assert sorted(rows) == _expected(emulator, ["Id", "Name", "Description"])


def test_every_result_pages_shape_and_an_org_without_the_endpoint(emulator, salesforce_conn, dags) -> None:
    salesforce_conn(emulator)
    _load(emulator)
    # The shape is the emulator's (one org answers one way): switch it between DAG runs.
    for shape, paging in [("chunks", "resultPages"), ("documented-singular", "resultPages"),
                          ("missing", "locator")]:
        emulator.set_result_pages_shape(shape)
        dag_id = f"query_shape_{shape.replace('-', '_')}"
        state, values = dags.run(
            dag_id,
            [{"task_id": "extract", "kwargs": {"soql": SOQL, "deferrable": True, "max_records_per_page": 40,
                                               "download_concurrency": 3}}],
        )
        assert state == "success", shape
        result = values["extract"]
        assert len(result["files"]) == 8  # 305 rows in pages of 40: two resultPages calls
        _, rows = _rows(result["files"])
        assert sorted(rows) == _expected(emulator, ["Id", "Name", "Description"])
        manifest = json.loads(Path(result["manifest"].removeprefix("file://")).read_text())
        assert manifest["paging"] == paging, shape
        assert (manifest["paging_fallback"] is not None) == (shape == "missing")


def test_a_query_that_ran_too_long_fails_once_with_the_advice(
    emulator_factory, salesforce_conn, dags
) -> None:
    server = emulator_factory(query_timeout_records=100)
    salesforce_conn(server)
    _load(server, seeded=150)
    state, values = dags.run(
        "query_too_long",
        [{"task_id": "extract",
          "kwargs": {"soql": SOQL, "deferrable": True, "retries": 2, "retry_delay": 0, "auto_slice": False}}],
    )
    assert "failed" in state
    assert dags.tries["extract"] == 1  # no retry: the same query would run too long again
    assert values == {"extract": None}
    error = dags.errors["extract"]
    assert "ended Failed: InternalServerError : Retried more than 15 times (retries=15" in error
    assert "apply a filter and try again" in error
    assert [job["state"] for job in _query_jobs(server)] == ["Failed"]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_a_query_too_big_for_one_job_is_delivered_in_slices(
    emulator_factory, salesforce_conn, dags, monkeypatch, deferrable
) -> None:
    server = emulator_factory(query_timeout_records=20)
    salesforce_conn(server)
    start = datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc)
    with _hook() as hook:
        for hour in range(0, 48, 4):  # 12 instants, 5 accounts each: 60 > 20 records
            monkeypatch.setattr(records, "clock", lambda hour=hour: start + datetime.timedelta(hours=hour))
            _ingest(hook, "insert", ["Name", "Description"], [(f"h{hour}-{i}", "x") for i in range(5)])
    monkeypatch.setattr(records, "clock", None)
    state, values = dags.run(
        f"query_sliced_{deferrable}",
        [{"task_id": "extract", "kwargs": {"soql": SOQL, "deferrable": deferrable, "min_slice": 60,
                                           "slice_concurrency": 4}}],
    )
    assert state == "success", dags.errors
    result = values["extract"]
    assert result["record_count"] == 60
    assert result["job_id"] is None
    assert result["slices"] >= 4
    header, rows = _rows(result["files"])
    assert header == ["Id", "Name", "Description"]
    assert sorted(rows) == _expected(server, header)
    assert len(set(rows)) == 60
    manifest = json.loads(Path(result["manifest"].removeprefix("file://")).read_text())
    assert manifest["sliced"]
    assert manifest["record_count"] == 60
    assert [job["state"] for job in _query_jobs(server)].count("Failed") >= 1  # the unsliced job, at least
