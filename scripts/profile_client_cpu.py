"""Where the client's CPU goes: the real operators, not deferrable, against the emulator in another process.

Usage (from the repository root, the worktree first on ``PYTHONPATH``)::

    PYTHONPATH=$PWD .venv/bin/python scripts/profile_client_cpu.py ingest --rows 300000 --repeat 3
    PYTHONPATH=$PWD .venv/bin/python scripts/profile_client_cpu.py query --rows 300000 --repeat 3

``ingest`` writes a "tricky" CSV (every value quoted, commas, line feeds, doubled quotes and multibyte
characters in the values) and loads it with ``SalesforceBulkIngestOperator`` (insert, default part size
and concurrency); ``query`` seeds Accounts and extracts them with ``SalesforceBulkQueryOperator``. A
small warm-up run comes first. Each measured run prints the client's CPU seconds (``process_time`` of
this process only; the emulator is another process), CPU seconds per GB of CSV, wall time, the peak
resident set, and the CPU of each phase: the thread CPU time (``thread_time``) spent inside the
functions that do each step, summed over threads. What no phase claims (creating, closing and polling
jobs, the operator's own work) is "other".

``--cprofile FILE`` writes a cProfile of the measured run (read it with ``python -m pstats FILE``). Keep
the load to one part (under 100 MB) and the query to one download thread's worth of pages, or profile
the whole process from outside with py-spy (``py-spy record --format raw``; it counts a thread that
sleeps or waits on a socket as busy, so read its figures as wall time, not CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.csvio import failed_rows as failed_rows_module
from airflow_provider_sfbulk.emulator.testing import connection_json, start_emulator_process
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest import collect, parts, retries, summary
from airflow_provider_sfbulk.query import pages

CONN_ID = "sfbulk_profile"
SOQL = (
    "SELECT Id, Name, External_Id__c, AccountNumber, Industry, NumberOfEmployees, AnnualRevenue, "
    "Phone, BillingCity, Description, Active__c, CreatedDate FROM Account"
)
_phase_cpu: dict[str, float] = defaultdict(float)
_lock = threading.Lock()
_ARGS = argparse.Namespace()
#: What the last measured run returned (its XCom value).
_LAST: dict[str, Any] = {}


def _timed(phase: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, adding the thread CPU time of each call to ``phase`` (nested phases are not subtracted)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            with _lock:
                _phase_cpu[phase] += time.thread_time() - started

    return wrapper


def _instrument() -> None:
    """Wrap the functions of each phase (module attributes are looked up at call time)."""
    parts.split_csv = _timed("validate+split", parts.split_csv)  # type: ignore[assignment]
    collect.download_job_results = _timed(  # type: ignore[assignment]
        "result downloads (HTTP, count, hash, write)", collect.download_job_results
    )
    retries.write_failed_rows = _timed("failed rows", retries.write_failed_rows)  # type: ignore[assignment]
    summary.write_failed_rows = _timed(  # type: ignore[assignment]
        "summary: of which failed rows", failed_rows_module.write_failed_rows
    )
    summary.summarize = _timed("summary", summary.summarize)  # type: ignore[assignment]
    for name, phase in (
        ("upload_job_data", "upload"),
        ("create_ingest_job_with_data", "upload"),
        ("download_query_page", "query page downloads (HTTP, count, hash, write)"),
    ):
        setattr(SalesforceBulkHook, name, _timed(phase, getattr(SalesforceBulkHook, name)))
    pages.PageDownloader.download = _timed(  # type: ignore[method-assign]
        "query pages (download and bookkeeping)", pages.PageDownloader.download
    )


def write_tricky_csv(path: Path, rows: int, fail_every: int = 0) -> int:
    """Every value quoted; commas, line feeds, doubled quotes and multibyte characters inside values.

    With ``fail_every``, every that many rows carries a ``NumberOfEmployees`` the org rejects.
    """
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write('"Name","Description","BillingCity","NumberOfEmployees"\n')
        for start in range(0, rows, 10_000):
            out.write("".join(
                f'"Acme, Ltd {i}","Ligne 1, ""ok""\nLigne 2 {i % 977}","Zürich—Genève",'
                f'"{"n/a" if fail_every and i % fail_every == 0 else i % 5000}"\n'
                for i in range(start, min(rows, start + 10_000))
            ))
    return path.stat().st_size


class _TI:
    def __init__(self, run_id: str, task_id: str) -> None:
        self.dag_id, self.run_id, self.task_id = "profile", run_id, task_id
        self.map_index, self.try_number = -1, 1

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)


def _context(run_id: str, task_id: str) -> Any:
    """The least of a task context ``execute`` needs: a task instance that takes XCom."""
    return {"ti": _TI(run_id, task_id)}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key)) / 1024


def _run(run: Callable[[], Any]) -> None:
    """``run()``, under cProfile when ``--cprofile`` was given (one part: every step is in this thread)."""
    if not _ARGS.cprofile:
        run()
        return
    import cProfile

    profile = cProfile.Profile()
    profile.runcall(run)
    profile.dump_stats(_ARGS.cprofile)


def _measure(label: str, run: Callable[[], dict[str, Any]], size_of: Callable[[dict[str, Any]], int]) -> None:
    """Run one measured execution and print its CPU, per phase."""
    _phase_cpu.clear()
    result: dict[str, Any] = {}
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to the current resident set
    rss_before = _status_mb("VmRSS:")
    wall, cpu = time.perf_counter(), time.process_time()
    _run(lambda: result.update(run()))
    _LAST.clear()
    _LAST.update(result)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = size_of(result)
    gb = size / 1e9
    print(f"{label}: {size / 1e6:.1f} MB, client CPU {cpu:.2f} s = {cpu / gb:.1f} CPU-s/GB, "
          f"wall {wall:.1f} s, RSS {rss_before:.0f} MB before, peak {_status_mb('VmHWM:'):.0f} MB, "
          f"load {os.getloadavg()[0]:.2f}")
    claimed = 0.0
    for phase, seconds in sorted(_phase_cpu.items(), key=lambda item: -item[1]):
        if not phase.startswith(("query pages", "summary: of which")):  # counted in another phase
            claimed += seconds
        print(f"    {phase:<48} {seconds:6.2f} s  {seconds / gb:6.1f} CPU-s/GB")
    print(f"    {'other (create, close, poll, operator)':<48} {cpu - claimed:6.2f} s")
    sys.stdout.flush()


def _ingest(args: argparse.Namespace, work: Path) -> None:
    from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

    common: dict[str, Any] = {"salesforce_conn_id": CONN_ID, "object_name": "Account", "operation": "insert",
                              "deferrable": False, "poll_interval": 0.2, "max_poll_interval": 1.0,
                              "max_failed_records": args.rows}
    warm = work / "warm.csv"
    write_tricky_csv(warm, 100)
    SalesforceBulkIngestOperator(task_id="load", source=str(warm), **common).execute(_context("w", "load"))
    source = work / "tricky.csv"
    size = write_tricky_csv(source, args.rows, args.fail_every)
    for index in range(args.repeat):
        operator = SalesforceBulkIngestOperator(task_id="load", source=str(source), **common)
        context = _context(f"r{index}", "load")
        _measure(f"ingest run {index + 1}", functools.partial(operator.execute, context), lambda _: size)
        failing = len(range(0, args.rows, args.fail_every)) if args.fail_every else 0
        assert _LAST["records_successful"] == args.rows - failing, _LAST


def _seed(base_url: str, count: int) -> None:
    request = urllib.request.Request(
        f"{base_url}/__emulator/seed", data=json.dumps({"object": "Account", "count": count}).encode(),
        method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        assert int(json.loads(response.read())["inserted"]) == count


def _stored_bytes(result: dict[str, Any]) -> int:
    return sum(Path(uri.removeprefix("file://")).stat().st_size for uri in result["files"])


def _query(args: argparse.Namespace, base_url: str) -> None:
    from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

    _seed(base_url, args.rows)
    common: dict[str, Any] = {"salesforce_conn_id": CONN_ID, "deferrable": False, "poll_interval": 0.2,
                              "max_poll_interval": 1.0, "limits_check": "off"}
    warm = SalesforceBulkQueryOperator(task_id="q", soql=SOQL + " LIMIT 1000", **common)
    warm.execute(_context("w", "q"))
    for index in range(args.repeat):
        # Under cProfile, one download thread: the profile sees only the thread that started it.
        threads: dict[str, Any] = {"download_concurrency": 1} if args.cprofile else {}
        operator = SalesforceBulkQueryOperator(task_id="q", soql=SOQL, **common, **threads)
        context = _context(f"r{index}", "q")
        _measure(f"query run {index + 1}", functools.partial(operator.execute, context), _stored_bytes)


def main() -> None:
    """Parse the arguments, start the emulator, run the chosen path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", choices=["ingest", "query"])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--fail-every", type=int, default=0, metavar="N",
                        help="ingest: every N-th row fails (exercises the failed rows files)")
    parser.add_argument("--cprofile", metavar="FILE", help="write a cProfile of the (last) measured run here")
    args = parser.parse_args(namespace=_ARGS)
    with tempfile.TemporaryDirectory(prefix="sfbulk-profile-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        os.environ["AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH"] = str(work / "results")
        with start_emulator_process(work / "emulator", extra_args=["--batch-delay", "0"]) as emulator:
            os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = connection_json(emulator, timeout=600)
            _instrument()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if args.path == "ingest":
                _ingest(args, work)
            else:
                _query(args, emulator.base_url)


if __name__ == "__main__":
    main()
