"""Wire faults on every endpoint the ingest operator calls, injected by the proxy, in the worker and
deferred, with task retries (at most 4 tries). After each run:

- every source row is in exactly one of the successful / failed / unprocessed result files of the XCom;
- the emulator holds each successful row exactly once, with the ``sf__Id`` the results name;
- no ingest or query job is left ``Open``, ``UploadComplete`` or ``InProgress``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import SEED, Scenario, apply, check_no_secrets, check_retry_after, describe, fault
from proxy import (
    INGEST_CREATE,
    INGEST_FAILED,
    INGEST_JOB,
    INGEST_LIST,
    INGEST_SUCCESSFUL,
    INGEST_UNPROCESSED,
    INGEST_UPLOAD,
    LIMITS,
    TOKEN,
)
from rig import Rig, TaskRun, read_csv_uri, rows_in, run_task

from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

COLUMNS = ["Name", "NumberOfEmployees"]
ROWS = 60
PER_JOB = 20


def source_rows(count: int) -> list[tuple[str, str]]:
    """``count`` rows; every row ``i % 20 == 7`` has a non-numeric NumberOfEmployees and fails."""
    return [(f"Row {i:03d}", f"bad{i}" if i % 20 == 7 else str(i)) for i in range(count)]


def write_source(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text(",".join(COLUMNS) + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return str(path)


def s(id_: str, *faults: Any, **kwargs: Any) -> Scenario:
    return Scenario(id_, tuple(faults), **kwargs)


# endpoint x fault kind; Retry-After is '1' where it is honoured (costs a second, so only a few rows).
SCENARIOS = [
    # token (POST /services/oauth2/token): a SAFE call, retried
    s("token-503", fault("status", TOKEN, "POST", status=503)),
    s("token-429-retry-after", fault("status", TOKEN, "POST", status=429, retry_after="1")),
    s("token-drop_before", fault("drop_before", TOKEN, "POST")),
    s("token-drop_after", fault("drop_after", TOKEN, "POST")),
    s("token-cut_body", fault("cut_body", TOKEN, "POST")),
    # limits (GET /limits, the daily-batches preflight)
    s("limits-503", fault("status", LIMITS, "GET", status=503)),
    s("limits-drop_before", fault("drop_before", LIMITS, "GET")),
    s("limits-cut_body", fault("cut_body", LIMITS, "GET")),
    # create (POST /jobs/ingest, JSON): UNSAFE, never repeated blindly
    s("create-503", fault("status", INGEST_CREATE, "POST", status=503)),
    s("create-429", fault("status", INGEST_CREATE, "POST", status=429, retry_after="1")),
    s("create-drop_before", fault("drop_before", INGEST_CREATE, "POST")),
    s("create-drop_after", fault("drop_after", INGEST_CREATE, "POST")),
    s("create-cut_body", fault("cut_body", INGEST_CREATE, "POST")),
    # upload (PUT /jobs/ingest/{id}/batches): UNSAFE
    s("upload-503", fault("status", INGEST_UPLOAD, "PUT", status=503)),
    s("upload-429", fault("status", INGEST_UPLOAD, "PUT", status=429, retry_after="1")),
    s("upload-drop_before", fault("drop_before", INGEST_UPLOAD, "PUT")),
    s("upload-drop_after", fault("drop_after", INGEST_UPLOAD, "PUT")),
    s("upload-drop_after+abort-drop_after", fault("drop_after", INGEST_UPLOAD, "PUT"),
      fault("drop_after", INGEST_JOB, "PATCH"), min_fired=2),
    s("upload-drop_after+abort-503x4", fault("drop_after", INGEST_UPLOAD, "PUT"),
      fault("status", INGEST_JOB, "PATCH", status=503, times=4), min_fired=5),
    # close (PATCH /jobs/ingest/{id} UploadComplete): SAFE, idempotent
    s("close-503", fault("status", INGEST_JOB, "PATCH", status=503)),
    s("close-429-retry-after", fault("status", INGEST_JOB, "PATCH", status=429, retry_after="1")),
    s("close-drop_before", fault("drop_before", INGEST_JOB, "PATCH")),
    s("close-drop_after", fault("drop_after", INGEST_JOB, "PATCH")),
    s("close-cut_body", fault("cut_body", INGEST_JOB, "PATCH")),
    # stall: the server hangs; the connection's timeout (1 s here) must end the wait
    s("token-stall", fault("stall", TOKEN, "POST", seconds=3), options={"conn_timeout": 1}),
    s("upload-stall", fault("stall", INGEST_UPLOAD, "PUT", seconds=3), options={"conn_timeout": 1}),
    s("poll-stall", fault("stall", INGEST_JOB, "GET", seconds=3), options={"conn_timeout": 1}),
    # poll (GET /jobs/ingest/{id})
    s("poll-503", fault("status", INGEST_JOB, "GET", status=503, times=2)),
    s("poll-429-retry-after", fault("status", INGEST_JOB, "GET", status=429, retry_after="1")),
    s("poll-drop_before", fault("drop_before", INGEST_JOB, "GET", times=2)),
    s("poll-drop_after", fault("drop_after", INGEST_JOB, "GET", times=2)),
    s("poll-cut_body", fault("cut_body", INGEST_JOB, "GET", times=2)),
    s("poll-503-deferred", fault("status", INGEST_JOB, "GET", status=503, times=2, skip=3), deferrable=True),
    s("poll-drop_after-deferred", fault("drop_after", INGEST_JOB, "GET", times=2, skip=3), deferrable=True),
    s("poll-cut_body-deferred", fault("cut_body", INGEST_JOB, "GET", times=2, skip=3), deferrable=True),
    s("poll-outage-2-tries", fault("status", INGEST_JOB, "GET", status=503, times=8), min_fired=8),
    s("poll-outage-2-tries-deferred", fault("drop_before", INGEST_JOB, "GET", times=8, skip=3),
      deferrable=True, min_fired=8),
    s("token-renewal-503-in-trigger", fault("status", TOKEN, "POST", status=503, skip=1),
      deferrable=True, options={"expire_tokens_on_defer": True}),
    s("token-renewal-outage-in-trigger", fault("drop_after", TOKEN, "POST", skip=1, times=4),
      deferrable=True, min_fired=4, options={"expire_tokens_on_defer": True}),
    s("poll-drop_after-deferred-rolling-window", fault("drop_after", INGEST_JOB, "GET", times=3, skip=2),
      deferrable=True, options={"job_concurrency": 1}),
    s("poll-stall-deferred", fault("stall", INGEST_JOB, "GET", seconds=3, skip=3), deferrable=True,
      options={"conn_timeout": 1}),
    s("poll-storm-deferred", fault("status", INGEST_JOB, "GET", status=503, rate=0.4, times=6),
      fault("drop_before", INGEST_JOB, "GET", rate=0.3, times=3), deferrable=True),
    # result sets (GET .../successfulResults, failedResults, unprocessedrecords): SAFE, restart from byte 0
    s("successful-503", fault("status", INGEST_SUCCESSFUL, "GET", status=503, times=2)),
    s("successful-drop_after", fault("drop_after", INGEST_SUCCESSFUL, "GET", times=2)),
    s("successful-cut_body", fault("cut_body", INGEST_SUCCESSFUL, "GET", times=2)),
    s("successful-cut_body-deferred", fault("cut_body", INGEST_SUCCESSFUL, "GET", times=2), deferrable=True),
    s("failed-503", fault("status", INGEST_FAILED, "GET", status=503)),
    s("failed-cut_body", fault("cut_body", INGEST_FAILED, "GET", times=2)),
    s("unprocessed-drop_after", fault("drop_after", INGEST_UNPROCESSED, "GET")),
    s("successful-outage-2-tries", fault("cut_body", INGEST_SUCCESSFUL, "GET", times=8), min_fired=8),
    s("unprocessed-cut_body", fault("cut_body", INGEST_UNPROCESSED, "GET", times=2)),
    # everything at once, seeded: a bad network for the whole task
    s("mixed-storm", fault("status", INGEST_JOB, "GET", status=503, rate=0.3, times=4),
      fault("cut_body", INGEST_SUCCESSFUL, "GET", rate=0.5, times=2),
      fault("drop_before", INGEST_UPLOAD, "PUT", rate=0.5, times=1),
      fault("drop_after", INGEST_JOB, "PATCH", rate=0.5, times=2), min_fired=2),
    s("mixed-storm-deferred", fault("status", INGEST_JOB, "GET", status=503, rate=0.3, times=4),
      fault("cut_body", INGEST_SUCCESSFUL, "GET", rate=0.5, times=2),
      fault("drop_before", INGEST_UPLOAD, "PUT", rate=0.5, times=1),
      fault("drop_after", INGEST_JOB, "PATCH", rate=0.5, times=2), deferrable=True, min_fired=2),
]

# One small part: the multipart create (job and data in one request), and the job list it uses to find
# the job of a lost answer.
MULTIPART = {"rows": 5, "multipart": True}
MULTIPART_SCENARIOS = [
    s("multipart-create-503", fault("status", INGEST_CREATE, "POST", status=503), options=MULTIPART),
    s("multipart-create-drop_before", fault("drop_before", INGEST_CREATE, "POST"), options=MULTIPART),
    s("multipart-create-drop_after", fault("drop_after", INGEST_CREATE, "POST"), options=MULTIPART),
    s("multipart-create-cut_body", fault("cut_body", INGEST_CREATE, "POST"), options=MULTIPART),
    s("multipart-create-drop_after+list-503", fault("drop_after", INGEST_CREATE, "POST"),
      fault("status", INGEST_LIST, "GET", status=503), min_fired=2, options=MULTIPART),
    s("multipart-create-drop_after+list-cut_body", fault("drop_after", INGEST_CREATE, "POST"),
      fault("cut_body", INGEST_LIST, "GET"), min_fired=2, options=MULTIPART),
    s("multipart-create-drop_after+list-outage", fault("drop_after", INGEST_CREATE, "POST"),
      fault("status", INGEST_LIST, "GET", status=503, times=4), min_fired=5, options=MULTIPART),
    s("multipart-create-drop_after+list-drop_after", fault("drop_after", INGEST_CREATE, "POST"),
      fault("drop_after", INGEST_LIST, "GET"), min_fired=2, options=MULTIPART),
]


def _marks(scenario: Scenario) -> list[Any]:
    if not scenario.xfail:
        return []
    return [pytest.mark.xfail(strict=True, reason=scenario.xfail)]


def params(scenarios: list[Scenario]) -> list[Any]:
    return [
        pytest.param(sc, id=sc.id, marks=_marks(sc))
        for sc in scenarios
    ]


def make_operator(src: str, scenario: Scenario, multipart: bool) -> SalesforceBulkIngestOperator:
    extra = {}
    if "job_concurrency" in scenario.options:
        extra = {"job_concurrency": scenario.options["job_concurrency"]}
    return SalesforceBulkIngestOperator(**extra,
        task_id="load", source=src, object_name="Account", operation="insert",
        max_records_per_job=None if multipart else PER_JOB, multipart_max_bytes=100_000 if multipart else 0,
        upload_concurrency=1, max_failed_records=ROWS, deferrable=scenario.deferrable,
        poll_interval=0.05, max_poll_interval=0.2, timeout=120,
    )


def check_ingest(rig: Rig, run: TaskRun, rows: list[tuple[str, str]], scenario: Scenario) -> None:
    """The invariants; ``scenario`` and the seed are in every message."""
    fired = rig.proxy.fired()
    msg = describe(rig, run, scenario, {"fired": [e.fault for e in fired]})
    assert len(fired) >= scenario.min_fired, f"the faults did not fire: {msg}"
    assert run.deferrals >= (1 if scenario.deferrable else 0), f"a deferrable run never deferred: {msg}"
    assert run.result is not None, f"no try succeeded: {msg}"
    xcom = run.result
    successful = rows_in(xcom["successful_results"], COLUMNS)
    failed = rows_in(xcom["failed_results"], COLUMNS)
    unprocessed = rows_in(xcom["unprocessed_records"], COLUMNS)
    source = Counter(rows)
    expected_failed = Counter(r for r in rows if r[1].startswith("bad"))
    # every source row in exactly one result set, nothing else in them
    assert successful + failed + unprocessed == source, f"result sets do not partition the source: {msg}"
    assert failed == expected_failed, f"failed set: {msg}"
    assert not unprocessed, f"unprocessed rows after a successful load: {msg}"
    counts = (xcom["records_sent"], xcom["records_successful"], xcom["records_failed"],
              xcom["records_unprocessed"])
    assert counts == (len(rows), sum(successful.values()), sum(failed.values()), 0), msg
    # the org holds each successful row exactly once, under the sf__Id of its result row
    records = rig.emulator.records("Account")
    assert Counter((r["Name"], r["NumberOfEmployees"]) for r in records) == successful, (
        f"org records differ from the successful rows (lost or doubled): {msg}")
    result_ids = sorted(row["sf__Id"] for uri in xcom["successful_results"] for row in read_csv_uri(uri))
    assert result_ids == sorted(r["Id"] for r in records), f"sf__Id vs org Ids: {msg}"
    assert rig.unfinished_jobs() == [], f"jobs left unfinished in the org: {msg}"
    if "retry-after" in scenario.id:  # in-try retries only; a failed try is retried by Airflow's delay
        check_retry_after(rig, msg)


def run_scenario(
    rig_factory: Any, tmp_path: Path, scenario: Scenario
) -> tuple[Rig, TaskRun, list[tuple[str, str]]]:
    multipart = bool(scenario.options.get("multipart"))
    rows = source_rows(scenario.options.get("rows", ROWS))
    # ingest batches of 10 rows taking a while: jobs still run when the task first checks them (deferred
    # runs must really defer)
    rig = rig_factory(conn_timeout=scenario.options.get("conn_timeout", 10), batch_size=10,
                      batch_delay=0.1 if scenario.deferrable else 0.03)
    src = write_source(tmp_path / "accounts.csv", rows)
    apply(rig, scenario)
    on_defer = rig.emulator.expire_tokens if scenario.options.get("expire_tokens_on_defer") else None
    run = run_task(lambda: make_operator(src, scenario, multipart), task_id="load", on_defer=on_defer)
    return rig, run, rows


@pytest.mark.parametrize("scenario", params(SCENARIOS + MULTIPART_SCENARIOS))
def test_ingest_under_wire_faults(rig_factory, tmp_path, caplog, capsys, scenario):
    rig, run, rows = run_scenario(rig_factory, tmp_path, scenario)
    check_ingest(rig, run, rows, scenario)
    captured = capsys.readouterr()
    check_no_secrets(rig, [caplog.text, captured.out, captured.err, *run.errors], scenario.id)


def test_clean_run_through_the_proxy(rig_factory, tmp_path):
    """The baseline: no fault, one try, every provider call crossed the proxy (token included)."""
    scenario = Scenario("baseline", (), min_fired=0)
    rig, run, rows = run_scenario(rig_factory, tmp_path, scenario)
    check_ingest(rig, run, rows, scenario)
    assert run.tries == 1, f"seed {SEED}: {run.errors}"
    methods = [(e.method, e.target.split("?")[0].rsplit("/", 1)[-1]) for e in rig.proxy.exchanges]
    assert methods[0] == ("POST", "token")
    assert sum(1 for m in methods if m[0] == "POST") == 1 + ROWS // PER_JOB  # token + one create per job
    assert sum(1 for m in methods if m[0] == "PUT") == ROWS // PER_JOB


def chaos(seed: int, deferrable: bool) -> Scenario:
    """Every endpoint faulty at once, each rule drawn with the seed and bounded."""
    return Scenario(f"chaos-seed{seed}{'-deferred' if deferrable else ''}", (
        fault("status", TOKEN, "POST", status=503, rate=0.3, times=1),
        fault("drop_before", LIMITS, "GET", rate=0.3, times=1),
        fault("drop_before", INGEST_CREATE, "POST", rate=0.2, times=2),
        fault("status", INGEST_CREATE, "POST", status=503, rate=0.2, times=1),
        fault("drop_after", INGEST_UPLOAD, "PUT", rate=0.3, times=2),
        fault("status", INGEST_UPLOAD, "PUT", status=503, rate=0.2, times=1),
        fault("drop_after", INGEST_JOB, "PATCH", rate=0.3, times=3),
        fault("cut_body", INGEST_JOB, "GET", rate=0.2, times=4),
        fault("status", INGEST_JOB, "GET", status=503, rate=0.2, times=4),
        fault("drop_after", INGEST_SUCCESSFUL, "GET", rate=0.3, times=3),
        fault("cut_body", INGEST_FAILED, "GET", rate=0.3, times=2),
        fault("status", INGEST_UNPROCESSED, "GET", status=503, rate=0.3, times=2),
    ), deferrable=deferrable, min_fired=3)


CHAOS_SEEDS = [int(x) for x in os.environ.get("SFBULK_CHAOS_SEEDS", "1,2").split(",") if x]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
@pytest.mark.parametrize("seed", CHAOS_SEEDS)
def test_ingest_chaos(rig_factory, tmp_path, seed, deferrable):
    scenario = chaos(seed, deferrable)
    rig = rig_factory(batch_size=10, batch_delay=0.1 if deferrable else 0.03)
    rows = source_rows(ROWS)
    src = write_source(tmp_path / "accounts.csv", rows)
    apply(rig, scenario, seed)
    run = run_task(lambda: make_operator(src, scenario, False), task_id="load")
    check_ingest(rig, run, rows, scenario)
