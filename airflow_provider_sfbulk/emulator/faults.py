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
    hold=60,skip=1,times=1,method=GET,path=/results

``hold=S`` keeps a matching request waiting (for at most S seconds) before the emulator looks at it,
until a test releases it (:class:`HeldRequests`, admin ``POST /__emulator/holds/release``). A test can so
stop a client at an exact step: wait until the request is held, kill the client, release. A held request
whose client went away meanwhile is dropped unanswered, as if it had never arrived. ``skip=N`` lets the
first N matching requests pass (for any kind), so a rule can aim at the Nth one.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("status", "drop", "delay", "hold")
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
    skip: int = 0
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
        if self.kind in ("delay", "hold") and self.delay <= 0:
            raise ValueError(f"a {self.kind} fault needs {self.kind}=SECONDS > 0")
        if self.skip < 0:
            raise ValueError("fault skip must not be negative")
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
        allowed = {"kind", "status", "method", "path", "rate", "delay", "times", "skip"}
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
            if "skip" in kwargs:
                kwargs["skip"] = int(kwargs["skip"])
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
        elif key == "hold" and data.get("kind") != "drop" and "status" not in data:
            data["kind"] = "hold"
            data["delay"] = value
        elif key == "status":
            data["kind"] = "status"
            data["status"] = value
        elif key in ("method", "rate", "times", "skip"):
            data[key] = value
        else:
            raise ValueError(f"unknown fault item {item!r} in {text!r}")
    if "kind" not in data:
        raise ValueError(f"fault {text!r} needs status=N, drop, delay=SECONDS or hold=SECONDS")
    return FaultRule.from_dict(data)


class FaultSet:
    """The active rules and the seeded generator that decides when they fire (thread-safe)."""

    def __init__(self, rules: list[FaultRule] | None = None, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = list(rules or [])
        self._fired: list[int] = [0] * len(self._rules)
        self._seen: list[int] = [0] * len(self._rules)

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
            self._seen = [0] * len(self._rules)
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
                self._seen[index] += 1
                if self._seen[index] <= rule.skip:
                    continue
                if rule.rate >= 1.0 or self._random.random() < rule.rate:
                    self._fired[index] += 1
                    return rule
            return None


class HeldRequests:
    """Requests a ``hold`` rule keeps waiting, until released or their time is up.

    Used from the server's event loop only (the admin endpoints run there too), so it needs no lock.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[dict[str, Any], asyncio.Event]] = {}
        self._next = 1
        #: Every request held so far (also the released ones), for tests that wait for a hold.
        self.total = 0

    async def hold(self, method: str, path: str, seconds: float) -> None:
        """Wait until :meth:`release` or for ``seconds``, whichever comes first."""
        number = self._next
        self._next += 1
        self.total += 1
        event = asyncio.Event()
        self._held[number] = ({"id": number, "method": method, "path": path, "since": time.time()}, event)
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._held.pop(number, None)

    def view(self) -> dict[str, Any]:
        """The requests held now (oldest first) and how many were held in all."""
        return {"held": [info for info, _ in self._held.values()], "total": self.total}

    def release(self) -> int:
        """Let every held request go on; returns how many were waiting."""
        waiting = list(self._held.values())
        for _, event in waiting:
            event.set()
        return len(waiting)
