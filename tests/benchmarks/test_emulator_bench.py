"""The emulator is not the bottleneck of what it serves: upload MB/s, records/s, query result MB/s.

Run explicitly: ``.venv/bin/pytest -m benchmark tests/benchmarks/test_emulator_bench.py -s``.

The emulator runs as a separate process (``start_emulator_process``, ``--batch-delay 0``), so the client
(the sync :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`, in the pytest process) and the
server do not share a GIL. Every measured phase prints one line with its wall-clock rate, the CPU seconds
the client and the server spent in it (``time.process_time`` here, ``utime + stime`` of
``/proc/<pid>/stat`` for the server) and the server's memory: resident set before the phase and its peak
during the phase (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` when the phase starts).

To argue "not the bottleneck" with numbers, the same hook calls also run against a *baseline* server: a
bare aiohttp process that answers the token request, discards the upload body and serves a result file
with ``web.FileResponse`` (sendfile; the gzip variant is compressed ahead of time). Its figures are what
the client side alone can do on this machine.

Only correctness (record counts, byte counts) and flat server memory are asserted, never time. Sizes can
be changed: ``SFBULK_BENCH_UPLOAD_MB`` (default 100, the upload limit is 100 MiB), ``SFBULK_BENCH_CONTACTS``
(default 200,000) and ``SFBULK_BENCH_QUERY_ROWS`` (default 1,000,000).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_sfbulk.emulator import config as emulator_config
from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_json, start_emulator_process
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import JobState

pytestmark = pytest.mark.benchmark

UPLOAD_MB = float(os.environ.get("SFBULK_BENCH_UPLOAD_MB", "100"))
CONTACTS = int(os.environ.get("SFBULK_BENCH_CONTACTS", "200000"))
QUERY_ROWS = int(os.environ.get("SFBULK_BENCH_QUERY_ROWS", "1000000"))
#: Rows per page when the query result is read by locator (the resultPages default is 1,000,000).
LOCATOR_PAGE_ROWS = 250_000
#: Flat memory: the server's peak may exceed its resident set at the start of a phase by this much at most,
#: whatever the size of the upload, ingest or extract (SQLite page caches and 1 MiB stream chunks).
MAX_RSS_GROWTH_MB = 64.0
CONN_ID = "sfbulk_bench"
API_VERSION = "60.0"
#: Bound on every wait for a job (the benchmark must stop by itself).
JOB_TIMEOUT = 900.0
TERMINAL = (JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED)

INDUSTRIES = ("Agriculture", "Banking", "Construction", "Education", "Energy", "Finance", "Healthcare",
              "Manufacturing", "Retail", "Technology")
ACCOUNT_HEADER = (
    b"Name,External_Id__c,AccountNumber,Industry,NumberOfEmployees,AnnualRevenue,Phone,Website,"
    b"Description,BillingCity,BillingCountry,Active__c,Customer_Since__c\n"
)
CONTACT_HEADER = (
    b"FirstName,LastName,Email,Phone,Title,Birthdate,Last_Contacted__c,External_Id__c,"
    b"Account.External_Id__c\n"
)
QUERY = (
    "SELECT Id, Name, External_Id__c, AccountNumber, Industry, NumberOfEmployees, AnnualRevenue, "
    "Phone, BillingCity, Active__c, CreatedDate FROM Account"
)


# --- data ------------------------------------------------------------------------------------------------


def _account_row(i: int) -> str:
    return (
        f"Acme Holdings {i},ACC-{i:09d},AN{i:08d},{INDUSTRIES[i % 10]},{i % 50000},{i * 7 % 10000000}.25,"
        f"+1 415 555 {i % 10000:04d},https://acme{i}.example.com,"
        f"Customer account {i} loaded by the emulator benchmark; regular terms,"
        f"San Francisco,United States,{'true' if i % 2 else 'false'},2019-{i % 12 + 1:02d}-{i % 28 + 1:02d}\n"
    )


def _write_accounts(path: Path, megabytes: float) -> int:
    """Write an Account insert CSV of just under ``megabytes`` MB; return its record count."""
    limit = int(megabytes * 1_000_000)
    records = 0
    size = len(ACCOUNT_HEADER)
    with path.open("wb") as out:
        out.write(ACCOUNT_HEADER)
        while True:
            block = "".join(_account_row(i) for i in range(records, records + 5_000)).encode()
            if size + len(block) > limit:
                break
            out.write(block)
            size += len(block)
            records += 5_000
    return records


def _write_contacts(path: Path, count: int, accounts: int) -> None:
    """A Contact upsert CSV whose rows point at inserted Accounts by their external id."""
    with path.open("wb") as out:
        out.write(CONTACT_HEADER)
        for start in range(0, count, 5_000):
            out.write("".join(
                f"Jane{i},Doe {i},jane.doe{i}@example.com,+1 212 555 {i % 10000:04d},Buyer,"
                f"19{50 + i % 50}-{i % 12 + 1:02d}-{i % 28 + 1:02d},2024-03-{i % 28 + 1:02d}T10:15:00.000Z,"
                f"CON-{i:09d},ACC-{i * 7 % accounts:09d}\n"
                for i in range(start, min(count, start + 5_000))
            ).encode())


# --- measuring ---------------------------------------------------------------------------------------------


class ServerProbe:
    """Memory and CPU time of a process, read from ``/proc/<pid>``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")

    def status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime

    def reset_peak(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")


@dataclass
class Phase:
    """Figures of one measured phase (filled when the ``measure`` block ends)."""

    name: str
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    rss_before_mb: float = 0.0
    peak_mb: float = 0.0
    rss_after_mb: float = 0.0

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.rss_before_mb

    def line(self, rate: str) -> str:
        return (
            f"[emulator bench] {self.name}: {rate}; wall {self.wall:.2f} s,"
            f" CPU client {self.client_cpu:.2f} s"
            f" / server {self.server_cpu:.2f} s; server RSS {self.rss_before_mb:.0f} MB before, peak"
            f" {self.peak_mb:.0f} MB (+{self.growth_mb:.1f}), {self.rss_after_mb:.0f} MB after"
        )


@contextmanager
def measure(name: str, probe: ServerProbe) -> Iterator[Phase]:
    phase = Phase(name)
    probe.reset_peak()
    phase.rss_before_mb = probe.status_kb("VmRSS:") / 1024
    server_cpu, client_cpu, wall = probe.cpu_seconds(), time.process_time(), time.perf_counter()
    yield phase
    phase.wall = time.perf_counter() - wall
    phase.client_cpu = time.process_time() - client_cpu
    phase.server_cpu = probe.cpu_seconds() - server_cpu
    phase.peak_mb = probe.status_kb("VmHWM:") / 1024
    phase.rss_after_mb = probe.status_kb("VmRSS:") / 1024


def _report(phase: Phase, rate: str) -> None:
    print("\n" + phase.line(rate), flush=True)


# --- servers -----------------------------------------------------------------------------------------------


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], SalesforceBulkHook]]:
    """``make_hook(conn_id, base_url)``: a sync hook on a password connection to ``base_url``."""
    hooks: list[SalesforceBulkHook] = []

    def make(conn_id: str, base_url: str) -> SalesforceBulkHook:
        connection = connection_json(base_url, api_version=API_VERSION, timeout=600)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection)
        hook = SalesforceBulkHook(conn_id)
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    with start_emulator_process(tmp_path / "emulator", extra_args=["--batch-delay", "0"]) as proc:
        yield proc


_BASELINE = r"""
import asyncio, pathlib, sys
from aiohttp import web

root = pathlib.Path(sys.argv[1])
received = {"bytes": 0}


async def token(request):
    base = f"http://{request.host}"
    return web.json_response({"access_token": "00Dbaseline!token", "instance_url": base, "id": base + "/id",
                              "token_type": "Bearer", "issued_at": "0", "signature": "x"})


async def upload(request):
    async for chunk in request.content.iter_chunked(1 << 20):
        received["bytes"] += len(chunk)
    return web.Response(status=201)


async def uploaded(request):
    return web.json_response(received)


async def results(request):
    return web.FileResponse(root / (request.match_info["job"] + ".csv"), headers={
        "Sforce-Locator": "null", "Sforce-NumberOfRecords": (root / "count").read_text()})


async def main():
    app = web.Application()
    app.router.add_post("/services/oauth2/token", token)
    app.router.add_put("/services/data/{version}/jobs/ingest/{job}/batches", upload)
    app.router.add_get("/uploaded", uploaded)
    app.router.add_get("/services/data/{version}/jobs/query/{job}/results", results)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"BASELINE_URL=http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


@dataclass
class Baseline:
    process: subprocess.Popen[str]
    base_url: str
    root: Path

    def uploaded_bytes(self) -> int:
        with urllib.request.urlopen(f"{self.base_url}/uploaded", timeout=10) as response:
            return int(json.loads(response.read())["bytes"])


@pytest.fixture
def baseline(tmp_path: Path) -> Iterator[Baseline]:
    """The bare aiohttp server (separate process) giving the client-side ceiling."""
    root = tmp_path / "baseline"
    root.mkdir()
    process = subprocess.Popen([sys.executable, "-c", _BASELINE, str(root)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("BASELINE_URL="):
                found.append(line.split("=", 1)[1].strip())
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(30), "the baseline server did not start"
        assert found, "the baseline server did not print its URL"
        yield Baseline(process, found[0], root)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- helpers -------------------------------------------------------------------------------------------


def _wait_terminal(hook: SalesforceBulkHook, job_id: str, kind: str) -> JobInfo:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job = hook.get_job(job_id, kind)
        if job.state in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} after {JOB_TIMEOUT} s"
        time.sleep(0.05)


def _admin_seed(base_url: str, object_name: str, count: int) -> int:
    request = urllib.request.Request(
        f"{base_url}/__emulator/seed", data=json.dumps({"object": object_name, "count": count}).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=JOB_TIMEOUT) as response:
        return int(json.loads(response.read())["inserted"])


def _mb(size: int) -> float:
    return size / 1_000_000


# --- benchmarks ------------------------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_upload_and_ingest(emulator_process: EmulatorProcess, baseline: Baseline, tmp_path: Path,
                           make_hook: Callable[[str, str], SalesforceBulkHook]) -> None:
    """~100 MB upload (emulator vs baseline), then its insert, then a Contact upsert by parent external id."""
    probe = ServerProbe(emulator_process.process.pid)
    hook = make_hook(CONN_ID, emulator_process.base_url)
    accounts_csv = tmp_path / "accounts.csv"
    accounts = _write_accounts(accounts_csv, UPLOAD_MB)
    size = accounts_csv.stat().st_size
    assert size < emulator_config.EmulatorConfig().max_upload_bytes

    # Client ceiling first: the same hook call against a server that discards the body.
    base_hook = make_hook(f"{CONN_ID}_baseline", baseline.base_url)
    assert base_hook.instance_url == baseline.base_url  # authenticate outside the measured phase
    with measure("upload, baseline server", ServerProbe(baseline.process.pid)) as phase, \
            accounts_csv.open("rb") as data:
        base_hook.upload_job_data("750000000000001AAA", data)
    assert baseline.uploaded_bytes() == size
    _report(phase, f"{_mb(size):.1f} MB at {_mb(size) / phase.wall:.1f} MB/s")

    hook.get_limits()  # authenticate outside the measured phase
    job = hook.create_ingest_job("Account", "insert")
    with measure("upload, emulator", probe) as phase, accounts_csv.open("rb") as data:
        hook.upload_job_data(job.id, data)
    _report(phase, f"{_mb(size):.1f} MB ({accounts:,} records) at {_mb(size) / phase.wall:.1f} MB/s")
    assert phase.growth_mb < MAX_RSS_GROWTH_MB

    with measure("insert Account", probe) as phase:
        hook.close_job(job.id)
        done = _wait_terminal(hook, job.id, "ingest")
    assert done.state is JobState.JOB_COMPLETE, done.error_message
    assert done.number_records_processed == accounts
    assert done.number_records_failed == 0
    _report(phase, f"{accounts:,} records at {accounts / phase.wall:,.0f} records/s "
                   f"(JobInfo totalProcessingTime {done.total_processing_time} ms)")
    assert phase.growth_mb < MAX_RSS_GROWTH_MB

    contacts_csv = tmp_path / "contacts.csv"
    _write_contacts(contacts_csv, CONTACTS, accounts)
    for attempt, expected in (("upsert Contact (all new)", "created"),
                              ("upsert Contact (all matched)", "updated")):
        job = hook.create_ingest_job("Contact", "upsert", external_id_field="External_Id__c")
        with contacts_csv.open("rb") as data:
            hook.upload_job_data(job.id, data)
        with measure(attempt, probe) as phase:
            hook.close_job(job.id)
            done = _wait_terminal(hook, job.id, "ingest")
        assert done.state is JobState.JOB_COMPLETE, done.error_message
        assert done.number_records_processed == CONTACTS
        assert done.number_records_failed == 0
        _report(phase, f"{CONTACTS:,} records {expected} at {CONTACTS / phase.wall:,.0f} records/s "
                       f"(JobInfo totalProcessingTime {done.total_processing_time} ms)")
        assert phase.growth_mb < MAX_RSS_GROWTH_MB
    results = tmp_path / "contacts-success.csv"
    with results.open("wb") as out:
        hook.download_ingest_results(job.id, "successfulResults", out)
    with results.open("rb") as f:
        lines = f.read().splitlines()
    assert len(lines) == CONTACTS + 1
    assert all(line.startswith(b'"003') and b'"false"' in line for line in lines[1:6])


@pytest.mark.timeout(1200)
def test_query_extract(emulator_process: EmulatorProcess, baseline: Baseline, tmp_path: Path,
                       make_hook: Callable[[str, str], SalesforceBulkHook]) -> None:
    """Seed rows, run a query job, download its result pages plain and gzip (emulator vs baseline)."""
    probe = ServerProbe(emulator_process.process.pid)
    hook = make_hook(CONN_ID, emulator_process.base_url)
    with measure("seed Account (admin endpoint)", probe) as phase:
        assert _admin_seed(emulator_process.base_url, "Account", QUERY_ROWS) == QUERY_ROWS
    _report(phase, f"{QUERY_ROWS:,} records at {QUERY_ROWS / phase.wall:,.0f} records/s")

    hook.get_limits()
    with measure("query job to JobComplete", probe) as phase:
        job = hook.create_query_job(QUERY)
        done = _wait_terminal(hook, job.id, "query")
    assert done.state is JobState.JOB_COMPLETE, done.error_message
    assert done.number_records_processed == QUERY_ROWS
    _report(phase, f"{QUERY_ROWS:,} rows at {QUERY_ROWS / phase.wall:,.0f} rows/s")
    assert phase.growth_mb < MAX_RSS_GROWTH_MB

    refs = hook.get_result_pages(job.id)
    by_locator: list[tuple[str | None, int | None]] = [(ref.locator, ref.max_records) for ref in refs]
    sizes: dict[str, int] = {}
    for label, gzip_wanted, pages in (
        ("plain, resultPages", False, by_locator),
        ("gzip, resultPages", True, by_locator),
        (f"plain, locator pages of {LOCATOR_PAGE_ROWS:,}", False, None),
        (f"gzip, locator pages of {LOCATOR_PAGE_ROWS:,}", True, None),
    ):
        out_path = tmp_path / "extract.csv"
        rows = written = count = 0
        with measure(f"download {label}", probe) as phase, out_path.open("wb") as out:
            if pages is not None:
                for locator, max_records in pages:
                    page = hook.download_query_page(job.id, out, locator=locator, max_records=max_records,
                                                    gzip=gzip_wanted)
                    rows += page.record_count
                    written += page.bytes_written
                    count += 1
            else:
                locator = None
                while True:
                    page = hook.download_query_page(job.id, out, locator=locator,
                                                    max_records=LOCATOR_PAGE_ROWS, gzip=gzip_wanted)
                    rows += page.record_count
                    written += page.bytes_written
                    count += 1
                    locator = page.next_locator
                    if locator is None:
                        break
        assert rows == QUERY_ROWS
        assert out_path.stat().st_size == written
        sizes[label] = written
        _report(phase, f"{_mb(written):.1f} MB in {count} page(s) at {_mb(written) / phase.wall:.1f} MB/s")
        assert phase.growth_mb < MAX_RSS_GROWTH_MB
    assert len(set(sizes.values())) <= 2  # one header line per page: the two paging schemes differ by that

    # Client ceiling: the hook downloading the same bytes as one static file (gzip: compressed beforehand).
    extract = tmp_path / "extract.csv"
    hook_out = tmp_path / "baseline-out.csv"
    served = baseline.root / "750000000000002AAA.csv"
    shutil.copyfile(extract, served)
    (baseline.root / "count").write_text(str(QUERY_ROWS))
    base_hook = make_hook(f"{CONN_ID}_baseline", baseline.base_url)
    assert base_hook.instance_url == baseline.base_url
    for label, gzip_wanted in (("plain", False), ("gzip", True)):
        if gzip_wanted:
            # What gzip costs anyway: zlib level 6 (the emulator's level), one core, in this process.
            cpu = time.process_time()
            with served.open("rb") as src, gzip.open(served.with_name(served.name + ".gz"), "wb", 6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            cpu = time.process_time() - cpu
            print("\n[emulator bench] zlib level 6 compression alone:"
                  f" {_mb(served.stat().st_size) / cpu:.1f} MB per CPU second", flush=True)
        with measure(f"download {label}, baseline static file", ServerProbe(baseline.process.pid)) as phase, \
                hook_out.open("wb") as out:
            page = base_hook.download_query_page("750000000000002AAA", out, gzip=gzip_wanted)
        assert page.bytes_written == served.stat().st_size
        _report(phase, f"{_mb(page.bytes_written):.1f} MB at {_mb(page.bytes_written) / phase.wall:.1f} MB/s")
