"""Starting query jobs: the preflight, the create, reusing a task's job across retries, and its end.

:class:`QueryJobs` is what the query operator (one job) and a sliced extract (one job per slice) share:

- :meth:`QueryJobs.create` checks the org's remaining ``DailyBulkV2QueryJobs`` first
  (:func:`~airflow_provider_sfbulk.query.preflight.check_daily_query_jobs`) and creates the job;
- :meth:`QueryJobs.reusable` decides whether the job a checkpoint names can still deliver the same query
  (same rendered query and settings, the job still exists, not ``Failed`` or ``Aborted``);
- :meth:`QueryJobs.at_end` reads the ended job and logs its ``retries`` and ``totalProcessingTime``;
- :func:`failure_text` words a job that did not complete, with Salesforce's advice when it ran too long.

Failures that a retry of the task cannot help raise :class:`~airflow_provider_sfbulk.query.errors.
QueryJobRefused`. No Airflow here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkBadRequestError,
    SalesforceBulkError,
    SalesforceBulkNotFoundError,
)
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.query.errors import QueryJobRefused, QueryPreflightError
from airflow_provider_sfbulk.query.preflight import check_daily_query_jobs
from airflow_provider_sfbulk.query.timeouts import failure_message

if TYPE_CHECKING:
    from airflow_provider_sfbulk.common.logs import Log
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
    from airflow_provider_sfbulk.protocol.api import JobInfo
    from airflow_provider_sfbulk.protocol.waiting import WaitOutcome

__all__ = ["QueryJobs", "QuerySettings", "failure_text"]


@dataclass(frozen=True)
class QuerySettings:
    """How every query job of a task is created, besides its SOQL."""

    operation: str
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    limits_check: str = "fail"
    limits_warn_share: float = 0.1

    def fingerprint(self, soql: str) -> dict[str, Any]:
        """What a checkpointed job must match to be reused: the SOQL sent and the output settings."""
        return {
            "soql": soql,
            "operation": self.operation,
            "column_delimiter": self.column_delimiter,
            "line_ending": self.line_ending,
        }


class QueryJobs:
    """Create, reuse and read the query jobs of one task (see the module documentation)."""

    def __init__(self, hook: SalesforceBulkHook, log: Log, settings: QuerySettings) -> None:
        self.hook = hook
        self.log = log
        self.settings = settings

    def create(self, soql: str) -> JobInfo:
        """Check the daily allowance, then create a query job for ``soql``.

        :raises QueryJobRefused: no daily query job is left, or Salesforce rejected the SOQL.
        """
        settings = self.settings
        try:
            check_daily_query_jobs(
                self.hook, self.log, limits_check=settings.limits_check, warn_share=settings.limits_warn_share
            )
        except QueryPreflightError as err:
            # The allowance is daily: retrying within the hour cannot help.
            raise QueryJobRefused(f"Preflight: {err}") from err
        try:
            job = self.hook.create_query_job(
                soql,
                settings.operation,
                column_delimiter=settings.column_delimiter,
                line_ending=settings.line_ending,
            )
        except SalesforceBulkBadRequestError as err:
            # Bad SOQL (unknown field or object, malformed query): retrying cannot help.
            raise QueryJobRefused(f"Salesforce rejected the query: {err}") from err
        self.log.info("Created %s job %s on %s", settings.operation, job.id, job.object or "?")
        return job

    def reusable(self, state: Mapping[str, Any], soql: str) -> bool:
        """True when the job ``state["job_id"]`` can still deliver ``soql`` with these settings."""
        job_id = state["job_id"]
        if state.get("fingerprint") != self.settings.fingerprint(soql):
            self.log.info("The rendered query differs from that of job %s; running it again", job_id)
            return False
        try:
            job = self.hook.get_job(job_id, JobKind.QUERY)
        except SalesforceBulkNotFoundError:
            self.log.info(
                "Query job %s from the checkpoint no longer exists; running the query again", job_id
            )
            return False
        if job.state in (JobState.FAILED, JobState.ABORTED):
            self.log.info(
                "Query job %s from the checkpoint ended %s; running the query again", job_id, job.state.value
            )
            return False
        self.log.info("Reusing query job %s (%s) from the checkpoint", job_id, job.state.value)
        return True

    def at_end(self, job_id: str) -> JobInfo | None:
        """The ended job, logged with its statistics; ``None`` when it cannot be read."""
        try:
            job = self.hook.get_job(job_id, JobKind.QUERY)
        except SalesforceBulkError as err:  # the statistics are a convenience; the outcome is known
            self.log.warning("Query job %s: could not read its statistics: %s", job_id, err)
            return None
        self.log.info(
            "Query job %s ended %s: %s record(s), retries=%s, totalProcessingTime=%s ms",
            job_id,
            job.state.value,
            job.number_records_processed,
            job.retries,
            job.total_processing_time,
        )
        return job


def failure_text(job_id: str, job: JobInfo | None, outcome: WaitOutcome) -> tuple[str, bool]:
    """The message of a query job that did not complete, and whether it ran too long for Salesforce.

    ``job`` is the job as read at its end (``None`` when it could not be read: the outcome's summary
    of the job stands in).
    """
    summary = next((item for item in outcome.jobs if item.id == job_id), None)
    state_name = job.state.value if job else (summary.state if summary else outcome.status)
    message = (job.error_message if job else None) or (summary.error_message if summary else None)
    return failure_message(
        job_id,
        state_name,
        message or outcome.message,
        job.retries if job else None,
        job.total_processing_time if job else None,
    )
