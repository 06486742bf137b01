"""Nightly parent-then-child load: upsert Accounts by external id, then their Contacts.

What to copy: two :class:`~airflow_provider_sfbulk.operators.ingest.SalesforceBulkIngestOperator` tasks
that ``upsert`` by an external id field, so re-running the DAG (or a retried task) never creates
duplicates, and a child file that points at its parent with a relationship column
(``Account.External_Id__c``) instead of a Salesforce Id: the warehouse only knows its own keys.

The order is the point. Salesforce resolves ``Account.External_Id__c`` when it processes each Contact, so
every Account must exist by then. ``upsert_accounts`` succeeds only after its job reached ``JobComplete``
and its result files reconciled (successful + failed + unprocessed == rows sent) with no failed row (the
default ``max_failed_records=0``); ``accounts_reconciled`` re-checks that from the XCom, and
``upsert_contacts`` depends on it with the default ``all_success`` trigger rule. A failed Account row
therefore stops the Contacts instead of producing orphans or ``INVALID_FIELD`` lookups.

Both loads wait in the triggerer (``deferrable=True``): no worker slot is held while Salesforce works.
In production point ``source`` at object storage (``s3://bucket/crm/{{ ds }}/accounts.csv``); here the
files ship beside the DAG. Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

DATA = Path(__file__).parent / "data"
#: First pause between job checks; the demo and tests shorten it through the environment.
POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))

with DAG(
    dag_id="example_sfbulk_parent_child",
    description="Upsert Accounts, then Contacts that reference them by external id",
    doc_md=__doc__,
    schedule="0 2 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["salesforce", "bulk-api", "example"],
) as dag:
    upsert_accounts = SalesforceBulkIngestOperator(
        task_id="upsert_accounts",
        object_name="Account",
        operation="upsert",
        external_id_field="External_Id__c",
        source=str(DATA / "accounts.csv"),
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def accounts_reconciled(load: dict[str, Any]) -> dict[str, Any]:
        """Refuse to go on unless every Account row was loaded (the operator already enforces it)."""
        loaded = load["records_successful"]
        if load["records_failed"] or load["records_unprocessed"] or loaded != load["records_sent"]:
            raise ValueError(f"Accounts not fully loaded, not loading Contacts: {load}")
        return {"accounts": loaded, "jobs": load["job_ids"]}

    upsert_contacts = SalesforceBulkIngestOperator(
        task_id="upsert_contacts",
        object_name="Contact",
        operation="upsert",
        external_id_field="External_Id__c",
        source=str(DATA / "contacts.csv"),
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    accounts_reconciled(upsert_accounts.output) >> upsert_contacts
