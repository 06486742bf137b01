"""An emulator process killed (SIGKILL) in the middle of an ingest job, then started again on the same data
directory: the job is ``Failed``, the rows of its finished batches stay committed, and its three result
files and counters say exactly that (each uploaded row in one file, the counters matching the files), so a
client can send the unprocessed rows again without loading any row twice."""

from __future__ import annotations

import csv
import io
import time

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import ApiSession, password_token, start_emulator_process
from airflow_provider_sfbulk.emulator.worker import RESTART_MESSAGE

ROWS = 30
ARGS = ["--batch-size", "5", "--batch-delay", "0.5", "--workers", "1"]


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_crash_in_the_middle_of_a_job_leaves_true_result_files_and_counters(tmp_path):
    data_dir = tmp_path / "crash"
    names = [f"Crash {i:02d}" for i in range(ROWS)]
    with start_emulator_process(data_dir, extra_args=ARGS) as first:
        token = password_token(first.base_url, EmulatorConfig())["access_token"]
        api = ApiSession(first, token=token)  # type: ignore[arg-type]
        job = api.create_ingest("Account")["id"]
        api.upload(job, ("Name\n" + "".join(f"{n}\n" for n in names)).encode()).raise_for_status()
        api.close(job).raise_for_status()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = api.get(f"/jobs/ingest/{job}").json()
            if info["state"] == "InProgress" and info["numberRecordsProcessed"] >= 10:
                break
            time.sleep(0.02)
        first.process.kill()  # a crash: no chance to write anything more
        first.process.wait(10)
        assert info["state"] == "InProgress", info
    with start_emulator_process(data_dir, extra_args=ARGS) as second:
        api = ApiSession(second, token=token)  # type: ignore[arg-type]
        info = api.get(f"/jobs/ingest/{job}").json()
        ok = _rows(api.get(f"/jobs/ingest/{job}/successfulResults").text)
        failed = _rows(api.get(f"/jobs/ingest/{job}/failedResults").text)
        unprocessed = _rows(api.get(f"/jobs/ingest/{job}/unprocessedrecords").text)
        stored = [r["Name"] for r in api.get("/__emulator/records/Account").json()["records"]]
    assert (info["state"], info["errorMessage"]) == ("Failed", RESTART_MESSAGE)
    processed = info["numberRecordsProcessed"]
    assert 10 <= processed < ROWS, info
    assert processed % 5 == 0, info  # whole batches only
    assert len(ok) + len(failed) == processed
    assert len(failed) == info["numberRecordsFailed"] == 0
    assert [r["Name"] for r in ok] == names[:processed]
    assert [r["Name"] for r in unprocessed] == names[processed:]
    assert sorted(stored) == names[:processed]  # committed once, nothing of the unfinished batch
