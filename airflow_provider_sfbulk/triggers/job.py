"""Deferrable wait for Bulk API 2.0 jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_sfbulk.exceptions import SalesforceBulkError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook
from airflow_provider_sfbulk.protocol.api import job_kind
from airflow_provider_sfbulk.protocol.waiting import (
    PROGRESS_INTERVAL,
    RETURN_WHEN,
    PollSchedule,
    Progress,
    WaitOutcome,
)
from airflow_provider_sfbulk.triggers.task_state import TRIGGER_ON_KILL, killed_by_user


class SalesforceBulkJobTrigger(BaseTrigger):
    """Wait in the triggerer until every job in ``job_ids`` is terminal, then fire one event.

    All jobs are polled from one trigger over one HTTP session and one token. The interval starts at
    ``poll_interval`` seconds and grows by ``backoff_factor`` up to ``max_poll_interval``. The trigger
    carries only ids and timing (never a secret); ``deadline`` is absolute (epoch seconds), so a trigger
    rebuilt after a triggerer restart keeps the original deadline.

    The event payload is :meth:`WaitOutcome.to_event`: ``status`` (``success``, ``failed``, ``aborted``,
    ``timeout`` or ``error``), ``job_kind``, ``message`` and ``jobs`` (id, state, errorMessage, counters).

    :param conn_id: the ``salesforce_bulk`` connection id.
    :param job_ids: ids of the jobs to wait for (all of the same kind).
    :param job_kind: ``ingest`` or ``query``.
    :param poll_interval: first interval between polls, seconds.
    :param max_poll_interval: cap of the growing interval, seconds.
    :param backoff_factor: growth of the interval after each poll.
    :param deadline: epoch seconds after which a ``timeout`` event fires; ``None`` waits forever.
    :param abort_on_kill: abort the jobs still running when a user kills the task: through ``on_kill`` on
        Airflow 3.3+, before that when the trigger is cancelled and the task is no longer deferred.
    :param progress_interval: seconds between two progress lines in the triggerer's log (records
        processed, of how many were sent, and a rate).
    :param records_sent: rows sent per job id, for those lines (ingest jobs).
    :param return_when: ``"all"`` fires once every job is terminal; ``"any"`` as soon as one is (event
        status ``progress`` while others run), so the task can start its next job.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        job_ids: Sequence[str],
        job_kind: str = "ingest",
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        backoff_factor: float = 1.5,
        deadline: float | None = None,
        abort_on_kill: bool = True,
        return_when: str = "all",
        progress_interval: float = PROGRESS_INTERVAL,
        records_sent: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        if not job_ids:
            raise ValueError("SalesforceBulkJobTrigger needs at least one job id")
        self.conn_id = conn_id
        self.job_ids = list(job_ids)
        self.job_kind = _kind_value(job_kind)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.backoff_factor = float(backoff_factor)
        self.deadline = deadline
        self.abort_on_kill = abort_on_kill
        if return_when not in RETURN_WHEN:
            raise ValueError(f"return_when must be one of {RETURN_WHEN}, not {return_when!r}")
        self.return_when = return_when
        self.progress_interval = float(progress_interval)
        self.records_sent = dict(records_sent) if records_sent else None
        self.schedule = PollSchedule(self.poll_interval, self.backoff_factor, self.max_poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and keyword arguments that rebuild this trigger (ids and timing, no secret)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "job_ids": list(self.job_ids),
                "job_kind": self.job_kind,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "backoff_factor": self.backoff_factor,
                "deadline": self.deadline,
                "abort_on_kill": self.abort_on_kill,
                "return_when": self.return_when,
                "progress_interval": self.progress_interval,
                "records_sent": self.records_sent,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the jobs until ``return_when`` is met or the deadline passes; fire one event."""
        try:
            async with SalesforceBulkAsyncHook(salesforce_conn_id=self.conn_id) as hook:
                # The operator checked the jobs just before deferring, so wait one interval before the first
                # poll. This also keeps a quick job from firing the event before the scheduler has recorded
                # the deferral (a race in Airflow 3.3.2's scheduler: apache/airflow#67287).
                outcome = await hook.wait_for_jobs(
                    self.job_ids,
                    self.job_kind,
                    schedule=self.schedule,
                    deadline=self.deadline,
                    initial_delay=self.poll_interval,
                    return_when=self.return_when,
                    progress=Progress(self.progress_interval, self.records_sent, self.log.info),
                )
        except SalesforceBulkError as err:
            outcome = WaitOutcome("error", job_kind(self.job_kind), (), str(err))
        except asyncio.CancelledError:
            # Before Airflow 3.3 a user's kill only cancels the trigger, as a triggerer restart does: abort
            # the jobs only when the task is no longer deferred. From 3.3 on, on_kill does it.
            if (
                self.abort_on_kill
                and not TRIGGER_ON_KILL
                and await killed_by_user(getattr(self, "task_instance", None), self.log)
            ):
                await self._abort_jobs()
            raise
        yield TriggerEvent(outcome.to_event())

    async def on_kill(self) -> None:
        """Abort the jobs still running when a user kills the deferred task (called by Airflow 3.3+)."""
        if self.abort_on_kill:
            await self._abort_jobs()

    async def _abort_jobs(self) -> None:
        async with SalesforceBulkAsyncHook(salesforce_conn_id=self.conn_id) as hook:
            results = await asyncio.gather(
                *(hook.abort_job(job_id, self.job_kind) for job_id in self.job_ids), return_exceptions=True
            )
        for job_id, result in zip(self.job_ids, results, strict=True):
            if isinstance(result, BaseException):
                # A job that already finished cannot be aborted; that is not worth failing the kill for.
                self.log.info("Salesforce Bulk job %s not aborted: %s", job_id, result)
            else:
                self.log.info("Salesforce Bulk job %s aborted on kill", job_id)


def _kind_value(kind: str) -> str:
    return job_kind(kind).value
