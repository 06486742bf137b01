"""Retry rounds: after a round, the rows worth another job go, alone, into the next round.

Successful rows are never sent again. Two kinds of rows are:

- failed rows whose error code is retryable in this round (``retryable_error_codes`` up to
  ``retry_failed_records`` rounds; ``UNABLE_TO_LOCK_ROW`` with ``lock_retry``, then one job at a time);
- unprocessed rows, which a job that failed or was aborted part-way never touched (and the rows of
  uploaded jobs aborted because another job failed), with ``retry_unprocessed_records``, for up to
  ``max(1, retry_failed_records)`` rounds: Salesforce's guidance is to send them in a new job.

Both go into one retry file in the source's own columns and dialect, which is split like a source and
loaded as the next round. A job that failed because its data was rejected as a whole (``InvalidBatch``:
an unknown column, a CSV that does not parse) would fail the same way again: its rows are not resubmitted.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.parts import PartFiles, new_round
from airflow_provider_sfbulk.ingest.spec import LOCK_ERROR_CODE, LoadSpec
from airflow_provider_sfbulk.ingest.state import PartResults, RetryPlan, Round

__all__ = ["FAILED", "UNPROCESSED", "plan_retry"]

FAILED, UNPROCESSED = "failedResults", "unprocessedrecords"

#: ``errorMessage`` prefixes of jobs whose data Salesforce rejected as a whole: sending it again fails again.
INPUT_REJECTED = ("InvalidBatch", "InvalidJob", "ClientInputError")


def _resubmittable(results: PartResults, log: Log) -> bool:
    if not results.records_unprocessed:
        return False
    message = results.error_message or ""
    if message.startswith(INPUT_REJECTED):
        log.warning(
            "Job %s: its %d unprocessed row(s) are not sent again; Salesforce rejected the data itself (%s)",
            results.id,
            results.records_unprocessed,
            message,
        )
        return False
    return True


def plan_retry(
    spec: LoadSpec,
    journal: LoadJournal,
    round_: Round,
    *,
    folder: ObjectStoragePath,
    files: PartFiles,
    stored: Callable[[str], ObjectStoragePath],
    log: Log,
) -> bool:
    """Decide what to send again after ``round_``; True when a retry round was added to the load."""
    if round_.retry is not None:
        return False
    codes = spec.retry_codes(round_.number)
    done = [part.results for part in round_.parts if part.results is not None]
    failed_files = [item.file_uri(FAILED) for item in done if item.records_failed] if codes else []
    unprocessed_files = (
        [item.file_uri(UNPROCESSED) for item in done if _resubmittable(item, log)]
        if spec.resubmits_unprocessed(round_.number)
        else []
    )
    if not failed_files and not unprocessed_files:
        round_.retry = RetryPlan(sorted(codes))
        journal.save()
        return False
    retry_folder = folder / "retries"
    retry_folder.mkdir(parents=True, exist_ok=True)
    retry_file = retry_folder / f"round-{round_.number + 1}.csv"
    with retry_file.open("wb") as out:
        split = write_failed_rows(
            [(stored(uri), codes) for uri in failed_files],
            kept_out=None,
            retry_out=out,
            unprocessed_files=[stored(uri) for uri in unprocessed_files],
            delimiter=spec.column_delimiter,
            line_ending=spec.line_ending,
        )
    round_.retry = RetryPlan(
        sorted(codes), split.retried, str(retry_file), dict(split.retried_codes), split.resubmitted
    )
    if not split.retried and not split.resubmitted:
        journal.save()
        return False
    serial = spec.lock_retry and LOCK_ERROR_CODE in split.retried_codes
    log.info(
        "Round %d sends %d failed row(s) again (%s) and %d unprocessed row(s)%s",
        round_.number + 1,
        split.retried,
        ", ".join(f"{code}={n}" for code, n in split.retried_codes.items()) or "none",
        split.resubmitted,
        ", one job at a time" if serial else "",
    )
    concurrency = 1 if serial else spec.job_concurrency
    parts = files.split(retry_file, round_.number + 1, concurrency=concurrency)
    journal.state.rounds.append(
        new_round(
            round_.number + 1,
            str(retry_file),
            parts,
            concurrency,
            codes,
            part_bytes=files.part_bytes_of(round_.number + 1),
        )
    )
    journal.save()
    return True
