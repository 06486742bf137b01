"""The lifecycle of one part: create its job, upload its data, close the job.

A create or an upload whose answer was lost is recovered without ever sending a part's rows twice.

Salesforce takes one upload per job and processes nothing until ``UploadComplete``. So a job that may or
may not hold the data (``Open`` after a lost upload answer) is aborted, which loses nothing, and the part
goes into a new job. A lost JSON create leaves at most an empty ``Open`` job that Salesforce never
processes; a lost multipart create (job and data in one request) is looked up among this user's recent
jobs: one match is adopted, none means it was never created, several stop the load.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.common.threads import HookPerThread, run_concurrently
from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkOutcomeUnknownError,
)
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.parts import PartFiles
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import LostCreate, Part, Phase, Round
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["LOST_JOB_SKEW", "PartLoader"]

#: How far before the checkpointed send time a lost multipart job may have been created (clock skew).
LOST_JOB_SKEW = timedelta(minutes=2)

#: Tries to get one part's data into a job (each lost answer costs one).
ATTEMPTS_PER_PART = 3


class PartLoader:
    """Gets every part of a round into a job, and closes or aborts those jobs.

    :param spec: the load's parameters.
    :param journal: the load's state and checkpoint.
    :param files: the parts' spooled data.
    :param hooks: one hook per thread; the main thread's is used for closing and aborting.
    :param log: the task's logger.
    """

    def __init__(
        self,
        spec: LoadSpec,
        journal: LoadJournal,
        files: PartFiles,
        hooks: HookPerThread[SalesforceBulkHook],
        log: Log,
    ) -> None:
        self.spec = spec
        self.journal = journal
        self.files = files
        self.hooks = hooks
        self.log = log

    # --- submitting --------------------------------------------------------------------------------

    def submit(self, round_: Round) -> None:
        """Make sure every part of the round has a job holding its data (``upload_concurrency`` at once)."""
        todo = round_.parts_in(Phase.NEW, Phase.CREATING, Phase.CREATED, Phase.UPLOADING)
        if not todo:
            return
        first = round_.parts[0]
        multipart = (
            len(round_.parts) == 1
            and first.bytes <= self.spec.multipart_limit()
            and first.mode in (None, "multipart")
        )
        run_concurrently(
            lambda part: self.submit_part(round_, part, multipart),
            todo,
            concurrency=self.spec.upload_concurrency,
            name="sfbulk-upload",
        )

    def submit_part(self, round_: Round, part: Part, multipart: bool) -> None:
        """Walk one part forward from whatever phase it is in until a job holds its data."""
        hook = self.hooks.get()
        for _attempt in range(ATTEMPTS_PER_PART):
            if part.phase is Phase.CREATING:
                self.recover_creating(hook, part, round_.number)
            elif part.phase is Phase.UPLOADING:
                self.recover_uploading(hook, part)
            elif part.phase is Phase.CREATED:
                assert part.job_id is not None
                job = hook.get_job(part.job_id, JobKind.INGEST)
                if job.state is JobState.OPEN:
                    self.upload(hook, round_, part)
                else:
                    self.abandon(part, f"found {job.state.value} before its upload")
            elif part.phase is Phase.NEW:
                if multipart:
                    self.create_multipart(hook, round_, part)
                else:
                    self.create(hook, round_, part)
            if part.phase.has_data_in_a_job:
                return
        raise SalesforceBulkError(
            f"part {part.index}: could not get its data into a job after {ATTEMPTS_PER_PART} attempts"
        )

    def _job_created(self, part: Part, job: JobInfo, state: str | None = None) -> None:
        self.journal.record(part, job.id, state or job.state.value)
        self.journal.job_started(job.id)

    def create(self, hook: SalesforceBulkHook, round_: Round, part: Part) -> None:
        """Create a job (JSON create) for the part, then upload."""
        self.files.get(round_, part)  # before any job exists: a changed source must create none
        sent_at = time.time()
        self.journal.update(part, phase=Phase.CREATING, mode="classic", sent_at=sent_at)
        try:
            job = hook.create_ingest_job(self.spec.object_name, self.spec.operation, **self.spec.job_args())
        except SalesforceBulkOutcomeUnknownError as err:
            # At most an empty Open job was left behind: Salesforce never processes it, and the orphan
            # clean-up after the uploads aborts it.
            self.log.warning("Part %d: job creation outcome unknown (%s); creating another", part.index, err)
            self.journal.lost_create(LostCreate((round_.number, part.index), sent_at, time.time()))
            self.journal.update(part, phase=Phase.NEW)
            return
        if job.created_at is not None:
            self.journal.learn_clock(sent_at, time.time(), job.created_at.timestamp())
        self._job_created(part, job)
        self.journal.update(part, phase=Phase.CREATED, job_id=job.id)
        self.log.info("Part %d: job %s created (%s)", part.index, job.id, job.state.value)
        self.upload(hook, round_, part)

    def upload(self, hook: SalesforceBulkHook, round_: Round, part: Part) -> None:
        """Upload the part's data to its ``Open`` job (once: a job takes one upload)."""
        data = self.files.get(round_, part)
        job_id = part.job_id
        assert job_id is not None
        self.journal.update(part, phase=Phase.UPLOADING)
        try:
            with open(data.path, "rb") as stream:
                hook.upload_job_data(job_id, stream)
        except SalesforceBulkOutcomeUnknownError as err:
            self.log.warning("Part %d: upload to job %s may be incomplete (%s)", part.index, job_id, err)
            self.recover_uploading(hook, part)
            return
        self.journal.record(part, job_id, "Uploaded")
        self.journal.update(part, phase=Phase.UPLOADED)
        data.path.unlink(missing_ok=True)
        self.log.info(
            "Part %d: %d record(s), %d bytes uploaded to job %s", part.index, part.records, part.bytes, job_id
        )

    def create_multipart(self, hook: SalesforceBulkHook, round_: Round, part: Part) -> None:
        """Create the job with its data in one request (small loads)."""
        data = self.files.get(round_, part)
        self.journal.update(part, phase=Phase.CREATING, mode="multipart", sent_at=time.time())
        try:
            job = hook.create_ingest_job_with_data(
                self.spec.object_name, self.spec.operation, data.read_bytes(), **self.spec.job_args()
            )
        except SalesforceBulkOutcomeUnknownError as err:
            self.log.warning("Part %d: multipart create outcome unknown (%s)", part.index, err)
            self.recover_creating(hook, part, round_.number)
            return
        self._job_created(part, job)
        self.journal.update(part, phase=Phase.CLOSED, job_id=job.id, state=job.state.value)
        data.path.unlink(missing_ok=True)
        self.log.info(
            "Part %d: job %s created with its data in one request (%s)", part.index, job.id, job.state.value
        )

    # --- recovering ---------------------------------------------------------------------------------

    def recover_creating(self, hook: SalesforceBulkHook, part: Part, round_number: int) -> None:
        """A create was sent and its answer never came: find out whether a job exists."""
        if part.mode != "multipart":
            # The try that sent this JSON create died before it recorded the answer (a kill): at most an
            # empty Open job was left, which Salesforce never processes. Remember the request as lost, so
            # that the orphan clean-up after the uploads aborts that job. Salesforce made it, if at all,
            # while the request could still be answered: within one request timeout of sending it.
            assert part.sent_at is not None
            answered_by = min(time.time(), part.sent_at + hook.config.timeout)
            self.journal.lost_create(LostCreate((round_number, part.index), part.sent_at, answered_by))
            self.journal.update(part, phase=Phase.NEW)
            return
        job = self.find_lost_job(hook, part)
        if job is None:
            self.log.info("Part %d: the multipart job was never created; sending it again", part.index)
            self.journal.update(part, phase=Phase.NEW)
            return
        self.log.info("Part %d: found the job %s of the lost multipart request", part.index, job.id)
        self._job_created(part, job, "Adopted")
        self.journal.update(part, phase=Phase.CLOSED, job_id=job.id, state=job.state.value)

    def find_lost_job(self, hook: SalesforceBulkHook, part: Part) -> JobInfo | None:
        """The job a lost multipart create made: this user's, same object and operation, created since.

        :raises IngestInputError: several jobs could be it (nothing is guessed).
        """
        user_id = hook.get_user_id()
        assert part.sent_at is not None
        since = datetime.fromtimestamp(part.sent_at, timezone.utc) - LOST_JOB_SKEW
        known = self.journal.state.known_job_ids()
        candidates = [
            job
            for job in hook.list_jobs(JobKind.INGEST, job_type="V2Ingest")
            if job.id not in known
            and job.object == self.spec.object_name
            and job.operation == self.spec.operation
            and (user_id is None or job.created_by_id is None or job.created_by_id[:15] == user_id[:15])
            and job.created_at is not None
            and job.created_at >= since
        ]
        if len(candidates) > 1:
            ids = ", ".join(job.id for job in candidates)
            raise IngestInputError(
                f"part {part.index}: the answer to a multipart job creation was lost and {len(candidates)} "
                f"jobs could be it ({ids}); not guessing. Check them in Setup, then clear this task's "
                "checkpoint."
            )
        if not candidates:
            return None
        return hook.get_job(candidates[0].id, JobKind.INGEST)

    def recover_uploading(self, hook: SalesforceBulkHook, part: Part) -> None:
        """An upload was sent and its answer never came: keep the job if it moved on, else replace it."""
        assert part.job_id is not None
        job = hook.get_job(part.job_id, JobKind.INGEST)
        if job.state is JobState.OPEN:
            # The upload may or may not have reached Salesforce, and a job takes one upload only: abort it
            # (an Open job has processed nothing) and load the part into a new job.
            self.abandon(part, "upload outcome unknown", hook=hook)
        else:
            self.journal.update(part, phase=Phase.CLOSED, state=job.state.value)

    def abandon(self, part: Part, why: str, hook: SalesforceBulkHook | None = None) -> None:
        """Give up the part's job (aborting it when ``hook`` is given); a new job will carry the part.

        A job that may hold the part's rows is given up only once it is aborted: if the abort fails, the
        part stays with it and the error is raised (the next try aborts it first), since closing it later
        would load the rows twice. If the job moved on meanwhile, it keeps the part.
        """
        job_id = part.job_id
        assert job_id is not None
        if hook is not None and not self._aborted_for_good(hook, part, job_id):
            return
        self.log.warning(
            "Part %d: job %s abandoned (%s); a new job will carry the part", part.index, job_id, why
        )
        self.journal.abandon(part, job_id)

    def _aborted_for_good(self, hook: SalesforceBulkHook, part: Part, job_id: str) -> bool:
        """Abort the job before the part leaves it; False when the job moved on and keeps the part."""
        try:
            hook.abort_job(job_id, JobKind.INGEST)
            return True
        except SalesforceBulkInvalidStateError:
            job = hook.get_job(job_id, JobKind.INGEST)
            if job.state is JobState.ABORTED:
                return True
            if job.state is JobState.OPEN:
                raise
            self.log.warning(
                "Part %d: job %s is %s after all; it keeps the part", part.index, job_id, job.state.value
            )
            self.journal.update(part, phase=Phase.CLOSED, state=job.state.value)
            return False
        except SalesforceBulkError as err:
            raise SalesforceBulkError(
                f"part {part.index}: job {job_id} may hold the part's rows and could not be aborted ({err}); "
                "the part goes into no other job until it is (the next try aborts it first)",
                job_id=job_id,
            ) from err

    # --- closing ------------------------------------------------------------------------------------

    def close(self, part: Part) -> None:
        """Send ``UploadComplete``: Salesforce starts processing the job."""
        job_id = part.job_id
        assert job_id is not None
        hook = self.hooks.get()
        try:
            job = hook.close_job(job_id)
        except SalesforceBulkInvalidStateError:
            job = hook.get_job(job_id, JobKind.INGEST)
            if job.state is JobState.OPEN:
                raise
        self.journal.record(part, job_id, "UploadComplete")
        self.journal.update(part, phase=Phase.CLOSED, state=job.state.value)
        self.log.info("Job %s: UploadComplete sent (%s)", job_id, job.state.value)

    def abort_unstarted(self, part: Part) -> None:
        """Abort an uploaded job that was never closed (another job of the load failed)."""
        job_id = part.job_id
        assert job_id is not None
        hook = self.hooks.get()
        try:
            job = hook.abort_job(job_id, JobKind.INGEST)
        except SalesforceBulkInvalidStateError:
            job = hook.get_job(job_id, JobKind.INGEST)
        self.log.warning(
            "Job %s not started because another job of this load failed: %s", job_id, job.state.value
        )
        self.journal.record(part, job_id, job.state.value)
        self.journal.update(part, phase=Phase.CLOSED, state=job.state.value)
