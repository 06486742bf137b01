"""Results of each round: download the three result sets of every job and reconcile them.

``JobComplete`` does not mean every row succeeded: every job's ``successfulResults``, ``failedResults``
and ``unprocessedrecords`` are streamed to storage and counted, and the counts must add up to the rows
the job was sent. What Salesforce says about the job's work (``retries``, processing times) is kept with
the counts, for the log, the manifest and the metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.common.threads import HookPerThread, run_concurrently
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.results import download_job_results
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import JobStats, Part, PartResults, Round

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["ResultCollector"]


class ResultCollector:
    """Downloads and reconciles the results of each round's jobs.

    :param spec: the load's parameters.
    :param journal: the load's state and checkpoint.
    :param folder: the results folder.
    :param hooks: one hook per download thread.
    :param log: the task's logger.
    """

    def __init__(
        self,
        spec: LoadSpec,
        journal: LoadJournal,
        folder: ObjectStoragePath,
        hooks: HookPerThread[SalesforceBulkHook],
        log: Log,
    ) -> None:
        self.spec = spec
        self.journal = journal
        self.folder = folder
        self.hooks = hooks
        self.log = log

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
            files=dict(downloaded.files),
            records_sent=part.records,
            reconciled=downloaded.total == part.records,
            stats=JobStats(job.retries, job.total_processing_time, job.apex_processing_time),
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
            "Job %s %s: sent=%d successful=%d failed=%d unprocessed=%d retries=%s "
            "totalProcessingTime=%sms apexProcessingTime=%sms",
            job.id,
            job.state.value,
            part.records,
            results.records_successful,
            results.records_failed,
            results.records_unprocessed,
            job.retries,
            job.total_processing_time,
            job.apex_processing_time,
        )
        self.journal.update(part, results=results, state=job.state.value)
