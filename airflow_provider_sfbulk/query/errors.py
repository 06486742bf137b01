"""The one error of the query extraction path: results that do not add up."""

from __future__ import annotations

from airflow_provider_sfbulk.exceptions import SalesforceBulkError

__all__ = ["QueryExtractError"]


class QueryExtractError(SalesforceBulkError):
    """The results that arrived do not add up: counts, headers or the job's state.

    Nothing is wrong with the request itself; the message names the page and the numbers that disagree.
    """
