"""SalesforceBulkJobSensor: poke and deferrable paths against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowException, PokeReturnValue, TaskDeferred

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.sensors.job import SalesforceBulkJobSensor
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


def _context() -> dict[str, Any]:
    return {"ti": mock.Mock()}


def _finished_job(emulator, data: bytes = b"Name\nAcme\n") -> str:
    return ApiSession(emulator).run_ingest("Account", "insert", data)["id"]


def test_poke_done_returns_summaries(emulator, salesforce_conn):
    salesforce_conn(emulator)
    job_id = _finished_job(emulator)
    sensor = SalesforceBulkJobSensor(task_id="s", job_ids=[job_id])
    value = sensor.poke(_context())
    assert isinstance(value, PokeReturnValue)
    assert value.is_done
    assert value.xcom_value["status"] == "success"
    assert value.xcom_value["jobs"][0]["state"] == "JobComplete"


def test_poke_not_done_while_open(emulator, salesforce_conn):
    salesforce_conn(emulator)
    job = ApiSession(emulator).create_ingest("Account")
    sensor = SalesforceBulkJobSensor(task_id="s", job_ids=job["id"])
    assert sensor.poke(_context()) is False


def test_failed_job_fails_the_sensor_unless_told(emulator_factory, salesforce_conn):
    server = emulator_factory(failing_batch=1)
    salesforce_conn(server)
    job_id = _finished_job(server)
    with pytest.raises(AirflowException, match="Failed"):
        SalesforceBulkJobSensor(task_id="s", job_ids=[job_id]).poke(_context())
    value = SalesforceBulkJobSensor(task_id="s", job_ids=[job_id], fail_on_job_failure=False).poke(_context())
    assert value.xcom_value["status"] == "failed"


def test_deferrable_defers_then_completes(emulator_factory, salesforce_conn):
    # Long enough that the job is still running when the sensor checks once before deferring, even on a
    # loaded machine (0.3 s was not: the job finished first, so the sensor returned without deferring).
    server = emulator_factory(batch_delay=2.0)
    salesforce_conn(server)
    api = ApiSession(server)
    job = api.create_ingest("Account")
    api.upload(job["id"], b"Name\nAcme\n").raise_for_status()
    api.close(job["id"]).raise_for_status()
    sensor = SalesforceBulkJobSensor(task_id="s", job_ids=f"['{job['id']}']", deferrable=True,
                                     poke_interval=0.05, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, SalesforceBulkJobTrigger)
    assert trigger.job_ids == [job["id"]]
    assert trigger.deadline is not None

    async def events() -> list[Any]:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(events())
    result = sensor.execute_complete(_context(), event.payload)
    assert result["status"] == "success"


def test_deferrable_timeout_event_raises(emulator, salesforce_conn):
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

    sensor = SalesforceBulkJobSensor(task_id="s", job_ids=["750000000000001AAA"], deferrable=True)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(
            _context(), {"status": "timeout", "job_kind": "ingest", "message": "m", "jobs": []}
        )
    with pytest.raises(AirflowException, match="boom"):
        sensor.execute_complete(
            _context(), {"status": "error", "job_kind": "ingest", "message": "boom", "jobs": []}
        )


@pytest.mark.parametrize("bad", [[], "not-an-id", ["750"]])
def test_bad_job_ids(bad):
    with pytest.raises(AirflowException, match="job_ids"):
        SalesforceBulkJobSensor(task_id="s", job_ids=bad).poke(_context())


@pytest.mark.parametrize("cancel_on_kill", [False, True])
def test_killing_a_deferred_sensor_aborts_only_when_asked(emulator_factory, salesforce_conn, cancel_on_kill):
    """The sensor watches jobs somebody else created: by default its kill leaves them running."""
    server = emulator_factory(batch_delay=0.5, batch_size=1)
    salesforce_conn(server)
    api = ApiSession(server)
    job = api.create_ingest("Account")
    api.upload(job["id"], b"Name\nA\nB\nC\nD\n").raise_for_status()
    api.close(job["id"]).raise_for_status()
    kwargs = {"cancel_on_kill": True} if cancel_on_kill else {}
    sensor = SalesforceBulkJobSensor(task_id="s", job_ids=[job["id"]], deferrable=True, **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    assert deferred.value.trigger.abort_on_kill is cancel_on_kill
    asyncio.run(deferred.value.trigger.on_kill())
    server.wait_idle()
    state = api.get(f"/jobs/ingest/{job['id']}").json()["state"]
    assert state == ("Aborted" if cancel_on_kill else "JobComplete")
