"""SalesforceBulkIngestOperator against the emulator, driven directly (execute / execute_complete)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath, TaskDeferred

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.operators.ingest import STATE_KEY, SalesforceBulkIngestOperator
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger


def make_context(try_number: int = 1) -> dict[str, Any]:
    return {"ti": FakeTI(try_number)}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def operator(source: Any, **kwargs: Any) -> SalesforceBulkIngestOperator:
    kwargs.setdefault("object_name", "Account")
    kwargs.setdefault("operation", "insert")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    return SalesforceBulkIngestOperator(task_id="load", source=source, **kwargs)


async def first_event(trigger: SalesforceBulkJobTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def run_deferrable(op: SalesforceBulkIngestOperator, context: dict[str, Any]) -> dict[str, Any]:
    """Run like Airflow would: on TaskDeferred, run the trigger (serialised and rebuilt) and resume."""
    import asyncio

    call = lambda: op.execute(context)  # noqa: E731
    for _ in range(20):
        try:
            return call()
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            assert classpath.endswith("SalesforceBulkJobTrigger")
            payload = asyncio.run(first_event(SalesforceBulkJobTrigger(**kwargs)))
            method = getattr(op, deferred.method_name)
            call = lambda m=method, p=payload, k=deferred.kwargs or {}: m(context, event=p, **k)  # noqa: E731
    raise AssertionError("too many deferrals")


def names(rows: int, prefix: str = "Acme") -> list[list[str]]:
    return [[f"{prefix} {i}", str(i)] for i in range(rows)]


def test_insert_small_load_multipart(emulator, salesforce_conn, results_base, tmp_path):
    salesforce_conn(emulator)
    source = write_csv(tmp_path / "a.csv", ["Name", "NumberOfEmployees"], names(5))
    context = make_context()
    result = operator(str(source)).execute(context)
    assert result["records_sent"] == 5
    assert result["records_successful"] == 5
    assert result["records_failed"] == 0
    assert len(result["job_ids"]) == 1
    assert sorted(r["Name"] for r in emulator.records("Account")) == sorted(f"Acme {i}" for i in range(5))
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["reconciled"] is True
    assert manifest["rounds"][0]["parts"][0]["mode"] == "multipart"
    assert TaskCheckpoint.for_task(context).get(STATE_KEY) is None
    assert context["ti"].xcoms["sfbulk_job_link"]["job_ids"] == result["job_ids"]


def test_split_into_several_jobs_deferrable(emulator, salesforce_conn, results_base, tmp_path):
    salesforce_conn(emulator)
    source = write_csv(tmp_path / "a.csv", ["Name", "NumberOfEmployees"], names(40))
    op = operator(f"file://{source}", deferrable=True, max_records_per_job=10, multipart_max_bytes=0,
                  job_concurrency=2)
    result = run_deferrable(op, make_context())
    assert len(result["job_ids"]) == 4
    assert result["records_successful"] == 40
    assert len(emulator.records("Account")) == 40
    total = 0
    for uri in result["successful_results"]:
        with ObjectStoragePath(uri).open("rb") as handle:
            total += len(handle.read().splitlines()) - 1
    assert total == 40


def test_bad_input_creates_no_job(emulator, salesforce_conn, results_base, tmp_path):
    salesforce_conn(emulator)
    source = tmp_path / "bad.csv"
    source.write_text('Name,NumberOfEmployees\n"Acme,3\n')
    with pytest.raises(AirflowFailException, match="cannot be loaded"):
        operator(str(source)).execute(make_context())
    assert emulator.records("Account") == []


def test_manifest_records_state_transitions_and_stats(
    emulator_factory, salesforce_conn, results_base, tmp_path
):
    from unittest import mock

    server = emulator_factory(batch_size=5, batch_delay=0.15)
    salesforce_conn(server)
    source = write_csv(tmp_path / "a.csv", ["Name", "NumberOfEmployees"], names(20))
    with mock.patch("airflow_provider_sfbulk.operators.ingest.Stats") as stats:
        result = operator(str(source), multipart_max_bytes=0).execute(make_context())
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    (part,) = manifest["rounds"][0]["parts"]
    seen = [entry["state"] for entry in part["states"]]
    assert seen[0] == "Open"
    assert seen.index("Uploaded") < seen.index("UploadComplete") < seen.index("JobComplete")
    assert "InProgress" in seen
    assert seen.count("JobComplete") == 1
    files = part["results"]["files"]
    assert files["successfulResults"]["records"] == 20
    assert len(files["failedResults"]["sha256"]) == 64
    counted = {call.args[0]: call.args[1] for call in stats.incr.call_args_list}
    assert counted["sfbulk.ingest.records_successful"] == 20
    assert counted["sfbulk.ingest.records_failed"] == 0
    assert stats.timing.call_args.args[0] == "sfbulk.ingest.duration"
