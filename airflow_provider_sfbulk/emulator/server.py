"""The emulator's HTTP server: Salesforce's OAuth token endpoint, REST basics and Bulk API 2.0.

One catch-all aiohttp route normalises the path the way Salesforce tolerates it (``//`` collapsed, trailing
slash ignored, ``unprocessedRecords`` in any case) and dispatches to a handler. Database work runs in a
small thread pool so the event loop never waits for SQLite; uploads are streamed to disk and downloads
streamed from disk (gzip on request), so memory stays flat for any size.

Admin endpoints live under ``/__emulator/`` on the same server (loopback clients only, no OAuth); see
``docs/emulator.md``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import email.utils
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web

from airflow_provider_sfbulk.emulator import describe, identity, result_pages, setup_pages
from airflow_provider_sfbulk.emulator.config import MAX_API_VERSION, MIN_API_VERSION, EmulatorConfig
from airflow_provider_sfbulk.emulator.faults import FaultRule, FaultSet, HeldRequests
from airflow_provider_sfbulk.emulator.oauth import OAuthError, OAuthService, Principal
from airflow_provider_sfbulk.emulator.request_log import RequestLog
from airflow_provider_sfbulk.emulator.schema import Schema, format_value, load_schema
from airflow_provider_sfbulk.emulator.settings import RuntimeSettings
from airflow_provider_sfbulk.emulator.store import JobRecord, Store
from airflow_provider_sfbulk.emulator.tls import TlsFiles, ensure_certificates
from airflow_provider_sfbulk.emulator.worker import QUERY_DIR, UPLOAD_FILE, IngestFaultSettings, JobWorker
from airflow_provider_sfbulk.protocol.states import (
    COLUMN_DELIMITERS,
    LINE_ENDINGS,
    RESULT_SETS,
    IngestOperation,
    JobState,
    QueryOperation,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

JSON_TYPE = "application/json;charset=UTF-8"
CSV_TYPE = "text/csv"
CHUNK = 1024 * 1024
GZIP_LEVEL = 1
INVALID_SESSION_BODY = b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'
NOT_FOUND_MESSAGE = "The requested resource does not exist"
QUERY_MIN_VERSION = 47
RESULT_PAGES_MIN_VERSION = 58
ADMIN_PREFIX = "/__emulator"
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
LIMIT_HEADER_KEY = web.RequestKey("sfbulk_limit_header", dict)

_API_RE = re.compile(r"^/services/data/v(?P<major>\d+)\.(?P<minor>\d+)(?P<rest>/.*)?$")
_JOB_RE = re.compile(r"^/jobs/(?P<kind>ingest|query)(?:/(?P<id>[^/]+)(?:/(?P<sub>[^/]+))?)?$")
_LIST_LOCATOR_RE = re.compile(rf"^01g{identity.POD}(?P<seq>\d{{9}})-(?P<served>\d+)$")

_SEASONS = ("Winter", "Spring", "Summer")

FAULT_BODIES = {
    429: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests (Concurrent API Requests) Limit exceeded."),
    500: ("UNKNOWN_EXCEPTION",
          "An unexpected error occurred. Please include this ErrorId if you contact support: "
          "1402985367-51234 (-1215729584)"),
    502: ("BAD_GATEWAY", "Bad Gateway"),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable; please try again later."),
    504: ("GATEWAY_TIMEOUT", "Gateway Timeout"),
}


def release_label(major: int) -> str:
    """Salesforce's release name of an API version: v60.0 -> "Spring '24"."""
    offset = major - 41
    season = _SEASONS[offset % 3]
    year = 18 + offset // 3
    return f"{season} '{year:02d}"


def normalize_path(path: str) -> str:
    """Collapse ``//`` and drop a trailing slash (``/`` stays ``/``)."""
    path = re.sub(r"/{2,}", "/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class ApiError(Exception):
    """Answer with Salesforce's error array."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", NOT_FOUND_MESSAGE)


def _enum_error(enum_name: str, value: Any) -> ApiError:
    return ApiError(400, "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {enum_name} from VALUE_STRING value {value} or request "
                    "may be missing a required field at [line:1, column:1]")


class EmulatorApp:
    """One emulator: configuration, schema, database, worker threads and the aiohttp application."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._tmp_dir: tempfile.TemporaryDirectory[str] | None = None
        if config.data_dir is None:
            self._tmp_dir = tempfile.TemporaryDirectory(prefix="sfbulk-emulator-")
            self.data_dir = Path(self._tmp_dir.name)
        else:
            self.data_dir = Path(config.data_dir)
        self.schema: Schema = load_schema(config.schema_path)
        self.store = Store(self.data_dir)
        self.faults = FaultSet(config.faults, seed=config.seed)
        self.holds = HeldRequests()
        self.ingest_faults = IngestFaultSettings(config.lock_row_rate, config.failing_batch, config.seed,
                                                 config.drop_result_rows, config.drop_result_jobs)
        self.settings = RuntimeSettings(config.result_pages_shape, config.query_timeout_records,
                                        config.query_timeout_style)
        self.worker = JobWorker(config, self.store, self.schema, lambda: self.ingest_faults, self.settings)
        self.tls: TlsFiles | None = None
        self.base_url = ""
        #: When the schema was loaded (the ``Last-Modified`` of describe answers).
        self._started_at = float(int(time.time()))
        self.oauth: OAuthService | None = None
        self._db_pool: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.request_log = RequestLog(config.request_log) if config.request_log is not None else None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> str:
        """Bind, prepare the data directory, resume jobs and serve; returns the base URL."""
        self._db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sfbulk-emulator-db")
        await self._db(self.data_dir.mkdir, parents=True, exist_ok=True)
        await self._db(self.store.initialize, self.schema)
        # the multipart spools a crash left behind
        await self._db(shutil.rmtree, self.data_dir / "tmp", ignore_errors=True)
        ssl_context = None
        if self.config.tls:
            self.tls = await self._db(ensure_certificates, self.data_dir)
            ssl_context = self.tls.server_context()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        port = sock.getsockname()[1]
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if ssl_context else "http"
        self.base_url = f"{scheme}://{host}:{port}"
        self.oauth = OAuthService(self.config, self.store, self.base_url)
        await self._db(self.worker.recover)
        for object_name, count in self.config.seed_records.items():
            await self._db(self.seed, object_name, count)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context, shutdown_timeout=1.0)
        await site.start()
        interval = self.config.sweep_interval or max(0.05, min(60.0, self.config.retention / 4))
        self._sweeper = asyncio.create_task(self._sweep_loop(interval))
        return self.base_url

    async def stop(self) -> None:
        """Stop serving and the job threads, close the database and remove a temporary data directory."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, self.worker.shutdown)
        if self._db_pool is not None:
            self._db_pool.shutdown(wait=True)
        self.store.close()
        if self.request_log is not None:
            self.request_log.close()
        if self._sock is not None:
            self._sock.close()
        if self._tmp_dir is not None:
            self._tmp_dir.cleanup()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._db(self.sweep)
            except Exception:
                log.exception("retention sweep failed")

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete jobs (and files) older than the retention; returns their ids."""
        now = time.time() if now is None else now
        expired = self.store.expired_job_ids(now - self.config.retention)
        for job_id in expired:
            self.store.delete_job(job_id)
        self.store.purge_tokens(now - 86400)
        self.store.purge_usage(now=now)
        return expired

    # -- admin helpers (also used by testing.EmulatorServer) ----------------------------------------
    def seed(self, object_name: str, count: int, *, seed: int | None = None) -> int:
        """Insert ``count`` synthetic valid records of an object directly; returns how many."""
        from airflow_provider_sfbulk.emulator import records

        obj = self.schema.get_object(object_name)
        if obj is None:
            raise ValueError(f"unknown object {object_name!r}")
        conn = self.store.open_connection()
        try:
            return records.seed_records(conn, self.schema, obj.name, count,
                                        seed=self.config.seed if seed is None else seed)
        finally:
            self.store.release(conn)

    def read_records(self, object_name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of an object as ``{field: value}`` with Salesforce's text rendering (None = null)."""
        obj = self.schema.get_object(object_name)
        if obj is None:
            raise ValueError(f"unknown object {object_name!r}")
        fields = list(obj.fields.values())
        sql = f"SELECT {', '.join(f.column for f in fields)} FROM {obj.table}"
        if not include_deleted:
            sql += ' WHERE "IsDeleted" IS NULL OR "IsDeleted" = 0'
        sql += ' ORDER BY "Id"'
        conn = self.store.open_connection()
        try:
            rows = conn.execute(sql).fetchall()
        finally:
            self.store.release(conn)
        return [
            {f.name: (None if value is None else format_value(f, value)) for f, value in zip(fields, row,
                                                                                              strict=True)}
            for row in rows
        ]

    def set_faults(self, rules: list[FaultRule] | None = None, *, lock_row_rate: float | None = None,
                   failing_batch: int | None | str = "keep", seed: int | None = None,
                   drop_result_rows: int | None = None, drop_result_jobs: int | None | str = "keep") -> None:
        """Replace HTTP fault rules (when given) and/or row-level ingest faults."""
        self._set_drop_result_rows(drop_result_rows, drop_result_jobs)
        if rules is not None or seed is not None:
            self.faults.replace(rules if rules is not None else self.faults.rules, seed=seed)
        if lock_row_rate is not None:
            if not 0.0 <= lock_row_rate <= 1.0:
                raise ValueError("lock_row_rate must be between 0 and 1")
            self.ingest_faults.lock_row_rate = lock_row_rate
        if failing_batch != "keep":
            if failing_batch is not None and (not isinstance(failing_batch, int) or failing_batch < 1):
                raise ValueError("failing_batch must be a positive integer or null")
            self.ingest_faults.failing_batch = failing_batch  # type: ignore[assignment]
        if seed is not None:
            self.ingest_faults.seed = seed

    def _set_drop_result_rows(self, rows: int | None, jobs: int | None | str) -> None:
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0):
            raise ValueError("drop_result_rows must be a non-negative integer")
        if jobs != "keep" and jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int)
                                                   or jobs < 0):
            raise ValueError("drop_result_jobs must be a non-negative integer or null")
        with self.ingest_faults._lock:
            if rows is not None:
                self.ingest_faults.drop_result_rows = rows
            if jobs != "keep":
                self.ingest_faults.drop_result_jobs = jobs  # type: ignore[assignment]

    def reset_faults(self) -> None:
        """Remove every HTTP fault rule and every ingest row fault."""
        self.faults.reset()
        self.holds.release()
        self.ingest_faults.lock_row_rate = 0.0
        self.ingest_faults.failing_batch = None
        self._set_drop_result_rows(0, None)

    # -- HTTP entry point --------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one HTTP request: the admin API, an injected fault, or the emulated Salesforce API."""
        if self.request_log is None:
            return await self._answer(request)
        started, status = time.time(), 0
        try:
            response = await self._answer(request)
            status = response.status
            return response
        finally:
            self.request_log.record(started=started, ended=time.time(), method=request.method,
                                    path=normalize_path(request.path), query=request.query_string,
                                    status=status,
                                    authorization=request.headers.get("Authorization"))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = normalize_path(request.path)
        try:
            if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                return await self._admin(request, path[len(ADMIN_PREFIX):] or "/")
            rule = self.faults.decide(request.method, path)
            if rule is not None:
                if rule.kind == "drop":
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError
                if rule.kind == "hold":
                    await self._hold(request, path, rule.delay)
                    return await self._dispatch(request, path)
                await asyncio.sleep(rule.delay)
                if rule.kind == "status":
                    code, message = FAULT_BODIES[rule.status]
                    return _error_response(rule.status, code, message)
            return await self._dispatch(request, path)
        except ApiError as err:
            return _error_response(err.status, err.error_code, err.message)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("emulator error on %s %s", request.method, path)
            code, message = FAULT_BODIES[500]
            return _error_response(500, code, message)

    async def _hold(self, request: web.Request, path: str, seconds: float) -> None:
        """Keep the request waiting; drop it when its client went away meanwhile (never acted upon)."""
        await self.holds.hold(request.method, path, seconds)
        if request.transport is None or request.transport.is_closing():
            raise asyncio.CancelledError

    async def _dispatch(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == "/services/oauth2/token":
            if request.method != "POST":
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. "
                               "Allowed are POST")
            return await self._token(request)
        if path in ("/services/data", "/services/data/"):
            _allow(request, "GET", "HEAD")
            return self._json(request, self._versions())
        if path == setup_pages.JOB_PAGE_PATH:  # where the operators' extra link points
            _allow(request, "GET", "HEAD")
            job_id = setup_pages.job_id_of(request.query.get("address", ""))
            status, page = setup_pages.job_page(await self._db(self.store.get_job, job_id), job_id)
            return web.Response(status=status, text=page, content_type="text/html")
        match = _API_RE.match(path)
        if match is None:
            if path.startswith("/id/"):
                return await self._identity(request, path)
            raise _not_found()
        principal, usage = await self._db(self._authenticate_and_count, request.headers.get("Authorization"))
        if principal is None:
            return web.Response(status=401, body=INVALID_SESSION_BODY, headers={"Content-Type": JSON_TYPE})
        limit_header = {"Sforce-Limit-Info": f"api-usage={usage}/{self.config.daily_api_requests}"}
        request[LIMIT_HEADER_KEY] = limit_header
        if usage > self.config.daily_api_requests:
            return _error_response(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                                   limit_header)
        try:
            response = await self._api(request, match, principal)
        except ApiError as err:
            response = _error_response(err.status, err.error_code, err.message)
        if not response.prepared:
            response.headers.update(limit_header)
        return response

    def _authenticate_and_count(self, authorization: str | None) -> tuple[Principal | None, int]:
        """One database round trip per API call: check the session, then count the call."""
        assert self.oauth is not None
        principal = self.oauth.authenticate(authorization)
        if principal is None:
            return None, 0
        return principal, self.store.increment("DailyApiRequests")

    async def _authenticate(self, request: web.Request) -> Principal | None:
        assert self.oauth is not None
        return await self._db(self.oauth.authenticate, request.headers.get("Authorization"))

    async def _api(self, request: web.Request, match: re.Match[str],
                   principal: Principal) -> web.StreamResponse:
        major, minor = int(match["major"]), int(match["minor"])
        if minor != 0 or not MIN_API_VERSION <= major <= MAX_API_VERSION:
            raise _not_found()
        version = f"{major}.0"
        rest = match["rest"] or "/"
        if rest == "/":
            _allow(request, "GET", "HEAD")
            return self._json(request, self._resources(version))
        if rest == "/limits":
            _allow(request, "GET", "HEAD")
            return self._json(request, await self._db(self._limits))
        if rest == "/sobjects" or rest.startswith("/sobjects/"):
            _allow(request, "GET", "HEAD")
            return self._sobjects(request, rest, version)
        job_match = _JOB_RE.match(rest)
        if job_match is None:
            raise _not_found()
        kind, job_id, sub = job_match["kind"], job_match["id"], job_match["sub"]
        if kind == "query" and major < QUERY_MIN_VERSION:
            raise _not_found()
        if job_id is None:
            method = _allow(request, "GET", "POST")
            if method == "POST":
                if kind == "ingest":
                    return await self._create_ingest(request, version)
                return await self._create_query(request, version)
            return await self._list_jobs(request, kind, version)
        job = await self._load_job(job_id, kind)
        if sub is None:
            method = _allow(request, "GET", "PATCH", "DELETE")
            if method == "GET":
                return self._json(request, self._job_info(job, full=True))
            if method == "PATCH":
                return await self._patch_job(request, job)
            return await self._delete_job(job)
        if kind == "ingest" and sub == "batches":
            _allow(request, "PUT")
            return await self._upload(request, job)
        if kind == "ingest":
            result_set = {name.lower(): name for name in RESULT_SETS}.get(sub.lower())
            if result_set is None:
                raise _not_found()
            _allow(request, "GET")
            return await self._ingest_results(request, job, result_set)
        if sub == "results":
            _allow(request, "GET")
            return await self._query_results(request, job, version)
        if sub == "resultPages":
            if major < RESULT_PAGES_MIN_VERSION:
                raise _not_found()
            _allow(request, "GET")
            return await self._result_pages(request, job, version)
        raise _not_found()

    def _sobjects(self, request: web.Request, rest: str, version: str) -> web.Response:
        """``/sobjects`` (describeGlobal), ``/sobjects/X`` and ``/sobjects/X/describe`` from the schema."""
        parts = rest.split("/")[2:]  # "", "sobjects", ...
        if not parts:
            return self._json(request, describe.describe_global(self.schema, version))
        obj = self.schema.get_object(parts[0])
        if obj is None or len(parts) > 2 or (len(parts) == 2 and parts[1] != "describe"):
            raise _not_found()
        if len(parts) == 1:
            return self._json(request, {"objectDescribe": describe.object_summary(obj, version),
                                        "recentItems": []})
        payload = describe.describe_object(self.schema, obj, version)
        etag = '"' + hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Last-Modified": email.utils.formatdate(self._started_at, usegmt=True)}
        if _not_modified(request, etag, self._started_at):
            return web.Response(status=304, headers=headers)
        response = self._json(request, payload)
        response.headers.update(headers)
        return response

    # -- responses ---------------------------------------------------------------------------------
    def _json(self, request: web.Request, payload: Any, status: int = 200) -> web.Response:
        if request.headers.get("X-PrettyPrint"):
            body = json.dumps(payload, indent=2, separators=(",", " : "))
        else:
            body = json.dumps(payload, separators=(",", ":"))
        return web.Response(status=status, body=body.encode("utf-8"), headers={"Content-Type": JSON_TYPE})

    def _versions(self) -> list[dict[str, str]]:
        return [
            {"label": release_label(major), "url": f"/services/data/v{major}.0", "version": f"{major}.0"}
            for major in range(MIN_API_VERSION, MAX_API_VERSION + 1)
        ]

    def _resources(self, version: str) -> dict[str, str]:
        base = f"/services/data/v{version}"
        return {"limits": f"{base}/limits", "jobs": f"{base}/jobs", "query": f"{base}/query",
                "sobjects": f"{base}/sobjects"}

    def _limits(self) -> dict[str, dict[str, int]]:
        counters = self.store.counters()
        config = self.config

        def entry(name: str, maximum: int) -> dict[str, int]:
            return {"Max": maximum, "Remaining": max(0, maximum - counters.get(name, 0))}

        return {
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
            "DailyApiRequests": entry("DailyApiRequests", config.daily_api_requests),
            "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
            "DailyBulkApiBatches": entry("DailyBulkApiBatches", config.daily_bulk_api_batches),
            "DailyBulkV2QueryFileStorageMB": entry("DailyBulkV2QueryFileStorageMB",
                                                   config.daily_bulk_v2_query_file_storage_mb),
            "DailyBulkV2QueryJobs": entry("DailyBulkV2QueryJobs", config.daily_bulk_v2_query_jobs),
            "DataStorageMB": {"Max": 1024, "Remaining": 1024},
            "FileStorageMB": {"Max": 1024, "Remaining": 1024},
        }

    def _job_info(self, job: JobRecord, *, full: bool, listed: bool = False) -> dict[str, Any]:
        """JobInfo in Salesforce's key order; ``full`` adds the GET-only fields and counters.

        ``listed`` is the shape of one job in ``GET /jobs/ingest|query``: ``jobType`` but no counters.
        """
        info: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": job.object,
            "createdById": job.created_by,
            "createdDate": job.created_date,
            "systemModstamp": job.system_modstamp,
            "state": job.state,
        }
        api_version = float(job.api_version)
        if job.kind == "ingest":
            info["externalIdFieldName"] = job.external_id_field
            info["concurrencyMode"] = "Parallel"
            info["contentType"] = job.content_type
            info["apiVersion"] = api_version
            if full or listed:
                info["jobType"] = "V2Ingest"
            info["contentUrl"] = f"services/data/v{job.api_version}/jobs/ingest/{job.id}/batches"
            info["lineEnding"] = job.line_ending
            info["columnDelimiter"] = job.column_delimiter
            if job.assignment_rule_id:
                info["assignmentRuleId"] = job.assignment_rule_id
            if full:
                info["numberRecordsProcessed"] = job.records_processed
                info["numberRecordsFailed"] = job.records_failed
                info["retries"] = job.retries
                info["totalProcessingTime"] = job.total_processing_time
                info["apiActiveProcessingTime"] = job.api_active_processing_time
                info["apexProcessingTime"] = job.apex_processing_time
        else:
            info["concurrencyMode"] = "Parallel"
            info["contentType"] = job.content_type
            info["apiVersion"] = api_version
            if full or listed:
                info["jobType"] = "V2Query"
            info["lineEnding"] = job.line_ending
            info["columnDelimiter"] = job.column_delimiter
            if full:
                info["numberRecordsProcessed"] = job.records_processed
                info["retries"] = job.retries
                info["totalProcessingTime"] = job.total_processing_time
                info["isPkChunkingSupported"] = True
        if full and job.state == JobState.FAILED.value and job.error_message:
            info["errorMessage"] = job.error_message
        return info

    # -- jobs: common ------------------------------------------------------------------------------
    async def _load_job(self, job_id: str, kind: str) -> JobRecord:
        job = await self._db(self.store.get_job, job_id, kind)
        if job is None:
            raise _not_found()
        if job.state != JobState.IN_PROGRESS.value and job.updated_at < time.time() - self.config.retention:
            await self._db(self.store.delete_job, job.id)
            raise _not_found()
        return job

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        return _parse_json_object(raw)

    async def _list_jobs(self, request: web.Request, kind: str, version: str) -> web.Response:
        query = request.query
        after_seq, served = 0, 0
        locator = query.get("queryLocator")
        if locator:
            m = _LIST_LOCATOR_RE.match(locator)
            if m is None:
                raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            after_seq, served = int(m["seq"]), int(m["served"])
        job_type = query.get("jobType")
        empty = False
        if job_type is not None:
            valid = ("BigObjectIngest", "Classic", "V2Ingest", "V2Query")
            if job_type not in valid:
                raise _enum_error("JobTypeEnum", job_type)
            empty = job_type != ("V2Ingest" if kind == "ingest" else "V2Query")
        if query.get("isPkChunkingEnabled", "").lower() == "true":
            empty = True
        mode = query.get("concurrencyMode")
        if mode is not None and mode.lower() != "parallel":
            empty = True
        size = self.config.list_page_size
        jobs = [] if empty else await self._db(self.store.list_jobs, kind, after_seq=after_seq,
                                               limit=size + 1)
        now = time.time()
        has_more = len(jobs) > size
        jobs = jobs[:size]
        records = [self._job_info(j, full=False, listed=True) for j in jobs
                   if j.state == JobState.IN_PROGRESS.value or j.updated_at >= now - self.config.retention]
        next_url = None
        if has_more:
            next_locator = f"01g{identity.POD}{jobs[-1].seq:09d}-{served + len(jobs)}"
            next_url = f"/services/data/v{version}/jobs/{kind}?queryLocator={next_locator}"
        return self._json(request, {"done": not has_more, "records": records, "nextRecordsUrl": next_url})

    async def _patch_job(self, request: web.Request, job: JobRecord) -> web.Response:
        body = await self._read_json(request)
        target = body.get("state")
        if target is None:
            raise ApiError(400, "INVALIDJOBSTATE", "Missing state in the request body")
        try:
            wanted = JobState(target)
        except ValueError:
            raise _enum_error("JobStateEnum", target) from None
        if wanted is JobState.CLOSED:  # a Bulk API 1.0 state: not a value of the 2.0 enum
            raise _enum_error("JobStateEnum", target)
        current = job.job_state
        if wanted is JobState.UPLOAD_COMPLETE and job.kind == "ingest":
            if current is not JobState.OPEN:
                raise _illegal_transition(job, wanted)
            if job.upload_count == 0 or not (self.store.job_dir(job.id) / UPLOAD_FILE).exists():
                raise ApiError(400, "INVALIDJOB",
                               f"No content was uploaded for job {job.id}; upload the CSV with "
                               "PUT on contentUrl before closing the job")
            updated = await self._db(self.store.update_job, job.id, only_if_state=[JobState.OPEN],
                                     state=JobState.UPLOAD_COMPLETE)
            if updated is None:
                raise _illegal_transition(await self._load_job(job.id, job.kind), wanted)
            self.worker.submit(job.id)
            return self._json(request, self._job_info(updated, full=False))
        if wanted is JobState.ABORTED:
            if current.is_terminal:
                raise _illegal_transition(job, wanted)
            updated = await self._db(
                self.store.update_job, job.id,
                only_if_state=[JobState.OPEN, JobState.UPLOAD_COMPLETE, JobState.IN_PROGRESS],
                state=JobState.ABORTED,
            )
            if updated is None:
                raise _illegal_transition(await self._load_job(job.id, job.kind), wanted)
            self.worker.request_abort(job.id)
            return self._json(request, self._job_info(updated, full=False))
        raise _illegal_transition(job, wanted)

    async def _delete_job(self, job: JobRecord) -> web.Response:
        if job.state in (JobState.OPEN.value, JobState.IN_PROGRESS.value):
            raise ApiError(400, "INVALIDJOBSTATE",
                           f"Job {job.id} is in state {job.state} and cannot be deleted; abort it first")
        self.worker.request_abort(job.id)
        await self._db(self.store.delete_job, job.id)
        return web.Response(status=204)

    # -- ingest ------------------------------------------------------------------------------------
    def _validate_ingest(self, body: dict[str, Any], version: str) -> dict[str, Any]:
        object_name = body.get("object")
        operation = body.get("operation")
        if not object_name or not isinstance(object_name, str):
            raise ApiError(400, "INVALIDJOB", "The object field is required")
        if operation is None:
            raise ApiError(400, "INVALIDJOB", "The operation field is required")
        if operation not in {op.value for op in IngestOperation}:
            raise _enum_error("OperationEnum", operation)
        content_type = body.get("contentType", "CSV")
        if content_type != "CSV":
            raise _enum_error("ContentTypeEnum", content_type)
        delimiter = body.get("columnDelimiter", "COMMA")
        if delimiter not in COLUMN_DELIMITERS:
            raise _enum_error("ColumnDelimiterEnum", delimiter)
        line_ending = body.get("lineEnding", "LF")
        if line_ending not in LINE_ENDINGS:
            raise _enum_error("LineEndingEnum", line_ending)
        obj = self.schema.get_object(object_name)
        if obj is None:
            raise ApiError(400, "INVALIDENTITY", f"Entity '{object_name}' is not supported by the Bulk API.")
        external_id = body.get("externalIdFieldName")
        if operation == "upsert":
            if not external_id:
                raise ApiError(400, "INVALIDJOB", f"External ID was blank for {obj.name}. An "
                               "External ID must be specified for upsert.")
            field = obj.get_field(str(external_id))
            if field is None or not field.indexed:
                raise ApiError(400, "INVALIDJOB", f"Field name provided, {external_id} does not "
                               f"match an External ID, Salesforce Id, or indexed field for {obj.name}")
            external_id = field.name
        elif external_id:
            raise ApiError(400, "INVALIDJOB",
                           "externalIdFieldName can only be specified for upsert operations")
        assignment_rule = body.get("assignmentRuleId")
        if assignment_rule is not None:
            if float(version) < 49.0:
                raise ApiError(400, "INVALIDJOB",
                               "assignmentRuleId is available in API version 49.0 and later")
            from airflow_provider_sfbulk.protocol.ids import is_valid_id

            if not isinstance(assignment_rule, str) or not is_valid_id(assignment_rule) \
                    or not assignment_rule.startswith("01Q"):
                raise ApiError(400, "INVALIDJOB", f"Invalid assignment rule id: {assignment_rule}")
        concurrency = body.get("concurrencyMode")
        if concurrency is not None and str(concurrency).lower() != "parallel":
            raise _enum_error("ConcurrencyModeEnum", concurrency)
        unknown = set(body) - {"object", "operation", "externalIdFieldName", "contentType", "columnDelimiter",
                               "lineEnding", "assignmentRuleId", "concurrencyMode"}
        if unknown:
            name = sorted(unknown)[0]
            raise ApiError(400, "JSON_PARSER_ERROR",
                           f"Unrecognized field \"{name}\" at [line:1, column:1]")
        return {"object_name": obj.name, "operation": operation, "external_id_field": external_id,
                "content_type": content_type, "column_delimiter": delimiter, "line_ending": line_ending,
                "assignment_rule_id": assignment_rule}

    async def _create_ingest(self, request: web.Request, version: str) -> web.Response:
        if request.content_type == "multipart/form-data":
            return await self._create_multipart(request, version)
        body = await self._read_json(request)
        fields = self._validate_ingest(body, version)
        job = await self._db(self.store.create_job, kind="ingest", state=JobState.OPEN, api_version=version,
                             **fields)
        return self._json(request, self._job_info(job, full=False))

    async def _create_multipart(self, request: web.Request, version: str) -> web.Response:
        reader = await request.multipart()
        job_body: dict[str, Any] | None = None
        spool_dir = self.data_dir / "tmp"
        await self._db(spool_dir.mkdir, exist_ok=True)
        fd, spool_name = tempfile.mkstemp(dir=spool_dir, suffix=".csv")
        os.close(fd)
        spool = Path(spool_name)
        got_content = False
        try:
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise ApiError(400, "INVALIDJOB", "nested multipart content is not supported")
                if part.name == "job":
                    raw = await part.read()
                    job_body = _parse_json_object(bytes(raw))
                elif part.name == "content":
                    await self._spool_multipart_content(part, spool)
                    got_content = True
                else:
                    await part.release()
            if job_body is None:
                raise ApiError(400, "INVALIDJOB", "The multipart request has no 'job' part")
            if not got_content:
                raise ApiError(400, "INVALIDJOB", "The multipart request has no 'content' part")
            fields = self._validate_ingest(job_body, version)
            job = await self._db(self.store.create_job, kind="ingest", state=JobState.OPEN,
                                 api_version=version, **fields)
            target = self.store.job_dir(job.id) / UPLOAD_FILE
            await self._db(os.replace, spool, target)
            size = await self._db(lambda: target.stat().st_size)
            closed = await self._db(self.store.update_job, job.id, state=JobState.UPLOAD_COMPLETE,
                                    upload_count=1, upload_bytes=size)
            assert closed is not None
            self.worker.submit(closed.id)
            return self._json(request, self._job_info(closed, full=False))
        finally:
            await self._db(lambda: spool.unlink(missing_ok=True))

    async def _spool_multipart_content(self, part: Any, spool: Path) -> None:
        limit_chars = self.config.max_multipart_chars
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chars = 0
        handle = await self._db(spool.open, "wb")
        try:
            while True:
                chunk = await part.read_chunk(CHUNK)
                if not chunk:
                    break
                chars += len(decoder.decode(chunk))
                if chars > limit_chars:
                    raise ApiError(400, "EXCEEDED_MAX_SIZE",
                                   f"The content of a multipart request must not exceed {limit_chars} "
                                   "characters; upload larger data with PUT on contentUrl")
                await self._db(handle.write, chunk)
        finally:
            await self._db(handle.close)

    async def _upload(self, request: web.Request, job: JobRecord) -> web.Response:
        if job.state != JobState.OPEN.value:
            raise ApiError(400, "INVALIDJOBSTATE",
                           f"Job {job.id} is in state {job.state}; data can only be uploaded to an Open job")
        if job.upload_count > 0:
            raise _multiple_uploads(job.id)
        limit = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        claimed = await self._db(self.store.claim_upload, job.id)
        if not claimed:
            raise _multiple_uploads(job.id)
        job_dir = self.store.job_dir(job.id)
        part_path = job_dir / (UPLOAD_FILE + ".part")
        total = 0
        ok = False
        handle = await self._db(part_path.open, "wb")
        try:
            buffer = bytearray()
            while True:
                chunk = await request.content.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await self._db(handle.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await self._db(handle.write, bytes(buffer))
            ok = True
        finally:
            await self._db(handle.close)
            if not ok:
                await self._db(lambda: part_path.unlink(missing_ok=True))
                await self._db(self.store.update_job, job.id, touch=False, upload_count=0)
        if total == 0:
            await self._db(lambda: part_path.unlink(missing_ok=True))
            await self._db(self.store.update_job, job.id, touch=False, upload_count=0)
            raise ApiError(400, "INVALIDBATCH", "The uploaded content is empty")
        await self._db(os.replace, part_path, job_dir / UPLOAD_FILE)
        await self._db(self.store.update_job, job.id, upload_bytes=total)
        return web.Response(status=201)

    async def _ingest_results(self, request: web.Request, job: JobRecord,
                              result_set: str) -> web.StreamResponse:
        if not job.job_state.is_terminal:
            raise ApiError(400, "INVALIDJOBSTATE",
                           f"Results are not available while job {job.id} is in state {job.state}")
        # an abort returns at once, while the worker finishes its current batch: wait for the files
        running = self.worker.future_of(job.id)
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), 60)
        path = self.store.job_dir(job.id) / f"{result_set}.csv"
        if not await self._db(path.exists):
            never_ran = job.records_processed == 0 and job.state == JobState.ABORTED.value
            await self._db(self.worker.ensure_result_files, job, all_unprocessed=never_ran)
        size = await self._db(lambda: path.stat().st_size)
        return await self._stream(request, path, 0, size, b"", {"Content-Type": CSV_TYPE})

    # -- query -------------------------------------------------------------------------------------
    async def _create_query(self, request: web.Request, version: str) -> web.Response:
        from airflow_provider_sfbulk.emulator import soql

        body = await self._read_json(request)
        operation = body.get("operation")
        if operation is None:
            raise ApiError(400, "INVALIDJOB", "The operation field is required")
        if operation not in {op.value for op in QueryOperation}:
            raise _enum_error("OperationEnum", operation)
        text = body.get("query")
        if not text or not isinstance(text, str):
            raise ApiError(400, "INVALIDJOB", "The query field is required")
        content_type = body.get("contentType", "CSV")
        if content_type != "CSV":
            raise _enum_error("ContentTypeEnum", content_type)
        delimiter = body.get("columnDelimiter", "COMMA")
        if delimiter not in COLUMN_DELIMITERS:
            raise _enum_error("ColumnDelimiterEnum", delimiter)
        line_ending = body.get("lineEnding", "LF")
        if line_ending not in LINE_ENDINGS:
            raise _enum_error("LineEndingEnum", line_ending)
        try:
            compiled = soql.compile_soql(text, self.schema, include_deleted=operation == "queryAll")
        except soql.SoqlError as err:
            raise ApiError(400, err.error_code, err.message) from None
        job = await self._db(self.store.create_job, kind="query", operation=operation,
                             object_name=compiled.object_name, state=JobState.UPLOAD_COMPLETE,
                             api_version=version, content_type=content_type, line_ending=line_ending,
                             column_delimiter=delimiter, query=text)
        await self._db(self.store.increment, "DailyBulkV2QueryJobs")
        self.worker.submit(job.id)
        return self._json(request, self._job_info(job, full=False))

    def _check_results_ready(self, job: JobRecord, version: str) -> None:
        if job.state != JobState.JOB_COMPLETE.value:
            raise ApiError(400, "INVALIDJOBSTATE",
                           f"Results are only available for a job in state JobComplete; job {job.id} is "
                           f"in state {job.state}")
        if job.api_version != version:
            raise ApiError(409, "API_VERSION_MISMATCH",
                           f"This job was created with API version {job.api_version}; request its results "
                           f"with the same version")

    async def _query_results(self, request: web.Request, job: JobRecord, version: str) -> web.StreamResponse:
        from airflow_provider_sfbulk.emulator import query_results, soql

        self._check_results_ready(job, version)
        max_records = _max_records(request.query.get("maxRecords"))
        locator = request.query.get("locator") or None
        if locator == "null":
            locator = None
        out_dir = self.store.job_dir(job.id) / QUERY_DIR
        try:
            page = await self._db(query_results.read_page, out_dir, locator, max_records,
                                  default_page_records=self.config.default_page_records)
        except soql.SoqlError as err:
            raise ApiError(400, err.error_code, err.message) from None
        headers = {
            "Content-Type": CSV_TYPE,
            "Sforce-Locator": page.next_locator if page.next_locator is not None else "null",
            "Sforce-NumberOfRecords": str(page.record_count),
        }
        return await self._stream(request, page.path, page.start, page.end, page.header, headers)

    async def _result_pages(self, request: web.Request, job: JobRecord, version: str) -> web.Response:
        from airflow_provider_sfbulk.emulator import query_results

        shape = self.settings.result_pages_shape
        if shape == result_pages.SHAPE_MISSING:
            raise _not_found()
        self._check_results_ready(job, version)
        max_records = _max_records(request.query.get("maxRecords")) or self.config.default_page_records
        cursor = request.query.get("locator")
        out_dir = self.store.job_dir(job.id) / QUERY_DIR
        locators = await self._db(query_results.page_locators, out_dir, max_records)
        try:
            start = result_pages.decode_cursor(cursor) if cursor else 0
        except result_pages.CursorError:
            start = -1
        if start < 0 or start > len(locators):
            raise ApiError(400, "INVALID_LOCATOR", f"Invalid locator: {cursor}")
        return self._json(request, result_pages.build_answer(
            shape, version=version, job_id=job.id, locators=locators, start=start, max_records=max_records))

    # -- streaming ---------------------------------------------------------------------------------
    async def _stream(self, request: web.Request, path: Path, start: int, end: int, header: bytes,
                      headers: dict[str, str]) -> web.StreamResponse:
        use_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        response = web.StreamResponse(status=200, headers=headers)
        if use_gzip:
            response.headers["Content-Encoding"] = "gzip"
            response.headers["Vary"] = "Accept-Encoding"
        else:
            response.content_length = len(header) + max(0, end - start)
        response.headers.update(request.get(LIMIT_HEADER_KEY, {}))
        await response.prepare(request)
        # Level 1: about 3x the speed of the default level for ~25% more bytes, so the emulator's own
        # compression does not become the bottleneck of the gzip downloads it serves (docs/performance.md).
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if use_gzip else None
        pace = _Pacer(self.config.download_bandwidth)
        handle = await self._db(path.open, "rb")
        try:
            await self._db(handle.seek, start)
            pending: bytes | None = header
            position = start
            while True:
                size = min(pace.chunk_size(CHUNK), end - position)
                if pending is None and size <= 0:
                    break
                chunk = await self._db(_read_and_compress, handle, max(size, 0), pending or b"", compressor)
                pending = None
                position += max(size, 0)
                if chunk:
                    await pace.wait(len(chunk))
                    await response.write(chunk)
            if compressor is not None:
                tail = compressor.flush()
                await pace.wait(len(tail))
                await response.write(tail)
        finally:
            await self._db(handle.close)
        await response.write_eof()
        return response

    # -- OAuth and identity ------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        assert self.oauth is not None
        params: dict[str, str] = dict(request.query)
        raw = await request.read()
        if raw:
            params.update(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
        try:
            result = await self._db(self.oauth.token, params, request.headers.get("Authorization"))
        except OAuthError as err:
            return web.Response(status=err.status, body=json.dumps(err.body()).encode(),
                                headers={"Content-Type": "application/json;charset=UTF-8"})
        return web.Response(status=200, body=json.dumps(result).encode(),
                            headers={"Content-Type": "application/json;charset=UTF-8",
                                     "Cache-Control": "no-cache,must-revalidate,max-age=0,no-store,private"})

    async def _identity(self, request: web.Request, path: str) -> web.Response:
        if path != f"/id/{identity.ORG_ID}/{identity.USER_ID}":
            raise _not_found()
        principal = await self._authenticate(request)
        if principal is None:
            return web.Response(status=401, body=b"Bad_OAuth_Token", headers={"Content-Type": "text/plain"})
        return self._json(request, {
            "id": f"{self.base_url}{path}", "user_id": identity.USER_ID, "organization_id": identity.ORG_ID,
            "username": principal.username, "active": True, "user_type": "STANDARD",
            "urls": {"rest": f"{self.base_url}/services/data/v{{version}}/"},
        })

    # -- admin -------------------------------------------------------------------------------------
    async def _admin(self, request: web.Request, sub: str) -> web.Response:
        if request.remote not in LOOPBACK:
            raise ApiError(403, "FORBIDDEN", "Admin endpoints answer loopback clients only")
        method = request.method
        if sub == "/health":
            return self._json(request, {"status": "ok", "base_url": self.base_url})
        if sub == "/faults":
            if method == "GET":
                return self._json(request, self._faults_view())
            if method == "DELETE":
                self.reset_faults()
                return self._json(request, self._faults_view())
            if method in ("PUT", "POST"):
                body = await self._read_json(request)
                try:
                    rules = None
                    if "rules" in body:
                        rules = [FaultRule.from_dict(r) for r in body["rules"]]
                        if method == "POST":
                            rules = self.faults.rules + rules
                    kwargs: dict[str, Any] = {}
                    if "lock_row_rate" in body:
                        kwargs["lock_row_rate"] = float(body["lock_row_rate"])
                    if "failing_batch" in body:
                        kwargs["failing_batch"] = body["failing_batch"]
                    if "seed" in body:
                        kwargs["seed"] = int(body["seed"])
                    if "drop_result_rows" in body:
                        kwargs["drop_result_rows"] = body["drop_result_rows"]
                    if "drop_result_jobs" in body:
                        kwargs["drop_result_jobs"] = body["drop_result_jobs"]
                    self.set_faults(rules, **kwargs)
                except (TypeError, ValueError) as err:
                    raise ApiError(400, "INVALID_FAULT", str(err)) from None
                return self._json(request, self._faults_view())
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        if sub == "/settings":
            return await self._admin_settings(request)
        if sub == "/holds" and method == "GET":
            return self._json(request, self.holds.view())
        if sub == "/holds/release" and method == "POST":
            return self._json(request, {"released": self.holds.release()})
        if sub == "/expire-tokens" and method == "POST":
            count = await self._db(self.store.expire_access_tokens)
            return self._json(request, {"expired": count})
        if sub == "/refresh-token" and method == "POST":
            assert self.oauth is not None
            token = await self._db(self.oauth.mint_refresh_token)
            return self._json(request, {"refresh_token": token})
        if sub == "/seed" and method == "POST":
            body = await self._read_json(request)
            try:
                count = int(body.get("count", 0))
                seed = int(body["seed"]) if "seed" in body else None
                inserted = await self._db(self.seed, str(body.get("object", "")), count, seed=seed)
            except (TypeError, ValueError) as err:
                raise ApiError(400, "INVALID_REQUEST", str(err)) from None
            return self._json(request, {"object": body.get("object"), "inserted": inserted})
        if sub.startswith("/records/") and method == "GET":
            object_name = sub[len("/records/"):]
            include_deleted = request.query.get("includeDeleted", "").lower() in ("1", "true")
            try:
                rows = await self._db(self.read_records, object_name, include_deleted=include_deleted)
            except ValueError as err:
                raise ApiError(404, "NOT_FOUND", str(err)) from None
            return self._json(request, {"object": object_name, "totalSize": len(rows), "records": rows})
        if sub == "/sweep" and method == "POST":
            expired = await self._db(self.sweep)
            return self._json(request, {"deleted": expired})
        raise _not_found()

    def _faults_view(self) -> dict[str, Any]:
        faults = self.ingest_faults
        return {"rules": self.faults.status(), "lock_row_rate": faults.lock_row_rate,
                "failing_batch": faults.failing_batch, "seed": faults.seed,
                "drop_result_rows": faults.drop_result_rows, "drop_result_jobs": faults.drop_result_jobs}

    async def _admin_settings(self, request: web.Request) -> web.Response:
        """``GET`` shows, ``PUT``/``PATCH`` change (every key optional), ``DELETE`` restores the config's."""
        method = request.method
        if method in ("PUT", "PATCH"):
            body = await self._read_json(request)
            try:
                self.settings.update(**body)
            except ValueError as err:
                raise ApiError(400, "INVALID_SETTING", str(err)) from None
        elif method == "DELETE":
            config = self.config
            self.settings.update(result_pages_shape=config.result_pages_shape,
                                 query_timeout_records=config.query_timeout_records,
                                 query_timeout_style=config.query_timeout_style)
        elif method != "GET":
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        return self._json(request, self.settings.to_dict())


# -- module helpers --------------------------------------------------------------------------------
def _error_response(status: int, code: str, message: str,
                    headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps([{"errorCode": code, "message": message}], separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE, **(headers or {})})


def _not_modified(request: web.Request, etag: str, last_modified: float) -> bool:
    """True when the request's ``If-None-Match`` / ``If-Modified-Since`` says the client's copy is current."""
    match = request.headers.get("If-None-Match")
    if match is not None:
        return etag in [tag.strip() for tag in match.split(",")] or match.strip() == "*"
    since = request.headers.get("If-Modified-Since")
    if since:
        with contextlib.suppress(TypeError, ValueError):
            return email.utils.parsedate_to_datetime(since).timestamp() >= int(last_modified)
    return False


def _allow(request: web.Request, *methods: str) -> str:
    if request.method not in methods:
        raise ApiError(405, "METHOD_NOT_ALLOWED",
                       f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(methods)}")
    return request.method


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8-sig") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character or end of input: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR",
                       "Cannot deserialize instance of JobInfo out of non-object token at [line:1, column:1]")
    return body


def _illegal_transition(job: JobRecord, wanted: JobState) -> ApiError:
    return ApiError(400, "INVALIDJOBSTATE",
                    f"Invalid state transition: job {job.id} is in state {job.state} and cannot be set to "
                    f"{wanted.value}")


def _multiple_uploads(job_id: str) -> ApiError:
    return ApiError(400, "INVALIDJOB",
                    f"Found multipe contents for job: <{job_id[:15]}>, please 'Close' / 'Abort' / "
                    "'Delete' the current Job then create a new Job and make sure you only do 'PUT' once "
                    "on a given Job.")


def _too_large(limit: int) -> ApiError:
    return ApiError(400, "EXCEEDED_MAX_SIZE",
                    f"The upload exceeds the maximum of {limit} bytes per job; "
                    "split the data into several jobs")


def _max_records(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ApiError(400, "INVALIDPARAMETER", f"maxRecords must be a positive integer, not {value}")
    return number


class _Pacer:
    """Caps a download at ``bandwidth`` bytes per second (None: no cap) by sleeping between writes."""

    def __init__(self, bandwidth: int | None) -> None:
        self.bandwidth = bandwidth
        self.started = time.monotonic()
        self.total = 0

    def chunk_size(self, default: int) -> int:
        """Read size: about a tenth of a second of data when capped, so the pace stays smooth."""
        if self.bandwidth is None:
            return default
        return max(4096, min(default, self.bandwidth // 10))

    async def wait(self, size: int) -> None:
        """Sleep until ``size`` more bytes fit the cap.

        The cap counts bytes on the wire, so gzip bodies count compressed.
        """
        if self.bandwidth is None:
            return
        self.total += size
        ahead = self.total / self.bandwidth - (time.monotonic() - self.started)
        if ahead > 0:
            await asyncio.sleep(ahead)


def _read_and_compress(handle: Any, size: int, prefix: bytes, compressor: Any) -> bytes:
    data = prefix + (handle.read(size) if size > 0 else b"")
    if compressor is not None:
        return compressor.compress(data)
    return data

