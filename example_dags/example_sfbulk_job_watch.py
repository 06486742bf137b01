"""Bulk job watch: list every Bulk API job of the org hourly and fail (alert) on stuck or failed jobs.

What to copy: :class:`~airflow_provider_sfbulk.operators.jobs.SalesforceBulkJobListOperator` reads every
page of the ingest and query job lists (following ``nextRecordsUrl``), writes them to object storage
(``jobs.jsonl``, one job per line, with its age and problem) and pushes counts by state plus:

* ``stale_open``: jobs still ``Open`` after ``stale_open_minutes``: someone uploaded data and never sent
  ``UploadComplete``, so Salesforce will never process it;
* ``stale_running``: ``UploadComplete``/``InProgress`` for longer than ``stuck_minutes``;
* ``failed_recently``: jobs that went ``Failed`` within ``failed_within_hours``;
* ``unknown_sources``: jobs created by users other than the connection's own user and those listed in
  ``expected_creator_ids`` (user ids, 15 or 18 characters): a tool or a person loading data nobody
  planned for. Set the param to ``null`` to stop checking creators.

When any problem remains the task fails, and Airflow's usual alerting takes over: here
``on_failure_callback`` (swap ``log_problems`` for a Slack, PagerDuty or e-mail notifier). With
``abort_own_stale_open`` it first aborts stale ``Open`` jobs created by the connection's own user (the
integration user of this Airflow); other users' jobs are only reported. Every threshold is a DAG param,
so a manual run can use other values (Trigger DAG w/ config). Connection: ``salesforce_bulk_default``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_sfbulk.operators.jobs import SalesforceBulkJobListOperator

log = logging.getLogger(__name__)


def log_problems(context: Any) -> None:
    """Failure callback: what an alert would carry (counts and the job list file)."""
    summary = context["ti"].xcom_pull(task_ids="list_bulk_jobs") or {}
    log.error(
        "Salesforce Bulk jobs need attention: %s stale Open, %s stuck, %s Failed recently, %s from users "
        "not expected (%s); jobs %s; list %s",
        summary.get("stale_open"), summary.get("stale_running"), summary.get("failed_recently"),
        summary.get("unknown_sources"), summary.get("unknown_creators"), summary.get("problem_job_ids"),
        summary.get("jobs_file"),
    )


with DAG(
    dag_id="example_sfbulk_job_watch",
    description="Report stuck Open/running and recently Failed Bulk API jobs, and jobs of unexpected users",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "stale_open_minutes": Param(60, type="number", minimum=0),
        "stuck_minutes": Param(240, type="number", minimum=0),
        "failed_within_hours": Param(24, type="number", minimum=0),
        "abort_own_stale_open": Param(True, type="boolean"),
        # [] = only the connection's own user; add the ids of other integration users whose jobs are expected.
        "expected_creator_ids": Param([], type=["null", "array"]),
    },
    tags=["salesforce", "bulk-api", "example", "monitoring"],
) as dag:
    SalesforceBulkJobListOperator(
        task_id="list_bulk_jobs",
        stale_open_after="{{ params.stale_open_minutes * 60 }}",
        stale_running_after="{{ params.stuck_minutes * 60 }}",
        failed_within="{{ params.failed_within_hours * 3600 }}",
        abort_stale_open="{{ params.abort_own_stale_open }}",
        expected_creators="{{ params.expected_creator_ids }}",
        fail_on_problems=True,
        on_failure_callback=log_problems,
    )
