"""``summarize`` (``ingest/summary.py``) called directly: final counts, files and problem, exactly.

Counts are over all rounds: every source row must end in exactly one of successful / failed /
unprocessed. A wrong sum, a retried row counted as failed, or an unprocessed row that was sent again
counted as lost would report a load that did not happen; each test asserts the whole XCom value, the
manifest and the problem text.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _loads import SOURCE, RecordedLog, a_round, job_results, journal, part

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import JobStats, RetryPlan
from airflow_provider_sfbulk.ingest.summary import FAILED_FINAL_FILE, RELOAD_FILE, summarize

LOCK = "UNABLE_TO_LOCK_ROW"


def _summarize(tmp_path: Path, journal_, spec: LoadSpec | None = None, log: RecordedLog | None = None):
    return summarize(
        spec or LoadSpec("Account", "insert"),
        journal_,
        folder=to_storage_path(tmp_path / "out"),
        stored=to_storage_path,
        checkpoint_backend="file",
        log=log or RecordedLog(),
    )


def _uri(path: Path) -> str:
    return str(to_storage_path(path))


def _manifest(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "out" / "manifest.json").read_text("utf-8"))


def test_one_clean_round_reports_every_count_and_file(tmp_path: Path) -> None:
    first = job_results(tmp_path, "750A", successful=3, stats=JobStats(2, 1500, 40))
    second = job_results(tmp_path, "750B", successful=2, stats=JobStats(None, 500, None))
    empty = job_results(tmp_path, "750C", sent=0)
    journal_ = journal(tmp_path, a_round(0, part(0, first), part(1, second), part(2, empty)), sent=5)
    log = RecordedLog()
    summary = _summarize(tmp_path, journal_, log=log)
    assert summary.problem is None
    assert summary.job_stats == {"retries": 2, "processing_ms": 2000, "apex_processing_ms": 40}
    manifest_uri = _uri(tmp_path / "out" / "manifest.json")
    assert summary.result == {
        "job_ids": ["750A", "750B", "750C"],
        "object": "Account",
        "operation": "insert",
        "records_sent": 5,
        "records_successful": 5,
        "records_failed": 0,
        "records_unprocessed": 0,
        "successful_results": [first.file_uri("successfulResults"), second.file_uri("successfulResults")],
        "failed_results": [],
        "failed_rows_to_reload": None,
        "unprocessed_records": [],
        "retry_rounds": 0,
        "manifest": manifest_uri,
        "results_path": _uri(tmp_path / "out"),
    }
    manifest = _manifest(tmp_path)
    finished = manifest.pop("finished_at")
    assert datetime.fromisoformat(finished).tzinfo is not None
    assert manifest == {
        "object": "Account",
        "operation": "insert",
        "source": SOURCE,
        "started_at": datetime.fromtimestamp(1_700_000_000.5, timezone.utc).isoformat(),
        "checkpoint": "file",
        "records_sent": 5,
        "records_successful": 5,
        "records_failed": 0,
        "records_unprocessed": 0,
        "reconciled": True,
        "failed_rows_to_reload": None,
        "job_stats": {"retries": 2, "totalProcessingTime": 2000, "apexProcessingTime": 40},
        "orphan_jobs_aborted": [],
        "rounds": [round_.to_json() for round_ in journal_.state.rounds],
    }
    assert manifest["started_at"] == "2023-11-14T22:13:20.500000+00:00"
    assert log.lines == [
        (
            "info",
            f"Load of {SOURCE} into Account (insert) finished: sent=5 successful=5 failed=0 unprocessed=0 "
            f"jobs=3; manifest {manifest_uri}",
        )
    ]
    assert not (tmp_path / "out" / RELOAD_FILE).exists()


def test_failures_above_the_limit_name_the_files_and_the_reload_file(tmp_path: Path) -> None:
    done = job_results(
        tmp_path, "750A", successful=1, failed=(("INVALID_FIELD", "bad1"), ("REQUIRED_FIELD_MISSING", "bad2"))
    )
    journal_ = journal(tmp_path, a_round(0, part(0, done)))
    journal_.state.orphans_aborted.append("750Z")
    summary = _summarize(tmp_path, journal_, LoadSpec("Account", "insert", max_failed_records=1))
    reload = _uri(tmp_path / "out" / RELOAD_FILE)
    failed_file = done.file_uri("failedResults")
    assert summary.result["records_failed"] == 2
    assert summary.result["failed_results"] == [failed_file]
    assert summary.result["failed_rows_to_reload"] == reload
    assert (tmp_path / "out" / RELOAD_FILE).read_bytes() == b"Name\nbad1\nbad2\n"
    assert not (tmp_path / "out" / FAILED_FINAL_FILE).exists()  # one round: its own file is final
    assert summary.problem == (
        f"2 row(s) failed (max_failed_records=1); see {failed_file}; fix and load {reload}"
    )
    manifest = _manifest(tmp_path)
    assert (manifest["failed_rows_to_reload"], manifest["orphan_jobs_aborted"]) == (reload, ["750Z"])


def test_failures_up_to_the_limit_are_no_problem(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", successful=1, failed=(("INVALID_FIELD", "bad1"),))
    spec = LoadSpec("Account", "insert", max_failed_records=1)
    summary = _summarize(tmp_path, journal(tmp_path, a_round(0, part(0, done))), spec)
    assert summary.problem is None
    assert summary.result["records_failed"] == 1


def test_retried_rows_count_where_they_ended(tmp_path: Path) -> None:
    """Round 0: 2 ok, 2 lock errors (retried), 1 invalid; round 1: 1 lock row ok, 1 failed again."""
    first = job_results(
        tmp_path, "750A", successful=2, failed=((LOCK, "l1"), ("INVALID_FIELD", "bad"), (LOCK, "l2"))
    )
    second = job_results(tmp_path, "750B", successful=1, failed=((LOCK, "l2"),))
    round0 = a_round(0, part(0, first))
    round0.retry = RetryPlan([LOCK], 2, "file:///retry.csv", {LOCK: 2})
    round1 = a_round(1, part(0, second), source="file:///retry.csv")
    round1.retry = RetryPlan([])
    journal_ = journal(tmp_path, round0, round1, sent=5)
    summary = _summarize(tmp_path, journal_, LoadSpec("Account", "insert", max_failed_records=5))
    merged = _uri(tmp_path / "out" / FAILED_FINAL_FILE)
    assert summary.problem is None
    counts = ("records_successful", "records_failed", "records_unprocessed")
    assert [summary.result[k] for k in counts] == [3, 2, 0]
    assert summary.result["failed_results"] == [merged]
    assert summary.result["retry_rounds"] == 1
    assert summary.result["job_ids"] == ["750A", "750B"]
    assert (tmp_path / "out" / FAILED_FINAL_FILE).read_bytes() == (
        b"sf__Id,sf__Error,Name\n"
        b",INVALID_FIELD:bad went wrong:--,bad\n"
        b",UNABLE_TO_LOCK_ROW:l2 went wrong:--,l2\n"
    )
    assert (tmp_path / "out" / RELOAD_FILE).read_bytes() == b"Name\nbad\nl2\n"
    assert _manifest(tmp_path)["reconciled"] is True


def test_a_plan_that_retried_no_row_keeps_every_failure(tmp_path: Path) -> None:
    first = job_results(tmp_path, "750A", failed=((LOCK, "l1"),))
    second = job_results(tmp_path, "750B", unprocessed=("u1",), state="Failed", error_message="boom")
    round0 = a_round(0, part(0, first), part(1, second))
    round0.retry = RetryPlan([LOCK], 0, None, None, 1)  # only the unprocessed row went again
    third = job_results(tmp_path, "750C", successful=1)
    journal_ = journal(tmp_path, round0, a_round(1, part(0, third)), sent=2)
    summary = _summarize(tmp_path, journal_, LoadSpec("Account", "insert", max_failed_records=1))
    assert (summary.result["records_failed"], summary.result["records_unprocessed"]) == (1, 0)
    assert summary.problem is None  # the failed job's rows were sent again: not a problem
    assert summary.result["unprocessed_records"] == []


def test_merged_failures_that_were_all_retried_leave_no_file(tmp_path: Path) -> None:
    first = job_results(tmp_path, "750A", failed=((LOCK, "l1"),))
    round0 = a_round(0, part(0, first))
    round0.retry = RetryPlan([LOCK], 1)
    second = job_results(tmp_path, "750B", successful=1)
    summary = _summarize(tmp_path, journal(tmp_path, round0, a_round(1, part(0, second)), sent=1))
    assert (summary.result["records_failed"], summary.result["failed_results"]) == (0, [])
    assert summary.result["failed_rows_to_reload"] is None
    assert not (tmp_path / "out" / RELOAD_FILE).exists()
    assert summary.problem is None


def test_a_broken_job_not_sent_again_is_the_problem(tmp_path: Path) -> None:
    broken = job_results(
        tmp_path, "750A", successful=1, unprocessed=("u1", "u2"), state="Failed", error_message="boom"
    )
    aborted = job_results(tmp_path, "750B", unprocessed=("u3",), state="Aborted")
    journal_ = journal(tmp_path, a_round(0, part(0, broken), part(1, aborted)))
    summary = _summarize(tmp_path, journal_)
    assert summary.problem == "2 job(s) did not complete: 750A Failed: boom; 750B Aborted: no errorMessage"
    assert summary.result["records_unprocessed"] == 3
    assert summary.result["unprocessed_records"] == [
        broken.file_uri("unprocessedrecords"), aborted.file_uri("unprocessedrecords")
    ]


def test_unprocessed_rows_of_a_complete_job_are_named(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", successful=1, unprocessed=("u1",))
    summary = _summarize(tmp_path, journal(tmp_path, a_round(0, part(0, done))))
    assert summary.problem == "1 row(s) were never processed; see the unprocessed records files"


def test_counts_that_do_not_add_up_name_the_missing_rows(tmp_path: Path) -> None:
    short = job_results(tmp_path, "750A", successful=2, sent=5, reconciled=False)
    extra = job_results(tmp_path, "750B", successful=3, sent=1, reconciled=False)
    fine = job_results(tmp_path, "750C", successful=1)
    journal_ = journal(tmp_path, a_round(0, part(0, short), part(1, extra), part(2, fine)), sent=7)
    summary = _summarize(tmp_path, journal_)
    assert summary.problem == (
        "the results do not reconcile: 6 successful + 0 failed + 0 unprocessed != 7 sent "
        "(job 750A: 2 successful + 0 failed + 0 unprocessed of 5 sent, 3 row(s) missing; "
        "job 750B: 3 successful + 0 failed + 0 unprocessed of 1 sent, 2 row(s) more than sent)"
    )
    assert _manifest(tmp_path)["reconciled"] is False


def test_a_total_that_does_not_add_up_alone_is_not_reconciled(tmp_path: Path) -> None:
    """Every job reconciles, but the rounds hold fewer rows than the source: a row was lost."""
    done = job_results(tmp_path, "750A", successful=2, failed=(("X", "f"),), unprocessed=("u",))
    summary = _summarize(tmp_path, journal(tmp_path, a_round(0, part(0, done)), sent=5))
    assert summary.problem == (
        "the results do not reconcile: 2 successful + 1 failed + 1 unprocessed != 5 sent"
    )


def test_parts_without_results_are_left_out(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", successful=1)
    journal_ = journal(tmp_path, a_round(0, part(0, done), part(1, job_id="750P")), sent=1)
    summary = _summarize(tmp_path, journal_)
    assert summary.problem is None
    assert summary.result["job_ids"] == ["750A", "750P"]
    assert summary.result["successful_results"] == [done.file_uri("successfulResults")]


def test_merged_failures_are_written_in_the_load_dialect_into_a_new_folder(tmp_path: Path) -> None:
    """Several rounds, a results folder whose parents do not exist yet, CRLF line endings, and a part
    without results before one with results."""
    first = job_results(tmp_path, "750A", successful=1, failed=((LOCK, "l1"), ("INVALID_FIELD", "bad")))
    second = job_results(tmp_path, "750B", failed=(("INVALID_FIELD", "worse"),))
    round0 = a_round(0, part(0, job_id="750P"), part(1, first))
    round0.retry = RetryPlan([LOCK], 1)
    journal_ = journal(tmp_path, round0, a_round(1, part(0, second)), sent=3)
    folder = tmp_path / "deep" / "er" / "out"
    summary = summarize(
        LoadSpec("Account", "insert", line_ending="CRLF", max_failed_records=9),
        journal_,
        folder=to_storage_path(folder),
        stored=to_storage_path,
        checkpoint_backend="task_state_store",
        log=RecordedLog(),
    )
    assert (summary.result["records_successful"], summary.result["records_failed"]) == (1, 2)
    assert summary.problem is None
    assert (folder / RELOAD_FILE).read_bytes() == b"Name\r\nbad\r\nworse\r\n"
    assert (folder / FAILED_FINAL_FILE).read_bytes() == (
        b"sf__Id,sf__Error,Name\r\n"
        b",INVALID_FIELD:bad went wrong:--,bad\r\n"
        b",INVALID_FIELD:worse went wrong:--,worse\r\n"
    )
    assert json.loads((folder / "manifest.json").read_text("utf-8"))["checkpoint"] == "task_state_store"


def test_one_round_reload_file_in_the_load_dialect(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", failed=(("INVALID_FIELD", "bad"),))
    folder = tmp_path / "new" / "out"
    summarize(
        LoadSpec("Account", "insert", line_ending="CRLF", max_failed_records=9),
        journal(tmp_path, a_round(0, part(0, done))),
        folder=to_storage_path(folder), stored=to_storage_path, checkpoint_backend="file", log=RecordedLog(),
    )
    assert (folder / RELOAD_FILE).read_bytes() == b"Name\r\nbad\r\n"


def test_unbalanced_jobs_count_failed_and_unprocessed_rows(tmp_path: Path) -> None:
    short = job_results(
        tmp_path, "750A", successful=2, failed=(("X", "x1"), ("X", "x2")), unprocessed=("u",), sent=9,
        reconciled=False,
    )
    summary = _summarize(
        tmp_path, journal(tmp_path, a_round(0, part(0, short)), sent=9), LoadSpec("Account", "insert")
    )
    assert summary.problem is not None
    assert summary.problem.endswith(
        "(job 750A: 2 successful + 2 failed + 1 unprocessed of 9 sent, 4 row(s) missing)"
    )


def test_merged_failures_keep_the_load_delimiter(tmp_path: Path) -> None:
    first = job_results(tmp_path, "750A", failed=((LOCK, "l1"), ("INVALID_FIELD", "bad")), char=";")
    second = job_results(tmp_path, "750B", failed=(("INVALID_FIELD", "worse"),), char=";")
    round0 = a_round(0, part(0, first))
    round0.retry = RetryPlan([LOCK], 1)
    journal_ = journal(tmp_path, round0, a_round(1, part(0, second)), sent=2)
    spec = LoadSpec("Account", "insert", column_delimiter="SEMICOLON", max_failed_records=9)
    summary = _summarize(tmp_path, journal_, spec)
    assert summary.result["records_failed"] == 2
    assert (tmp_path / "out" / FAILED_FINAL_FILE).read_bytes() == (
        b"sf__Id;sf__Error;Name\n"
        b";INVALID_FIELD:bad went wrong:--;bad\n"
        b";INVALID_FIELD:worse went wrong:--;worse\n"
    )
    assert (tmp_path / "out" / RELOAD_FILE).read_bytes() == b"Name\nbad\nworse\n"


def test_failures_of_several_jobs_name_every_file(tmp_path: Path) -> None:
    first = job_results(tmp_path, "750A", failed=(("X", "a"),))
    second = job_results(tmp_path, "750B", failed=(("X", "b"),))
    summary = _summarize(tmp_path, journal(tmp_path, a_round(0, part(0, first), part(1, second))))
    reload = _uri(tmp_path / "out" / RELOAD_FILE)
    assert summary.problem == (
        f"2 row(s) failed (max_failed_records=0); see {first.file_uri('failedResults')}, "
        f"{second.file_uri('failedResults')}; fix and load {reload}"
    )


def test_one_missing_row_is_named_missing(tmp_path: Path) -> None:
    short = job_results(tmp_path, "750A", successful=1, sent=2, reconciled=False)
    summary = _summarize(tmp_path, journal(tmp_path, a_round(0, part(0, short)), sent=2))
    assert summary.problem is not None
    assert summary.problem.endswith(
        "(job 750A: 1 successful + 0 failed + 0 unprocessed of 2 sent, 1 row(s) missing)"
    )
