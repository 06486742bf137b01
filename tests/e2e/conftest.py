"""A real Airflow stack for end-to-end tests: scheduler, triggerer, DAG processor and API server
(LocalExecutor, SQLite metadata DB) in a temporary ``AIRFLOW_HOME``, bound to 127.0.0.1, plus the
emulator as a separate process.

Every component runs in its own session (``start_new_session=True``) so that stopping it stops the
whole process group (task runners, executor workers): SIGTERM to the group, a bounded wait, then
SIGKILL. :meth:`AirflowStack.stop` runs in the fixture teardown, after a failure too, and checks that no
process of any group is left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from stack_processes import (
    AirflowApiClient,
    airflow_env,
    clean_environment,
    free_port,
    http_json,
    reap,
    signal_group,
    stop_groups,
)

from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_dict, start_emulator_process

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_dags"
COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")


@dataclass
class AirflowStack(AirflowApiClient):
    """The four Airflow 3 components of one temporary installation, and a REST client for it."""

    home: Path
    dags_folder: Path
    extra_env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _outputs: list[IO[bytes]] = field(default_factory=list)
    _restarts: dict[str, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **clean_environment(),
            "AIRFLOW_HOME": str(self.home),
            **airflow_env(self.port),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            **self.extra_env,
        }

    def start(self, timeout: float = 150.0) -> None:
        """Migrate the metadata DB, start the four components and wait until they are healthy."""
        deadline = time.monotonic() + timeout
        self.migrate()
        for name in COMPONENTS:
            self.start_component(name)
        self.wait_healthy(deadline)

    def migrate(self) -> None:
        """``airflow db migrate`` of this installation (creates ``home`` first)."""
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(
            self.airflow_command("db", "migrate"), env=self.env, capture_output=True, timeout=180, check=False
        )
        if migrate.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{migrate.stdout.decode()}\n{migrate.stderr.decode()}")

    def start_component(self, name: str, output: str | None = None) -> subprocess.Popen[bytes]:
        """Start the component ``name`` (one of COMPONENTS); its output goes to ``home/<output>``."""
        # The log servers of the scheduler and triggerer would listen on 0.0.0.0 at fixed ports; every
        # component shares this machine's disk, so they are not needed (tests talk to 127.0.0.1 only).
        args = (name, "--skip-serve-logs") if name in ("scheduler", "triggerer") else (name,)
        return self.spawn(name, *args, output=output)

    def spawn(self, name: str, *args: str, output: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``airflow ARGS`` in its own session as the process ``name`` (stopped by :meth:`stop`);
        its output goes to ``home/<output>`` (default ``<name>.out``)."""
        out = open(self.home / (output or f"{name}.out"), "wb")  # noqa: SIM115 - closed in stop()
        self._outputs.append(out)
        process = subprocess.Popen(
            self.airflow_command(*args), env=self.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.processes[name] = process
        return process

    def restart(self, name: str) -> None:
        """SIGKILL the component's process group (a crash) and start a new one in its place; the new
        one's output goes to ``<name>-<n>.out`` (n = 2, 3, ...)."""
        old = self.processes[name]
        signal_group(old.pid, signal.SIGKILL)
        old.wait(30)
        self._restarts[name] = self._restarts.get(name, 1) + 1
        self.start_component(name, output=f"{name}-{self._restarts[name]}.out")

    @staticmethod
    def airflow_command(*args: str) -> list[str]:
        """The command line of ``airflow ARGS`` with this Python."""
        return [sys.executable, "-m", "airflow", *args]

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}\n{self.diagnostics()}")

    def stop(self, grace: float = 15.0) -> list[str]:
        """Stop every component's process group; returns the groups that were still alive at the end."""
        groups = {name: process.pid for name, process in self.processes.items()}  # session id == pgid
        leftovers = stop_groups(groups, grace)
        reap(self.processes.values(), self._outputs, wait=10)
        return leftovers

    def diagnostics(self, runs: dict[str, str] | None = None) -> str:
        """Component output tails and, for ``runs``, every task log (JSON lines), for failure messages."""
        parts: list[str] = []
        for name in COMPONENTS:
            path = self.home / f"{name}.out"
            if path.exists():
                parts.append(f"--- {name} (tail) ---\n" + "\n".join(path.read_text(errors="replace")
                                                                    .splitlines()[-15:]))
        for dag_id, run_id in (runs or {}).items():
            for log in sorted((self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log")):
                parts.append(f"--- {log.relative_to(self.home)} ---\n"
                             + log.read_text(errors="replace")[-6000:])
        return "\n".join(parts)


@dataclass
class EndToEnd:
    stack: AirflowStack
    emulator: EmulatorProcess
    results_base: Path

    def emulator_api(self, method: str, path: str, **kwargs: Any) -> Any:
        return http_json(method, f"{self.emulator.base_url}{path}", **kwargs)

    def records(self, object_name: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        query = "?includeDeleted=true" if include_deleted else ""
        return self.emulator_api("GET", f"/__emulator/records/{object_name}{query}")["records"]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndToEnd]:
    """The emulator process (seeded) and the Airflow stack over the example DAGs; all stopped at the end."""
    root = tmp_path_factory.mktemp("e2e")
    results = root / "results"
    with ExitStack() as stack:
        emulator = stack.enter_context(start_emulator_process(
            root / "emulator",
            # Every job takes 10 s, as in a busy org, so the tasks have something to wait for. Shorter jobs
            # hit an Airflow 3.x scheduler race (apache/airflow#67287, #72716): a trigger that fires before
            # the scheduler has processed the worker's defer-exit event gets the resumed task marked
            # up_for_retry.
            extra_args=["--seed-records", "Account=20", "--seed-records", "Opportunity=1200", "--seed", "7",
                        "--batch-delay", "10", "--query-delay", "10"],
        ))
        connection = connection_dict(emulator)
        airflow = AirflowStack(
            home=root / "airflow-home",
            dags_folder=EXAMPLES,
            extra_env={
                "AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT": json.dumps(connection),
                "AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH": str(results),
                "SFBULK_EXAMPLE_POLL_SECONDS": "2",
            },
        )
        leftovers: list[str] = []
        try:
            airflow.start()
            yield EndToEnd(airflow, emulator, results)
        finally:
            leftovers = airflow.stop()
        assert not leftovers, f"processes left running in the groups of: {leftovers}"
