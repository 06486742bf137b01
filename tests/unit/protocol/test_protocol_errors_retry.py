"""Error mapping and retry policy (pure)."""

from __future__ import annotations

import json
import pickle
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkBadRequestError,
    SalesforceBulkConfigError,
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkLimitExceededError,
    SalesforceBulkNotFoundError,
    SalesforceBulkProtocolError,
    SalesforceBulkRateLimitError,
    SalesforceBulkTransientError,
)
from airflow_provider_sfbulk.protocol.errors import (
    error_from_response,
    is_refreshable_session_error,
    is_refusal,
    is_retryable_status,
    parse_error_body,
)
from airflow_provider_sfbulk.protocol.retry import (
    Repeat,
    RetryPolicy,
    should_retry_status,
    should_retry_transport_failure,
)


def sf_error(code: str, message: str) -> bytes:
    return json.dumps([{"errorCode": code, "message": message}]).encode()


@pytest.mark.parametrize(
    ("status", "body", "oauth", "expected", "retryable"),
    [
        (401, b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]', False,
         SalesforceBulkAuthError, False),
        (400, b'{"error":"invalid_grant","error_description":"authentication failure"}', True,
         SalesforceBulkAuthError, False),
        (404, sf_error("NOT_FOUND", "The requested resource does not exist"), False,
         SalesforceBulkNotFoundError, False),
        (400, sf_error("INVALIDJOBSTATE", "Invalid state transition"), False,
         SalesforceBulkInvalidStateError, False),
        (400, sf_error("INVALIDJOB", "Found multipe contents for job: <750>, please 'Close'"), False,
         SalesforceBulkInvalidStateError, False),
        (400, sf_error("INVALIDJOB", "InvalidJob : The object field is required"), False,
         SalesforceBulkBadRequestError, False),
        (400, sf_error("MALFORMED_QUERY", "unexpected token: FORM"), False, SalesforceBulkBadRequestError,
         False),
        (409, sf_error("API_VERSION_MISMATCH", "wrong version"), False, SalesforceBulkBadRequestError, False),
        (403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), False,
         SalesforceBulkLimitExceededError, False),
        (403, sf_error("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded"), False,
         SalesforceBulkRateLimitError, True),
        (429, sf_error("REQUEST_LIMIT_EXCEEDED", "slow down"), False, SalesforceBulkRateLimitError, True),
        (403, sf_error("INSUFFICIENT_ACCESS", "no"), False, SalesforceBulkAuthError, False),
        (500, sf_error("UNKNOWN_EXCEPTION", "boom"), False, SalesforceBulkTransientError, True),
        (503, b"<html>busy</html>", False, SalesforceBulkTransientError, True),
        (302, b"", False, SalesforceBulkProtocolError, False),
    ],
)
def test_error_mapping(status, body, oauth, expected, retryable):
    error = error_from_response(status, body, job_id="750X", oauth=oauth)
    assert type(error) is expected
    assert error.status == status
    assert error.job_id == "750X"
    assert error.retryable is retryable
    assert isinstance(error, SalesforceBulkError)


def test_oauth_error_carries_description_and_code():
    error = error_from_response(
        400, b'{"error":"invalid_grant","error_description":"expired access/refresh token"}', oauth=True
    )
    assert error.error_code == "invalid_grant"
    assert error.message == "expired access/refresh token"
    assert "invalid_grant" in str(error)
    assert "expired access/refresh token" in str(error)


def test_rate_limit_is_both_limit_and_transient():
    error = error_from_response(429, b"")
    assert isinstance(error, SalesforceBulkLimitExceededError)
    assert isinstance(error, SalesforceBulkTransientError)


def test_parse_error_body_shapes():
    body = b'[{"message":"a","errorCode":"X"},{"message":"b","errorCode":"Y"}]'
    assert parse_error_body(body) == ("X", "a; b")
    assert parse_error_body(b'{"errorCode":"X","message":"m"}') == ("X", "m")
    assert parse_error_body(b"") == (None, "no response body")
    assert parse_error_body(b"plain") == (None, "plain")


def test_refreshable_session_error():
    assert is_refreshable_session_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
    assert not is_refreshable_session_error(
        401, "INVALID_SESSION_ID", "This session is not valid for use with the REST API"
    )
    assert not is_refreshable_session_error(403, "INVALID_SESSION_ID", "Session expired or invalid")
    assert not is_refreshable_session_error(401, "INVALID_AUTH", "x")


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [(500, None, "", True), (502, None, "", True), (503, None, "", True), (504, None, "", True),
     (429, None, "", True),
     (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded.", True),
     (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", False), (400, "INVALIDJOB", "", False),
     (404, "NOT_FOUND", "", False), (401, "INVALID_SESSION_ID", "", False)],
)
def test_retryable_statuses(status, code, message, expected):
    assert is_retryable_status(status, code, message) is expected


def test_repeat_decisions():
    assert should_retry_transport_failure(Repeat.SAFE, request_sent=True)
    assert should_retry_transport_failure(Repeat.UNSAFE, request_sent=False)
    assert not should_retry_transport_failure(Repeat.UNSAFE, request_sent=True)
    assert should_retry_status(Repeat.SAFE, True)
    assert not should_retry_status(Repeat.UNSAFE, True)
    assert not should_retry_status(Repeat.SAFE, False)
    assert should_retry_status(Repeat.UNSAFE, True, refused=True)
    assert should_retry_status(Repeat.SAFE, True, refused=True)
    assert not should_retry_status(Repeat.UNSAFE, False, refused=False)


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [(429, None, "", True), (429, "REQUEST_LIMIT_EXCEEDED", "slow down", True),
     (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded.", True),
     (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", False),
     (503, None, "", False), (500, "UNKNOWN_EXCEPTION", "", False), (400, "INVALIDJOB", "", False)],
)
def test_refusals(status, code, message, expected):
    assert is_refusal(status, code, message) is expected


@given(
    retry=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=120),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_full_jitter_within_bounds(retry, base, cap, seed):
    policy = RetryPolicy(max_attempts=3, base_delay=base, max_delay=cap)
    delay = policy.backoff(retry, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** (retry - 1)) + 1e-9


def test_backoff_grows_and_spreads():
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0)
    rng = random.Random(7)
    samples = [policy.backoff(4, rng) for _ in range(2000)]
    assert max(samples) <= 8.0
    assert max(samples) > 7.0  # the full range is used: it is jitter over [0, 8], not a fixed delay
    assert min(samples) < 1.0
    assert max(policy.backoff(50, rng) for _ in range(200)) <= 30.0


def test_retry_after_is_honoured_and_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert policy.delay(1, "3") == 3.0
    assert policy.delay(1, "3600") == 10.0
    assert 0 <= policy.delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") <= 1.0


def test_attempt_budget():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.may_retry(n) for n in (1, 2, 3)] == [True, True, False]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_exceptions_pickle_with_their_fields():
    error = SalesforceBulkNotFoundError("gone", status=404, error_code="NOT_FOUND", job_id="750X")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is SalesforceBulkNotFoundError
    assert (clone.status, clone.error_code, clone.job_id, str(clone)) == (
        404,
        "NOT_FOUND",
        "750X",
        str(error),
    )
    config = pickle.loads(pickle.dumps(SalesforceBulkConfigError("missing", field="client_id")))
    assert config.field == "client_id"
