"""Process helpers of the suites that start real servers (tests/e2e, tests/distributed).

Every server runs in its own session (``start_new_session=True``), so its process id is also its process
group id: stopping it signals the whole group (task runners, pool children), waits a bounded time, then
SIGKILLs what is left.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


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
