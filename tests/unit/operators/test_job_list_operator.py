"""SalesforceBulkJobListOperator against the emulator: every page, both kinds, problems, aborts, files."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_sfbulk.emulator.identity import POD, USER_ID
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.operators.job_watch import expected_creators, is_unknown_source, parse_user_ids
from airflow_provider_sfbulk.operators.jobs import COLUMNS, SalesforceBulkJobListOperator
from airflow_provider_sfbulk.protocol.api import parse_job_info
from airflow_provider_sfbulk.protocol.ids import make_id
from airflow_provider_sfbulk.protocol.states import JobState

#: A second user of the emulated org: the emulator signs in one user only, so its jobs are made in the store.
OTHER_USER_ID = make_id("005", POD, 2)


def _lines(uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ObjectStoragePath(uri).read_text().splitlines()]


def _org_with_jobs(api: ApiSession) -> dict[str, str]:
    """Two finished ingest jobs, one Open (never closed), one query job: returns their ids by role."""
    done1 = api.run_ingest("Account", "insert", b"Name\nA\nB\n")["id"]
    done2 = api.run_ingest("Account", "insert", b"Name\nC\n")["id"]
    open_job = api.create_ingest("Contact", "insert")["id"]
    query = api.run_query("SELECT Id FROM Account")["id"]
    return {"done1": done1, "done2": done2, "open": open_job, "query": query}


def test_lists_every_page_of_both_kinds_and_counts(emulator_factory, salesforce_conn, results_base):
    server = emulator_factory(list_page_size=2)  # 3 ingest jobs -> two pages: nextRecordsUrl is followed
    salesforce_conn(server)
    ids = _org_with_jobs(ApiSession(server))
    ti = FakeTI(dag_id="watch", task_id="jobs")
    op = SalesforceBulkJobListOperator(task_id="jobs", fail_on_problems=False)
    result = op.execute({"ti": ti})
    assert result["total"] == 4
    assert result["by_kind"] == {"ingest": 3, "query": 1}
    assert result["by_state"] == {"JobComplete": 3, "Open": 1}
    # a fresh Open job is not stale under the default hour
    assert (result["stale_open"], result["stale_running"], result["failed_recently"]) == (0, 0, 0)
    assert result["problems"] == 0
    assert result["problem_job_ids"] == []
    assert result["aborted"] == []
    assert result["user_id"] == USER_ID
    # without expected_creators nobody's jobs are reported for their creator (today's behaviour)
    assert result["unknown_sources"] == 0
    assert (result["unknown_creators"], result["expected_creators"]) == ({}, None)
    expected_file = results_base / "watch" / "run-1" / "jobs" / "try-1" / "jobs.jsonl"
    assert result["jobs_file"] == f"file://{expected_file}"
    rows = _lines(result["jobs_file"])
    assert {row["id"] for row in rows} == set(ids.values())
    assert all(tuple(row) == COLUMNS for row in rows)
    by_id = {row["id"]: row for row in rows}
    assert by_id[ids["open"]]["state"] == "Open"
    assert by_id[ids["open"]]["problem"] is None
    assert by_id[ids["query"]]["kind"] == "query"
    assert by_id[ids["done1"]]["created_by_id"] == USER_ID
    assert {row["job_type"] for row in rows if row["kind"] == "ingest"} == {"V2Ingest"}
    # the ingest list filtered by job type: Bulk API 1.0 (Classic) jobs are left out
    only_classic = SalesforceBulkJobListOperator(
        task_id="jobs", ingest_job_type="Classic", job_kinds="ingest"
    )
    assert only_classic.execute({"ti": FakeTI(dag_id="watch", task_id="jobs")})["total"] == 0


def test_stale_open_fails_the_task_and_is_not_aborted_by_default(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    ids = _org_with_jobs(ApiSession(emulator))
    ti = FakeTI(dag_id="watch", task_id="jobs")
    op = SalesforceBulkJobListOperator(task_id="jobs", stale_open_after=0, output_path=str(tmp_path / "out"),
                                       output_format="csv")
    with pytest.raises(AirflowFailException, match="1 Bulk API job problem"):
        op.execute({"ti": ti})
    result = ti.xcoms["return_value"]  # pushed before failing, for the alert / downstream report
    assert result["stale_open"] == 1
    assert result["problems"] == 1
    assert result["problem_job_ids"] == [ids["open"]]
    assert result["aborted"] == []
    rows = list(csv.DictReader(io.StringIO(ObjectStoragePath(result["jobs_file"]).read_text())))
    assert result["jobs_file"].endswith("/out/jobs.csv")
    assert [row["id"] for row in rows if row["problem"]] == [ids["open"]]
    assert ApiSession(emulator).get(f"/jobs/ingest/{ids['open']}").json()["state"] == "Open"


def test_abort_stale_open_of_own_user_resolves_the_problem(emulator, salesforce_conn, results_base):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    ids = _org_with_jobs(api)
    ti = FakeTI(dag_id="watch", task_id="jobs")
    op = SalesforceBulkJobListOperator(task_id="jobs", stale_open_after="0", abort_stale_open="True")
    result = op.execute({"ti": ti})  # templated values arrive as text
    assert result["aborted"] == [ids["open"]]
    assert result["stale_open"] == 1
    assert result["problems"] == 0
    assert api.get(f"/jobs/ingest/{ids['open']}").json()["state"] == "Aborted"
    row = next(row for row in _lines(result["jobs_file"]) if row["id"] == ids["open"])
    assert row["aborted"] is True
    assert row["problem"] == "stale_open"


def test_other_users_open_jobs_are_never_aborted(emulator, salesforce_conn, results_base, monkeypatch):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    ids = _org_with_jobs(api)
    op = SalesforceBulkJobListOperator(task_id="jobs", stale_open_after=0, abort_stale_open=True)
    monkeypatch.setattr(op, "connection_user_id", lambda: "005000000000001AAA")
    ti = FakeTI(dag_id="watch", task_id="jobs")
    with pytest.raises(AirflowFailException):
        op.execute({"ti": ti})
    assert ti.xcoms["return_value"]["aborted"] == []
    assert api.get(f"/jobs/ingest/{ids['open']}").json()["state"] == "Open"


def test_failed_recently_and_stale_running(emulator, salesforce_conn, results_base):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    emulator.set_faults(failing_batch=1)
    failed = api.run_ingest("Account", "insert", b"Name\nX\n")
    emulator.reset_faults()
    assert failed["state"] == "Failed"
    ti = FakeTI(dag_id="watch", task_id="jobs")
    op = SalesforceBulkJobListOperator(task_id="jobs", job_kinds="ingest")
    with pytest.raises(AirflowFailException, match="1 Failed within 86400s"):
        op.execute({"ti": ti})
    assert ti.xcoms["return_value"]["failed_recently"] == 1
    assert ti.xcoms["return_value"]["problem_job_ids"] == [failed["id"]]
    # outside the window it is history, not a problem
    quiet = SalesforceBulkJobListOperator(task_id="jobs", job_kinds=["ingest"], failed_within=0)
    assert quiet.execute({"ti": FakeTI(dag_id="watch", task_id="jobs")})["problems"] == 0


def test_stale_running(emulator_factory, salesforce_conn, results_base):
    server = emulator_factory(batch_delay=30)  # a closed job stays UploadComplete/InProgress meanwhile
    salesforce_conn(server)
    api = ApiSession(server)
    job = api.create_ingest("Account", "insert")["id"]
    api.upload(job, b"Name\nY\n").raise_for_status()
    api.close(job).raise_for_status()
    fresh = SalesforceBulkJobListOperator(task_id="jobs")
    assert fresh.execute({"ti": FakeTI(dag_id="watch", task_id="jobs")})["problems"] == 0
    ti = FakeTI(dag_id="watch", task_id="jobs")
    old = SalesforceBulkJobListOperator(task_id="jobs", stale_running_after=timedelta(0))
    with pytest.raises(AirflowFailException, match="1 stale UploadComplete/InProgress"):
        old.execute({"ti": ti})
    assert ti.xcoms["return_value"]["stale_running"] == 1
    assert ti.xcoms["return_value"]["problem_job_ids"] == [job]
    api.patch(f"/jobs/ingest/{job}", json={"state": "Aborted"})


def test_bad_parameters_fail_at_parse_time():
    with pytest.raises(ValueError, match="output_format"):
        SalesforceBulkJobListOperator(task_id="x", output_format="xml")
    with pytest.raises(ValueError, match="negative"):
        SalesforceBulkJobListOperator(task_id="x", stale_open_after=-1)
    with pytest.raises(ValueError, match="job kind|kind"):
        SalesforceBulkJobListOperator(task_id="x", job_kinds=["bogus"])
    # a template is checked when rendered, not before
    SalesforceBulkJobListOperator(task_id="x", stale_open_after="{{ params.stale }}")


def test_classify_thresholds_at_a_fixed_time():
    from datetime import datetime, timezone

    from airflow_provider_sfbulk.operators.jobs import Thresholds, classify

    now = datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc)
    limits = Thresholds(stale_open=3600, stale_running=4 * 3600, failed_within=86400)

    def job(state: str, created: str, modstamp: str | None = None) -> Any:
        document = {"id": "7505fE000000001ABA", "state": state, "operation": "insert", "object": "Account",
                    "createdDate": created, "systemModstamp": modstamp or created}
        return parse_job_info(document, None)

    assert classify(job("Open", "2024-05-02T11:00:00.000+0000"), now, limits) == (3600.0, "stale_open")
    assert classify(job("Open", "2024-05-02T11:00:01.000+0000"), now, limits)[1] is None
    assert classify(job("InProgress", "2024-05-02T07:59:00.000+0000"), now, limits)[1] == "stale_running"
    assert classify(job("UploadComplete", "2024-05-02T09:00:00.000+0000"), now, limits)[1] is None
    # Failed: counted by when it failed (last change), not by when it was created
    recent = job("Failed", "2024-04-20T00:00:00.000+0000", "2024-05-01T13:00:00.000+0000")
    assert classify(recent, now, limits)[1] == "failed_recently"
    old = job("Failed", "2024-04-20T00:00:00.000+0000", "2024-05-01T11:59:59.000+0000")
    assert classify(old, now, limits)[1] is None
    assert classify(job("JobComplete", "2020-01-01T00:00:00.000+0000"), now, limits)[1] is None


# --- unknown sources: expected_creators ----------------------------------------------------------------


def _job_of_another_user(server: Any) -> str:
    """An ``Open`` ingest job created by :data:`OTHER_USER_ID` (the store allows any creator)."""
    job = server.app.store.create_job(kind="ingest", operation="insert", object_name="Account",
                                      state=JobState.OPEN, api_version="60.0", created_by=OTHER_USER_ID)
    return job.id


def test_jobs_of_users_not_expected_are_reported(emulator, salesforce_conn, results_base):
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    ids = _org_with_jobs(api)
    other = _job_of_another_user(emulator)
    ti = FakeTI(dag_id="watch", task_id="jobs")
    # an empty list: only the connection's own user is expected
    op = SalesforceBulkJobListOperator(task_id="jobs", expected_creators=[], abort_stale_open=True,
                                       stale_open_after=0)
    with pytest.raises(AirflowFailException, match=rf"1 created by users not expected \({OTHER_USER_ID}\)"):
        op.execute({"ti": ti})
    result = ti.xcoms["return_value"]
    assert result["unknown_sources"] == 1
    assert result["unknown_creators"] == {OTHER_USER_ID: 1}
    assert result["expected_creators"] == [USER_ID[:15]]
    # the own stale Open job is aborted; the other user's is reported, never aborted
    assert result["aborted"] == [ids["open"]]
    assert result["stale_open"] == 2
    assert result["problems"] == 1
    assert result["problem_job_ids"] == [other]
    assert api.get(f"/jobs/ingest/{other}").json()["state"] == "Open"
    rows = {row["id"]: row for row in _lines(result["jobs_file"])}
    assert rows[other]["unknown_source"] is True
    assert rows[other]["created_by_id"] == OTHER_USER_ID
    assert not any(row["unknown_source"] for job_id, row in rows.items() if job_id != other)


def test_listed_users_are_expected_by_15_or_18_character_id(emulator, salesforce_conn, results_base):
    salesforce_conn(emulator)
    _org_with_jobs(ApiSession(emulator))
    _job_of_another_user(emulator)
    for listed in ([OTHER_USER_ID[:15]], OTHER_USER_ID, f"['{OTHER_USER_ID}']"):  # the last one as rendered
        op = SalesforceBulkJobListOperator(task_id="jobs", expected_creators=listed)
        result = op.execute({"ti": FakeTI(dag_id="watch", task_id="jobs")})
        assert result["unknown_sources"] == 0, listed
        assert result["problems"] == 0
        assert result["expected_creators"] == sorted([USER_ID[:15], OTHER_USER_ID[:15]])
    # listing only the other user still expects the connection's own jobs; a rendered "None" checks nobody
    op = SalesforceBulkJobListOperator(task_id="jobs", expected_creators="None")
    result = op.execute({"ti": FakeTI(dag_id="watch", task_id="jobs")})
    assert (result["unknown_sources"], result["expected_creators"]) == (0, None)


def test_expected_creators_are_checked_at_parse_time():
    with pytest.raises(ValueError, match="not usernames"):
        SalesforceBulkJobListOperator(task_id="x", expected_creators=["integration@acme.com"])
    with pytest.raises(ValueError, match="not a user id"):
        SalesforceBulkJobListOperator(task_id="x", expected_creators=["7505fE000000001ABA"])  # a job id
    with pytest.raises(ValueError, match="not a user id"):
        SalesforceBulkJobListOperator(task_id="x", expected_creators=[USER_ID[:15] + "AAA"])  # bad checksum
    SalesforceBulkJobListOperator(task_id="x", expected_creators="{{ params.users }}")


def test_unknown_source_rules_without_airflow():
    assert parse_user_ids(None) is None
    assert parse_user_ids("") is None
    assert parse_user_ids([]) == []
    assert parse_user_ids(f"{USER_ID}, {OTHER_USER_ID[:15]}") == [USER_ID[:15], OTHER_USER_ID[:15]]
    assert parse_user_ids(f'["{USER_ID}", "{USER_ID[:15]}"]') == [USER_ID[:15]]  # one user, two spellings
    assert expected_creators(None, USER_ID) is None
    assert expected_creators([], USER_ID) == {USER_ID[:15]}
    assert expected_creators([OTHER_USER_ID[:15]], None) == {OTHER_USER_ID[:15]}

    def job(created_by: str | None) -> Any:
        document = {"id": "7505fE000000001ABA", "state": "Open", "operation": "insert", "object": "Account",
                    "createdById": created_by, "createdDate": "2024-05-02T11:00:00.000+0000"}
        return parse_job_info(document, None)

    expected = expected_creators([], USER_ID)
    assert not is_unknown_source(job(USER_ID), expected)
    assert not is_unknown_source(job(USER_ID[:15]), expected)
    assert is_unknown_source(job(OTHER_USER_ID), expected)
    assert is_unknown_source(job(USER_ID.lower()), expected)  # ids are case-sensitive
    assert is_unknown_source(job(None), expected)  # a job without a creator cannot be vouched for
    assert not is_unknown_source(job(OTHER_USER_ID), None)
