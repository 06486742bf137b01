"""OpenLineage: the example DAGs run with ``dag.test()`` and the OpenLineage provider's file transport; the
START, COMPLETE and FAIL events it writes are read back and checked (datasets, schema, row counts, job
ids, error). Also: the operators run unchanged when the OpenLineage provider cannot be imported."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer

pytestmark = pytest.mark.dag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


class ExampleRun:
    """One ``dag.test()`` run: its state, its task instances' XComs and states."""

    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        state = getattr(dag_run, "state", "")
        self.state = str(getattr(state, "value", state))

    def xcom(self, task_id: str) -> Any:
        ti = self.dag_run.get_task_instance(task_id)
        assert ti is not None, task_id
        return ti.xcom_pull(task_ids=task_id)


@pytest.fixture
def run_example(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., ExampleRun]]:
    """``run_example(dag_id)``: copy the example (and its data) into the dags folder and run it."""
    monkeypatch.setenv("SFBULK_EXAMPLE_POLL_SECONDS", "0.1")
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    data = airflow_db / "data"
    if not data.exists():
        shutil.copytree(EXAMPLES / "data", data)
    copied: list[Path] = []

    def run(dag_id: str) -> ExampleRun:
        target = airflow_db / f"{dag_id}.py"
        shutil.copy(EXAMPLES / f"{dag_id}.py", target)
        copied.append(target)
        spec = importlib.util.spec_from_file_location(f"sfbulk_lineage_{dag_id}", target)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return ExampleRun(module.dag.test())

    yield run
    for path in copied:
        path.unlink(missing_ok=True)


def _listener_manager() -> Any:
    try:
        from airflow.sdk.listener import get_listener_manager  # the task runner's (Airflow 3)
    except ImportError:  # Airflow 2
        from airflow.listeners.listener import get_listener_manager
    return get_listener_manager()


class LineageEvents:
    """The events the file transport wrote, one JSON document a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def of_task(self, dag_id: str, task_id: str, event_type: str) -> dict[str, Any]:
        name = f"{dag_id}.{task_id}"
        found = [e for e in self.all() if e["job"]["name"] == name and e["eventType"] == event_type]
        seen = [(e["job"]["name"], e["eventType"]) for e in self.all()]
        assert found, f"no {event_type} event of {name}: {seen}"
        return found[-1]


@pytest.fixture
def lineage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LineageEvents]:
    """The OpenLineage listener, registered for this test, writing to a file (``append``: one line each)."""
    pytest.importorskip("airflow.providers.openlineage")
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

    path = tmp_path / "openlineage.jsonl"
    transport = {"type": "file", "log_file_path": str(path), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "sfbulk-tests")
    # Emit from a thread of the task process, not a fork of it: dag.test()'s in-process supervisor cannot
    # serve a forked child (the XCom read of the COMPLETE event would hang); a real worker's can.
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "True")
    monkeypatch.delenv("OPENLINEAGE_DISABLED", raising=False)
    listener = get_openlineage_listener()
    listener.adapter._client = None  # a client of this test's transport
    manager = _listener_manager()
    registered = listener in manager.pm.get_plugins()
    if not registered:
        manager.add_listener(listener)
    yield LineageEvents(path)
    if not registered:
        manager.pm.unregister(listener)
    listener.adapter._client = None


def _dataset(datasets: list[dict[str, Any]], namespace: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in datasets if d["namespace"] == namespace and (name is None or d["name"] == name)]
    assert len(found) == 1, (namespace, name, datasets)
    return found[0]


def _columns(dataset: dict[str, Any]) -> list[str]:
    return [field["name"] for field in dataset["facets"]["schema"]["fields"]]


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle))


def _org(emulator: EmulatorServer) -> str:
    return "salesforce://" + emulator.base_url.split("://", 1)[1].rstrip("/")


def test_ingest_events(emulator: EmulatorServer, salesforce_conn, run_example, lineage, airflow_db):
    salesforce_conn(emulator)
    run = run_example("example_sfbulk_parent_child")
    assert run.state == "success"
    dag_id = "example_sfbulk_parent_child"
    source = airflow_db / "data" / "accounts.csv"
    columns = _header(source)
    assert columns[:2] == ["External_Id__c", "Name"]

    start = lineage.of_task(dag_id, "upsert_accounts", "START")
    assert _columns(_dataset(start["inputs"], "file", str(source))) == columns
    started = _dataset(start["outputs"], _org(emulator), "Account")
    assert _columns(started) == columns
    assert "outputStatistics" not in started.get("outputFacets", {})

    complete = lineage.of_task(dag_id, "upsert_accounts", "COMPLETE")
    xcom = run.xcom("upsert_accounts")
    source_dataset = _dataset(complete["inputs"], "file", str(source))
    assert _columns(source_dataset) == columns
    account = _dataset(complete["outputs"], _org(emulator), "Account")
    assert _columns(account) == columns
    assert account["outputFacets"]["outputStatistics"]["rowCount"] == xcom["records_successful"] == 20
    jobs = complete["run"]["facets"]["sfbulk_jobs"]
    assert jobs["jobIds"] == xcom["job_ids"]
    assert len(jobs["jobIds"]) >= 1
    assert (jobs["jobKind"], jobs["operation"], jobs["object"]) == ("ingest", "upsert", "Account")
    assert jobs["apiVersion"] == "60.0"  # the connection's (tests/conftest.py)

    contacts = lineage.of_task(dag_id, "upsert_contacts", "COMPLETE")
    contact = _dataset(contacts["outputs"], _org(emulator), "Contact")
    assert contact["outputFacets"]["outputStatistics"]["rowCount"] == 40
    assert _columns(contact) == _header(airflow_db / "data" / "contacts.csv")


def test_ingest_failure_event(
    emulator: EmulatorServer, salesforce_conn, run_example, lineage, airflow_db
):
    salesforce_conn(emulator)
    data = airflow_db / "data"
    original = (data / "accounts.csv").read_text()
    try:  # one Account row without its required Name: the load fails after loading 19 rows
        (data / "accounts.csv").write_text(original.replace("Customer 03 Ltd", "", 1))
        run = run_example("example_sfbulk_parent_child")
    finally:
        (data / "accounts.csv").write_text(original)
    assert "failed" in run.state
    failed = lineage.of_task("example_sfbulk_parent_child", "upsert_accounts", "FAIL")
    error = failed["run"]["facets"]["errorMessage"]
    assert "1 row(s) failed" in error["message"] or "failed" in error["message"]
    jobs = failed["run"]["facets"]["sfbulk_jobs"]
    assert jobs["jobIds"]
    assert all(job_id.startswith("750") for job_id in jobs["jobIds"])
    account = _dataset(failed["outputs"], _org(emulator), "Account")
    assert account["outputFacets"]["outputStatistics"]["rowCount"] == 19


def test_query_events(emulator: EmulatorServer, salesforce_conn, run_example, lineage, tmp_path):
    salesforce_conn(emulator)
    emulator.seed("Account", 5)
    emulator.seed("Opportunity", 1200)
    run = run_example("example_sfbulk_extract_to_storage")
    assert run.state == "success"
    dag_id = "example_sfbulk_extract_to_storage"
    soql_columns = ["Id", "Name", "StageName", "Amount", "CloseDate", "AccountId", "IsDeleted"]

    start = lineage.of_task(dag_id, "extract_opportunities", "START")
    assert _columns(_dataset(start["inputs"], _org(emulator), "Opportunity")) == soql_columns

    complete = lineage.of_task(dag_id, "extract_opportunities", "COMPLETE")
    xcom = run.xcom("extract_opportunities")
    assert _columns(_dataset(complete["inputs"], _org(emulator), "Opportunity")) == xcom["columns"]
    folder = xcom["results_path"].removeprefix("file://")
    assert folder.startswith(str(tmp_path / "results"))
    output = _dataset(complete["outputs"], "file", folder)
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == xcom["record_count"] == 1200
    assert _columns(output) == soql_columns
    jobs = complete["run"]["facets"]["sfbulk_jobs"]
    assert jobs["jobIds"] == [xcom["job_id"]]
    assert (jobs["jobKind"], jobs["operation"], jobs["object"]) == ("query", "queryAll", "Opportunity")


def test_query_failure_event_names_the_failed_job(
    emulator_factory, salesforce_conn, run_example, lineage
):
    emulator = emulator_factory(query_timeout_records=100)  # the extract's job fails: it ran too long
    salesforce_conn(emulator)
    emulator.seed("Account", 5)
    emulator.seed("Opportunity", 1200)
    run = run_example("example_sfbulk_extract_to_storage")
    assert "failed" in run.state
    failed = lineage.of_task("example_sfbulk_extract_to_storage", "extract_opportunities", "FAIL")
    jobs = failed["run"]["facets"]["sfbulk_jobs"]
    (job_id,) = jobs["jobIds"]
    assert job_id.startswith("750")
    state = emulator.app.store.get_job(job_id).state
    assert state == "Failed"
    assert "Retried more than 15 times" in failed["run"]["facets"]["errorMessage"]["message"]


RESULTS_DAG = """
import datetime
import json
from pathlib import Path

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

from airflow_provider_sfbulk.operators.results import SalesforceBulkJobResultsOperator

SPEC = json.loads(Path(__file__).with_suffix(".json").read_text())

with DAG(SPEC["dag_id"], schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    for task_id, kind, ids in SPEC["tasks"]:
        SalesforceBulkJobResultsOperator(task_id=task_id, job_kind=kind, job_ids=ids, poll_interval=0.05)
"""


def test_results_operator_events(
    emulator: EmulatorServer, salesforce_conn, write_dag, lineage, tmp_path, monkeypatch
):
    """Jobs started elsewhere (one ingest job with a failing row, one query job): the results operator's
    COMPLETE events name each job's object as input, its results folder as output with the rows written
    (all three result sets of the ingest job, the records of the query job) and the job ids."""
    from airflow_provider_sfbulk.emulator.testing import ApiSession

    salesforce_conn(emulator)
    api = ApiSession(emulator)
    ingest = api.create_ingest("Account", "insert")
    api.upload(ingest["id"], b"Name,Rating\nA,Hot\nB,Nope\nC,Cold\n").raise_for_status()
    api.close(ingest["id"]).raise_for_status()
    emulator.seed("Contact", 7)
    query = api.post("/jobs/query", json={"operation": "query", "query": "SELECT Id, LastName FROM Contact"})
    query.raise_for_status()
    dag_id = "results_lineage"
    module = write_dag(dag_id, RESULTS_DAG, {"dag_id": dag_id, "tasks": [
        ["ingest_results", "ingest", ingest["id"]], ["query_results", "query", query.json()["id"]],
    ]})
    results = tmp_path / "results"
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(results))
    run = ExampleRun(module.dag.test())
    assert run.state == "success"

    for task_id, job, object_name, rows in (
        ("ingest_results", ingest["id"], "Account", 3), ("query_results", query.json()["id"], "Contact", 7),
    ):
        xcom = run.xcom(task_id)
        complete = lineage.of_task(dag_id, task_id, "COMPLETE")
        assert [d["name"] for d in complete["inputs"]] == [object_name]
        _dataset(complete["inputs"], _org(emulator), object_name)
        folder = xcom["results_path"].removeprefix("file://")
        assert folder.startswith(str(results))
        output = _dataset(complete["outputs"], "file", folder)
        assert output["outputFacets"]["outputStatistics"]["rowCount"] == rows
        jobs = complete["run"]["facets"]["sfbulk_jobs"]
        assert jobs["jobIds"] == [job] == xcom["job_ids"]
        assert (jobs["jobKind"], jobs["object"]) == (task_id.split("_")[0], object_name)


def test_operators_run_without_the_openlineage_provider(
    emulator: EmulatorServer, salesforce_conn, run_example, monkeypatch
):
    """Its import fails (as when it is not installed): the example DAG still runs and succeeds."""
    manager = _listener_manager()
    ol_listeners = [
        plugin for plugin in manager.pm.get_plugins()
        if type(plugin).__module__.startswith("airflow.providers.openlineage")
    ]
    for plugin in ol_listeners:  # registered by an earlier test's plugin load: not there without it
        manager.pm.unregister(plugin)
    for name in list(sys.modules):
        if name == "airflow.providers.openlineage" or name.startswith("airflow.providers.openlineage."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)  # import -> ImportError
    with pytest.raises(ImportError):
        import airflow.providers.openlineage.extractors  # noqa: F401
    salesforce_conn(emulator)
    emulator.seed("Account", 3)
    emulator.seed("Opportunity", 30)
    try:
        run = run_example("example_sfbulk_extract_to_storage")
    finally:
        for plugin in ol_listeners:
            manager.add_listener(plugin)
    assert run.state == "success"
    assert run.xcom("extract_opportunities")["record_count"] == 30


def test_importing_the_operators_imports_no_openlineage():
    code = (
        "import sys\n"
        "import airflow_provider_sfbulk.operators.ingest, airflow_provider_sfbulk.operators.query\n"
        "import airflow_provider_sfbulk.operators.results\n"
        "assert 'airflow_provider_sfbulk.operators.lineage' not in sys.modules\n"
        "ignored = {'airflow.providers.openlineage', 'airflow.providers.openlineage.get_provider_info'}\n"
        "loaded = sorted(m for m in sys.modules if 'openlineage' in m and m not in ignored)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_soql_object_and_columns_and_names():
    from airflow_provider_sfbulk.operators.lineage import (
        salesforce_namespace,
        soql_object_and_columns,
        storage_dataset_id,
    )

    soql = "SELECT Id, Account.Name, toLabel(StageName), (SELECT Id FROM Contacts) FROM Opportunity"
    assert soql_object_and_columns(soql) == ("Opportunity", ["Id", "Account.Name", "StageName"])
    assert soql_object_and_columns("not soql") == (None, [])
    assert salesforce_namespace("https://Acme.my.salesforce.com/") == "salesforce://acme.my.salesforce.com"
    assert storage_dataset_id("s3://bucket/dir/a.csv") == ("s3://bucket", "dir/a.csv")
    assert storage_dataset_id("/tmp/a.csv") == ("file", "/tmp/a.csv")
    assert storage_dataset_id("file:///tmp/a.csv") == ("file", "/tmp/a.csv")
