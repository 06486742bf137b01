"""Ingest operator speed and memory: a generated Account CSV loaded end to end through the emulator.

Run explicitly: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_ingest_bench.py -s``.
``SFBULK_BENCH_INGEST_ROWS`` sets the row count (default 400,000), ``SFBULK_BENCH_INGEST_PART_MB`` the
largest part per job (default 5 MB, so the load becomes several jobs).

The emulator runs as a separate process (no shared GIL). The operator runs here, not deferrable, so the
whole task (validation and split, uploads, closing, polling, result download with counting and hashing,
manifest) is in this process. One line is printed per configuration: rows per wall-clock second, the CPU
seconds of the client and of the server, and the client's resident set before and at its peak
(``VmHWM``, reset just before). Only correctness (counts, emulator rows) and flat client memory are
asserted, never time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_json, start_emulator_process
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("SFBULK_BENCH_INGEST_ROWS", "400000"))
PART_MB = float(os.environ.get("SFBULK_BENCH_INGEST_PART_MB", "5"))
CONN_ID = "sfbulk_ingest_bench"
#: Flat memory: the load may grow the client's resident set by this much at most, whatever the size.
MAX_RSS_GROWTH_MB = 64.0


class _TI:
    def __init__(self, run_id: str) -> None:
        self.dag_id, self.run_id, self.task_id = "bench", run_id, "load"
        self.map_index, self.try_number = -1, 1

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _write_source(path: Path, rows: int, prefix: str) -> int:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Name,External_Id__c,NumberOfEmployees,BillingCity,Description\n")
        for start in range(0, rows, 10_000):
            out.write("".join(
                f'{prefix} Account {i},{prefix}-{i},{i % 5000},Zürich,'
                f'"Line one, with comma\nand ""quotes"" {i}"\n'
                for i in range(start, min(rows, start + 10_000))
            ))
    return path.stat().st_size


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with start_emulator_process(tmp_path / "emulator", extra_args=["--batch-delay", "0"]) as proc:
        yield proc


@pytest.mark.timeout(3600)
def test_ingest_operator_speed_and_memory(emulator_process: EmulatorProcess, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(emulator_process, timeout=600))
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    common = {"salesforce_conn_id": CONN_ID, "object_name": "Account", "operation": "insert",
              "deferrable": False, "poll_interval": 0.2, "max_poll_interval": 1.0}
    # warm-up: loads every module, pool and thread once
    warm = tmp_path / "warm.csv"
    _write_source(warm, 100, "warm")
    SalesforceBulkIngestOperator(task_id="load", source=str(warm), **common).execute({"ti": _TI("warm")})

    server_pid = emulator_process.process.pid
    configurations = [
        ("job_concurrency=4, upload_concurrency=4", {"job_concurrency": 4, "upload_concurrency": 4}),
        ("job_concurrency=1 (serial)", {"job_concurrency": 1, "upload_concurrency": 1}),
    ]
    for index, (label, extra) in enumerate(configurations):
        source = tmp_path / f"accounts-{index}.csv"
        size = _write_source(source, ROWS, f"B{index}")
        op = SalesforceBulkIngestOperator(task_id="load", source=str(source),
                                          max_bytes_per_job=int(PART_MB * 1_000_000), **common, **extra)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        rss_before = _status_kb("VmRSS:") / 1024
        server_cpu = _cpu_seconds(server_pid)
        wall, cpu = time.perf_counter(), time.process_time()
        result = op.execute({"ti": _TI(f"run-{index}")})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        server_cpu = _cpu_seconds(server_pid) - server_cpu
        peak = _status_kb("VmHWM:") / 1024
        assert result["records_successful"] == ROWS
        assert result["records_failed"] == result["records_unprocessed"] == 0
        print(
            f"\n[ingest bench] {label}: {ROWS:,} rows, {size / 1e6:.1f} MB in {len(result['job_ids'])} "
            f"jobs: {wall:.1f} s = {ROWS / wall:,.0f} rows/s, {size / 1e6 / wall:.1f} MB/s; CPU client "
            f"{cpu:.1f} s / "
            f"server {server_cpu:.1f} s; client RSS {rss_before:.0f} MB before, peak {peak:.0f} MB "
            f"(+{peak - rss_before:.1f})",
            flush=True,
        )
        assert peak - rss_before < MAX_RSS_GROWTH_MB
        source.unlink()
