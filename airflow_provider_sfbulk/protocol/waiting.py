"""Waiting for Bulk API 2.0 jobs to reach a terminal state.

One flow serves the trigger, the sensor and the operators' non-deferrable path. It polls every job that
is not yet terminal, sleeps with a growing interval up to a cap, and stops when every job is terminal
(or, with ``return_when="any"``, as soon as one is: a caller with more jobs to start then starts the
next one at once) or the absolute deadline has passed. Because the deadline is absolute and the flow
keeps no other state, a trigger rebuilt from its kwargs after a triggerer restart carries on where the
old one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sfbulk.protocol.api import JobInfo, job_kind
from airflow_provider_sfbulk.protocol.client import BulkClient, Flow, Sleep
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

_log = logging.getLogger(__name__)

#: Trigger event statuses, a closed set. ``progress``: some jobs are terminal, others still run (only with
#: ``return_when="any"``).
EVENT_STATUSES = ("success", "failed", "aborted", "timeout", "error", "progress")

#: When a wait returns: once every job is terminal, or once any one is.
RETURN_WHEN = ("all", "any")

#: Default seconds between two progress lines of a long wait.
PROGRESS_INTERVAL = 60.0


@dataclass(frozen=True)
class PollSchedule:
    """Intervals between polls.

    ``initial`` seconds, multiplied by ``factor`` after each poll, at most ``maximum`` seconds.
    """

    initial: float = 5.0
    factor: float = 1.5
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0:
            raise ValueError("poll intervals must be positive")
        if self.factor < 1:
            raise ValueError("the poll interval factor must be at least 1")

    def intervals(self) -> Iterator[float]:
        """The pauses, one per poll, for ever."""
        interval = min(self.initial, self.maximum)
        while True:
            yield interval
            interval = min(interval * self.factor, self.maximum)


@dataclass(frozen=True)
class JobSummary:
    """What a wait learned of one job: JSON-safe, small, no secrets."""

    id: str
    state: str
    error_message: str | None = None
    number_records_processed: int | None = None
    number_records_failed: int | None = None

    @classmethod
    def from_job(cls, job: JobInfo) -> JobSummary:
        """The summary of a polled job."""
        return cls(
            id=job.id,
            state=job.state.value,
            error_message=job.error_message,
            number_records_processed=job.number_records_processed,
            number_records_failed=job.number_records_failed,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (one entry of an event's ``jobs``)."""
        return {
            "id": self.id,
            "state": self.state,
            "error_message": self.error_message,
            "number_records_processed": self.number_records_processed,
            "number_records_failed": self.number_records_failed,
        }


@dataclass(frozen=True)
class WaitOutcome:
    """The result of waiting for a set of jobs; :meth:`to_event` is the trigger event payload."""

    status: str
    job_kind: JobKind
    jobs: tuple[JobSummary, ...]
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        """The trigger event payload."""
        return {
            "status": self.status,
            "job_kind": self.job_kind.value,
            "message": self.message,
            "jobs": [job.to_dict() for job in self.jobs],
            **self.extra,
        }

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> WaitOutcome:
        """Rebuild an outcome from a trigger event (the operator side of :meth:`to_event`)."""
        if event.get("status") not in EVENT_STATUSES:
            raise ValueError(f"not a Salesforce Bulk trigger event: {event!r}")
        known = {"status", "job_kind", "message", "jobs"}
        return cls(
            status=event["status"],
            job_kind=JobKind(event.get("job_kind", JobKind.INGEST.value)),
            jobs=tuple(JobSummary(**job) for job in event.get("jobs", [])),
            message=event.get("message", ""),
            extra={key: value for key, value in event.items() if key not in known},
        )

    @property
    def succeeded(self) -> bool:
        """True when every job reached ``JobComplete``."""
        return self.status == "success"


def outcome_for(jobs: Sequence[JobInfo], kind: JobKind) -> WaitOutcome:
    """The outcome once every job in ``jobs`` is terminal: ``failed`` beats ``aborted`` beats ``success``."""
    summaries = tuple(JobSummary.from_job(job) for job in jobs)
    failed = [job for job in jobs if job.state is JobState.FAILED]
    aborted = [job for job in jobs if job.state is JobState.ABORTED]
    if failed:
        details = "; ".join(f"{job.id}: {job.error_message or 'no errorMessage'}" for job in failed)
        return WaitOutcome(
            "failed", kind, summaries, f"{len(failed)} of {len(jobs)} job(s) Failed: {details}"
        )
    if aborted:
        ids = ", ".join(job.id for job in aborted)
        return WaitOutcome("aborted", kind, summaries, f"{len(aborted)} of {len(jobs)} job(s) Aborted: {ids}")
    return WaitOutcome("success", kind, summaries, f"{len(jobs)} job(s) reached JobComplete")


class Progress:
    """Now-and-then progress lines of the running jobs of a long wait.

    Each line says the records processed, of how many were sent (when known), and a rate.

    :param every: least seconds between two reports.
    :param records_sent: rows sent per job id (ingest), for "N of M"; unknown jobs show only N.
    :param report: where the lines go (``%``-style, like a logger's ``info``); default this module's log.
    """

    def __init__(
        self,
        every: float = PROGRESS_INTERVAL,
        records_sent: Mapping[str, int] | None = None,
        report: Callable[..., Any] | None = None,
    ) -> None:
        if every <= 0:
            raise ValueError("the progress interval must be positive")
        self.every = every
        self.records_sent = dict(records_sent or {})
        self._report = report or _log.info
        self._first: dict[str, tuple[float, int]] = {}
        self._last: float | None = None

    def observe(self, jobs: Sequence[JobInfo], now: float) -> None:
        """Note the jobs' counters; report the running ones when ``every`` seconds have passed."""
        for job in jobs:
            self._first.setdefault(job.id, (now, job.number_records_processed or 0))
        if self._last is None:
            self._last = now
            return
        if now - self._last < self.every:
            return
        self._last = now
        for job in jobs:
            if not job.state.is_terminal:
                self._line(job, now)

    def _line(self, job: JobInfo, now: float) -> None:
        since, first = self._first[job.id]
        processed = job.number_records_processed or 0
        rate = (processed - first) / (now - since) if now > since else 0.0
        sent = self.records_sent.get(job.id)
        self._report(
            "Job %s (%s): %d%s record(s) processed, %.0f record(s)/s",
            job.id,
            job.state.value,
            processed,
            f" of {sent}" if sent is not None else "",
            rate,
        )


def settled(jobs: Sequence[JobInfo], kind: JobKind, return_when: str = "all") -> WaitOutcome | None:
    """The outcome when ``jobs`` satisfy ``return_when``, else ``None`` (the wait goes on).

    ``all``: every job is terminal (:func:`outcome_for`). ``any``: at least one is; while others still
    run, the outcome's status is ``progress``.
    """
    if return_when not in RETURN_WHEN:
        raise ValueError(f"return_when must be one of {RETURN_WHEN}, not {return_when!r}")
    finished = [job for job in jobs if job.state.is_terminal]
    if len(finished) == len(jobs):
        return outcome_for(jobs, kind)
    if return_when == "any" and finished:
        ids = ", ".join(job.id for job in finished)
        return WaitOutcome(
            "progress",
            kind,
            tuple(JobSummary.from_job(job) for job in jobs),
            f"{len(finished)} of {len(jobs)} job(s) finished: {ids}",
        )
    return None


def wait_for_jobs(
    client: BulkClient,
    job_ids: Sequence[str],
    kind: JobKind | str = JobKind.INGEST,
    *,
    schedule: PollSchedule = PollSchedule(),
    deadline: float | None = None,
    clock: Callable[[], float] = time.time,
    on_change: Callable[[JobInfo, JobState | None], None] | None = None,
    initial_delay: float = 0.0,
    return_when: str = "all",
    progress: Progress | None = None,
) -> Flow[WaitOutcome]:
    """Poll ``job_ids`` until every one is terminal or ``deadline`` (epoch seconds) has passed.

    Returns a :class:`WaitOutcome` with status ``success`` (all ``JobComplete``), ``failed`` (any
    ``Failed``), ``aborted`` (any ``Aborted``, none ``Failed``) or ``timeout``. API errors (the job no
    longer exists, authentication fails) are raised as :class:`~airflow_provider_sfbulk.exceptions.
    SalesforceBulkError`. ``JobComplete`` only means processing ended: callers still reconcile the
    result sets.

    :param initial_delay: seconds to wait before the first poll (bounded by the deadline), for callers
        that have just checked the jobs themselves.
    :param on_change: called with the job and its previous state (``None`` the first time) whenever a
        job's state is seen to change; the default logs one line per change.
    :param return_when: ``"any"`` returns (status ``progress``) as soon as one job is terminal.
    :param progress: reports the running jobs' progress now and then (default: none).
    """
    if not job_ids:
        raise ValueError("wait_for_jobs needs at least one job id")
    if return_when not in RETURN_WHEN:
        raise ValueError(f"return_when must be one of {RETURN_WHEN}, not {return_when!r}")
    the_kind = job_kind(kind)
    report = on_change or _log_change
    latest: dict[str, JobInfo] = {}
    intervals = schedule.intervals()
    if initial_delay > 0:
        pause = initial_delay if deadline is None else max(0.0, min(initial_delay, deadline - clock()))
        yield Sleep(pause)
    while True:
        for job_id in job_ids:
            previous = latest.get(job_id)
            if previous is not None and previous.state.is_terminal:
                continue
            job = yield from client.get_job(job_id, the_kind)
            latest[job_id] = job
            if previous is None or previous.state is not job.state:
                report(job, previous.state if previous else None)
        jobs = [latest[job_id] for job_id in job_ids]
        done = settled(jobs, the_kind, return_when)
        if done is not None:
            return done
        now = clock()
        if progress is not None:
            progress.observe(jobs, now)
        if deadline is not None and now >= deadline:
            pending = ", ".join(f"{job.id} ({job.state.value})" for job in jobs if not job.state.is_terminal)
            return WaitOutcome(
                "timeout",
                the_kind,
                tuple(JobSummary.from_job(job) for job in jobs),
                f"timed out waiting for job(s) {pending}",
            )
        pause = next(intervals)
        if deadline is not None:
            pause = max(0.0, min(pause, deadline - now))
        yield Sleep(pause)


def _log_change(job: JobInfo, previous: JobState | None) -> None:
    _log.info(
        "Salesforce Bulk %s job %s: %s -> %s (processed=%s failed=%s)%s",
        job.kind.value,
        job.id,
        previous.value if previous else "-",
        job.state.value,
        job.number_records_processed,
        job.number_records_failed,
        f" errorMessage={job.error_message!r}" if job.error_message else "",
    )
