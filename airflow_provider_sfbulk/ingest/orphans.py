"""Abort the empty jobs that lost create requests left behind, and nothing else.

When the answer to a JSON job creation is lost (the connection dropped after the request was sent), the
load creates another job for the part; the first, if Salesforce made it, stays ``Open`` for ever: it
processes nothing, but it counts against the org's jobs and shows up as stale. After the uploads the
load looks for such orphans: jobs of the connection's user and API version, same object and operation,
still ``Open``, not in the checkpoint, created while a lost request was in flight (also when the try that
sent it was killed before the answer was recorded). The window is this machine's send and
failure times moved onto Salesforce's clock, whose offset the load learns from the jobs it did create
(a two-minute margin before it knows). Another task of the same user may create jobs at the same moment,
so nothing is guessed: when more jobs match than requests were lost, none is aborted and the candidates
are logged.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.exceptions import SalesforceBulkError
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import CREATED_DATE_RESOLUTION, ClockOffset, LostCreate
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["UNKNOWN_CLOCK_MARGIN", "abort_orphans", "find_orphans"]

#: Margin around a lost request's window while Salesforce's clock offset is not known yet.
UNKNOWN_CLOCK_MARGIN = timedelta(minutes=2).total_seconds()

#: Seconds added on both sides of a learned window, for rounding.
LEARNED_CLOCK_MARGIN = 0.25


def _window(lost: LostCreate, offset: ClockOffset | None) -> tuple[float, float]:
    """The interval of ``createdDate`` values (epoch seconds) a lost request's job can have.

    Created at Salesforce time ``t`` with ``sent + offset <= t <= lost + offset``, shown cut to the second.
    """
    if offset is None:
        return lost.sent_at - UNKNOWN_CLOCK_MARGIN, lost.lost_at + UNKNOWN_CLOCK_MARGIN
    low = lost.sent_at + offset.low - CREATED_DATE_RESOLUTION - LEARNED_CLOCK_MARGIN
    return low, lost.lost_at + offset.high + LEARNED_CLOCK_MARGIN


def find_orphans(spec: LoadSpec, journal: LoadJournal, hook: SalesforceBulkHook) -> list[JobInfo]:
    """``Open`` jobs of this user, object and operation, unknown to the load, created in a lost window."""
    state = journal.state
    windows = [_window(lost, state.clock_offset) for lost in state.lost_creates]
    user_id = hook.get_user_id()
    known = state.known_job_ids()
    version = float(hook.config.api_version)  # our create made its job with the connection's version

    def created_in_a_window(job: JobInfo) -> bool:
        created = job.created_at
        return created is not None and any(low <= created.timestamp() <= high for low, high in windows)

    return [
        job
        for job in hook.list_jobs(JobKind.INGEST, job_type="V2Ingest")
        if job.id not in known
        and job.state is JobState.OPEN
        and job.object == spec.object_name
        and job.operation == spec.operation
        and (user_id is None or job.created_by_id is None or job.created_by_id[:15] == user_id[:15])
        and (job.api_version is None or job.api_version == version)
        and created_in_a_window(job)
    ]


def abort_orphans(spec: LoadSpec, journal: LoadJournal, hook: SalesforceBulkHook, log: Log) -> None:
    """Look into the load's lost create requests and abort their orphan jobs (see the module docs)."""
    lost = len(journal.state.lost_creates)
    if not lost:
        return
    candidates = find_orphans(spec, journal, hook)
    if len(candidates) > lost:
        log.warning(
            "%d job(s) could have been left behind by %d lost create request(s): %s; aborting none, as "
            "another task of this user may own some. Check them in Setup.",
            len(candidates),
            lost,
            ", ".join(job.id for job in candidates),
        )
        journal.orphans_settled([])
        return
    aborted = []
    for job in candidates:
        try:
            hook.abort_job(job.id, JobKind.INGEST)
        except SalesforceBulkError as err:
            log.warning(
                "Job %s, left behind by a lost create request, could not be aborted: %s", job.id, err
            )
            continue
        aborted.append(job.id)
        log.warning("Job %s: left behind by a lost create request (empty, Open); aborted", job.id)
    if len(candidates) < lost:
        log.info("%d lost create request(s) left no job behind", lost - len(candidates))
    journal.orphans_settled(aborted)
