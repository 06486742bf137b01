"""Checks against the org before a query job exists: the daily allowance of Bulk API 2.0 query jobs.

Every query job counts against the org's ``DailyBulkV2QueryJobs`` (``GET /limits``). When none is left,
creating one fails anyway; checking first gives a clear message before anything is started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_sfbulk.query.errors import QueryPreflightError

if TYPE_CHECKING:
    from airflow_provider_sfbulk.common.logs import Log
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["DAILY_QUERY_JOBS", "LIMITS_CHECKS", "check_daily_query_jobs", "check_limits_settings"]

#: The ``/limits`` key of the daily query job allowance.
DAILY_QUERY_JOBS = "DailyBulkV2QueryJobs"
#: Values of ``limits_check``: refuse, warn only, or do not ask.
LIMITS_CHECKS = ("fail", "warn", "off")


def check_limits_settings(limits_check: str, warn_share: float) -> None:
    """Refuse a ``limits_check`` or ``limits_warn_share`` that means nothing (ValueError)."""
    if limits_check not in LIMITS_CHECKS:
        raise ValueError(f"limits_check must be 'fail', 'warn' or 'off', not {limits_check!r}")
    if not 0.0 <= warn_share <= 1.0:
        raise ValueError(f"limits_warn_share must be between 0 and 1, not {warn_share!r}")


def check_daily_query_jobs(
    hook: SalesforceBulkHook, log: Log, *, limits_check: str = "fail", warn_share: float = 0.1
) -> None:
    """Compare the one query job about to be created with the org's remaining ``DailyBulkV2QueryJobs``.

    With none left, ``limits_check="fail"`` refuses (:class:`QueryPreflightError`) and ``"warn"`` logs
    and goes on; ``"off"`` does not ask. Otherwise a warning line says so when fewer than ``warn_share``
    of the daily maximum would remain after this job.
    """
    if limits_check == "off":
        return
    limits = hook.get_limits()
    remaining, maximum = limits.remaining(DAILY_QUERY_JOBS), limits.maximum(DAILY_QUERY_JOBS)
    if remaining is None:
        log.info("Preflight: the org reports no %s; not checked", DAILY_QUERY_JOBS)
        return
    if remaining < 1:
        message = f"the org has used all {maximum} of its {DAILY_QUERY_JOBS} for today"
        if limits_check == "fail":
            raise QueryPreflightError(
                f"{message}; no query job was created (limits_check='warn' only warns)"
            )
        log.warning("Preflight: %s; creating one anyway (limits_check='warn')", message)
        return
    left = remaining - 1
    if maximum and left < warn_share * maximum:
        log.warning(
            "Preflight: only %d of the org's %d %s will be left today after this one (under %g %%)",
            left,
            maximum,
            DAILY_QUERY_JOBS,
            warn_share * 100,
        )
    else:
        log.info("Preflight: %d of %s %s left today", remaining, maximum, DAILY_QUERY_JOBS)
