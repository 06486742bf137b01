"""The DAGs of the kill and restart tests (tests/e2e/test_kills_e2e.py): loads and one extract.

Every DAG defers (the wait runs in the triggerer), polls every second, and retries up to 3 times after
2 seconds, so that a task whose worker was killed is retried soon after the scheduler's heartbeat timeout.
A load's source is the run's ``conf["source"]``; its 60 rows go to 3 jobs of 20, each created, uploaded
and closed in its own requests (no multipart create).

The DAGs of the worker-kill scenarios run at the same time; each talks to the emulator with its own API
version (connection ``sfbulk_v<NN>``), so that the emulator's ``hold`` rule of one scenario, which matches
on the request path, never stops another scenario's task.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

DEFAULTS = {"retries": 3, "retry_delay": timedelta(seconds=2)}
WAIT = {"deferrable": True, "poll_interval": 1.0, "max_poll_interval": 2.0, "timeout": 900}
#: API versions of the loads that run side by side (the default connection's is 60.0).
LOAD_VERSIONS = ("58", "59", "61", "62")
QUERY_VERSION = "63"


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False,
               default_args=DEFAULTS, max_active_runs=1, tags=["e2e"])


LOADS = [("", "salesforce_bulk_default")] + [(f"_v{v}", f"sfbulk_v{v}") for v in LOAD_VERSIONS]
for suffix, conn_id in LOADS:
    with _dag(f"sfbulk_kill_ingest{suffix}"):
        SalesforceBulkIngestOperator(
            task_id="load",
            salesforce_conn_id=conn_id,
            object_name="Account",
            operation="insert",
            source="{{ dag_run.conf['source'] }}",
            max_records_per_job=20,
            multipart_max_bytes=0,
            **WAIT,
        )

with _dag(f"sfbulk_kill_query_v{QUERY_VERSION}"):
    SalesforceBulkQueryOperator(
        task_id="extract",
        salesforce_conn_id=f"sfbulk_v{QUERY_VERSION}",
        soql="SELECT Id, Name FROM Opportunity",
        max_records_per_page=100,
        **WAIT,
    )
