"""The query operator's wiring of a sliced extract: its plan in the checkpoint, the waits, the deferrals.

The engine is :mod:`airflow_provider_sfbulk.query.sliced` (running slices, delivering one extract) on
:mod:`airflow_provider_sfbulk.query.slices` (windows, splitting, state). :class:`SlicedQueryRun` connects it
to one run of :class:`~airflow_provider_sfbulk.operators.query.SalesforceBulkQueryOperator`: the plan kept
under :data:`SLICES_KEY` in the task's checkpoint (resumed when it belongs to the same rendered query and
slicing parameters), the window of the data interval, and the wait for the running slices' jobs, in the
worker or deferred (``return_when="any"``: the next slice starts as soon as one ends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.states import JobKind
from airflow_provider_sfbulk.query.bounds import parse_field_time
from airflow_provider_sfbulk.query.errors import QueryExtractError, QueryJobRefused
from airflow_provider_sfbulk.query.incremental import IncrementalQueryError
from airflow_provider_sfbulk.query.sliced import SlicedExtract, plan_extract
from airflow_provider_sfbulk.query.slices import SlicePlan

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
    from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator
    from airflow_provider_sfbulk.protocol.api import JobInfo

__all__ = ["SLICES_KEY", "SLICE_FIELD", "SlicedQueryRun", "slice_field"]

#: Checkpoint key of a sliced extract's plan (the value is :meth:`~airflow_provider_sfbulk.query.slices.
#: SlicePlan.to_dict`).
SLICES_KEY = "query_slices"
#: The field a query without a data interval is sliced on: set when a record is created, never changed.
SLICE_FIELD = "CreatedDate"


def slice_field(operator: SalesforceBulkQueryOperator) -> str:
    """The field the windows filter: ``incremental_field`` in incremental mode, else ``CreatedDate``."""
    return operator.incremental_field if operator.incremental else SLICE_FIELD


class SlicedQueryRun:
    """One run of the operator on a sliced extract (see the module documentation)."""

    def __init__(
        self,
        operator: SalesforceBulkQueryOperator,
        context: Context,
        checkpoint: TaskCheckpoint,
        on_end: Callable[[JobInfo], None],
    ) -> None:
        self.op = operator
        self.context = context
        self.checkpoint = checkpoint
        self.on_end = on_end

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpointed plan must match: the rendered query, its settings, the slicing asked for."""
        op = self.op
        return {**op._fingerprint(), "slices": op.slices, "slice_by": op.slice_by}

    def saved(self) -> SlicePlan | None:
        """The sliced extract an earlier try (or a deferral) left for this very query, if any."""
        data = self.checkpoint.get(SLICES_KEY)
        if not isinstance(data, dict):
            return None
        plan = SlicePlan.from_dict(data)
        if plan.fingerprint != self.fingerprint():
            self.op.log.info("The query or slicing differs from the checkpointed plan; planning again")
            self.checkpoint.delete(SLICES_KEY)
            return None
        return plan

    def start(self, reason: str, folder: str) -> SlicePlan:
        """Cut the window (the data interval, else learnt from the field) into slices; checkpoint them."""
        op = self.op
        _check_writable(folder)
        interval = op._interval
        window = (parse_field_time(interval.start), parse_field_time(interval.end)) if interval else None
        try:
            plan = plan_extract(
                op._jobs,
                op.soql,
                slice_field(op),
                to_storage_path(folder),
                window=window,
                slices=op.slices,
                slice_by=op.slice_by,
                min_slice=op.min_slice,
                reason=reason,
                fingerprint=self.fingerprint(),
                schedule=op.poll_schedule,
                deadline=op.deadline(self.context, self.checkpoint),
            )
        except QueryJobRefused as err:
            raise AirflowFailException(str(err)) from err
        except QueryExtractError as err:
            raise AirflowException(str(err)) from err
        self.checkpoint.set(SLICES_KEY, plan.to_dict())
        return plan

    def after_timeout(self, state: dict[str, Any], text: str) -> SlicePlan:
        """The plan that replaces a query job that ran too long; the task's failure when none can."""
        if self.op.output_mode == "single":
            raise AirflowFailException(f"{text} (automatic slicing needs output_mode='pages')")
        self.op.log.warning("%s; slicing the query", text)
        try:
            return self.start(f"job {state['job_id']} ran too long", state["results_path"])
        except (AirflowFailException, IncrementalQueryError) as err:
            raise AirflowFailException(f"{text}. The query cannot be sliced: {err}") from err

    def run(self, plan: SlicePlan) -> dict[str, Any]:
        """Run the plan's slices, waiting as for a single job, and deliver them as one extract."""
        op, context, checkpoint = self.op, self.context, self.checkpoint
        folder = op._results_folder(context) if op.results_path else to_storage_path(plan.results_path)
        conn_id = op.salesforce_conn_id
        sliced = SlicedExtract(
            plan,
            op._jobs,
            lambda: SalesforceBulkHook(salesforce_conn_id=conn_id),
            folder,
            op._options(),
            save=lambda changed: checkpoint.set(SLICES_KEY, changed.to_dict()),
            concurrency=op.slice_concurrency,
            min_slice=op.min_slice,
            on_end=self.on_end,
            interval=op._interval.describe() if op._interval is not None else None,
        )
        try:
            while True:
                sliced.refresh()
                job_ids = sliced.advance()
                if not job_ids:
                    break
                op._job_id = job_ids[-1]  # kept for the lineage of a failure
                op._persist_link(context, job_ids)
                outcome = op.wait_for_jobs(
                    context,
                    job_ids,
                    JobKind.QUERY.value,
                    method_name="execute_complete",
                    checkpoint=checkpoint,
                    return_when="any",
                )
                op._check_deadline(outcome)
            result = sliced.finish()
        except QueryJobRefused as err:
            raise AirflowFailException(str(err)) from err
        except QueryExtractError as err:
            raise AirflowException(str(err)) from err
        checkpoint.delete(SLICES_KEY)
        return op._deliver(context, checkpoint, result)


def _check_writable(folder: str) -> None:
    from airflow_provider_sfbulk.common.json_files import check_writable

    try:
        check_writable(to_storage_path(folder))
    except OSError as err:
        raise AirflowFailException(f"{err}; no query job was created") from err
