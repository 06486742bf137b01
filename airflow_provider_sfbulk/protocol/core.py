"""The core every Bulk API 2.0 flow runs on: the shared access token and one authenticated exchange.

:class:`ClientCore` fetches the token lazily (concurrent callers share one fetch), renews it once on a
401 ``INVALID_SESSION_ID``, sends a :class:`Call` with retries and backoff, restarts interrupted
downloads and maps error responses to exceptions. The endpoint flows built on it live in
:mod:`~airflow_provider_sfbulk.protocol.job_flows`, :mod:`~airflow_provider_sfbulk.protocol.ingest_flows`
and :mod:`~airflow_provider_sfbulk.protocol.client`, which assembles them into ``BulkClient``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkConnectionError,
    SalesforceBulkError,
    SalesforceBulkOutcomeUnknownError,
)
from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.auth import (
    TOKEN_CACHE,
    TokenCache,
    TokenInfo,
    build_token_request,
    parse_token_response,
    static_token,
    token_request_error,
)
from airflow_provider_sfbulk.protocol.connection import AuthType, ConnectionConfig
from airflow_provider_sfbulk.protocol.effects import Flow, Send, Sleep, T, TransportFailure
from airflow_provider_sfbulk.protocol.errors import (
    error_from_response,
    is_refreshable_session_error,
    is_refusal,
    is_retryable_status,
    parse_error_body,
)
from airflow_provider_sfbulk.protocol.messages import (
    BodySink,
    BufferSink,
    Request,
    Response,
    StreamSink,
    UploadSource,
    WritableCheckpoint,
)
from airflow_provider_sfbulk.protocol.retry import (
    DEFAULT_RETRY_POLICY,
    Repeat,
    RetryPolicy,
    should_retry_status,
    should_retry_transport_failure,
)

# The logger keeps the name it had before the client was split into modules.
_log = logging.getLogger("airflow_provider_sfbulk.protocol.client")

#: How long a caller waits between checks while another caller fetches the shared token.
TOKEN_WAIT_INTERVAL = 0.05


@dataclass(frozen=True)
class Call(Generic[T]):
    """One authenticated API call: how to build it, how to read its success, how careful to be."""

    what: str
    build: Callable[[str, TokenInfo], Request]  # (data base URL, token) -> request
    parse: Callable[[Response], T]
    repeat: Repeat = Repeat.SAFE
    job_id: str | None = None
    download: WritableCheckpoint | None = None
    upload: UploadSource | None = None
    #: Called with the error when it followed a retry of a request that may already have taken effect;
    #: may return a flow producing the result after all (e.g. the job already has the requested state).
    recover: Callable[[SalesforceBulkError], Flow[T] | None] | None = None


@dataclass
class _Exchange:
    response: Response
    ambiguous_retry: bool  # an earlier attempt may have reached the server


class ClientCore:
    """Token handling and the authenticated exchange under every flow of :class:`~.client.BulkClient`.

    The constructor's parameters are documented on :class:`~.client.BulkClient`.
    """

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        cache: TokenCache = TOKEN_CACHE,
        on_token: Callable[[TokenInfo], None] | None = None,
        logger: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.cache = cache
        self._on_token = on_token
        self._log = logger or _log
        self._rng = rng or random.Random()
        self._key = (config.conn_id, config.fingerprint)

    # --- tokens -----------------------------------------------------------------------------------------

    def cached_token(self) -> TokenInfo | None:
        """The token in the cache (or the static one), without any I/O."""
        if self.config.auth_type is AuthType.ACCESS_TOKEN:
            return static_token(self.config)
        return self.cache.get(self._key)

    def token(self) -> Flow[TokenInfo]:
        """The cached token, fetched on first use; concurrent callers share one fetch."""
        if self.config.auth_type is AuthType.ACCESS_TOKEN:
            return static_token(self.config)
        stale_after = self.config.timeout * self.policy.max_attempts + self.policy.max_delay
        while True:
            cached = self.cache.get(self._key)
            if cached is not None:
                return cached
            ticket = self.cache.claim(self._key, stale_after)
            if ticket is None:
                yield Sleep(TOKEN_WAIT_INTERVAL)
                continue
            token: TokenInfo | None = None
            try:
                token = yield from self._fetch_token()
            finally:
                self.cache.release(self._key, ticket, token)
            return token

    def _fetch_token(self) -> Flow[TokenInfo]:
        refresh_token = self.cache.refresh_token_for(self._key)
        exchange = yield from self._exchange(
            lambda: build_token_request(self.config, refresh_token=refresh_token),
            Repeat.SAFE,
            what="token request",
        )
        response = exchange.response
        if not 200 <= response.status < 300:
            raise token_request_error(self.config, response.status, response.body)
        token = parse_token_response(api.decode_json(response.body, "token request"))
        if self._on_token is not None:
            self._on_token(token)
        return token

    def _renew(self, stale: TokenInfo) -> Flow[TokenInfo]:
        if self.config.auth_type is AuthType.ACCESS_TOKEN:
            raise SalesforceBulkAuthError(
                "the access token was rejected (INVALID_SESSION_ID) and an access_token connection cannot "
                "renew it; store a new token or use a grant the hook can repeat",
                status=401,
                error_code="INVALID_SESSION_ID",
            )
        newer = self.cache.invalidate(self._key, stale)
        if newer is not None:
            return newer
        return (yield from self.token())

    # --- the engine -------------------------------------------------------------------------------------

    def _exchange(
        self,
        make_request: Callable[[], Request],
        repeat: Repeat,
        *,
        what: str,
        job_id: str | None = None,
        download: WritableCheckpoint | None = None,
        upload: UploadSource | None = None,
    ) -> Flow[_Exchange]:
        """Send with retries. Returns the last response (2xx or not); raises when the network failed."""
        attempt = 0
        ambiguous = False
        while True:
            attempt += 1
            if upload is not None and not upload.rewind():
                raise SalesforceBulkOutcomeUnknownError(
                    f"{what}: the upload stream was partly sent and cannot be replayed; abort the job and "
                    "upload again into a new job",
                    job_id=job_id,
                )
            request = make_request()
            sinks: list[BodySink] = []

            def open_sink(
                status: int, headers: Mapping[str, str], _sinks: list[BodySink] = sinks
            ) -> BodySink:
                encoding = _header(headers, "Content-Encoding")
                if download is not None and 200 <= status < 300:
                    sink: BodySink = StreamSink(encoding, download.writable)
                else:
                    sink = BufferSink(encoding)
                _sinks.append(sink)
                return sink

            outcome = yield Send(request, open_sink)
            if isinstance(outcome, TransportFailure):
                self._log.debug("%s %s -> %s", request.method, request.path, outcome.description)
                written = sinks[-1].decoded_bytes if sinks and isinstance(sinks[-1], StreamSink) else 0
                retry = outcome.retryable and should_retry_transport_failure(
                    repeat, request_sent=outcome.request_sent
                )
                if retry and download is not None and not download.restart(written):
                    raise SalesforceBulkConnectionError(
                        f"{what}: download interrupted after {written} bytes ({outcome.description}); the "
                        "writable is not seekable, so the download cannot restart cleanly",
                        job_id=job_id,
                    )
                if not retry or not self.policy.may_retry(attempt):
                    if repeat is Repeat.UNSAFE and outcome.request_sent:
                        raise SalesforceBulkOutcomeUnknownError(
                            f"{what}: connection failed after the request was sent ({outcome.description}); "
                            "it may or may not have taken effect",
                            job_id=job_id,
                        )
                    raise SalesforceBulkConnectionError(
                        f"{what}: {outcome.description} (after {attempt} attempt(s))", job_id=job_id
                    )
                ambiguous = ambiguous or outcome.request_sent
                yield Sleep(self.policy.delay(attempt, None, self._rng))
                continue
            response: Response = outcome
            self._log.debug("%s %s -> %s", request.method, request.path, response.status)
            if 200 <= response.status < 300:
                return _Exchange(response, ambiguous)
            code, message = parse_error_body(response.body)
            retryable = is_retryable_status(response.status, code, message)
            # a refused upload is sent again only from a body that can be replayed
            refused = is_refusal(response.status, code, message) and (upload is None or upload.rewindable)
            if should_retry_status(repeat, retryable, refused=refused) and self.policy.may_retry(attempt):
                ambiguous = ambiguous or response.status >= 500
                yield Sleep(self.policy.delay(attempt, response.header("Retry-After"), self._rng))
                continue
            return _Exchange(response, ambiguous)

    def execute(self, call: Call[T]) -> Flow[T]:
        """Run ``call``: authenticate, send with retries, renew the token once on 401, parse or raise."""
        token = yield from self.token()
        exchange = yield from self._send_call(call, token)
        response = exchange.response
        code, message = parse_error_body(response.body) if response.status >= 300 else (None, "")
        if is_refreshable_session_error(response.status, code, message):
            self._log.debug("session expired or invalid; renewing the access token once")
            if call.upload is not None and not call.upload.rewind():
                raise SalesforceBulkAuthError(
                    f"{call.what}: the session expired while uploading a stream that cannot be replayed; "
                    "the job is still Open: upload again",
                    status=401,
                    error_code=code,
                    job_id=call.job_id,
                )
            token = yield from self._renew(token)
            exchange = yield from self._send_call(call, token)
            response = exchange.response
        if 200 <= response.status < 300:
            return call.parse(response)
        error = self._error(call, response)
        if exchange.ambiguous_retry and call.recover is not None:
            recovery = call.recover(error)
            if recovery is not None:
                return (yield from recovery)
        raise error

    def _send_call(self, call: Call[Any], token: TokenInfo) -> Flow[_Exchange]:
        base = api.data_url(token.instance_url, self.config.api_version)
        return (
            yield from self._exchange(
                lambda: call.build(base, token),
                call.repeat,
                what=call.what,
                job_id=call.job_id,
                download=call.download,
                upload=call.upload,
            )
        )

    @staticmethod
    def _error(call: Call[Any], response: Response) -> SalesforceBulkError:
        if call.repeat is Repeat.UNSAFE and response.status >= 500:
            code, message = parse_error_body(response.body)
            return SalesforceBulkOutcomeUnknownError(
                f"{call.what}: server error, the request may or may not have taken effect: {message}",
                status=response.status,
                error_code=code,
                job_id=call.job_id,
            )
        return error_from_response(response.status, response.body, job_id=call.job_id)

    # --- endpoints --------------------------------------------------------------------------------------

    def instance_url(self) -> Flow[str]:
        """The instance URL every API call goes to (fetches a token on first use)."""
        token = yield from self.token()
        return token.instance_url

    def get_user_id(self) -> Flow[str | None]:
        """The connection user's id (``005...``, from the token's identity URL; fetches a token on first use).

        ``None`` for an ``access_token`` connection, whose token carries no identity URL.
        """
        token = yield from self.token()
        return token.user_id


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None

