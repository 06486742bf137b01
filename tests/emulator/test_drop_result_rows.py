"""The dropped-result-rows fault and the processing statistics of JobInfo."""

from __future__ import annotations

import csv
import io
import time

import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))[1:]


def accounts(names: list[str]) -> bytes:
    return ("Name\n" + "".join(f"{name}\n" for name in names)).encode()


def result_counts(api: ApiSession, job_id: str) -> tuple[int, int, int]:
    sets = ("successfulResults", "failedResults", "unprocessedrecords")
    return tuple(len(csv_rows(api.get(f"/jobs/ingest/{job_id}/{name}").text)) for name in sets)  # type: ignore[return-value]


def test_drop_result_rows_breaks_reconciliation(emulator):
    api = ApiSession(emulator)
    emulator.set_faults(drop_result_rows=3)
    info = api.run_ingest("Account", "insert", accounts([f"A{n}" for n in range(10)]))
    assert info["state"] == "JobComplete"
    assert info["numberRecordsProcessed"] == 10
    assert info["numberRecordsFailed"] == 0
    assert result_counts(api, info["id"]) == (7, 0, 0)
    kept = csv_rows(api.get(f"/jobs/ingest/{info['id']}/successfulResults").text)
    assert [row[2] for row in kept] == [f"A{n}" for n in range(3, 10)]
    assert len(emulator.records("Account")) == 10  # the rows were really inserted


def test_drop_result_jobs_limits_the_fault(emulator_factory):
    server = emulator_factory(drop_result_rows=2, drop_result_jobs=1)
    api = ApiSession(server)
    first = api.run_ingest("Account", "insert", accounts(["a", "b", "c"]))
    second = api.run_ingest("Account", "insert", accounts(["d", "e", "f"]))
    assert result_counts(api, first["id"]) == (1, 0, 0)
    assert result_counts(api, second["id"]) == (3, 0, 0)
    assert first["numberRecordsProcessed"] == second["numberRecordsProcessed"] == 3


def test_more_drops_than_rows_and_failed_rows_stay(emulator):
    api = ApiSession(emulator)
    emulator.set_faults(drop_result_rows=5)
    info = api.run_ingest("Account", "insert", b"Name,Rating\nok1,Hot\nbad,Lukewarm\nok2,Cold\n")
    assert info["numberRecordsProcessed"] == 3
    assert info["numberRecordsFailed"] == 1
    assert result_counts(api, info["id"]) == (0, 1, 0)


def test_admin_endpoint_sets_and_clears_the_fault(emulator):
    api = ApiSession(emulator)
    admin = f"{emulator.base_url}/__emulator/faults"
    view = requests.put(admin, json={"drop_result_rows": 1, "drop_result_jobs": 2}, timeout=10).json()
    assert (view["drop_result_rows"], view["drop_result_jobs"]) == (1, 2)
    infos = [api.run_ingest("Account", "insert", accounts(["x", "y"])) for _ in range(3)]
    assert [result_counts(api, info["id"])[0] for info in infos] == [1, 1, 2]
    assert requests.get(admin, timeout=10).json()["drop_result_jobs"] == 0
    assert requests.put(admin, json={"drop_result_rows": -2}, timeout=10).status_code == 400
    cleared = requests.delete(admin, timeout=10).json()
    assert (cleared["drop_result_rows"], cleared["drop_result_jobs"]) == (0, None)


def test_ingest_job_statistics(emulator_factory):
    server = emulator_factory(batch_size=2, batch_delay=0.02)
    api = ApiSession(server)
    info = api.run_ingest("Account", "insert", accounts([f"S{n}" for n in range(5)]))
    assert info["state"] == "JobComplete"
    assert info["retries"] == 0
    assert info["apexProcessingTime"] == 0
    assert isinstance(info["totalProcessingTime"], int)
    assert isinstance(info["apiActiveProcessingTime"], int)
    # three internal batches of at least 20 ms each
    assert info["totalProcessingTime"] >= info["apiActiveProcessingTime"] >= 60


def test_failed_batch_reports_its_retries(emulator_factory):
    server = emulator_factory(batch_size=2, failing_batch=2)
    api = ApiSession(server)
    info = api.run_ingest("Account", "insert", accounts([f"F{n}" for n in range(5)]))
    assert info["state"] == "Failed"
    assert info["retries"] == 10
    assert info["numberRecordsProcessed"] == 2
    assert info["totalProcessingTime"] >= info["apiActiveProcessingTime"] >= 0


def test_query_job_statistics(emulator_factory):
    server = emulator_factory(query_delay=0.05)
    server.seed("Account", 4)
    info = ApiSession(server).run_query("SELECT Id FROM Account")
    assert info["retries"] == 0
    assert info["totalProcessingTime"] >= 50


def test_statistics_are_published_while_in_progress(emulator_factory):
    server = emulator_factory(batch_size=2, batch_delay=0.3)
    api = ApiSession(server)
    job = api.create_ingest("Account")
    api.upload(job["id"], accounts([f"P{n}" for n in range(6)])).raise_for_status()
    api.close(job["id"]).raise_for_status()
    seen = None
    for _ in range(200):
        info = api.get(f"/jobs/ingest/{job['id']}").json()
        if info["state"] == "InProgress" and info["numberRecordsProcessed"] >= 2:
            seen = info
            break
        time.sleep(0.01)
    assert seen is not None
    assert seen["totalProcessingTime"] == seen["apiActiveProcessingTime"]
    assert seen["totalProcessingTime"] >= 0
    assert seen["retries"] == 0
    final = api.wait_job("ingest", job["id"])
    assert final["totalProcessingTime"] >= seen["totalProcessingTime"]
    assert final["totalProcessingTime"] >= 3 * 300 - 50
