"""Retry policy: which failures are retried, and how long to wait (pure).

Calls come in two kinds (:class:`Repeat`):

- ``SAFE``: repeating the call cannot do harm: ``GET`` (job info, lists, limits, result downloads),
  ``PATCH`` of the job state (closing or aborting twice leaves the same state), ``DELETE``, and the OAuth
  token request. These are retried on connection errors, timeouts, HTTP 5xx, 429 and the concurrency
  flavour of ``REQUEST_LIMIT_EXCEEDED``.
- ``UNSAFE``: job creation (JSON or multipart) and the data upload. A repeat may create a second job or
  upload twice, so they are retried only when the connection could not be opened at all (nothing was
  sent) or the server refused the request before acting on it (429, the concurrent-requests
  ``REQUEST_LIMIT_EXCEEDED``; an upload only when its body can be sent again). Any other failure raises at
  once (see :class:`~airflow_provider_sfbulk.exceptions.SalesforceBulkOutcomeUnknownError`).

Backoff is exponential with "full jitter": the n-th retry waits a uniformly random time in
``[0, min(max_delay, base_delay * 2 ** (n - 1))]``. A ``Retry-After`` header (seconds) is honoured,
capped at ``max_delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum


class Repeat(str, Enum):
    """Whether a call may be sent again after a failure whose outcome is unknown."""

    SAFE = "safe"
    UNSAFE = "unsafe"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently repeatable calls are retried.

    :param max_attempts: total attempts of one call, the first included (1 disables retries).
    :param base_delay: upper bound of the first backoff, in seconds.
    :param max_delay: cap of every backoff, in seconds.
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        if retry_number < 1:
            raise ValueError("retry_number starts at 1")
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(retry_number - 1, 62))
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, retry_number: int, retry_after: str | None, rng: random.Random | None = None) -> float:
        """Backoff for ``retry_number``, or the server's ``Retry-After`` seconds when it gave one."""
        if retry_after is not None:
            try:
                seconds = float(retry_after.strip())
            except ValueError:
                seconds = -1.0
            if seconds >= 0:
                return min(seconds, self.max_delay)
        return self.backoff(retry_number, rng)

    def may_retry(self, attempt: int) -> bool:
        """True when attempt number ``attempt`` (1-based) may be followed by another."""
        return attempt < self.max_attempts


def should_retry_transport_failure(repeat: Repeat, *, request_sent: bool) -> bool:
    """Retry a connection-level failure? Unsafe calls only when nothing reached the server."""
    return repeat is Repeat.SAFE or not request_sent


def should_retry_status(repeat: Repeat, retryable_status: bool, *, refused: bool = False) -> bool:
    """Whether an HTTP error response is sent again.

    Repeatable calls for retryable statuses; any call the server refused without acting on it (``refused``:
    see :func:`~airflow_provider_sfbulk.protocol.errors.is_refusal`).
    """
    return refused or (repeat is Repeat.SAFE and retryable_status)


#: Defaults used by the hooks unless overridden.
DEFAULT_RETRY_POLICY = RetryPolicy()
