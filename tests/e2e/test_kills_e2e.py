"""Kills and restarts through real DAG runs (issue 12, part 2), and no secret in any file the stack wrote
(part 5).

One real Airflow 3 stack (scheduler, triggerer, DAG processor, API server; LocalExecutor) runs the DAGs of
``kill_dags/`` against an emulator process. Each scenario stops a task at an exact step, not after a
sleep: the emulator *holds* the chosen request (``hold`` fault: method, path, Nth occurrence) until the
test has seen it held and SIGKILLed the task's supervisor and task process (found by the task instance id
in their process titles). The held request of the dead client is then dropped unanswered. The scheduler
notices the missing heartbeats (timeout shortened to 10 s), the task is retried after 2 s and resumes
from its checkpoint (the task state store). The triggerer is killed (SIGKILL, its whole process group)
while the task is deferred, and a new one started; the emulator is killed while a job is half processed
and started again on the same data directory and port.

After each scenario: the DAG run succeeded; the jobs the task finished with are the ones that existed
before the kill (the held job among them), or, where the provider must replace a job, the replaced one
was aborted; the emulator holds each source row exactly once; every source row is in exactly one result
set; no job is left ``Open``, ``UploadComplete`` or ``InProgress``. Then every file the stack wrote (task,
trigger, scheduler, triggerer, DAG processor and API server logs, the metadata DB, the results) is
scanned for the connection's secrets and the access tokens the emulator issued.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stack_processes import HTTP, free_port, http_json

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.store import DB_NAME
from airflow_provider_sfbulk.emulator.testing import (
    EmulatorProcess,
    connection_dict,
    password_token,
    start_emulator_process,
)
from tests.e2e.conftest import AirflowStack
from tests.security.test_no_secret_anywhere import Secret, file_texts, find

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAGS = Path(__file__).resolve().parent / "kill_dags"
INGEST_DAG = "sfbulk_kill_ingest"  # the default connection (API 60.0); the scenarios' DAGs: WorkerKill
ROWS = 60  # 3 jobs of 20 (max_records_per_job in the DAG)
OPPORTUNITIES = 300  # 3 pages of 100
#: Distinctive secrets (reserved URL characters, so the encoded forms differ from the raw ones).
PASSWORD = "Pw-sfbulkKILLS/7+q=x&z!password"
SECURITY_TOKEN = "STsfbulkKILLSsecuritytoken42"
CLIENT_SECRET = "CS-sfbulkKILLS+client/secret=77"
CREDENTIALS = EmulatorConfig(password=PASSWORD, security_token=SECURITY_TOKEN, client_secret=CLIENT_SECRET)
UNFINISHED = {"Open", "UploadComplete", "InProgress"}
BOUND = 120.0  # seconds any single wait of these tests may take


# --- processes ----------------------------------------------------------------------------------------


def _pids_with(text: str) -> list[int]:
    """Processes whose command line (process title) contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), f"still alive after SIGKILL: {pids}"


# --- the stack ----------------------------------------------------------------------------------------


@dataclass
class KillStack:
    """The Airflow stack, the emulator process (replaced on restart) and the helpers of the scenarios."""

    stack: AirflowStack
    emulator: EmulatorProcess
    emulator_port: int
    emulator_args: list[str]
    root: Path
    exits: ExitStack
    _token: str = ""
    runs: list[tuple[str, str]] = field(default_factory=list)

    # emulator ------------------------------------------------------------------------------------------
    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return http_json(method, f"{self.emulator.base_url}/__emulator{path}", **kwargs)

    def sf(self, path: str) -> Any:
        """``GET`` of the Bulk API (``path`` under ``/services/data/v60.0``), with a fresh token on 401."""
        for _ in range(2):
            if not self._token:
                self._token = password_token(self.emulator.base_url, CREDENTIALS)["access_token"]
            response = HTTP.get(f"{self.emulator.base_url}/services/data/v60.0{path}", timeout=30,
                                headers={"Authorization": f"Bearer {self._token}"})
            if response.status_code != 401:
                response.raise_for_status()
                return response.json()
            self._token = ""
        raise AssertionError(f"GET {path}: 401 twice")

    def jobs(self, kind: str = "ingest") -> dict[str, dict[str, Any]]:
        return {job["id"]: job for job in self.sf(f"/jobs/{kind}")["records"]}

    def job(self, job_id: str, kind: str = "ingest") -> dict[str, Any]:
        return dict(self.sf(f"/jobs/{kind}/{job_id}"))

    def records(self, object_name: str) -> list[dict[str, Any]]:
        return list(self.admin("GET", f"/records/{object_name}")["records"])

    def hold(self, method: str, path: str, skip: int = 0) -> None:
        rule = {"kind": "hold", "delay": BOUND, "method": method, "path": path, "skip": skip, "times": 1}
        self.admin("PUT", "/faults", json={"rules": [rule]})

    def restart_emulator(self) -> None:
        """SIGKILL the emulator (a crash), then start it again on the same data directory and port."""
        self.emulator.process.kill()
        self.emulator.process.wait(30)
        self.emulator = self.exits.enter_context(start_emulator_process(
            self.root / "emulator", port=self.emulator_port, extra_args=self.emulator_args))

    # airflow -------------------------------------------------------------------------------------------
    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        for attempt in range(3):  # SQLite under five busy tasks may answer "database is locked" (a 500)
            try:
                run_id = self.stack.trigger(dag_id, conf)
                break
            except AssertionError as err:
                if "-> 500" not in str(err) or attempt == 2:
                    raise
                time.sleep(2)
        self.runs.append((dag_id, run_id))
        return run_id

    def wait(self, what: str, check: Callable[[], Any], dag_id: str, run_id: str) -> Any:
        """Poll ``check`` until it returns something true; fail (with the logs) if the run ends first."""
        return self.stack.wait_until(what, check, BOUND, pause=0.2, run=(dag_id, run_id))

    def wait_held(self, dag_id: str, run_id: str) -> dict[str, Any]:
        view = self.wait("the held request", lambda: self.admin("GET", "/holds")["held"], dag_id, run_id)
        return dict(view[0])

    def kill_task(self, dag_id: str, run_id: str, task_id: str) -> int:
        """SIGKILL the task's supervisor (the LocalExecutor worker) and its task process; the try killed."""
        ti = self.stack.task_instance(dag_id, run_id, task_id)
        assert ti["state"] == "running", ti
        pids = _pids_with(str(ti["id"]))
        assert len(pids) == 2, f"expected the supervisor and the task process of {ti['id']}: {pids}"
        _kill_and_wait(pids)
        return int(ti["try_number"])

    def finish(self, dag_id: str, run_id: str) -> None:
        """Release what is held, wait for the run, and require success."""
        self.admin("POST", "/holds/release")
        self.admin("DELETE", "/faults")
        state = self.stack.wait_for_runs({dag_id: run_id}, timeout=BOUND)[dag_id]
        assert state == "success", self.stack.diagnostics({dag_id: run_id})

    def no_unfinished_jobs(self) -> None:
        for kind in ("ingest", "query"):
            left = {i: j["state"] for i, j in self.jobs(kind).items() if j["state"] in UNFINISHED}
            assert not left, f"{kind} jobs left unfinished: {left}"


def _connection(emulator: EmulatorProcess, api_version: str) -> dict[str, Any]:
    connection = connection_dict(emulator, api_version=api_version)
    connection["password"] = PASSWORD
    connection["extra"].update(security_token=SECURITY_TOKEN, client_secret=CLIENT_SECRET)
    return connection


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillStack]:
    root = tmp_path_factory.mktemp("kills")
    port = free_port()
    # Jobs of 20 rows are processed in 2 internal batches of 10, 2 s each: long enough to kill the
    # emulator between them, and for every task to defer before its jobs finish (apache/airflow#67287).
    args = ["--batch-size", "10", "--batch-delay", "2", "--query-delay", "2", "--seed", "12",
            "--seed-records", f"Opportunity={OPPORTUNITIES}", "--password", PASSWORD,
            "--security-token", SECURITY_TOKEN, "--client-secret", CLIENT_SECRET]
    with ExitStack() as exits:
        emulator = exits.enter_context(start_emulator_process(root / "emulator", port=port, extra_args=args))
        connections = {"SALESFORCE_BULK_DEFAULT": _connection(emulator, "60.0")}
        for kill in WORKER_KILLS.values():
            connections[f"SFBULK_V{kill.version}"] = _connection(emulator, f"{kill.version}.0")
        airflow = AirflowStack(
            home=root / "airflow-home",
            dags_folder=DAGS,
            extra_env={
                **{f"AIRFLOW_CONN_{name}": json.dumps(conn) for name, conn in connections.items()},
                "AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH": str(root / "results"),
                # a killed task is failed (and retried) 10 s after its last heartbeat
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                # a new triggerer takes over the triggers of a dead one after 8 s
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
            },
        )
        leftovers: list[str] = []
        try:
            airflow.start(timeout=300)  # a loaded machine (the test command runs suites side by side)
            airflow.wait_for_dags([INGEST_DAG, *(kill.dag_id for kill in WORKER_KILLS.values())])
            yield KillStack(airflow, emulator, port, args, root, exits)
        finally:
            leftovers = airflow.stop()
        assert not leftovers, f"processes left running in the groups of: {leftovers}"


# --- checks -------------------------------------------------------------------------------------------


def _write_source(kills: KillStack, name: str) -> tuple[Path, list[str]]:
    """A CSV of ROWS new Accounts whose AccountNumber (``name-NNN``) identifies each row."""
    keys = [f"{name}-{i:03d}" for i in range(ROWS)]
    path = kills.root / "sources" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text("Name,AccountNumber\n" + "".join(f"Kill {key},{key}\n" for key in keys), encoding="utf-8")
    return path, keys


def _rows(uri: str) -> list[dict[str, str]]:
    path = Path(uri.removeprefix("file://"))
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _check_load(kills: KillStack, dag_id: str, run_id: str, keys: list[str]) -> dict[str, Any]:
    """Every row loaded once and in exactly one result set; no job unfinished. Returns the XCom."""
    load = kills.stack.xcom(dag_id, run_id, "load")
    wanted = set(keys)
    stored = Counter(r["AccountNumber"] for r in kills.records("Account") if r["AccountNumber"] in wanted)
    assert stored == Counter(keys), f"stored in the org: {stored}"
    in_results = Counter(
        row["AccountNumber"]
        for name in ("successful_results", "failed_results", "unprocessed_records")
        for uri in load[name]
        for row in _rows(uri)
    )
    assert in_results == Counter(keys), in_results
    assert load["records_successful"] == ROWS, load
    kills.no_unfinished_jobs()
    return dict(load)


def _job_id(path: str) -> str:
    match = re.search(r"/jobs/(?:ingest|query)/([^/]+)", path)
    assert match, path
    return match.group(1)


# --- worker killed at a chosen step -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerKill:
    """A step to kill the worker at: the request held there, and what the held job looks like then."""

    version: str  # the API version of the scenario's DAG and connection (see kill_dags/)
    method: str
    path: str  # after ``/services/data/v<version>``
    states_at_kill: frozenset[str]
    resumed: bool  # the retry finishes the held job (else it replaces it)
    kind: str = "ingest"
    skip: int = 0

    @property
    def dag_id(self) -> str:
        return f"sfbulk_kill_{self.kind}_v{self.version}"

    @property
    def task_id(self) -> str:
        return "load" if self.kind == "ingest" else "extract"


WORKER_KILLS = {
    # the job exists, its upload is on the wire: Open after a crash, the upload may or may not have
    # arrived, so the retry aborts the job and loads the part into a new one
    "after-job-creation": WorkerKill("58", "PUT", r"/jobs/ingest/[^/]+/batches$", frozenset({"Open"}), False),
    # the data is in the job, UploadComplete is on the wire: the retry closes the same job
    "after-upload": WorkerKill("59", "PATCH", r"/jobs/ingest/[^/]+$", frozenset({"Open"}), True),
    # closed, the state check before deferring is on the wire: the retry waits for the same jobs
    "after-upload-complete": WorkerKill("61", "GET", r"/jobs/ingest/[^/]+$",
                                        frozenset({"UploadComplete", "InProgress"}), True),
    # jobs done, successful results downloaded, the failed results on the wire: collected again
    "during-result-download": WorkerKill("62", "GET", r"/jobs/ingest/[^/]+/failedResults$",
                                         frozenset({"JobComplete"}), True),
    # the extract's second page on the wire: the retry reuses the query job
    "during-extract-page-download": WorkerKill("63", "GET", r"/jobs/query/[^/]+/results$",
                                               frozenset({"JobComplete"}), True, kind="query", skip=1),
}


@dataclass
class KillOutcome:
    """What a worker-kill scenario saw: its run, the held job, the jobs at the kill, the try killed."""

    run_id: str
    keys: list[str]
    held_job: str = ""
    state_at_kill: str = ""
    killed_try: int = 0
    at_kill: set[str] = field(default_factory=set)
    before: set[str] = field(default_factory=set)  # every job id that existed before the scenarios


def _jobs_of(kills: KillStack, kind: str, version: str, before: set[str]) -> dict[str, dict[str, Any]]:
    return {job_id: job for job_id, job in kills.jobs(kind).items()
            if job_id not in before and job["apiVersion"] == float(version)}


@pytest.fixture(scope="module")
def worker_kills(kills: KillStack, request: pytest.FixtureRequest) -> dict[str, KillOutcome]:
    """The selected worker-kill scenarios, all at once: each run held at its step, its task killed; then
    everything released and every run awaited. Scenarios run side by side (each with its own API version,
    so each hold stops only its own task) to keep the suite short."""
    selected = [name for name in WORKER_KILLS if any(
        getattr(item, "callspec", None) and item.callspec.params.get("scenario") == name
        for item in request.session.items)] or list(WORKER_KILLS)
    chosen = {name: WORKER_KILLS[name] for name in selected}
    before = set(kills.jobs("ingest")) | set(kills.jobs("query"))
    rules = [{"kind": "hold", "delay": BOUND, "method": s.method, "skip": s.skip, "times": 1,
              "path": rf"/v{s.version}\.0{s.path}"} for s in chosen.values()]
    kills.admin("PUT", "/faults", json={"rules": rules})
    outcomes: dict[str, KillOutcome] = {}
    for name, scenario in chosen.items():
        if scenario.kind == "ingest":
            source, keys = _write_source(kills, name)
            outcomes[name] = KillOutcome(kills.trigger(scenario.dag_id, {"source": str(source)}), keys)
        else:
            outcomes[name] = KillOutcome(kills.trigger(scenario.dag_id), [])
    deadline = time.monotonic() + 2 * BOUND
    while time.monotonic() < deadline and any(not o.killed_try for o in outcomes.values()):
        kills.stack.check_alive()
        for held in kills.admin("GET", "/holds")["held"]:
            name = next(n for n, s in chosen.items() if f"/v{s.version}.0/" in held["path"])
            scenario, outcome = chosen[name], outcomes[name]
            if outcome.killed_try:
                continue
            outcome.held_job = _job_id(held["path"])
            outcome.state_at_kill = kills.job(outcome.held_job, scenario.kind)["state"]
            outcome.killed_try = kills.kill_task(scenario.dag_id, outcome.run_id, scenario.task_id)
            outcome.at_kill = set(_jobs_of(kills, scenario.kind, scenario.version, before))
        time.sleep(0.2)
    runs = {chosen[name].dag_id: outcome.run_id for name, outcome in outcomes.items()}
    if not all(o.killed_try for o in outcomes.values()):
        kills.admin("DELETE", "/faults")  # let the runs end, so that they do not disturb the next tests
        missing = {chosen[n].dag_id: o.run_id for n, o in outcomes.items() if not o.killed_try}
        raise AssertionError(f"never held: {sorted(missing)}; rules: {kills.admin('GET', '/faults')}\n"
                             + kills.stack.diagnostics(missing))
    kills.admin("POST", "/holds/release")
    kills.admin("DELETE", "/faults")
    states = kills.stack.wait_for_runs(runs, timeout=BOUND)
    assert set(states.values()) == {"success"}, (states, kills.stack.diagnostics(runs))
    kills.no_unfinished_jobs()
    for outcome in outcomes.values():
        outcome.before = before
    return outcomes


@pytest.mark.parametrize("scenario", list(WORKER_KILLS))
def test_worker_killed(kills: KillStack, worker_kills: dict[str, KillOutcome], scenario: str) -> None:
    step, outcome = WORKER_KILLS[scenario], worker_kills[scenario]
    at_kill = outcome.at_kill
    assert outcome.state_at_kill in step.states_at_kill
    assert outcome.held_job in at_kill
    ti = kills.stack.task_instance(step.dag_id, outcome.run_id, step.task_id)
    assert ti["try_number"] > outcome.killed_try  # the scheduler retried the killed try
    final = _jobs_of(kills, step.kind, step.version, outcome.before)
    if step.kind == "query":
        extract = kills.stack.xcom(step.dag_id, outcome.run_id, step.task_id)
        assert extract["job_id"] == outcome.held_job  # the retry reused the query job
        assert set(final) == {outcome.held_job}
        extracted = Counter(row["Id"] for uri in extract["files"] for row in _rows(uri))
        assert extracted == Counter(r["Id"] for r in kills.records("Opportunity"))
        assert extract["record_count"] == OPPORTUNITIES
        return
    load = _check_load(kills, step.dag_id, outcome.run_id, outcome.keys)
    finished = set(load["job_ids"])
    # A job of the killed try is either finished by the retry or, when the retry cannot know whether its
    # upload arrived (the part was on the wire at the kill: the held one, maybe a sibling), aborted and
    # its part loaded into a new job. No other job exists, none is left behind.
    replaced = {job_id for job_id in at_kill if final[job_id]["state"] == "Aborted"}
    assert at_kill - replaced <= finished
    assert set(final) == finished | replaced
    assert not finished & replaced
    assert {final[job_id]["state"] for job_id in finished} == {"JobComplete"}
    if step.resumed:
        assert outcome.held_job in finished  # the retry finished the very job it was killed on
    else:
        assert outcome.held_job in replaced


# --- triggerer killed, emulator restarted ------------------------------------------------------------


def test_triggerer_killed_while_the_task_is_deferred(kills: KillStack) -> None:
    source, keys = _write_source(kills, "triggerer-killed")
    before = set(kills.jobs())
    run_id = kills.trigger(INGEST_DAG, {"source": str(source)})

    def deferred_and_running() -> bool:
        ti = kills.stack.task_instance(INGEST_DAG, run_id, "load")
        return ti["state"] == "deferred" and bool((ti.get("trigger") or {}).get("triggerer_id"))

    kills.wait("the trigger running in the triggerer", deferred_and_running, INGEST_DAG, run_id)
    at_kill = {i: j["state"] for i, j in kills.jobs().items() if i not in before}
    assert len(at_kill) == 3
    kills.stack.restart("triggerer")
    kills.finish(INGEST_DAG, run_id)

    load = _check_load(kills, INGEST_DAG, run_id, keys)
    assert set(load["job_ids"]) == set(at_kill) == set(kills.jobs()) - before
    # the deferral survived the triggerer
    assert kills.stack.task_instance(INGEST_DAG, run_id, "load")["try_number"] == 1


def test_emulator_restarted_in_the_middle_of_a_job(kills: KillStack) -> None:
    source, keys = _write_source(kills, "emulator-restarted")
    before = set(kills.jobs())
    run_id = kills.trigger(INGEST_DAG, {"source": str(source)})

    def half_processed() -> str | None:
        for job_id, job in kills.jobs().items():
            if job_id not in before and job["state"] == "InProgress" and job["apiVersion"] == 60.0:
                info = kills.job(job_id)
                if info["state"] == "InProgress" and info["numberRecordsProcessed"] == 10:
                    return job_id
        return None

    job_id = kills.wait("a job half processed", half_processed, INGEST_DAG, run_id)
    kills.restart_emulator()
    # the emulator's restart policy: an ingest job caught InProgress is Failed, its first batch committed
    interrupted = kills.job(job_id)
    assert (interrupted["state"], interrupted["numberRecordsProcessed"]) == ("Failed", 10), interrupted
    kills.finish(INGEST_DAG, run_id)

    load = _check_load(kills, INGEST_DAG, run_id, keys)
    assert load["retry_rounds"] >= 1  # the unprocessed rows went to a new job, the committed ones did not
    assert job_id in load["job_ids"]


# --- no secret in any file the stack wrote ------------------------------------------------------------


def _issued_tokens(kills: KillStack) -> list[str]:
    with sqlite3.connect(kills.root / "emulator" / DB_NAME) as db:
        return [row[0] for row in db.execute("SELECT token FROM oauth_tokens")]


def test_no_secret_in_any_file_the_stack_wrote(kills: KillStack) -> None:
    """Runs after the scenarios above (their retries, kills and restarts left the most varied logs)."""
    if not kills.runs:  # run alone: one load first
        source, keys = _write_source(kills, "secrets")
        run_id = kills.trigger(INGEST_DAG, {"source": str(source)})
        kills.finish(INGEST_DAG, run_id)
    tokens = _issued_tokens(kills)
    assert tokens
    secrets = [Secret.of("password", PASSWORD), Secret.of("security_token", SECURITY_TOKEN),
               Secret.of("client_secret", CLIENT_SECRET),
               Secret.of("password+token", PASSWORD + SECURITY_TOKEN),
               *(Secret.of(f"token {n}", token) for n, token in enumerate(tokens))]
    home = kills.stack.home
    places = list(file_texts(home, "AIRFLOW_HOME")) + list(file_texts(kills.root / "results", "results"))
    names = {place for place, _ in places}
    # what the scan must have seen, else it proves nothing
    for must in ("scheduler.out", "triggerer.out", "dag-processor.out", "api-server.out", "airflow.db"):
        assert f"AIRFLOW_HOME {must}" in names, sorted(names)[:20]
    task_logs = [n for n in names if n.startswith("AIRFLOW_HOME logs/dag_id=") and ".log" in n]
    assert any("trigger" in n for n in task_logs), task_logs  # the triggerer's lines of deferred tasks
    if any(dag_id != INGEST_DAG for dag_id, _ in kills.runs):  # the worker kills ran: their retries' logs
        assert any("attempt=2" in n for n in task_logs), task_logs
    # a control: a value that is in the task logs (a job id of the runs) is found there
    control = Secret("job id", tuple(kills.jobs()))
    assert any(find(place, text, [control]) for place, text in places if place in task_logs)
    findings = [f for place, text in places for f in find(place, text, secrets)]
    assert not findings, "\n".join(map(str, findings))
