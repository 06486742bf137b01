"""Waiting at scale: 1,000 ``SalesforceBulkJobTrigger``s in one event loop, against a naive poller.

Run with ``pytest -m benchmark tests/benchmarks/test_wait_bench.py -s`` (about 90 s); the figures are
in ``docs/performance.md`` ("Waiting at scale").

How it measures:

- The emulator runs as a separate process over **HTTPS** (``--tls``; the connection trusts its CA through
  ``ca_bundle``), with ``--workers 50 --batch-delay 1.5``: each one-record ingest job takes 1.5 s once a
  worker picks it up, so 1,000 jobs finish spread over about 30 s.
- For each waiter, 1,000 ingest jobs are created (multipart create-and-upload, so they start by
  themselves), then one **child process** watches all of them at once in one event loop:
  - ``trigger``: 1,000 ``SalesforceBulkJobTrigger``s (one job each, ``poll_interval`` 2 s growing by 1.5
    up to 10 s), each run as its own task, as one triggerer runs them;
  - ``naive``: a fixed 2 s interval and a new ``aiohttp.ClientSession`` per poll (one token fetched up
    front, one TLS context shared: the naive poller is given those for free).
- The child's CPU seconds (user + system) and peak RSS (``ru_maxrss``) come from the OS: ``os.wait4`` on
  the child once it exits, in a small launcher (``measured_child``; spawned straight from pytest, the child
  would be charged pytest's own peak RSS). The child also reports its RSS once its imports are done.
- Requests are counted at the emulator: two rules of its fault registry (``/__emulator/faults``) match the
  token endpoint and ``GET .../jobs/ingest/<id>`` and only delay them by 1 ms; the registry counts how
  often each fired.

Only correctness is asserted (every job ``JobComplete``, one token request for the triggers, fewer polls
than the naive poller) plus the memory target (peak RSS under 200 MB), never a speed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from measured_child import run_measured

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_json, start_emulator_process
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

pytestmark = pytest.mark.benchmark

JOBS = 1000
WORKERS = 50
BATCH_DELAY = 1.5
POLL = 2.0
FACTOR = 1.5
MAX_POLL = 10.0
CHILD_TIMEOUT = 150.0
CONN_ID = "sfbulk_wait"
TOKEN_PATH = r"^/services/oauth2/token$"
POLL_PATH = r"/jobs/ingest/[A-Za-z0-9]{15,18}$"
RSS_TARGET_MB = 200

_PRELUDE = r"""
import asyncio, collections, json, sys, time

def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
"""

_TRIGGERS = (
    _PRELUDE
    + r"""
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

ids, conn_id, poll, factor, cap = json.load(open(sys.argv[1])), sys.argv[2], *map(float, sys.argv[3:6])

async def one(trigger):
    async for event in trigger.run():
        return event.payload["status"]

async def main():
    imported = rss_kb()
    deadline = time.time() + 120
    triggers = [
        SalesforceBulkJobTrigger(conn_id=conn_id, job_ids=[job_id], poll_interval=poll, backoff_factor=factor,
                                 max_poll_interval=cap, deadline=deadline)
        for job_id in ids
    ]
    started = time.monotonic()
    statuses = await asyncio.gather(*(one(trigger) for trigger in triggers))
    result = {"imported_kb": imported, "wall": time.monotonic() - started,
              "outcomes": dict(collections.Counter(statuses))}
    print("RESULT=" + json.dumps(result), flush=True)

asyncio.run(main())
"""
)

_NAIVE = (
    _PRELUDE
    + r"""
import ssl

import aiohttp

ids, settings, interval = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), float(sys.argv[3])
TERMINAL = {"JobComplete", "Failed", "Aborted"}

async def token(context):
    form = {"grant_type": "password", "client_id": settings["client_id"],
            "client_secret": settings["client_secret"], "username": settings["username"],
            "password": settings["password"] + settings["security_token"]}
    async with aiohttp.ClientSession() as session:
        async with session.post(settings["base_url"] + "/services/oauth2/token", data=form, ssl=context) as r:
            return await r.json()

async def poll(job_id, auth, context, errors):
    url = f"{auth['instance_url']}/services/data/v60.0/jobs/ingest/{job_id}"
    headers = {"Authorization": "Bearer " + auth["access_token"]}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url, headers=headers, ssl=context) as response:
                    state = (await response.json())["state"]
        except (aiohttp.ClientError, asyncio.TimeoutError):
            errors.append(job_id)
            continue
        if state in TERMINAL:
            return state
    return "timeout"

async def main():
    imported = rss_kb()
    context = ssl.create_default_context(cafile=settings["ca"])
    auth = await token(context)
    errors = []
    started = time.monotonic()
    states = await asyncio.gather(*(poll(job_id, auth, context, errors) for job_id in ids))
    result = {"imported_kb": imported, "wall": time.monotonic() - started, "errors": len(errors),
              "outcomes": dict(collections.Counter(states))}
    print("RESULT=" + json.dumps(result), flush=True)

asyncio.run(main())
"""
)


@dataclass
class Figures:
    """What one waiter cost."""

    waiter: str
    wall: float
    cpu: float
    peak_mb: float
    imported_mb: float
    polls: int
    tokens: int
    outcomes: dict[str, int]

    @property
    def polls_per_job(self) -> float:
        return self.polls / JOBS


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """The emulator over HTTPS, 50 job threads, 1.5 s per one-record job."""
    args = ["--workers", str(WORKERS), "--batch-delay", str(BATCH_DELAY)]
    with start_emulator_process(tmp_path / "sf", tls=True, extra_args=args) as process:
        yield process


def test_thousand_waits(
    emulator_process: EmulatorProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connection_json(emulator_process)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn)
    figures = []
    for waiter in ("trigger", "naive"):
        ids_file = tmp_path / f"{waiter}-ids.json"
        ids_file.write_text(json.dumps(_create_jobs(JOBS)))
        _count_requests(emulator_process)
        figures.append(_run_waiter(waiter, emulator_process, ids_file, tmp_path))
    _print_table(figures)
    trigger, naive = figures
    for result in figures:
        assert result.outcomes == {"success" if result.waiter == "trigger" else "JobComplete": JOBS}, result
    assert trigger.tokens == 1
    assert trigger.polls < naive.polls
    assert trigger.peak_mb < RSS_TARGET_MB


# --- helpers -------------------------------------------------------------------------------------------


def _create_jobs(count: int) -> list[str]:
    """``count`` one-record insert jobs, created and started in four threads (one hook each)."""
    local = threading.local()

    def create(index: int) -> str:
        if not hasattr(local, "hook"):
            local.hook = SalesforceBulkHook(CONN_ID)
        data = b"Name\nWait %d\n" % index
        return str(local.hook.create_ingest_job_with_data("Account", "insert", data).id)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(create, range(count)))


def _count_requests(process: EmulatorProcess) -> None:
    """(Re)start the counters: 1 ms delay rules on the token endpoint and on job polls (fired = count)."""
    rules = [
        {"kind": "delay", "delay": 0.001, "method": "POST", "path": TOKEN_PATH},
        {"kind": "delay", "delay": 0.001, "method": "GET", "path": POLL_PATH},
    ]
    response = requests.put(
        f"{process.base_url}/__emulator/faults",
        json={"rules": rules},
        verify=str(process.ca_path),
        timeout=10,
    )
    response.raise_for_status()


def _counted(process: EmulatorProcess) -> tuple[int, int]:
    response = requests.get(f"{process.base_url}/__emulator/faults", verify=str(process.ca_path), timeout=10)
    response.raise_for_status()
    fired = {rule["path"]: rule["fired"] for rule in response.json()["rules"]}
    return fired[TOKEN_PATH], fired[POLL_PATH]


def _run_waiter(waiter: str, process: EmulatorProcess, ids_file: Path, tmp_path: Path) -> Figures:
    if waiter == "trigger":
        args = ["-c", _TRIGGERS, str(ids_file), CONN_ID, str(POLL), str(FACTOR), str(MAX_POLL)]
    else:
        defaults = EmulatorConfig()
        settings: dict[str, Any] = {
            "base_url": process.base_url,
            "ca": str(process.ca_path),
            "client_id": defaults.client_id,
            "client_secret": defaults.client_secret,
            "username": defaults.username,
            "password": defaults.password,
            "security_token": defaults.security_token,
        }
        args = ["-c", _NAIVE, str(ids_file), json.dumps(settings), str(POLL)]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    log = tmp_path / f"{waiter}.log"
    usage = run_measured([sys.executable, *args], env=env, log=log, timeout=CHILD_TIMEOUT)
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("RESULT=")]
    assert usage.exit == 0, f"{waiter} child failed ({usage.exit}):\n{text[-4000:]}"
    assert lines, f"{waiter} child printed no result:\n{text[-4000:]}"
    result = json.loads(lines[-1][len("RESULT=") :])
    tokens, polls = _counted(process)
    return Figures(
        waiter=waiter,
        wall=result["wall"],
        cpu=usage.cpu,
        peak_mb=usage.peak_mb,
        imported_mb=result["imported_kb"] / 1024,
        polls=polls,
        tokens=tokens,
        outcomes=result["outcomes"],
    )


def _print_table(figures: list[Figures]) -> None:
    print()
    print(f"{JOBS} jobs, {WORKERS} emulator workers, {BATCH_DELAY} s per job, HTTPS; {time.ctime()}")
    print("| Waiter | Wall | CPU | Peak RSS | RSS after imports | Polls (per job) | Token requests |")
    print("|---|---|---|---|---|---|---|")
    for f in figures:
        print(
            f"| {f.waiter} | {f.wall:.1f} s | {f.cpu:.1f} s | {f.peak_mb:.0f} MB | {f.imported_mb:.0f} MB "
            f"| {f.polls} ({f.polls_per_job:.2f}) | {f.tokens} |"
        )
