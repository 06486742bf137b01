"""Before Airflow 3.3 a user's kill only cancels the trigger, as a triggerer restart does: the trigger
aborts its jobs only when the task is no longer deferred (the way Airflow's own providers decide).

On Airflow 2.11 the task instance's state is read from the metadata database, so these tests create a
real DAG run and task instance there. On 3.3+ the triggerer calls ``on_kill`` itself (tested with the
trigger), so a cancelled trigger never aborts anything.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger
from airflow_provider_sfbulk.triggers.task_state import TRIGGER_ON_KILL

pytestmark = pytest.mark.dag

_AIRFLOW = tuple(int(part) for part in __import__("airflow").__version__.split(".")[:2])

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _running_job(server: Any) -> str:
    api = ApiSession(server)
    job = api.create_ingest("Account", "insert")
    api.upload(job["id"], b"Name\n" + b"".join(f"K{i}\n".encode() for i in range(40)))
    api.close(job["id"])
    return job["id"]


def _state(server: Any, job_id: str) -> str:
    return ApiSession(server).get(f"/jobs/ingest/{job_id}").json()["state"]


def _task_instance(dag_id: str, state: str) -> Any:
    """A DAG run and the task instance of its one task, stored with ``state`` (Airflow 2.11 API)."""
    from airflow.models.dag import DAG
    from airflow.operators.empty import EmptyOperator
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    dag = DAG(dag_id, start_date=START, schedule=None)
    EmptyOperator(task_id="load", dag=dag)
    dag.sync_to_db()
    run = dag.create_dagrun(
        run_id=f"{dag_id}-run", state=DagRunState.RUNNING, execution_date=START,
        run_type=DagRunType.MANUAL, data_interval=(START, START),
    )
    with create_session() as session:
        ti = run.get_task_instance("load", session=session)
        ti.state = state
        session.merge(ti)
    return run.get_task_instance("load")


async def _cancel_after_first_poll(trigger: SalesforceBulkJobTrigger) -> None:
    async def consume() -> None:
        async for _ in trigger.run():
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.6)  # past the first poll: the wait is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.skipif(
    _AIRFLOW >= (3, 0),
    reason="the database path is Airflow 2's (3.0-3.2 ask the API server, which dag.test() cannot serve to "
    "a trigger run by hand; 3.3+ calls on_kill)",
)
@pytest.mark.parametrize(("ti_state", "expected"), [("failed", "Aborted"), ("deferred", "InProgress")])
def test_a_cancelled_trigger_aborts_only_when_the_task_is_no_longer_deferred(
    emulator_factory, salesforce_conn, airflow_db, ti_state, expected
):
    server = emulator_factory(batch_size=1, batch_delay=0.3)
    salesforce_conn(server)
    job_id = _running_job(server)
    trigger = SalesforceBulkJobTrigger(conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.2)
    trigger.task_instance = _task_instance(f"trigger_cancel_{ti_state}", ti_state)
    asyncio.run(_cancel_after_first_poll(trigger))
    state = _state(server, job_id)
    assert state == expected if expected == "Aborted" else state in ("InProgress", "UploadComplete")


@pytest.mark.skipif(not TRIGGER_ON_KILL, reason="before Airflow 3.3 the state check decides")
def test_from_airflow_3_3_a_cancelled_trigger_leaves_aborting_to_on_kill(emulator_factory, salesforce_conn):
    server = emulator_factory(batch_size=1, batch_delay=0.3)
    salesforce_conn(server)
    job_id = _running_job(server)
    trigger = SalesforceBulkJobTrigger(conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.2)
    asyncio.run(_cancel_after_first_poll(trigger))
    assert _state(server, job_id) in ("InProgress", "UploadComplete")  # a restart: the job goes on
