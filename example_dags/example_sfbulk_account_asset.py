"""Data-aware scheduling: a DAG that runs whenever a new extract of Accounts lands.

What to copy: ``asset=True`` on :class:`~airflow_provider_sfbulk.operators.query.SalesforceBulkQueryOperator`
declares an Airflow Asset (a Dataset on Airflow 2) for the extract's results location, here the folder
that holds every interval's extract: ``<results base>/example_sfbulk_account_extract/extract_accounts``
(``extract_accounts.results_asset``). Each successful extract records an asset event whose ``extra``
says where the new files are and how many records they hold::

    {"job_id": "750...", "record_count": 42, "file_count": 1, "columns": [...], "manifest": uri,
     "results_path": uri, "interval": {"field": "SystemModstamp", "start": ..., "end": ..., "soql": ...}}

``example_sfbulk_on_account_extract`` is scheduled on that asset: Airflow starts it after each new
extract. Its task reads the events that triggered it (or, run by hand, the latest event of the asset)
and counts the rows of the extract from the files the manifest lists. Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task

from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))

with DAG(
    dag_id="example_sfbulk_account_extract",
    description="Daily incremental extract of Accounts, announced as an asset event",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["salesforce", "bulk-api", "example"],
) as producer:
    extract_accounts = SalesforceBulkQueryOperator(
        task_id="extract_accounts",
        soql="SELECT Id, Name, Industry FROM Account",
        incremental=True,
        asset=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

ACCOUNT_EXTRACTS = extract_accounts.results_asset


def _events(context: dict[str, Any]) -> list[Any]:
    """The asset events that triggered this run; run by hand, the asset's latest event."""
    triggering = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
    events = [event for per_asset in triggering.values() for event in per_asset]
    if not events:
        events = list(context["inlet_events"][ACCOUNT_EXTRACTS])[-1:]
    return events


with DAG(
    dag_id="example_sfbulk_on_account_extract",
    description="Runs after each new extract of Accounts",
    doc_md=__doc__,
    schedule=[ACCOUNT_EXTRACTS],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["salesforce", "bulk-api", "example"],
) as consumer:

    @task(inlets=[ACCOUNT_EXTRACTS])
    def read_new_extract(**context: Any) -> list[dict[str, Any]]:
        """Count the rows of each new extract from the files its manifest lists."""
        seen = []
        for event in _events(context):
            extra = dict(event.extra or {})
            manifest_path = ObjectStoragePath(extra["manifest"])
            manifest = json.loads(manifest_path.read_text())
            rows = 0
            for item in manifest["files"]:
                with (manifest_path.parent / item["file"]).open("rb") as handle:
                    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
                    rows += sum(1 for _ in csv.DictReader(text))
            where, expected = extra["results_path"], extra["record_count"]
            if rows != expected:
                raise ValueError(f"{where}: {rows} rows, the event says {expected}")
            seen.append({"results_path": where, "rows": rows, "interval": extra.get("interval")})
        print(f"new Account extracts: {seen}")
        return seen

    read_new_extract()
