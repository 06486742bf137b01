"""Map Salesforce error responses to the :mod:`airflow_provider_sfbulk.exceptions` family (pure)."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkBadRequestError,
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkLimitExceededError,
    SalesforceBulkNotFoundError,
    SalesforceBulkProtocolError,
    SalesforceBulkRateLimitError,
    SalesforceBulkTransientError,
)

#: ``errorCode`` values that mean "the job is not in a state that allows this".
INVALID_STATE_CODES = frozenset({"INVALIDJOBSTATE", "INVALID_JOB_STATE", "INVALID_STATE"})
#: ``INVALIDJOB`` is also used for bad create bodies; only this message (a second upload, Salesforce's
#: spelling included) is a state problem.
_SECOND_UPLOAD_MARKERS = ("multipe contents", "multiple contents")
#: Statuses a repeatable request is retried on.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
INVALID_SESSION_ID = "INVALID_SESSION_ID"
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
_MAX_MESSAGE = 2000


def parse_error_body(body: bytes) -> tuple[str | None, str]:
    """Return ``(error_code, message)`` from a REST error array, an OAuth error object or plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        document: Any = json.loads(text) if text else None
    except ValueError:
        document = None
    if isinstance(document, list) and document and isinstance(document[0], dict):
        first = document[0]
        code = first.get("errorCode") or first.get("error")
        messages = [str(item.get("message", "")) for item in document if isinstance(item, dict)]
        message = "; ".join(m for m in messages if m) or str(code or "error")
        return (str(code) if code else None), message[:_MAX_MESSAGE]
    if isinstance(document, dict):
        if "error" in document:  # OAuth token endpoint
            code = str(document["error"])
            return code, str(document.get("error_description") or code)[:_MAX_MESSAGE]
        if "errorCode" in document:
            return str(document["errorCode"]), str(document.get("message", ""))[:_MAX_MESSAGE]
    return None, (text[:_MAX_MESSAGE] or "no response body")


def is_concurrency_limit(error_code: str | None, message: str) -> bool:
    """True for ``REQUEST_LIMIT_EXCEEDED`` of the concurrent-requests kind, which clears within seconds.

    Salesforce uses one code for both: ``ConcurrentRequests (Concurrent API Requests) Limit exceeded.`` or
    ``ConcurrentPerOrgLongTxn Limit exceeded`` (retry later) and ``TotalRequests Limit exceeded.`` (the
    rolling 24-hour cap: fail fast).
    """
    return error_code == REQUEST_LIMIT_EXCEEDED and "concurrent" in message.lower()


def is_retryable_status(status: int, error_code: str | None, message: str) -> bool:
    """True when repeating the same (repeatable) request later may succeed."""
    return status in RETRYABLE_STATUSES or is_concurrency_limit(error_code, message)


def is_refusal(status: int, error_code: str | None, message: str) -> bool:
    """True when the server refused the request before acting on it.

    Then even a job creation or an upload may be sent again: HTTP 429 and the concurrent-requests
    ``REQUEST_LIMIT_EXCEEDED``. A 5xx is not a refusal: the request may have taken effect before the error.
    """
    return status == 429 or is_concurrency_limit(error_code, message)


def is_refreshable_session_error(status: int, error_code: str | None, message: str) -> bool:
    """True for the 401 ``INVALID_SESSION_ID`` that a new access token cures.

    A 401 saying the session "is not valid for use with the REST API" carries the same code but a new token
    of the same kind will not help, so it is not refreshed.
    """
    return status == 401 and error_code == INVALID_SESSION_ID and "not valid for use" not in message


def error_from_response(
    status: int, body: bytes, *, job_id: str | None = None, oauth: bool = False
) -> SalesforceBulkError:
    """Build the exception for an error response (any status that is not 2xx)."""
    code, message = parse_error_body(body)
    kwargs: dict[str, Any] = {"status": status, "error_code": code, "job_id": job_id}
    if status == 429 or is_concurrency_limit(code, message):
        return SalesforceBulkRateLimitError(message, **kwargs)
    if status >= 500:
        return SalesforceBulkTransientError(message, **kwargs)
    if oauth and 400 <= status < 500:
        return SalesforceBulkAuthError(message, **kwargs)
    if status == 401:
        return SalesforceBulkAuthError(message, **kwargs)
    if code == REQUEST_LIMIT_EXCEEDED:
        return SalesforceBulkLimitExceededError(message, **kwargs)
    if status == 403:
        return SalesforceBulkAuthError(message, **kwargs)
    if status == 404:
        return SalesforceBulkNotFoundError(message, **kwargs)
    if code and code.upper() in INVALID_STATE_CODES:
        return SalesforceBulkInvalidStateError(message, **kwargs)
    if code == "INVALIDJOB" and any(marker in message.lower() for marker in _SECOND_UPLOAD_MARKERS):
        return SalesforceBulkInvalidStateError(message, **kwargs)
    if 400 <= status < 500:
        return SalesforceBulkBadRequestError(message, **kwargs)
    return SalesforceBulkProtocolError(f"unexpected HTTP status: {message}", **kwargs)
