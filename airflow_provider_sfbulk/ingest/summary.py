"""The end of a load: final counts, failed rows, manifest, XCom value, and what went wrong.

The rows that finally failed are merged (after retry rounds) and written again in the source's own
columns and dialect, as a file to fix and load.

Counts are over all rounds, so that every source row is in exactly one of successful / failed /
unprocessed: rows retried in a later round are counted where they ended, not where they first failed
or went unprocessed. A job that failed or was aborted counts as a problem only when its unprocessed rows
were not sent again (the retry round's jobs tell the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.results import write_manifest
from airflow_provider_sfbulk.ingest.retries import FAILED, UNPROCESSED
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import PartResults, now_iso

__all__ = ["FAILED_FINAL_FILE", "RELOAD_FILE", "LoadSummary", "summarize"]

#: The rows that finally failed, Salesforce's columns included (written after retry rounds).
FAILED_FINAL_FILE = "failedResults-final.csv"
#: The rows that finally failed in the source's own columns and dialect: fix them and load this file.
RELOAD_FILE = "failed-rows-to-reload.csv"

_SUCCESS = "successfulResults"


@dataclass(frozen=True)
class LoadSummary:
    """The end of a load: its XCom value, and what went wrong (``None`` when it succeeded)."""

    result: dict[str, Any]
    problem: str | None
    job_stats: dict[str, int]


@dataclass(frozen=True)
class _Final:
    """The parts' results that count at the end, and the final failures."""

    results: list[PartResults]
    open_unprocessed: list[PartResults]
    broken: list[PartResults]
    failed: int
    failed_files: list[str]
    reload_file: str | None

    @property
    def successful(self) -> int:
        return sum(item.records_successful for item in self.results)

    @property
    def unprocessed(self) -> int:
        return sum(item.records_unprocessed for item in self.open_unprocessed)


Stored = Callable[[str], ObjectStoragePath]


def _final_failures(
    spec: LoadSpec, journal: LoadJournal, folder: ObjectStoragePath, stored: Stored
) -> tuple[int, list[str], str | None]:
    """Rows that finally failed, the files holding them, and the fix-and-reload file."""
    rounds = journal.state.rounds
    sources: list[tuple[Any, list[str]]] = []
    for round_ in rounds:
        plan = round_.retry
        codes = plan.codes if plan is not None and plan.rows else []
        sources.extend(
            (stored(part.results.file_uri(FAILED)), codes)
            for part in round_.parts
            if part.results is not None and part.results.records_failed
        )
    if not sources:
        return 0, [], None
    folder.mkdir(parents=True, exist_ok=True)
    merged = folder / FAILED_FINAL_FILE
    reload_file = folder / RELOAD_FILE
    with reload_file.open("wb") as reload_out:
        if len(rounds) == 1:
            split = write_failed_rows(
                sources, kept_out=None, retry_out=None, kept_data_out=reload_out,
                delimiter=spec.column_delimiter, line_ending=spec.line_ending,
            )
            files = [str(path) for path, _ in sources]
        else:
            with merged.open("wb") as merged_out:
                split = write_failed_rows(
                    sources, kept_out=merged_out, retry_out=None, kept_data_out=reload_out,
                    delimiter=spec.column_delimiter, line_ending=spec.line_ending,
                )
            files = [str(merged)] if split.kept else []
    if not split.kept:
        reload_file.unlink(missing_ok=True)
        return 0, [], None
    return split.kept, files, str(reload_file)


def _final(spec: LoadSpec, journal: LoadJournal, folder: ObjectStoragePath, stored: Stored) -> _Final:
    results: list[PartResults] = []
    open_unprocessed: list[PartResults] = []
    broken: list[PartResults] = []
    for round_ in journal.state.rounds:
        resubmitted = round_.retry is not None and round_.retry.resubmitted > 0
        for part in round_.parts:
            if part.results is None:
                continue
            results.append(part.results)
            if not resubmitted:
                open_unprocessed.append(part.results)
                if not part.results.completed:
                    broken.append(part.results)
    failed, failed_files, reload_file = _final_failures(spec, journal, folder, stored)
    return _Final(results, open_unprocessed, broken, failed, failed_files, reload_file)


def summarize(
    spec: LoadSpec,
    journal: LoadJournal,
    *,
    folder: ObjectStoragePath,
    stored: Callable[[str], ObjectStoragePath],
    checkpoint_backend: str,
    log: Log,
) -> LoadSummary:
    """Write the manifest and build the XCom value; name the problem when the load did not succeed."""
    state = journal.state
    final = _final(spec, journal, folder, stored)
    sent = state.records_sent
    counts = {
        "records_sent": sent,
        "records_successful": final.successful,
        "records_failed": final.failed,
        "records_unprocessed": final.unprocessed,
    }
    reconciled = final.successful + final.failed + final.unprocessed == sent and all(
        item.reconciled for item in final.results
    )
    manifest = {
        "object": spec.object_name,
        "operation": spec.operation,
        "source": state.fingerprint["source"],
        "started_at": datetime.fromtimestamp(state.started_at, timezone.utc).isoformat(),
        "finished_at": now_iso(),
        "checkpoint": checkpoint_backend,
        **counts,
        "reconciled": reconciled,
        "failed_rows_to_reload": final.reload_file,
        "job_stats": _job_stats(final.results),
        "orphan_jobs_aborted": list(state.orphans_aborted),
        "rounds": [round_.to_json() for round_ in state.rounds],
    }
    result: dict[str, Any] = {
        "job_ids": state.job_ids(),
        "object": spec.object_name,
        "operation": spec.operation,
        **counts,
        "successful_results": [
            item.file_uri(_SUCCESS) for item in final.results if item.files[_SUCCESS].records
        ],
        "failed_results": final.failed_files,
        "failed_rows_to_reload": final.reload_file,
        "unprocessed_records": [
            item.file_uri(UNPROCESSED) for item in final.open_unprocessed if item.files[UNPROCESSED].records
        ],
        "retry_rounds": len(state.rounds) - 1,
        "manifest": write_manifest(folder, manifest),
        "results_path": str(folder),
    }
    log.info(
        "Load of %s into %s (%s) finished: sent=%d successful=%d failed=%d unprocessed=%d jobs=%d; "
        "manifest %s",
        state.fingerprint["source"], spec.object_name, spec.operation, sent, final.successful,
        final.failed, final.unprocessed, len(result["job_ids"]), result["manifest"],
    )
    return LoadSummary(result, _problem(spec, final, reconciled, sent), _metric_stats(final.results))


def _metric_stats(results: list[PartResults]) -> dict[str, int]:
    """The job statistics as metric names (``sfbulk.ingest.<name>``)."""
    sums = _job_stats(results)
    return {
        "retries": sums["retries"],
        "processing_ms": sums["totalProcessingTime"],
        "apex_processing_ms": sums["apexProcessingTime"],
    }


def _job_stats(results: list[PartResults]) -> dict[str, int]:
    """Sums over every job of what Salesforce reports (absent values count 0)."""
    return {
        "retries": sum(item.stats.retries or 0 for item in results),
        "totalProcessingTime": sum(item.stats.total_processing_time or 0 for item in results),
        "apexProcessingTime": sum(item.stats.apex_processing_time or 0 for item in results),
    }


def _problem(spec: LoadSpec, final: _Final, reconciled: bool, sent: int) -> str | None:
    if final.broken:
        details = "; ".join(f"{b.id} {b.state}: {b.error_message or 'no errorMessage'}" for b in final.broken)
        return f"{len(final.broken)} job(s) did not complete: {details}"
    if not reconciled:
        unbalanced = [_unbalanced(item) for item in final.results if not item.reconciled]
        return (
            f"the results do not reconcile: {final.successful} successful + {final.failed} failed + "
            f"{final.unprocessed} unprocessed != {sent} sent"
            + (f" ({'; '.join(unbalanced)})" if unbalanced else "")
        )
    if final.failed > spec.max_failed_records:
        return (
            f"{final.failed} row(s) failed (max_failed_records={spec.max_failed_records}); "
            f"see {', '.join(final.failed_files)}; fix and load {final.reload_file}"
        )
    if final.unprocessed:
        return f"{final.unprocessed} row(s) were never processed; see the unprocessed records files"
    return None


def _unbalanced(results: PartResults) -> str:
    """One job's counts that do not add up, and how many rows are missing (or extra)."""
    found = results.records_successful + results.records_failed + results.records_unprocessed
    gap = results.records_sent - found
    what = f"{gap} row(s) missing" if gap > 0 else f"{-gap} row(s) more than sent"
    return (
        f"job {results.id}: {results.records_successful} successful + {results.records_failed} failed + "
        f"{results.records_unprocessed} unprocessed of {results.records_sent} sent, {what}"
    )
