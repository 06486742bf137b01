"""Results of a load: download and reconcile them, plan retry rounds, sum the load up.

After each round the three result sets of every job are downloaded and reconciled and the retry round
is planned; at the end the load is summed up in its manifest and its XCom value.

``JobComplete`` does not mean every row succeeded: every job's ``successfulResults``, ``failedResults``
and ``unprocessedrecords`` are streamed to storage and counted, and the counts must add up to the rows
the job was sent. Rows that failed with a retryable code go, alone and in their original columns, into a
retry file that the next round loads; successful rows are never sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.common.threads import HookPerThread, run_concurrently
from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.parts import PartFiles, new_round
from airflow_provider_sfbulk.ingest.results import download_job_results, write_manifest
from airflow_provider_sfbulk.ingest.spec import LOCK_ERROR_CODE, LoadSpec
from airflow_provider_sfbulk.ingest.state import (
    Part,
    PartResults,
    ResultFileSummary,
    RetryPlan,
    Round,
    now_iso,
)

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["LoadSummary", "ResultCollector"]

_SUCCESS, _FAILED, _UNPROCESSED = "successfulResults", "failedResults", "unprocessedrecords"


@dataclass(frozen=True)
class LoadSummary:
    """The end of a load: its XCom value, and what went wrong (``None`` when it succeeded)."""

    result: dict[str, Any]
    problem: str | None


class ResultCollector:
    """Collects the results of each round, plans retries and sums up the load.

    :param spec: the load's parameters.
    :param journal: the load's state and checkpoint.
    :param folder: the results folder.
    :param files: the parts' data (a retry round is split from its retry file).
    :param hooks: one hook per download thread.
    :param stored: a result or retry file by URI, with the results folder's storage connection.
    :param log: the task's logger.
    """

    def __init__(
        self,
        spec: LoadSpec,
        journal: LoadJournal,
        folder: ObjectStoragePath,
        files: PartFiles,
        hooks: HookPerThread[SalesforceBulkHook],
        stored: Callable[[str], ObjectStoragePath],
        log: Log,
    ) -> None:
        self.spec = spec
        self.journal = journal
        self.folder = folder
        self.files = files
        self.hooks = hooks
        self.stored = stored
        self.log = log

    # --- one round ------------------------------------------------------------------------------

    def collect(self, round_: Round) -> None:
        """Stream every job's three result sets to the results folder (``upload_concurrency`` at once)."""
        pending = [part for part in round_.parts if part.results is None]
        run_concurrently(
            self.collect_part, pending, concurrency=self.spec.upload_concurrency, name="sfbulk-results"
        )
        round_.collected = True
        self.journal.save()

    def collect_part(self, part: Part) -> None:
        """Download one job's result sets, count them, and check they add up to the rows sent."""
        assert part.job_id is not None
        downloaded = download_job_results(self.hooks.get(), part.job_id, self.folder)
        job = downloaded.job
        results = PartResults(
            id=job.id,
            state=job.state.value,
            error_message=job.error_message,
            number_records_processed=job.number_records_processed,
            number_records_failed=job.number_records_failed,
            records_successful=downloaded.successful,
            records_failed=downloaded.failed,
            records_unprocessed=downloaded.unprocessed,
            files={
                name: ResultFileSummary(f.result_set, f.uri, f.records, f.bytes, f.sha256)
                for name, f in downloaded.files.items()
            },
            records_sent=part.records,
            reconciled=downloaded.total == part.records,
        )
        if not results.reconciled:
            self.log.error(
                "Job %s does not reconcile: %d successful + %d failed + %d unprocessed != %d sent",
                job.id,
                results.records_successful,
                results.records_failed,
                results.records_unprocessed,
                part.records,
            )
        self.journal.record(part, job.id, "ResultsCollected", system_modstamp=job.system_modstamp)
        self.log.info(
            "Job %s %s: sent=%d successful=%d failed=%d unprocessed=%d",
            job.id,
            job.state.value,
            part.records,
            results.records_successful,
            results.records_failed,
            results.records_unprocessed,
        )
        self.journal.update(part, results=results, state=job.state.value)

    def plan_retry(self, round_: Round) -> bool:
        """Decide what to retry after ``round_``; True when a retry round was added to the load."""
        if round_.retry is not None:
            return False
        codes = self.spec.retry_codes(round_.number)
        done = [part.results for part in round_.parts if part.results is not None]
        broken = [results for results in done if not results.completed]
        failed_files = [results.file_uri(_FAILED) for results in done if results.records_failed]
        if not codes or broken or not failed_files:
            round_.retry = RetryPlan(sorted(codes))
            self.journal.save()
            return False
        folder = self.folder / "retries"
        folder.mkdir(parents=True, exist_ok=True)
        retry_file = folder / f"round-{round_.number + 1}.csv"
        with retry_file.open("wb") as out:
            split = write_failed_rows(
                [(self.stored(uri), codes) for uri in failed_files],
                kept_out=None,
                retry_out=out,
                delimiter=self.spec.column_delimiter,
                line_ending=self.spec.line_ending,
            )
        round_.retry = RetryPlan(sorted(codes), split.retried, str(retry_file), dict(split.retried_codes))
        if not split.retried:
            self.journal.save()
            return False
        serial = self.spec.lock_retry and LOCK_ERROR_CODE in split.retried_codes
        self.log.info(
            "Retrying %d failed row(s) (%s) in round %d%s",
            split.retried,
            ", ".join(f"{code}={n}" for code, n in split.retried_codes.items()),
            round_.number + 1,
            ", one job at a time" if serial else "",
        )
        parts = self.files.split(retry_file, round_.number + 1)
        concurrency = 1 if serial else self.spec.job_concurrency
        self.journal.state.rounds.append(
            new_round(round_.number + 1, str(retry_file), parts, concurrency, codes)
        )
        self.journal.save()
        return True

    # --- the whole load --------------------------------------------------------------------------

    def final_failures(self) -> tuple[int, list[str]]:
        """Rows that finally failed and the files holding them (merged once there were retry rounds)."""
        rounds = self.journal.state.rounds
        parts = [part.results for part in self.journal.state.all_parts() if part.results is not None]
        if len(rounds) == 1 or not any(results.records_failed for results in parts):
            files = [results.file_uri(_FAILED) for results in parts if results.records_failed]
            return sum(results.records_failed for results in parts), files
        merged = self.folder / "failedResults-final.csv"
        self.folder.mkdir(parents=True, exist_ok=True)
        sources: list[tuple[Any, list[str]]] = []
        for round_ in rounds:
            plan = round_.retry
            codes = plan.codes if plan is not None and plan.rows else []
            sources.extend(
                (self.stored(part.results.file_uri(_FAILED)), codes)
                for part in round_.parts
                if part.results is not None and part.results.records_failed
            )
        with merged.open("wb") as out:
            split = write_failed_rows(
                sources,
                kept_out=out,
                retry_out=None,
                delimiter=self.spec.column_delimiter,
                line_ending=self.spec.line_ending,
            )
        return split.kept, [str(merged)] if split.kept else []

    def summarize(self, checkpoint_backend: str) -> LoadSummary:
        """Write the manifest and build the XCom value; name the problem when the load did not succeed."""
        state = self.journal.state
        results = [part.results for part in state.all_parts() if part.results is not None]
        successful = sum(item.records_successful for item in results)
        unprocessed = sum(item.records_unprocessed for item in results)
        failed, failed_files = self.final_failures()
        sent = state.records_sent
        reconciled = successful + failed + unprocessed == sent and all(item.reconciled for item in results)
        manifest = {
            "object": self.spec.object_name,
            "operation": self.spec.operation,
            "source": state.fingerprint["source"],
            "started_at": datetime.fromtimestamp(state.started_at, timezone.utc).isoformat(),
            "finished_at": now_iso(),
            "checkpoint": checkpoint_backend,
            "records_sent": sent,
            "records_successful": successful,
            "records_failed": failed,
            "records_unprocessed": unprocessed,
            "reconciled": reconciled,
            "orphan_jobs_aborted": list(state.orphans_aborted),
            "rounds": [round_.to_json() for round_ in state.rounds],
        }

        def files(result_set: str) -> list[str]:
            return [item.file_uri(result_set) for item in results if item.files[result_set].records]

        result: dict[str, Any] = {
            "job_ids": state.job_ids(),
            "object": self.spec.object_name,
            "operation": self.spec.operation,
            "records_sent": sent,
            "records_successful": successful,
            "records_failed": failed,
            "records_unprocessed": unprocessed,
            "successful_results": files(_SUCCESS),
            "failed_results": failed_files,
            "unprocessed_records": files(_UNPROCESSED),
            "retry_rounds": len(state.rounds) - 1,
            "manifest": write_manifest(self.folder, manifest),
            "results_path": str(self.folder),
        }
        self.log.info(
            "Load of %s into %s (%s) finished: sent=%d successful=%d failed=%d unprocessed=%d jobs=%d; "
            "manifest %s",
            state.fingerprint["source"],
            self.spec.object_name,
            self.spec.operation,
            sent,
            successful,
            failed,
            unprocessed,
            len(result["job_ids"]),
            result["manifest"],
        )
        problem = self._problem(results, reconciled, successful, failed, unprocessed, failed_files)
        return LoadSummary(result, problem)

    def _problem(
        self,
        results: list[PartResults],
        reconciled: bool,
        successful: int,
        failed: int,
        unprocessed: int,
        failed_files: list[str],
    ) -> str | None:
        broken = [item for item in results if not item.completed]
        if broken:
            details = "; ".join(f"{b.id} {b.state}: {b.error_message or 'no errorMessage'}" for b in broken)
            return f"{len(broken)} job(s) did not complete: {details}"
        if not reconciled:
            sent = self.journal.state.records_sent
            unbalanced = [_unbalanced(item) for item in results if not item.reconciled]
            return (
                f"the results do not reconcile: {successful} successful + {failed} failed + {unprocessed} "
                f"unprocessed != {sent} sent" + (f" ({'; '.join(unbalanced)})" if unbalanced else "")
            )
        if failed > self.spec.max_failed_records:
            return (
                f"{failed} row(s) failed (max_failed_records={self.spec.max_failed_records}); "
                f"see {', '.join(failed_files)}"
            )
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
