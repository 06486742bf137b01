"""Background processing of jobs: a small thread pool that drives RECORDS (ingest) and SOQL (query).

After ``UploadComplete`` the server hands the job id to :class:`JobWorker`. A worker thread moves the job to
``InProgress``, runs :func:`records.process_ingest` or :func:`query_results.write_query_results` with its own
SQLite connection, publishes progress (``numberRecordsProcessed``/``numberRecordsFailed`` and the
``DailyBulkApiBatches`` counter) after every internal batch, and stores the final state.

Restart policy (:meth:`JobWorker.recover`): jobs still ``UploadComplete`` are queued again; query jobs
caught ``InProgress`` are run again from the start (they only read); ingest jobs caught ``InProgress`` are
marked ``Failed`` with an ``errorMessage`` saying so, because rows of their committed batches stay
committed and running them again would apply those rows twice; their result files and counters are made
to match the finished batches (:func:`records.recover_interrupted_ingest`), after a crash too.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.schema import Schema
from airflow_provider_sfbulk.emulator.settings import RuntimeSettings
from airflow_provider_sfbulk.emulator.store import JobRecord, Store
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, RESULT_SETS, JobState

log = logging.getLogger(__name__)

UPLOAD_FILE = "upload.csv"
QUERY_DIR = "query"
RESTART_MESSAGE = (
    "InternalServerError : the emulator stopped while this job was in progress; rows of batches that "
    "finished stay committed, the rest were not processed"
)


@dataclass
class IngestFaultSettings:
    """Mutable row-level fault settings handed to RECORDS for every new ingest job."""

    lock_row_rate: float = 0.0
    failing_batch: int | None = None
    seed: int = 0
    #: Successful rows left out of ``successfulResults`` of each ingest job that starts.
    drop_result_rows: int = 0
    #: How many more jobs ``drop_result_rows`` hits; None = every job.
    drop_result_jobs: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take_drop_result_rows(self) -> int:
        """The rows to drop from the job starting now (and count that job against ``drop_result_jobs``)."""
        with self._lock:
            if self.drop_result_rows <= 0 or self.drop_result_jobs == 0:
                return 0
            if self.drop_result_jobs is not None:
                self.drop_result_jobs -= 1
            return self.drop_result_rows


class JobWorker:
    """Runs jobs in background threads; thread-safe."""

    def __init__(self, config: EmulatorConfig, store: Store, schema: Schema,
                 ingest_faults: Callable[[], IngestFaultSettings],
                 settings: RuntimeSettings | None = None) -> None:
        self.config = config
        self.settings = settings or RuntimeSettings(config.result_pages_shape, config.query_timeout_records,
                                                    config.query_timeout_style)
        self.store = store
        self.schema = schema
        self._ingest_faults = ingest_faults
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="sfbulk-emulator-job")
        self._stopping = threading.Event()
        self._aborts: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._files_lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------
    def submit(self, job_id: str) -> None:
        """Queue a job that is ``UploadComplete``."""
        with self._lock:
            if self._stopping.is_set() or job_id in self._futures:
                return
            self._aborts[job_id] = threading.Event()
            self._futures[job_id] = self._pool.submit(self._run, job_id)

    def request_abort(self, job_id: str) -> None:
        """Tell a running job to stop between batches (the job row is already ``Aborted``)."""
        with self._lock:
            event = self._aborts.get(job_id)
        if event is not None:
            event.set()

    def _busy(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._futures.values())

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no job is running or queued (tests); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._busy():
                return True
            time.sleep(0.01)
        return not self._busy()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, make running ones stop between batches, wait for the threads."""
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        with self._lock:
            futures = list(self._futures.values())
        for future in futures:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                future.result(timeout=remaining)
            except Exception:
                pass

    def recover(self) -> None:
        """Apply the restart policy described in the module docstring."""
        for job in self.store.jobs_in_states([JobState.UPLOAD_COMPLETE, JobState.IN_PROGRESS]):
            if job.state == JobState.IN_PROGRESS.value and job.kind == "ingest":
                counts = self._recover_results(job)
                self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS], state=JobState.FAILED,
                                      error_message=RESTART_MESSAGE, **counts)
                self.ensure_result_files(job)
                continue
            if job.state == JobState.IN_PROGRESS.value:
                self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS],
                                      state=JobState.UPLOAD_COMPLETE, touch=False)
            self.submit(job.id)

    def _recover_results(self, job: JobRecord) -> dict[str, Any]:
        """The result files of an ingest job the stop interrupted, and the counters that match them."""
        from airflow_provider_sfbulk.emulator import records

        upload = self.store.job_dir(job.id) / UPLOAD_FILE
        if not upload.exists():
            return {}
        spec = records.IngestSpec(job_id=job.id, object_name=job.object, operation=job.operation,
                                  external_id_field=job.external_id_field,
                                  column_delimiter=job.column_delimiter, line_ending=job.line_ending,
                                  assignment_rule_id=job.assignment_rule_id, user_id=job.created_by)
        processed, failed, unprocessed = records.recover_interrupted_ingest(
            spec, upload, self.store.job_dir(job.id))
        return {"records_processed": processed, "records_failed": failed, "records_unprocessed": unprocessed}

    # -- thread body -------------------------------------------------------------------------------
    def _run(self, job_id: str) -> None:
        try:
            job = self.store.update_job(job_id, only_if_state=[JobState.UPLOAD_COMPLETE],
                                        state=JobState.IN_PROGRESS)
            if job is None:  # aborted or deleted before a thread picked it up
                current = self.store.get_job(job_id)
                if (current is not None and current.kind == "ingest"
                        and current.state == JobState.ABORTED.value):
                    self.ensure_result_files(current, all_unprocessed=True)
                return
            if job.kind == "ingest":
                self._run_ingest(job)
            else:
                self._run_query(job)
        except Exception as err:
            log.exception("emulator job %s crashed", job_id)
            if not self._stopping.is_set():
                self.store.update_job(job_id, only_if_state=[JobState.IN_PROGRESS], state=JobState.FAILED,
                                      error_message=f"InternalServerError : {type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._aborts.pop(job_id, None)
                self._futures.pop(job_id, None)

    def _should_stop(self, job_id: str) -> Callable[[], bool]:
        with self._lock:
            event = self._aborts.get(job_id) or threading.Event()
        return lambda: event.is_set() or self._stopping.is_set()

    def _run_ingest(self, job: JobRecord) -> None:
        from airflow_provider_sfbulk.emulator import records

        faults = self._ingest_faults()
        spec = records.IngestSpec(
            job_id=job.id, object_name=job.object, operation=job.operation,
            external_id_field=job.external_id_field, column_delimiter=job.column_delimiter,
            line_ending=job.line_ending, assignment_rule_id=job.assignment_rule_id, user_id=job.created_by,
        )
        job_dir = self.store.job_dir(job.id)

        started = time.monotonic()

        def on_progress(processed: int, failed: int) -> None:
            self.store.increment("DailyBulkApiBatches")
            so_far = int((time.monotonic() - started) * 1000)
            self.store.update_job(job.id, touch=False, records_processed=processed, records_failed=failed,
                                  total_processing_time=so_far, api_active_processing_time=so_far)

        conn = self.store.open_connection()
        try:
            outcome = records.process_ingest(
                conn, self.schema, spec, job_dir / UPLOAD_FILE, job_dir,
                batch_size=self.config.batch_size, batch_delay=self.config.batch_delay,
                batch_seconds=self.config.batch_seconds,
                faults=records.IngestFaults(lock_row_rate=faults.lock_row_rate,
                                            failing_batch=faults.failing_batch, seed=faults.seed,
                                            drop_result_rows=faults.take_drop_result_rows()),
                should_abort=self._should_stop(job.id), on_progress=on_progress,
            )
        finally:
            self.store.release(conn)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        counts: dict[str, Any] = {
            "records_processed": outcome.records_processed,
            "records_failed": outcome.records_failed,
            "records_unprocessed": outcome.records_unprocessed,
            "retries": outcome.retries,
            "total_processing_time": elapsed_ms,
            "api_active_processing_time": min(outcome.processing_ms, elapsed_ms),
        }
        if outcome.state is JobState.ABORTED and self._stopping.is_set():
            self.store.update_job(job.id, touch=False, **counts)
            return  # server stopping: leave InProgress, recover() decides at the next start
        final = self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS], state=outcome.state,
                                      error_message=outcome.error_message, **counts)
        if final is None:  # aborted by PATCH meanwhile: keep Aborted, record how far it got
            self.store.update_job(job.id, touch=False, **counts)

    def _run_query(self, job: JobRecord) -> None:
        from airflow_provider_sfbulk.emulator import query_results, soql

        started = time.monotonic()
        out_dir = self.store.job_dir(job.id) / QUERY_DIR
        should_stop = self._should_stop(job.id)
        conn = self.store.open_connection()
        try:
            try:
                compiled = soql.compile_soql(job.query or "", self.schema,
                                             include_deleted=job.operation == "queryAll")
                rows = query_results.write_query_results(
                    conn, compiled, out_dir, column_delimiter=job.column_delimiter,
                    line_ending=job.line_ending, should_abort=should_stop,
                )
                if self.config.query_delay > 0:
                    from airflow_provider_sfbulk.emulator.records import _sleep

                    _sleep(self.config.query_delay - (time.monotonic() - started), should_stop)
            except soql.SoqlError as err:
                self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS], state=JobState.FAILED,
                                      error_message=f"{err.error_code}: {err.message}")
                return
        finally:
            self.store.release(conn)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        if should_stop():
            return  # aborted by PATCH (row already Aborted) or server stopping (recover() reruns it)
        timeout = self.settings.query_timeout(rows)
        if timeout is not None:
            message, retries = timeout
            shutil.rmtree(out_dir, ignore_errors=True)
            self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS], state=JobState.FAILED,
                                  error_message=message, retries=retries, records_processed=0,
                                  total_processing_time=elapsed_ms, api_active_processing_time=elapsed_ms)
            return
        self.store.increment("DailyBulkV2QueryFileStorageMB", _size_mb(out_dir))
        self.store.update_job(job.id, only_if_state=[JobState.IN_PROGRESS], state=JobState.JOB_COMPLETE,
                              records_processed=rows, total_processing_time=elapsed_ms,
                              api_active_processing_time=elapsed_ms)

    def ensure_result_files(self, job: JobRecord, *, all_unprocessed: bool = False) -> None:
        """Make sure each result file of an ingest job exists, with RECORDS' header lines at least.

        ``all_unprocessed``: the job ended before any row was processed (aborted while ``Open`` or
        ``UploadComplete``), so ``unprocessedrecords`` is the whole upload.
        """
        with self._files_lock:
            self._ensure_result_files(job, all_unprocessed=all_unprocessed)

    def _ensure_result_files(self, job: JobRecord, *, all_unprocessed: bool) -> None:
        job_dir = self.store.job_dir(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        upload = job_dir / UPLOAD_FILE
        paths = [job_dir / f"{name}.csv" for name in RESULT_SETS]
        if all_unprocessed and upload.exists() and not any(p.exists() for p in paths):
            # let RECORDS write the files, stopping before its first batch: every row is unprocessed
            from airflow_provider_sfbulk.emulator import records

            spec = records.IngestSpec(job_id=job.id, object_name=job.object, operation=job.operation,
                                      external_id_field=job.external_id_field,
                                      column_delimiter=job.column_delimiter, line_ending=job.line_ending,
                                      assignment_rule_id=job.assignment_rule_id, user_id=job.created_by)
            conn = self.store.open_connection()
            try:
                records.process_ingest(conn, self.schema, spec, upload, job_dir, should_abort=lambda: True)
            finally:
                self.store.release(conn)
        header = b""
        if upload.exists():
            with upload.open("rb") as handle:
                header = handle.readline().rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf")
        delimiter = COLUMN_DELIMITERS.get(job.column_delimiter, ",").encode()
        ending = LINE_ENDINGS.get(job.line_ending, "\n").encode()
        suffix = delimiter + header if header else b""
        heads = {"successfulResults": b'"sf__Id"' + delimiter + b'"sf__Created"' + suffix + ending,
                 "failedResults": b'"sf__Id"' + delimiter + b'"sf__Error"' + suffix + ending,
                 "unprocessedrecords": header + ending if header else b""}
        for name in RESULT_SETS:
            path = job_dir / f"{name}.csv"
            if path.exists():
                continue
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(heads[name])
            os.replace(tmp, path)

    def future_of(self, job_id: str) -> Future[None] | None:
        """The pending processing of a job, if any."""
        with self._lock:
            return self._futures.get(job_id)


def _size_mb(directory: Path) -> int:
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
    return math.ceil(total / (1024 * 1024))
