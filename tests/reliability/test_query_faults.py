"""Wire faults on every endpoint the query operator calls, injected by the proxy, in the worker and
deferred, with task retries (at most 4 tries). After each run the extract equals the org's records row for
row (no row lost, none twice), the XCom count matches, and no job is left unfinished."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import Scenario, apply, check_no_secrets, check_retry_after, describe, fault
from proxy import QUERY_CREATE, QUERY_JOB, QUERY_RESULT_PAGES, QUERY_RESULTS, TOKEN
from rig import Rig, TaskRun, read_csv_uri, run_task

from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

RECORDS = 150
PAGE = 50


def s(id_: str, *faults: Any, **kwargs: Any) -> Scenario:
    return Scenario(id_, tuple(faults), **kwargs)


SINGLE_GZIP = {"output_mode": "single", "output_compression": "gzip"}
LOCATOR = {"use_result_pages": False}

SCENARIOS = [
    s("token-503", fault("status", TOKEN, "POST", status=503)),
    s("token-drop_after", fault("drop_after", TOKEN, "POST")),
    s("token-cut_body", fault("cut_body", TOKEN, "POST")),
    # create (POST /jobs/query): UNSAFE; a lost answer may leave a running query job (it only reads)
    s("create-503", fault("status", QUERY_CREATE, "POST", status=503)),
    s("create-429", fault("status", QUERY_CREATE, "POST", status=429, retry_after="1")),
    s("create-drop_before", fault("drop_before", QUERY_CREATE, "POST")),
    s("create-drop_after", fault("drop_after", QUERY_CREATE, "POST")),
    s("create-cut_body", fault("cut_body", QUERY_CREATE, "POST")),
    s("results-stall", fault("stall", QUERY_RESULTS, "GET", seconds=3), options={"conn_timeout": 1}),
    s("poll-stall-deferred", fault("stall", QUERY_JOB, "GET", seconds=3, skip=1), deferrable=True,
      options={"conn_timeout": 1}),
    # poll / job info (GET /jobs/query/{id})
    s("poll-503", fault("status", QUERY_JOB, "GET", status=503, times=2)),
    s("poll-drop_after", fault("drop_after", QUERY_JOB, "GET", times=2)),
    s("poll-cut_body", fault("cut_body", QUERY_JOB, "GET", times=2)),
    s("poll-503-deferred", fault("status", QUERY_JOB, "GET", status=503, times=2, skip=1), deferrable=True),
    s("poll-drop_before-deferred", fault("drop_before", QUERY_JOB, "GET", times=2, skip=1), deferrable=True),
    s("poll-cut_body-deferred", fault("cut_body", QUERY_JOB, "GET", times=2, skip=1), deferrable=True),
    s("poll-outage-deferred", fault("status", QUERY_JOB, "GET", status=503, times=8, skip=1),
      deferrable=True, min_fired=8),
    # resultPages (GET /jobs/query/{id}/resultPages)
    s("resultPages-503", fault("status", QUERY_RESULT_PAGES, "GET", status=503, times=2)),
    s("resultPages-drop_after", fault("drop_after", QUERY_RESULT_PAGES, "GET")),
    s("resultPages-cut_body", fault("cut_body", QUERY_RESULT_PAGES, "GET", times=2)),
    s("resultPages-outage", fault("status", QUERY_RESULT_PAGES, "GET", status=503, times=8), min_fired=8),
    # An org without the endpoint (404) or with an answer we cannot read: the locator chain instead
    s("resultPages-404-fallback", fault("status", QUERY_RESULT_PAGES, "GET", status=404, times=50)),
    # result pages (GET /jobs/query/{id}/results[?locator=...])
    s("results-503", fault("status", QUERY_RESULTS, "GET", status=503, times=3)),
    s("results-drop_after", fault("drop_after", QUERY_RESULTS, "GET", times=2)),
    s("results-cut_body", fault("cut_body", QUERY_RESULTS, "GET", times=3)),
    s("results-cut_body-single-gzip", fault("cut_body", QUERY_RESULTS, "GET", times=3), options=SINGLE_GZIP),
    s("results-cut_body-locator", fault("cut_body", QUERY_RESULTS, "GET", times=3), options=LOCATOR),
    s("results-storm", fault("cut_body", QUERY_RESULTS, "GET", rate=0.5, times=6),
      fault("drop_before", QUERY_RESULTS, "GET", rate=0.3, times=3), min_fired=2),
    s("results-outage-2-tries", fault("cut_body", QUERY_RESULTS, "GET", times=4, skip=1), min_fired=4,
      options={"page_attempts": 1}),
    s("results-cut_body-deferred", fault("cut_body", QUERY_RESULTS, "GET", times=3), deferrable=True),
]


def make_operator(scenario: Scenario) -> SalesforceBulkQueryOperator:
    options: dict[str, Any] = {"download_concurrency": 2, **scenario.options}
    options.pop("conn_timeout", None)
    return SalesforceBulkQueryOperator(
        task_id="extract", soql="SELECT Id, Name FROM Account", max_records_per_page=PAGE,
        deferrable=scenario.deferrable, poll_interval=0.05, max_poll_interval=0.2, timeout=120, **options,
    )


def check_query(rig: Rig, run: TaskRun, scenario: Scenario) -> None:
    fired = rig.proxy.fired()
    jobs = rig.jobs("query")
    msg = describe(rig, run, scenario, {"fired": [e.fault for e in fired], "query_jobs": len(jobs)})
    assert len(fired) >= scenario.min_fired, f"the faults did not fire: {msg}"
    assert run.deferrals >= (1 if scenario.deferrable else 0), f"a deferrable run never deferred: {msg}"
    assert run.result is not None, f"no try succeeded: {msg}"
    extracted = [(row["Id"], row["Name"]) for uri in run.result["files"] for row in read_csv_uri(uri)]
    org = [(r["Id"], r["Name"]) for r in rig.emulator.records("Account")]
    assert len(org) == RECORDS
    duplicated = [key for key, n in Counter(extracted).items() if n > 1]
    assert not duplicated, f"rows extracted twice: {duplicated[:5]}: {msg}"
    assert sorted(extracted) == sorted(org), f"extract differs from the org's records: {msg}"
    assert run.result["record_count"] == RECORDS, msg
    assert run.result["job_id"] in {job["id"] for job in jobs}, msg
    assert rig.unfinished_jobs() == [], f"jobs left unfinished in the org: {msg}"
    if "retry-after" in scenario.id:  # in-try retries only; a failed try is retried by Airflow's delay
        check_retry_after(rig, msg)


def _marks(scenario: Scenario) -> list[Any]:
    if not scenario.xfail:
        return []
    return [pytest.mark.xfail(strict=True, reason=scenario.xfail)]


def params(scenarios: list[Scenario]) -> list[Any]:
    return [
        pytest.param(sc, id=sc.id, marks=_marks(sc))
        for sc in scenarios
    ]


@pytest.mark.parametrize("scenario", params(SCENARIOS))
def test_query_under_wire_faults(rig_factory, caplog, capsys, scenario):
    rig = rig_factory(conn_timeout=scenario.options.get("conn_timeout", 10),
                      query_delay=0.3 if scenario.deferrable else 0.05)
    rig.emulator.seed("Account", RECORDS, seed=11)
    apply(rig, scenario)
    run = run_task(lambda: make_operator(scenario), task_id="extract")
    check_query(rig, run, scenario)
    captured = capsys.readouterr()
    check_no_secrets(rig, [caplog.text, captured.out, captured.err, *run.errors], scenario.id)


def test_clean_extract_through_the_proxy(rig_factory, tmp_path: Path):
    rig = rig_factory(query_delay=0.05)
    rig.emulator.seed("Account", RECORDS, seed=11)
    scenario = Scenario("baseline", (), min_fired=0)
    run = run_task(lambda: make_operator(scenario), task_id="extract")
    check_query(rig, run, scenario)
    assert run.tries == 1
    assert len(rig.proxy.matching("GET", QUERY_RESULTS)) == RECORDS // PAGE
    assert len(rig.jobs("query")) == 1
