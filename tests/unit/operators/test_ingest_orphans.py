"""Jobs left behind by lost create answers are aborted after the uploads; jobs of anyone else never are."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.exceptions import SalesforceBulkOutcomeUnknownError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

pytestmark = pytest.mark.usefixtures("results_base")


def source(tmp_path: Path, count: int = 20) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["Name"], *[[f"O{i}"] for i in range(count)]])
    path = tmp_path / "a.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def run(src: str) -> dict[str, Any]:
    op = SalesforceBulkIngestOperator(
        task_id="load", source=src, object_name="Account", operation="insert", deferrable=False,
        max_records_per_job=5, multipart_max_bytes=0, upload_concurrency=1, poll_interval=0.05,
        max_poll_interval=0.1,
    )
    return op.execute({"ti": FakeTI()})


def jobs(server: Any) -> dict[str, str]:
    response = ApiSession(server).get("/jobs/ingest")
    response.raise_for_status()
    return {job["id"]: job["state"] for job in response.json()["records"]}


def lose_answers(monkeypatch: pytest.MonkeyPatch, times: int, *, created: bool = True,
                 also: Any = None) -> list[str]:
    """The next ``times`` JSON creates reach Salesforce (when ``created``) but their answers are lost."""
    real = SalesforceBulkHook.create_ingest_job
    lost: list[str] = []

    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(lost) >= times:
            return real(self, *args, **kwargs)
        if created:
            lost.append(real(self, *args, **kwargs).id)
        else:
            lost.append("never created")
        if also is not None:
            also()
        raise SalesforceBulkOutcomeUnknownError("connection reset after the request was sent")

    monkeypatch.setattr(SalesforceBulkHook, "create_ingest_job", create)
    return lost


def test_jobs_of_lost_create_answers_are_aborted(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    lost = lose_answers(monkeypatch, 2)
    result = run(source(tmp_path))
    assert result["records_successful"] == 20
    states = jobs(emulator)
    assert len(states) == 6  # four loads and the two orphans
    assert {states[job_id] for job_id in lost} == {"Aborted"}
    assert {states[job_id] for job_id in result["job_ids"]} == {"JobComplete"}
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert sorted(manifest["orphan_jobs_aborted"]) == sorted(lost)
    assert sorted(r["Name"] for r in emulator.records("Account")) == sorted(f"O{i}" for i in range(20))


def test_a_job_of_another_task_in_the_same_window_is_never_aborted(
    emulator, salesforce_conn, tmp_path, monkeypatch
):
    salesforce_conn(emulator)
    other: list[str] = []

    def another_task_creates_a_job() -> None:  # same user, object and operation, at the same moment
        other.append(ApiSession(emulator).create_ingest("Account", "insert")["id"])

    lost = lose_answers(monkeypatch, 1, also=another_task_creates_a_job)
    result = run(source(tmp_path))
    assert result["records_successful"] == 20
    states = jobs(emulator)
    assert states[other[0]] == "Open"  # two candidates for one lost answer: nothing is guessed
    assert states[lost[0]] == "Open"
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["orphan_jobs_aborted"] == []


def test_a_lost_request_that_created_nothing_aborts_nothing(emulator, salesforce_conn, tmp_path, monkeypatch):
    salesforce_conn(emulator)
    earlier = ApiSession(emulator).create_ingest("Account", "insert")["id"]  # someone's Open job, before
    time.sleep(3.2)  # createdDate has whole seconds: leave the lost request's window clear of it
    lose_answers(monkeypatch, 1, created=False)
    result = run(source(tmp_path))
    assert result["records_successful"] == 20
    states = jobs(emulator)
    assert states[earlier] == "Open"
    assert len(states) == 5
