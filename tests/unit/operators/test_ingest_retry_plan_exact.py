"""``plan_retry`` (``ingest/retries.py``) called directly: which rows go into the next round, exactly.

A wrong decision here loads a row twice (a successful row sent again) or loses it (a retryable row
neither retried nor reported); each test asserts the retry file byte for byte, the plan, the new round
and the saved checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from _loads import RecordedLog, a_round, job_results, journal, part, saved

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.ingest.parts import PartFiles
from airflow_provider_sfbulk.ingest.retries import plan_retry
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import RetryPlan

LOCK = "UNABLE_TO_LOCK_ROW"


def _plan(tmp_path: Path, spec: LoadSpec, *parts_, log: RecordedLog | None = None):
    log = log or RecordedLog()
    journal_ = journal(tmp_path, a_round(0, *parts_))
    files = PartFiles(spec, lambda round_: to_storage_path(round_.source), log)
    try:
        added = plan_retry(
            spec, journal_, journal_.state.rounds[0], folder=to_storage_path(tmp_path / "out"), files=files,
            stored=to_storage_path, log=log,
        )
        return added, journal_, log, files.parts_of(1)
    finally:
        files.cleanup()


def test_failed_rows_with_retryable_codes_and_unprocessed_rows_make_the_next_round(tmp_path: Path) -> None:
    done = job_results(
        tmp_path, "750A", successful=2, failed=((LOCK, "lock1"), ("INVALID_FIELD", "bad"), (LOCK, "lock2"))
    )
    broken = job_results(
        tmp_path, "750B", successful=1, unprocessed=("never1", "never2"), state="Failed",
        error_message="ExceededQuota: too many",
    )
    spec = LoadSpec(
        "Account", "insert", retry_failed_records=1, retryable_error_codes=[LOCK], job_concurrency=3
    )
    added, journal_, log, parts = _plan(tmp_path, spec, part(0, done), part(1, broken))
    assert added is True
    retry_file = tmp_path / "out" / "retries" / "round-1.csv"
    assert retry_file.read_bytes() == b"Name\nlock1\nlock2\nnever1\nnever2\n"
    state = journal_.state
    assert state.rounds[0].retry == RetryPlan([LOCK], 2, str(to_storage_path(retry_file)), {LOCK: 2}, 2)
    assert len(state.rounds) == 2
    new = state.rounds[1]
    assert (new.number, new.source, new.concurrency, new.retried_codes, new.records) == (
        1, str(to_storage_path(retry_file)), 3, [LOCK], 4
    )
    assert [(p.index, p.records, p.first_record, p.job_id) for p in new.parts] == [(0, 4, 1, None)]
    assert [p.sha256 for p in parts] == [new.parts[0].sha256]
    assert saved(tmp_path) == state.to_json()
    assert log.lines == [
        ("info", f"Round 1 sends 2 failed row(s) again ({LOCK}=2) and 2 unprocessed row(s)"),
    ]


def test_lock_retry_sends_the_next_round_one_job_at_a_time(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", failed=((LOCK, "lock1"), ("OTHER", "x")))
    spec = LoadSpec("Account", "insert", lock_retry=True, job_concurrency=4)
    added, journal_, log, _ = _plan(tmp_path, spec, part(0, done))
    assert added is True
    assert journal_.state.rounds[1].concurrency == 1
    assert journal_.state.rounds[1].retried_codes == [LOCK]
    assert journal_.state.rounds[0].retry == RetryPlan(
        [LOCK], 1, str(to_storage_path(tmp_path / "out" / "retries" / "round-1.csv")), {LOCK: 1}, 0
    )
    assert log.lines == [
        (
            "info",
            f"Round 1 sends 1 failed row(s) again ({LOCK}=1) and 0 unprocessed row(s), one job at a time",
        )
    ]


def test_retryable_codes_without_lock_rows_keep_the_concurrency(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", failed=(("SERVER_UNAVAILABLE", "s1"),))
    spec = LoadSpec(
        "Account", "insert", lock_retry=True, retry_failed_records=2,
        retryable_error_codes=["SERVER_UNAVAILABLE"], job_concurrency=4,
    )
    added, journal_, log, _ = _plan(tmp_path, spec, part(0, done))
    assert added is True
    assert journal_.state.rounds[1].concurrency == 4
    assert journal_.state.rounds[1].retried_codes == ["SERVER_UNAVAILABLE", LOCK]
    assert log.lines == [
        ("info", "Round 1 sends 1 failed row(s) again (SERVER_UNAVAILABLE=1) and 0 unprocessed row(s)")
    ]


def test_only_unprocessed_rows_say_none_for_the_codes(tmp_path: Path) -> None:
    broken = job_results(tmp_path, "750B", unprocessed=("u1",), state="Aborted")
    added, journal_, log, _ = _plan(tmp_path, LoadSpec("Account", "insert"), part(0, broken))
    assert added is True
    assert journal_.state.rounds[0].retry == RetryPlan(
        [], 0, str(to_storage_path(tmp_path / "out" / "retries" / "round-1.csv")), {}, 1
    )
    assert log.lines == [("info", "Round 1 sends 0 failed row(s) again (none) and 1 unprocessed row(s)")]
    assert (tmp_path / "out" / "retries" / "round-1.csv").read_bytes() == b"Name\nu1\n"


def test_nothing_to_send_again_decides_an_empty_plan_and_saves_it(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", successful=1, failed=((LOCK, "lock1"),))
    added, journal_, log, _ = _plan(tmp_path, LoadSpec("Account", "insert"), part(0, done), part(1))
    assert added is False
    assert journal_.state.rounds[0].retry == RetryPlan([])
    assert len(journal_.state.rounds) == 1
    assert saved(tmp_path)["rounds"][0]["retry"] == {"codes": [], "rows": 0, "resubmitted": 0}
    assert log.lines == []
    assert not (tmp_path / "out").exists()  # no retry folder for nothing


def test_failed_rows_without_a_retryable_code_write_no_round(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", failed=(("INVALID_FIELD", "bad"),))
    spec = LoadSpec("Account", "insert", retry_failed_records=1, retryable_error_codes=[LOCK])
    added, journal_, log, _ = _plan(tmp_path, spec, part(0, done))
    assert added is False
    retry_file = tmp_path / "out" / "retries" / "round-1.csv"
    assert journal_.state.rounds[0].retry == RetryPlan([LOCK], 0, str(to_storage_path(retry_file)), {}, 0)
    assert saved(tmp_path)["rounds"][0]["retry"]["file"] == str(to_storage_path(retry_file))
    assert len(journal_.state.rounds) == 1
    assert log.lines == []


def test_a_round_already_decided_is_not_decided_again(tmp_path: Path) -> None:
    done = job_results(tmp_path, "750A", failed=((LOCK, "lock1"),))
    journal_ = journal(tmp_path, a_round(0, part(0, done)))
    journal_.state.rounds[0].retry = RetryPlan(["X"], 7)
    spec = LoadSpec("Account", "insert", lock_retry=True)
    log = RecordedLog()
    files = PartFiles(spec, lambda round_: to_storage_path(round_.source), log)
    added = plan_retry(
        spec, journal_, journal_.state.rounds[0], folder=to_storage_path(tmp_path / "out"), files=files,
        stored=to_storage_path, log=log,
    )
    assert added is False
    assert journal_.state.rounds[0].retry == RetryPlan(["X"], 7)
    assert saved(tmp_path) is None
    assert not (tmp_path / "out").exists()


def test_rows_rejected_with_the_data_are_not_resubmitted(tmp_path: Path) -> None:
    rejected = job_results(
        tmp_path, "750R", unprocessed=("r1", "r2"), state="Failed", error_message="InvalidBatch: bad column",
    )
    for prefix, job in (("InvalidJob: x", "750J"), ("ClientInputError: y", "750C")):
        job_results(tmp_path, job, unprocessed=("z",), state="Failed", error_message=prefix)
    spec = LoadSpec("Account", "insert", retry_failed_records=1)
    added, journal_, log, _ = _plan(tmp_path, spec, part(0, rejected))
    assert added is False
    assert journal_.state.rounds[0].retry == RetryPlan(sorted(spec.retry_codes(0)))
    assert log.lines == [
        (
            "warning",
            "Job 750R: its 2 unprocessed row(s) are not sent again; Salesforce rejected the data itself "
            "(InvalidBatch: bad column)",
        )
    ]


def test_every_rejection_prefix_keeps_the_rows_and_other_messages_do_not(tmp_path: Path) -> None:
    jobs = [
        job_results(tmp_path, f"750{i}", unprocessed=(f"u{i}",), state="Failed", error_message=message)
        for i, message in enumerate(
            ["InvalidJob: x", "ClientInputError: y", "Timeout: InvalidBatch later", None]
        )
    ]
    parts = [part(i, job) for i, job in enumerate(jobs)]
    added, journal_, log, _ = _plan(tmp_path, LoadSpec("Account", "insert"), *parts)
    assert added is True
    assert (tmp_path / "out" / "retries" / "round-1.csv").read_bytes() == b"Name\nu2\nu3\n"
    assert [level for level, _ in log.lines] == ["warning", "warning", "info"]


def test_unprocessed_rows_are_not_resubmitted_when_switched_off(tmp_path: Path) -> None:
    broken = job_results(tmp_path, "750B", unprocessed=("u1",), state="Failed")
    spec = LoadSpec("Account", "insert", retry_unprocessed_records=False)
    added, journal_, _, _ = _plan(tmp_path, spec, part(0, broken))
    assert added is False
    assert journal_.state.rounds[0].retry == RetryPlan([])


def test_failed_rows_are_not_read_without_codes(tmp_path: Path) -> None:
    """With no retryable code, the failed files are not even opened (a missing one is no error)."""
    done = job_results(tmp_path, "750A", failed=((LOCK, "lock1"),))
    broken = job_results(tmp_path, "750B", unprocessed=("u1",), state="Failed")
    (tmp_path / "750A" / "failedResults.csv").unlink()
    added, journal_, _, _ = _plan(tmp_path, LoadSpec("Account", "insert"), part(0, done), part(1, broken))
    assert added is True
    assert (tmp_path / "out" / "retries" / "round-1.csv").read_bytes() == b"Name\nu1\n"


def test_the_retry_file_is_written_in_the_load_dialect(tmp_path: Path) -> None:
    """Semicolons and CRLF in, semicolons and CRLF out (the next round is split in the same dialect)."""
    done = job_results(
        tmp_path, "750A", failed=((LOCK, "l1"), ("SERVER_UNAVAILABLE", "s1"), (LOCK, "l2")), char=";",
        terminator="\r\n",
    )
    broken = job_results(tmp_path, "750B", unprocessed=("u1",), state="Failed", char=";", terminator="\r\n")
    spec = LoadSpec(
        "Account", "insert", column_delimiter="SEMICOLON", line_ending="CRLF", retry_failed_records=1,
        retryable_error_codes=[LOCK, "SERVER_UNAVAILABLE"],
    )
    added, journal_, log, parts = _plan(tmp_path, spec, part(0, done), part(1, broken))
    assert added is True
    assert (tmp_path / "out" / "retries" / "round-1.csv").read_bytes() == b"Name\r\nl1\r\ns1\r\nl2\r\nu1\r\n"
    assert [p.record_count for p in parts] == [4]
    assert journal_.state.rounds[0].retry.by_code == {LOCK: 2, "SERVER_UNAVAILABLE": 1}
    assert log.lines == [
        (
            "info",
            f"Round 1 sends 3 failed row(s) again ({LOCK}=2, SERVER_UNAVAILABLE=1) and 1 unprocessed row(s)",
        )
    ]


def test_a_retry_folder_left_by_an_earlier_attempt_is_reused(tmp_path: Path) -> None:
    (tmp_path / "out" / "retries").mkdir(parents=True)
    (tmp_path / "out" / "retries" / "round-1.csv").write_bytes(b"Name\nstale\n")
    broken = job_results(tmp_path, "750B", unprocessed=("u1",), state="Failed")
    added, _, _, _ = _plan(tmp_path, LoadSpec("Account", "insert"), part(0, broken))
    assert added is True
    assert (tmp_path / "out" / "retries" / "round-1.csv").read_bytes() == b"Name\nu1\n"
