"""Ingest operator crash safety, kill, triggerer restart and secrets, against the emulator.

A "crash" stops the task at a chosen point (an exception from a patched method, or ``os._exit`` in a
child process); a second try of the same task instance then runs with the same checkpoint. The emulator's
records show whether any row was loaded twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from _threading_compat import operator_thread
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.exceptions import SalesforceBulkOutcomeUnknownError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.loader import PartLoader
from airflow_provider_sfbulk.operators.ingest import STATE_KEY, SalesforceBulkIngestOperator
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


class Crash(BaseException):
    """Stands for the worker dying: not an Exception, so nothing in the task catches it."""


pytestmark = pytest.mark.usefixtures("results_base")


def source(tmp_path: Path, count: int = 30) -> str:
    path = tmp_path / "accounts.csv"
    path.write_text("Name,NumberOfEmployees\n" + "".join(f"Acme {i},{i}\n" for i in range(count)))
    return str(path)


def operator(src: str, **kwargs: Any) -> SalesforceBulkIngestOperator:
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("max_records_per_job", 10)
    kwargs.setdefault("multipart_max_bytes", 0)
    return SalesforceBulkIngestOperator(task_id="load", source=src, **kwargs)


def all_jobs(server) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return response.json()["records"]


def assert_loaded_once(server, count: int) -> None:
    names = sorted(r["Name"] for r in server.records("Account"))
    assert names == sorted(f"Acme {i}" for i in range(count))


def test_crash_after_upload_then_retry_reconnects(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    src = source(tmp_path)
    real_close = PartLoader.close

    def crash(self: Any, *args: Any) -> None:
        raise Crash("worker died after the uploads")

    monkeypatch.setattr(PartLoader, "close", crash)
    with pytest.raises(Crash):
        operator(src).execute({"ti": FakeTI(1)})
    created = {job["id"] for job in all_jobs(emulator)}
    assert len(created) == 3
    assert {job["state"] for job in all_jobs(emulator)} == {"Open"}

    monkeypatch.setattr(PartLoader, "close", real_close)
    result = operator(src).execute({"ti": FakeTI(2)})
    assert set(result["job_ids"]) == created  # the same jobs, no new upload
    assert len(all_jobs(emulator)) == 3
    assert result["records_successful"] == 30
    assert_loaded_once(emulator, 30)


def test_crash_during_upload_aborts_and_replaces_the_job(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    src = source(tmp_path, 5)
    real_upload = SalesforceBulkHook.upload_job_data

    def upload_then_die(self: Any, job_id: str, data: Any) -> None:
        real_upload(self, job_id, data)  # the data reached Salesforce, but the task never learns it
        raise Crash("worker died before recording the upload")

    monkeypatch.setattr(SalesforceBulkHook, "upload_job_data", upload_then_die)
    with pytest.raises(Crash):
        operator(src).execute({"ti": FakeTI(1)})
    (first,) = all_jobs(emulator)

    monkeypatch.setattr(SalesforceBulkHook, "upload_job_data", real_upload)
    result = operator(src).execute({"ti": FakeTI(2)})
    assert first["id"] not in result["job_ids"]
    states = {job["id"]: job["state"] for job in all_jobs(emulator)}
    assert states[first["id"]] == "Aborted"  # an Open job processed nothing; aborting loses nothing
    assert_loaded_once(emulator, 5)


def test_crash_while_jobs_run(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    src = source(tmp_path)
    real_wait = SalesforceBulkHook.wait_for_jobs

    def die(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise Crash("worker died while polling")

    monkeypatch.setattr(SalesforceBulkHook, "wait_for_jobs", die)
    with pytest.raises(Crash):
        operator(src, job_concurrency=1).execute({"ti": FakeTI(1)})
    monkeypatch.setattr(SalesforceBulkHook, "wait_for_jobs", real_wait)
    result = operator(src, job_concurrency=1).execute({"ti": FakeTI(2)})
    assert len(all_jobs(emulator)) == 3
    assert result["records_successful"] == 30
    assert_loaded_once(emulator, 30)


def test_crash_during_a_json_create_aborts_the_job_it_left(emulator, salesforce_conn, tmp_path, monkeypatch):
    """The worker dies after Salesforce made the job, before the answer was recorded (seen in the kill suite:
    the empty job stayed Open for ever). The retry remembers the request as lost and aborts its orphan."""
    salesforce_conn(emulator)
    src = source(tmp_path, 5)
    real = SalesforceBulkHook.create_ingest_job
    made: list[str] = []

    def create_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(real(self, *args, **kwargs).id)
        raise Crash("worker died before recording the job id")

    monkeypatch.setattr(SalesforceBulkHook, "create_ingest_job", create_then_die)
    with pytest.raises(Crash):
        operator(src).execute({"ti": FakeTI(1)})
    monkeypatch.setattr(SalesforceBulkHook, "create_ingest_job", real)
    result = operator(src).execute({"ti": FakeTI(2)})
    states = {job["id"]: job["state"] for job in all_jobs(emulator)}
    assert states[made[0]] == "Aborted"
    assert made[0] not in result["job_ids"]
    assert {states[job_id] for job_id in result["job_ids"]} == {"JobComplete"}
    assert_loaded_once(emulator, 5)


@pytest.mark.parametrize("how", ["lost answer", "crash"])
def test_lost_multipart_answer_adopts_the_job(emulator, salesforce_conn, tmp_path, monkeypatch, how):
    salesforce_conn(emulator)
    src = source(tmp_path, 3)
    real = SalesforceBulkHook.create_ingest_job_with_data

    def create_then_lose(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        if how == "crash":
            raise Crash("worker died before recording the job id")
        raise SalesforceBulkOutcomeUnknownError("connection reset after the request was sent")

    monkeypatch.setattr(SalesforceBulkHook, "create_ingest_job_with_data", create_then_lose)
    op = operator(src, multipart_max_bytes=10_000, max_records_per_job=None)
    if how == "crash":
        with pytest.raises(Crash):
            op.execute({"ti": FakeTI(1)})
        monkeypatch.setattr(SalesforceBulkHook, "create_ingest_job_with_data", real)
        op = operator(src, multipart_max_bytes=10_000, max_records_per_job=None)
    result = op.execute({"ti": FakeTI(2)})
    (job,) = all_jobs(emulator)
    assert result["job_ids"] == [job["id"]]
    assert_loaded_once(emulator, 3)


def test_process_killed_with_os_exit_then_retried(emulator, salesforce_conn, tmp_path):
    """A real process death (os._exit right after the uploads), then a second try in this process."""
    conn = salesforce_conn(emulator)
    src = source(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, sys
        from types import SimpleNamespace
        from airflow_provider_sfbulk.ingest.loader import PartLoader
        from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

        def die(self, *args):
            os._exit(17)

        PartLoader.close = die
        ti = SimpleNamespace(dag_id="dag", run_id="run-1", task_id="load", map_index=-1, try_number=1,
                             xcom_push=lambda **kw: None)
        op = SalesforceBulkIngestOperator(task_id="load", source={src!r}, object_name="Account",
                                          operation="insert", max_records_per_job=10,
                                          multipart_max_bytes=0, deferrable=False)
        op.execute({{"ti": ti}})
        sys.exit(0)
        """
    )
    env = {**os.environ, "AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT": conn}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, timeout=120, capture_output=True, text=True
    )
    assert done.returncode == 17, done.stderr[-2000:]
    assert len(all_jobs(emulator)) == 3
    result = operator(src).execute({"ti": FakeTI(2)})
    assert len(all_jobs(emulator)) == 3
    assert result["records_successful"] == 30
    assert_loaded_once(emulator, 30)


def test_killed_task_aborts_its_jobs(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(batch_size=2, batch_delay=0.3)
    salesforce_conn(server)
    op = operator(source(tmp_path, 20), max_records_per_job=None)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            op.execute({"ti": FakeTI(1)})
        except BaseException as err:
            failure.append(err)

    thread = operator_thread(work)
    thread.start()
    deadline = time.monotonic() + 20
    while not op._active_job_ids or all_jobs(server)[0]["state"] == "Open":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    op.on_kill()
    thread.join(30)
    assert not thread.is_alive()
    (job,) = all_jobs(server)
    assert job["state"] == "Aborted"
    assert len(failure) == 1
    assert isinstance(failure[0], AirflowFailException)
    assert "Aborted" in str(failure[0])
    assert len(server.records("Account")) < 20


def test_killed_deferred_task_trigger_aborts(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(batch_size=2, batch_delay=0.3)
    salesforce_conn(server)
    with pytest.raises(TaskDeferred) as deferred:
        operator(source(tmp_path, 20), max_records_per_job=None, deferrable=True).execute({"ti": FakeTI(1)})
    asyncio.run(deferred.value.trigger.on_kill())
    (job,) = all_jobs(server)
    assert job["state"] == "Aborted"


def test_triggerer_restart_mid_wait(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(batch_size=5, batch_delay=0.2)
    salesforce_conn(server)
    context = {"ti": FakeTI(1)}
    op = operator(source(tmp_path), deferrable=True, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    classpath, kwargs = deferred.value.trigger.serialize()

    async def run_briefly() -> None:
        trigger = SalesforceBulkJobTrigger(**kwargs)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(aiter(trigger.run())), timeout=0.3)

    asyncio.run(run_briefly())  # the first triggerer goes away mid-wait
    assert any(job["state"] != "JobComplete" for job in all_jobs(server))
    rebuilt = SalesforceBulkJobTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.deadline == kwargs["deadline"]

    async def events() -> list[Any]:
        return [event async for event in rebuilt.run()]

    (event,) = asyncio.run(events())
    result = operator(source(tmp_path), deferrable=True, timeout=600).execute_complete(context, event.payload)
    assert result["records_successful"] == 30
    assert_loaded_once(server, 30)


def test_no_secret_in_trigger_xcom_checkpoint_or_manifest(emulator_factory, salesforce_conn, tmp_path):
    server = emulator_factory(batch_delay=0.2)
    conn = json.loads(salesforce_conn(server))
    context = {"ti": FakeTI(1)}
    op = operator(source(tmp_path), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    token = op.hook._get_client().cached_token()
    secrets = [conn["password"], conn["extra"]["client_secret"], conn["extra"]["security_token"],
               token.access_token]
    checkpoint_text = json.dumps(TaskCheckpoint.for_task(context).get(STATE_KEY))
    trigger_text = json.dumps(deferred.value.trigger.serialize())

    async def events() -> list[Any]:
        return [event async for event in deferred.value.trigger.run()]

    (event,) = asyncio.run(events())
    result = operator(source(tmp_path), deferrable=True).execute_complete(context, event.payload)
    manifest_text = Path(result["manifest"].removeprefix("file://")).read_text()
    for text in (trigger_text, json.dumps(event.payload), json.dumps(context["ti"].xcoms), checkpoint_text,
                 manifest_text):
        for secret in secrets:
            assert secret not in text


def test_timeout_aborts_the_unfinished_jobs(emulator_factory, salesforce_conn, tmp_path):
    from airflow.providers.common.compat.sdk import AirflowException

    server = emulator_factory(batch_size=2, batch_delay=0.5)
    salesforce_conn(server)
    with pytest.raises(AirflowException, match="timeout"):
        operator(source(tmp_path, 20), max_records_per_job=None, timeout=0.5).execute({"ti": FakeTI(1)})
    server.wait_idle(10)
    (job,) = all_jobs(server)
    assert job["state"] == "Aborted"


def test_crash_after_create_before_upload_resplits_and_uploads_to_the_same_jobs(
    emulator, salesforce_conn, tmp_path, monkeypatch
):
    salesforce_conn(emulator)
    src = source(tmp_path)
    real_upload = PartLoader.upload

    def die(self: Any, *args: Any, **kwargs: Any) -> None:
        raise Crash("worker died between create and upload")

    monkeypatch.setattr(PartLoader, "upload", die)
    with pytest.raises(Crash):
        operator(src, upload_concurrency=3).execute({"ti": FakeTI(1)})
    created = {job["id"] for job in all_jobs(emulator)}
    assert len(created) == 3
    monkeypatch.setattr(PartLoader, "upload", real_upload)
    result = operator(src, upload_concurrency=3).execute({"ti": FakeTI(2)})  # a new process: no spool left
    assert set(result["job_ids"]) == created
    assert len(all_jobs(emulator)) == 3
    assert_loaded_once(emulator, 30)


def test_changed_source_is_not_loaded_on_resume(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    src = source(tmp_path)

    def die(self: Any, *args: Any, **kwargs: Any) -> None:
        raise Crash("worker died between create and upload")

    real_upload = PartLoader.upload
    monkeypatch.setattr(PartLoader, "upload", die)
    with pytest.raises(Crash):
        operator(src, upload_concurrency=1).execute({"ti": FakeTI(1)})
    monkeypatch.setattr(PartLoader, "upload", real_upload)
    Path(src).write_text(Path(src).read_text().replace("Acme 3,", "Changed 3,"))
    with pytest.raises(AirflowFailException, match="changed since the load started"):
        operator(src, upload_concurrency=1).execute({"ti": FakeTI(2)})
    assert emulator.records("Account") == []
