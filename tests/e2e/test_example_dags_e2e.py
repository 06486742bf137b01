"""End to end on a real Airflow 3 stack: the example DAGs triggered through the REST API, scheduled by the
scheduler, run by the LocalExecutor, waiting in the triggerer, against the emulator process.

Asserts for each run: it succeeded; every ingest and query task went through ``deferred`` (its worker
slot was freed while Salesforce worked); the records in the emulator and the files in the results path
are exactly what the DAG's inputs imply. Phases run one after another where they would disturb each
other (row lock faults are switched on for the failure example only).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
BULK_TASKS = {
    "example_sfbulk_parent_child": ["upsert_accounts", "upsert_contacts"],
    "example_sfbulk_load_with_failures": ["load_invoices"],
    "example_sfbulk_extract_to_storage": ["extract_opportunities"],
    "example_sfbulk_delete_by_extract": ["find_closed_lost", "delete_closed_lost"],
}
INVALID_INVOICES = {"INV-2024-0005", "INV-2024-0011", "INV-2024-0017", "INV-2024-0023"}


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


def _run_and_check(e2e: Any, runs: dict[str, str], timeout: float) -> None:
    stack = e2e.stack
    states = stack.wait_for_runs(runs, timeout)
    failed = {dag_id: state for dag_id, state in states.items() if state != "success"}
    assert not failed, f"runs failed: {failed}\n{stack.diagnostics(runs)}"
    for dag_id, run_id in runs.items():
        task_states = stack.task_states(dag_id, run_id)
        events = stack.task_events(dag_id, run_id)
        for task_id in BULK_TASKS.get(dag_id, []):
            assert task_states[task_id] == "success", (dag_id, task_states)
            assert ("deferred", task_id) in events, (
                f"{dag_id}.{task_id} never deferred; events: {events}\n{stack.diagnostics({dag_id: run_id})}"
            )


def test_example_dags_on_a_real_stack(e2e):
    stack = e2e.stack
    stack.wait_for_dags([*BULK_TASKS, "example_sfbulk_job_watch"])
    seeded = e2e.records("Opportunity")
    assert len(seeded) == 1200
    closed_lost = {r["Id"] for r in seeded if r["StageName"] == "Closed Lost"}
    assert closed_lost

    # Phase 1: three independent DAGs at once.
    runs = {dag_id: stack.trigger(dag_id) for dag_id in (
        "example_sfbulk_parent_child", "example_sfbulk_extract_to_storage",
        "example_sfbulk_delete_by_extract")}
    _run_and_check(e2e, runs, timeout=150)

    accounts = {r["External_Id__c"]: r for r in e2e.records("Account")
                if r["External_Id__c"].startswith("CUST-")}
    expected_accounts = _csv(EXAMPLES / "data" / "accounts.csv")
    assert {k: accounts[k]["Name"] for k in accounts} == {
        r["External_Id__c"]: r["Name"] for r in expected_accounts}
    contacts = {c["External_Id__c"]: c for c in e2e.records("Contact")}
    expected_contacts = _csv(EXAMPLES / "data" / "contacts.csv")
    assert set(contacts) == {row["External_Id__c"] for row in expected_contacts}
    for row in expected_contacts:
        assert contacts[row["External_Id__c"]]["AccountId"] == accounts[row["Account.External_Id__c"]]["Id"]
        assert contacts[row["External_Id__c"]]["Email"] == row["Email"]

    # the load's own result files: one success row per Account, each with its Salesforce Id
    run_id = runs["example_sfbulk_parent_child"]
    accounts_load = stack.xcom("example_sfbulk_parent_child", run_id, "upsert_accounts")
    assert accounts_load["failed_results"] == []
    successes = [row for uri in accounts_load["successful_results"] for row in _csv(_local(uri))]
    assert {row["sf__Id"]: row["External_Id__c"] for row in successes} == {
        r["Id"]: key for key, r in accounts.items()
    }

    # delete by extract: exactly the closed-lost Opportunities are gone (in the Recycle Bin)
    remaining = {r["Id"] for r in e2e.records("Opportunity")}
    assert remaining == {r["Id"] for r in seeded} - closed_lost
    run_id = runs["example_sfbulk_delete_by_extract"]
    ids_extract = stack.xcom("example_sfbulk_delete_by_extract", run_id, "find_closed_lost")
    (ids_file,) = ids_extract["files"]
    assert {row["Id"] for row in _csv(_local(ids_file))} == closed_lost
    assert str(_local(ids_file)).startswith(str(e2e.results_base))
    delete = stack.xcom("example_sfbulk_delete_by_extract", run_id, "delete_closed_lost")
    assert delete["records_successful"] == len(closed_lost)
    assert delete["records_failed"] == 0

    # extract to storage: queryAll sees all 1200 (deleted ones too), page files hold each row once
    run_id = runs["example_sfbulk_extract_to_storage"]
    extract = stack.xcom("example_sfbulk_extract_to_storage", run_id, "extract_opportunities")
    loaded = stack.xcom("example_sfbulk_extract_to_storage", run_id, "load_to_warehouse")
    assert extract["record_count"] == 1200
    assert loaded["rows"] == 1200
    assert loaded["files"] == len(extract["files"]) == 3
    extracted: list[str] = []
    for uri in extract["files"]:
        extracted += [row["Id"] for row in _csv(_local(uri))]
    assert sorted(extracted) == sorted(r["Id"] for r in seeded)
    manifest = json.loads(_local(extract["manifest"]).read_text())
    assert manifest

    # Phase 2: the failure example, with row lock contention switched on for it alone.
    e2e.emulator_api("PUT", "/__emulator/faults", json={"lock_row_rate": 0.3, "seed": 7})
    try:
        runs = {"example_sfbulk_load_with_failures": stack.trigger("example_sfbulk_load_with_failures")}
        _run_and_check(e2e, runs, timeout=120)
    finally:
        e2e.emulator_api("DELETE", "/__emulator/faults")
    run_id = runs["example_sfbulk_load_with_failures"]
    load = stack.xcom("example_sfbulk_load_with_failures", run_id, "load_invoices")
    report = stack.xcom("example_sfbulk_load_with_failures", run_id, "report_failed_rows")
    assert load["retry_rounds"] >= 1
    still_locked = set(report["rejected_keys"]) - INVALID_INVOICES
    assert set(report["rejected_keys"]) >= INVALID_INVOICES
    assert report["by_error"].get("UNABLE_TO_LOCK_ROW", 0) == len(still_locked)
    all_invoices = {row["Invoice_Number__c"] for row in _csv(EXAMPLES / "data" / "invoices.csv")}
    stored = {r["Invoice_Number__c"] for r in e2e.records("Invoice__c")}
    assert stored == all_invoices - INVALID_INVOICES - still_locked
    assert load["records_successful"] == len(stored)
    failed_rows = [row for uri in load["failed_results"] for row in _csv(_local(uri))]
    assert {row["Invoice_Number__c"] for row in failed_rows} == INVALID_INVOICES | still_locked

    # Phase 3: the job watch finds a forgotten Open job of the connection's user and aborts it.
    from airflow_provider_sfbulk.emulator.config import EmulatorConfig
    from airflow_provider_sfbulk.emulator.testing import password_token

    token = password_token(e2e.emulator.base_url, EmulatorConfig())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    forgotten = e2e.emulator_api(
        "POST", "/services/data/v60.0/jobs/ingest", headers=headers,
        json={"object": "Account", "operation": "insert"},
    )["id"]
    all_jobs = sum(
        len(e2e.emulator_api("GET", f"/services/data/v60.0/jobs/{kind}", headers=headers)["records"])
        for kind in ("ingest", "query")
    )
    runs = {"example_sfbulk_job_watch": stack.trigger("example_sfbulk_job_watch", {"stale_open_minutes": 0})}
    _run_and_check(e2e, runs, timeout=90)
    summary = stack.xcom("example_sfbulk_job_watch", runs["example_sfbulk_job_watch"], "list_bulk_jobs")
    assert summary["aborted"] == [forgotten]
    assert summary["problems"] == 0
    assert summary["total"] == all_jobs
    job = e2e.emulator_api("GET", f"/services/data/v60.0/jobs/ingest/{forgotten}", headers=headers)
    assert job["state"] == "Aborted"
    lines = [json.loads(line) for line in _local(summary["jobs_file"]).read_text().splitlines()]
    assert len(lines) == all_jobs
