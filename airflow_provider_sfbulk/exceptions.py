"""Exceptions raised by the Salesforce Bulk API 2.0 provider.

Every error the hooks raise is a :class:`SalesforceBulkError`. It carries the HTTP status (``None`` when no
response was received), the Salesforce ``errorCode`` (or the OAuth ``error``), the message and, where one
is known, the job id. Subclasses say what the caller can do about it:

========================================  ===========================================================
:class:`SalesforceBulkAuthError`           credentials rejected, token expired and could not be renewed
:class:`SalesforceBulkConfigError`         the Airflow connection lacks a field or has a bad value
:class:`SalesforceBulkNotFoundError`       HTTP 404: the job (or resource) does not exist (or expired)
:class:`SalesforceBulkInvalidStateError`   the job is in a state that does not allow the request
:class:`SalesforceBulkLimitExceededError`  an org limit was hit (the daily cap is not retried)
:class:`SalesforceBulkBadRequestError`     any other 4xx: bad SOQL, unknown object or field, ...
:class:`SalesforceBulkTransientError`      5xx, 429, concurrency limits, network errors: retry later
:class:`SalesforceBulkOutcomeUnknownError` a request that must not be repeated may or may not have
                                           taken effect (job creation, data upload)
:class:`SalesforceBulkProtocolError`       the server answered something this client cannot parse
========================================  ===========================================================
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException

__all__ = [
    "Cancelled",
    "SalesforceBulkAuthError",
    "SalesforceBulkBadRequestError",
    "SalesforceBulkConfigError",
    "SalesforceBulkConnectionError",
    "SalesforceBulkError",
    "SalesforceBulkInvalidStateError",
    "SalesforceBulkLimitExceededError",
    "SalesforceBulkNotFoundError",
    "SalesforceBulkOutcomeUnknownError",
    "SalesforceBulkProtocolError",
    "SalesforceBulkRateLimitError",
    "SalesforceBulkTransientError",
]


class Cancelled(Exception):
    """Raised by work that noticed its stop event: another item of the same batch failed first.

    Not a :class:`SalesforceBulkError`: it never leaves the thread runner
    (:func:`~airflow_provider_sfbulk.common.threads.run_concurrently` raises the first real error).
    """


class SalesforceBulkError(AirflowException):
    """Base class of every error raised by this provider.

    :param message: human readable text (Salesforce's ``message`` or ``error_description`` when known).
    :param status: HTTP status of the response, ``None`` when no response was received.
    :param error_code: Salesforce ``errorCode`` (e.g. ``INVALID_FIELD``) or OAuth ``error``.
    :param job_id: the job the request was about, when there is one.
    """

    #: True when repeating the same request later may succeed.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_code = error_code
        self.job_id = job_id
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.error_code:
            parts.append(self.error_code)
        prefix = " ".join(parts)
        text = f"{prefix}: {self.message}" if prefix else self.message
        if self.job_id:
            text = f"{text} (job {self.job_id})"
        return text

    def __reduce__(self):  # keep attributes when pickled (e.g. across processes)
        return (
            _rebuild,
            (type(self), self.message, self.status, self.error_code, self.job_id, self.__dict__),
        )


def _rebuild(cls, message, status, error_code, job_id, state):  # type: ignore[no-untyped-def]
    obj = cls.__new__(cls)
    SalesforceBulkError.__init__(obj, message, status=status, error_code=error_code, job_id=job_id)
    obj.__dict__.update(state)
    return obj


class SalesforceBulkAuthError(SalesforceBulkError):
    """Authentication failed: bad credentials, an OAuth error, or a session that could not be renewed."""


class SalesforceBulkConfigError(SalesforceBulkError):
    """The Airflow connection is incomplete or invalid; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class SalesforceBulkNotFoundError(SalesforceBulkError):
    """HTTP 404: the job does not exist, was deleted, or expired (results are kept for 7 days)."""


class SalesforceBulkInvalidStateError(SalesforceBulkError):
    """The job's current state does not allow the request (e.g. closing a job twice, a second upload)."""


class SalesforceBulkLimitExceededError(SalesforceBulkError):
    """An org limit was exceeded. The daily request cap does not clear soon, so it is never retried."""


class SalesforceBulkBadRequestError(SalesforceBulkError):
    """The request was rejected as invalid (bad SOQL, unknown object or field, wrong API version, ...)."""


class SalesforceBulkProtocolError(SalesforceBulkError):
    """The server's answer does not have the shape the Bulk API 2.0 documents."""


class SalesforceBulkTransientError(SalesforceBulkError):
    """A temporary failure (5xx, 429, concurrency limit, network). Safe calls were already retried."""

    retryable = True


class SalesforceBulkConnectionError(SalesforceBulkTransientError):
    """No usable HTTP response: connection refused, reset, timed out, or a TLS failure."""


class SalesforceBulkRateLimitError(SalesforceBulkTransientError, SalesforceBulkLimitExceededError):
    """HTTP 429 or a concurrency ``REQUEST_LIMIT_EXCEEDED``: retryable after a pause."""


class SalesforceBulkOutcomeUnknownError(SalesforceBulkError):
    """A request that must not be repeated blindly failed after it may have reached Salesforce.

    Raised for job creation and data upload when the connection broke after the request was sent, or the
    server answered 5xx. For a JSON ingest job creation the possible leftover is an ``Open`` job
    without data, which Salesforce never processes; for a multipart create or an upload the job may hold
    data: abort it (``abort_job``) and start over with a new job.
    """
