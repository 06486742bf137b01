"""Speed and memory of the CSV scanner, the split and the download tee on a generated ~200 MB file.

Run explicitly: ``.venv/bin/pytest tests/benchmarks/test_csv_split_bench.py -m benchmark -s``.
``SFBULK_BENCH_MB`` changes the file size. Each measurement runs in a fresh interpreter; its peak RSS
(``VmHWM``) is reset just before the measured call (``/proc/self/clear_refs``), so the figure covers that
call alone. Speed is reported per wall-clock second and per CPU second (the latter is what the target is
checked against, because other work on the machine slows wall time but not CPU time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

SIZE_MB = int(os.environ.get("SFBULK_BENCH_MB", "200"))
#: Speed target from the brief, for data without quoted values.
TARGET_PLAIN_MB_S = 100.0
#: Memory must stay flat: about one chunk plus one record, whatever the file size.
MAX_RSS_GROWTH_MB = 64.0

HEADER = b"Name,External_Id__c,Phone,Email,Description,AnnualRevenue,Industry,BillingCity\n"


def _generate(path: Path, kind: str) -> int:
    """Write a ~SIZE_MB CSV; return its record count."""
    target = SIZE_MB * 1_000_000
    records = 0
    size = len(HEADER)
    with path.open("wb") as out:
        out.write(HEADER)
        while size < target:
            block = []
            for i in range(records, records + 10_000):
                if kind == "plain":
                    row = (
                        f"Acme Corporation {i},EXT-{i:010d},+1 415 555 {i % 10000:04d},buyer{i}@example.com,"
                        f"Regular customer account number {i} in good standing,{i * 7 % 1000000}.50,"
                        f"Technology,San Francisco\n"
                    )
                else:
                    row = (
                        f'"Acme, Corp. {i}","EXT-{i:010d}","+1 415 555 {i % 10000:04d}",'
                        f'"buyer{i}@example.com",'
                        f'"She said ""ship it""\nsecond line, Zürich 東京 {i}","{i * 7 % 1000000}.50",'
                        f'"Technology","San Francisco"\n'
                    )
                block.append(row)
            data = "".join(block).encode()
            out.write(data)
            size += len(data)
            records += len(block)
    return records


_RUNNER = r"""
import json, sys, time
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import split_csv
from airflow_provider_sfbulk.csvio.tee import CsvTee


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


mode, source, spool = sys.argv[1:4]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) so that it covers the measured call only
rss_before = status("VmRSS:")
wall, cpu = time.perf_counter(), time.process_time()
if mode == "inspect":
    records, parts = inspect_csv(source).record_count, 0
elif mode == "tee":
    # what a result or page download does per chunk: count, hash and store (here: to /dev/null)
    with open(source, "rb") as stream, open("/dev/null", "wb") as sink:
        tee = CsvTee(sink)
        while chunk := stream.read(1 << 20):
            tee.write(chunk)
        tee.close()
        records, parts = tee.check_balanced(), 0
else:
    with split_csv(source, 50_000_000, spool_dir=spool) as split:
        records, parts = split.record_count, len(split)
        assert sum(p.record_count for p in split.parts) == records
        assert all(p.byte_count <= 50_000_000 for p in split.parts)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"records": records, "parts": parts, "wall": wall, "cpu": cpu,
                  "rss_before_kb": rss_before, "peak_kb": status("VmHWM:")}))
"""


def _run(mode: str, source: Path, spool: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, mode, str(source), str(spool)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(done.stdout)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", ["plain", "quoted"])
def test_split_speed_and_memory(kind: str, tmp_path: Path) -> None:
    source = tmp_path / f"{kind}.csv"
    records = _generate(source, kind)
    megabytes = source.stat().st_size / 1_000_000
    spool = tmp_path / "spool"
    spool.mkdir()
    report = {}
    for mode in ("inspect", "tee", "split"):
        result = _run(mode, source, spool)
        assert result["records"] == records
        wall_speed = megabytes / result["wall"]
        cpu_speed = megabytes / result["cpu"]
        growth = (result["peak_kb"] - result["rss_before_kb"]) / 1024
        report[mode] = cpu_speed
        print(
            f"\n[csv_split bench] {kind:6} {mode:7} {megabytes:6.1f} MB {records:>9,} records: "
            f"{wall_speed:6.1f} MB/s wall, {cpu_speed:6.1f} MB/s per CPU second, "
            f"peak RSS {result['peak_kb'] / 1024:5.1f} MB (+{growth:4.1f} MB during the call)"
            + (f", {result['parts']} parts" if mode == "split" else "")
        )
        assert growth < MAX_RSS_GROWTH_MB
    assert list(spool.iterdir()) == []
    if kind == "plain":
        # CPU-time throughput: other processes on the machine do not distort it as they do wall time.
        assert report["inspect"] >= TARGET_PLAIN_MB_S
