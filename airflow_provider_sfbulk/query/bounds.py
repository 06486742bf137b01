"""The window of a sliced extract without a data interval: the first and latest value of a field.

Bulk API 2.0 refuses aggregates (``MIN()``, ``MAX()``), but it runs ``ORDER BY`` with ``LIMIT``. So the
window is learnt with two small query jobs, the query's own condition kept
(:func:`~airflow_provider_sfbulk.query.incremental.bound_soql`)::

    SELECT CreatedDate FROM Account WHERE (<condition>) AND CreatedDate != null
    ORDER BY CreatedDate ASC NULLS LAST LIMIT 1          (and the same with DESC)

The window is ``[first, latest + 1 s)`` in whole seconds: every record present when the bounds were read
lies in it. Records created later are not in the extract (the next run has them). ``CreatedDate`` is the
default field because it never changes: a record cannot move from a slice not yet read into one already
read while the extract runs. The two jobs are waited for in the worker (they return one row each).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.protocol.waiting import PollSchedule
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.incremental import bound_soql

if TYPE_CHECKING:
    from airflow_provider_sfbulk.query.jobs import QueryJobs

__all__ = ["learn_window", "parse_field_time"]


def parse_field_time(text: str) -> datetime:
    """A ``dateTime`` value as query results carry it (``2024-01-31T10:00:00.000+0000``), in UTC."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _run_bound(jobs: QueryJobs, soql: str, schedule: PollSchedule, deadline: float | None) -> str | None:
    """The one value the bound query returns (``None``: no record has a value)."""
    job = jobs.create(soql)
    outcome = jobs.hook.wait_for_jobs([job.id], JobKind.QUERY, schedule=schedule, deadline=deadline)
    ended = jobs.hook.get_job(job.id, JobKind.QUERY)
    if ended.state is not JobState.JOB_COMPLETE:
        raise QueryExtractError(
            f"the query that reads the window's bound ended {ended.state.value} ({outcome.message}): "
            f"{ended.error_message or 'no errorMessage'}; SOQL: {soql}",
            job_id=job.id,
        )
    buffer = io.BytesIO()
    jobs.hook.download_query_page(job.id, buffer)
    rows = list(csv.reader(io.StringIO(buffer.getvalue().decode("utf-8"), newline="")))
    values = [row[0] for row in rows[1:] if row and row[0]]
    return values[0] if values else None


def learn_window(
    jobs: QueryJobs,
    soql: str,
    field: str,
    *,
    schedule: PollSchedule,
    deadline: float | None = None,
) -> tuple[datetime, datetime] | None:
    """``[first, latest + 1 s)`` of ``field`` over ``soql``'s records; ``None`` when there is none.

    :raises QueryJobRefused: a bound query could not be created (preflight, rejected SOQL).
    :raises QueryExtractError: a bound query did not complete.
    """
    first = _run_bound(jobs, bound_soql(soql, field, last=False), schedule, deadline)
    if first is None:
        return None
    latest = _run_bound(jobs, bound_soql(soql, field, last=True), schedule, deadline)
    if latest is None:  # every record was deleted in between
        return None
    start = parse_field_time(first).replace(microsecond=0)
    end = parse_field_time(latest).replace(microsecond=0) + timedelta(seconds=1)
    return start, max(end, start + timedelta(seconds=1))
