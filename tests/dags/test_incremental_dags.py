"""The incremental and asset examples run with ``dag.test(logical_date=...)`` against the emulator (Airflow 3
here; Airflow 2.11 too), with the emulator's record clock placing every change inside an interval or
exactly on its bound:

- daily Opportunity extracts merged into SQLite by Id equal the emulator's records after each run, with
  changes, a deletion (``queryAll``) and a record stamped exactly on ``data_interval_end`` (extracted by
  the next run, exactly once); two intervals get two folders; a re-run of the first interval replaces
  its files and leaves the table equal;
- the Account extract records an asset event whose extra names the extract, and the DAG scheduled on that
  asset reads it."""

from __future__ import annotations

import csv
import importlib.util
import inspect
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator import records
from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer

_AIRFLOW = tuple(int(part) for part in __import__("airflow").__version__.split(".")[:2])

pytestmark = pytest.mark.dag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
UTC = timezone.utc
DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
COLUMNS = ("Id", "Name", "StageName", "Amount", "CloseDate", "SystemModstamp")


@pytest.fixture
def load_example(airflow_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                 ) -> Iterator[Callable[[str], ModuleType]]:
    """``load_example(file_stem)``: copy an example into the dags folder and import it."""
    monkeypatch.setenv("SFBULK_EXAMPLE_POLL_SECONDS", "0.1")
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    monkeypatch.setenv("SFBULK_EXAMPLE_SQLITE", str(tmp_path / "merged.sqlite"))
    copied: list[Path] = []

    def load(stem: str) -> ModuleType:
        target = airflow_db / f"{stem}.py"
        shutil.copy(EXAMPLES / f"{stem}.py", target)
        copied.append(target)
        spec = importlib.util.spec_from_file_location(f"sfbulk_example_{stem}", target)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    for path in copied:
        path.unlink(missing_ok=True)


def run_for(dag: Any, interval_end: datetime) -> Any:
    """Run ``dag`` for the daily interval ending at ``interval_end`` (a manual run's inferred interval)."""
    name = "logical_date" if "logical_date" in inspect.signature(dag.test).parameters else "execution_date"
    run = dag.test(**{name: interval_end})
    state = getattr(run.state, "value", run.state)
    assert state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    assert run.data_interval_start == interval_end - timedelta(days=1)
    assert run.data_interval_end == interval_end
    return run


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    monkeypatch.setattr(records, "clock", lambda: moment)


def ingest(api: ApiSession, operation: str, header: str, lines: list[str]) -> None:
    body = header + "\n" + "".join(f"{line}\n" for line in lines)
    info = api.run_ingest("Opportunity", operation, body.encode())
    assert info["numberRecordsFailed"] == 0, info


def table(path: Path) -> dict[str, tuple[str, ...]]:
    with sqlite3.connect(path) as connection:
        return {row[0]: tuple(row) for row in connection.execute("SELECT * FROM opportunity")}


def emulator_rows(server: EmulatorServer, before: datetime) -> dict[str, tuple[str, ...]]:
    """The live Opportunities last changed before ``before``, as the merge stores them."""
    limit = before.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rows = {}
    for record in server.records("Opportunity"):
        if record["SystemModstamp"] < limit:
            values = ["" if record[c] is None else str(record[c]) for c in COLUMNS]
            rows[record["Id"]] = tuple(values)
    return rows


def extracted_ids(xcom: dict[str, Any]) -> list[str]:
    ids = []
    for uri in xcom["files"]:
        with open(uri.removeprefix("file://"), newline="", encoding="utf-8") as handle:
            ids.extend(row["Id"] for row in csv.DictReader(handle))
    return ids


def test_daily_extracts_merged_by_id_equal_the_emulator(emulator, salesforce_conn, load_example, monkeypatch,
                                                        tmp_path):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    database = tmp_path / "merged.sqlite"
    at(monkeypatch, DAY1 + timedelta(hours=8))
    ingest(api, "insert", "Name,StageName,CloseDate,Amount",
           [f"Deal {i},Prospecting,2024-02-0{i + 1},{1000 * (i + 1)}" for i in range(5)])
    at(monkeypatch, DAY2)  # exactly on the first interval's end
    ingest(api, "insert", "Name,StageName,CloseDate", ["On the bound,Qualification,2024-03-01"])
    bound_id = next(r["Id"] for r in emulator.records("Opportunity") if r["Name"] == "On the bound")
    dag = load_example("example_sfbulk_incremental_opportunities").dag

    first = run_for(dag, DAY2)
    assert table(database) == emulator_rows(emulator, DAY2)
    assert len(table(database)) == 5
    assert bound_id not in extracted_ids(first.get_task_instance("extract_changes").xcom_pull(
        task_ids="extract_changes"))

    # Between the runs: two updates, a deletion and an insert, all inside the second interval.
    deals = {r["Name"]: r["Id"] for r in emulator.records("Opportunity")}
    at(monkeypatch, DAY2 + timedelta(hours=10))
    ingest(api, "update", "Id,StageName,Amount", [f"{deals['Deal 0']},Closed Won,999", f"{deals['Deal 1']},"
                                                 "Negotiation,"])
    ingest(api, "delete", "Id", [deals["Deal 2"]])
    ingest(api, "insert", "Name,StageName,CloseDate", ["Deal 5,Proposal,2024-04-01"])

    second = run_for(dag, DAY3)
    second_xcom = second.get_task_instance("extract_changes").xcom_pull(task_ids="extract_changes")
    assert table(database) == emulator_rows(emulator, DAY3)
    assert set(table(database)) == set(deals.values()) - {deals["Deal 2"]} | {
        r["Id"] for r in emulator.records("Opportunity") if r["Name"] == "Deal 5"}
    assert extracted_ids(second_xcom).count(bound_id) == 1  # the bound record: this run, once
    assert deals["Deal 2"] in extracted_ids(second_xcom)  # the deletion came through queryAll

    series = tmp_path / "results" / "example_sfbulk_incremental_opportunities" / "extract_changes"
    assert sorted(p.name for p in series.iterdir()) == [
        "20240101T000000Z_20240102T000000Z",
        "20240102T000000Z_20240103T000000Z",
    ]
    assert second_xcom["results_path"] == f"file://{series}/20240102T000000Z_20240103T000000Z"

    # Re-running the first interval replaces its files (Deal 0, 1 and 2 have left it) and the table holds.
    again = run_for(dag, DAY2)
    again_xcom = again.get_task_instance("extract_changes").xcom_pull(task_ids="extract_changes")
    first_folder = series / "20240101T000000Z_20240102T000000Z"
    assert again_xcom["results_path"] == f"file://{first_folder}"
    assert sorted(extracted_ids(again_xcom)) == sorted([deals["Deal 3"], deals["Deal 4"]])
    assert sorted(p.name for p in first_folder.iterdir()) == ["manifest.json", "part-00000.csv"]
    assert table(database) == emulator_rows(emulator, DAY3)


def _asset_events(uri: str) -> list[dict[str, Any]]:
    from airflow.utils.session import create_session

    try:
        from airflow.models.asset import AssetEvent as Event
        from airflow.models.asset import AssetModel as Model
    except ImportError:  # Airflow 2
        from airflow.models.dataset import DatasetEvent as Event
        from airflow.models.dataset import DatasetModel as Model

    key = Event.asset_id if hasattr(Event, "asset_id") else Event.dataset_id
    with create_session() as session:
        found = session.query(Event).join(Model, Model.id == key).filter(Model.uri == uri).all()
        return [dict(event.extra or {}) for event in found]


@pytest.mark.skipif(
    (3, 0) <= _AIRFLOW < (3, 3),
    reason="dag.test() of Airflow 3.0-3.2 refuses an outlet Asset that no DAG processor has activated "
    "(AirflowInactiveAssetInInletOrOutletException); a deployment's DAG processor activates it",
)
def test_an_account_extract_triggers_the_dag_scheduled_on_its_asset(emulator, salesforce_conn, load_example,
                                                                    monkeypatch, tmp_path):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    at(monkeypatch, DAY1 + timedelta(hours=3))
    assert api.run_ingest("Account", "insert", b"Name\nAcme\nGlobex\n")["numberRecordsFailed"] == 0
    module = load_example("example_sfbulk_account_asset")
    asset = module.ACCOUNT_EXTRACTS
    series = tmp_path / "results" / "example_sfbulk_account_extract" / "extract_accounts"
    assert asset.uri == f"file://{series}"
    assert asset in module.extract_accounts.outlets
    timetable = module.consumer.timetable
    condition = getattr(timetable, "asset_condition", None) or timetable.dataset_condition
    assert asset.uri in repr(condition)

    if hasattr(module.producer, "sync_to_db"):  # Airflow 2: dag.test() does not write the datasets
        for dag in (module.producer, module.consumer):
            dag.sync_to_db()
    run = run_for(module.producer, DAY2)
    xcom = run.get_task_instance("extract_accounts").xcom_pull(task_ids="extract_accounts")
    events = _asset_events(asset.uri)
    assert len(events) == 1
    assert events[0]["job_id"] == xcom["job_id"]
    assert events[0]["record_count"] == 2
    assert events[0]["results_path"] == f"file://{series}/20240101T000000Z_20240102T000000Z"
    assert events[0]["interval"]["end"] == "2024-01-02T00:00:00Z"

    consumer_run = module.consumer.test()
    seen = consumer_run.get_task_instance("read_new_extract").xcom_pull(task_ids="read_new_extract")
    assert seen == [{"results_path": xcom["results_path"], "rows": 2, "interval": events[0]["interval"]}]
