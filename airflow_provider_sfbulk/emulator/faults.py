"""Faults on demand: error statuses, dropped connections and slow answers on chosen endpoints.

A :class:`FaultRule` matches requests by method and path regex and fires on a share of them. The
:class:`FaultSet` draws from one seeded random generator, so a run with the same seed and the same request
sequence injects the same faults.

Text form (CLI ``--fault``), comma-separated ``key=value`` items, ``path`` last because a regex may hold
commas::

    status=503,rate=0.5,method=GET,path=/jobs/ingest/[^/]+$
    status=429,times=2,path=/jobs/query
    drop,method=PUT,path=/batches
    delay=2.5,path=/results
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("status", "drop", "delay")
FAULT_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class FaultRule:
    """One fault: which requests it hits, how often, and what happens to them."""

    kind: str = "status"
    status: int = 503
    method: str = "*"
    path: str = ".*"
    rate: float = 1.0
    delay: float = 0.0
    times: int | None = None
    _path_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {self.kind!r}")
        if self.kind == "status" and self.status not in FAULT_STATUSES:
            raise ValueError(f"fault status must be one of {FAULT_STATUSES}, not {self.status}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        if self.delay < 0:
            raise ValueError("fault delay must not be negative")
        if self.kind == "delay" and self.delay <= 0:
            raise ValueError("a delay fault needs delay > 0")
        if self.times is not None and self.times < 1:
            raise ValueError("fault times must be at least 1")
        try:
            object.__setattr__(self, "_path_re", re.compile(self.path))
        except re.error as err:
            raise ValueError(f"fault path is not a valid regex: {err}") from err

    def matches(self, method: str, path: str) -> bool:
        """True when the rule applies to this request (before the rate is drawn)."""
        if self.method != "*" and self.method.upper() != method.upper():
            return False
        return self._path_re.search(path) is not None

    def to_dict(self) -> dict[str, Any]:
        """The rule's fields as a dict, as the admin API shows them."""
        data = asdict(self)
        data.pop("_path_re", None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from the admin endpoint's JSON (unknown keys are refused)."""
        allowed = {"kind", "status", "method", "path", "rate", "delay", "times"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = dict(data)
        if "status" in kwargs and "kind" not in kwargs:
            kwargs["kind"] = "status"
        try:
            if "status" in kwargs:
                kwargs["status"] = int(kwargs["status"])
            if "rate" in kwargs:
                kwargs["rate"] = float(kwargs["rate"])
            if "delay" in kwargs:
                kwargs["delay"] = float(kwargs["delay"])
            if kwargs.get("times") is not None:
                kwargs["times"] = int(kwargs["times"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad fault value: {err}") from err
        return cls(**kwargs)


def parse_fault(text: str) -> FaultRule:
    """Parse the CLI text form described in the module docstring."""
    data: dict[str, Any] = {}
    rest = text.strip()
    while rest:
        if rest.startswith("path="):
            data["path"] = rest[len("path=") :]
            break
        item, _, rest = rest.partition(",")
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key == "drop" and not sep:
            data["kind"] = "drop"
        elif key == "delay" and data.get("kind") != "drop" and "status" not in data:
            data["kind"] = "delay"
            data["delay"] = value
        elif key == "status":
            data["kind"] = "status"
            data["status"] = value
        elif key in ("method", "rate", "times"):
            data[key] = value
        else:
            raise ValueError(f"unknown fault item {item!r} in {text!r}")
    if "kind" not in data:
        raise ValueError(f"fault {text!r} needs status=N, drop or delay=SECONDS")
    return FaultRule.from_dict(data)


class FaultSet:
    """The active rules and the seeded generator that decides when they fire (thread-safe)."""

    def __init__(self, rules: list[FaultRule] | None = None, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = list(rules or [])
        self._fired: list[int] = [0] * len(self._rules)

    @property
    def rules(self) -> list[FaultRule]:
        """A copy of the active rules, in the order they are tried."""
        with self._lock:
            return list(self._rules)

    def status(self) -> list[dict[str, Any]]:
        """Every rule with how often it fired so far."""
        with self._lock:
            return [{**rule.to_dict(), "fired": n} for rule, n in zip(self._rules, self._fired, strict=True)]

    def replace(self, rules: list[FaultRule], *, seed: int | None = None) -> None:
        """Swap every rule; a new seed restarts the random sequence."""
        with self._lock:
            self._rules = list(rules)
            self._fired = [0] * len(self._rules)
            if seed is not None:
                self._seed = seed
                self._random = random.Random(seed)

    def reset(self) -> None:
        """Remove every rule and restart the random sequence from the seed."""
        self.replace([], seed=self._seed)

    def decide(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any (first matching rule whose draw hits)."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
                if not rule.matches(method, path):
                    continue
                if rule.rate >= 1.0 or self._random.random() < rule.rate:
                    self._fired[index] += 1
                    return rule
            return None
