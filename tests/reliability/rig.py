"""Helpers of the reliability suite (imported by its conftest and tests).

The emulator behind :class:`proxy.FaultProxy`, every provider call routed through it, and the helpers
that run an operator like Airflow would (tries, deferrals) and check
the invariants afterwards.

Routing: the emulator's token answer names the emulator itself as ``instance_url`` (it has no setting for
a public base URL), so pointing the connection's host at the proxy would only route the token request.
The hooks honour ``HTTP_PROXY`` (docs/connections.md: both hooks, ``requests`` and ``aiohttp`` with
``trust_env``), so the suite sets ``HTTP_PROXY``/``http_proxy`` to the proxy and clears ``NO_PROXY``:
token, instance calls and the trigger's calls all cross the proxy. The test's own :class:`ApiSession`
ignores the environment (``trust_env = False``) and talks to the emulator directly.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "unit" / "operators"))

from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from proxy import FaultProxy

from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

#: Tries of one task (the first included), as ``retries=3`` would allow.
MAX_TRIES = 4
#: Deferrals of one try before the harness gives up (a bound, not an expectation).
MAX_DEFERRALS = 20
#: States that must not remain once a task has finished.
UNFINISHED = ("Open", "UploadComplete", "InProgress")
#: Hook retries: 4 attempts, short backoff; a ``Retry-After`` is honoured up to 1.5 s.
FAST_POLICY = RetryPolicy(max_attempts=4, base_delay=0.02, max_delay=1.5)


def token_for(server: EmulatorServer) -> str:
    """A password-grant token fetched without any proxy."""
    cfg = server.config
    session = requests.Session()
    session.trust_env = False
    response = session.post(f"{server.base_url}/services/oauth2/token", timeout=10, data={
        "grant_type": "password", "client_id": cfg.client_id, "client_secret": cfg.client_secret,
        "username": cfg.username, "password": cfg.password + cfg.security_token,
    })
    response.raise_for_status()
    return str(response.json()["access_token"])


def direct_api(server: EmulatorServer) -> ApiSession:
    api = ApiSession(server, token=token_for(server))
    api.session.trust_env = False  # never through HTTP_PROXY
    return api


@dataclass
class Rig:
    emulator: EmulatorServer
    proxy: FaultProxy
    api: ApiSession
    tmp_path: Path

    def jobs(self, kind: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        url: str | None = f"/jobs/{kind}"
        for _ in range(100):  # bounded paging
            response = self.api.get(url)
            response.raise_for_status()
            body = response.json()
            records.extend(body["records"])
            url = body.get("nextRecordsUrl")
            if not url:
                return records
        raise AssertionError("job list did not end")

    def unfinished_jobs(self) -> list[tuple[str, str, str]]:
        """Jobs of either kind still Open, UploadComplete or InProgress (after the emulator settles)."""
        self.emulator.wait_idle(20)
        self.api = direct_api(self.emulator)  # a fresh token: a scenario may have expired every token
        return [(kind, job["id"], job["state"]) for kind in ("ingest", "query") for job in self.jobs(kind)
                if job["state"] in UNFINISHED]


# --------------------------------------------------------------------------------------- running a task

@dataclass
class TaskRun:
    """What happened over all tries of one task."""

    result: dict[str, Any] | None = None
    tries: int = 0
    deferrals: int = 0
    errors: list[str] = field(default_factory=list)
    failed_for_good: bool = False  # AirflowFailException: Airflow would not retry
    xcom: dict[str, Any] | None = None


async def _first_event(trigger: SalesforceBulkJobTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), timeout=60)


def run_try(op: Any, context: dict[str, Any], run: TaskRun,
            on_defer: Callable[[], Any] | None = None) -> dict[str, Any]:
    """One try, as Airflow runs it: ``execute``; on ``TaskDeferred`` the trigger is rebuilt from its
    serialised form, run to its first event, and the named method resumes the task (maybe deferring again)."""
    try:
        return op.execute(context)  # type: ignore[no-any-return]
    except TaskDeferred as first:
        deferred = first
    for _ in range(MAX_DEFERRALS):
        run.deferrals += 1
        if on_defer is not None:
            on_defer()
        classpath, kwargs = deferred.trigger.serialize()
        event = asyncio.run(_first_event(SalesforceBulkJobTrigger(**kwargs)))
        try:
            return getattr(op, deferred.method_name)(context, event=event, **(deferred.kwargs or {}))  # type: ignore[no-any-return]
        except TaskDeferred as again:
            deferred = again
    raise AssertionError(f"still deferring after {MAX_DEFERRALS} deferrals")


def run_task(make_op: Callable[[], Any], *, task_id: str, max_tries: int = MAX_TRIES,
             on_defer: Callable[[], Any] | None = None) -> TaskRun:
    """Run a task until it succeeds, fails for good, or has used ``max_tries`` tries (a fresh operator
    and the next try number each time, like a retried task instance)."""
    run = TaskRun()
    for try_number in range(1, max_tries + 1):
        run.tries = try_number
        ti = FakeTI(try_number, task_id=task_id)
        try:
            run.result = run_try(make_op(), {"ti": ti}, run, on_defer)
            run.xcom = run.result
            return run
        except AirflowFailException as err:
            run.errors.append(f"try {try_number}: {type(err).__name__}: {err}")
            run.failed_for_good = True
            run.xcom = ti.xcoms.get("return_value")
            return run
        except Exception as err:
            run.errors.append(f"try {try_number}: {type(err).__name__}: {err}")
    return run


# ---------------------------------------------------------------------------------------------- files

def read_csv_uri(uri: str) -> list[dict[str, str]]:
    data = Path(uri.removeprefix("file://")).read_bytes()
    if uri.endswith(".gz"):
        data = gzip.decompress(data)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def rows_in(uris: list[str], columns: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(tuple(row[c] for c in columns) for uri in uris for row in read_csv_uri(uri))
