"""One load from start to end, as steps an operator (or any caller) drives.

:meth:`IngestLoad.advance` moves the load as far as it can without waiting: it submits parts, closes
jobs up to the round's concurrency, collects results and plans retry rounds. When jobs are running it
returns a :class:`WaitFor`; the caller waits (in the worker, or deferred to the triggerer), hands the
outcome to :meth:`IngestLoad.apply_outcome` and calls :meth:`advance` again. When the last round is
collected it returns the :class:`~airflow_provider_sfbulk.ingest.collect.LoadSummary`.

``job_concurrency`` is a rolling window: while parts wait to be closed, the wait returns as soon as any
running job finishes, and the next job starts at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.json_files import check_writable
from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.common.threads import HookPerThread
from airflow_provider_sfbulk.exceptions import SalesforceBulkError
from airflow_provider_sfbulk.ingest.collect import ResultCollector
from airflow_provider_sfbulk.ingest.earlier import resume_earlier_load
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.loader import PartLoader
from airflow_provider_sfbulk.ingest.orphans import abort_orphans
from airflow_provider_sfbulk.ingest.parts import PartFiles, new_round
from airflow_provider_sfbulk.ingest.preflight import check_columns, check_daily_batches
from airflow_provider_sfbulk.ingest.retries import plan_retry
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import LoadState, Part, Phase, Round
from airflow_provider_sfbulk.ingest.summary import LoadSummary, summarize
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.describe import ObjectDescribe
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.protocol.waiting import WaitOutcome

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["IngestLoad", "WaitFor"]


@dataclass(frozen=True)
class WaitFor:
    """Jobs to wait for before the load can go on.

    :param job_ids: the running jobs.
    :param return_when: ``"any"`` when more parts wait for a free slot (come back as soon as one job is
        terminal), ``"all"`` otherwise.
    :param records_sent: rows sent per job, for progress lines.
    """

    job_ids: list[str]
    return_when: str
    records_sent: dict[str, int]


class IngestLoad:
    """A load of ``source`` as ``spec`` says, remembered in ``checkpoint``.

    :param spec: the validated parameters.
    :param source: the CSV to load.
    :param checkpoint: the task's checkpoint.
    :param folder: the results folder.
    :param hook: the caller's hook (used on the calling thread).
    :param hook_factory: makes a hook for each worker thread.
    :param stored: a file by URI, with the results folder's storage connection.
    :param log: the task's logger.
    """

    def __init__(
        self,
        spec: LoadSpec,
        source: ObjectStoragePath,
        checkpoint: TaskCheckpoint,
        folder: ObjectStoragePath,
        hook: SalesforceBulkHook,
        hook_factory: Callable[[], SalesforceBulkHook],
        stored: Callable[[str], ObjectStoragePath],
        log: Log,
    ) -> None:
        self.spec = spec
        self.source = source
        self.checkpoint = checkpoint
        self.folder = folder
        self.hook = hook
        self.log = log
        self.hooks = HookPerThread(hook_factory, main=hook)
        self.files = PartFiles(spec, self._source_of, log)
        self._stored = stored
        self._journal: LoadJournal | None = None
        self._describes: dict[str, ObjectDescribe] = {}
        self._stopped = False
        #: The load leaves less than ``limits_warn_share`` of the daily batches (set when it starts).
        self.limits_low = False

    # --- the journal ----------------------------------------------------------------------------

    @property
    def journal(self) -> LoadJournal:
        """The load's state and checkpoint (after :meth:`open` or :meth:`resume`)."""
        if self._journal is None:
            raise RuntimeError("the load is not open")
        return self._journal

    @property
    def state(self) -> LoadState:
        """The load's state."""
        return self.journal.state

    def open(self, *, restart: bool = False) -> bool:
        """Resume the load in the checkpoint, or validate and split the source and start a new one.

        An earlier attempt's load is resumed, reported again, replaced or refused as
        :func:`~airflow_provider_sfbulk.ingest.earlier.resume_earlier_load` decides. Returns True when a
        new load started.

        :param restart: start a new load whatever the checkpoint holds (``restart_load``).
        :raises IngestInputError: the source is bad, or an earlier load cannot safely be replaced.
        """
        journal = LoadJournal.load(self.checkpoint)
        if journal is not None and resume_earlier_load(
            journal,
            fingerprint=self.spec.fingerprint(str(self.source)),
            split_source=lambda: self.files.split_as_recorded(self.source, journal.state.rounds[0]),
            hook=self.hook,
            log=self.log,
            restart=restart,
        ):
            self.log.info("Resuming the load recorded in the checkpoint (%s)", self.checkpoint.backend)
            self._journal = journal
            return False
        self._journal = self._start()
        return True

    def resume(self) -> None:
        """Open the load of the checkpoint after a deferral (it must exist)."""
        journal = LoadJournal.load(self.checkpoint)
        if journal is None:
            raise SalesforceBulkError("the checkpoint of this load is missing; cannot resume")
        self._journal = journal

    def _start(self) -> LoadJournal:
        parts = self.files.parts_of(0) or self.files.split(
            self.source, 0, concurrency=self.spec.job_concurrency
        )
        if not parts:
            raise IngestInputError(f"{self.source}: no records to load")
        try:
            check_writable(self.folder)
        except OSError as err:
            raise IngestInputError(f"{err}; no job was created") from err
        if self.spec.describe_check:
            check_columns(self.spec, self.files.columns_of(0), self._describe)
        self.limits_low = check_daily_batches(self.spec, parts, self.hook, self.log)
        state = LoadState(
            fingerprint=self.spec.fingerprint(str(self.source)),
            started_at=time.time(),
            records_sent=sum(part.record_count for part in parts),
            rounds=[
                new_round(
                    0,
                    str(self.source),
                    parts,
                    self.spec.job_concurrency,
                    (),
                    part_bytes=self.files.part_bytes_of(0),
                )
            ],
        )
        journal = LoadJournal(self.checkpoint, state)
        journal.save()
        self.log.info(
            "Validated %s: %d record(s) in %d part(s); checkpoint: %s",
            self.source,
            state.records_sent,
            len(parts),
            self.checkpoint.backend,
        )
        return journal

    def _describe(self, object_name: str) -> ObjectDescribe:
        """An object's describe, asked once per load."""
        key = object_name.casefold()
        if key not in self._describes:
            self._describes[key] = self.hook.describe_object(object_name)
        return self._describes[key]

    def _source_of(self, round_: Round) -> ObjectStoragePath:
        return self.source if round_.number == 0 else self._stored(round_.source)

    # --- steps ----------------------------------------------------------------------------------

    def advance(self) -> WaitFor | LoadSummary:
        """Go as far as possible without waiting; see the module documentation."""
        loader = PartLoader(self.spec, self.journal, self.files, self.hooks, self.log)
        collector = ResultCollector(self.spec, self.journal, self.folder, self.hooks, self.log)
        while True:
            round_ = self.state.current
            if not round_.collected:
                if not self._stopped:
                    loader.submit(round_)
                    abort_orphans(self.spec, self.journal, self.hook, self.log)
                waiting = round_.parts_in(Phase.UPLOADED)
                if waiting and (self._stopped or any(part.broken for part in round_.parts)):
                    # The load fails anyway (or the task is being killed): start no more jobs. An Open job
                    # has processed nothing, so aborting it loses nothing; its rows come back unprocessed.
                    for part in waiting:
                        loader.abort_unstarted(part)
                    continue
                running = round_.running()
                for part in waiting:
                    if len(running) >= round_.concurrency:
                        break
                    loader.close(part)
                    if not part.terminal:
                        running.append(part)
                if running:
                    more = bool(round_.parts_in(Phase.UPLOADED))
                    sent = {part.job_id: part.records for part in running if part.job_id}
                    return WaitFor(list(sent), "any" if more else "all", sent)
                self._check_stopped(round_)
                collector.collect(round_)
                retry = not self._stopped and plan_retry(
                    self.spec, self.journal, round_,
                    folder=self.folder, files=self.files, stored=self._stored, log=self.log,
                )
                if retry:
                    continue
            self.journal.forget_jobs()
            return summarize(
                self.spec, self.journal,
                folder=self.folder, stored=self._stored, checkpoint_backend=self.checkpoint.backend,
                log=self.log,
            )

    def apply_outcome(self, outcome: WaitOutcome) -> None:
        """Take in what a wait learned; on ``timeout`` abort the unfinished jobs and raise."""
        by_id = {job.id: job for job in outcome.jobs}
        for part in self.state.all_parts():
            summary = by_id.get(part.job_id or "")
            if summary is None or summary.state == part.state:
                continue
            part.state = summary.state
            if part.last_recorded_state() == summary.state:
                continue  # already recorded (and logged) while polling
            self.journal.record(part, summary.id, summary.state)
            self.log.info(
                "Job %s: %s (processed=%s failed=%s)%s",
                summary.id,
                summary.state,
                summary.number_records_processed,
                summary.number_records_failed,
                f" errorMessage={summary.error_message!r}" if summary.error_message else "",
            )
        self.journal.save()
        if outcome.status == "timeout":
            for job in outcome.jobs:
                if not JobState(job.state).is_terminal:
                    try:
                        self.hook.abort_job(job.id, JobKind.INGEST)
                    except SalesforceBulkError as err:
                        self.log.warning("Job %s could not be aborted: %s", job.id, err)
            raise SalesforceBulkError(
                f"the wait timed out: {outcome.message}; the unfinished jobs were aborted. A retry collects "
                "their results."
            )

    def state_seen(self, job_ids: list[str]) -> Callable[[JobInfo, JobState | None], None]:
        """A callback for the polling wait: log each state change and add it to the audit trail."""
        by_id: dict[str, Part] = {
            part.job_id: part for part in self.state.all_parts() if part.job_id in job_ids
        }

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
            if part is not None and part.last_recorded_state() != job.state.value:
                self.journal.record(part, job.id, job.state.value)

        return seen

    def stop(self) -> None:
        """Start no more work: the task is being killed (its jobs are being aborted).

        Jobs not started yet are aborted, no retry round is planned; the results of the jobs that exist
        are still collected, so the outcome says what was loaded before the kill.
        """
        self._stopped = True

    def _check_stopped(self, round_: Round) -> None:
        """After a kill, a round with parts that never got a job cannot be summed up: stop there."""
        if self._stopped and any(not part.phase.has_data_in_a_job for part in round_.parts):
            raise SalesforceBulkError(
                "the task was killed before every part had a job; the checkpoint keeps the load for a retry"
            )

    def jobs_in_flight(self) -> list[str]:
        """Jobs this process created that may still run (for aborting them when the task is killed)."""
        return self._journal.jobs_in_flight() if self._journal is not None else []

    def close(self) -> None:
        """Delete the spooled parts and close the worker threads' hooks."""
        self.files.cleanup()
        self.hooks.close()
