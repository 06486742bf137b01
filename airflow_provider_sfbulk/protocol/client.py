"""The sans-IO Bulk API 2.0 client: every flow written once, driven by a sync or an async transport.

A *flow* is a generator. It yields effects and receives their results:

- :class:`Send` ``(request, open_sink)``: the transport sends ``request``; once the status line and
  headers are in, it calls ``open_sink(status, headers)`` and feeds every raw body chunk to that sink,
  then calls ``sink.finish()``. It sends back a :class:`~.messages.Response`, or a
  :class:`TransportFailure` when the network failed (it never raises for network errors).
- :class:`Sleep` ``(seconds)``: the transport sleeps (``time.sleep`` or ``asyncio.sleep``) and sends
  back ``None``.
- :class:`Blocking` ``(func)``: blocking file I/O; the result of ``func()`` is sent back (the async
  driver calls it in a worker thread).

The flow's return value (``StopIteration.value``) is the call's result; errors are raised from the
generator. Authentication (lazy token, one renewal on 401 ``INVALID_SESSION_ID``), retries with backoff,
download restarts and error mapping all live here, so the hooks contain nothing but a ``_send`` and a
small driver loop each.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkConnectionError,
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkNotFoundError,
    SalesforceBulkOutcomeUnknownError,
)
from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.api import (
    JobInfo,
    JobList,
    Limits,
    QueryResultPage,
    ResultPageRef,
    ResultPagesPage,
)
from airflow_provider_sfbulk.protocol.auth import (
    TOKEN_CACHE,
    TokenCache,
    TokenInfo,
    build_token_request,
    parse_token_response,
    static_token,
)
from airflow_provider_sfbulk.protocol.connection import AuthType, ConnectionConfig
from airflow_provider_sfbulk.protocol.errors import (
    error_from_response,
    is_refreshable_session_error,
    is_retryable_status,
    parse_error_body,
)
from airflow_provider_sfbulk.protocol.messages import (
    BodySink,
    BufferSink,
    Request,
    Response,
    StreamSink,
    UploadData,
    UploadSource,
    Writable,
    WritableCheckpoint,
)
from airflow_provider_sfbulk.protocol.retry import (
    DEFAULT_RETRY_POLICY,
    Repeat,
    RetryPolicy,
    should_retry_status,
    should_retry_transport_failure,
)
from airflow_provider_sfbulk.protocol.states import IngestOperation, JobKind, JobState, QueryOperation

T = TypeVar("T")
_log = logging.getLogger(__name__)

#: How long a caller waits between checks while another caller fetches the shared token.
TOKEN_WAIT_INTERVAL = 0.05


@dataclass(frozen=True)
class Send:
    """Effect: send ``request``; open the body sink with ``open_sink(status, headers)``."""

    request: Request
    open_sink: Callable[[int, Mapping[str, str]], BodySink]


@dataclass(frozen=True)
class Sleep:
    """Effect: wait ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Blocking:
    """Effect: call ``func`` (blocking file I/O) and send back its result; async drivers use a thread."""

    func: Callable[[], Any]


@dataclass(frozen=True)
class TransportFailure:
    """What a transport sends back instead of a response when the network failed.

    ``request_sent`` is False only when the connection could not be opened, so no byte of the request
    can have reached the server (connection refused, DNS failure, connect timeout). ``retryable`` is False
    for failures that waiting will not cure, such as a certificate that does not verify.
    """

    description: str
    request_sent: bool
    retryable: bool = True


Effect = Send | Sleep | Blocking
Flow = Generator[Effect, Any, T]


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


class BulkClient:
    """Sans-IO Bulk API 2.0 client bound to one connection. Every public method returns a :data:`Flow`.

    :param config: the validated connection.
    :param policy: retry policy for repeatable calls.
    :param cache: token cache (the process-wide one by default).
    :param on_token: called with each new token (the hooks register it with the secrets masker).
    :param logger: receives one debug line per HTTP exchange: method, path (no query), status.
    :param rng: source of backoff jitter.
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
            raise error_from_response(response.status, response.body, oauth=True)
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
            if should_retry_status(repeat, retryable) and self.policy.may_retry(attempt):
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

    def _create(self, what: str, kind: JobKind, build: Callable[[str, TokenInfo], Request]) -> Flow[JobInfo]:
        """A job creation: never repeated once it may have reached the server (``Repeat.UNSAFE``)."""
        return self.execute(Call(what, build, _job_parser(kind), repeat=Repeat.UNSAFE))

    def create_ingest_job(
        self,
        object_name: str,
        operation: IngestOperation | str,
        external_id_field: str | None = None,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        assignment_rule_id: str | None = None,
    ) -> Flow[JobInfo]:
        """Create an ingest job (state ``Open``); upload its data with ``upload_job_data``.

        Not repeated once the request may have reached Salesforce (see the hook documentation).

        :param object_name: sObject API name, e.g. ``Account``.
        :param operation: ``insert``, ``update``, ``upsert``, ``delete`` or ``hardDelete``.
        :param external_id_field: external id field (required for ``upsert``).
        :param column_delimiter: ``COMMA`` (default), ``TAB``, ``PIPE``, ``SEMICOLON``, ``CARET`` or
            ``BACKQUOTE``.
        :param line_ending: ``LF`` (default) or ``CRLF``.
        :param assignment_rule_id: Case or Lead assignment rule id.
        :return: the new job's :class:`~airflow_provider_sfbulk.protocol.api.JobInfo`.
        """
        spec = api.ingest_job_spec(
            object_name, operation, external_id_field, column_delimiter, line_ending, assignment_rule_id
        )
        return self._create(
            "create ingest job",
            JobKind.INGEST,
            lambda base, token: api.build_create_ingest_job(base, token.access_token, spec),
        )

    def create_ingest_job_with_data(
        self,
        object_name: str,
        operation: IngestOperation | str,
        data: bytes | IO[bytes],
        external_id_field: str | None = None,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        assignment_rule_id: str | None = None,
    ) -> Flow[JobInfo]:
        """Create an ingest job and upload small CSV ``data`` in one multipart request.

        The job comes back ``UploadComplete`` and starts by itself: do not close it. ``data`` (bytes or a
        binary file object) holds at most :data:`~airflow_provider_sfbulk.protocol.api.MULTIPART_MAX_BYTES`
        bytes; use ``create_ingest_job`` and ``upload_job_data`` for more. Never repeated once sent.
        The other parameters are those of ``create_ingest_job``.
        """
        spec = api.ingest_job_spec(
            object_name, operation, external_id_field, column_delimiter, line_ending, assignment_rule_id
        )
        payload: bytes = yield Blocking(lambda: _read_small(data))
        if len(payload) > api.MULTIPART_MAX_BYTES:  # fail before authenticating
            api.build_create_ingest_job_with_data("", "", spec, payload)
        return (
            yield from self._create(
                "create ingest job with data",
                JobKind.INGEST,
                lambda base, token: api.build_create_ingest_job_with_data(
                    base, token.access_token, spec, payload
                ),
            )
        )

    def upload_job_data(self, job_id: str, data: UploadData) -> Flow[None]:
        """Stream CSV ``data`` into an ``Open`` ingest job (``PUT .../batches``, one upload per job).

        ``data`` is ``bytes``, a binary file object, an iterator of ``bytes`` or (async hook only) an async
        iterator of ``bytes``; it is sent in chunks and never held whole in memory. Never repeated once
        bytes were sent. A stream that cannot be rewound (an iterator) is preceded by a ``GET`` of the
        job, which checks that the job exists and renews an expired session first, so a 401 half-way
        through the stream is unlikely; if it happens anyway the hook raises instead of sending partial
        data twice.
        """
        source = data if isinstance(data, UploadSource) else UploadSource(data)
        if not source.rewindable:
            yield from self.get_job(job_id, JobKind.INGEST)
        yield from self.execute(
            Call(
                "upload job data",
                lambda base, token: api.build_upload_job_data(base, token.access_token, job_id, source),
                lambda response: None,
                repeat=Repeat.UNSAFE,
                job_id=job_id,
                upload=source,
            )
        )

    def set_job_state(self, job_id: str, kind: JobKind | str, state: JobState) -> Flow[JobInfo]:
        """``PATCH`` the job state. A retry that finds the state already set counts as success."""
        job_kind = api.job_kind(kind)

        def recover(error: SalesforceBulkError) -> Flow[JobInfo] | None:
            if isinstance(error, SalesforceBulkInvalidStateError):
                return self._confirm_state(job_id, job_kind, state, error)
            return None

        return self.execute(
            Call(
                f"set job state to {state.value}",
                lambda base, token: api.build_set_job_state(
                    base, token.access_token, job_id, job_kind, state
                ),
                _job_parser(job_kind),
                job_id=job_id,
                recover=recover,
            )
        )

    def _confirm_state(
        self, job_id: str, kind: JobKind, wanted: JobState, error: SalesforceBulkError
    ) -> Flow[JobInfo]:
        job = yield from self.get_job(job_id, kind)
        reached = job.state is wanted or (
            wanted is JobState.UPLOAD_COMPLETE
            and job.state is not JobState.OPEN
            and job.state is not JobState.ABORTED
        )
        if not reached:
            raise error
        return job

    def close_job(self, job_id: str) -> Flow[JobInfo]:
        """Set the ingest job to ``UploadComplete`` so Salesforce starts processing it."""
        return self.set_job_state(job_id, JobKind.INGEST, JobState.UPLOAD_COMPLETE)

    def abort_job(self, job_id: str, kind: JobKind | str) -> Flow[JobInfo]:
        """Abort an ingest or query job (``Aborted``); rows already committed stay committed."""
        return self.set_job_state(job_id, kind, JobState.ABORTED)

    def get_job(self, job_id: str, kind: JobKind | str) -> Flow[JobInfo]:
        """Read a job's full JobInfo: state, counters, timings and ``errorMessage``.

        :param kind: ``"ingest"`` or ``"query"`` (or a :class:`JobKind`).
        """
        job_kind = api.job_kind(kind)
        return self.execute(
            Call(
                "get job",
                lambda base, token: api.build_get_job(base, token.access_token, job_id, job_kind),
                _job_parser(job_kind),
                job_id=job_id,
            )
        )

    def delete_job(self, job_id: str, kind: JobKind | str) -> Flow[None]:
        """Delete a finished (or ``UploadComplete``) job and its data. A retry finding it gone succeeds."""
        job_kind = api.job_kind(kind)

        def recover(error: SalesforceBulkError) -> Flow[None] | None:
            return _done(None) if isinstance(error, SalesforceBulkNotFoundError) else None

        return self.execute(
            Call(
                "delete job",
                lambda base, token: api.build_delete_job(base, token.access_token, job_id, job_kind),
                lambda response: None,
                job_id=job_id,
                recover=recover,
            )
        )

    def list_jobs_page(
        self,
        kind: JobKind | str,
        *,
        next_url: str | None = None,
        is_pk_chunking_enabled: bool | None = None,
        job_type: str | None = None,
        concurrency_mode: str | None = None,
    ) -> Flow[JobList]:
        """One page of the job list: the first (with filters) or the one at ``next_url``."""
        job_kind = api.job_kind(kind)
        return self.execute(
            Call(
                "list jobs",
                lambda base, token: api.build_list_jobs(
                    base,
                    token.access_token,
                    job_kind,
                    next_url=next_url,
                    instance_url=token.instance_url,
                    is_pk_chunking_enabled=is_pk_chunking_enabled,
                    job_type=job_type,
                    concurrency_mode=concurrency_mode,
                ),
                lambda response: api.parse_job_list(api.decode_json(response.body, "list jobs"), job_kind),
            )
        )

    def download_ingest_results(
        self, job_id: str, result_set: str, writable: Writable, gzip: bool = True
    ) -> Flow[int]:
        """Stream ``successfulResults``, ``failedResults`` or ``unprocessedrecords`` into ``writable``.

        ``writable`` is anything with a binary ``write``; the CSV arrives in chunks and is never held whole
        in memory (``gzip`` asks for a compressed transfer, decompressed on the fly). A retried download
        starts over: a seekable writable is seeked back and truncated to where it was, any other one is
        only retried while nothing was written.

        :return: number of (decompressed) bytes written.
        """
        name = api.result_set_name(result_set)
        return self.execute(
            Call(
                f"download {name}",
                lambda base, token: api.build_download_ingest_results(
                    base, token.access_token, job_id, name, gzip=gzip
                ),
                lambda response: response.sink.decoded_bytes,
                job_id=job_id,
                download=WritableCheckpoint(writable),
            )
        )

    def create_query_job(
        self,
        soql: str,
        operation: QueryOperation | str = QueryOperation.QUERY,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
    ) -> Flow[JobInfo]:
        """Create a query job; it starts by itself (state ``UploadComplete``).

        :param soql: the SOQL query; Salesforce validates it at once (bad SOQL: HTTP 400).
        :param operation: ``query`` or ``queryAll`` (includes deleted and archived rows).
        """
        spec = api.query_job_spec(soql, operation, column_delimiter=column_delimiter, line_ending=line_ending)
        return self._create(
            "create query job",
            JobKind.QUERY,
            lambda base, token: api.build_create_query_job(base, token.access_token, spec),
        )

    def download_query_page(
        self,
        job_id: str,
        writable: Writable,
        locator: str | None = None,
        max_records: int | None = None,
        gzip: bool = True,
    ) -> Flow[QueryResultPage]:
        """Stream one page of a finished query job's CSV results into ``writable``.

        Omit ``locator`` for the first page, then pass each page's ``next_locator`` until it is ``None``.
        Every page starts with its own header row. Streaming and restarts work as for
        ``download_ingest_results``.
        """
        return self.execute(
            Call(
                "download query results",
                lambda base, token: api.build_query_results(
                    base, token.access_token, job_id, locator=locator, max_records=max_records, gzip=gzip
                ),
                lambda response: api.parse_result_page_headers(response.header, response.sink.decoded_bytes),
                job_id=job_id,
                download=WritableCheckpoint(writable),
            )
        )

    def get_result_pages(self, job_id: str, max_records: int | None = None) -> Flow[list[ResultPageRef]]:
        """Every result page of a finished query job (API 58.0+), following ``nextRecordsUrl``.

        Each :class:`~airflow_provider_sfbulk.protocol.api.ResultPageRef` carries the ``locator`` and
        ``max_records`` to pass to ``download_query_page``, so pages can be fetched in parallel.

        :param max_records: preferred rows per page, sent as ``maxRecords`` on the first call (not
            documented for ``resultPages``; the server may choose other page sizes).
        """
        refs: list[ResultPageRef] = []
        next_url: str | None = None
        while True:
            page: ResultPagesPage = yield from self.execute(
                Call(
                    "get result pages",
                    _result_pages_builder(job_id, next_url, max_records),
                    lambda response: api.parse_result_pages(api.decode_json(response.body, "resultPages")),
                    job_id=job_id,
                )
            )
            refs.extend(page.pages)
            if page.done:
                return refs
            next_url = page.next_records_url

    def get_limits(self) -> Flow[Limits]:
        """The org's ``/limits`` (a dict with ``remaining(name)`` and ``maximum(name)`` helpers)."""
        return self.execute(
            Call(
                "get limits",
                lambda base, token: api.build_limits(base, token.access_token),
                lambda response: api.parse_limits(api.decode_json(response.body, "limits")),
            )
        )


class JobPager:
    """Walks the job list page by page; each :meth:`fetch` flow returns the next page's jobs."""

    def __init__(self, client: BulkClient, kind: JobKind | str, **filters: Any) -> None:
        self._client = client
        self._kind = kind
        self._filters = filters
        self._next_url: str | None = None
        self.done = False

    def fetch(self) -> Flow[tuple[JobInfo, ...]]:
        """Fetch the next page; sets :attr:`done` after the last one."""
        if self.done:
            return ()
        if self._next_url is None:
            page = yield from self._client.list_jobs_page(self._kind, **self._filters)
        else:
            page = yield from self._client.list_jobs_page(self._kind, next_url=self._next_url)
        self._next_url = page.next_records_url
        self.done = page.done
        return page.records


def _result_pages_builder(
    job_id: str, next_url: str | None, max_records: int | None = None
) -> Callable[[str, TokenInfo], Request]:
    def build(base: str, token: TokenInfo) -> Request:
        return api.build_result_pages(
            base,
            token.access_token,
            job_id,
            next_url=next_url,
            instance_url=token.instance_url,
            max_records=max_records,
        )

    return build


def _job_parser(kind: JobKind) -> Callable[[Response], JobInfo]:
    return lambda response: api.parse_job_info(api.decode_json(response.body, "job info"), kind)


def _done(value: T) -> Flow[T]:
    """A flow that returns ``value`` at once, without any effect."""
    yield from ()
    return value


def _read_small(data: bytes | IO[bytes]) -> bytes:
    """Read a multipart payload (small by definition: at most one byte more than the limit is read)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    content = data.read(api.MULTIPART_MAX_BYTES + 1)
    if isinstance(content, str):
        raise TypeError("create_ingest_job_with_data needs bytes or a binary file object")
    return content


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def run_sync(flow: Flow[T], send: Callable[[Send], Any], sleep: Callable[[float], None]) -> T:
    """Drive ``flow`` with a blocking ``send`` and ``sleep`` (the sync hook's loop)."""
    try:
        effect = next(flow)
        while True:
            if isinstance(effect, Sleep):
                sleep(effect.seconds)
                effect = flow.send(None)
            elif isinstance(effect, Blocking):
                effect = flow.send(effect.func())
            else:
                effect = flow.send(send(effect))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], send: Callable[[Send], Any], sleep: Callable[[float], Any]) -> T:
    """Drive ``flow`` with an async ``send`` and ``sleep``; blocking effects run in a worker thread."""
    try:
        effect = next(flow)
        while True:
            if isinstance(effect, Sleep):
                await sleep(effect.seconds)
                effect = flow.send(None)
            elif isinstance(effect, Blocking):
                effect = flow.send(await asyncio.to_thread(effect.func))
            else:
                effect = flow.send(await send(effect))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
