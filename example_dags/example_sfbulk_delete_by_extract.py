"""Delete by extract: query the Ids to remove, then feed that file to a delete job.

What to copy: the Ids never pass through XCom or the worker's memory. ``find_closed_lost`` writes one
CSV with a single ``Id`` column (``output_mode="single"``) to object storage; ``pick_ids_file`` hands its
URI on (or skips the delete when nothing matched); ``delete_closed_lost`` streams that file into a
``delete`` ingest job. Deleted records go to the Recycle Bin; ``operation="hardDelete"`` (with
``allow_hard_delete=True`` and the "Bulk API Hard Delete" permission) would bypass it.

Deleting what a query found a moment ago is safe against retries: a row deleted by an earlier try fails
with ``ENTITY_IS_DELETED`` at worst, which ``max_failed_records`` could tolerate; here the task keeps
the strict default so any surprise stops the DAG. Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, AirflowSkipException, task

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))

with DAG(
    dag_id="example_sfbulk_delete_by_extract",
    description="Find closed-lost Opportunities with a query job, delete them with an ingest job",
    doc_md=__doc__,
    schedule="@weekly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["salesforce", "bulk-api", "example"],
) as dag:
    find_closed_lost = SalesforceBulkQueryOperator(
        task_id="find_closed_lost",
        soql="SELECT Id FROM Opportunity WHERE StageName = 'Closed Lost'",
        output_mode="single",
        output_file_name="ids_to_delete",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def pick_ids_file(extract: dict[str, Any]) -> str:
        """The one CSV of Ids, or skip the delete when the query found nothing."""
        if not extract["record_count"]:
            raise AirflowSkipException("no closed-lost Opportunity to delete")
        (ids_file,) = extract["files"]
        print(f"deleting {extract['record_count']} Opportunities listed in {ids_file}")
        return ids_file

    delete_closed_lost = SalesforceBulkIngestOperator(
        task_id="delete_closed_lost",
        object_name="Opportunity",
        operation="delete",
        source=pick_ids_file(find_closed_lost.output),
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )
