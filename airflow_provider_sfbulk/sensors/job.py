"""Wait for Bulk API 2.0 jobs created elsewhere (ingest or query) to finish."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_sfbulk.common.job_ids import parse_job_ids
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.links.job import SalesforceBulkJobLink
from airflow_provider_sfbulk.protocol.api import job_kind
from airflow_provider_sfbulk.protocol.waiting import WaitOutcome, outcome_for
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["SalesforceBulkJobSensor"]


class SalesforceBulkJobSensor(BaseSensorOperator):
    """Wait until every job in ``job_ids`` is terminal (``JobComplete``, ``Failed`` or ``Aborted``).

    Deferrable: checks once, then waits in the triggerer (one trigger for all jobs, growing poll
    interval up to ``max_poll_interval``, the sensor's ``timeout`` as absolute deadline). Otherwise it
    pokes like any sensor (``poke_interval``, ``mode``).

    Returns (XCom) ``{"job_ids": [...], "job_kind": ..., "status": "success"|"failed"|"aborted",
    "jobs": [{"id", "state", "error_message", "number_records_processed", "number_records_failed"}]}``.

    :param job_ids: job ids (templated): a list, one id, an ingest operator XCom, or rendered list text.
    :param job_kind: ``ingest`` or ``query``.
    :param salesforce_conn_id: the ``salesforce_bulk`` connection (templated).
    :param fail_on_job_failure: a ``Failed`` or ``Aborted`` job fails the sensor (with Salesforce's
        ``errorMessage``); False returns the outcome instead.
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param max_poll_interval: cap of the growing interval while deferred, seconds.
    :param cancel_on_kill: abort the jobs when this sensor is killed while deferred. Default False: the
        jobs belong to whoever created them, the sensor only watches.
    """

    template_fields: Sequence[str] = ("job_ids", "salesforce_conn_id")
    operator_extra_links = (SalesforceBulkJobLink(),)

    def __init__(
        self,
        *,
        job_ids: Any,
        job_kind: str = "ingest",
        salesforce_conn_id: str = SalesforceBulkHook.default_conn_name,
        fail_on_job_failure: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = 60.0,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 5.0)
        super().__init__(**kwargs)
        self.job_ids = job_ids
        self.job_kind = job_kind
        self.salesforce_conn_id = salesforce_conn_id
        self.fail_on_job_failure = fail_on_job_failure
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill

    @cached_property
    def hook(self) -> SalesforceBulkHook:
        """The blocking hook of ``salesforce_conn_id``."""
        return SalesforceBulkHook(salesforce_conn_id=self.salesforce_conn_id)

    def _ids(self) -> list[str]:
        try:
            return parse_job_ids(self.job_ids)
        except (ValueError, SyntaxError) as err:
            raise AirflowException(f"job_ids: {err}") from err

    def _check(self) -> WaitOutcome | None:
        kind = job_kind(self.job_kind)
        jobs = [self.hook.get_job(job_id, kind) for job_id in self._ids()]
        if all(job.state.is_terminal for job in jobs):
            return outcome_for(jobs, kind)
        pending = ", ".join(f"{job.id} ({job.state.value})" for job in jobs if not job.state.is_terminal)
        self.log.info("Waiting for %s", pending)
        return None

    def _result(self, outcome: WaitOutcome) -> dict[str, Any]:
        if outcome.status not in ("success", "failed", "aborted"):
            raise AirflowException(f"unexpected outcome {outcome.status}: {outcome.message}")
        if outcome.status != "success" and self.fail_on_job_failure:
            raise AirflowException(outcome.message)
        self.log.info("%s", outcome.message)
        return {
            "job_ids": [job.id for job in outcome.jobs],
            "job_kind": outcome.job_kind.value,
            "status": outcome.status,
            "jobs": [job.to_dict() for job in outcome.jobs],
        }

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Check every job once: done (with the outcome as XCom) when all are terminal."""
        outcome = self._check()
        if outcome is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._result(outcome))

    def execute(self, context: Context) -> Any:
        """Store the job link, then poke (not deferrable) or check once and defer to the trigger."""
        ids = self._ids()
        try:
            SalesforceBulkJobLink.persist(context, instance_url=self.hook.instance_url, job_ids=ids)
        except Exception as err:  # the link is a convenience
            self.log.debug("Could not store the job link: %s", err)
        if not self.deferrable:
            return super().execute(context)
        outcome = self._check()
        if outcome is not None:
            return self._result(outcome)
        self.defer(
            trigger=SalesforceBulkJobTrigger(
                conn_id=self.salesforce_conn_id,
                job_ids=ids,
                job_kind=job_kind(self.job_kind).value,
                poll_interval=float(self.poke_interval),
                max_poll_interval=max(float(self.max_poll_interval), float(self.poke_interval)),
                deadline=time.time() + float(self.timeout),
                abort_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: return the outcome, or raise on an error or a timeout."""
        if not isinstance(event, dict):
            raise AirflowException(f"expected a Salesforce Bulk trigger event, got {event!r}")
        outcome = WaitOutcome.from_event(event)
        if outcome.status == "error":
            raise AirflowException(f"waiting for the Salesforce Bulk jobs failed: {outcome.message}")
        if outcome.status == "timeout":
            if self.soft_fail:
                raise AirflowSkipException(outcome.message)
            raise AirflowSensorTimeout(outcome.message)
        return self._result(outcome)
