"""``resume_earlier_load`` (``ingest/earlier.py``) called directly against the emulator.

What a cleared task does with the load its earlier attempt left: resume it, report it again, start afresh
(only when nothing was loaded) or refuse. A wrong count of the rows already loaded loads them twice; each
test asserts the decision, the exact texts and what happened to the earlier jobs.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _loads import SOURCE, RecordedLog, a_round, job_results, journal, part, saved

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.earlier import resume_earlier_load
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.state import RetryPlan

FINGERPRINT = {"source": SOURCE, "operation": "insert", "line_ending": "LF", "object": "Account"}
REFUSAL_TAIL = (
    "Loading again could load rows twice, so this task refuses. To start a fresh load anyway (rows "
    "already loaded stay loaded), set restart_load=True on the task (it is templated, e.g. "
    "restart_load=\"{{ params.get('restart_load', False) }}\") and clear it."
)


def _no_split() -> Any:
    raise AssertionError("the source must not be split")


def _decide(journal_, hook, log, *, fingerprint=None, split=_no_split, restart=False) -> bool:
    return resume_earlier_load(
        journal_, fingerprint=fingerprint or dict(FINGERPRINT), split_source=split, hook=hook, log=log,
        restart=restart,
    )


def _finished(journal_) -> None:
    journal_.state.current.collected = True
    journal_.state.current.retry = RetryPlan([])
    journal_.save()


def _state(api: ApiSession, job_id: str) -> str:
    return api.get(f"/jobs/ingest/{job_id}").json()["state"]


@pytest.fixture
def api(emulator, salesforce_conn) -> ApiSession:
    salesforce_conn(emulator)
    return ApiSession(emulator)


@pytest.fixture
def hook(api) -> Any:
    with SalesforceBulkHook() as hook:
        yield hook


def test_same_parameters_and_an_unfinished_load_resume(tmp_path: Path, hook) -> None:
    journal_ = journal(tmp_path, a_round(0, part(0, job_id="750X")), fingerprint=dict(FINGERPRINT))
    journal_.state.current.collected = True  # collected, but no retry decided yet: not finished
    journal_.save()
    log = RecordedLog()
    assert _decide(journal_, hook, log) is True
    assert log.lines == []
    assert saved(tmp_path) is not None
    journal_.state.current.collected = False
    journal_.state.current.retry = RetryPlan([])
    assert _decide(journal_, hook, log) is True


def test_same_parameters_and_source_of_a_finished_load_report_it_again(tmp_path: Path, hook) -> None:
    journal_ = journal(tmp_path, a_round(0, part(0), part(1)), fingerprint=dict(FINGERPRINT))
    _finished(journal_)
    same = [SimpleNamespace(sha256=p.sha256) for p in journal_.state.rounds[0].parts]
    log = RecordedLog()
    assert _decide(journal_, hook, log, split=lambda: same) is True
    assert log.lines == []
    assert saved(tmp_path) is not None


def test_a_changed_source_after_a_load_that_loaded_nothing_starts_afresh(tmp_path: Path, hook, api) -> None:
    open_job = api.create_ingest("Account")["id"]
    failed = job_results(tmp_path, "750F", unprocessed=("u",), state="Failed")
    parts = (part(0, failed), part(1, job_id=open_job), part(2))
    journal_ = journal(tmp_path, a_round(0, *parts), fingerprint=dict(FINGERPRINT))
    _finished(journal_)
    changed = [SimpleNamespace(sha256="ff" * 32)]
    log = RecordedLog()
    assert _decide(journal_, hook, log, split=lambda: changed) is False
    why = f"the source {SOURCE} changed since the earlier attempt"
    assert log.lines == [
        ("info", f"The earlier attempt of this task loaded no row and {why}: starting a fresh load"),
        ("warning", f"Job {open_job} of the earlier attempt aborted ({why}): Aborted"),
        ("info", f"Discarding the earlier load (jobs 750F, {open_job}): {why}"),
    ]
    assert _state(api, open_job) == "Aborted"
    assert saved(tmp_path) is None


def test_changed_parameters_after_rows_were_loaded_are_refused(tmp_path: Path, hook, api) -> None:
    finished = api.run_ingest("Account", "insert", b"Name\nA\n\nB\n".replace(b"\n\n", b'\n""\n'))
    assert (finished["numberRecordsProcessed"], finished["numberRecordsFailed"]) == (3, 1)
    done = job_results(tmp_path, "750D", successful=4, failed=(("X", "x"),))
    journal_ = journal(
        tmp_path, a_round(0, part(0, done), part(1, job_id=finished["id"]), part(2)), sent=9,
        fingerprint=dict(FINGERPRINT),
    )
    journal_.save()
    changed = dict(FINGERPRINT, operation="upsert", line_ending="CRLF")
    with pytest.raises(IngestInputError) as caught:
        _decide(journal_, hook, RecordedLog(), fingerprint=changed)
    assert str(caught.value) == (
        f"the earlier attempt loaded 6 of 9 row(s) in job(s) 750D, {finished['id']}, and the parameters "
        f"changed since the earlier attempt (line_ending, operation). {REFUSAL_TAIL}"
    )
    assert saved(tmp_path) is not None


def test_jobs_still_running_are_refused_naming_them(
    tmp_path: Path, emulator_factory, salesforce_conn
) -> None:
    slow = emulator_factory(batch_delay=30.0)
    salesforce_conn(slow)
    api = ApiSession(slow)
    job_id = api.create_ingest("Account")["id"]
    api.upload(job_id, b"Name\nA\n").raise_for_status()
    api.close(job_id).raise_for_status()
    journal_ = journal(tmp_path, a_round(0, part(0, job_id=job_id)), fingerprint=dict(FINGERPRINT))
    with SalesforceBulkHook() as hook, pytest.raises(IngestInputError) as caught:
        _decide(journal_, hook, RecordedLog(), fingerprint=dict(FINGERPRINT, object="Contact"))
    assert str(caught.value) == (
        f"jobs of the earlier attempt are still running ({job_id}), and the parameters changed since the "
        f"earlier attempt (object). {REFUSAL_TAIL}"
    )


def test_a_terminal_job_without_results_counts_processed_minus_failed(tmp_path: Path, hook, api) -> None:
    first = api.run_ingest("Account", "insert", b'Name\nA\n""\n')
    journal_ = journal(tmp_path, a_round(0, part(0, job_id=first["id"])), fingerprint=dict(FINGERPRINT))
    with pytest.raises(IngestInputError, match=r"^the earlier attempt loaded 1 of 1 row\(s\) in job\(s\) "):
        _decide(journal_, hook, RecordedLog(), fingerprint=dict(FINGERPRINT, source="file:///other.csv"))


def test_an_aborted_job_counts_what_it_processed(tmp_path: Path, hook, api) -> None:
    job_id = api.create_ingest("Account")["id"]
    api.patch(f"/jobs/ingest/{job_id}", json={"state": "Aborted"}).raise_for_status()
    journal_ = journal(tmp_path, a_round(0, part(0, job_id=job_id)), fingerprint=dict(FINGERPRINT))
    log = RecordedLog()
    assert _decide(journal_, hook, log, fingerprint=dict(FINGERPRINT, source="file:///other.csv")) is False
    why = "the parameters changed since the earlier attempt (source)"
    assert log.lines[0] == (
        "info", f"The earlier attempt of this task loaded no row and {why}: starting a fresh load"
    )
    # The part's job is not known terminal in the state: an abort is tried, and refused.
    refused = (
        f"HTTP 400 INVALIDJOBSTATE: Invalid state transition: job {job_id} is in state Aborted and cannot "
        f"be set to Aborted (job {job_id})"
    )
    assert log.lines[1] == ("info", f"Job {job_id} of the earlier attempt not aborted: {refused}")
    assert log.lines[2] == ("info", f"Discarding the earlier load (jobs {job_id}): {why}")


def test_restart_load_aborts_what_still_runs_and_forgets_the_load(tmp_path: Path, hook, api) -> None:
    open_job = api.create_ingest("Account")["id"]
    done_job = api.run_ingest("Account", "insert", b"Name\nA\n")["id"]
    finished = job_results(tmp_path, done_job, successful=1)
    parts = (part(0, finished), part(1, job_id=open_job), part(2))
    journal_ = journal(tmp_path, a_round(0, *parts), fingerprint=dict(FINGERPRINT))
    journal_.save()
    log = RecordedLog()
    assert _decide(journal_, hook, log, restart=True) is False
    assert log.lines == [
        ("warning", f"Job {open_job} of the earlier attempt aborted (restart_load=True): Aborted"),
        ("info", f"Discarding the earlier load (jobs {done_job}, {open_job}): restart_load=True"),
    ]
    assert (_state(api, open_job), _state(api, done_job)) == ("Aborted", "JobComplete")
    assert saved(tmp_path) is None


def test_restart_of_a_load_without_jobs_says_none(tmp_path: Path, hook) -> None:
    journal_ = journal(tmp_path, a_round(0, part(0)), fingerprint=dict(FINGERPRINT))
    journal_.save()
    log = RecordedLog()
    assert _decide(journal_, hook, log, restart=True) is False
    assert log.lines == [("info", "Discarding the earlier load (jobs none): restart_load=True")]
    assert saved(tmp_path) is None


def test_a_refusal_without_jobs_says_none(tmp_path: Path, hook) -> None:
    done = job_results(tmp_path, "750D", successful=2)
    journal_ = journal(tmp_path, a_round(0, part(0, done, job_id="")), fingerprint=dict(FINGERPRINT))
    with pytest.raises(IngestInputError) as caught:
        _decide(journal_, hook, RecordedLog(), fingerprint=dict(FINGERPRINT, object="Lead"))
    assert str(caught.value).startswith("the earlier attempt loaded 2 of 2 row(s) in job(s) none, and ")


def test_parts_without_a_job_and_open_jobs_do_not_stop_the_count(tmp_path: Path, hook, api) -> None:
    open_job = api.create_ingest("Account")["id"]
    done = job_results(tmp_path, "750D", successful=3)
    parts = (part(0), part(1, job_id=open_job), part(2, done))
    journal_ = journal(tmp_path, a_round(0, *parts), sent=5, fingerprint=dict(FINGERPRINT))
    with pytest.raises(IngestInputError) as caught:
        _decide(journal_, hook, RecordedLog(), fingerprint=dict(FINGERPRINT, object="Lead"))
    loaded = f"the earlier attempt loaded 3 of 5 row(s) in job(s) {open_job}, 750D, "
    assert str(caught.value).startswith(loaded)
