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

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

SPEC = json.loads(Path(__file__).with_suffix(".json").read_text())


def record(ti, task_ids, out):
    values = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in task_ids}
    Path(out).write_text(json.dumps(values))


with DAG(SPEC["dag_id"], schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    previous = None
    loads = []
    for task in SPEC["tasks"]:
        op = SalesforceBulkIngestOperator(task_id=task["task_id"], **task["kwargs"])
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
        state = str(getattr(run, "state", "")) if run is not None else ""
        values = json.loads(report.read_text()) if report.exists() else {}
        return state, values


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
    source = dags.file("accounts.csv", ["Name", "External_Id__c"], [[f"Acme {i}", f"A-{i}"] for i in range(25)])
    state, values = dags.run(
        f"ingest_insert_{deferrable}",
        [{"task_id": "insert", "kwargs": {"object_name": "Account", "operation": "insert", "source": source,
                                          "deferrable": deferrable, "max_records_per_job": 10,
                                          "multipart_max_bytes": 0}}],
    )
    assert "success" in state
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
    assert "success" in state
    assert values["update"]["records_successful"] == 25
    assert values["delete"]["records_successful"] == 5
    remaining = emulator.records("Account")
    assert len(remaining) == 20
    assert {str(r["NumberOfEmployees"]) for r in remaining} == {"7"}
