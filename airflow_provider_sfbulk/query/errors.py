"""The errors of the query path: results that do not add up, and a preflight that refuses."""

from __future__ import annotations

from airflow_provider_sfbulk.exceptions import SalesforceBulkError

__all__ = ["QueryExtractError", "QueryPreflightError"]


class QueryExtractError(SalesforceBulkError):
    """The results that arrived do not add up: counts, headers or the job's state.

    Nothing is wrong with the request itself; the message names the page and the numbers that disagree.
    """


class QueryPreflightError(SalesforceBulkError):
    """A check before the query job exists refused it (the org's daily query job allowance is used up)."""
