"""The side-by-side harness (``scripts/benchmark``) runs end to end at a small size, both profiles.

Run explicitly: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_side_by_side_bench.py -s`` (about 4
minutes on an idle 2-core machine). The figures of ``docs/performance.md`` come from ``scripts/benchmark``
itself at full size; this test only proves that every client delivers every record (the harness checks
each run and exits non-zero on a failed check) and that the tables come out, never a speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

HARNESS = Path(__file__).with_name("side_by_side.py")


@pytest.mark.timeout(1200)
def test_every_client_delivers_every_record(tmp_path: Path) -> None:
    args = [
        "--cases", "ingest,query", "--profiles", "cpu,salesforce", "--reps", "1",
        "--ingest-mb", "1", "--sf-ingest-mb", "1", "--query-rows", "20000", "--sf-query-rows", "20000",
        "--page-rows", "5000", "--batch-seconds", "0.5", "--download-bandwidth", "2000000",
        "--work", str(tmp_path / "work"),
    ]
    done = subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=1100,
                          env={**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")})
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for block in ("ingest-cpu", "ingest-salesforce", "query-cpu", "query-salesforce"):
        assert f"<!-- sbs:{block} -->" in done.stdout
    for client in ("raw floor", "simple-salesforce", "ours", "raw resultPages x4"):
        assert f"| {client}" in done.stdout
