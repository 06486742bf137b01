"""Parameters and the wait shared by the Salesforce Bulk API 2.0 operators (ingest and query).

The wait follows the model providers (dbt Cloud, BigQuery): check the jobs once; if every one is already
terminal, carry on in the worker; otherwise either defer to :class:`~airflow_provider_sfbulk.triggers.
job.SalesforceBulkJobTrigger` (``deferrable=True``) or poll in the worker with the very same flow
(:func:`airflow_provider_sfbulk.protocol.waiting.wait_for_jobs`). The ``timeout`` becomes an absolute
deadline the first time a task waits, stored in the task's :class:`~airflow_provider_sfbulk.common.checkpoint.
TaskCheckpoint`, so neither a deferral, a triggerer restart nor a retry of the task extends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, BaseOperator, conf

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.api import JobInfo, job_kind
from airflow_provider_sfbulk.protocol.states import JobState
from airflow_provider_sfbulk.protocol.waiting import (
    PROGRESS_INTERVAL,
    PollSchedule,
    Progress,
    WaitOutcome,
    settled,
)
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["DEADLINE_KEY", "SalesforceBulkBaseOperator", "template_flag"]

#: Checkpoint key of the absolute deadline (epoch seconds) of the task's waits.
DEADLINE_KEY = "deadline"

#: Growth of the poll interval between checks.
BACKOFF_FACTOR = 1.5


class SalesforceBulkBaseOperator(BaseOperator):
    """Base of the Bulk API 2.0 operators: connection, deferral, polling, deadline and ``on_kill``.

    :param salesforce_conn_id: id of a ``salesforce_bulk`` connection (templated).
    :param deferrable: wait in the triggerer instead of the worker; default ``[operators]
        default_deferrable``.
    :param poll_interval: first pause between job checks, seconds (grows by 1.5x).
    :param max_poll_interval: longest pause between job checks, seconds.
    :param timeout: seconds the task may wait for its jobs in total (across retries and deferrals);
        ``None`` waits as long as the jobs run.
    :param cancel_on_kill: abort the task's running jobs when the task is killed.
    """

    template_fields: Sequence[str] = ("salesforce_conn_id",)

    def __init__(
        self,
        *,
        salesforce_conn_id: str = SalesforceBulkHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        timeout: float | None = None,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval <= 0 or max_poll_interval <= 0:
            raise ValueError("poll_interval and max_poll_interval must be positive")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None)")
        self.salesforce_conn_id = salesforce_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max(max_poll_interval, poll_interval))
        self.timeout = timeout
        self.cancel_on_kill = cancel_on_kill
        self._active_job_ids: list[str] = []
        self._active_job_kind = "ingest"

    @cached_property
    def hook(self) -> SalesforceBulkHook:
        """The blocking hook of ``salesforce_conn_id``."""
        return SalesforceBulkHook(salesforce_conn_id=self.salesforce_conn_id)

    @property
    def poll_schedule(self) -> PollSchedule:
        """The intervals between job checks (``poll_interval`` growing 1.5x up to ``max_poll_interval``)."""
        return PollSchedule(self.poll_interval, BACKOFF_FACTOR, self.max_poll_interval)

    def checkpoint(self, context: Context) -> TaskCheckpoint:
        """The task's checkpoint (task state store, or a file under the state folder)."""
        return TaskCheckpoint.for_task(context)

    def deadline(self, context: Context, checkpoint: TaskCheckpoint | None = None) -> float | None:
        """The absolute deadline of the task's waits (set once, from ``timeout``, then kept)."""
        if self.timeout is None:
            return None
        store = checkpoint or self.checkpoint(context)
        stored = store.get(DEADLINE_KEY)
        if isinstance(stored, (int, float)):
            return float(stored)
        value = time.time() + float(self.timeout)
        store.set(DEADLINE_KEY, value)
        return value

    def wait_for_jobs(
        self,
        context: Context,
        job_ids: list[str],
        kind: str,
        *,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        checkpoint: TaskCheckpoint | None = None,
        on_change: Callable[[JobInfo, JobState | None], None] | None = None,
        return_when: str = "all",
        records_sent: dict[str, int] | None = None,
    ) -> WaitOutcome:
        """Wait until every job is terminal, and return the outcome.

        The outcome's status is ``success``, ``failed``, ``aborted`` or ``timeout``. With
        ``return_when="any"``, return as soon as one job is terminal (``progress`` while others run).

        Checks once first: jobs that are already terminal never go to the triggerer. When deferrable,
        defers (raises ``TaskDeferred``) and Airflow later calls ``method_name(context, event,
        **kwargs)``: turn the event back into an outcome with :meth:`outcome_from_event`. Otherwise polls
        in the worker with the same flow the trigger runs; ``on_change(job, previous_state)`` is then
        called on every state change seen (default: one log line each).
        """
        if not job_ids:
            raise ValueError("wait_for_jobs needs at least one job id")
        the_kind = job_kind(kind)
        self._active_job_ids = list(job_ids)
        self._active_job_kind = the_kind.value
        deadline = self.deadline(context, checkpoint)
        if self.deferrable:
            jobs = [self.hook.get_job(job_id, the_kind) for job_id in job_ids]
            done = settled(jobs, the_kind, return_when)
            if done is not None:
                self.log.info("%s; not deferring", done.message)
                return done
            if deadline is None or time.time() < deadline:
                self.log.info(
                    "Deferring until %d %s job(s) finish: %s",
                    len(job_ids),
                    the_kind.value,
                    ", ".join(job_ids),
                )
                self.defer(
                    trigger=SalesforceBulkJobTrigger(
                        conn_id=self.salesforce_conn_id,
                        job_ids=list(job_ids),
                        job_kind=the_kind.value,
                        poll_interval=self.poll_interval,
                        max_poll_interval=self.max_poll_interval,
                        backoff_factor=BACKOFF_FACTOR,
                        deadline=deadline,
                        abort_on_kill=self.cancel_on_kill,
                        return_when=return_when,
                        records_sent=records_sent,
                    ),
                    method_name=method_name,
                    kwargs=kwargs,
                )
        # Not deferrable, or the deadline already passed: poll in the worker (a past deadline returns
        # ``timeout`` after one check).
        return self.hook.wait_for_jobs(
            job_ids,
            the_kind,
            schedule=self.poll_schedule,
            deadline=deadline,
            on_change=on_change,
            return_when=return_when,
            progress=Progress(PROGRESS_INTERVAL, records_sent, self.log.info),
        )

    def outcome_from_event(self, event: dict[str, Any] | None) -> WaitOutcome:
        """The outcome carried by a trigger event; an ``error`` event (or no event) raises."""
        if not isinstance(event, dict):
            raise AirflowException(f"expected a Salesforce Bulk trigger event, got {event!r}")
        try:
            outcome = WaitOutcome.from_event(event)
        except (TypeError, ValueError) as err:
            raise AirflowException(f"malformed Salesforce Bulk trigger event: {err}") from err
        if outcome.status == "error":
            raise AirflowException(f"waiting for the Salesforce Bulk jobs failed: {outcome.message}")
        self._active_job_ids = [job.id for job in outcome.jobs]
        self._active_job_kind = outcome.job_kind.value
        return outcome

    def jobs_to_abort(self) -> list[str]:
        """The jobs :meth:`on_kill` aborts: those this task is waiting for."""
        return list(self._active_job_ids)

    def on_kill(self) -> None:
        """Abort the jobs this task is waiting for (when ``cancel_on_kill``)."""
        jobs = self.jobs_to_abort()
        if not self.cancel_on_kill or not jobs:
            return
        for job_id in jobs:
            try:
                self.hook.abort_job(job_id, self._active_job_kind)
                self.log.info("Salesforce Bulk job %s aborted on kill", job_id)
            except Exception as err:  # a finished job cannot be aborted; keep killing the others
                self.log.info("Salesforce Bulk job %s not aborted: %s", job_id, err)


def template_flag(value: bool | str | None) -> bool:
    """A flag that may come from a template as text (``"True"``, ``"false"``, ``"1"``, ``""``)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
