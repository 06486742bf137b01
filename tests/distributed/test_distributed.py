"""Crash safety on a distributed stack (tests/distributed/stack.py): CeleryExecutor with two workers that
share no folder, two triggerers, PostgreSQL, Redis, results and sources on S3 (moto), the emulator.

1. The example DAGs and a ten-job load run green; results and manifests are on ``s3://``.
2. A worker SIGKILLed in the middle of a multi-job load: the retry runs on the other worker and finishes
   the same jobs from the checkpoint; nothing is loaded twice, no job is left behind.
3. The triggerer holding a load's wait SIGKILLed: the other triggerer takes the trigger over and the task
   finishes in its first try; the emulator's request log shows each job polled by one process at a time.
4. An extract whose pages go to S3 in parallel, its worker SIGKILLed mid-download: the retry on the other
   worker reuses the query job and keeps the pages the manifest already lists.

The tests run in this order on one shared stack (a killed machine is replaced by a fresh one).
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

API = "/services/data/v60.0"
JOB_POLL = re.compile(r"^/services/data/v[\d.]+/jobs/ingest/(?P<id>[^/]+)$")
QUERY_PAGE = re.compile(r"^/services/data/v[\d.]+/jobs/query/(?P<id>[^/]+)/results$")
LOAD_ROWS = 1000  # ten jobs of 100 rows


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def _source(d: Any, prefix: str, rows: int) -> str:
    lines = ["External_Id__c,Name"] + [f"{prefix}-{i:05d},{prefix} account {i}" for i in range(rows)]
    return d.servers.s3_put(f"sources/{prefix}.csv", ("\n".join(lines) + "\n").encode())


def _token(d: Any) -> str:
    from airflow_provider_sfbulk.emulator.config import EmulatorConfig
    from airflow_provider_sfbulk.emulator.testing import password_token

    return str(password_token(d.emulator.base_url, EmulatorConfig())["access_token"])


def _ingest_jobs(d: Any) -> dict[str, str]:
    """Every ingest job of the emulator: ``{id: state}``."""
    headers = {"Authorization": f"Bearer {_token(d)}"}
    return {job["id"]: job["state"]
            for job in d.emulator_api("GET", f"{API}/jobs/ingest", headers=headers)["records"]}


def _accounts(d: Any, prefix: str) -> list[str]:
    return [r["External_Id__c"] for r in d.records("Account") if r["External_Id__c"].startswith(prefix + "-")]


def _succeeded(d: Any, runs: dict[str, str], timeout: float) -> None:
    states = d.stack.wait_for_runs(runs, timeout)
    failed = {dag_id: state for dag_id, state in states.items() if state != "success"}
    assert not failed, f"runs failed: {failed}\n{d.stack.diagnostics()}"


def _wait(what: str, check: Any, timeout: float, d: Any) -> Any:
    return d.stack.wait_until(what, check, timeout)


def _running_on(d: Any, dag_id: str, run_id: str, task_id: str) -> str | None:
    ti = d.stack.task_instance(dag_id, run_id, task_id)
    return str(ti["hostname"]) if ti["state"] == "running" and ti.get("hostname") else None


def test_example_dags_and_a_ten_job_load_with_results_on_s3(distributed):
    d = distributed
    stack = d.stack
    dags = ["example_sfbulk_parent_child", "example_sfbulk_extract_to_storage",
            "example_sfbulk_delete_by_extract"]
    stack.wait_for_dags([*dags, "dist_load_deferred", "dist_load_in_worker", "dist_extract"])
    seeded = {r["Id"] for r in d.records("Opportunity")}
    before = set(_ingest_jobs(d))
    runs = {dag_id: stack.trigger(dag_id) for dag_id in dags}
    runs["dist_load_deferred"] = stack.trigger("dist_load_deferred", {"source": _source(d, "TEN", LOAD_ROWS)})
    _succeeded(d, runs, timeout=300)

    load = stack.xcom("dist_load_deferred", runs["dist_load_deferred"], "load")
    assert load["records_successful"] == LOAD_ROWS
    assert len(load["job_ids"]) == 10
    assert set(load["job_ids"]) <= set(_ingest_jobs(d)) - before
    assert sorted(_accounts(d, "TEN")) == [f"TEN-{i:05d}" for i in range(LOAD_ROWS)]
    assert load["manifest"].startswith("s3://")
    manifest = json.loads(d.servers.s3_get(load["manifest"]))
    assert manifest
    successes = [row for uri in load["successful_results"] for row in _csv_rows(d.servers.s3_get(uri))]
    assert all(uri.startswith("s3://") for uri in load["successful_results"])
    assert len(successes) == LOAD_ROWS

    accounts = stack.xcom("example_sfbulk_parent_child", runs["example_sfbulk_parent_child"],
                          "upsert_accounts")
    assert accounts["manifest"].startswith("s3://")
    assert accounts["failed_results"] == []
    extract = stack.xcom("example_sfbulk_extract_to_storage", runs["example_sfbulk_extract_to_storage"],
                         "extract_opportunities")
    assert extract["record_count"] == 1200
    assert extract["manifest"].startswith("s3://")
    ids = [row["Id"] for uri in extract["files"] for row in _csv_rows(d.servers.s3_get(uri))]
    assert sorted(ids) == sorted(seeded)
    json.loads(d.servers.s3_get(extract["manifest"]))
    deleted = stack.xcom("example_sfbulk_delete_by_extract", runs["example_sfbulk_delete_by_extract"],
                         "delete_closed_lost")
    assert deleted["records_failed"] == 0
    assert deleted["records_successful"] > 0
    # nothing of the results is on a worker's disk: every file is in the bucket
    assert d.servers.s3_keys("results/dist_load_deferred/")


def test_worker_killed_mid_load_the_other_worker_finishes_the_same_jobs(distributed):
    d = distributed
    stack = d.stack
    before = set(_ingest_jobs(d))
    run_id = stack.trigger("dist_load_in_worker", {"source": _source(d, "KILLW", LOAD_ROWS)})
    victim = _wait("the load running on a worker",
                   lambda: _running_on(d, "dist_load_in_worker", run_id, "load"), 120, d)
    # three jobs run at a time (the others wait, created and uploaded, to be closed): kill once the first
    # have finished and most have not
    def mid_load() -> dict[str, str] | None:
        new = {job_id: state for job_id, state in _ingest_jobs(d).items() if job_id not in before}
        done = sum(state == "JobComplete" for state in new.values())
        return new if 1 <= done <= 6 else None

    at_kill = _wait("the first jobs finished", mid_load, 90, d)
    started = set(at_kill)
    stack.kill(victim)
    _succeeded(d, {"dist_load_in_worker": run_id}, timeout=240)

    tries = stack.tries("dist_load_in_worker", run_id, "load")
    assert [t["hostname"] for t in tries][0] == victim
    last = stack.task_instance("dist_load_in_worker", run_id, "load")
    assert last["try_number"] == 2, (tries, last)
    assert last["hostname"] not in ("", victim), (tries, last)
    load = stack.xcom("dist_load_in_worker", run_id, "load")
    jobs = _ingest_jobs(d)
    created = {job_id: state for job_id, state in jobs.items() if job_id not in before}
    # the same jobs: the ones created before the kill are among the load's, and no job more than ten
    assert started <= set(load["job_ids"]) == set(created), (started, load["job_ids"], created)
    assert len(created) == 10, created
    assert set(created.values()) == {"JobComplete"}, created
    loaded = _accounts(d, "KILLW")
    assert sorted(loaded) == [f"KILLW-{i:05d}" for i in range(LOAD_ROWS)]  # each row once
    assert load["records_successful"] == LOAD_ROWS
    assert load["results_path"].startswith("s3://")
    stack.replace(victim)


def _trigger_holder(d: Any, dag_id: str, run_id: str) -> str | None:
    rows = d.servers.sql(
        "SELECT j.hostname FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
        "JOIN job j ON t.triggerer_id = j.id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.state = 'deferred'",
        dag_id, run_id)
    return str(rows[0][0]) if rows else None


def test_triggerer_killed_the_other_takes_the_waits_over(distributed):
    d = distributed
    stack = d.stack
    before = set(_ingest_jobs(d))
    run_id = stack.trigger("dist_load_deferred", {"source": _source(d, "KILLT", 300)})
    holder = _wait("a triggerer holding the wait", lambda: _trigger_holder(d, "dist_load_deferred", run_id),
                   120, d)
    jobs = set(_ingest_jobs(d)) - before
    # let the holder poll, then take the machine away
    _wait("a poll from the triggerer", lambda: any(
        (m := JOB_POLL.match(r["path"])) and m["id"] in jobs and r["t"] > time.time() - 1.5
        for r in d.requests()), 30, d)
    killed_at = time.time()
    stack.kill(holder)
    _succeeded(d, {"dist_load_deferred": run_id}, timeout=180)

    ti = stack.task_instance("dist_load_deferred", run_id, "load")
    assert ti["try_number"] == 1, ti  # the wait moved, the task never failed
    load = stack.xcom("dist_load_deferred", run_id, "load")
    assert set(load["job_ids"]) == jobs
    assert len(jobs) == 3
    assert sorted(_accounts(d, "KILLT")) == [f"KILLT-{i:05d}" for i in range(300)]
    polls: dict[str, list[tuple[float, float, str]]] = {job_id: [] for job_id in jobs}
    for r in d.requests():
        m = JOB_POLL.match(r["path"])
        if r["method"] == "GET" and m and m["id"] in jobs:
            polls[m["id"]].append((r["t"], r["end"], r["client"]))
    for job_id, seen in polls.items():
        spans: dict[str, tuple[float, float]] = {}
        for start, end, client in seen:
            first, last = spans.get(client, (start, end))
            spans[client] = (min(first, start), max(last, end))
        ordered = sorted(spans.values())
        # one process at a time: the spans of the processes that polled this job never overlap
        assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False)), (job_id, spans)
        before_kill = {c for s, _, c in seen if s < killed_at}
        after_kill = {c for s, _, c in seen if s >= killed_at}
        assert before_kill, (job_id, seen, killed_at)
        assert after_kill, (job_id, seen, killed_at)
        assert not before_kill & after_kill, (job_id, seen, killed_at)


def test_extract_resumed_after_a_worker_kill_keeps_the_pages_on_s3(distributed):
    d = distributed
    pages = -(-len(d.records("Opportunity")) // 100)  # 100 records a page
    # every page answers after 3 s, so that pages are still arriving when the worker is killed
    slow_pages = {"kind": "delay", "delay": 3, "method": "GET", "path": "/jobs/query/[^/]+/results$"}
    d.emulator_api("PUT", "/__emulator/faults", json={"rules": [slow_pages]})
    try:
        _extract_with_a_kill(d, pages)
    finally:
        d.emulator_api("DELETE", "/__emulator/faults")


def _extract_with_a_kill(d: Any, pages: int) -> None:
    stack = d.stack
    since = time.time()
    run_id = stack.trigger("dist_extract")

    def pages_done() -> list[dict[str, Any]]:
        return [r for r in d.requests()
                if r["t"] >= since and QUERY_PAGE.match(r["path"]) and r["status"] == 200]

    _wait("four pages stored", lambda: len(pages_done()) >= 4, 180, d)
    victim = _running_on(d, "dist_extract", run_id, "extract")
    assert victim, stack.task_instance("dist_extract", run_id, "extract")
    time.sleep(1.2)  # the manifest is rewritten at most once a second
    done_before = {r["query"] for r in pages_done()}
    assert len(done_before) < pages, "the extract finished before the kill: slow the downloads down"
    killed_at = time.time()
    stack.kill(victim)
    _succeeded(d, {"dist_extract": run_id}, timeout=240)

    last = stack.task_instance("dist_extract", run_id, "extract")
    assert last["try_number"] == 2, last
    assert last["hostname"] not in ("", victim), last
    result = stack.xcom("dist_extract", run_id, "extract")
    live = sorted(r["Id"] for r in d.records("Opportunity"))  # the example deleted the Closed Lost ones
    assert result["record_count"] == len(live)
    assert len(result["files"]) == pages
    assert all(uri.startswith("s3://") for uri in result["files"])
    ids = [row["Id"] for uri in result["files"] for row in _csv_rows(d.servers.s3_get(uri))]
    assert sorted(ids) == live
    created = [r for r in d.requests() if r["t"] >= since and r["method"] == "POST"
               and r["path"].endswith("/jobs/query")]
    assert len(created) == 1  # the retry reused the query job
    again = {r["query"] for r in pages_done() if r["t"] >= killed_at}
    # the retry fetched only what the manifest on S3 did not hold
    assert done_before - again, (done_before, again)
    assert len(again) < pages
