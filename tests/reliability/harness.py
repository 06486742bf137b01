"""Scenario plumbing shared by the operator fault runs: what fired, what the provider did next, and an
optional JSON-lines report (``SFBULK_RELIABILITY_REPORT=<file>``) the docs table is written from."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from proxy import Fault
from rig import Rig, TaskRun

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
        "scenario": scenario.id, "seed": rig.proxy.seed, "deferrable": scenario.deferrable,
        "tries": run.tries,
        "deferrals": run.deferrals, "errors": run.errors, **(extra or {}),
    }
    report = os.environ.get("SFBULK_RELIABILITY_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**payload, "trace": trace(rig)}) + "\n")
    return json.dumps(payload, indent=1) + "\n" + "\n".join(trace(rig))


def apply_copy(scenario: Scenario) -> list[Fault]:
    """Fresh copies of the scenario's rules (rules count what they matched and fired)."""
    return [Fault(f.kind, f.path, method=f.method, status=f.status, retry_after=f.retry_after, rate=f.rate,
                  times=f.times, skip=f.skip, seconds=f.seconds, name=f.name) for f in scenario.faults]


def apply(rig: Rig, scenario: Scenario, seed: int = SEED) -> None:
    rig.proxy.set_faults(apply_copy(scenario), seed=seed)


def check_retry_after(rig: Rig, msg: str) -> None:
    """After each injected answer with ``Retry-After``, the same request came back no sooner than it said."""
    exchanges = rig.proxy.exchanges
    for i, e in enumerate(exchanges):
        rule = next((f for f in rig.proxy.faults if f.name == e.fault), None)
        if rule is None or rule.kind != "status" or rule.retry_after is None:
            continue
        again = next((later for later in exchanges[i + 1:]
                      if later.method == e.method and _short(later.target) == _short(e.target)), None)
        assert again is not None, f"the request answered {rule.status} was never repeated: {msg}"
        waited = again.started - e.finished
        assert waited >= float(rule.retry_after) * 0.9, (
            f"retried {waited:.2f}s after a Retry-After of {rule.retry_after}s: {msg}")


def check_no_secrets(rig: Rig, texts: list[str], msg: str) -> None:
    """No credential of the connection and no access token the clients used appears in ``texts``."""
    cfg = rig.emulator.config
    secrets = {"password": cfg.password, "client_secret": cfg.client_secret,
               "security_token": cfg.security_token, "password+token": cfg.password + cfg.security_token}
    secrets.update({f"access token {i}": token for i, token in enumerate(sorted(rig.proxy.bearer_tokens))})
    assert rig.proxy.bearer_tokens, "no bearer token crossed the proxy"
    for name, value in secrets.items():
        for text in texts:
            assert value not in text, f"{name} leaked into the logs or an error message: {msg}"
