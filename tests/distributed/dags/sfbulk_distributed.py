"""DAGs of the distributed suite (tests/distributed): loads and an extract whose sources and results live
on S3, with one retry each, so that a killed worker's task is retried on the other one."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

DEFAULTS = {"retries": 1, "retry_delay": timedelta(seconds=2)}
ROWS_PER_JOB = 100

with DAG("dist_load_deferred", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
         default_args=DEFAULTS, params={"source": ""}):
    # Ten jobs at once, waiting in the triggerers.
    SalesforceBulkIngestOperator(
        task_id="load", object_name="Account", operation="insert", source="{{ params.source }}",
        max_records_per_job=ROWS_PER_JOB, job_concurrency=10, deferrable=True, poll_interval=1,
        max_poll_interval=2,
    )

with DAG("dist_load_in_worker", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
         default_args=DEFAULTS, params={"source": ""}):
    # Three jobs at a time, polled in the worker: the task holds its worker for the whole load.
    SalesforceBulkIngestOperator(
        task_id="load", object_name="Account", operation="insert", source="{{ params.source }}",
        max_records_per_job=ROWS_PER_JOB, job_concurrency=3, deferrable=False, poll_interval=1,
        max_poll_interval=2,
    )

with DAG("dist_extract", start_date=datetime(2024, 1, 1), schedule=None, catchup=False,
         default_args=DEFAULTS):
    # Pages of 100 records downloaded four at a time straight to S3.
    SalesforceBulkQueryOperator(
        task_id="extract", soql="SELECT Id, Name, StageName, Amount FROM Opportunity",
        max_records_per_page=100, download_concurrency=4, deferrable=True, poll_interval=1,
        max_poll_interval=2,
    )
