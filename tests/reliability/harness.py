"""Scenario plumbing shared by the operator fault runs: what fired, what the provider did next, and an
optional JSON-lines report (``SFBULK_RELIABILITY_REPORT=<file>``) the docs table is written from."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from conftest import Rig, TaskRun
from proxy import Fault

SEED = int(os.environ.get("SFBULK_RELIABILITY_SEED", "20240601"))


@dataclass(frozen=True)
class Scenario:
    """One row of the table: where the faults go, how the task waits, what must have fired."""

    id: str
    faults: tuple[Fault, ...]
    deferrable: bool = False
    min_fired: int = 1
    xfail: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def fault(kind: str, path: str, method: str | None = None, **kwargs: Any) -> Fault:
    return Fault(kind, path, method=method, **kwargs)


def _short(target: str) -> str:
    target = re.sub(r"/services/data/v[0-9.]+", "", target)
    target = re.sub(r"7[0-9A-Za-z]{14,17}", "{id}", target)
    return re.sub(r"\?.*", "?…", target)


def trace(rig: Rig) -> list[str]:
    """The recorded requests, compact: ``METHOD path -> status`` with the fault that fired."""
    lines = []
    for e in rig.proxy.exchanges:
        got = "closed" if e.status is None else str(e.status)
        mark = f"  <= {e.kind}{'' if e.kind != 'status' else ''}" if e.fault else ""
        lines.append(f"{e.method} {_short(e.target)} -> {got}{mark}")
    return lines


def describe(rig: Rig, run: TaskRun, scenario: Scenario, extra: dict[str, Any] | None = None) -> str:
    """A failure message: scenario, seed, tries, errors and the request trace."""
    payload = {
        "scenario": scenario.id, "seed": SEED, "deferrable": scenario.deferrable, "tries": run.tries,
        "deferrals": run.deferrals, "errors": run.errors, **(extra or {}),
    }
    report = os.environ.get("SFBULK_RELIABILITY_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**payload, "trace": trace(rig)}) + "\n")
    return json.dumps(payload, indent=1) + "\n" + "\n".join(trace(rig))


def apply(rig: Rig, scenario: Scenario) -> None:
    rig.proxy.set_faults([Fault(f.kind, f.path, method=f.method, status=f.status, retry_after=f.retry_after,
                                rate=f.rate, times=f.times, skip=f.skip, name=f.name)
                          for f in scenario.faults], seed=SEED)
