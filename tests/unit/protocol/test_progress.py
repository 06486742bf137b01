"""Progress lines of a long wait: records processed of records sent, a rate, and not too often."""

from __future__ import annotations

import itertools
from typing import Any

from airflow_provider_sfbulk.protocol.api import parse_job_info
from airflow_provider_sfbulk.protocol.states import JobKind
from airflow_provider_sfbulk.protocol.waiting import Progress


def job(job_id: str, state: str, processed: int) -> Any:
    return parse_job_info(
        {"id": job_id, "state": state, "operation": "insert", "numberRecordsProcessed": processed},
        JobKind.INGEST,
    )


def test_lines_come_every_interval_with_counts_of_sent_and_a_rate():
    lines: list[str] = []
    progress = Progress(10.0, {"750A": 1000}, lambda msg, *args: lines.append(msg % args))
    progress.observe([job("750A", "InProgress", 0), job("750B", "InProgress", 50)], now=100.0)
    progress.observe([job("750A", "InProgress", 200), job("750B", "InProgress", 60)], now=105.0)
    assert lines == []  # not yet: less than 10 s since the first observation
    progress.observe([job("750A", "InProgress", 400), job("750B", "JobComplete", 70)], now=110.0)
    assert lines == ["Job 750A (InProgress): 400 of 1000 record(s) processed, 40 record(s)/s"]
    progress.observe([job("750A", "InProgress", 700), job("750C", "UploadComplete", 0)], now=121.0)
    assert lines[1:] == [
        "Job 750A (InProgress): 700 of 1000 record(s) processed, 33 record(s)/s",
        "Job 750C (UploadComplete): 0 record(s) processed, 0 record(s)/s",
    ]


def test_a_wait_through_the_hook_reports_progress(emulator_factory, salesforce_conn):
    from airflow_provider_sfbulk.emulator.testing import ApiSession
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
    from airflow_provider_sfbulk.protocol.waiting import PollSchedule

    server = emulator_factory(batch_size=2, batch_delay=0.1)
    salesforce_conn(server)
    api = ApiSession(server)
    lines: list[str] = []
    ticks = itertools.count(1000.0, 1.0)  # the flow's clock: one second per look, whatever the load
    with SalesforceBulkHook() as hook:
        hook.get_limits()  # connection and token first: the job must still run at the first poll
        created = api.create_ingest("Account", "insert")
        api.upload(created["id"], b"Name\n" + b"".join(f"P{i}\n".encode() for i in range(20)))
        api.close(created["id"])
        outcome = hook.wait_for_jobs(
            [created["id"]], "ingest", schedule=PollSchedule(0.05, 1.0, 0.05), clock=lambda: next(ticks),
            progress=Progress(0.5, {created["id"]: 20}, lambda msg, *args: lines.append(msg % args)),
        )
    assert outcome.status == "success"
    assert lines, "every poll after the first, while the job runs, is a second later on the flow's clock"
    for line in lines:
        assert line.startswith(f"Job {created['id']} (")
        assert "of 20 record(s) processed" in line
