"""The demo behind ``scripts/demo``: the example DAGs run by Airflow against a local emulator.

Steps: a fresh ``.demo/`` folder (Airflow home, emulator data, results), ``airflow db migrate``, the
emulator as a separate process with seed data (Accounts and Opportunities), then ``airflow dags test``
for each example DAG (deferrable tasks go through their trigger in-process), with the row lock faults
switched on for the failure example only and a forgotten ``Open`` job planted for the job watch. After
each DAG: its state, the counts and result paths from its XComs (read from the metadata DB). At the end
the records in the emulator. Everything started is stopped, also on Ctrl-C or failure; the exit status is
non-zero when a DAG run failed or a step broke. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_dags"
DAG_TIMEOUT = 300


def say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.airflow_home = home / "airflow-home"
        self.results = home / "results"
        self.logs = home / "logs"
        self.emulator: Any = None
        self.failures: list[str] = []

    # -- environment -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        from airflow_provider_sfbulk.emulator.testing import connection_dict

        connection = connection_dict(self.emulator)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
        return {
            **base,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT": json.dumps(connection),
            "AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH": str(self.results),
            "SFBULK_EXAMPLE_POLL_SECONDS": "1",
        }

    def airflow(self, *args: str, log_name: str, timeout: float = DAG_TIMEOUT) -> int:
        log = self.logs / f"{log_name}.log"
        with log.open("wb") as out:
            try:
                done = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout,
                                      check=False)
            except subprocess.TimeoutExpired:
                say(f"   !! airflow {' '.join(args)} did not finish in {timeout:.0f}s (log: {log})")
                return 124
        return done.returncode

    # -- emulator ------------------------------------------------------------------------------------
    def emulator_call(self, method: str, path: str, body: dict[str, Any] | None = None,
                      token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.emulator.base_url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def records(self, object_name: str) -> list[dict[str, Any]]:
        return self.emulator_call("GET", f"/__emulator/records/{object_name}")["records"]

    # -- metadata DB ---------------------------------------------------------------------------------
    def last_run(self, dag_id: str) -> tuple[str, str]:
        with sqlite3.connect(self.airflow_home / "airflow.db") as db:
            row = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                             (dag_id,)).fetchone()
        return (row[0], row[1]) if row else ("", "missing")

    def xcoms(self, dag_id: str, run_id: str) -> dict[str, Any]:
        with sqlite3.connect(self.airflow_home / "airflow.db") as db:
            rows = db.execute("SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = ?",
                              (dag_id, run_id, "return_value")).fetchall()
        values: dict[str, Any] = {}
        for task_id, value in rows:
            try:
                decoded = json.loads(value) if isinstance(value, (str, bytes)) else value
                values[task_id] = json.loads(decoded) if isinstance(decoded, str) and decoded[:1] in "{[" else decoded
            except (TypeError, ValueError):
                values[task_id] = value
        return values

    # -- the DAGs ------------------------------------------------------------------------------------
    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        args = ["dags", "test", dag_id]
        if conf:
            args += ["--conf", json.dumps(conf)]
        started = time.monotonic()
        code = self.airflow(*args, log_name=dag_id)
        run_id, state = self.last_run(dag_id)
        took = time.monotonic() - started
        say(f"== {dag_id:<36} {state.upper():<8} {took:5.1f}s   (log: {self.logs / (dag_id + '.log')})")
        if state != "success" or code not in (0,):
            self.failures.append(f"{dag_id}: {state} (exit {code})")
        return self.xcoms(dag_id, run_id) if run_id else {}


def show_load(name: str, load: dict[str, Any] | None) -> None:
    if not load:
        say(f"   {name}: no result")
        return
    say(f"   {name}: {load['object']} {load['operation']}: sent {load['records_sent']}, "
        f"successful {load['records_successful']}, failed {load['records_failed']}, "
        f"unprocessed {load['records_unprocessed']}; jobs {len(load['job_ids'])} "
        f"(retry rounds {load.get('retry_rounds', 0)})")
    say(f"      manifest {load['manifest']}")


def show_query(name: str, extract: dict[str, Any] | None) -> None:
    if not extract:
        say(f"   {name}: no result")
        return
    say(f"   {name}: {extract['record_count']} record(s) in {len(extract['files'])} file(s)")
    for uri in extract["files"]:
        say(f"      {uri}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".demo", help="demo folder (recreated)")
    args = parser.parse_args()

    from airflow_provider_sfbulk.emulator.config import EmulatorConfig
    from airflow_provider_sfbulk.emulator.testing import password_token, start_emulator_process

    # everything is on 127.0.0.1: keep proxies from the environment out of it (here and in airflow)
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name, ""), "127.0.0.1", "localhost"]))
    demo = Demo(args.home.resolve())
    shutil.rmtree(demo.home, ignore_errors=True)
    demo.logs.mkdir(parents=True)
    # Ctrl-C or a TERM from outside: unwind through the finally blocks, which stop the emulator.
    signal.signal(signal.SIGTERM, _interrupt)

    say(f">> demo folder {demo.home}")
    say(">> starting the Salesforce Bulk API 2.0 emulator (seed: 20 Accounts, 1200 Opportunities)")
    with start_emulator_process(
        demo.home / "emulator",
        extra_args=["--seed-records", "Account=20", "--seed-records", "Opportunity=1200", "--seed", "7",
                    "--batch-delay", "1", "--query-delay", "1"],
    ) as emulator:
        demo.emulator = emulator
        say(f"   emulator at {emulator.base_url}")
        say(">> airflow db migrate")
        if demo.airflow("db", "migrate", log_name="db-migrate", timeout=300) != 0:
            say(f"!! airflow db migrate failed; see {demo.logs / 'db-migrate.log'}")
            return 1

        say(">> running the example DAGs with `airflow dags test`")
        x = demo.run_dag("example_sfbulk_parent_child")
        show_load("upsert_accounts", x.get("upsert_accounts"))
        show_load("upsert_contacts", x.get("upsert_contacts"))

        closed_lost = sum(r["StageName"] == "Closed Lost" for r in demo.records("Opportunity"))
        x = demo.run_dag("example_sfbulk_extract_to_storage")
        show_query("extract_opportunities (queryAll)", x.get("extract_opportunities"))
        if x.get("load_to_warehouse"):
            say(f"   load_to_warehouse: read {x['load_to_warehouse']['rows']} row(s) from "
                f"{x['load_to_warehouse']['files']} file(s)")

        x = demo.run_dag("example_sfbulk_delete_by_extract")
        show_query("find_closed_lost", x.get("find_closed_lost"))
        show_load("delete_closed_lost", x.get("delete_closed_lost"))
        say(f"   closed-lost Opportunities before: {closed_lost}; after: "
            f"{sum(r['StageName'] == 'Closed Lost' for r in demo.records('Opportunity'))}")

        demo.emulator_call("PUT", "/__emulator/faults", {"lock_row_rate": 0.3, "seed": 7})
        try:  # row lock contention for this DAG only: its retry of the retryable rows has work to do
            x = demo.run_dag("example_sfbulk_load_with_failures")
        finally:
            demo.emulator_call("DELETE", "/__emulator/faults")
        show_load("load_invoices", x.get("load_invoices"))
        report = x.get("report_failed_rows")
        if report:
            say(f"   report_failed_rows: {report['rejected']} rejected by error: {report['by_error']}")
            say(f"      rejected keys {', '.join(report['rejected_keys'])}")
            for uri in report["failed_files"]:
                say(f"      {uri}")
            if report.get("to_fix_and_reload"):
                say(f"      fix and reload: {report['to_fix_and_reload']} (trigger with fixed_rows_file)")

        token = password_token(emulator.base_url, EmulatorConfig())["access_token"]
        forgotten = demo.emulator_call("POST", "/services/data/v60.0/jobs/ingest",
                                       {"object": "Account", "operation": "insert"}, token=token)["id"]
        say(f">> planted a forgotten Open ingest job {forgotten} for the job watch")
        x = demo.run_dag("example_sfbulk_job_watch", {"stale_open_minutes": 0})
        watch = x.get("list_bulk_jobs")
        if watch:
            say(f"   list_bulk_jobs: {watch['total']} job(s) {watch['by_state']}; stale Open "
                f"{watch['stale_open']} (aborted {watch['aborted']}), stuck {watch['stale_running']}, "
                f"failed recently {watch['failed_recently']}; problems left {watch['problems']}")
            say(f"      {watch['jobs_file']}")

        say(">> records in the emulator now")
        for name in ("Account", "Contact", "Opportunity", "Invoice__c"):
            say(f"   {name:<12} {len(demo.records(name))}")
        say(">> stopping the emulator")
    if demo.failures:
        say("!! FAILED: " + "; ".join(demo.failures))
        return 1
    say(f">> demo finished: every example DAG succeeded; results under {demo.results}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("!! interrupted; everything started was stopped")
        sys.exit(130)
