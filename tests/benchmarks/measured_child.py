"""Run a command as a child and read its own wall, CPU and peak RSS from the operating system.

Linux carries the peak RSS of the image a process had before ``exec`` into its ``ru_maxrss``: a child
spawned straight from a big process (pytest with Airflow imported, ~150 MB) reports at least that big
process's peak, whatever the child itself used. So the command is started by a tiny launcher
(``python -I -S``, about 13 MB), which spawns it, waits for it with ``os.wait4`` and writes the figures to
a file: the peak then is the command's own (or the launcher's 13 MB, whichever is larger).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_LAUNCHER = r"""
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
with open(report, "w") as out:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
               "exit": os.waitstatus_to_exitcode(status)}, out)
"""


@dataclass
class ChildUsage:
    """What the command cost: wall seconds, user + system CPU seconds, peak RSS, exit code."""

    wall: float
    cpu: float
    peak_mb: float
    exit: int


def run_measured(command: list[str], *, env: dict[str, str], log: Path, timeout: float) -> ChildUsage:
    """Run ``command`` (its first item an executable path), output to ``log``; kill it after ``timeout``."""
    report = log.with_suffix(".usage.json")
    report.unlink(missing_ok=True)
    with log.open("w") as output:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *command],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        try:
            launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, 9)
            launcher.wait()
    if not report.exists():
        return ChildUsage(0.0, 0.0, 0.0, launcher.returncode or -9)
    figures = json.loads(report.read_text())
    return ChildUsage(figures["wall"], figures["cpu"], figures["maxrss_kb"] / 1024, figures["exit"])
