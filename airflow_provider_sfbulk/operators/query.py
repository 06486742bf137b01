"""Extract the result of a SOQL query to object storage with a Bulk API 2.0 query job."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, Asset, Stats

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.json_files import check_writable
from airflow_provider_sfbulk.common.paths import (
    task_interval_path,
    task_results_path,
    task_series_folder,
    to_storage_path,
)
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.links.job import SalesforceBulkJobLink
from airflow_provider_sfbulk.operators.base import DEADLINE_KEY, SalesforceBulkBaseOperator
from airflow_provider_sfbulk.operators.query_slicing import SLICES_KEY, SlicedQueryRun, slice_field
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, JobKind, QueryOperation
from airflow_provider_sfbulk.protocol.waiting import WaitOutcome
from airflow_provider_sfbulk.query.errors import QueryExtractError, QueryJobRefused
from airflow_provider_sfbulk.query.extract import extract_query_results
from airflow_provider_sfbulk.query.incremental import (
    DEFAULT_INCREMENTAL_FIELD,
    IncrementalQueryError,
    IntervalQuery,
    bound_soql,
    compose_interval_soql,
)
from airflow_provider_sfbulk.query.jobs import QueryJobs, QuerySettings, failure_text
from airflow_provider_sfbulk.query.manifest import ExtractResult
from airflow_provider_sfbulk.query.options import COMPRESSIONS, OUTPUT_MODES, ExtractOptions
from airflow_provider_sfbulk.query.preflight import check_limits_settings
from airflow_provider_sfbulk.query.sliced import SlicedResult
from airflow_provider_sfbulk.query.slices import DEFAULT_MIN_SLICE, SLICE_UNITS

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["SLICES_KEY", "STATE_KEY", "SalesforceBulkQueryOperator"]

#: Checkpoint key of the query job this task runs: ``{"job_id", "fingerprint", "results_path"}``.
STATE_KEY = "query"


def _results_asset(operator: SalesforceBulkQueryOperator, asset: Any) -> Any:
    """The Asset (Dataset on Airflow 2) the operator declares, from its ``asset`` parameter; or ``None``.

    ``True`` names the operator's fixed results location: ``results_path`` when it is not templated, else
    (``incremental=True``) ``<results base>/<dag_id>/<task_id>``, the parent of every interval's folder.
    """
    if asset is None or asset is False:
        return None
    if isinstance(asset, str):
        return Asset(asset)
    if asset is not True:
        return asset  # an Asset (or Dataset) the DAG author built
    where = operator.results_path
    if where is not None:
        if isinstance(where, str) and ("{{" in where or "{%" in where):
            raise ValueError("asset=True needs a results_path without templates; pass the asset's URI")
        return Asset(str(to_storage_path(where)))
    if not operator.incremental:
        raise ValueError(
            "asset=True needs a fixed results location: set results_path, use incremental=True, or pass the "
            "asset's URI"
        )
    if not operator.has_dag():
        raise ValueError("asset=True needs the operator inside a DAG (its folder is named after the dag_id)")
    return Asset(str(task_series_folder({"dag": operator.dag, "task": operator})))


def _interval_query(operator: SalesforceBulkQueryOperator, context: Context) -> IntervalQuery:
    """The SOQL of the run's data interval (logged), or a failure that no retry can help."""
    try:
        interval = compose_interval_soql(
            operator.soql,
            operator.incremental_field,
            context.get("data_interval_start"),
            context.get("data_interval_end"),
        )
    except IncrementalQueryError as err:
        raise AirflowFailException(f"Incremental extract: {err}") from err
    operator.log.info(
        "Incremental extract of %s: %s in [%s, %s); SOQL sent: %s",
        interval.object_name,
        interval.field,
        interval.start,
        interval.end,
        interval.soql,
    )
    return interval


def _announce(
    context: Context, asset: Any, result: ExtractResult | SlicedResult, interval: IntervalQuery | None
) -> None:
    """Put the extract's location and counts (and interval) on the asset event Airflow records."""
    events = context.get("outlet_events") if context is not None else None
    if events is None:
        return
    extra = {key: value for key, value in result.to_xcom().items() if key != "files"}
    extra["file_count"] = len(result.files)
    if interval is not None:
        extra["interval"] = interval.describe()
    events[asset].extra = extra


def _check_slicing(operator: SalesforceBulkQueryOperator) -> None:
    """Refuse slicing parameters that mean nothing, at parse time (ValueError)."""
    slices, slice_by = operator.slices, operator.slice_by
    if slices is not None and slice_by is not None:
        raise ValueError("give slices or slice_by, not both")
    if slices is not None and (isinstance(slices, bool) or not isinstance(slices, int) or slices < 1):
        raise ValueError(f"slices must be a whole number of at least 1, not {slices!r}")
    if slice_by is not None and slice_by not in SLICE_UNITS:
        raise ValueError(f"slice_by must be one of {', '.join(SLICE_UNITS)}, not {slice_by!r}")
    if not isinstance(operator.min_slice, timedelta) or operator.min_slice < timedelta(seconds=1):
        raise ValueError(f"min_slice must be a timedelta of at least one second, not {operator.min_slice!r}")
    if isinstance(operator.slice_concurrency, bool) or not (
        isinstance(operator.slice_concurrency, int) and operator.slice_concurrency >= 1
    ):
        raise ValueError(f"slice_concurrency must be at least 1, not {operator.slice_concurrency!r}")
    if (slices is not None or slice_by is not None) and operator.output_mode == "single":
        raise ValueError("a sliced extract writes pages: slices and slice_by need output_mode='pages'")


def _job_metrics(operator: SalesforceBulkQueryOperator, job: JobInfo) -> None:
    """Send an ended job's ``retries`` and ``totalProcessingTime`` as metrics (never fails the task)."""
    tags = {"operation": operator.operation}
    try:
        if job.retries is not None:
            Stats.incr("sfbulk.query.retries", job.retries, tags=tags)
        if job.total_processing_time is not None:
            Stats.timing("sfbulk.query.processing_ms", job.total_processing_time, tags=tags)
    except Exception as err:  # metrics never fail a task
        operator.log.debug("Could not send metrics: %s", err)


class SalesforceBulkQueryOperator(SalesforceBulkBaseOperator):
    """Run a SOQL query as a Bulk API 2.0 query job and stream its result to object storage.

    **Steps.** Before a new job is created, the org's remaining ``DailyBulkV2QueryJobs`` is checked
    (``limits_check``). The job is created (bad SOQL fails the task at once with Salesforce's message), its id
    goes to the task's checkpoint and the extra link, and the task waits until the job is terminal:
    deferred to the triggerer (``deferrable=True``) or polling in the worker. ``Failed`` or ``Aborted``
    fail the task with Salesforce's ``errorMessage``. A query that ran too long (``retries`` used up, or
    ``QUERY_TIMEOUT``) is sliced (``auto_slice``, below); without it, or when it cannot be sliced, the task
    fails without retrying, naming Salesforce's advice (filter the query, or split it). When the job ends,
    one log line gives its ``retries`` and
    ``totalProcessingTime``, also sent as the metrics ``sfbulk.query.retries`` and
    ``sfbulk.query.processing_ms``. On ``JobComplete`` the result pages are downloaded
    into ``results_path`` (see :mod:`airflow_provider_sfbulk.query.extract`): in parallel from
    ``resultPages`` (API 58.0+; an org where it answers 404 or what cannot be read falls back, with one
    warning line) or one after the other along ``Sforce-Locator``; each page streams from
    the socket to storage; record counts are checked per page against ``Sforce-NumberOfRecords`` and in
    total against the job's ``numberRecordsProcessed``; ``manifest.json`` lists every page (locator,
    records, bytes, SHA-256).

    **Retries.** A retried task reuses the query job saved in the checkpoint (unless it ended ``Failed``
    or ``Aborted``, no longer exists, or the rendered query changed) and the same results folder, and
    downloads only the pages it does not have yet. A page that fails transiently is fetched again on its
    own. After success the checkpoint is cleared, so clearing the task later runs the query afresh.

    **XCom** (``return_value``), small and JSON::

        {"job_id": "750...", "files": [uri, ...], "record_count": 12345,
         "columns": ["Id", "Name"], "manifest": uri, "results_path": uri}

    **Incremental** (``docs/incremental-extracts.md``): ``soql`` without a time filter gets
    ``(<its WHERE>) AND Field >= start AND Field < end``, the run's data interval in UTC
    (:func:`~airflow_provider_sfbulk.query.incremental.compose_interval_soql`), logged and in the
    manifest (``interval``); the default folder, ``<results base>/<dag>/<task>[/map-<i>]/<start>_<end>``,
    is the same on every re-run of the interval, which replaces its files. **Asset**: the outlet's event
    ``extra`` is the XCom without ``files``, plus ``file_count`` (and ``interval``).

    **Slicing** (``docs/incremental-extracts.md``, :mod:`~airflow_provider_sfbulk.query.sliced`): the
    window (the data interval, else ``[first, latest + 1 s)`` of ``CreatedDate`` learnt with two
    ``ORDER BY ... LIMIT 1`` query jobs) is cut into contiguous half-open slices, each run as its own
    query job (``slice_concurrency`` at a time), each job and slice checkpointed. A slice that runs too
    long is split in halves down to ``min_slice``. The pages land in ``slice-NNNN/`` sub-folders of the one
    results folder, whose ``manifest.json`` lists the slices; the XCom has ``job_id`` null, ``job_ids``
    and ``slices`` besides the usual keys.

    :param soql: the SOQL query (templated; a path ending in ``.soql`` or ``.sql`` is read as a template).
    :param operation: ``query``, or ``queryAll`` to include deleted and archived rows (templated).
    :param column_delimiter: ``COMMA`` (default), ``TAB``, ``PIPE``, ``SEMICOLON``, ``CARET``, ``BACKQUOTE``.
    :param line_ending: ``LF`` (default) or ``CRLF``.
    :param max_records_per_page: ``maxRecords`` per result page; ``None`` lets Salesforce choose.
    :param results_path: folder for the files and the manifest (templated; local path or storage URI);
        default ``<results base>/<dag>/<run>/<task>[/map-<i>]/try-<n>`` of the first try.
    :param output_mode: ``"pages"`` (one CSV per result page, each with its header) or ``"single"`` (one CSV,
        one header).
    :param output_compression: ``"gzip"`` or ``None``.
    :param output_compression_level: gzip level, 1 (fastest; about 2.5x the speed of 6 for ~7 % larger
        files on Salesforce-like CSV) to 9 (smallest).
    :param output_file_name: base name of the single output file (``results`` gives ``results.csv``).
    :param download_concurrency: result pages downloaded at once.
    :param use_result_pages: ``None`` picks ``resultPages`` when the API version has it; ``False``
        follows ``Sforce-Locator`` only; ``True`` insists on ``resultPages``.
    :param page_attempts: downloads of one page before the task fails (on top of the hook's retries).
    :param limits_check: ``fail`` (default), ``warn`` or ``off``: before creating a query job, read the
        org's remaining ``DailyBulkV2QueryJobs``; with none left, ``fail`` fails the task (without
        retrying) and ``warn`` only logs.
    :param limits_warn_share: log a warning when fewer than this share of the daily query jobs would be
        left after this one (default 0.1; ``limits_check="off"`` skips it too).
    :param incremental: extract only the run's data interval (above).
    :param incremental_field: the ``dateTime`` field the interval filters (default ``SystemModstamp``).
    :param asset: ``True`` (the results location: a plain ``results_path``, or with ``incremental`` the
        parent of the interval folders), a URI, or an ``Asset``/``Dataset``; ``None`` (default) declares none.
    :param slices: cut the window into this many slices of equal length up front.
    :param slice_by: cut the window at every ``year``, ``month``, ``week`` or ``day`` (UTC) up front.
    :param min_slice: the shortest slice a slice that ran too long is split into (default one hour).
    :param slice_concurrency: slices whose query jobs run at once.
    :param auto_slice: slice the query when its job runs too long for Salesforce (default ``True``).

    The remaining parameters (``salesforce_conn_id``, ``deferrable``, ``poll_interval``,
    ``max_poll_interval``, ``timeout``, ``cancel_on_kill``) are those of
    :class:`~airflow_provider_sfbulk.operators.base.SalesforceBulkBaseOperator`.
    """

    template_fields: Sequence[str] = ("salesforce_conn_id", "soql", "operation", "results_path")
    template_ext: Sequence[str] = (".soql", ".sql")
    template_fields_renderers = {"soql": "sql"}
    operator_extra_links = (SalesforceBulkJobLink(),)
    ui_color = "#00a1e0"

    def __init__(
        self,
        *,
        soql: str,
        operation: str = QueryOperation.QUERY.value,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        max_records_per_page: int | None = None,
        results_path: Any = None,
        output_mode: str = "pages",
        output_compression: str | None = None,
        output_compression_level: int = 6,
        output_file_name: str = "results",
        download_concurrency: int = 4,
        use_result_pages: bool | None = None,
        page_attempts: int = 3,
        limits_check: str = "fail",
        limits_warn_share: float = 0.1,
        incremental: bool = False,
        incremental_field: str = DEFAULT_INCREMENTAL_FIELD,
        asset: Any = None,
        slices: int | None = None,
        slice_by: str | None = None,
        min_slice: timedelta = DEFAULT_MIN_SLICE,
        slice_concurrency: int = 3,
        auto_slice: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.soql = soql
        self.operation = operation
        self.column_delimiter = column_delimiter
        self.line_ending = line_ending
        self.max_records_per_page = max_records_per_page
        self.results_path = results_path
        self.output_mode = output_mode
        self.output_compression = output_compression
        self.output_compression_level = output_compression_level
        self.output_file_name = output_file_name
        self.download_concurrency = download_concurrency
        self.use_result_pages = use_result_pages
        self.page_attempts = page_attempts
        self._job_id: str | None = None
        self.limits_check = limits_check
        self.limits_warn_share = limits_warn_share
        self.incremental = incremental
        self.incremental_field = incremental_field
        self._interval: IntervalQuery | None = None
        self.slices = slices
        self.slice_by = slice_by
        self.min_slice = min_slice
        self.slice_concurrency = slice_concurrency
        self.auto_slice = auto_slice
        #: The Asset (Dataset) of the results, also in ``outlets``; ``None`` without ``asset``.
        self.results_asset = _results_asset(self, asset)
        if self.results_asset is not None:
            self.outlets = [*self.outlets, self.results_asset]
        # Checked at parse time: these are not templated.
        self._options()
        _check_slicing(self)
        check_limits_settings(limits_check, limits_warn_share)
        if column_delimiter not in COLUMN_DELIMITERS:
            raise ValueError(f"column_delimiter must be one of {', '.join(COLUMN_DELIMITERS)}")
        if line_ending not in LINE_ENDINGS:
            raise ValueError(f"line_ending must be one of {', '.join(LINE_ENDINGS)}")

    # --- parameters -------------------------------------------------------------------------------------

    def _options(self) -> ExtractOptions:
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, not {self.output_mode!r}")
        if self.output_compression not in COMPRESSIONS:
            raise ValueError(f"output_compression must be 'gzip' or None, not {self.output_compression!r}")
        return ExtractOptions(
            output=self.output_mode,
            compression=self.output_compression,
            concurrency=self.download_concurrency,
            max_records_per_page=self.max_records_per_page,
            use_result_pages=self.use_result_pages,
            page_attempts=self.page_attempts,
            file_name=self.output_file_name,
            gzip_level=self.output_compression_level,
        )

    @property
    def _query(self) -> str:
        """The SOQL sent: that of the data interval in incremental mode."""
        return self._interval.soql if self._interval is not None else self.soql

    @property
    def _jobs(self) -> QueryJobs:
        return QueryJobs(
            self.hook,
            self.log,
            QuerySettings(
                self.operation,
                self.column_delimiter,
                self.line_ending,
                self.limits_check,
                self.limits_warn_share,
            ),
        )

    def _prepare(self, context: Context) -> None:
        """Check the rendered parameters; in incremental mode, compose the interval's SOQL and log it."""
        self._check_rendered()
        if self.incremental:
            self._interval = _interval_query(self, context)
        if self.slices is not None or self.slice_by is not None:
            try:
                bound_soql(self.soql, slice_field(self), last=False)
            except IncrementalQueryError as err:
                raise AirflowFailException(f"The query cannot be sliced: {err}") from err

    def _check_rendered(self) -> None:
        if not isinstance(self.soql, str) or not self.soql.strip():
            raise AirflowFailException("soql is empty")
        try:
            self.operation = QueryOperation(self.operation).value
        except ValueError:
            raise AirflowFailException(
                f"operation must be 'query' or 'queryAll', not {self.operation!r}"
            ) from None

    def _fingerprint(self) -> dict[str, Any]:
        return self._jobs.settings.fingerprint(self._query)

    # --- entry points -----------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Create (or reconnect to) the query job, wait for it, then extract its results."""
        self._prepare(context)
        checkpoint = self.checkpoint(context)
        sliced = self._slicing(context, checkpoint)
        plan = sliced.saved()
        if plan is None and (self.slices is not None or self.slice_by is not None):
            reason = f"slices={self.slices}" if self.slices is not None else f"slice_by={self.slice_by}"
            plan = sliced.start(reason, str(self._results_folder(context)))
        if plan is not None:
            return sliced.run(plan)
        state = self._job_for_task(context, checkpoint)
        self._persist_link(context, [state["job_id"]])
        outcome = self.wait_for_jobs(
            context,
            [state["job_id"]],
            JobKind.QUERY.value,
            method_name="execute_complete",
            checkpoint=checkpoint,
        )
        return self._complete(context, checkpoint, state, outcome)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: fail on ``Failed``/``Aborted``, else download."""
        self._prepare(context)
        outcome = self.outcome_from_event(event)
        checkpoint = self.checkpoint(context)
        sliced = self._slicing(context, checkpoint)
        plan = sliced.saved()
        if plan is not None:
            self._check_deadline(outcome)
            return sliced.run(plan)
        state = checkpoint.get(STATE_KEY)
        if not isinstance(state, dict) or not state.get("job_id"):
            raise AirflowException("the checkpoint of this query job is missing; cannot resume")
        return self._complete(context, checkpoint, state, outcome)

    # --- the job ----------------------------------------------------------------------------------------

    def _job_for_task(self, context: Context, checkpoint: TaskCheckpoint) -> dict[str, Any]:
        """The checkpointed job when it can still deliver this query, else a new one (checkpointed)."""
        state = checkpoint.get(STATE_KEY)
        if isinstance(state, dict) and state.get("job_id") and self._jobs.reusable(state, self._query):
            if self.results_path:
                state = {**state, "results_path": str(to_storage_path(self.results_path))}
            return state
        folder = (
            state.get("results_path")
            if isinstance(state, dict) and state.get("results_path") and not self.results_path
            else str(self._results_folder(context))
        )
        _ensure_writable(self._results_folder(context) if self.results_path else to_storage_path(str(folder)))
        job = self._create(self._query)
        new_state = {"job_id": job.id, "fingerprint": self._fingerprint(), "results_path": folder}
        checkpoint.set(STATE_KEY, new_state)
        checkpoint.delete(DEADLINE_KEY)  # a new job gets the whole timeout
        return new_state

    def _slicing(self, context: Context, checkpoint: TaskCheckpoint) -> SlicedQueryRun:
        return SlicedQueryRun(self, context, checkpoint, lambda job: _job_metrics(self, job))

    def _create(self, soql: str) -> JobInfo:
        try:
            return self._jobs.create(soql)
        except QueryJobRefused as err:
            raise AirflowFailException(str(err)) from err

    def _results_folder(self, context: Context) -> Any:
        if self.results_path:
            return to_storage_path(self.results_path)
        if self._interval is not None:  # the same folder for every run of the interval
            return task_interval_path(context, self._interval.folder_name)
        return task_results_path(context)

    def _persist_link(self, context: Context, job_ids: list[str]) -> None:
        try:
            SalesforceBulkJobLink.persist(context, instance_url=self.hook.instance_url, job_ids=job_ids)
        except Exception as err:  # the link is a convenience
            self.log.debug("Could not store the job link: %s", err)

    def _check_deadline(self, outcome: WaitOutcome) -> None:
        """Fail the task when its ``timeout`` passed (aborting the jobs it waited for, unless told not to)."""
        if outcome.status == "timeout":
            if self.cancel_on_kill:
                self.on_kill()
            ids = ", ".join(job.id for job in outcome.jobs) or ", ".join(self._active_job_ids)
            raise AirflowException(f"Salesforce query job {ids}: {outcome.message}")

    # --- outcome and download -----------------------------------------------------------------------------

    def _complete(
        self, context: Context, checkpoint: TaskCheckpoint, state: dict[str, Any], outcome: WaitOutcome
    ) -> dict[str, Any]:
        job_id = self._job_id = state["job_id"]  # kept for the lineage of a failure
        self._check_deadline(outcome)
        self._active_job_ids = []  # nothing left to abort: the job is terminal
        job = self._jobs.at_end(job_id)
        if job is not None:
            _job_metrics(self, job)
        if outcome.status != "success":
            text, too_long = failure_text(job_id, job, outcome)
            if too_long and self.auto_slice:
                sliced = self._slicing(context, checkpoint)
                plan = sliced.after_timeout(state, text)
                checkpoint.delete(STATE_KEY)
                return sliced.run(plan)
            raise (AirflowFailException if too_long else AirflowException)(text)
        # The folder object itself when the task names one (an ObjectStoragePath may carry a connection its
        # URI text does not); otherwise the default folder of the first try, as checkpointed (a URI built
        # from the configured base, so the text is the whole of it).
        folder = (
            self._results_folder(context)
            if self.results_path
            else to_storage_path(state["results_path"])
        )
        conn_id = self.salesforce_conn_id
        extra = {"interval": self._interval.describe()} if self._interval is not None else {}
        try:
            result = extract_query_results(
                lambda: SalesforceBulkHook(salesforce_conn_id=conn_id),
                job_id,
                folder,
                self._options(),
                **extra,
            )
        except QueryExtractError as err:
            raise AirflowException(str(err)) from err
        return self._deliver(context, checkpoint, result)

    def _deliver(
        self, context: Context, checkpoint: TaskCheckpoint, result: ExtractResult | SlicedResult
    ) -> dict[str, Any]:
        """Clear the checkpoint, send the metrics, announce the asset event, and return the XCom."""
        checkpoint.delete(STATE_KEY)
        checkpoint.delete(DEADLINE_KEY)
        self._stats(result)
        if self.results_asset is not None:
            _announce(context, self.results_asset, result, self._interval)
        xcom = result.to_xcom()
        self.log.info(
            "Query job(s) %s: %d record(s) in %d file(s); manifest %s",
            xcom["job_id"] or ", ".join(xcom.get("job_ids") or []),
            result.record_count,
            len(result.files),
            result.manifest,
        )
        return xcom

    def _stats(self, result: ExtractResult | SlicedResult) -> None:
        tags = {"operation": self.operation}
        try:
            Stats.incr("sfbulk.query.records", result.record_count, tags=tags)
            Stats.incr("sfbulk.query.bytes", result.csv_bytes, tags=tags)
            Stats.incr("sfbulk.query.pages", len(result.pages), tags=tags)
        except Exception as err:  # metrics never fail an extract
            self.log.debug("Could not send metrics: %s", err)

    # --- lineage (called by the OpenLineage provider only) ----------------------------------------------

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage datasets known before the run (:mod:`~airflow_provider_sfbulk.operators.lineage`)."""
        from airflow_provider_sfbulk.operators.lineage import query_lineage

        return query_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets, row counts and job ids of the finished run."""
        from airflow_provider_sfbulk.operators.lineage import query_lineage

        return query_lineage(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage datasets and the job ids so far (the provider adds the error message)."""
        from airflow_provider_sfbulk.operators.lineage import query_lineage

        return query_lineage(self, task_instance)


def _ensure_writable(folder: Any) -> None:
    """Fail before any query job exists when the results folder cannot be written."""
    try:
        check_writable(folder)
    except OSError as err:
        raise AirflowFailException(f"{err}; no query job was created") from err
