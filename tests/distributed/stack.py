"""A distributed Airflow 3 stack on this machine, every part a real server bound to 127.0.0.1.

- PostgreSQL (Debian's package; a throw-away cluster made by ``initdb`` in a temporary folder, run as the
  ``postgres`` user when we are root) as Airflow's metadata database;
- Redis (Debian's ``redis-server``, nothing saved) as the Celery broker;
- moto's standalone server as the S3 of results, manifests, file checkpoints and load sources;
- the CeleryExecutor with two Celery workers, two triggerers, the scheduler, the DAG processor and the API
  server. Every Airflow component is one "machine": its own ``AIRFLOW_HOME``, ``TMPDIR`` and copy of the
  DAG files, and no folder in common with any other, so nothing can rely on a file another one wrote.
  Each reports its own name as its hostname (``hostname_callable``), so the REST API tells which worker
  ran a try and which triggerer holds a trigger.

Every server runs in its own process group; :meth:`DistributedStack.stop` stops them all and removes the
PostgreSQL cluster, after a failure too.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stack_processes import (
    HTTP,
    AirflowApiClient,
    airflow_env,
    clean_environment,
    free_port,
    group_alive,
    reap,
    signal_group,
    stop_groups,
)

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUCKET = "sfbulk"
WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-a", "triggerer-b")
COMPONENTS = ("scheduler", "dag-processor", "api-server", *TRIGGERERS, *WORKERS)

HOSTNAME_MODULE = '''
import os


def hostname():
    return os.environ["SFBULK_STACK_HOST"]
'''


class Unavailable(RuntimeError):
    """A server binary this stack needs is missing here (the suite skips with this message)."""


def _binary(name: str, *candidates: str) -> str:
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if not found:
        raise Unavailable(f"{name} is not installed (scripts/test installs it with apt-get where it can)")
    return found


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise Unavailable("PostgreSQL (initdb) is not installed: apt-get install postgresql")


def _wait_port(port: int, deadline: float, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text(errors='replace')}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on {port}: {log.read_text(errors='replace')[-3000:]}")


@dataclass
class Servers:
    """PostgreSQL, Redis and moto: started in :meth:`start`, each in its own process group."""

    root: Path
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg_dir: Path | None = None
    _outputs: list[IO[bytes]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.root / f"{name}.out", "wb")  # noqa: SIM115 - closed in stop()
        self._outputs.append(out)
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=clean_environment())
        self.processes[name] = process
        return process

    def start(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        redis = _binary("redis-server", "/usr/bin/redis-server")
        pg_bin = _postgres_bin()
        self._start_postgres(pg_bin, deadline)
        process = self._spawn("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no", "--dir", str(self.root)])
        _wait_port(self.redis_port, deadline, "redis-server", process, self.root / "redis.out")
        process = self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                     "-p", str(self.s3_port)])
        _wait_port(self.s3_port, deadline, "moto_server", process, self.root / "s3.out")
        HTTP.put(f"{self.s3_url}/{BUCKET}", timeout=10).raise_for_status()

    def _start_postgres(self, pg_bin: Path, deadline: float) -> None:
        # initdb refuses root: the cluster belongs to the postgres user, in a folder only it may enter
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.pg_dir = Path(tempfile.mkdtemp(prefix="sfbulk-pg-"))
        if as_user:
            shutil.chown(self.pg_dir, "postgres", "postgres")
        data = self.pg_dir / "data"
        init = subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow",
                               "--auth=trust", "-E", "UTF8", "--no-locale"],
                              capture_output=True, timeout=120, check=False, env=clean_environment())
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout.decode()}{init.stderr.decode()}")
        process = self._spawn("postgres", [
            *as_user, str(pg_bin / "postgres"), "-D", str(data), "-p", str(self.pg_port),
            "-k", str(self.pg_dir), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        _wait_port(self.pg_port, deadline, "postgres", process, self.root / "postgres.out")
        import psycopg2

        while True:
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow",
                                              dbname="postgres", connect_timeout=5)
                break
            except psycopg2.OperationalError:  # still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
        connection.close()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname="airflow",
                              connect_timeout=10) as connection, connection.cursor() as cursor:
            cursor.execute(query, params)
            rows = cursor.fetchall()
        connection.close()
        return rows

    def stop(self) -> list[str]:
        groups = {name: process.pid for name, process in self.processes.items()}
        # PostgreSQL: SIGINT is its fast shutdown (SIGTERM would wait for every client)
        leftovers = stop_groups({k: v for k, v in groups.items() if k == "postgres"}, first=signal.SIGINT)
        leftovers += stop_groups({k: v for k, v in groups.items() if k != "postgres"})
        reap(self.processes.values(), self._outputs, wait=5)
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)
        return leftovers

    # -- S3 (moto answers unsigned requests) -----------------------------------------------------
    def s3_put(self, key: str, body: bytes) -> str:
        """Store ``body`` under ``key``; returns its URI for Airflow (the AWS connection id in it)."""
        HTTP.put(f"{self.s3_url}/{BUCKET}/{key}", data=body, timeout=30).raise_for_status()
        return f"s3://aws_default@{BUCKET}/{key}"

    def s3_get(self, uri: str) -> bytes:
        """Read ``uri`` as the workers do (ObjectStoragePath over the AWS connection the fixture set)."""
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return bytes(ObjectStoragePath(uri).read_bytes())

    def s3_keys(self, prefix: str) -> list[str]:
        response = HTTP.get(f"{self.s3_url}/{BUCKET}", params={"list-type": "2", "prefix": prefix},
                            timeout=30)
        response.raise_for_status()
        tree = ET.fromstring(response.content)
        return sorted(el.text or "" for el in tree.iter() if el.tag.endswith("}Key") or el.tag == "Key")


@dataclass
class DistributedStack(AirflowApiClient):
    """The Airflow components over :class:`Servers`, and a REST client for the API server."""

    api_timeout = 60.0
    dags_timeout = 120.0

    root: Path
    servers: Servers
    dag_sources: list[Path]
    extra_env: dict[str, str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    retired: list[int] = field(default_factory=list)
    _outputs: list[IO[bytes]] = field(default_factory=list)
    _secrets: dict[str, str] = field(default_factory=dict)
    _generation: dict[str, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def machine(self, name: str) -> Path:
        return self.root / f"{name}.{self._generation.get(name, 0)}"

    def env(self, name: str) -> dict[str, str]:
        if not self._secrets:
            from cryptography.fernet import Fernet

            self._secrets = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_urlsafe(64),
                             "api": secrets.token_urlsafe(32)}
        machine = self.machine(name)
        base = clean_environment()
        pythonpath = os.pathsep.join(filter(None, [str(machine / "lib"), base.get("PYTHONPATH", "")]))
        db = self.servers.database_url
        return {
            **base,
            "PYTHONPATH": pythonpath,
            "TMPDIR": str(machine / "tmp"),
            "SFBULK_STACK_HOST": name,
            "AIRFLOW_HOME": str(machine / "home"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "sfbulk_stack_host.hostname",
            **airflow_env(self.port),
            "AIRFLOW__CORE__DAGS_FOLDER": str(machine / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CORE__FERNET_KEY": self._secrets["fernet"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secrets["jwt"],
            "AIRFLOW__API__SECRET_KEY": self._secrets["api"],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.servers.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "3",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            # the task runners' calls to the API server: a busy 2-core machine answers some of them slowly
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # a killed worker's task is found dead after 20 s (default 300) and retried
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # a killed triggerer's triggers move to the other after 6 s without its heartbeat (default 30; it
            # beats every second, airflow_env)
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **self.extra_env,
        }

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def _prepare_machine(self, name: str) -> None:
        machine = self.machine(name)
        for sub in ("home", "tmp", "lib"):
            (machine / sub).mkdir(parents=True, exist_ok=True)
        (machine / "lib" / "sfbulk_stack_host.py").write_text(HOSTNAME_MODULE)
        dags = machine / "dags"
        for source in self.dag_sources:
            shutil.copytree(source, dags, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))

    def start(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        self._prepare_machine("migrate")
        migrate = subprocess.run(self._airflow("db", "migrate"), env=self.env("migrate"),
                                 capture_output=True, timeout=240, check=False)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout.decode()}\n"
                               f"{migrate.stderr.decode()[-5000:]}")
        for name in COMPONENTS:
            self.start_component(name)
        self.wait_healthy(deadline)
        for name in WORKERS:
            self.wait_worker_ready(name, deadline)

    def command(self, name: str) -> list[str]:
        if name in WORKERS:
            return self._airflow("celery", "worker", "--celery-hostname", name, "--concurrency", "3",
                                 "--skip-serve-logs", "--without-gossip", "--without-mingle")
        if name in TRIGGERERS:
            return self._airflow("triggerer", "--skip-serve-logs")
        if name == "scheduler":
            return self._airflow("scheduler", "--skip-serve-logs")
        return self._airflow(name)

    def start_component(self, name: str) -> None:
        self._prepare_machine(name)
        out = open(self.machine(name) / "output.log", "wb")  # noqa: SIM115 - closed in stop()
        self._outputs.append(out)
        self.processes[name] = subprocess.Popen(
            self.command(name), env=self.env(name), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL the component's whole process group (the machine is gone, its task runners with it)."""
        process = self.processes.pop(name)
        signal_group(process.pid, signal.SIGKILL)
        process.wait(10)
        self.retired.append(process.pid)

    def replace(self, name: str, timeout: float = 120.0) -> None:
        """A new machine in place of a killed one: fresh home, TMPDIR and DAG files."""
        self._generation[name] = self._generation.get(name, 0) + 1
        self.start_component(name)
        if name in WORKERS:
            self.wait_worker_ready(name, time.monotonic() + timeout)

    def wait_worker_ready(self, name: str, deadline: float) -> None:
        log = self.machine(name) / "output.log"
        while time.monotonic() < deadline:
            self.check_alive()
            if log.exists() and " ready." in log.read_text(errors="replace"):
                return
            time.sleep(1)
        raise TimeoutError(f"Celery {name} never became ready:\n{self.diagnostics()}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}\n{self.diagnostics()}")

    def stop(self) -> list[str]:
        groups = {name: process.pid for name, process in self.processes.items()}
        groups.update({f"retired-{pid}": pid for pid in self.retired})
        leftovers = stop_groups(groups)
        reap(self.processes.values(), self._outputs, wait=5)
        return leftovers

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and group_alive(process.pid)

    def diagnostics(self, runs: dict[str, str] | None = None) -> str:
        """Output tails of every machine, and its task logs (the logs live on the machine that ran them)."""
        parts: list[str] = []
        for log in sorted(self.root.glob("*/output.log")):
            parts.append(f"--- {log.parent.name} (tail) ---\n"
                         + "\n".join(log.read_text(errors="replace").splitlines()[-12:]))
        for log in sorted(self.root.glob("*/home/logs/dag_id=*/**/*.log")):
            parts.append(f"--- {log.relative_to(self.root)} ---\n" + log.read_text(errors="replace")[-4000:])
        return "\n".join(parts)
