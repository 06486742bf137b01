"""Process helpers and the Airflow REST client of the suites that start real servers (tests/e2e,
tests/distributed, tests/browser).

Every server runs in its own session (``start_new_session=True``), so its process id is also its process
group id: stopping it signals the whole group (task runners, pool children), waits a bounded time, then
SIGKILLs what is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """The caller's environment without any Airflow setting (the test run's unit-test mode, its home,
    its connections): the stack gets only what the suite sets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__", "SFBULK_", "PYTEST_"))
    }
    # everything here is on 127.0.0.1: never through a proxy from the environment
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    return env


def airflow_env(port: int) -> dict[str, str]:
    """The settings every test stack gives each Airflow component: its API server on 127.0.0.1:``port``
    (one worker, every user an admin), the DAG folder re-read every 5 s, only the runs the test triggers
    (unpausing must not add the schedule's latest interval), 1 s heartbeats, unbuffered output."""
    return {
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "PYTHONUNBUFFERED": "1",
    }


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader still counts; reap ours
    try:
        pid, _ = os.waitpid(pgid, os.WNOHANG)
        if pid == pgid:
            return group_alive(pgid)
    except ChildProcessError:
        pass
    return has_live_member(pgid)


def has_live_member(pgid: int) -> bool:
    """True when a process of the group is alive and not a zombie (per /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_groups(groups: dict[str, int], grace: float = 15.0, first: int = signal.SIGTERM) -> list[str]:
    """Signal every group with ``first``, wait up to ``grace`` seconds, SIGKILL the rest; returns the
    names of the groups still alive 10 s after that (none, normally)."""
    for pgid in groups.values():
        signal_group(pgid, first)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(pgid) for pgid in groups.values()):
        time.sleep(0.2)
    for pgid in groups.values():
        signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(group_alive(pgid) for pgid in groups.values()):
        time.sleep(0.2)
    return [name for name, pgid in groups.items() if group_alive(pgid)]


def reap(processes: Iterable[subprocess.Popen[bytes]], outputs: list[IO[bytes]], wait: float) -> None:
    """After their groups were stopped: wait up to ``wait`` seconds for each process (no zombie left),
    then close the files their output went to."""
    for process in processes:
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            pass
    for out in outputs:
        out.close()


#: HTTP client of the suites: loopback only, so proxies from the environment are ignored.
HTTP = requests.Session()
HTTP.trust_env = False


def http_json(method: str, url: str, **kwargs: Any) -> Any:
    """One call (30 s unless ``timeout`` says otherwise) that must succeed; its JSON answer, if any."""
    kwargs.setdefault("timeout", 30)
    response = HTTP.request(method, url, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowApiClient:
    """The REST client of a test stack's Airflow 3 API server, shared by the stacks of tests/e2e,
    tests/distributed and tests/browser (each one inherits it).

    A stack provides ``base_url``, ``check_alive()`` (raises when a component died; every wait calls it)
    and ``diagnostics(runs)`` (the text failure messages end with). ``api_timeout`` bounds one request,
    ``dags_timeout`` the wait for parsed DAGs. Reads (GET) that fail on the wire are asked again, twice:
    one API server worker on a busy machine can be slow.
    """

    api_timeout: float = 30.0
    dags_timeout: float = 90.0
    _token: str | None = None

    base_url: str  # a property of each stack

    def check_alive(self) -> None:
        raise NotImplementedError

    def diagnostics(self, runs: dict[str, str] | None = None) -> str:
        raise NotImplementedError

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One authenticated call, its answer as it is (no status check)."""
        if self._token is None:
            response = HTTP.get(f"{self.base_url}/auth/token", timeout=10)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        kwargs.setdefault("timeout", self.api_timeout)
        for attempt in range(3):
            try:
                return HTTP.request(
                    method, f"{self.base_url}{path}", headers={"Authorization": f"Bearer {self._token}"},
                    **kwargs,
                )
            except requests.RequestException:
                if method != "GET" or attempt == 2:
                    raise
                time.sleep(2)
        raise AssertionError("unreachable")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One authenticated call; its JSON answer, an AssertionError on a 4xx or 5xx."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_healthy(self, deadline: float) -> None:
        """Wait until the metadata DB, scheduler, triggerer and DAG processor are reported healthy."""
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = HTTP.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                health = response.json()
                if response.status_code == 200 and all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    return
                last = json.dumps(health)
            except (requests.RequestException, ValueError) as err:
                last = str(err)
            time.sleep(1)
        raise TimeoutError(f"the Airflow stack did not become healthy: {last}\n{self.diagnostics()}")

    def wait_for_dags(self, dag_ids: list[str], timeout: float | None = None) -> None:
        """Wait until the DAG processor has serialized every DAG (and nothing failed to import)."""
        deadline = time.monotonic() + (self.dags_timeout if timeout is None else timeout)
        missing: set[str] = set(dag_ids)
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self.api("GET", "/api/v2/importErrors")
            if errors.get("total_entries"):
                raise AssertionError(f"DAG import errors: {json.dumps(errors['import_errors'], indent=1)}")
            found = {dag["dag_id"] for dag in self.api("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
            missing = set(dag_ids) - found
            if not missing:
                return
            time.sleep(1)
        raise TimeoutError(f"DAGs never parsed: {sorted(missing)}\n{self.diagnostics()}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause the DAG and start a run of it; returns the run id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                       json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def wait_for_runs(self, runs: dict[str, str], timeout: float) -> dict[str, str]:
        """``{dag_id: run_id}`` -> ``{dag_id: final state}``; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            for dag_id, run_id in runs.items():
                states[dag_id] = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if all(state in TERMINAL_RUN_STATES for state in states.values()):
                return states
            time.sleep(1)
        raise TimeoutError(f"runs not finished after {timeout}s: {states}\n{self.diagnostics(runs)}")

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float, pause: float = 0.3,
                   run: tuple[str, str] | None = None) -> Any:
        """Poll ``check`` until it returns something true, and return that; every turn checks that the
        stack is alive and, with ``run`` (dag_id, run_id), that the run has not ended first."""
        runs = dict([run]) if run is not None else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            found = check()
            if found:
                return found
            if run is not None and (state := self.run_state(*run)) in TERMINAL_RUN_STATES:
                raise AssertionError(f"run {state} before {what}\n{self.diagnostics(runs)}")
            time.sleep(pause)
        raise TimeoutError(f"{what} not seen within {timeout}s\n{self.diagnostics(runs)}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        return list(self.api("GET", path)["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "stringify": "false"},
        )
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def task_events(self, dag_id: str, run_id: str) -> list[tuple[str, str]]:
        """``(event, task_id)`` of the run's event log, oldest first (task state changes among them)."""
        logs = self.api(
            "GET", "/api/v2/eventLogs",
            params={"dag_id": dag_id, "run_id": run_id, "limit": 1000, "order_by": "event_log_id"},
        )["event_logs"]
        return [(str(log["event"]), str(log.get("task_id"))) for log in logs]
