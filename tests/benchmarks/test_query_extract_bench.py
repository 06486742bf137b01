"""Query extract speed and memory: >= 1M seeded rows from the emulator to local storage.

Run explicitly: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_query_extract_bench.py -s``.
``SFBULK_BENCH_QUERY_ROWS`` changes the row count (default 1,000,000), ``SFBULK_BENCH_PAGE_ROWS`` the
``maxRecords`` per page (default 100,000).

The emulator runs as a separate process, so it does not share the GIL with the extract (which runs here,
in the pytest process, through :func:`~airflow_provider_sfbulk.query.extract.extract_query_results`).
Each configuration prints one line: CSV megabytes received per wall-clock second, the CPU seconds of the
client and of the server, and the client's memory: resident set before the extract and its peak during
it (``VmHWM``, reset through ``/proc/self/clear_refs`` just before). Only correctness (row counts, manifest
totals) and flat client memory are asserted, never time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_json, start_emulator_process
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.states import JobState
from airflow_provider_sfbulk.query.extract import extract_query_results
from airflow_provider_sfbulk.query.options import ExtractOptions

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("SFBULK_BENCH_QUERY_ROWS", "1000000"))
PAGE_ROWS = int(os.environ.get("SFBULK_BENCH_PAGE_ROWS", "100000"))
CONN_ID = "sfbulk_query_bench"
#: Flat memory: the extract may grow the client's resident set by this much at most, whatever the size.
MAX_RSS_GROWTH_MB = 64.0
JOB_TIMEOUT = 900.0
QUERY = (
    "SELECT Id, Name, External_Id__c, AccountNumber, Industry, NumberOfEmployees, AnnualRevenue, "
    "Phone, BillingCity, Description, Active__c, CreatedDate FROM Account"
)

CONFIGURATIONS = [
    # label, options
    ("resultPages x4, one file per page, gzip transfer", ExtractOptions(concurrency=4)),
    ("resultPages x4, one file per page, plain transfer", ExtractOptions(concurrency=4, transfer_gzip=False)),
    ("resultPages x2, one file per page, plain transfer", ExtractOptions(concurrency=2, transfer_gzip=False)),
    ("Sforce-Locator chain, one file per page, plain transfer",
     ExtractOptions(use_result_pages=False, transfer_gzip=False)),
    ("resultPages x4, single file, plain transfer", ExtractOptions(output="single", transfer_gzip=False)),
    ("resultPages x4, single gzip file (level 6), plain transfer",
     ExtractOptions(output="single", compression="gzip", transfer_gzip=False)),
    ("resultPages x4, single gzip file (level 1), plain transfer",
     ExtractOptions(output="single", compression="gzip", gzip_level=1, transfer_gzip=False)),
    ("resultPages x4, gzip file per page (level 1), plain transfer",
     ExtractOptions(compression="gzip", gzip_level=1, transfer_gzip=False)),
]


def _status_kb(key: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with start_emulator_process(tmp_path / "emulator", extra_args=["--batch-delay", "0"]) as proc:
        yield proc


def _seed(base_url: str, count: int) -> None:
    request = urllib.request.Request(
        f"{base_url}/__emulator/seed", data=json.dumps({"object": "Account", "count": count}).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=JOB_TIMEOUT) as response:
        assert int(json.loads(response.read())["inserted"]) == count


@pytest.mark.timeout(3600)
def test_query_extract_speed_and_memory(emulator_process: EmulatorProcess, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(emulator_process, timeout=600))
    started = time.perf_counter()
    _seed(emulator_process.base_url, ROWS)
    elapsed = time.perf_counter() - started
    print(f"\n[query extract bench] seeded {ROWS:,} Accounts in {elapsed:.1f} s", flush=True)
    with SalesforceBulkHook(CONN_ID) as hook:
        job = hook.create_query_job(QUERY)
        deadline = time.monotonic() + JOB_TIMEOUT
        while (info := hook.get_job(job.id, "query")).state not in (
            JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert info.state is JobState.JOB_COMPLETE, info.error_message
        assert info.number_records_processed == ROWS

        # Warm-up: one small extract loads every module and pool, so the figures below are the extract's own.
        warm = hook.create_query_job("SELECT Id FROM Account LIMIT 1000")
        while hook.get_job(warm.id, "query").state is not JobState.JOB_COMPLETE:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # (10 pages over 4 threads: each thread's malloc arena and HTTP pool exist before the measurements)
    for options in (ExtractOptions(concurrency=4, max_records_per_page=100),
                    ExtractOptions(output="single", compression="gzip", max_records_per_page=100)):
        extract_query_results(lambda: SalesforceBulkHook(CONN_ID), warm.id, tmp_path / "warm-up", options)

    server_pid = emulator_process.process.pid
    for index, (label, options) in enumerate(CONFIGURATIONS):
        options = dataclasses.replace(options, max_records_per_page=PAGE_ROWS)
        destination = tmp_path / f"extract-{index}"
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM: the peak below covers this extract only
        rss_before = _status_kb("VmRSS:") / 1024
        server_cpu = _cpu_seconds(server_pid)
        wall, cpu = time.perf_counter(), time.process_time()
        result = extract_query_results(lambda: SalesforceBulkHook(CONN_ID), job.id, destination, options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        server_cpu = _cpu_seconds(server_pid) - server_cpu
        peak = _status_kb("VmHWM:") / 1024
        assert result.record_count == ROWS
        assert sum(page.record_count for page in result.pages) == ROWS
        stored = sum(Path(uri.removeprefix("file://")).stat().st_size for uri in result.files)
        print(
            f"[query extract bench] {label}: {result.csv_bytes / 1e6:.1f} MB CSV ({ROWS:,} rows, "
            f"{len(result.pages)} pages) in {wall:.1f} s = {result.csv_bytes / 1e6 / wall:.1f} MB/s, "
            f"{ROWS / wall:,.0f} rows/s; stored {stored / 1e6:.1f} MB; CPU client {cpu:.1f} s / server "
            f"{server_cpu:.1f} s; client RSS {rss_before:.0f} MB before, peak {peak:.0f} MB "
            f"(+{peak - rss_before:.1f})",
            flush=True,
        )
        assert peak - rss_before < MAX_RSS_GROWTH_MB
        for uri in result.files:  # keep the disk use of the whole run to one extract at a time
            Path(uri.removeprefix("file://")).unlink()
