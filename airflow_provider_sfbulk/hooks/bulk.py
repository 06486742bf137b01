"""Hooks for the Salesforce Bulk API 2.0: :class:`SalesforceBulkHook` and :class:`SalesforceBulkAsyncHook`.

Both hooks expose the same methods with the same arguments (the async ones are coroutines) and share
everything but the transport: the requests, responses, error mapping, authentication and retry logic
live in :mod:`airflow_provider_sfbulk.protocol` (see :mod:`~airflow_provider_sfbulk.protocol.client`).

Authentication
    The connection (see :mod:`~airflow_provider_sfbulk.protocol.connection`) is read lazily and checked
    before any HTTP call; a missing field raises :class:`~airflow_provider_sfbulk.exceptions.
    SalesforceBulkConfigError` naming it. The access token is fetched on first use and cached for the
    whole process, shared by sync and async hooks and every thread (many triggers in one triggerer use
    one token). On a 401 ``INVALID_SESSION_ID`` the hook renews it once (re-running the grant, or the
    refresh token) and repeats the call once; a second 401 raises ``SalesforceBulkAuthError``. Every
    token and secret is registered with Airflow's secrets masker; logs carry method, path and status only.

Retries
    ``GET``, state ``PATCH`` and ``DELETE`` calls (and the token request) are retried with exponential
    backoff and full jitter on connection errors, timeouts, 5xx, 429 and concurrency limits; the daily
    ``REQUEST_LIMIT_EXCEEDED`` cap fails fast. A state ``PATCH`` or ``DELETE`` whose retry finds the job
    already in the requested state (or gone) succeeds. A download that fails half-way restarts from the
    first byte: the writable is seeked back and truncated to where it was when the call started; a
    writable that cannot seek is only retried when nothing was written yet.

Calls that are never repeated blindly
    Job creation and the data upload are retried only when the connection could not be opened at all
    (nothing was sent). After any other failure they raise ``SalesforceBulkOutcomeUnknownError``
    (network broke after sending, or 5xx) or the mapped HTTP error (4xx, 429):

    - a lost JSON ``create_ingest_job`` can leave at most an ``Open`` job without data, which Salesforce
      never processes and deletes with its retention; the caller may simply create a new job;
    - a lost ``create_query_job`` may leave a running query job: harmless, it reads only;
    - a lost ``create_ingest_job_with_data`` or ``upload_job_data`` may have handed data to Salesforce.
      Abort that job (``abort_job``; for an upload the exception carries ``job_id``) and load the data
      again through a new job. Salesforce accepts only one upload per job, so an upload is never resent
      to the same job; an upload from an iterator is preceded by a ``GET`` of the job so an expired
      session is renewed before the stream starts (a seekable file is simply rewound if needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, overload

import requests
import urllib3
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_sfbulk.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_sfbulk.hooks.sessions import SESSIONS, SessionLease
from airflow_provider_sfbulk.protocol import api, waiting
from airflow_provider_sfbulk.protocol.api import JobInfo, Limits
from airflow_provider_sfbulk.protocol.auth import TokenInfo
from airflow_provider_sfbulk.protocol.client import (
    BulkClient,
    Flow,
    JobPager,
    Send,
    T,
    TransportFailure,
    run_async,
    run_sync,
)
from airflow_provider_sfbulk.protocol.connection import ConnectionConfig, parse_connection
from airflow_provider_sfbulk.protocol.messages import CHUNK_SIZE, Response, UploadSource
from airflow_provider_sfbulk.protocol.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from airflow_provider_sfbulk.protocol.states import JobKind

if TYPE_CHECKING:
    import aiohttp

__all__ = ["SalesforceBulkAsyncHook", "SalesforceBulkHook"]


# Airflow 3.0 and 3.1 carry a task's messages to its supervisor over one channel that is not safe for
# threads (3.2 locks it): two threads' messages can cross in a worker, and under ``dag.test()`` the
# in-process channel swaps a module global per message, so that a thread can leave the task without one
# ("name 'SUPERVISOR_COMMS' is not defined" at the task's XCom push). A connection look-up and
# ``mask_secret`` each send one, and the blocking hook makes both from the worker threads of uploads and
# downloads (common/threads.py): they take turns here, and so do the task state store calls of
# common/checkpoint.py (also under dag.test() on 3.3, whose in-process channel still swaps the global). The
# async hook does not: in the triggerer a blocking look-up may wait for the event loop, which must never
# wait for this lock.
SUPERVISOR_TURN = threading.RLock()


P = ParamSpec("P")


def _sync_api(flow: Callable[Concatenate[BulkClient, P], Flow[T]]) -> Callable[Concatenate[Any, P], T]:
    """Expose a :class:`BulkClient` flow as a blocking hook method (same signature and docstring)."""

    @functools.wraps(flow)
    def method(self: SalesforceBulkHook, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(flow(self._get_client(), *args, **kwargs))

    return _unwrap_flow_annotation(method, flow)


def _async_api(
    flow: Callable[Concatenate[BulkClient, P], Flow[T]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """Expose a :class:`BulkClient` flow as a coroutine hook method (same signature and docstring)."""

    @functools.wraps(flow)
    async def method(self: SalesforceBulkAsyncHook, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(flow(await self._aget_client(), *args, **kwargs))

    return _unwrap_flow_annotation(method, flow)


def _unwrap_flow_annotation(method: Any, flow: Callable[..., Any]) -> Any:
    """Show ``-> JobInfo`` rather than ``-> Flow[JobInfo]`` in ``inspect.signature`` and the docs."""
    signature = inspect.signature(flow)
    annotation = signature.return_annotation
    if isinstance(annotation, str) and annotation.startswith("Flow[") and annotation.endswith("]"):
        method.__signature__ = signature.replace(return_annotation=annotation[len("Flow[") : -1])
    return method


class _ApiMethod(Generic[P, T]):
    """A hook method written once, from a ``BulkClient`` flow.

    A blocking method on :class:`SalesforceBulkHook`, a coroutine method on
    :class:`SalesforceBulkAsyncHook`, both with the signature and docstring of the flow.
    """

    def __init__(self, flow: Callable[Concatenate[BulkClient, P], Flow[T]]) -> None:
        self._sync = _sync_api(flow)
        self._async = _async_api(flow)
        self.__doc__ = flow.__doc__
        self.__wrapped__ = flow

    @overload
    def __get__(
        self, obj: SalesforceBulkAsyncHook, owner: type | None = None
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __get__(self, obj: SalesforceBulkHook, owner: type | None = None) -> Callable[P, T]: ...

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[..., Any]: ...

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        cls = owner if owner is not None else type(obj)
        impl = self._async if getattr(cls, "_asynchronous", False) else self._sync
        return impl if obj is None else impl.__get__(obj, cls)


class _SalesforceBulkHookBase(BaseHook):
    """Connection handling shared by both hooks (no I/O besides reading the Airflow connection)."""

    conn_name_attr = "salesforce_conn_id"
    default_conn_name = "salesforce_bulk_default"
    conn_type = "salesforce_bulk"
    hook_name = "Salesforce Bulk API 2.0"

    def __init__(
        self,
        salesforce_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.salesforce_conn_id = salesforce_conn_id
        self.retry_policy = retry_policy or DEFAULT_RETRY_POLICY
        self._client: BulkClient | None = None

    def _client_for(self, conn: Any) -> BulkClient:
        config = parse_connection(
            self.salesforce_conn_id,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
            port=conn.port,
        )
        self._mask(*config.secrets)
        if not config.verify_tls:
            self.log.warning(
                "Connection %r turns TLS verification off (verify_tls=false): the server's certificate is "
                "not checked; prefer ca_bundle for a private CA",
                self.salesforce_conn_id,
            )
        return BulkClient(config, policy=self.retry_policy, on_token=self._mask_token, logger=self.log)

    def _mask(self, *secrets: str) -> None:
        """Register secrets with Airflow's masker (the blocking hook's threads take turns to)."""
        turn = contextlib.nullcontext() if getattr(self, "_asynchronous", False) else SUPERVISOR_TURN
        with turn:
            for secret in secrets:
                mask_secret(secret)

    def _mask_token(self, token: TokenInfo) -> None:
        self._mask(*(secret for secret in (token.access_token, token.refresh_token) if secret))

    @property
    def config(self) -> ConnectionConfig:
        """The validated connection (loaded on first use)."""
        return self._get_client().config

    def _get_client(self) -> BulkClient:
        raise NotImplementedError

    # The API, written once (see BulkClient for each method's documentation).
    create_ingest_job = _ApiMethod(BulkClient.create_ingest_job)
    create_ingest_job_with_data = _ApiMethod(BulkClient.create_ingest_job_with_data)
    upload_job_data = _ApiMethod(BulkClient.upload_job_data)
    close_job = _ApiMethod(BulkClient.close_job)
    abort_job = _ApiMethod(BulkClient.abort_job)
    get_job = _ApiMethod(BulkClient.get_job)
    delete_job = _ApiMethod(BulkClient.delete_job)
    download_ingest_results = _ApiMethod(BulkClient.download_ingest_results)
    create_query_job = _ApiMethod(BulkClient.create_query_job)
    download_query_page = _ApiMethod(BulkClient.download_query_page)
    get_result_pages = _ApiMethod(BulkClient.get_result_pages)
    get_limits = _ApiMethod(BulkClient.get_limits)
    describe_object = _ApiMethod(BulkClient.describe_object)
    wait_for_jobs = _ApiMethod(waiting.wait_for_jobs)
    get_user_id = _ApiMethod(BulkClient.get_user_id)

    @staticmethod
    def _connected_message(instance_url: str, limits: Limits) -> str:
        remaining = limits.remaining("DailyApiRequests")
        suffix = f"; {remaining} API requests left today" if remaining is not None else ""
        return f"Connected to {instance_url}{suffix}"


class SalesforceBulkHook(_SalesforceBulkHookBase):
    """Blocking Bulk API 2.0 hook over :mod:`requests` (one ``Session`` per hook).

    See the module documentation for authentication, retries and which calls are never repeated.

    :param salesforce_conn_id: id of a ``salesforce_bulk`` connection.
    :param retry_policy: attempts and backoff for repeatable calls.
    """

    _session: requests.Session | None = None

    # --- connection form (Airflow 2.x asks these; 3.2+ reads get_provider_info()'s conn-fields) --------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form (wtforms; imported lazily, only the webserver needs it)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            secret = spec["schema"].get("format") == "password"
            field_class = PasswordField if secret else StringField
            widget = BS3PasswordFieldWidget() if secret else BS3TextFieldWidget()
            widgets[name] = field_class(
                lazy_gettext(spec["label"]), widget=widget, description=spec["description"]
            )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hide port and schema; relabel host, login and password (from ``get_provider_info``)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR.get("hidden-fields", [])),
            "relabeling": dict(UI_FIELD_BEHAVIOUR.get("relabeling", {})),
            "placeholders": dict(UI_FIELD_BEHAVIOUR.get("placeholders", {})),
        }

    # --- transport --------------------------------------------------------------------------------------

    def _get_client(self) -> BulkClient:
        if self._client is None:
            with SUPERVISOR_TURN:  # this hook's threads take turns to ask Airflow (see SUPERVISOR_TURN)
                self._client = self._client_for(self.get_connection(self.salesforce_conn_id))
        return self._client

    def get_conn(self) -> requests.Session:
        """The hook's ``requests.Session`` (TLS verification on; ``ca_bundle`` replaces the trust store)."""
        if self._session is None:
            session = requests.Session()
            # False only when the connection says verify_tls=false. Proxies from the environment are
            # honoured (trust_env); without a ca_bundle, REQUESTS_CA_BUNDLE may replace the trust store.
            session.verify = _requests_verify(self.config)
            self._session = session
        return self._session

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> SalesforceBulkHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        return run_sync(flow, self._send, time.sleep)

    def _send(self, effect: Send) -> Response | TransportFailure:
        request = effect.request
        body = request.body.sync_chunks() if isinstance(request.body, UploadSource) else request.body
        timeout = self.config.timeout
        try:
            response = self.get_conn().request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=body,
                stream=True,
                timeout=(timeout, timeout),
                allow_redirects=False,
                verify=_requests_verify(self.config),  # per request, so the environment cannot override it
            )
        except requests.exceptions.SSLError as exc:
            return TransportFailure(f"TLS error: {exc}", request_sent=False, retryable=False)
        except requests.exceptions.ConnectTimeout:
            return TransportFailure("connect timeout", request_sent=False)
        except requests.exceptions.ConnectionError as exc:
            return TransportFailure(_describe(exc), request_sent=not _is_connect_failure(exc))
        except requests.exceptions.Timeout:
            return TransportFailure("read timeout", request_sent=True)
        with response:
            sink = effect.open_sink(response.status_code, response.headers)
            try:
                for chunk in response.raw.stream(CHUNK_SIZE, decode_content=False):
                    sink.feed(chunk)
            except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
                return TransportFailure(f"response body interrupted: {_describe(exc)}", request_sent=True)
            sink.finish()
            return Response(response.status_code, dict(response.headers), sink)

    # --- API ------------------------------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        """The org's instance URL (``https://<domain>.my.salesforce.com``); authenticates if needed."""
        return self._run(self._get_client().instance_url())

    def get_job_url(self, job_id: str) -> str:
        """Link to the job on Setup's "Bulk Data Load Jobs" page."""
        return api.job_setup_url(self.instance_url, job_id)

    def test_connection(self) -> tuple[bool, str]:
        """Authenticate and read ``/limits`` (one cheap API call)."""
        try:
            limits = self.get_limits()
        except Exception as exc:
            return False, str(exc)
        return True, self._connected_message(self.instance_url, limits)

    def list_jobs(self, kind: JobKind | str = JobKind.INGEST, **filters: Any) -> Iterator[JobInfo]:
        """Iterate over every job, fetching pages lazily by ``nextRecordsUrl``.

        :param filters: ``is_pk_chunking_enabled``, ``job_type`` (``V2Ingest``, ``V2Query``, ``Classic``,
            ``BigObjectIngest``), ``concurrency_mode``.
        """
        pager = JobPager(self._get_client(), kind, **filters)
        while not pager.done:
            yield from self._run(pager.fetch())


class SalesforceBulkAsyncHook(_SalesforceBulkHookBase):
    """Asyncio Bulk API 2.0 hook over :mod:`aiohttp`, for triggers.

    Use it as an async context manager::

        async with SalesforceBulkAsyncHook("salesforce_bulk_default") as hook:
            job = await hook.get_job(job_id, "ingest")

    The hook leases the event loop's shared ``aiohttp.ClientSession`` of its connection (one per
    connection and loop, over one TLS context per trust store: see :mod:`~airflow_provider_sfbulk.hooks.
    sessions`), so a thousand triggers in one triggerer share one connection pool. The lease is taken on
    entering ``async with`` (or by the first call) and given back by :meth:`aclose`; the last hook out
    closes the session. The methods and their arguments are those of
    :class:`SalesforceBulkHook`; ``upload_job_data`` also takes an async iterator of bytes, and file
    objects are read in a worker thread. Downloads call ``writable.write`` on the event loop: pass an
    in-memory buffer or a writer that does not block for long.
    """

    _asynchronous = True
    _lease: SessionLease | None = None

    async def __aenter__(self) -> SalesforceBulkAsyncHook:
        await self._aget_client()
        await self._get_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give back the hook's share of the HTTP session (the last hook out closes it)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await SESSIONS.release(lease)

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        """The shared session the hook holds, if any."""
        return self._lease.session if self._lease is not None else None

    def _get_client(self) -> BulkClient:
        if self._client is None:
            raise RuntimeError("use 'async with SalesforceBulkAsyncHook(...)' or await a method first")
        return self._client

    async def _aget_client(self) -> BulkClient:
        if self._client is None:
            aget = getattr(BaseHook, "aget_connection", None)
            if aget is not None:
                conn = await self.aget_connection(self.salesforce_conn_id)  # type: ignore[attr-defined]
            else:  # Airflow 2.x and 3.0
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(self.get_connection)(self.salesforce_conn_id)
            self._client = self._client_for(conn)
        return self._client

    async def _get_session(self) -> aiohttp.ClientSession:
        lease = self._lease
        if lease is not None and lease.loop is not asyncio.get_running_loop():
            await self.aclose()  # a session serves only the loop that opened it
            lease = None
        if lease is None:
            lease = await SESSIONS.acquire((await self._aget_client()).config)
            if self._lease is not None:  # a concurrent call of this hook took one meanwhile
                await SESSIONS.release(lease)
                return self._lease.session
            self._lease = lease
        return lease.session

    async def _run(self, flow: Flow[T]) -> T:
        await self._get_session()
        return await run_async(flow, self._send, asyncio.sleep)

    async def _send(self, effect: Send) -> Response | TransportFailure:
        import aiohttp

        request = effect.request
        session = await self._get_session()
        body = request.body.async_chunks() if isinstance(request.body, UploadSource) else request.body
        try:
            async with session.request(
                request.method, request.url, headers=dict(request.headers), data=body, allow_redirects=False
            ) as response:
                sink = effect.open_sink(response.status, response.headers)
                try:
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        sink.feed(chunk)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    return TransportFailure(f"response body interrupted: {_describe(exc)}", request_sent=True)
                sink.finish()
                return Response(response.status, dict(response.headers), sink)
        except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
            return TransportFailure(f"TLS error: {exc}", request_sent=False, retryable=False)
        except aiohttp.ClientConnectorError as exc:
            return TransportFailure(_describe(exc), request_sent=False)
        except getattr(aiohttp, "ConnectionTimeoutError", ()):  # aiohttp >= 3.10
            return TransportFailure("connect timeout", request_sent=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return TransportFailure(_describe(exc) or "timeout", request_sent=True)

    # --- API ------------------------------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        """The instance URL once authenticated (``await get_instance_url()`` authenticates first)."""
        token = self._get_client().cached_token()
        if token is None:
            raise RuntimeError("not authenticated yet: use 'await hook.get_instance_url()'")
        return token.instance_url

    async def get_instance_url(self) -> str:
        """The org's instance URL; authenticates if needed."""
        return await self._run((await self._aget_client()).instance_url())

    async def get_job_url(self, job_id: str) -> str:
        """Async :meth:`SalesforceBulkHook.get_job_url`."""
        return api.job_setup_url(await self.get_instance_url(), job_id)

    async def test_connection(self) -> tuple[bool, str]:  # type: ignore[override]
        """Async :meth:`SalesforceBulkHook.test_connection`."""
        try:
            limits = await self.get_limits()
        except Exception as exc:
            return False, str(exc)
        return True, self._connected_message(self.instance_url, limits)

    async def list_jobs(self, kind: JobKind | str = JobKind.INGEST, **filters: Any) -> AsyncIterator[JobInfo]:
        """Async iterator version of :meth:`SalesforceBulkHook.list_jobs`."""
        pager = JobPager(await self._aget_client(), kind, **filters)
        while not pager.done:
            for job in await self._run(pager.fetch()):
                yield job


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """True when requests failed to open the connection (nothing was sent)."""
    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _requests_verify(config: ConnectionConfig) -> bool | str:
    """``requests``' ``verify``: the CA bundle, or True; False only with ``verify_tls=false``."""
    if not config.verify_tls:
        return False
    return config.ca_bundle or True
