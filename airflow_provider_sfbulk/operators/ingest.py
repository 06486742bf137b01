"""Load a CSV of any size into Salesforce with Bulk API 2.0 ingest jobs: no row lost, none loaded twice.

The operator is wiring: parameters, templating, deferral and resumption, XCom, the job link and metrics.
The load itself (split, jobs, recovery, results, retry rounds, manifest) is
:class:`~airflow_provider_sfbulk.ingest.load.IngestLoad`.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, Stats

from airflow_provider_sfbulk.common.paths import storage_conn_id, task_results_path, to_storage_path
from airflow_provider_sfbulk.csvio.failed_rows import DEFAULT_RETRYABLE_ERROR_CODES
from airflow_provider_sfbulk.csvio.scanner import DEFAULT_MAX_BYTES
from airflow_provider_sfbulk.exceptions import SalesforceBulkError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.journal import STATE_KEY
from airflow_provider_sfbulk.ingest.load import IngestLoad, WaitFor
from airflow_provider_sfbulk.ingest.spec import DEFAULT_MIN_BYTES_PER_JOB, LoadSpec
from airflow_provider_sfbulk.ingest.summary import LoadSummary
from airflow_provider_sfbulk.links.job import SalesforceBulkJobLink
from airflow_provider_sfbulk.operators.base import DEADLINE_KEY, SalesforceBulkBaseOperator, template_flag
from airflow_provider_sfbulk.protocol.api import MULTIPART_MAX_BYTES
from airflow_provider_sfbulk.protocol.states import JobKind

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

__all__ = ["STATE_KEY", "SalesforceBulkIngestOperator"]

#: Largest CSV sent with the one-request multipart create. The current Bulk API 2.0 guide ("Process for
#: Creating Bulk API 2.0 Requests", multipart walkthrough) allows 100,000 characters (an older guide said
#: 20,000); bytes >= characters, so a byte cap is safe.
DEFAULT_MULTIPART_MAX_BYTES = MULTIPART_MAX_BYTES


class SalesforceBulkIngestOperator(SalesforceBulkBaseOperator):
    """Insert, update, upsert, delete or hardDelete the rows of a CSV with Bulk API 2.0 ingest jobs.

    **Steps.** The source is read once as a stream, validated completely and cut at record boundaries into
    parts (header repeated in each, BOM dropped) before any job exists: parts of similar size, as many as
    ``job_concurrency`` where each holds ``min_bytes_per_job``, none over ``max_bytes_per_job``. A bad file
    (missing, empty, header only, unbalanced quotes, wrong delimiter or line ending, invalid UTF-8, a
    header that does not fit the operation) fails with a clear message and no job. Then the daily Bulk
    allowance is checked (``limits_check``). Each part becomes one job: one part under
    ``multipart_max_bytes`` is sent with the one-request multipart create; otherwise every job is
    created and uploaded (``upload_concurrency`` at a time) and then closed (``UploadComplete``) so that
    at most ``job_concurrency`` jobs run at once. The task then waits, deferred to the triggerer
    (``deferrable=True``) or polling in the worker with the same logic. When every job is terminal the
    three result sets of each job are streamed to ``results_path`` and reconciled
    (``successful + failed + unprocessed == rows sent``), and a manifest is written beside them.

    **Failure policy.** Rows that failed with a code in ``retryable_error_codes`` are loaded again, only
    those rows (original columns, ``sf__`` columns dropped) in a new job, up to ``retry_failed_records``
    times; ``lock_retry`` retries ``UNABLE_TO_LOCK_ROW`` rows one job at a time (Bulk API 2.0 has no
    serial mode: start parallel, fall back to serial). Counts and files in the XCom reflect the merged
    outcome. The task fails, after the results are written, when more than ``max_failed_records`` rows
    finally failed, when a job ended ``Failed`` or ``Aborted`` (with Salesforce's ``errorMessage``; its
    unprocessed rows are written), or when the counts do not reconcile. Its XCom is pushed in every case.

    **Crash safety.** Job ids and upload progress go to the task's checkpoint (Airflow's task state store
    where available, 3.3+; else a JSON file under the results base, which must then be storage every
    worker reaches, e.g. ``s3://``, when retries may run on another machine) the moment they exist. A
    retried or resumed task reconnects instead of loading again: parts without a job get one; a job
    created but not uploaded is uploaded; a job whose upload may or may not have happened (``Open``
    after a crash during the upload) is aborted and replaced, since Salesforce takes one upload per job
    and processes nothing until ``UploadComplete``; uploaded, running or finished jobs are waited for and
    collected. A multipart create whose answer was lost is looked up among this user's jobs of the same
    object and operation created since the request: one match is adopted, none means it was never
    created, several stop the task (nothing is guessed). A lost JSON create leaves at most an empty
    ``Open`` job, which Salesforce never processes; a new job is created, and after the uploads such
    orphans are aborted (only when they can be told apart from other tasks' jobs). After success the
    checkpoint is deleted, so clearing the task later loads again; after a failure it is kept, so an
    Airflow retry reports the same outcome instead of loading rows a second time.

    **Clearing after a fix.** When the source or the parameters changed since a failed attempt: if that
    attempt loaded no row (every job ``Failed`` or ``Aborted`` with no successful row), a fresh load
    starts, with one log line saying why; if rows were loaded, the task refuses, naming the jobs and the
    counts. ``restart_load=True`` starts a fresh load whatever the checkpoint holds (the rows already
    loaded stay loaded; the earlier jobs still running are aborted).

    **XCom** (``return_value``), small and JSON::

        {"job_ids": [...],                 # every job, retry jobs included, in order
         "object": "Account", "operation": "insert",
         "records_sent": 1000,             # data rows in the source
         "records_successful": 990, "records_failed": 10, "records_unprocessed": 0,
         "successful_results": [uri, ...], # files with at least one row
         "failed_results": [uri, ...],     # final failures only (rows retried successfully are gone)
         "failed_rows_to_reload": uri,     # the same rows in the source's columns, to fix and load
         "unprocessed_records": [uri, ...],
         "retry_rounds": 1,                # follow-up jobs of retried rows
         "manifest": uri, "results_path": uri}

    :param object_name: sObject API name (templated).
    :param operation: ``insert``, ``update``, ``upsert``, ``delete`` or ``hardDelete`` (templated).
    :param source: CSV file: a local path, a URI (``s3://``, ``file://``, ...) or an ``ObjectStoragePath``
        (templated).
    :param external_id_field: external id field, required for ``upsert`` (templated).
    :param column_delimiter: ``COMMA`` (default), ``TAB``, ``PIPE``, ``SEMICOLON``, ``CARET``, ``BACKQUOTE``.
    :param line_ending: ``LF`` (default) or ``CRLF``; every record of the file must use it.
    :param assignment_rule_id: Case or Lead assignment rule id (templated).
    :param results_path: folder for result files and manifest (templated); default
        ``<results base>/<dag>/<run>/<task>/try-<n>``.
    :param max_bytes_per_job: largest upload per job (default just under Salesforce's limit).
    :param min_bytes_per_job: smallest part when spreading a file over ``job_concurrency`` jobs (default
        10 MB: a file under 20 MB is one job); ``max_bytes_per_job`` or more: cut only where a part is full.
    :param max_records_per_job: most rows per job (default no limit besides the size).
    :param multipart_max_bytes: a load of one part at most this big uses the multipart create; 0 never.
    :param job_concurrency: how many of this task's jobs run at once (1 = one after another).
    :param upload_concurrency: how many jobs are created and uploaded at once.
    :param max_failed_records: rows that may finally fail without failing the task (default 0).
    :param retry_failed_records: how many follow-up jobs may retry rows with a retryable error.
    :param retryable_error_codes: error codes worth retrying unchanged.
    :param lock_retry: retry ``UNABLE_TO_LOCK_ROW`` rows with one job at a time (at least once).
    :param limits_check: ``fail`` (default), ``warn`` or ``off``: compare the batches the load needs with
        the org's remaining ``DailyBulkApiBatches`` before any job is created.
    :param limits_warn_share: warn (log line and metric ``sfbulk.limits.daily_batches_low``) when the load
        would leave less than this share of the org's daily batches.
    :param allow_hard_delete: must be True for ``hardDelete``, which bypasses the Recycle Bin.
    :param retry_unprocessed_records: send the unprocessed rows of a job that failed or was aborted
        part-way (and of jobs aborted because another failed) again in a new job, for up to
        ``max(1, retry_failed_records)`` rounds.
    :param describe_check: before any job, read the object's describe and refuse a header that does not
        fit it (unknown columns or references, fields not createable or updateable, required fields
        missing on insert, an external id that cannot match).
    :param restart_load: start a fresh load even when this task instance's checkpoint holds one that
        loaded rows (templated; ``"True"``/``"False"`` text is accepted).
    The waiting parameters are those of :class:`~airflow_provider_sfbulk.operators.base.
    SalesforceBulkBaseOperator`.
    """

    template_fields: Sequence[str] = (
        "salesforce_conn_id",
        "object_name",
        "operation",
        "source",
        "external_id_field",
        "assignment_rule_id",
        "results_path",
        "column_delimiter",
        "line_ending",
        "restart_load",
    )
    operator_extra_links = (SalesforceBulkJobLink(),)
    ui_color = "#00a1e0"

    def __init__(
        self,
        *,
        object_name: str,
        operation: str,
        source: Any,
        external_id_field: str | None = None,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        assignment_rule_id: str | None = None,
        results_path: Any = None,
        max_bytes_per_job: int = DEFAULT_MAX_BYTES,
        min_bytes_per_job: int = DEFAULT_MIN_BYTES_PER_JOB,
        max_records_per_job: int | None = None,
        multipart_max_bytes: int = DEFAULT_MULTIPART_MAX_BYTES,
        job_concurrency: int = 5,
        upload_concurrency: int = 4,
        max_failed_records: int = 0,
        retry_failed_records: int = 0,
        retryable_error_codes: Collection[str] = DEFAULT_RETRYABLE_ERROR_CODES,
        lock_retry: bool = False,
        limits_check: str = "fail",
        limits_warn_share: float = 0.1,
        allow_hard_delete: bool = False,
        restart_load: bool | str = False,
        describe_check: bool = True,
        retry_unprocessed_records: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.object_name = object_name
        self.operation = operation
        self.source = source
        self.external_id_field = external_id_field
        self.column_delimiter = column_delimiter
        self.line_ending = line_ending
        self.assignment_rule_id = assignment_rule_id
        self.results_path = results_path
        self.max_bytes_per_job = max_bytes_per_job
        self.min_bytes_per_job = min_bytes_per_job
        self.max_records_per_job = max_records_per_job
        self.multipart_max_bytes = multipart_max_bytes
        self.job_concurrency = job_concurrency
        self.upload_concurrency = upload_concurrency
        self.max_failed_records = max_failed_records
        self.retry_failed_records = retry_failed_records
        self.retryable_error_codes = sorted(set(retryable_error_codes))
        self.lock_retry = lock_retry
        self.limits_check = limits_check
        self.limits_warn_share = limits_warn_share
        self.allow_hard_delete = allow_hard_delete
        self.restart_load = restart_load
        self.describe_check = describe_check
        self.retry_unprocessed_records = retry_unprocessed_records
        self._spec().check_numbers()
        self._load: IngestLoad | None = None

    # --- wiring ---------------------------------------------------------------------------------

    def _spec(self) -> LoadSpec:
        return LoadSpec(
            object_name=self.object_name,
            operation=self.operation,
            external_id_field=self.external_id_field,
            column_delimiter=self.column_delimiter,
            line_ending=self.line_ending,
            assignment_rule_id=self.assignment_rule_id,
            max_bytes_per_job=self.max_bytes_per_job,
            min_bytes_per_job=self.min_bytes_per_job,
            max_records_per_job=self.max_records_per_job,
            multipart_max_bytes=self.multipart_max_bytes,
            job_concurrency=self.job_concurrency,
            upload_concurrency=self.upload_concurrency,
            max_failed_records=self.max_failed_records,
            retry_failed_records=self.retry_failed_records,
            retryable_error_codes=self.retryable_error_codes,
            lock_retry=self.lock_retry,
            limits_check=self.limits_check,
            limits_warn_share=self.limits_warn_share,
            allow_hard_delete=self.allow_hard_delete,
            describe_check=self.describe_check,
            retry_unprocessed_records=self.retry_unprocessed_records,
        )

    def _results_folder(self, context: Context) -> ObjectStoragePath:
        if self.results_path:
            return to_storage_path(self.results_path)
        return task_results_path(context)

    def _new_load(self, context: Context) -> IngestLoad:
        spec = self._spec()
        try:
            spec.validate()
        except IngestInputError as err:
            raise AirflowFailException(str(err)) from err
        folder = self._results_folder(context)
        conn_id = self.salesforce_conn_id
        self._load = IngestLoad(
            spec,
            to_storage_path(self.source),
            self.checkpoint(context),
            folder,
            self.hook,
            lambda: SalesforceBulkHook(salesforce_conn_id=conn_id),
            lambda uri: to_storage_path(uri, conn_id=storage_conn_id(folder)),
            self.log,
        )
        return self._load

    # --- entry points ---------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Start or resume the load; wait (or defer) while its jobs run."""
        load = self._new_load(context)
        try:
            try:
                if load.open(restart=template_flag(self.restart_load)):
                    load.checkpoint.delete(DEADLINE_KEY)  # a new load gets the whole timeout
                    if load.limits_low:
                        self._incr("sfbulk.limits.daily_batches_low")
            except IngestInputError as err:
                raise AirflowFailException(str(err)) from err
            return self._drive(context, load)
        finally:
            load.close()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: apply the outcome and carry on (may defer again)."""
        load = self._new_load(context)
        try:
            outcome = self.outcome_from_event(event)
            load.resume()
            self._apply(load, outcome)
            return self._drive(context, load)
        finally:
            load.close()

    def _drive(self, context: Context, load: IngestLoad) -> dict[str, Any]:
        while True:
            try:
                step = load.advance()
            except IngestInputError as err:
                raise AirflowFailException(str(err)) from err
            if isinstance(step, LoadSummary):
                return self._finish(context, load, step)
            self._wait(context, load, step)

    def _wait(self, context: Context, load: IngestLoad, step: WaitFor) -> None:
        self._persist_link(context, load)  # every try and resume pushes it again
        outcome = self.wait_for_jobs(
            context,
            step.job_ids,
            JobKind.INGEST.value,
            method_name="execute_complete",
            checkpoint=load.checkpoint,
            on_change=load.state_seen(step.job_ids),
            return_when=step.return_when,
            records_sent=step.records_sent,
        )
        self._apply(load, outcome)

    def _apply(self, load: IngestLoad, outcome: Any) -> None:
        try:
            load.apply_outcome(outcome)
        except SalesforceBulkError as err:
            raise AirflowException(f"timeout ({self.timeout}s) reached: {err}") from err

    def _finish(self, context: Context, load: IngestLoad, summary: LoadSummary) -> dict[str, Any]:
        state = load.state
        if not state.stats_sent:
            self._stats(state.started_at, summary.result, summary.job_stats)
            state.stats_sent = True
            load.journal.save()
        self._active_job_ids = []
        self._persist_link(context, load)
        if summary.problem is not None:
            try:
                context["ti"].xcom_push(key="return_value", value=summary.result)
            except Exception as err:  # the failure itself matters more than its XCom
                self.log.warning("Could not push the result XCom: %s", err)
            raise AirflowFailException(summary.problem)
        load.journal.delete()
        load.checkpoint.delete(DEADLINE_KEY)
        return summary.result

    def on_kill(self) -> None:
        """Stop the load (no further job, no retry round), then abort its jobs (``cancel_on_kill``)."""
        if self._load is not None:
            self._load.stop()
        super().on_kill()

    def jobs_to_abort(self) -> list[str]:
        """The jobs being waited for and those this process created that may still run."""
        in_flight = self._load.jobs_in_flight() if self._load is not None else []
        return list(dict.fromkeys([*super().jobs_to_abort(), *in_flight]))

    def _persist_link(self, context: Context, load: IngestLoad) -> None:
        job_ids = load.state.job_ids()
        if not job_ids:
            return
        try:
            SalesforceBulkJobLink.persist(context, instance_url=self.hook.instance_url, job_ids=job_ids)
        except Exception as err:  # the link is a convenience
            self.log.debug("Could not store the job link: %s", err)

    def _incr(self, name: str) -> None:
        try:
            Stats.incr(name, tags={"object": self.object_name, "operation": self.operation})
        except Exception as err:  # metrics never fail a load
            self.log.debug("Could not send metrics: %s", err)

    def _stats(self, started_at: float, result: dict[str, Any], stats: dict[str, int]) -> None:
        tags = {"object": self.object_name, "operation": self.operation}
        try:
            for name in ("records_sent", "records_successful", "records_failed", "records_unprocessed"):
                Stats.incr(f"sfbulk.ingest.{name}", result[name], tags=tags)
            Stats.incr("sfbulk.ingest.jobs", len(result["job_ids"]), tags=tags)
            for name, value in stats.items():
                Stats.incr(f"sfbulk.ingest.{name}", value, tags=tags)
            Stats.timing("sfbulk.ingest.duration", timedelta(seconds=time.time() - started_at), tags=tags)
        except Exception as err:  # metrics never fail a load
            self.log.debug("Could not send metrics: %s", err)

    # --- lineage (called by the OpenLineage provider only) ----------------------------------------------

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage datasets known before the run (:mod:`~airflow_provider_sfbulk.operators.lineage`)."""
        from airflow_provider_sfbulk.operators.lineage import ingest_lineage

        return ingest_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets, row counts and job ids of the finished run."""
        from airflow_provider_sfbulk.operators.lineage import ingest_lineage

        return ingest_lineage(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage datasets and the job ids so far (the provider adds the error message)."""
        from airflow_provider_sfbulk.operators.lineage import ingest_lineage

        return ingest_lineage(self, task_instance)
