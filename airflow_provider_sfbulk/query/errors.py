"""The errors of the query path: results that do not add up, a preflight that refuses, a job refused."""

from __future__ import annotations

from airflow_provider_sfbulk.exceptions import SalesforceBulkError

__all__ = ["QueryExtractError", "QueryJobRefused", "QueryPreflightError"]


class QueryExtractError(SalesforceBulkError):
    """The results that arrived do not add up: counts, headers or the job's state.

    Nothing is wrong with the request itself; the message names the page and the numbers that disagree.
    """


class QueryPreflightError(SalesforceBulkError):
    """A check before the query job exists refused it (the org's daily query job allowance is used up)."""


class QueryJobRefused(SalesforceBulkError):
    """A query job could not be started, and running the task again cannot help.

    The org's daily allowance is used up, Salesforce rejected the SOQL, or a slice that timed out cannot be
    split any further. The operator fails the task without retrying.
    """
