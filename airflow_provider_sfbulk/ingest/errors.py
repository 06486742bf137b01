"""How the ingest engine says that a load cannot go on (the operator turns them into task failures)."""

from __future__ import annotations

from typing import Any

from airflow_provider_sfbulk.exceptions import SalesforceBulkError

__all__ = ["IngestInputError", "IngestLoadFailed"]


class IngestInputError(SalesforceBulkError):
    """The load cannot be done as asked, and a retry would not change that.

    Bad parameters, a bad or changed source, an earlier load that cannot safely be replaced, or a lost job
    that cannot be told apart from others.
    """


class IngestLoadFailed(SalesforceBulkError):
    """The load ran to its end but did not succeed.

    A job Failed, the counts do not reconcile, or too many rows failed. ``result`` is the load's summary,
    written and pushed all the same.
    """

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result
