"""Extract to object storage: a ``queryAll`` extract whose files a downstream load picks up.

What to copy: :class:`~airflow_provider_sfbulk.operators.query.SalesforceBulkQueryOperator` streams every
result page from Salesforce straight to object storage (``s3://``, ``gs://``, ``file://`` ...; set
``[salesforce_bulk] results_base_path`` or ``results_path``) and puts only **paths and counts** in XCom:

    {"job_id": "750...", "files": [uri, ...], "record_count": 1200, "columns": [...],
     "manifest": uri, "results_path": uri}

``queryAll`` also returns deleted and archived rows (``IsDeleted = true``), which a warehouse needs to
apply soft deletes. Pages of at most ``max_records_per_page`` rows land as separate CSV files (each with
its header), so a warehouse ``COPY INTO`` (pattern ``*.csv`` under ``results_path``) or an external
table reads them in parallel; ``manifest.json`` beside them lists each page with its row count and
SHA-256.

``load_to_warehouse`` stands in for that load: it reads the files named in the XCom, counts the rows of
each with a CSV reader (quoted newlines are one row) and checks the total against the job's count.
Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, task

from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))

with DAG(
    dag_id="example_sfbulk_extract_to_storage",
    description="queryAll Opportunities to object storage, then load the files",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["salesforce", "bulk-api", "example"],
) as dag:
    extract_opportunities = SalesforceBulkQueryOperator(
        task_id="extract_opportunities",
        soql="SELECT Id, Name, StageName, Amount, CloseDate, AccountId, IsDeleted FROM Opportunity",
        operation="queryAll",
        max_records_per_page=500,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def load_to_warehouse(extract: dict[str, Any]) -> dict[str, Any]:
        """Read every extracted file (a warehouse COPY would take the same URIs) and count its rows."""
        rows_per_file: dict[str, int] = {}
        deleted = 0
        for uri in extract["files"]:
            path = ObjectStoragePath(uri)
            with path.open("rb") as handle:
                reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
                count = 0
                for row in reader:
                    count += 1
                    deleted += row["IsDeleted"] == "true"
            rows_per_file[path.name] = count
        total = sum(rows_per_file.values())
        if total != extract["record_count"]:
            raise ValueError(f"read {total} rows from the files, the job reported {extract['record_count']}")
        print(f"loaded {total} rows ({deleted} deleted) from {len(rows_per_file)} files: {rows_per_file}")
        return {"rows": total, "deleted_rows": deleted, "files": len(rows_per_file),
                "results_path": extract["results_path"]}

    load_to_warehouse(extract_opportunities.output)
