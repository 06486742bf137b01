"""The example DAGs, each run with ``dag.test()`` against the in-process emulator (Airflow 3 here;
``scripts/test`` runs them on Airflow 2.11 too): the records they leave in the emulator, their XComs
and their files."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer

pytestmark = pytest.mark.dag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_IDS = (
    "example_sfbulk_parent_child",
    "example_sfbulk_load_with_failures",
    "example_sfbulk_extract_to_storage",
    "example_sfbulk_delete_by_extract",
    "example_sfbulk_job_watch",
    "example_sfbulk_incremental_opportunities",
    "example_sfbulk_account_extract",
    "example_sfbulk_on_account_extract",
)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return _csv_rows_text(path.read_text(encoding="utf-8"))


def _csv_rows_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


class ExampleRun:
    """One ``dag.test()`` run: its state and its task instances' XComs and states."""

    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        state = getattr(dag_run, "state", "")
        self.state = str(getattr(state, "value", state))  # "success", whatever the enum's str()

    def xcom(self, task_id: str) -> Any:
        ti = self.dag_run.get_task_instance(task_id)
        assert ti is not None, task_id
        return ti.xcom_pull(task_ids=task_id)

    def task_state(self, task_id: str) -> str:
        ti = self.dag_run.get_task_instance(task_id)
        return str(ti.state) if ti is not None else ""


@pytest.fixture
def run_example(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., ExampleRun]]:
    """``run_example(dag_id, **conf)``: copy the example (and its data) into the dags folder and run it."""
    monkeypatch.setenv("SFBULK_EXAMPLE_POLL_SECONDS", "0.1")
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    data = airflow_db / "data"
    if not data.exists():
        shutil.copytree(EXAMPLES / "data", data)
    copied: list[Path] = []

    def run(dag_id: str, **conf: Any) -> ExampleRun:
        target = airflow_db / f"{dag_id}.py"
        shutil.copy(EXAMPLES / f"{dag_id}.py", target)
        copied.append(target)
        spec = importlib.util.spec_from_file_location(f"sfbulk_example_{dag_id}", target)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag
        assert dag.dag_id == dag_id
        return ExampleRun(dag.test(run_conf=conf or None))

    yield run
    for path in copied:
        path.unlink(missing_ok=True)


def test_every_example_parses_without_import_errors():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag

    try:
        bag = DagBag(dag_folder=str(EXAMPLES), include_examples=False)
    except TypeError:  # Airflow 3.3 reads [core] load_examples instead
        bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(EXAMPLE_IDS)
    for dag_id in EXAMPLE_IDS:
        assert "What to copy" in bag.dags[dag_id].doc_md


def test_parent_then_child(emulator: EmulatorServer, salesforce_conn, run_example):
    salesforce_conn(emulator)
    run = run_example("example_sfbulk_parent_child")
    assert run.state == "success"
    accounts = {r["External_Id__c"]: r for r in emulator.records("Account")}
    expected_accounts = _csv_rows(EXAMPLES / "data" / "accounts.csv")
    assert set(accounts) == {row["External_Id__c"] for row in expected_accounts}
    for row in expected_accounts:
        assert accounts[row["External_Id__c"]]["Name"] == row["Name"]
    contacts = emulator.records("Contact")
    expected_contacts = _csv_rows(EXAMPLES / "data" / "contacts.csv")
    assert len(contacts) == len(expected_contacts) == 40
    by_key = {c["External_Id__c"]: c for c in contacts}
    for row in expected_contacts:  # each Contact points at the Account named by its external id
        assert by_key[row["External_Id__c"]]["AccountId"] == accounts[row["Account.External_Id__c"]]["Id"]
    assert run.xcom("accounts_reconciled")["accounts"] == 20
    contacts_load = run.xcom("upsert_contacts")
    assert contacts_load["records_successful"] == 40
    assert contacts_load["records_failed"] == 0

    # a second night changes nothing: upserts by external id do not duplicate
    run = run_example("example_sfbulk_parent_child")
    assert run.state == "success"
    assert len(emulator.records("Account")) == 20
    assert len(emulator.records("Contact")) == 40


def test_child_waits_for_a_clean_parent(emulator: EmulatorServer, salesforce_conn, run_example, airflow_db):
    salesforce_conn(emulator)
    data = airflow_db / "data"
    original = (data / "accounts.csv").read_text()
    try:  # one Account row without its required Name fails the parent: no Contact may be loaded
        (data / "accounts.csv").write_text(original.replace("Customer 03 Ltd", "", 1))
        run = run_example("example_sfbulk_parent_child")
    finally:
        (data / "accounts.csv").write_text(original)
    assert "failed" in run.state
    assert run.task_state("upsert_accounts") == "failed"
    assert run.task_state("upsert_contacts") == "upstream_failed"
    assert len(emulator.records("Account")) == 19
    assert emulator.records("Contact") == []


def test_load_with_failures_reports_and_retries_only_retryable_rows(
    emulator: EmulatorServer, salesforce_conn, run_example
):
    salesforce_conn(emulator)
    emulator.set_faults(lock_row_rate=0.3, seed=7)  # some valid rows fail UNABLE_TO_LOCK_ROW first
    try:
        run = run_example("example_sfbulk_load_with_failures")
    finally:
        emulator.reset_faults()
    assert run.state == "success"
    load = run.xcom("load_invoices")
    report = run.xcom("report_failed_rows")
    invalid = {"INV-2024-0005", "INV-2024-0011", "INV-2024-0017", "INV-2024-0023"}
    assert load["retry_rounds"] >= 1
    assert len(load["job_ids"]) == 1 + load["retry_rounds"]
    # whatever the lock faults did, the final outcome is exact: every valid row loaded once, the four
    # invalid ones reported with their validation errors (a row still locked after 3 retries is reported too)
    still_locked = set(report["rejected_keys"]) - invalid
    assert invalid <= set(report["rejected_keys"])
    assert report["by_error"].get("UNABLE_TO_LOCK_ROW", 0) == len(still_locked)
    assert report["by_error"]["REQUIRED_FIELD_MISSING"] == 1
    assert report["by_error"]["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"] == 1
    assert report["by_error"]["INVALID_EMAIL_ADDRESS"] == 1
    assert report["rejected"] == load["records_failed"] == 4 + len(still_locked)
    stored = {r["Invoice_Number__c"] for r in emulator.records("Invoice__c")}
    all_keys = {row["Invoice_Number__c"] for row in _csv_rows(EXAMPLES / "data" / "invoices.csv")}
    assert stored == all_keys - invalid - still_locked
    assert load["records_successful"] == len(stored)
    for uri in report["failed_files"]:
        assert uri.startswith("file://")
    assert run.task_state("reload_fixed_rows") == "skipped"  # no fixed file given


def test_load_with_failures_fix_and_reload(emulator: EmulatorServer, salesforce_conn, run_example, tmp_path):
    salesforce_conn(emulator)
    first = run_example("example_sfbulk_load_with_failures")
    assert first.state == "success"
    to_fix = first.xcom("report_failed_rows")["to_fix_and_reload"]
    text = ObjectStoragePath(to_fix).read_text(encoding="utf-8")
    rows = _csv_rows_text(text)
    assert [row["Invoice_Number__c"] for row in rows] == [
        "INV-2024-0005", "INV-2024-0011", "INV-2024-0017", "INV-2024-0023"
    ]
    assert list(rows[0]) == list(_csv_rows(EXAMPLES / "data" / "invoices.csv")[0])  # the source's columns
    fixed = (
        text.replace("Invoice 5,,", "Invoice 5,10.00,")
        .replace("Overdue", "Sent")
        .replace("not-an-email", "billing17@customer.example")
        .replace('"12,50"', "12.50")
    )
    fixed_file = tmp_path / "invoices-fixed.csv"
    fixed_file.write_text(fixed, encoding="utf-8")
    second = run_example("example_sfbulk_load_with_failures", fixed_rows_file=str(fixed_file))
    assert second.state == "success"
    reload = second.xcom("reload_fixed_rows")
    assert (reload["records_sent"], reload["records_successful"], reload["records_failed"]) == (4, 4, 0)
    stored = {r["Invoice_Number__c"] for r in emulator.records("Invoice__c")}
    all_keys = {row["Invoice_Number__c"] for row in _csv_rows(EXAMPLES / "data" / "invoices.csv")}
    assert stored == all_keys
    assert len(emulator.records("Invoice__c")) == len(all_keys)  # upserts: nothing doubled


def test_extract_to_storage(emulator: EmulatorServer, salesforce_conn, run_example, tmp_path):
    salesforce_conn(emulator)
    emulator.seed("Account", 20)
    emulator.seed("Opportunity", 1200)
    doomed = emulator.records("Opportunity")[:3]
    delete_csv = ("Id\n" + "".join(r["Id"] + "\n" for r in doomed)).encode()
    ApiSession(emulator).run_ingest("Opportunity", "delete", delete_csv)
    run = run_example("example_sfbulk_extract_to_storage")
    assert run.state == "success"
    extract = run.xcom("extract_opportunities")
    loaded = run.xcom("load_to_warehouse")
    assert extract["record_count"] == 1200  # queryAll: deleted rows included
    assert loaded == {"rows": 1200, "deleted_rows": 3, "files": 3, "results_path": extract["results_path"]}
    assert extract["results_path"].startswith(f"file://{tmp_path}/results/example_sfbulk_extract_to_storage/")
    ids: set[str] = set()
    for uri in extract["files"]:
        ids |= {row["Id"] for row in _csv_rows(Path(uri.removeprefix("file://")))}
    assert ids == {r["Id"] for r in emulator.records("Opportunity", include_deleted=True)}
    manifest = json.loads(Path(extract["manifest"].removeprefix("file://")).read_text())
    assert manifest


def test_delete_by_extract(emulator: EmulatorServer, salesforce_conn, run_example):
    salesforce_conn(emulator)
    emulator.seed("Account", 10)
    emulator.seed("Opportunity", 300)
    before = emulator.records("Opportunity")
    doomed = {r["Id"] for r in before if r["StageName"] == "Closed Lost"}
    assert doomed
    run = run_example("example_sfbulk_delete_by_extract")
    assert run.state == "success"
    assert run.xcom("delete_closed_lost")["records_successful"] == len(doomed)
    after = emulator.records("Opportunity")
    assert {r["Id"] for r in after} == {r["Id"] for r in before} - doomed
    deleted = {
        r["Id"] for r in emulator.records("Opportunity", include_deleted=True) if r["IsDeleted"] == "true"
    }
    assert deleted == doomed

    # nothing left to delete: the delete is skipped, the run still succeeds
    run = run_example("example_sfbulk_delete_by_extract")
    assert run.state == "success"
    assert run.task_state("delete_closed_lost") == "skipped"


def test_job_watch(emulator: EmulatorServer, salesforce_conn, run_example):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    api.run_ingest("Account", "insert", b"Name\nA\n")
    forgotten = api.create_ingest("Account", "insert")["id"]  # data never closed: stays Open

    run = run_example("example_sfbulk_job_watch")  # default thresholds: nothing is an hour old
    assert run.state == "success"
    summary = run.xcom("list_bulk_jobs")
    assert summary["total"] == 2
    assert summary["problems"] == 0

    run = run_example("example_sfbulk_job_watch", stale_open_minutes=0, abort_own_stale_open=False)
    assert "failed" in run.state  # the problem fails the task: Airflow's alerting takes over
    summary = run.xcom("list_bulk_jobs")
    assert summary["stale_open"] == 1
    assert summary["problem_job_ids"] == [forgotten]
    assert api.get(f"/jobs/ingest/{forgotten}").json()["state"] == "Open"

    run = run_example("example_sfbulk_job_watch", stale_open_minutes=0)
    assert run.state == "success"
    summary = run.xcom("list_bulk_jobs")
    assert summary["aborted"] == [forgotten]
    assert summary["problems"] == 0
    assert api.get(f"/jobs/ingest/{forgotten}").json()["state"] == "Aborted"
    lines = [json.loads(line) for line in Path(summary["jobs_file"].removeprefix("file://")).read_text()
             .splitlines()]
    assert {line["id"] for line in lines} >= {forgotten}
