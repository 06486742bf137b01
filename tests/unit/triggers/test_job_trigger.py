"""SalesforceBulkJobTrigger and the shared wait flow, against the emulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.waiting import PollSchedule, WaitOutcome
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

CSV = b"Name,External_Id__c\nAcme,A-1\nGlobex,A-2\n"


def _make_job(hook: SalesforceBulkHook, data: bytes = CSV, close: bool = True) -> str:
    job = hook.create_ingest_job("Account", "insert")
    hook.upload_job_data(job.id, io.BytesIO(data))
    if close:
        hook.close_job(job.id)
    return job.id


async def _collect(trigger: SalesforceBulkJobTrigger) -> list[Any]:
    return [event async for event in trigger.run()]


@pytest.fixture
def hook(emulator: EmulatorServer, salesforce_conn: Callable[..., str]) -> SalesforceBulkHook:
    salesforce_conn(emulator)
    return SalesforceBulkHook()


def test_serialize_carries_only_ids_and_timing() -> None:
    trigger = SalesforceBulkJobTrigger(
        conn_id="sf", job_ids=["750A", "750B"], job_kind="query", poll_interval=2, deadline=123.0
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_sfbulk.triggers.job.SalesforceBulkJobTrigger"
    assert kwargs == {
        "conn_id": "sf",
        "job_ids": ["750A", "750B"],
        "job_kind": "query",
        "poll_interval": 2.0,
        "max_poll_interval": 60.0,
        "backoff_factor": 1.5,
        "deadline": 123.0,
        "abort_on_kill": True,
        "return_when": "all",
        "progress_interval": 60.0,
        "records_sent": None,
    }
    # A trigger rebuilt from its kwargs (triggerer restart) serializes identically.
    assert SalesforceBulkJobTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_rejects_empty_job_list_and_unknown_kind() -> None:
    with pytest.raises(ValueError, match="at least one job id"):
        SalesforceBulkJobTrigger(conn_id="sf", job_ids=[])
    with pytest.raises(ValueError):
        SalesforceBulkJobTrigger(conn_id="sf", job_ids=["750A"], job_kind="batch")


def test_poll_schedule_grows_to_cap() -> None:
    intervals = PollSchedule(1, 2, 5).intervals()
    assert [next(intervals) for _ in range(5)] == [1, 2, 4, 5, 5]
    with pytest.raises(ValueError):
        PollSchedule(0, 2, 5)
    with pytest.raises(ValueError):
        PollSchedule(1, 0.5, 5)


@pytest.mark.asyncio
async def test_fires_one_success_event_for_all_jobs(hook: SalesforceBulkHook) -> None:
    job_ids = [_make_job(hook), _make_job(hook, b"Name\nInitech\n")]
    trigger = SalesforceBulkJobTrigger(conn_id="salesforce_bulk_default", job_ids=job_ids, poll_interval=0.05)
    events = await asyncio.wait_for(_collect(trigger), 30)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert [job["id"] for job in payload["jobs"]] == job_ids
    assert [job["state"] for job in payload["jobs"]] == ["JobComplete", "JobComplete"]
    assert [job["number_records_processed"] for job in payload["jobs"]] == [2, 1]
    assert WaitOutcome.from_event(payload).succeeded


@pytest.mark.asyncio
async def test_failed_job_gives_failed_event_with_salesforce_message(hook: SalesforceBulkHook) -> None:
    good = _make_job(hook)
    bad = _make_job(hook, b"Name,NoSuchField__c\nAcme,1\n")
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=[good, bad], poll_interval=0.05
    )
    (event,) = await asyncio.wait_for(_collect(trigger), 30)
    assert event.payload["status"] == "failed"
    assert bad in event.payload["message"]
    assert "NoSuchField__c" in event.payload["message"]


@pytest.mark.asyncio
async def test_aborted_job_gives_aborted_event(hook: SalesforceBulkHook) -> None:
    job_id = _make_job(hook, close=False)
    hook.abort_job(job_id, "ingest")
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.05
    )
    (event,) = await asyncio.wait_for(_collect(trigger), 30)
    assert event.payload["status"] == "aborted"
    assert event.payload["jobs"][0]["state"] == "Aborted"


@pytest.mark.asyncio
async def test_deadline_gives_timeout_event(hook: SalesforceBulkHook) -> None:
    job_id = _make_job(hook, close=False)  # an Open job never starts
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.05, deadline=time.time() + 0.3
    )
    (event,) = await asyncio.wait_for(_collect(trigger), 30)
    assert event.payload["status"] == "timeout"
    assert job_id in event.payload["message"]
    assert event.payload["jobs"][0]["state"] == "Open"


@pytest.mark.asyncio
async def test_unknown_job_gives_error_event(hook: SalesforceBulkHook) -> None:
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=["7505fE000000999AAA"], poll_interval=0.05
    )
    (event,) = await asyncio.wait_for(_collect(trigger), 30)
    assert event.payload["status"] == "error"
    assert "NOT_FOUND" in event.payload["message"] or "does not exist" in event.payload["message"]


@pytest.mark.asyncio
async def test_survives_token_expiry_while_waiting(
    emulator: EmulatorServer, hook: SalesforceBulkHook
) -> None:
    emulator.set_faults(seed=1)
    job_id = _make_job(hook)
    emulator.expire_tokens()
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.05
    )
    (event,) = await asyncio.wait_for(_collect(trigger), 30)
    assert event.payload["status"] == "success"


@pytest.mark.asyncio
async def test_restart_from_kwargs_carries_on(emulator_factory: Callable[..., EmulatorServer],
                                              salesforce_conn: Callable[..., str]) -> None:
    server = emulator_factory(batch_delay=0.3, batch_size=1)
    salesforce_conn(server)
    hook = SalesforceBulkHook()
    job_id = _make_job(hook, b"Name\nA\nB\nC\n")
    first = SalesforceBulkJobTrigger(conn_id="salesforce_bulk_default", job_ids=[job_id], poll_interval=0.05)
    # The triggerer stops the first instance mid-wait (cancellation must propagate, not become an event).
    task = asyncio.ensure_future(_collect(first))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, kwargs = first.serialize()
    (event,) = await asyncio.wait_for(_collect(SalesforceBulkJobTrigger(**kwargs)), 30)
    assert event.payload["status"] == "success"
    assert event.payload["jobs"][0]["number_records_processed"] == 3


@pytest.mark.asyncio
async def test_on_kill_aborts_running_jobs(emulator_factory: Callable[..., EmulatorServer],
                                           salesforce_conn: Callable[..., str]) -> None:
    server = emulator_factory(batch_delay=0.5, batch_size=1)
    salesforce_conn(server)
    hook = SalesforceBulkHook()
    done = _make_job(hook, b"Name\nA\n")
    server.wait_idle()
    running = _make_job(hook, b"Name\nA\nB\nC\nD\nE\nF\n")
    trigger = SalesforceBulkJobTrigger(conn_id="salesforce_bulk_default", job_ids=[done, running])
    await trigger.on_kill()
    assert hook.get_job(done, "ingest").state.value == "JobComplete"
    server.wait_idle()
    assert hook.get_job(running, "ingest").state.value == "Aborted"


@pytest.mark.asyncio
async def test_on_kill_respects_abort_on_kill_false(hook: SalesforceBulkHook) -> None:
    job_id = _make_job(hook, close=False)
    trigger = SalesforceBulkJobTrigger(
        conn_id="salesforce_bulk_default", job_ids=[job_id], abort_on_kill=False
    )
    await trigger.on_kill()
    assert hook.get_job(job_id, "ingest").state.value == "Open"


def test_sync_hook_waits_with_the_same_flow(hook: SalesforceBulkHook) -> None:
    job_id = _make_job(hook)
    outcome = hook.wait_for_jobs([job_id], "ingest", schedule=PollSchedule(0.05, 1.5, 0.2))
    assert outcome.status == "success"
    assert outcome.jobs[0].number_records_processed == 2


def test_wait_flow_sleeps_initial_delay_before_first_poll() -> None:
    """The flow's first effect is the initial sleep (bounded by the deadline), before any request."""
    from airflow_provider_sfbulk.protocol.client import Sleep
    from airflow_provider_sfbulk.protocol.waiting import wait_for_jobs

    flow = wait_for_jobs(object(), ["750A"], "ingest", initial_delay=5.0)  # type: ignore[arg-type]
    assert next(flow) == Sleep(5.0)
    bounded = wait_for_jobs(
        object(), ["750A"], "ingest", initial_delay=5.0, deadline=101.0, clock=lambda: 100.0  # type: ignore[arg-type]
    )
    assert next(bounded) == Sleep(1.0)
