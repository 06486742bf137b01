"""Behaviour switches that can change while the emulator runs (``/__emulator/settings``).

They start from :class:`~airflow_provider_sfbulk.emulator.config.EmulatorConfig` and can be read or
changed at runtime through the admin endpoint or :meth:`EmulatorServer.update_settings
<airflow_provider_sfbulk.emulator.testing.EmulatorServer.update_settings>`:

``result_pages_shape``
    how ``GET /jobs/query/{id}/resultPages`` answers (see :mod:`.result_pages`).
``query_timeout_records``
    a query job whose result would hold more than this many records fails the way Salesforce fails a
    query that runs too long; ``None`` (default) turns it off.
``query_timeout_style``
    which of the two reported failures that is (see :data:`QUERY_TIMEOUT_STYLES`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sfbulk.emulator.result_pages import SHAPE_DOCUMENTED, check_shape

#: Salesforce retries a Bulk API 2.0 query internally 15 times before it fails the job ("If you receive
#: a message that the API retried more than 15 times, apply a filter criteria and try again.", Bulk API
#: 2.0 Developer Guide, "Understanding Bulk API 2.0 Query").
QUERY_RETRIES = 15
#: ``retries``: ``Failed``, ``retries`` 15 and ``errorMessage`` "InternalServerError : Retried more than
#: 15 times" (the documented Bulk API 2.0 outcome). ``timeout``: ``Failed``, ``retries`` 0 and
#: ``errorMessage`` "QUERY_TIMEOUT : Your query request was running for too long." (the Bulk API 1.0
#: documented outcome of a query over 2 minutes; the message is the one Salesforce answers synchronous
#: queries with, airbytehq/airbyte#17503). The exact errorMessage texts of Bulk API 2.0 query jobs are
#: not documented: both are best guesses that contain the tokens clients match on.
QUERY_TIMEOUT_STYLES = ("retries", "timeout")
QUERY_TIMEOUT_MESSAGES = {
    "retries": f"InternalServerError : Retried more than {QUERY_RETRIES} times",
    "timeout": "QUERY_TIMEOUT : Your query request was running for too long.",
}


@dataclass
class RuntimeSettings:
    """The switches of one running emulator (thread-safe updates)."""

    result_pages_shape: str = SHAPE_DOCUMENTED
    query_timeout_records: int | None = None
    query_timeout_style: str = "retries"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate(self.to_dict())

    @staticmethod
    def _validate(values: dict[str, Any]) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for key, value in values.items():
            if key == "result_pages_shape":
                checked[key] = check_shape(str(value))
            elif key == "query_timeout_records":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise ValueError("query_timeout_records must be a non-negative integer or null")
                checked[key] = value
            elif key == "query_timeout_style":
                if value not in QUERY_TIMEOUT_STYLES:
                    raise ValueError(f"query_timeout_style must be one of {', '.join(QUERY_TIMEOUT_STYLES)}")
                checked[key] = value
            else:
                raise ValueError(f"unknown setting {key!r}")
        return checked

    def update(self, **values: Any) -> None:
        """Change some settings; all or nothing (ValueError on an unknown key or a bad value)."""
        checked = self._validate(values)
        with self._lock:
            for key, value in checked.items():
                setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the admin endpoint shows them."""
        return {"result_pages_shape": self.result_pages_shape,
                "query_timeout_records": self.query_timeout_records,
                "query_timeout_style": self.query_timeout_style}

    def query_timeout(self, records: int) -> tuple[str, int] | None:
        """``(errorMessage, retries)`` when a query returning ``records`` rows times out, else None."""
        with self._lock:
            limit, style = self.query_timeout_records, self.query_timeout_style
        if limit is None or records <= limit:
            return None
        return QUERY_TIMEOUT_MESSAGES[style], (QUERY_RETRIES if style == "retries" else 0)
