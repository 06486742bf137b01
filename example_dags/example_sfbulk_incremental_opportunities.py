"""Incremental extract: each daily run reads the Opportunities changed in its data interval and merges them.

What to copy: :class:`~airflow_provider_sfbulk.operators.query.SalesforceBulkQueryOperator` with
``incremental=True`` takes the SOQL **without** a time filter and adds the run's data interval, half-open
and in UTC, on ``SystemModstamp`` (``incremental_field``). For the run of 2024-01-01 it sends::

    SELECT Id, Name, StageName, Amount, CloseDate, IsDeleted, SystemModstamp FROM Opportunity
    WHERE SystemModstamp >= 2024-01-01T00:00:00Z AND SystemModstamp < 2024-01-02T00:00:00Z

A record changed exactly at midnight belongs to the next day's run only, so consecutive runs neither miss
nor repeat a change. ``queryAll`` adds the records deleted in the interval (``IsDeleted`` = ``true``).
The files of an interval land in ``<results base>/<dag>/<task>/20240101T000000Z_20240102T000000Z/``
whatever the run: a re-run or a backfill (``airflow dags backfill``, ``catchup``) of that day replaces
them. See ``docs/incremental-extracts.md``.

``merge_into_table`` applies the extract to a local SQLite table by ``Id``: upsert the live records,
delete the deleted ones. Re-applying an interval gives the same table, so re-runs are safe. Point
``SFBULK_EXAMPLE_SQLITE`` at the database file (default ``$AIRFLOW_HOME/sfbulk-opportunities.sqlite``).
Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task

from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))
COLUMNS = ("Id", "Name", "StageName", "Amount", "CloseDate", "SystemModstamp")


def database_path() -> str:
    """Where the merged table lives."""
    default = os.path.join(os.environ.get("AIRFLOW_HOME", "."), "sfbulk-opportunities.sqlite")
    return os.environ.get("SFBULK_EXAMPLE_SQLITE", default)


with DAG(
    dag_id="example_sfbulk_incremental_opportunities",
    description="Daily incremental extract of Opportunities, merged into a local table by Id",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # intervals are merged in order
    tags=["salesforce", "bulk-api", "example"],
) as dag:
    extract_changes = SalesforceBulkQueryOperator(
        task_id="extract_changes",
        soql="SELECT Id, Name, StageName, Amount, CloseDate, IsDeleted, SystemModstamp FROM Opportunity",
        operation="queryAll",  # deleted records too
        incremental=True,
        incremental_field="SystemModstamp",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def merge_into_table(extract: dict[str, Any]) -> dict[str, int]:
        """Upsert the interval's live records and delete its deleted ones, by Id, in one transaction."""
        upserted = deleted = 0
        connection = sqlite3.connect(database_path())
        try:
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS opportunity (Id TEXT PRIMARY KEY, Name TEXT, StageName TEXT, "
                    "Amount TEXT, CloseDate TEXT, SystemModstamp TEXT)"
                )
                for uri in extract["files"]:
                    with ObjectStoragePath(uri).open("rb") as handle:
                        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
                        for row in reader:
                            if row["IsDeleted"] == "true":
                                connection.execute("DELETE FROM opportunity WHERE Id = ?", (row["Id"],))
                                deleted += 1
                                continue
                            connection.execute(
                                "INSERT INTO opportunity VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(Id) DO UPDATE "
                                "SET Name = excluded.Name, StageName = excluded.StageName, "
                                "Amount = excluded.Amount, CloseDate = excluded.CloseDate, "
                                "SystemModstamp = excluded.SystemModstamp",
                                tuple(row[column] for column in COLUMNS),
                            )
                            upserted += 1
        finally:
            connection.close()
        print(f"merged {upserted} changed and {deleted} deleted opportunities from {extract['results_path']}")
        return {"upserted": upserted, "deleted": deleted}

    merge_into_table(extract_changes.output)
