"""Side by side: the raw HTTP floor, simple-salesforce and this provider, same emulator, same run.

One command runs every case and prints the tables (``scripts/benchmark --help``)::

    scripts/benchmark --cases ingest,query --profiles cpu,salesforce --reps 3 --write-doc

How it measures:

- The emulator runs as its own process over HTTPS (simple-salesforce only speaks ``https://``), with the
  same options for every client of a case and profile. Ingest: a fresh emulator (empty tables) for every
  client run, so that no client loads into a table its predecessors filled (a fuller SQLite table costs
  the server more per row: at 1 GiB 341 s of server CPU against 308 s for the same records). Query: one
  emulator per case and profile, seeded once, shared by every client (queries change nothing).
- Each client runs as its own child process (``side_by_side_clients.py``), one after the other; the order
  rotates at every repetition (raw, ssf, ours; then ssf, ours, raw; ...). Wall time is measured around
  the child; CPU (user + system) and peak RSS (``ru_maxrss``) are the child's own, from ``os.wait4``.
  The emulator's CPU per run comes from ``/proc/<pid>/stat``.
- Data: a deterministic tricky Account CSV (every value quoted, commas, doubled quotes, a line break and
  multibyte text in every record) for ingest; Accounts seeded through ``POST /__emulator/seed`` for query.
- Checks after every run (in this process, outside the measurement): ingest results complete (every
  record in a success file, counted CSV-aware; failed and unprocessed files empty) and the jobs' counters;
  query: every row delivered (counted in the files). A failed check stops the benchmark.
- Tables: medians, spreads (min–max), ratios of medians to the raw floor and to simple-salesforce.

Profiles (emulator options):

- ``cpu``: as fast as the emulator goes (``--batch-delay 0``, 2 job threads).
- ``salesforce``: every internal batch of 10,000 records takes at least ``--batch-seconds`` (default 4 s)
  and every result stream is capped at ``--download-bandwidth`` bytes per second (default 10 MB/s);
  10 job threads, so that jobs run in parallel as an org runs them.

``--write-doc`` replaces the marked blocks of ``docs/performance.md`` (``<!-- sbs:CASE-PROFILE -->``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from measured_child import run_measured  # noqa: E402  (beside this file)

from airflow_provider_sfbulk.csvio.tee import CsvTee  # noqa: E402
from airflow_provider_sfbulk.emulator.config import EmulatorConfig  # noqa: E402
from airflow_provider_sfbulk.emulator.testing import (  # noqa: E402
    EmulatorProcess,
    connection_json,
    start_emulator_process,
)

CLIENTS_SCRIPT = Path(__file__).with_name("side_by_side_clients.py")
DOC = ROOT / "docs" / "performance.md"
CONN_ID = "sfbulk_side_by_side"
CHILD_TIMEOUT = 3600.0
SOQL = (
    "SELECT Id, Name, AccountNumber, Industry, NumberOfEmployees, AnnualRevenue, Phone, BillingCity, "
    "Description, Active__c, CreatedDate FROM Account"
)
HEADER = b"Name,Description,BillingCity,NumberOfEmployees,Phone\n"
#: Above this size simple-salesforce's default split fails on the tricky file (see ``clients_for``).
SSF_SPLIT_FAILS_ABOVE = 100_000_000
#: Bytes per job asked of simple-salesforce through ``batch_size`` when its default split fails.
SSF_JOB_BYTES = 90_000_000
#: Bytes of one tricky record (``tricky_row``), about: enough to turn a size into a record count.
TRICKY_ROW_BYTES = 113.5


# --- data -------------------------------------------------------------------------------------------------


def tricky_row(i: int) -> str:
    """One record: quoted commas, doubled quotes, a line break and multibyte text; deterministic."""
    return (
        f'"Acme, Corp. {i}","She said ""ship it""\nline two, Zürich 東京 {i}",'
        f'"São Paulo",{i % 5000},"+1 415 555 {i % 10000:04d}"\n'
    )


def write_tricky_csv(path: Path, size_bytes: int) -> int:
    """A tricky Account CSV of about ``size_bytes``; returns its record count."""
    records, size = 0, len(HEADER)
    with path.open("wb") as out:
        out.write(HEADER)
        while size < size_bytes:
            block = "".join(tricky_row(i) for i in range(records, records + 10_000)).encode()
            out.write(block)
            size += len(block)
            records += 10_000
    return records


def count_records(paths: list[str]) -> int:
    """Records of CSV files (header excluded), counted quote-aware."""
    total = 0
    for name in paths:
        with open(name, "rb") as stream, open(os.devnull, "wb") as sink:
            tee = CsvTee(sink)
            while chunk := stream.read(1 << 20):
                tee.write(chunk)
            tee.close()
            total += tee.check_balanced()
    return total


# --- profiles and clients ---------------------------------------------------------------------------------


@dataclass
class Profile:
    name: str
    emulator_args: list[str]
    description: str


def profiles(args: argparse.Namespace) -> dict[str, Profile]:
    return {
        "cpu": Profile("cpu", ["--batch-delay", "0", "--workers", "2"],
                       "emulator as fast as it goes (`--batch-delay 0`, 2 job threads)"),
        "salesforce": Profile(
            "salesforce",
            ["--batch-seconds", str(args.batch_seconds), "--download-bandwidth", str(args.download_bandwidth),
             "--workers", "10"],
            f"Salesforce-like: {args.batch_seconds:g} s per internal batch of 10,000 records "
            f"(`--batch-seconds`), each result stream capped at {args.download_bandwidth / 1e6:g} MB/s "
            f"(`--download-bandwidth`), 10 job threads"),
    }


@dataclass
class Client:
    label: str
    impl: str
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the client's own call


def clients_for(case: str, profile: str, data_bytes: int) -> list[Client]:
    if case == "ingest":
        ssf = Client("simple-salesforce", "ssf")
        if data_bytes > SSF_SPLIT_FAILS_ABOVE:
            # simple-salesforce estimates each job's size from its values without their quotes, so with
            # quoted values it builds jobs over 100 MB and refuses its own upload ("Data size 111030663
            # exceeds the max file size accepted by Bulk V2"): a user has to give batch_size.
            records = int(data_bytes / TRICKY_ROW_BYTES)
            batch = max(1, int(records * SSF_JOB_BYTES / data_bytes))
            ssf = Client(f"simple-salesforce, batch_size={batch:,}", "ssf", {"batch_size": batch})
        chosen = [Client("raw floor", "raw"), ssf, Client("ours", "ours")]
        if profile == "salesforce":
            # What spreading the file over job_concurrency jobs is worth: the same load cut only where a
            # 100 MB part is full (the operator's behaviour before min_bytes_per_job).
            chosen.append(Client("ours, cut at 100 MB only", "ours", {"min_bytes_per_job": 100_000_000}))
        return chosen
    chosen = [Client("raw floor (locator chain)", "raw"), Client("raw resultPages x4", "raw_parallel"),
              Client("simple-salesforce", "ssf"), Client("ours", "ours")]
    if profile == "salesforce":
        # When each stream is capped, more of them at once is the client's one lever on the download.
        chosen.append(Client("ours, 8 download streams", "ours", {"download_concurrency": 8}))
    return chosen


# --- measuring --------------------------------------------------------------------------------------------


@dataclass
class Run:
    client: str
    wall: float
    cpu: float
    peak_mb: float
    server_cpu: float
    result: dict[str, Any]


def _server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(client: Client, case: str, settings: dict[str, Any], env: dict[str, str], server_pid: int,
              log: Path) -> Run:
    """One client in its own process (started by a small launcher, see ``measured_child``)."""
    settings = {**settings, "options": client.options}
    command = [sys.executable, str(CLIENTS_SCRIPT), client.impl, case, json.dumps(settings)]
    server = _server_cpu(server_pid)
    usage = run_measured(command, env=env, log=log, timeout=CHILD_TIMEOUT)
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("RESULT=")]
    if usage.exit != 0 or not lines:
        raise RuntimeError(f"{client.label} ({case}) failed with {usage.exit}:\n{text[-4000:]}")
    return Run(client.label, usage.wall, usage.cpu, usage.peak_mb, _server_cpu(server_pid) - server,
               json.loads(lines[-1][len("RESULT="):]))


def check_ingest(run: Run, expected: int) -> str:
    files = run.result["files"]
    successful = count_records(files["successful"])
    others = count_records(files["failed"] + files["unprocessed"])
    if successful != expected or others or run.result["processed"] != expected or run.result["failed"]:
        raise AssertionError(f"{run.client}: {successful} successful rows in files, {others} failed or "
                             f"unprocessed, counters {run.result}; expected {expected}")
    if any(len(files[kind]) != run.result["jobs"] for kind in ("successful", "failed", "unprocessed")):
        raise AssertionError(f"{run.client}: not one file per job for each result set: {files}")
    return f"{successful:,} rows in {run.result['jobs']} job(s), 3 result sets each"


def check_query(run: Run, expected: int) -> str:
    delivered = count_records(run.result["files"]["successful"])
    if delivered != expected or run.result["records"] != expected:
        raise AssertionError(f"{run.client}: {delivered} rows in files, reported {run.result['records']}, "
                             f"expected {expected}")
    return f"{delivered:,} rows in {run.result['pages']} file(s)"


# --- emulator ---------------------------------------------------------------------------------------------


@contextmanager
def emulator(work: Path, case: str, profile: Profile) -> Iterator[EmulatorProcess]:
    data_dir = work / f"emulator-{case}-{profile.name}"
    shutil.rmtree(data_dir, ignore_errors=True)
    try:
        with start_emulator_process(data_dir, tls=True, extra_args=profile.emulator_args) as process:
            yield process
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def seed(process: EmulatorProcess, rows: int) -> float:
    import ssl

    context = ssl.create_default_context(cafile=str(process.ca_path))
    request = urllib.request.Request(
        f"{process.base_url}/__emulator/seed", data=json.dumps({"object": "Account", "count": rows}).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600, context=context) as response:
        inserted = int(json.loads(response.read())["inserted"])
    if inserted != rows:
        raise AssertionError(f"seeded {inserted} rows, not {rows}")
    return time.perf_counter() - started


def child_settings(process: EmulatorProcess, work: Path) -> tuple[dict[str, Any], dict[str, str]]:
    defaults = EmulatorConfig()
    settings = {
        "base_url": process.base_url, "ca": str(process.ca_path), "client_id": defaults.client_id,
        "client_secret": defaults.client_secret, "username": defaults.username, "password": defaults.password,
        "security_token": defaults.security_token, "conn_id": CONN_ID,
    }
    airflow_home = work / "airflow"
    airflow_home.mkdir(exist_ok=True)
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": connection_json(process, timeout=600),
        # requests lets these variables override a session's own ``verify``: point them at the emulator's CA
        "REQUESTS_CA_BUNDLE": str(process.ca_path), "CURL_CA_BUNDLE": str(process.ca_path),
        # Bytecode cached, as in an ordinary installation: without it (PYTHONDONTWRITEBYTECODE=1 and a venv
        # without .pyc files, as on the machine of the first figures) every child compiles Airflow from
        # source: about 3 s more CPU and 7 MB more peak for the operator's process.
        "PYTHONPYCACHEPREFIX": str(work / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return settings, env


def warm_up(env: dict[str, str]) -> None:
    """Import every client's modules once, so that no measured child compiles them (bytecode cache)."""
    imports = "import requests, simple_salesforce, airflow_provider_sfbulk.operators.ingest, " \
              "airflow_provider_sfbulk.operators.query"
    subprocess.run([sys.executable, "-c", imports], env=env, check=True, capture_output=True, timeout=600)


# --- one case ---------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: str
    profile: Profile
    size: str
    runs: list[Run]
    checks: dict[str, str]
    notes: list[str]


def run_case(case: str, profile: Profile, args: argparse.Namespace, work: Path) -> CaseResult:
    notes: list[str] = []
    query_server: EmulatorProcess | None = None
    if case == "ingest":
        megabytes = args.ingest_mb if profile.name == "cpu" else args.sf_ingest_mb
        source = work / f"tricky-{megabytes:g}MB.csv"
        if not source.exists():
            expected = write_tricky_csv(source, int(megabytes * 1_000_000))
            source.with_suffix(".count").write_text(str(expected))
        expected = int(source.with_suffix(".count").read_text())
        size = f"{source.stat().st_size / 1e6:.1f} MB tricky CSV, {expected:,} records"
        check = check_ingest
        data_bytes = source.stat().st_size
    else:
        expected = args.query_rows if profile.name == "cpu" else args.sf_query_rows
        size = f"{expected:,} seeded rows, pages of {args.page_rows:,} rows"
        check = check_query
        data_bytes = 0
    chosen = [c for c in clients_for(case, profile.name, data_bytes)
              if not args.clients or c.impl in args.clients]
    runs, checks = [], {}
    with ExitStack() as stack:
        if case != "ingest":  # one seeded emulator for every client of the case
            query_server = stack.enter_context(emulator(work, case, profile))
            seconds = seed(query_server, expected)
            notes.append(f"seeded {expected:,} Accounts in {seconds:.1f} s (not measured)")
        for rep in range(args.reps):
            order = chosen[rep % len(chosen):] + chosen[: rep % len(chosen)]
            for client in order:
                with ExitStack() as per_run:
                    # ingest: a fresh emulator for every run, so that each client loads into empty tables
                    process = query_server or per_run.enter_context(emulator(work, case, profile))
                    settings, env = child_settings(process, work)
                    if not runs:
                        warm_up(env)
                    if case == "ingest":
                        settings["source"] = str(source)
                    else:
                        settings.update(soql=SOQL, page_rows=args.page_rows)
                    name = f"{case}-{profile.name}-{client.impl}-{rep}"
                    out = work / "out" / name
                    extra = {"out": str(out)}
                    if args.cprofile:
                        extra["cprofile"] = str(work / f"{name}.prof")
                    run = run_child(client, case, {**settings, **extra}, env, process.process.pid,
                                    work / f"{name}.log")
                    if args.cprofile and client.impl == "ours":
                        print_profile(extra["cprofile"])
                    checks[client.label] = check(run, expected)
                    runs.append(run)
                    print(f"[side by side] {case}/{profile.name} rep {rep + 1} {client.label}: "
                          f"wall {run.wall:.1f} s, CPU {run.cpu:.1f} s, peak RSS {run.peak_mb:.0f} MB, "
                          f"server CPU {run.server_cpu:.1f} s; {checks[client.label]}", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
    return CaseResult(case, profile, size, runs, checks, notes)


def print_profile(path: str) -> None:
    """The functions where our client spent its CPU (cProfile, by own time), top 20."""
    import pstats

    pstats.Stats(path).sort_stats("tottime").print_stats(20)


# --- tables -----------------------------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 1) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"**{median:.{digits}f}** ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(result: CaseResult) -> list[str]:
    labels = list(dict.fromkeys(run.client for run in result.runs))
    by = {label: [run for run in result.runs if run.client == label] for label in labels}

    def median(label: str, attr: str) -> float:
        return statistics.median(getattr(run, attr) for run in by[label])

    raw = labels[0]
    ssf = next((label for label in labels if label.startswith("simple-salesforce")), None)
    lines = [
        "| Client | Wall s | CPU s | Peak RSS MB | After imports: wall s | CPU s | Server CPU s | Wall / raw "
        "| CPU / raw | Wall / s-sf | CPU / s-sf | Checked |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        ratios = []
        for base in (raw, ssf):
            for attr in ("wall", "cpu"):
                ratios.append(f"{median(label, attr) / median(base, attr):.2f}" if base else "—")
        lines.append(
            f"| {label} | {_spread([r.wall for r in by[label]])} | {_spread([r.cpu for r in by[label]], 2)} "
            f"| {_spread([r.peak_mb for r in by[label]], 0)} "
            f"| {_spread([r.result['work_wall'] for r in by[label]])} "
            f"| {_spread([r.result['work_cpu'] for r in by[label]], 2)} "
            f"| {_spread([r.server_cpu for r in by[label]])} "
            f"| {' | '.join(ratios)} | {result.checks[label]} |"
        )
    return lines


def environment() -> dict[str, str]:
    from importlib.metadata import version

    with open("/proc/cpuinfo") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    with open("/proc/meminfo") as handle:
        memory = int(handle.readline().split()[1]) / 1024 / 1024
    libraries = ", ".join(f"{name} {version(name)}" for name in (
        "apache-airflow", "simple-salesforce", "requests", "urllib3", "aiohttp"))
    return {
        "machine": f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GB, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": libraries,
    }


def block(result: CaseResult, args: argparse.Namespace, env: dict[str, str], started: str,
          loads: tuple[str, str]) -> str:
    reps = args.reps
    lines = [
        f"<!-- sbs:{result.case}-{result.profile.name} -->",
        f"{result.size}; {result.profile.description}. {reps} repetition(s), client order rotating; "
        f"measured {started}, load average {loads[0]} before and {loads[1]} after.",
        "",
        *table(result),
        "",
        f"Machine: {env['machine']}; Python {env['python']}; {env['libraries']}.",
        *(f"Note: {note}." for note in result.notes),
        f"<!-- /sbs:{result.case}-{result.profile.name} -->",
    ]
    return "\n".join(lines)


def write_doc(blocks: dict[str, str]) -> None:
    text = DOC.read_text()
    for key, content in blocks.items():
        start, end = f"<!-- sbs:{key} -->", f"<!-- /sbs:{key} -->"
        if start not in text or end not in text:
            raise SystemExit(f"{DOC} has no block {start} ... {end}")
        head, rest = text.split(start, 1)
        text = head + content + rest.split(end, 1)[1]
    DOC.write_text(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="ingest,query", help="ingest, query (comma-separated)")
    parser.add_argument("--profiles", default="cpu,salesforce", help="cpu, salesforce (comma-separated)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every client (default 3)")
    parser.add_argument("--ingest-mb", type=float, default=100.0, help="ingest CSV size, cpu profile")
    parser.add_argument("--sf-ingest-mb", type=float, default=10.0, help="ingest CSV size, SF profile")
    parser.add_argument("--query-rows", type=int, default=1_000_000, help="seeded rows, cpu profile")
    parser.add_argument("--sf-query-rows", type=int, default=1_000_000, help="seeded rows, SF profile")
    parser.add_argument("--page-rows", type=int, default=250_000, help="maxRecords per result page")
    parser.add_argument("--batch-seconds", type=float, default=4.0, help="salesforce profile: s per batch")
    parser.add_argument("--download-bandwidth", type=int, default=10_000_000,
                        help="salesforce profile: bytes per second per result stream")
    parser.add_argument("--clients", default="", help="only these (raw, raw_parallel, ssf, ours)")
    parser.add_argument("--cprofile", action="store_true",
                        help="run ours under cProfile and print where its CPU goes (slower figures)")
    parser.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--write-doc", action="store_true", help="replace the blocks in docs/performance.md")
    args = parser.parse_args(argv)
    args.clients = [c for c in args.clients.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = environment()
    work = args.work or Path(tempfile.mkdtemp(prefix="sfbulk-sbs-"))
    work.mkdir(parents=True, exist_ok=True)
    known = profiles(args)
    try:
        for case in args.cases.split(","):
            for name in args.profiles.split(","):
                before = f"{os.getloadavg()[0]:.2f}"
                started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                result = run_case(case, known[name], args, work)
                loads = (before, f"{os.getloadavg()[0]:.2f}")
                text = block(result, args, env, started, loads)
                print("\n" + text + "\n", flush=True)
                if args.write_doc:  # at once: a later case that fails keeps what was measured
                    write_doc({f"{case}-{name}": text})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("Command: scripts/benchmark " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
