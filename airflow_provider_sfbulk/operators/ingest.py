"""Load a CSV of any size into Salesforce with Bulk API 2.0 ingest jobs: no row lost, none loaded twice."""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, Stats

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.paths import storage_conn_id, task_results_path, to_storage_path
from airflow_provider_sfbulk.csvio.dialect import required_columns_for, resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.failed_rows import DEFAULT_RETRYABLE_ERROR_CODES, write_failed_rows
from airflow_provider_sfbulk.csvio.scanner import DEFAULT_MAX_BYTES
from airflow_provider_sfbulk.csvio.split import CsvPart, split_csv
from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkOutcomeUnknownError,
)
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.results import JobResults, download_job_results, write_manifest
from airflow_provider_sfbulk.links.job import SalesforceBulkJobLink
from airflow_provider_sfbulk.operators.base import DEADLINE_KEY, SalesforceBulkBaseOperator
from airflow_provider_sfbulk.protocol.api import MULTIPART_MAX_BYTES, JobInfo
from airflow_provider_sfbulk.protocol.states import IngestOperation, JobKind, JobState
from airflow_provider_sfbulk.protocol.waiting import WaitOutcome

__all__ = ["STATE_KEY", "SalesforceBulkIngestOperator"]

#: Checkpoint key of the ingest progress.
STATE_KEY = "ingest"

#: Records per internal Salesforce batch; each counts against ``DailyBulkApiBatches``.
RECORDS_PER_BATCH = 10_000

#: Largest CSV sent with the one-request multipart create. The current Bulk API 2.0 guide ("Process for
#: Creating Bulk API 2.0 Requests", multipart walkthrough) allows 100,000 characters (an older guide said
#: 20,000); bytes >= characters, so a byte cap is safe.
DEFAULT_MULTIPART_MAX_BYTES = MULTIPART_MAX_BYTES

#: How far before the checkpointed send time a lost multipart job may have been created (clock skew).
LOST_JOB_SKEW = timedelta(minutes=2)

_LOCK_CODE = "UNABLE_TO_LOCK_ROW"
_BROKEN = (JobState.FAILED.value, JobState.ABORTED.value)

# Phases of one part (one job) in the checkpoint.
NEW, CREATING, CREATED, UPLOADING, UPLOADED, CLOSED = (
    "new",
    "creating",
    "created",
    "uploading",
    "uploaded",
    "closed",
)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SalesforceBulkIngestOperator(SalesforceBulkBaseOperator):
    """Insert, update, upsert, delete or hardDelete the rows of a CSV with Bulk API 2.0 ingest jobs.

    **Steps.** The source is read once as a stream, validated completely and cut at record boundaries into
    parts of at most ``max_bytes_per_job`` (header repeated in each, BOM dropped) before any job exists:
    a bad file (missing, empty, header only, unbalanced quotes, wrong delimiter or line ending, invalid
    UTF-8, a header that does not fit the operation) fails with a clear message and no job. Then the
    daily Bulk allowance is checked (``limits_check``). Each part becomes one job: one part under
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
    worker reaches, e.g. ``s3://``, when retries may run on another machine) the moment they exist. A retried or resumed
    task reconnects instead of loading again: parts without a job get one; a job created but not uploaded
    is uploaded; a job whose upload may or may not have happened (``Open`` after a crash during the
    upload) is aborted and replaced, since Salesforce takes one upload per job and processes nothing
    until ``UploadComplete``; uploaded, running or finished jobs are waited for and collected. A multipart
    create whose answer was lost is looked up among this user's jobs of the same object and operation
    created since the request: one match is adopted, none means it was never created, several stop the
    task (nothing is guessed). A lost JSON create leaves at most an empty ``Open`` job, which Salesforce
    never processes; a new job is created. After success the checkpoint is deleted, so clearing the task
    later loads again; after a failure it is kept, so an Airflow retry reports the same outcome instead of
    loading rows a second time.

    **XCom** (``return_value``), small and JSON::

        {"job_ids": [...],                 # every job, retry jobs included, in order
         "object": "Account", "operation": "insert",
         "records_sent": 1000,             # data rows in the source
         "records_successful": 990, "records_failed": 10, "records_unprocessed": 0,
         "successful_results": [uri, ...], # files with at least one row
         "failed_results": [uri, ...],     # final failures only (rows retried successfully are gone)
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
    :param allow_hard_delete: must be True for ``hardDelete``, which bypasses the Recycle Bin.
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
        max_records_per_job: int | None = None,
        multipart_max_bytes: int = DEFAULT_MULTIPART_MAX_BYTES,
        job_concurrency: int = 5,
        upload_concurrency: int = 4,
        max_failed_records: int = 0,
        retry_failed_records: int = 0,
        retryable_error_codes: Collection[str] = DEFAULT_RETRYABLE_ERROR_CODES,
        lock_retry: bool = False,
        limits_check: str = "fail",
        allow_hard_delete: bool = False,
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
        self.max_records_per_job = max_records_per_job
        self.multipart_max_bytes = multipart_max_bytes
        self.job_concurrency = job_concurrency
        self.upload_concurrency = upload_concurrency
        self.max_failed_records = max_failed_records
        self.retry_failed_records = retry_failed_records
        self.retryable_error_codes = sorted(set(retryable_error_codes))
        self.lock_retry = lock_retry
        self.limits_check = limits_check
        self.allow_hard_delete = allow_hard_delete
        for name in ("job_concurrency", "upload_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_failed_records", "retry_failed_records", "multipart_max_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if limits_check not in ("fail", "warn", "off"):
            raise ValueError("limits_check must be 'fail', 'warn' or 'off'")
        self._lock = threading.RLock()
        self._split_lock = threading.Lock()
        self._local = threading.local()
        self._spool_dir: str | None = None
        self._context: Any = None
        self._parts: dict[tuple[int, int], CsvPart] = {}

    # --- parameters -----------------------------------------------------------------------------------

    def _check_parameters(self) -> None:
        """Checks of the rendered parameters, before anything is read or created."""
        try:
            operation = IngestOperation(self.operation)
        except ValueError:
            allowed = ", ".join(op.value for op in IngestOperation)
            raise AirflowFailException(
                f"operation must be one of {allowed}, not {self.operation!r}"
            ) from None
        self.operation = operation.value
        if operation is IngestOperation.HARD_DELETE and not self.allow_hard_delete:
            raise AirflowFailException(
                "hardDelete bypasses the Recycle Bin (deleted rows cannot be restored); pass "
                "allow_hard_delete=True to run it"
            )
        if operation is IngestOperation.UPSERT and not self.external_id_field:
            raise AirflowFailException("upsert needs external_id_field")
        if not self.object_name:
            raise AirflowFailException("object_name is required")
        try:
            self.column_delimiter = resolve_delimiter(self.column_delimiter)[0]
            self.line_ending = resolve_line_ending(self.line_ending)
        except ValueError as err:
            raise AirflowFailException(str(err)) from err

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "object": self.object_name,
            "operation": self.operation,
            "source": str(to_storage_path(self.source)),
            "external_id_field": self.external_id_field,
            "column_delimiter": self.column_delimiter,
            "line_ending": self.line_ending,
            "max_bytes_per_job": self.max_bytes_per_job,
            "max_records_per_job": self.max_records_per_job,
        }

    # --- entry points -----------------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        self._context = context
        self._check_parameters()
        checkpoint = self.checkpoint(context)
        state = checkpoint.get(STATE_KEY)
        if state is None:
            state = self._start(context, checkpoint)
        else:
            if state.get("fingerprint") != self._fingerprint():
                raise AirflowFailException(
                    "this task instance already started a load with other parameters; refusing to load "
                    f"again. Delete the checkpoint ({checkpoint.location}) to start over."
                )
            self.log.info("Resuming the load recorded in the checkpoint (%s)", checkpoint.backend)
        try:
            return self._advance(context, checkpoint, state)
        finally:
            self._cleanup_spool()

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: apply the outcome and carry on (may defer again)."""
        self._context = context
        self._check_parameters()
        outcome = self.outcome_from_event(event)
        checkpoint = self.checkpoint(context)
        state = checkpoint.get(STATE_KEY)
        if state is None:
            raise AirflowException("the checkpoint of this load is missing; cannot resume")
        self._apply_outcome(checkpoint, state, outcome)
        try:
            return self._advance(context, checkpoint, state)
        finally:
            self._cleanup_spool()

    # --- start: validate, split, preflight ---------------------------------------------------------------

    def _start(self, context: Any, checkpoint: TaskCheckpoint) -> dict[str, Any]:
        source = to_storage_path(self.source)
        split = self._split(source, 0)
        if not split:
            raise AirflowFailException(f"{source}: no records to load")
        self._preflight(split)
        state: dict[str, Any] = {
            "version": 1,
            "fingerprint": self._fingerprint(),
            "started_at": time.time(),
            "records_sent": sum(part.record_count for part in split),
            "rounds": [self._new_round(0, str(source), split, self.job_concurrency, ())],
        }
        self._save(checkpoint, state)
        self.log.info(
            "Validated %s: %d record(s) in %d part(s); checkpoint: %s",
            source,
            state["records_sent"],
            len(split),
            checkpoint.backend,
        )
        return state

    def _new_round(
        self, number: int, source: str, parts: list[CsvPart], concurrency: int, codes: Collection[str]
    ) -> dict[str, Any]:
        return {
            "number": number,
            "source": source,
            "concurrency": concurrency,
            "retried_codes": sorted(codes),
            "records": sum(part.record_count for part in parts),
            "collected": False,
            "parts": [
                {
                    "index": part.index,
                    "bytes": part.byte_count,
                    "records": part.record_count,
                    "first_record": part.first_record_number,
                    "sha256": part.sha256,
                    "phase": NEW,
                    "job_id": None,
                    "abandoned_job_ids": [],
                    "states": [],
                }
                for part in parts
            ],
        }

    def _split(self, source: Any, round_number: int) -> list[CsvPart]:
        """Validate and split ``source`` into spooled parts (remembered for this round)."""
        required, allowed = required_columns_for(self.operation, self.external_id_field)
        if self._spool_dir is None:
            self._spool_dir = tempfile.mkdtemp(prefix="sfbulk-ingest-")
        path = to_storage_path(source)
        try:
            with path.open("rb") as stream:
                result = split_csv(
                    stream,
                    self.max_bytes_per_job,
                    max_records=self.max_records_per_job,
                    column_delimiter=self.column_delimiter,
                    line_ending=self.line_ending,
                    required_columns=required,
                    allowed_columns=allowed,
                    spool_dir=self._spool_dir,
                    source_name=str(path),
                )
        except FileNotFoundError as err:
            raise AirflowFailException(f"the source file does not exist: {path}") from err
        except CsvValidationError as err:
            raise AirflowFailException(f"the CSV cannot be loaded: {err}") from err
        for part in result.parts:
            self._parts[(round_number, part.index)] = part
        return result.parts

    def _preflight(self, parts: list[CsvPart]) -> None:
        if self.limits_check == "off":
            return
        needed = sum(math.ceil(part.record_count / RECORDS_PER_BATCH) for part in parts)
        remaining = self.hook.get_limits().remaining("DailyBulkApiBatches")
        if remaining is None or needed <= remaining:
            self.log.info("Preflight: %d batch(es) needed, %s left today", needed, remaining)
            return
        message = (
            f"the load needs about {needed} Bulk API batch(es) of {RECORDS_PER_BATCH} rows but the org has "
            f"{remaining} of its DailyBulkApiBatches left"
        )
        if self.limits_check == "fail":
            raise AirflowFailException(message + " (limits_check='warn' only warns)")
        self.log.warning("Preflight: %s; loading anyway (limits_check='warn')", message)

    def _part_file(self, round_: dict[str, Any], part: dict[str, Any]) -> CsvPart:
        """The spooled data of a part, split again from the round's source when this process lacks it."""
        key = (round_["number"], part["index"])
        with self._split_lock:  # upload threads may all find their part missing after a restart
            return self._part_file_locked(round_, part, key)

    def _part_file_locked(self, round_: dict[str, Any], part: dict[str, Any], key: tuple[int, int]) -> CsvPart:
        spooled = self._parts.get(key)
        if spooled is None or not spooled.path.exists():
            self.log.info("Splitting %s again to upload part %d", round_["source"], part["index"])
            source = self.source if round_["number"] == 0 else self._stored(self._context, round_["source"])
            for found in self._split(source, round_["number"]):
                stored = round_["parts"][found.index] if found.index < len(round_["parts"]) else None
                if stored is None or stored["sha256"] != found.sha256:
                    raise AirflowFailException(
                        f"{round_['source']} changed since the load started (part {found.index} differs); "
                        "refusing to load it"
                    )
            spooled = self._parts[key]
        return spooled

    def _cleanup_spool(self) -> None:
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None
            self._parts.clear()

    # --- the state machine --------------------------------------------------------------------------------

    def _save(self, checkpoint: TaskCheckpoint, state: dict[str, Any]) -> None:
        with self._lock:
            checkpoint.set(STATE_KEY, state)

    def _update(
        self, checkpoint: TaskCheckpoint, doc: dict[str, Any], part: dict[str, Any], **changes: Any
    ) -> None:
        with self._lock:
            part.update(changes)
            checkpoint.set(STATE_KEY, doc)

    def _record(self, part: dict[str, Any], job_id: str, job_state: str, **extra: Any) -> None:
        """Append a state transition to the part's audit trail (thread-safe)."""
        with self._lock:
            part["states"].append({"job_id": job_id, "state": job_state, "at": _now_iso(), **extra})

    def _advance(self, context: Any, checkpoint: TaskCheckpoint, state: dict[str, Any]) -> dict[str, Any]:
        while True:
            round_ = state["rounds"][-1]
            if not round_["collected"]:
                self._submit(context, checkpoint, state, round_)
                running = [p for p in round_["parts"] if p["phase"] == CLOSED and not _terminal(p)]
                waiting = [p for p in round_["parts"] if p["phase"] == UPLOADED]
                if waiting and any(p.get("state") in _BROKEN for p in round_["parts"]):
                    # The task fails anyway: start no more jobs. An Open job has processed nothing, so
                    # aborting it loses nothing; its rows come back as unprocessed records.
                    for part in waiting:
                        self._abort_unstarted(checkpoint, state, part)
                    continue
                for part in waiting:
                    if len(running) >= round_["concurrency"]:
                        break
                    self._close(checkpoint, state, part)
                    if not _terminal(part):
                        running.append(part)
                if running:
                    self._persist_link(context, state)  # every try and resume pushes it again
                    ids = [p["job_id"] for p in running]
                    outcome = self.wait_for_jobs(
                        context,
                        ids,
                        JobKind.INGEST.value,
                        method_name="execute_complete",
                        checkpoint=checkpoint,
                        on_change=self._state_seen(running),
                    )
                    self._apply_outcome(checkpoint, state, outcome)
                    continue
                self._collect(context, checkpoint, state, round_)
                if self._plan_retry(context, checkpoint, state, round_):
                    continue
            return self._finish(context, checkpoint, state)

    def _state_seen(self, parts: list[dict[str, Any]]) -> Callable[[JobInfo, JobState | None], None]:
        """Record (and log, one line with the job id) each state change seen while polling."""
        by_id = {part["job_id"]: part for part in parts}

        def seen(job: JobInfo, previous: JobState | None) -> None:
            self.log.info(
                "Job %s: %s -> %s (processed=%s failed=%s)%s",
                job.id,
                previous.value if previous else "-",
                job.state.value,
                job.number_records_processed,
                job.number_records_failed,
                f" errorMessage={job.error_message!r}" if job.error_message else "",
            )
            part = by_id.get(job.id)
            if part is not None and (not part["states"] or part["states"][-1]["state"] != job.state.value):
                self._record(part, job.id, job.state.value)

        return seen

    def _hook(self) -> SalesforceBulkHook:
        """One hook per thread (a ``requests.Session`` is not shared between threads)."""
        if threading.current_thread() is threading.main_thread():
            return self.hook
        hook = getattr(self._local, "hook", None)
        if hook is None:
            hook = SalesforceBulkHook(salesforce_conn_id=self.salesforce_conn_id)
            self._local.hook = hook
        return hook

    def _submit(
        self, context: Any, checkpoint: TaskCheckpoint, state: dict[str, Any], round_: dict[str, Any]
    ) -> None:
        """Make sure every part of the round has a job holding its data."""
        todo = [p for p in round_["parts"] if p["phase"] in (NEW, CREATING, CREATED, UPLOADING)]
        if not todo:
            return
        multipart = (
            len(round_["parts"]) == 1
            and round_["parts"][0]["bytes"] <= min(self.multipart_max_bytes, MULTIPART_MAX_BYTES)
            and round_["parts"][0].get("mode") in (None, "multipart")
        )
        if len(todo) == 1 or self.upload_concurrency == 1:
            for part in todo:
                self._submit_part(checkpoint, state, round_, part, multipart)
        else:
            with ThreadPoolExecutor(
                max_workers=self.upload_concurrency, thread_name_prefix="sfbulk-upload"
            ) as pool:
                futures = [
                    pool.submit(self._submit_part, checkpoint, state, round_, part, False) for part in todo
                ]
                errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]  # type: ignore[misc]

    def _submit_part(
        self,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        round_: dict[str, Any],
        part: dict[str, Any],
        multipart: bool,
    ) -> None:
        hook = self._hook()
        for _attempt in range(3):
            phase = part["phase"]
            if phase == CREATING:
                self._recover_creating(hook, checkpoint, state, part)
            elif phase == UPLOADING:
                self._recover_uploading(hook, checkpoint, state, part)
            elif phase == CREATED:
                job = hook.get_job(part["job_id"], JobKind.INGEST)
                if job.state is JobState.OPEN:
                    self._upload(hook, checkpoint, state, round_, part)
                else:
                    self._abandon(checkpoint, state, part, f"found {job.state.value} before its upload")
            elif phase == NEW:
                if multipart:
                    self._create_multipart(hook, checkpoint, state, round_, part)
                else:
                    self._create(hook, checkpoint, state, round_, part)
            if part["phase"] in (UPLOADED, CLOSED):
                return
        raise AirflowException(f"part {part['index']}: could not get its data into a job after 3 attempts")

    def _job_args(self) -> dict[str, Any]:
        return {
            "external_id_field": self.external_id_field,
            "column_delimiter": self.column_delimiter,
            "line_ending": self.line_ending,
            "assignment_rule_id": self.assignment_rule_id,
        }

    def _note_job(self, part: dict[str, Any], job: JobInfo, state: str | None = None) -> None:
        self._record(part, job.id, state or job.state.value)
        with self._lock:
            if job.id not in self._active_job_ids:
                self._active_job_ids.append(job.id)

    def _create(
        self,
        hook: SalesforceBulkHook,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        round_: dict[str, Any],
        part: dict[str, Any],
    ) -> None:
        data = self._part_file(round_, part)
        self._update(checkpoint, state, part, phase=CREATING, mode="classic", sent_at=time.time())
        try:
            job = hook.create_ingest_job(self.object_name, self.operation, **self._job_args())
        except SalesforceBulkOutcomeUnknownError as err:
            # At most an empty Open job was left behind: Salesforce never processes it.
            self.log.warning(
                "Part %d: job creation outcome unknown (%s); creating another", part["index"], err
            )
            self._update(checkpoint, state, part, phase=NEW)
            return
        self._note_job(part, job)
        self._update(checkpoint, state, part, phase=CREATED, job_id=job.id)
        self.log.info("Part %d: job %s created (%s)", part["index"], job.id, job.state.value)
        self._upload(hook, checkpoint, state, round_, part, data)

    def _upload(
        self,
        hook: SalesforceBulkHook,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        round_: dict[str, Any],
        part: dict[str, Any],
        data: CsvPart | None = None,
    ) -> None:
        data = data or self._part_file(round_, part)
        job_id = part["job_id"]
        self._update(checkpoint, state, part, phase=UPLOADING)
        try:
            with open(data.path, "rb") as stream:
                hook.upload_job_data(job_id, stream)
        except SalesforceBulkOutcomeUnknownError as err:
            self.log.warning("Part %d: upload to job %s may be incomplete (%s)", part["index"], job_id, err)
            self._recover_uploading(hook, checkpoint, state, part)
            return
        self._record(part, job_id, "Uploaded")
        self._update(checkpoint, state, part, phase=UPLOADED)
        data.path.unlink(missing_ok=True)
        self.log.info(
            "Part %d: %d record(s), %d bytes uploaded to job %s",
            part["index"],
            part["records"],
            part["bytes"],
            job_id,
        )

    def _create_multipart(
        self,
        hook: SalesforceBulkHook,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        round_: dict[str, Any],
        part: dict[str, Any],
    ) -> None:
        data = self._part_file(round_, part)
        self._update(checkpoint, state, part, phase=CREATING, mode="multipart", sent_at=time.time())
        try:
            job = hook.create_ingest_job_with_data(
                self.object_name, self.operation, data.read_bytes(), **self._job_args()
            )
        except SalesforceBulkOutcomeUnknownError as err:
            self.log.warning("Part %d: multipart create outcome unknown (%s)", part["index"], err)
            self._recover_creating(hook, checkpoint, state, part)
            return
        self._note_job(part, job)
        self._update(checkpoint, state, part, phase=CLOSED, job_id=job.id, state=job.state.value)
        data.path.unlink(missing_ok=True)
        self.log.info(
            "Part %d: job %s created with its data in one request (%s)",
            part["index"],
            job.id,
            job.state.value,
        )

    def _recover_creating(
        self,
        hook: SalesforceBulkHook,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        part: dict[str, Any],
    ) -> None:
        if part.get("mode") != "multipart":
            # A lost JSON create leaves at most an empty Open job, which Salesforce never processes.
            self._update(checkpoint, state, part, phase=NEW)
            return
        job = self._find_lost_job(hook, state, part)
        if job is None:
            self.log.info("Part %d: the multipart job was never created; sending it again", part["index"])
            self._update(checkpoint, state, part, phase=NEW)
            return
        self.log.info("Part %d: found the job %s of the lost multipart request", part["index"], job.id)
        self._note_job(part, job, "Adopted")
        self._update(checkpoint, state, part, phase=CLOSED, job_id=job.id, state=job.state.value)

    def _find_lost_job(
        self, hook: SalesforceBulkHook, state: dict[str, Any], part: dict[str, Any]
    ) -> JobInfo | None:
        """The job a lost multipart create made: this user's, same object and operation, created since."""
        user_id = hook.get_user_id()
        since = datetime.fromtimestamp(part["sent_at"], timezone.utc) - LOST_JOB_SKEW
        known = {
            job_id
            for r in state["rounds"]
            for p in r["parts"]
            for job_id in [p.get("job_id"), *p.get("abandoned_job_ids", [])]
            if job_id
        }
        candidates = []
        for job in hook.list_jobs(JobKind.INGEST, job_type="V2Ingest"):
            created = job.created_at
            if (
                job.id not in known
                and job.object == self.object_name
                and job.operation == self.operation
                and (user_id is None or job.created_by_id is None or job.created_by_id[:15] == user_id[:15])
                and created is not None
                and created >= since
            ):
                candidates.append(job)
        if len(candidates) > 1:
            ids = ", ".join(job.id for job in candidates)
            raise AirflowFailException(
                f"part {part['index']}: the answer to a multipart job creation was lost and {len(candidates)} "
                f"jobs could be it ({ids}); not guessing. Check them in Setup, then clear this task's checkpoint."
            )
        if not candidates:
            return None
        return hook.get_job(candidates[0].id, JobKind.INGEST)

    def _recover_uploading(
        self,
        hook: SalesforceBulkHook,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        part: dict[str, Any],
    ) -> None:
        job = hook.get_job(part["job_id"], JobKind.INGEST)
        if job.state is JobState.OPEN:
            # The upload may or may not have reached Salesforce, and a job takes one upload only: abort it
            # (an Open job has processed nothing) and load the part into a new job.
            self._abandon(checkpoint, state, part, "upload outcome unknown", hook=hook)
        else:
            self._update(checkpoint, state, part, phase=CLOSED, state=job.state.value)

    def _abandon(
        self,
        checkpoint: TaskCheckpoint,
        state: dict[str, Any],
        part: dict[str, Any],
        why: str,
        hook: SalesforceBulkHook | None = None,
    ) -> None:
        job_id = part["job_id"]
        if hook is not None:
            try:
                hook.abort_job(job_id, JobKind.INGEST)
            except SalesforceBulkError as err:
                self.log.warning("Job %s could not be aborted: %s", job_id, err)
        self.log.warning(
            "Part %d: job %s abandoned (%s); a new job will carry the part", part["index"], job_id, why
        )
        with self._lock:
            part["abandoned_job_ids"].append(job_id)
        self._record(part, job_id, "Abandoned")
        with self._lock:
            if job_id in self._active_job_ids:
                self._active_job_ids.remove(job_id)
        self._update(checkpoint, state, part, phase=NEW, job_id=None)

    def _abort_unstarted(
        self, checkpoint: TaskCheckpoint, state: dict[str, Any], part: dict[str, Any]
    ) -> None:
        job_id = part["job_id"]
        try:
            job = self.hook.abort_job(job_id, JobKind.INGEST)
        except SalesforceBulkInvalidStateError:
            job = self.hook.get_job(job_id, JobKind.INGEST)
        self.log.warning(
            "Job %s not started because another job of this load failed: %s", job_id, job.state.value
        )
        self._record(part, job_id, job.state.value)
        self._update(checkpoint, state, part, phase=CLOSED, state=job.state.value)

    def _close(self, checkpoint: TaskCheckpoint, state: dict[str, Any], part: dict[str, Any]) -> None:
        job_id = part["job_id"]
        try:
            job = self.hook.close_job(job_id)
        except SalesforceBulkInvalidStateError:
            job = self.hook.get_job(job_id, JobKind.INGEST)
            if job.state is JobState.OPEN:
                raise
        self._record(part, job_id, "UploadComplete")
        self._update(checkpoint, state, part, phase=CLOSED, state=job.state.value)
        self.log.info("Job %s: UploadComplete sent (%s)", job_id, job.state.value)

    def _apply_outcome(self, checkpoint: TaskCheckpoint, state: dict[str, Any], outcome: WaitOutcome) -> None:
        by_id = {job.id: job for job in outcome.jobs}
        for round_ in state["rounds"]:
            for part in round_["parts"]:
                summary = by_id.get(part.get("job_id") or "")
                if summary is not None and summary.state != part.get("state"):
                    part["state"] = summary.state
                    if part["states"] and part["states"][-1]["state"] == summary.state:
                        continue  # already recorded (and logged) while polling
                    self._record(part, summary.id, summary.state)
                    self.log.info(
                        "Job %s: %s (processed=%s failed=%s)%s",
                        summary.id,
                        summary.state,
                        summary.number_records_processed,
                        summary.number_records_failed,
                        f" errorMessage={summary.error_message!r}" if summary.error_message else "",
                    )
        self._save(checkpoint, state)
        if outcome.status == "timeout":
            for job in outcome.jobs:
                if not JobState(job.state).is_terminal:
                    try:
                        self.hook.abort_job(job.id, JobKind.INGEST)
                    except SalesforceBulkError as err:
                        self.log.warning("Job %s could not be aborted: %s", job.id, err)
            raise AirflowException(
                f"timeout ({self.timeout}s) reached: {outcome.message}; the unfinished jobs were aborted. A retry "
                "collects their results."
            )

    # --- results -----------------------------------------------------------------------------------------

    def _results_folder(self, context: Any) -> Any:
        if self.results_path:
            return to_storage_path(self.results_path)
        return task_results_path(context)

    def _stored(self, context: Any, uri: str) -> Any:
        """A result or retry file by URI, with the object-store connection of the results folder."""
        return to_storage_path(uri, conn_id=storage_conn_id(self._results_folder(context)))

    def _collect(
        self, context: Any, checkpoint: TaskCheckpoint, state: dict[str, Any], round_: dict[str, Any]
    ) -> None:
        """Stream every job's three result sets to the results folder (``upload_concurrency`` at once)."""
        folder = self._results_folder(context)
        pending = [part for part in round_["parts"] if part.get("results") is None]
        if len(pending) > 1 and self.upload_concurrency > 1:
            with ThreadPoolExecutor(
                max_workers=min(self.upload_concurrency, len(pending)), thread_name_prefix="sfbulk-results"
            ) as pool:
                futures = [pool.submit(self._collect_part, checkpoint, state, part, folder) for part in pending]
                errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]  # type: ignore[misc]
        else:
            for part in pending:
                self._collect_part(checkpoint, state, part, folder)
        round_["collected"] = True
        self._save(checkpoint, state)

    def _collect_part(
        self, checkpoint: TaskCheckpoint, state: dict[str, Any], part: dict[str, Any], folder: Any
    ) -> None:
        results: JobResults = download_job_results(self._hook(), part["job_id"], folder)
        summary = results.to_dict()
        summary["records_sent"] = part["records"]
        summary["reconciled"] = results.total == part["records"]
        if not summary["reconciled"]:
            self.log.error(
                "Job %s does not reconcile: %d successful + %d failed + %d unprocessed != %d sent",
                results.job_id,
                results.successful,
                results.failed,
                results.unprocessed,
                part["records"],
            )
        self._record(
            part, results.job_id, "ResultsCollected", system_modstamp=results.job.system_modstamp
        )
        self.log.info(
            "Job %s %s: sent=%d successful=%d failed=%d unprocessed=%d",
            results.job_id,
            results.job.state.value,
            part["records"],
            results.successful,
            results.failed,
            results.unprocessed,
        )
        self._update(checkpoint, state, part, results=summary, state=results.job.state.value)

    def _retry_codes(self, round_number: int) -> set[str]:
        codes: set[str] = set()
        if round_number < self.retry_failed_records:
            codes.update(self.retryable_error_codes)
        if self.lock_retry and round_number < max(1, self.retry_failed_records):
            codes.add(_LOCK_CODE)
        return codes

    def _plan_retry(
        self, context: Any, checkpoint: TaskCheckpoint, state: dict[str, Any], round_: dict[str, Any]
    ) -> bool:
        """After a round: start a round of the retryable failed rows, if the policy says so."""
        if "retry" in round_:
            return False
        codes = self._retry_codes(round_["number"])
        broken = [p for p in round_["parts"] if p["results"]["state"] != JobState.JOB_COMPLETE.value]
        failed_files = [
            p["results"]["files"]["failedResults"]["uri"]
            for p in round_["parts"]
            if p["results"]["records_failed"]
        ]
        if not codes or broken or not failed_files:
            round_["retry"] = {"codes": sorted(codes), "rows": 0}
            self._save(checkpoint, state)
            return False
        folder = self._results_folder(context) / "retries"
        folder.mkdir(parents=True, exist_ok=True)
        retry_file = folder / f"round-{round_['number'] + 1}.csv"
        with retry_file.open("wb") as out:
            split = write_failed_rows(
                [(self._stored(context, uri), codes) for uri in failed_files],
                kept_out=None,
                retry_out=out,
                delimiter=self.column_delimiter,
                line_ending=self.line_ending,
            )
        round_["retry"] = {
            "codes": sorted(codes),
            "rows": split.retried,
            "file": str(retry_file),
            "by_code": dict(split.retried_codes),
        }
        if not split.retried:
            self._save(checkpoint, state)
            return False
        serial = self.lock_retry and _LOCK_CODE in split.retried_codes
        concurrency = 1 if serial else self.job_concurrency
        self.log.info(
            "Retrying %d failed row(s) (%s) in round %d%s",
            split.retried,
            ", ".join(f"{code}={n}" for code, n in split.retried_codes.items()),
            round_["number"] + 1,
            ", one job at a time" if serial else "",
        )
        parts = self._split(retry_file, round_["number"] + 1)
        state["rounds"].append(
            self._new_round(round_["number"] + 1, str(retry_file), parts, concurrency, codes)
        )
        self._save(checkpoint, state)
        return True

    def _finish(self, context: Any, checkpoint: TaskCheckpoint, state: dict[str, Any]) -> dict[str, Any]:
        folder = self._results_folder(context)
        rounds = state["rounds"]
        parts = [p for r in rounds for p in r["parts"]]
        job_ids = [p["job_id"] for p in parts]
        successful = sum(p["results"]["records_successful"] for p in parts)
        unprocessed = sum(p["results"]["records_unprocessed"] for p in parts)

        def files(result_set: str) -> list[str]:
            return [
                p["results"]["files"][result_set]["uri"]
                for p in parts
                if p["results"]["files"][result_set]["records"]
            ]

        failed_files = files("failedResults")
        if len(rounds) > 1 and failed_files:
            merged = folder / "failedResults-final.csv"
            folder.mkdir(parents=True, exist_ok=True)
            sources: list[tuple[Any, list[str]]] = []
            for r in rounds:
                codes = r.get("retry", {}).get("codes", []) if r.get("retry", {}).get("rows") else []
                sources.extend(
                    (self._stored(context, p["results"]["files"]["failedResults"]["uri"]), codes)
                    for p in r["parts"]
                    if p["results"]["records_failed"]
                )
            with merged.open("wb") as out:
                split = write_failed_rows(
                    sources,
                    kept_out=out,
                    retry_out=None,
                    delimiter=self.column_delimiter,
                    line_ending=self.line_ending,
                )
            failed = split.kept
            final_failed = [str(merged)] if failed else []
        else:
            failed = sum(p["results"]["records_failed"] for p in parts)
            final_failed = failed_files
        sent = state["records_sent"]
        reconciled = successful + failed + unprocessed == sent and all(
            p["results"]["reconciled"] for p in parts
        )
        broken = [p["results"] for p in parts if p["results"]["state"] != JobState.JOB_COMPLETE.value]
        manifest = {
            "object": self.object_name,
            "operation": self.operation,
            "source": state["fingerprint"]["source"],
            "started_at": datetime.fromtimestamp(state["started_at"], timezone.utc).isoformat(),
            "finished_at": _now_iso(),
            "checkpoint": checkpoint.backend,
            "records_sent": sent,
            "records_successful": successful,
            "records_failed": failed,
            "records_unprocessed": unprocessed,
            "reconciled": reconciled,
            "rounds": rounds,
        }
        result = {
            "job_ids": job_ids,
            "object": self.object_name,
            "operation": self.operation,
            "records_sent": sent,
            "records_successful": successful,
            "records_failed": failed,
            "records_unprocessed": unprocessed,
            "successful_results": files("successfulResults"),
            "failed_results": final_failed,
            "unprocessed_records": files("unprocessedrecords"),
            "retry_rounds": len(rounds) - 1,
            "manifest": write_manifest(folder, manifest),
            "results_path": str(folder),
        }
        self.log.info(
            "Load of %s into %s (%s) finished: sent=%d successful=%d failed=%d unprocessed=%d jobs=%d; manifest %s",
            state["fingerprint"]["source"],
            self.object_name,
            self.operation,
            sent,
            successful,
            failed,
            unprocessed,
            len(job_ids),
            result["manifest"],
        )
        if not state.get("stats_sent"):
            self._stats(state, result)
            state["stats_sent"] = True
            self._save(checkpoint, state)
        problem = None
        if broken:
            details = "; ".join(
                f"{b['id']} {b['state']}: {b['error_message'] or 'no errorMessage'}" for b in broken
            )
            problem = f"{len(broken)} job(s) did not complete: {details}"
        elif not reconciled:
            problem = (
                f"the results do not reconcile: {successful} successful + {failed} failed + {unprocessed} "
                f"unprocessed != {sent} sent"
            )
        elif failed > self.max_failed_records:
            problem = (
                f"{failed} row(s) failed (max_failed_records={self.max_failed_records}); "
                f"see {', '.join(final_failed)}"
            )
        self._active_job_ids = []
        self._persist_link(context, state)
        if problem is not None:
            try:
                context["ti"].xcom_push(key="return_value", value=result)
            except Exception as err:  # the failure itself matters more than its XCom
                self.log.warning("Could not push the result XCom: %s", err)
            raise AirflowFailException(problem)
        checkpoint.delete(STATE_KEY)
        checkpoint.delete(DEADLINE_KEY)
        return result

    def _persist_link(self, context: Any, state: dict[str, Any]) -> None:
        job_ids = [p["job_id"] for r in state["rounds"] for p in r["parts"] if p.get("job_id")]
        if not job_ids:
            return
        try:
            SalesforceBulkJobLink.persist(context, instance_url=self.hook.instance_url, job_ids=job_ids)
        except Exception as err:  # the link is a convenience
            self.log.debug("Could not store the job link: %s", err)

    def _stats(self, state: dict[str, Any], result: dict[str, Any]) -> None:
        tags = {"object": self.object_name, "operation": self.operation}
        try:
            for name in ("records_sent", "records_successful", "records_failed", "records_unprocessed"):
                Stats.incr(f"sfbulk.ingest.{name}", result[name], tags=tags)
            Stats.incr("sfbulk.ingest.jobs", len(result["job_ids"]), tags=tags)
            Stats.timing(
                "sfbulk.ingest.duration", timedelta(seconds=time.time() - state["started_at"]), tags=tags
            )
        except Exception as err:  # metrics never fail a load
            self.log.debug("Could not send metrics: %s", err)


def _terminal(part: dict[str, Any]) -> bool:
    value = part.get("state")
    return value is not None and JobState(value).is_terminal
