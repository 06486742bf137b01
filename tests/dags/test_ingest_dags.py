"""Real DAGs run with ``dag.test()`` against the emulator (Airflow 3.x here; scripts/test also runs them
on Airflow 2.11): every ingest operation, a multi-job split, failed rows and their retry, a Failed job,
bad inputs, and a downstream task that reads the XCom."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

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

from airflow_provider_sfbulk.ingest.loader import PartLoader
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

SPEC = json.loads(Path(__file__).with_suffix(".json").read_text())


class CrashOnFirstTry(SalesforceBulkIngestOperator):
    """Dies after the uploads on its first try, like a worker killed at the worst moment."""

    def execute(self, context):
        if context["ti"].try_number != 1:
            return super().execute(context)
        real_close = PartLoader.close

        def crash(loader, part):
            raise RuntimeError("simulated worker crash after the uploads")

        PartLoader.close = crash  # dag.test() runs every try in this process: put it back after
        try:
            return super().execute(context)
        finally:
            PartLoader.close = real_close


def record(ti, task_ids, out):
    values = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in task_ids}
    Path(out).write_text(json.dumps(values))


with DAG(SPEC["dag_id"], schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    previous = None
    loads = []
    for task in SPEC["tasks"]:
        kind = CrashOnFirstTry if task.get("crash_first_try") else SalesforceBulkIngestOperator
        op = kind(task_id=task["task_id"], **task["kwargs"])
        if previous is not None:
            previous >> op
        previous = op
        loads.append(task["task_id"])
    report = PythonOperator(
        task_id="report", python_callable=record,
        op_kwargs={"task_ids": loads, "out": SPEC["report"]}, trigger_rule="all_done",
    )
    previous >> report
'''


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


class DagRunner:
    def __init__(self, write_dag: Any, tmp_path: Path) -> None:
        self.write_dag = write_dag
        self.tmp_path = tmp_path

    def file(self, name: str, header: list[str], rows: list[list[Any]]) -> str:
        path = self.tmp_path / name
        path.write_text(csv_text(header, rows), encoding="utf-8")
        return str(path)

    def run(self, dag_id: str, tasks: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        report = self.tmp_path / f"{dag_id}-report.json"
        for task in tasks:
            kwargs = task["kwargs"]
            kwargs.setdefault("poll_interval", 0.05)
            kwargs.setdefault("max_poll_interval", 0.2)
        module = self.write_dag(dag_id, DAG_SOURCE, {"dag_id": dag_id, "tasks": tasks, "report": str(report)})
        run = module.dag.test()
        values = json.loads(report.read_text()) if report.exists() else {}
        states = _task_states(run.dag_id, run.run_id)
        loads = [task["task_id"] for task in tasks]
        # "success" when every load succeeded, else the state of the first one that did not
        state = next((f"failed:{states[t]}" for t in loads if states.get(t) != "success"), "success")
        return state, values


def _task_states(dag_id: str, run_id: str) -> dict[str, str]:
    """Task states of a finished run, read from the metadata DB (Airflow 2.11 and 3.x)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance.task_id, TaskInstance.state).filter(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
        )
        return {task_id: str(getattr(state, "value", state)) for task_id, state in rows}


@pytest.fixture
def dags(write_dag, tmp_path, monkeypatch) -> DagRunner:
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    return DagRunner(write_dag, tmp_path)


def _jobs(emulator) -> list[dict[str, Any]]:
    from airflow_provider_sfbulk.emulator.testing import ApiSession

    response = ApiSession(emulator).get("/jobs/ingest")
    response.raise_for_status()
    return response.json()["records"]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_insert_then_update_then_delete(emulator, salesforce_conn, dags, deferrable):
    salesforce_conn(emulator)
    rows = [[f"Acme {i}", f"A-{i}"] for i in range(25)]
    source = dags.file("accounts.csv", ["Name", "External_Id__c"], rows)
    state, values = dags.run(
        f"ingest_insert_{deferrable}",
        [{"task_id": "insert", "kwargs": {"object_name": "Account", "operation": "insert", "source": source,
                                          "deferrable": deferrable, "max_records_per_job": 10,
                                          "multipart_max_bytes": 0}}],
    )
    assert state == "success"
    result = values["insert"]
    assert result["records_successful"] == 25
    assert len(result["job_ids"]) == 3
    records = emulator.records("Account")
    assert len(records) == 25

    updates = dags.file("updates.csv", ["Id", "NumberOfEmployees"], [[r["Id"], 7] for r in records])
    deletes = dags.file("deletes.csv", ["Id"], [[r["Id"]] for r in records[:5]])
    state, values = dags.run(
        f"ingest_update_{deferrable}",
        [{"task_id": "update", "kwargs": {"object_name": "Account", "operation": "update", "source": updates,
                                          "deferrable": deferrable}},
         {"task_id": "delete", "kwargs": {"object_name": "Account", "operation": "delete", "source": deletes,
                                          "deferrable": deferrable}}],
    )
    assert state == "success"
    assert values["update"]["records_successful"] == 25
    assert values["delete"]["records_successful"] == 5
    remaining = emulator.records("Account")
    assert len(remaining) == 20
    assert {str(r["NumberOfEmployees"]) for r in remaining} == {"7"}


@pytest.fixture
def slow_emulator(emulator_factory):
    """Jobs take a while (half a second per 5 rows), so a deferrable task really defers, also when a loaded
    machine makes the task's way from the close to the deferral slow (0.1 s was too short on a load of 20)."""
    return emulator_factory(batch_size=5, batch_delay=0.5)


@pytest.fixture
def trigger_runs(monkeypatch) -> list[dict[str, Any]]:
    """Records every SalesforceBulkJobTrigger run (dag.test runs triggers inline, in this process)."""
    from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

    runs: list[dict[str, Any]] = []
    real = SalesforceBulkJobTrigger.run

    async def run(self: Any) -> Any:
        runs.append(self.serialize()[1])
        async for event in real(self):
            yield event

    monkeypatch.setattr(SalesforceBulkJobTrigger, "run", run)
    return runs


def test_upsert_with_parent_reference_and_hard_delete(slow_emulator, salesforce_conn, dags, trigger_runs):
    emulator = slow_emulator
    salesforce_conn(emulator)
    parents = dags.file("parents.csv", ["Name", "External_Id__c"], [["P1", "EXT-1"], ["P2", "EXT-2"]])
    children = dags.file(
        "children.csv", ["LastName", "External_Id__c", "Account.External_Id__c"],
        [[f"Child {i}", f"C-{i}", f"EXT-{1 + i % 2}"] for i in range(12)],
    )
    common = {"deferrable": True, "multipart_max_bytes": 0}
    state, values = dags.run("ingest_upsert_parent", [
        {"task_id": "parents", "kwargs": {"object_name": "Account", "operation": "upsert",
                                          "external_id_field": "External_Id__c", "source": parents,
                                          **common}},
        {"task_id": "children", "kwargs": {"object_name": "Contact", "operation": "upsert",
                                           "external_id_field": "External_Id__c", "source": children,
                                           **common}},
    ])
    assert state == "success"
    assert trigger_runs, "the deferrable tasks never deferred"
    assert values["children"]["records_successful"] == 12
    accounts = {a["External_Id__c"]: a["Id"] for a in emulator.records("Account")}
    for contact in emulator.records("Contact"):
        number = int(contact["External_Id__c"].split("-")[1])
        assert contact["AccountId"] == accounts[f"EXT-{1 + number % 2}"]

    ids = dags.file("contact_ids.csv", ["Id"], [[c["Id"]] for c in emulator.records("Contact")])
    state, values = dags.run("ingest_hard_delete", [
        {"task_id": "purge", "kwargs": {"object_name": "Contact", "operation": "hardDelete", "source": ids,
                                        "allow_hard_delete": True, **common}},
    ])
    assert state == "success"
    assert values["purge"]["records_successful"] == 12
    assert emulator.records("Contact", include_deleted=True) == []


def test_failed_rows_are_retried_alone(emulator, salesforce_conn, dags, monkeypatch):
    from airflow_provider_sfbulk.ingest import retries as retries_module

    salesforce_conn(emulator)
    emulator.set_faults(lock_row_rate=0.5, seed=11)
    real = retries_module.write_failed_rows

    def clear_then_write(*args: Any, **kwargs: Any) -> Any:
        emulator.set_faults(lock_row_rate=0.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(retries_module, "write_failed_rows", clear_then_write)
    source = dags.file("a.csv", ["Name"], [[f"Row {i}"] for i in range(20)])
    state, values = dags.run("ingest_retry_rows", [
        {"task_id": "load", "kwargs": {"object_name": "Account", "operation": "insert", "source": source,
                                       "lock_retry": True, "deferrable": True}},
    ])
    assert state == "success"
    result = values["load"]
    assert result["retry_rounds"] == 1
    assert len(result["job_ids"]) == 2
    assert (result["records_successful"], result["records_failed"]) == (20, 0)
    assert sorted(r["Name"] for r in emulator.records("Account")) == sorted(f"Row {i}" for i in range(20))


def test_failed_job_fails_the_task(emulator_factory, salesforce_conn, dags):
    server = emulator_factory(failing_batch=1)
    salesforce_conn(server)
    source = dags.file("a.csv", ["Name"], [["A"], ["B"], ["C"]])
    state, values = dags.run("ingest_failed_job", [
        {"task_id": "load", "kwargs": {"object_name": "Account", "operation": "insert", "source": source,
                                       "deferrable": True}},
    ])
    assert state == "failed:failed"
    assert values["load"]["records_unprocessed"] == 3  # the failing task still pushed its results


@pytest.mark.parametrize(
    ("content", "operation"),
    [(b"", "insert"), (b"Name\n", "insert"), (b'Name\n"Open quote\n', "insert"), (b"Name\nX\n", "delete"),
     (b"Name;Rating\nA;Hot\n", "insert"), (b"Name\n\xff\n", "insert")],
    ids=["empty", "header-only", "unbalanced-quote", "delete-without-Id", "wrong-delimiter", "bad-utf8"],
)
def test_bad_input_fails_the_task_without_jobs(emulator, salesforce_conn, dags, tmp_path, content, operation):
    salesforce_conn(emulator)
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    state, values = dags.run("ingest_bad_input", [
        {"task_id": "load", "kwargs": {"object_name": "Account", "operation": operation, "source": str(path),
                                       "retries": 0}},
    ])
    assert state == "failed:failed"
    assert values["load"] is None
    assert _jobs(emulator) == []


def test_crash_after_upload_retry_does_not_duplicate(slow_emulator, salesforce_conn, dags, trigger_runs):
    emulator = slow_emulator
    salesforce_conn(emulator)
    source = dags.file("a.csv", ["Name"], [[f"Row {i}"] for i in range(30)])
    state, values = dags.run("ingest_crash_retry", [
        {"task_id": "load", "crash_first_try": True,
         "kwargs": {"object_name": "Account", "operation": "insert", "source": source, "deferrable": True,
                    "max_records_per_job": 10, "multipart_max_bytes": 0, "retries": 1, "retry_delay": 0,
                    "job_concurrency": 1}},  # one job at a time: the retried task defers once per job
    ])
    assert state == "success"
    assert len(_jobs(emulator)) == 3  # the retry reconnected to the three uploaded jobs
    assert len(trigger_runs) == 3
    assert all(len(run["job_ids"]) == 1 for run in trigger_runs)
    assert values["load"]["records_successful"] == 30
    assert sorted(r["Name"] for r in emulator.records("Account")) == sorted(f"Row {i}" for i in range(30))


RESULTS_DAG_SOURCE = '''
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

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
from airflow_provider_sfbulk.operators.results import SalesforceBulkJobResultsOperator
from airflow_provider_sfbulk.sensors.job import SalesforceBulkJobSensor

SPEC = json.loads(Path(__file__).with_suffix(".json").read_text())
JOB_IDS = "{{ ti.xcom_pull(task_ids='load')['job_ids'] }}"


def record(ti, out):
    values = {t: ti.xcom_pull(task_ids=t) for t in ("load", "watch", "results")}
    Path(out).write_text(json.dumps(values))


with DAG(SPEC["dag_id"], schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    load = SalesforceBulkIngestOperator(task_id="load", **SPEC["load"])
    watch = SalesforceBulkJobSensor(task_id="watch", job_ids=JOB_IDS, deferrable=True, poke_interval=0.05)
    results = SalesforceBulkJobResultsOperator(task_id="results", job_ids=JOB_IDS, deferrable=True,
                                               poll_interval=0.05)
    report = PythonOperator(task_id="report", python_callable=record, op_kwargs={"out": SPEC["report"]})
    load >> watch >> results >> report
'''


def test_sensor_and_results_operator_downstream(emulator, salesforce_conn, dags, tmp_path):
    salesforce_conn(emulator)
    source = dags.file("a.csv", ["Name", "Rating"], [["A", "Hot"], ["B", "Nope"], ["C", "Cold"]])
    report = tmp_path / "results-report.json"
    module = dags.write_dag("ingest_results_chain", RESULTS_DAG_SOURCE, {
        "dag_id": "ingest_results_chain", "report": str(report),
        "load": {"object_name": "Account", "operation": "insert", "source": source, "max_failed_records": 5,
                 "poll_interval": 0.05},
    })
    run = module.dag.test()
    states = _task_states(run.dag_id, run.run_id)
    assert states == dict.fromkeys(("load", "watch", "results", "report"), "success")
    values = json.loads(report.read_text())
    assert values["watch"]["job_ids"] == values["load"]["job_ids"]
    assert values["watch"]["status"] == "success"
    assert values["results"]["records_successful"] == 2
    assert values["results"]["records_failed"] == 1
    assert values["results"]["job_ids"] == values["load"]["job_ids"]


def test_triggerer_restart_mid_wait(slow_emulator, salesforce_conn, dags, monkeypatch):
    """The first trigger instance is cancelled mid-wait (the triggerer went away); a new instance built
    from its serialized kwargs, as a restarted triggerer does, carries on and fires the event."""
    import asyncio

    from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

    emulator = slow_emulator
    salesforce_conn(emulator)
    real = SalesforceBulkJobTrigger.run
    restarts: list[dict[str, Any]] = []

    async def run_with_restart(self: Any) -> Any:
        classpath, kwargs = self.serialize()
        first = real(self)
        try:
            await asyncio.wait_for(anext(first), timeout=0.2)
            raise AssertionError("the jobs finished before the simulated restart")
        except asyncio.TimeoutError:
            await first.aclose()  # the old triggerer is gone, mid-wait
        restarts.append(kwargs)
        rebuilt = SalesforceBulkJobTrigger(**json.loads(json.dumps(kwargs)))
        async for event in real(rebuilt):
            yield event

    monkeypatch.setattr(SalesforceBulkJobTrigger, "run", run_with_restart)
    source = dags.file("a.csv", ["Name"], [[f"Row {i}"] for i in range(40)])
    state, values = dags.run("ingest_triggerer_restart", [
        {"task_id": "load", "kwargs": {"object_name": "Account", "operation": "insert", "source": source,
                                       "deferrable": True, "timeout": 600}},
    ])
    assert state == "success"
    assert restarts
    assert restarts[0]["deadline"] is not None
    assert values["load"]["records_successful"] == 40
    assert len(emulator.records("Account")) == 40
