"""Load with failures: tolerate bad rows, report them downstream, retry only the retryable ones.

What to copy: an ingest that does not stop the pipeline for a handful of bad rows, and a report that
someone can act on.

* ``load_invoices`` upserts invoices by ``Invoice_Number__c``. Rows Salesforce rejects (a missing
  required amount, a status outside the restricted picklist, a malformed e-mail, text in a number) are
  collected in ``failedResults`` files; up to ``max_failed_records`` of them do not fail the task.
* Rows that failed for a passing reason (``UNABLE_TO_LOCK_ROW``, ``API_TEMPORARILY_UNAVAILABLE``) are
  loaded again by the operator itself: ``retry_failed_records=3`` sends **only those rows** (original
  columns) in a new job, up to three times, and ``lock_retry`` falls back to one job at a time for lock
  contention. The XCom reflects the merged outcome (``retry_rounds``, every job id).
* ``report_failed_rows`` receives the XCom (paths, never records), streams the failed-rows files from
  object storage and summarises them by error code: hand that to a data-quality channel or a ticket.
* **Fix and reload.** Beside the failed-rows files (which keep Salesforce's ``sf__Id`` and ``sf__Error``)
  the operator writes the same rows in the source's own columns and dialect:
  ``failed_rows_to_reload`` in the XCom. Fix the values in that file, then trigger this DAG with
  ``{"fixed_rows_file": "<path or URI of the fixed file>"}``: ``reload_fixed_rows`` loads exactly that
  file (an upsert, so loading it twice does no harm). Without the parameter it is skipped.

Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

DATA = Path(__file__).parent / "data"
POLL_SECONDS = float(os.environ.get("SFBULK_EXAMPLE_POLL_SECONDS", "15"))

with DAG(
    dag_id="example_sfbulk_load_with_failures",
    description="Upsert invoices, report rejected rows, retry only retryable failures",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["salesforce", "bulk-api", "example"],
    params={
        "fixed_rows_file": Param(
            None,
            type=["null", "string"],
            description="A corrected failed_rows_to_reload file to load (path or URI); empty: skip",
        )
    },
) as dag:
    load_invoices = SalesforceBulkIngestOperator(
        task_id="load_invoices",
        object_name="Invoice__c",
        operation="upsert",
        external_id_field="Invoice_Number__c",
        source=str(DATA / "invoices.csv"),
        max_failed_records=10,
        retry_failed_records=3,
        lock_retry=True,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    @task
    def report_failed_rows(load: dict[str, Any]) -> dict[str, Any]:
        """Summarise the rows Salesforce finally rejected, by error code (reads files, not XCom rows)."""
        by_code: Counter[str] = Counter()
        rejected: list[dict[str, str]] = []
        for uri in load["failed_results"]:
            text = ObjectStoragePath(uri).read_text(encoding="utf-8")
            for row in csv.DictReader(io.StringIO(text)):
                code = (row.get("sf__Error") or "").split(":", 1)[0] or "UNKNOWN"
                by_code[code] += 1
                rejected.append({"key": row.get("Invoice_Number__c", ""), "error": code})
        for item in rejected:
            print(f"rejected {item['key']}: {item['error']}")
        summary = {
            "loaded": load["records_successful"],
            "rejected": load["records_failed"],
            "by_error": dict(sorted(by_code.items())),
            "rejected_keys": sorted(item["key"] for item in rejected),
            "retry_rounds": load["retry_rounds"],
            "jobs": len(load["job_ids"]),
            "failed_files": load["failed_results"],
            "to_fix_and_reload": load["failed_rows_to_reload"],
        }
        if load["failed_rows_to_reload"]:
            print(
                f"Fix the rows in {load['failed_rows_to_reload']} and trigger this DAG with "
                '{"fixed_rows_file": "<the fixed file>"} to load them'
            )
        if sum(by_code.values()) != load["records_failed"]:
            raise ValueError(f"the failed-rows files hold {sum(by_code.values())} rows, XCom says {summary}")
        return summary

    @task.short_circuit
    def fixed_rows_given(params: dict[str, Any] | None = None) -> bool:
        """Go on only when the run names a fixed file to load."""
        return bool((params or {}).get("fixed_rows_file"))

    reload_fixed_rows = SalesforceBulkIngestOperator(
        task_id="reload_fixed_rows",
        object_name="Invoice__c",
        operation="upsert",
        external_id_field="Invoice_Number__c",
        source="{{ params.fixed_rows_file }}",
        deferrable=True,
        poll_interval=POLL_SECONDS,
        timeout=3600,
    )

    report_failed_rows(load_invoices.output) >> fixed_rows_given() >> reload_fixed_rows
