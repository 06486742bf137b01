"""Query jobs that ran too long: how Salesforce reports them, and what it advises.

A Bulk API 2.0 query is retried inside Salesforce; one that keeps running too long ends ``Failed`` with
``retries`` 15 and an ``errorMessage`` saying it was "Retried more than 15 times", and Salesforce's advice
is to add filters (Bulk API 2.0 Developer Guide, query troubleshooting). ``QUERY_TIMEOUT`` ("Your query
request was running for too long.") is the same problem reported the other way. The same query run again
fails again, so the task fails without retrying (splitting the query automatically is not done here).
"""

from __future__ import annotations

__all__ = ["RETRIES_EXHAUSTED", "TIMEOUT_ADVICE", "failure_message", "is_query_timeout"]

#: Internal retries after which Salesforce gives a query job up.
RETRIES_EXHAUSTED = 15
#: Salesforce's advice for a query that runs too long, as the failed task states it.
TIMEOUT_ADVICE = (
    "the query ran too long for Salesforce. Salesforce's advice: apply a filter and try again, or split "
    "the query into smaller ones, e.g. by CreatedDate ranges (running the same query again fails again)"
)
#: What the ``errorMessage`` of such a job contains (compared ignoring case).
_MARKERS = ("query_timeout", "retried more than")


def is_query_timeout(error_message: str | None, retries: int | None) -> bool:
    """True when a failed query job ran too long: its ``errorMessage`` says so, or it used up its retries."""
    text = (error_message or "").casefold()
    return any(marker in text for marker in _MARKERS) or (retries or 0) >= RETRIES_EXHAUSTED


def failure_message(
    job_id: str,
    state: str,
    error_message: str | None,
    retries: int | None,
    processing_ms: int | None,
) -> tuple[str, bool]:
    """The task's message for a query job that did not complete, and whether it ran too long.

    A query that ran too long gets its retries, its processing time and Salesforce's advice; retrying it
    as it is would spend another daily query job for the same result.
    """
    text = f"Salesforce query job {job_id} ended {state}: {error_message or 'no errorMessage'}"
    if state == "Failed" and is_query_timeout(error_message, retries):
        return f"{text} (retries={retries}, totalProcessingTime={processing_ms} ms): {TIMEOUT_ADVICE}", True
    return text, False
