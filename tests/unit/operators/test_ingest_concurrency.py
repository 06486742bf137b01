"""Ingest operator: the size cap per job, the rolling job_concurrency window and the serial lock retry,
observed in the emulator at the moment each job is closed (not read back from the manifest)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.ingest import retries as retries_module
from airflow_provider_sfbulk.ingest.loader import PartLoader
from airflow_provider_sfbulk.ingest.state import Part
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

pytestmark = pytest.mark.usefixtures("results_base")

RUNNING = {"UploadComplete", "InProgress"}


def write_rows(path: Path, header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return str(path)


def run(source: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.1)
    op = SalesforceBulkIngestOperator(
        task_id="load", source=source, object_name="Account", operation="insert", deferrable=False, **kwargs
    )
    return op.execute({"ti": FakeTI()})


def job_state(server: Any, job_id: str) -> str:
    response = ApiSession(server).get(f"/jobs/ingest/{job_id}")
    response.raise_for_status()
    return response.json()["state"]


class CloseSpy:
    """Wraps PartLoader.close: before each close, notes which already-closed jobs still run."""

    def __init__(self, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.closed: list[str] = []
        self.running_at_close: list[list[str]] = []
        real = PartLoader.close

        def close(loader: PartLoader, part: Part) -> None:
            self.running_at_close.append(
                [job_id for job_id in self.closed if job_state(self.server, job_id) in RUNNING]
            )
            assert part.job_id is not None
            self.closed.append(part.job_id)
            real(loader, part)

        monkeypatch.setattr(PartLoader, "close", close)


def test_max_bytes_per_job_caps_every_upload(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    rows = [[f"Account number {i:04d}", "x" * (i % 7)] for i in range(60)]
    source = write_rows(tmp_path / "a.csv", ["Name", "Description"], rows)
    header = len("Name,Description\n")
    cap = 300
    # The parts a cut at record boundaries must give: as many whole rows as fit next to the header.
    expected, size = 1, header
    for row in rows:
        length = len(",".join(row)) + 1
        if size + length > cap:
            expected, size = expected + 1, header
        size += length
    result = run(source, max_bytes_per_job=cap, multipart_max_bytes=0, job_concurrency=3)
    assert len(result["job_ids"]) == expected > 5
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    sizes = [part["bytes"] for part in manifest["rounds"][0]["parts"]]
    assert max(sizes) <= cap
    assert sum(sizes) == Path(source).stat().st_size + header * (expected - 1)
    assert result["records_successful"] == 60
    assert sorted(r["Name"] for r in emulator.records("Account")) == [row[0] for row in rows]


def test_job_concurrency_is_a_rolling_window(emulator_factory, salesforce_conn, tmp_path, monkeypatch):
    server = emulator_factory(batch_size=2, batch_delay=0.05)
    salesforce_conn(server)
    spy = CloseSpy(server, monkeypatch)
    # Part 0: four long rows (a short job); then parts of 40 short rows (long jobs).
    rows = [[f"Long {i}", "y" * 400] for i in range(4)] + [[f"S{i:03d}", ""] for i in range(80)]
    source = write_rows(tmp_path / "a.csv", ["Name", "Description"], rows)
    result = run(source, max_bytes_per_job=1700, max_records_per_job=40, multipart_max_bytes=0,
                 job_concurrency=2)
    assert len(result["job_ids"]) == 3
    assert result["records_successful"] == 84
    first, second, third = spy.running_at_close
    assert (first, second) == ([], [spy.closed[0]])
    # Rolling: the third job starts as soon as the short first one is done, while the second still runs.
    # (In waves it would start only after both, with nothing running.)
    assert third == [spy.closed[1]]


def test_lock_retry_round_runs_one_job_at_a_time(emulator_factory, salesforce_conn, tmp_path, monkeypatch):
    server = emulator_factory(batch_size=2, batch_delay=0.02)
    salesforce_conn(server)
    server.set_faults(lock_row_rate=0.6, seed=3)
    real_write = retries_module.write_failed_rows
    spy: list[CloseSpy] = []

    def clear_faults_then_write(*args: Any, **kwargs: Any) -> Any:
        server.set_faults(lock_row_rate=0.0)
        if not spy:  # watch only the retry round's closes (the writer runs again for the final failures)
            spy.append(CloseSpy(server, monkeypatch))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(retries_module, "write_failed_rows", clear_faults_then_write)
    source = write_rows(tmp_path / "a.csv", ["Name"], [[f"N{i}"] for i in range(40)])
    result = run(source, lock_retry=True, max_records_per_job=4, job_concurrency=4, multipart_max_bytes=0)
    assert result["retry_rounds"] == 1
    assert result["records_successful"] == 40
    (watch,) = spy
    assert len(watch.closed) >= 2  # several jobs in the retry round
    assert all(running == [] for running in watch.running_at_close)
    assert len(server.records("Account")) == 40


def test_results_that_do_not_add_up_fail_the_task_naming_the_missing_rows(
    emulator_factory, salesforce_conn, tmp_path
):
    from airflow.providers.common.compat.sdk import AirflowFailException

    server = emulator_factory(drop_result_rows=2, drop_result_jobs=1)
    salesforce_conn(server)
    source = write_rows(tmp_path / "a.csv", ["Name"], [[f"R{i}"] for i in range(30)])
    op = SalesforceBulkIngestOperator(
        task_id="load", source=source, object_name="Account", operation="insert", deferrable=False,
        max_records_per_job=10, multipart_max_bytes=0, poll_interval=0.05, max_poll_interval=0.1,
    )
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match=r"do not reconcile.*8 successful \+ 0 failed \+ 0 "
                       r"unprocessed of 10 sent, 2 row\(s\) missing"):
        op.execute({"ti": ti})
    result = ti.xcoms["return_value"]
    assert (result["records_sent"], result["records_successful"]) == (30, 28)
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["reconciled"] is False
    assert len(server.records("Account")) == 30  # the rows are in the org: only their results are missing
