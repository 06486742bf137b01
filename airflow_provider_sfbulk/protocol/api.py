"""Bulk API 2.0 endpoints: request builders and response parsers (pure, no I/O).

Each ``build_*`` function returns a :class:`~airflow_provider_sfbulk.protocol.messages.Request`; each
``parse_*`` function turns a decoded JSON document or response headers into a typed value. The
:class:`~airflow_provider_sfbulk.protocol.client.BulkClient` combines them with authentication and retries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from airflow_provider_sfbulk.exceptions import SalesforceBulkProtocolError
from airflow_provider_sfbulk.protocol.messages import Request, UploadSource
from airflow_provider_sfbulk.protocol.states import (
    COLUMN_DELIMITERS,
    LINE_ENDINGS,
    RESULT_SETS,
    IngestOperation,
    JobKind,
    JobState,
    QueryOperation,
)

try:
    from airflow_provider_sfbulk import __version__ as _VERSION
except ImportError:  # pragma: no cover
    _VERSION = "0"

USER_AGENT = f"airflow-provider-sfbulk/{_VERSION}"
JSON_TYPE = "application/json; charset=UTF-8"
#: Largest CSV accepted for the multipart create-and-upload call. Salesforce's guides give 20,000 or
#: 100,000 characters for the ``content`` part; larger data belongs in ``upload_job_data``.
MULTIPART_MAX_BYTES = 100_000

_RESULT_SET_BY_LOWER = {name.lower(): name for name in RESULT_SETS}


# --- Typed results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobInfo:
    """A Bulk API 2.0 job as returned by create, PATCH, GET and list calls.

    Counters and timings are ``None`` where the response does not carry them (create and PATCH responses,
    list entries). ``raw`` holds the document as received, unknown fields included.
    """

    id: str
    kind: JobKind
    state: JobState
    operation: str
    object: str | None = None
    created_by_id: str | None = None
    created_date: str | None = None
    system_modstamp: str | None = None
    external_id_field_name: str | None = None
    concurrency_mode: str | None = None
    content_type: str | None = None
    api_version: float | None = None
    content_url: str | None = None
    line_ending: str | None = None
    column_delimiter: str | None = None
    job_type: str | None = None
    assignment_rule_id: str | None = None
    query: str | None = None
    number_records_processed: int | None = None
    number_records_failed: int | None = None
    retries: int | None = None
    total_processing_time: int | None = None
    api_active_processing_time: int | None = None
    apex_processing_time: int | None = None
    is_pk_chunking_supported: bool | None = None
    error_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def message(self) -> str | None:
        """The job's ``errorMessage`` (set when ``Failed``)."""
        return self.error_message

    @property
    def created_at(self) -> datetime | None:
        """``createdDate`` as an aware datetime."""
        return parse_sf_datetime(self.created_date)

    def to_dict(self) -> dict[str, Any]:
        """The job as received (JSON-serialisable), e.g. for XCom."""
        return dict(self.raw)


_JOB_FIELDS: dict[str, str] = {
    "object": "object",
    "createdById": "created_by_id",
    "createdDate": "created_date",
    "systemModstamp": "system_modstamp",
    "externalIdFieldName": "external_id_field_name",
    "concurrencyMode": "concurrency_mode",
    "contentType": "content_type",
    "contentUrl": "content_url",
    "lineEnding": "line_ending",
    "columnDelimiter": "column_delimiter",
    "jobType": "job_type",
    "assignmentRuleId": "assignment_rule_id",
    "query": "query",
    "errorMessage": "error_message",
}
_JOB_INT_FIELDS: dict[str, str] = {
    "numberRecordsProcessed": "number_records_processed",
    "numberRecordsFailed": "number_records_failed",
    "retries": "retries",
    "totalProcessingTime": "total_processing_time",
    "apiActiveProcessingTime": "api_active_processing_time",
    "apexProcessingTime": "apex_processing_time",
}


@dataclass(frozen=True)
class JobList:
    """One page of ``GET /jobs/ingest`` or ``GET /jobs/query``."""

    records: tuple[JobInfo, ...]
    done: bool
    next_records_url: str | None


@dataclass(frozen=True)
class QueryResultPage:
    """What one ``GET .../results`` call delivered into the caller's writable.

    ``next_locator`` is ``None`` on the last page (Salesforce sends the literal ``null``).
    """

    next_locator: str | None
    record_count: int
    bytes_written: int


@dataclass(frozen=True)
class ResultPageRef:
    """One entry of ``resultPages``: the URL and the ``locator``/``maxRecords`` it carries."""

    url: str
    locator: str | None
    max_records: int | None


@dataclass(frozen=True)
class ResultPagesPage:
    """One page of ``GET .../resultPages``."""

    pages: tuple[ResultPageRef, ...]
    done: bool
    next_records_url: str | None


class Limits(dict):  # type: ignore[type-arg]
    """The ``/limits`` document (a dict keyed by limit name) with typed accessors."""

    def maximum(self, name: str) -> int | None:
        """``Max`` of limit ``name``, ``None`` when unknown."""
        entry = self.get(name)
        return int(entry["Max"]) if isinstance(entry, dict) and "Max" in entry else None

    def remaining(self, name: str) -> int | None:
        """``Remaining`` of limit ``name``, ``None`` when unknown."""
        entry = self.get(name)
        return int(entry["Remaining"]) if isinstance(entry, dict) and "Remaining" in entry else None


# --- Paths and URLs ------------------------------------------------------------------------------------


def data_url(instance_url: str, api_version: str) -> str:
    """``{instance_url}/services/data/v{version}``."""
    return f"{instance_url.rstrip('/')}/services/data/v{api_version}"


def absolute_url(instance_url: str, path_or_url: str) -> str:
    """Join a server-relative path (``nextRecordsUrl``, ``resultUrl``, ``contentUrl``) to the instance."""
    if "://" in path_or_url:
        return path_or_url
    return f"{instance_url.rstrip('/')}/{path_or_url.lstrip('/')}"


def job_kind(kind: JobKind | str) -> JobKind:
    """Accept ``JobKind`` or its value (``"ingest"``/``"query"``)."""
    try:
        return kind if isinstance(kind, JobKind) else JobKind(str(kind).lower())
    except ValueError:
        raise ValueError(f"job kind must be 'ingest' or 'query', got {kind!r}") from None


def result_set_name(result_set: str) -> str:
    """Canonical result set name (``unprocessedRecords`` is accepted for ``unprocessedrecords``)."""
    try:
        return _RESULT_SET_BY_LOWER[result_set.lower()]
    except KeyError:
        raise ValueError(f"result_set must be one of {', '.join(RESULT_SETS)}, got {result_set!r}") from None


def job_setup_url(instance_url: str, job_id: str) -> str:
    """Deep link to the job on Setup's "Bulk Data Load Jobs" page."""
    return f"{instance_url.rstrip('/')}/lightning/setup/AsyncApiJobStatus/page?address=%2F{quote(job_id)}"


def _headers(token: str, *, accept: str = "application/json", encoding: str = "identity") -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": accept,
        "Accept-Encoding": encoding,
        "User-Agent": USER_AGENT,
    }


def _json_request(method: str, url: str, token: str, document: Mapping[str, Any] | None) -> Request:
    headers = _headers(token)
    body = None
    if document is not None:
        headers["Content-Type"] = JSON_TYPE
        body = json.dumps(document, separators=(",", ":")).encode()
    return Request(method, url, headers, body)


# --- Request builders ----------------------------------------------------------------------------------


def ingest_job_spec(
    object_name: str,
    operation: IngestOperation | str,
    external_id_field: str | None = None,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    assignment_rule_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body of an ingest job creation, validated client-side."""
    if not object_name:
        raise ValueError("object_name is required")
    try:
        op = IngestOperation(operation)
    except ValueError:
        allowed = ", ".join(o.value for o in IngestOperation)
        raise ValueError(f"operation must be one of {allowed}, got {operation!r}") from None
    if op is IngestOperation.UPSERT and not external_id_field:
        raise ValueError("an upsert job needs external_id_field")
    _check_dialect(column_delimiter, line_ending)
    spec: dict[str, Any] = {
        "object": object_name,
        "operation": op.value,
        "contentType": "CSV",
        "columnDelimiter": column_delimiter,
        "lineEnding": line_ending,
    }
    if external_id_field:
        spec["externalIdFieldName"] = external_id_field
    if assignment_rule_id:
        spec["assignmentRuleId"] = assignment_rule_id
    return spec


def _check_dialect(column_delimiter: str, line_ending: str) -> None:
    if column_delimiter not in COLUMN_DELIMITERS:
        raise ValueError(f"column_delimiter must be one of {', '.join(COLUMN_DELIMITERS)}")
    if line_ending not in LINE_ENDINGS:
        raise ValueError(f"line_ending must be one of {', '.join(LINE_ENDINGS)}")


def build_create_ingest_job(base: str, token: str, spec: Mapping[str, Any]) -> Request:
    """``POST /jobs/ingest`` with a JSON body; the job starts ``Open``."""
    return _json_request("POST", f"{base}/jobs/ingest", token, spec)


def build_create_ingest_job_with_data(
    base: str, token: str, spec: Mapping[str, Any], csv_data: bytes, boundary: str | None = None
) -> Request:
    """``POST /jobs/ingest`` as ``multipart/form-data``; the job starts ``UploadComplete``."""
    if len(csv_data) > MULTIPART_MAX_BYTES:
        raise ValueError(
            f"multipart create accepts at most {MULTIPART_MAX_BYTES} bytes of CSV; "
            "use create_ingest_job + upload_job_data for larger data"
        )
    boundary = boundary or f"sfbulk{uuid.uuid4().hex}"
    job_part = json.dumps(spec, separators=(",", ":")).encode()
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b"Content-Type: application/json\r\n",
            b'Content-Disposition: form-data; name="job"\r\n\r\n',
            job_part,
            f"\r\n--{boundary}\r\n".encode(),
            b"Content-Type: text/csv\r\n",
            b'Content-Disposition: form-data; name="content"; filename="content"\r\n\r\n',
            csv_data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = _headers(token)
    headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    return Request("POST", f"{base}/jobs/ingest", headers, body)


def build_upload_job_data(base: str, token: str, job_id: str, source: UploadSource) -> Request:
    """``PUT /jobs/ingest/{id}/batches`` streaming the CSV (one upload per job)."""
    headers = _headers(token)
    headers["Content-Type"] = "text/csv"
    return Request("PUT", f"{base}/jobs/ingest/{quote(job_id)}/batches", headers, source)


def build_set_job_state(base: str, token: str, job_id: str, kind: JobKind, state: JobState) -> Request:
    """``PATCH /jobs/{kind}/{id}`` with ``{"state": ...}`` (``UploadComplete`` or ``Aborted``)."""
    return _json_request("PATCH", f"{base}/jobs/{kind.value}/{quote(job_id)}", token, {"state": state.value})


def build_get_job(base: str, token: str, job_id: str, kind: JobKind) -> Request:
    """``GET /jobs/{kind}/{id}``."""
    return _json_request("GET", f"{base}/jobs/{kind.value}/{quote(job_id)}", token, None)


def build_delete_job(base: str, token: str, job_id: str, kind: JobKind) -> Request:
    """``DELETE /jobs/{kind}/{id}`` (204)."""
    return _json_request("DELETE", f"{base}/jobs/{kind.value}/{quote(job_id)}", token, None)


def build_list_jobs(
    base: str,
    token: str,
    kind: JobKind,
    *,
    next_url: str | None = None,
    instance_url: str | None = None,
    is_pk_chunking_enabled: bool | None = None,
    job_type: str | None = None,
    concurrency_mode: str | None = None,
) -> Request:
    """``GET /jobs/{kind}`` with filters, or the ``nextRecordsUrl`` of the previous page."""
    if next_url:
        return _json_request("GET", absolute_url(instance_url or base, next_url), token, None)
    params: dict[str, str] = {}
    if is_pk_chunking_enabled is not None:
        params["isPkChunkingEnabled"] = "true" if is_pk_chunking_enabled else "false"
    if job_type:
        params["jobType"] = job_type
    if concurrency_mode:
        params["concurrencyMode"] = concurrency_mode
    query = f"?{urlencode(params)}" if params else ""
    return _json_request("GET", f"{base}/jobs/{kind.value}{query}", token, None)


def build_download_ingest_results(
    base: str, token: str, job_id: str, result_set: str, *, gzip: bool = True
) -> Request:
    """``GET /jobs/ingest/{id}/{successfulResults|failedResults|unprocessedrecords}`` (CSV)."""
    name = result_set_name(result_set)
    return Request(
        "GET",
        f"{base}/jobs/ingest/{quote(job_id)}/{name}",
        _headers(token, accept="text/csv", encoding="gzip" if gzip else "identity"),
    )


def query_job_spec(
    soql: str,
    operation: QueryOperation | str = QueryOperation.QUERY,
    *,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
) -> dict[str, Any]:
    """The JSON body of a query job creation, validated client-side."""
    if not soql or not soql.strip():
        raise ValueError("soql is required")
    try:
        op = QueryOperation(operation)
    except ValueError:
        raise ValueError(f"operation must be 'query' or 'queryAll', got {operation!r}") from None
    _check_dialect(column_delimiter, line_ending)
    return {
        "operation": op.value,
        "query": soql,
        "contentType": "CSV",
        "columnDelimiter": column_delimiter,
        "lineEnding": line_ending,
    }


def build_create_query_job(base: str, token: str, spec: Mapping[str, Any]) -> Request:
    """``POST /jobs/query``."""
    return _json_request("POST", f"{base}/jobs/query", token, spec)


def build_query_results(
    base: str,
    token: str,
    job_id: str,
    *,
    locator: str | None = None,
    max_records: int | None = None,
    gzip: bool = True,
) -> Request:
    """``GET /jobs/query/{id}/results[?locator=&maxRecords=]``; omit ``locator`` for the first page."""
    params: dict[str, str] = {}
    if locator:
        params["locator"] = locator
    if max_records is not None:
        if max_records < 1:
            raise ValueError("max_records must be positive")
        params["maxRecords"] = str(max_records)
    query = f"?{urlencode(params)}" if params else ""
    return Request(
        "GET",
        f"{base}/jobs/query/{quote(job_id)}/results{query}",
        _headers(token, accept="text/csv", encoding="gzip" if gzip else "identity"),
    )


def build_result_pages(
    base: str,
    token: str,
    job_id: str,
    *,
    next_url: str | None = None,
    instance_url: str | None = None,
    max_records: int | None = None,
) -> Request:
    """``GET /jobs/query/{id}/resultPages`` (API 58.0+), or its ``nextRecordsUrl``.

    ``max_records`` asks for pages of at most that many rows on the first call (``maxRecords``; the
    guide documents it for ``/results`` only, so Salesforce may ignore it here: every ``resultUrl``
    carries the ``maxRecords`` that applies to it). ``nextRecordsUrl`` is followed as given, resolved by
    :func:`api_link_url` when it is a path.
    """
    if next_url:
        return _json_request("GET", api_link_url(base, instance_url or base, next_url), token, None)
    query = ""
    if max_records is not None:
        if max_records < 1:
            raise ValueError("max_records must be positive")
        query = f"?{urlencode({'maxRecords': str(max_records)})}"
    return _json_request("GET", f"{base}/jobs/query/{quote(job_id)}/resultPages{query}", token, None)


def build_limits(base: str, token: str) -> Request:
    """``GET /limits``."""
    return _json_request("GET", f"{base}/limits", token, None)


def build_describe(base: str, token: str, object_name: str) -> Request:
    """``GET /sobjects/{object}/describe``."""
    return _json_request("GET", f"{base}/sobjects/{quote(object_name, safe='')}/describe", token, None)


# --- Parsers -------------------------------------------------------------------------------------------


def decode_json(body: bytes, what: str) -> Any:
    """Decode a JSON body or raise :class:`SalesforceBulkProtocolError` naming ``what``."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        snippet = body[:200].decode("utf-8", errors="replace")
        raise SalesforceBulkProtocolError(f"{what}: response is not JSON: {snippet!r}") from None


def parse_job_info(document: Any, kind: JobKind | None = None) -> JobInfo:
    """Parse a JobInfo object. ``kind`` defaults to what ``jobType`` or the presence of ``query`` says."""
    if not isinstance(document, dict) or not document.get("id") or not document.get("state"):
        raise SalesforceBulkProtocolError(f"job info without id/state: {str(document)[:200]!r}")
    try:
        state = JobState(document["state"])
    except ValueError:
        raise SalesforceBulkProtocolError(f"unknown job state {document['state']!r}") from None
    if kind is None:
        job_type = document.get("jobType")
        is_query = job_type == "V2Query" or (job_type is None and "query" in document)
        kind = JobKind.QUERY if is_query else JobKind.INGEST
    values: dict[str, Any] = {target: document.get(source) for source, target in _JOB_FIELDS.items()}
    for source, target in _JOB_INT_FIELDS.items():
        raw_value = document.get(source)
        values[target] = (
            int(raw_value) if isinstance(raw_value, (int, float, str)) and raw_value != "" else None
        )
    api_version = document.get("apiVersion")
    pk = document.get("isPkChunkingSupported")
    return JobInfo(
        id=str(document["id"]),
        kind=kind,
        state=state,
        operation=str(document.get("operation", "")),
        api_version=float(api_version) if api_version not in (None, "") else None,
        is_pk_chunking_supported=bool(pk) if pk is not None else None,
        raw=dict(document),
        **values,
    )


def parse_job_list(document: Any, kind: JobKind) -> JobList:
    """Parse one page of the job list."""
    if not isinstance(document, dict) or not isinstance(document.get("records", []), list):
        raise SalesforceBulkProtocolError(f"job list without records: {str(document)[:200]!r}")
    records = tuple(parse_job_info(item, kind) for item in document.get("records") or [])
    next_url = document.get("nextRecordsUrl") or None
    done = bool(document.get("done", next_url is None)) or not next_url
    return JobList(records=records, done=done, next_records_url=None if done else next_url)


def parse_result_page_headers(
    headers_get: Any, bytes_written: int
) -> QueryResultPage:  # headers_get: Callable[[str], str | None]
    """Read ``Sforce-Locator`` (literal ``null`` on the last page) and ``Sforce-NumberOfRecords``."""
    locator = headers_get("Sforce-Locator")
    count = headers_get("Sforce-NumberOfRecords")
    if locator is None:
        raise SalesforceBulkProtocolError("query results without a Sforce-Locator header")
    try:
        record_count = int(count) if count is not None else -1
    except ValueError:
        raise SalesforceBulkProtocolError(f"bad Sforce-NumberOfRecords header {count!r}") from None
    locator = locator.strip()
    return QueryResultPage(
        next_locator=None if locator in ("", "null") else locator,
        record_count=record_count,
        bytes_written=bytes_written,
    )


def parse_result_url(url: str) -> ResultPageRef:
    """Split a ``resultUrl`` into its ``locator`` and ``maxRecords`` query parameters."""
    query = parse_qs(urlsplit(url).query)
    locator = query.get("locator", [None])[0]
    max_records = query.get("maxRecords", [None])[0]
    return ResultPageRef(
        url=url,
        locator=None if locator in (None, "", "null") else locator,
        max_records=int(max_records) if max_records and max_records.isdigit() else None,
    )


#: The two answers of ``resultPages`` seen so far: (list field, link field of each entry). Salesforce's
#: reference documents the first; a client library tested against live orgs reads the second, with
#: links relative to ``/services/data/vXX.X`` (msrivastav13/node-sf-bulk2, pull request 35).
RESULT_PAGES_SHAPES = (("resultPages", "resultUrl"), ("resultChunks", "resultLink"))


def _result_links(document: dict[str, Any]) -> list[str]:
    """The result links of one ``resultPages`` answer, in either shape."""
    for list_field, link_field in RESULT_PAGES_SHAPES:
        if list_field not in document:
            continue
        items = document[list_field] or []
        if not isinstance(items, list):
            raise SalesforceBulkProtocolError(
                f"resultPages: {list_field} is not a list: {str(items)[:200]!r}"
            )
        links = [item.get(link_field) if isinstance(item, dict) else None for item in items]
        readable = [link for link in links if isinstance(link, str) and link]
        if len(readable) != len(links):
            raise SalesforceBulkProtocolError(
                f"resultPages: an entry of {list_field} has no {link_field}: {str(items)[:200]!r}"
            )
        return readable
    raise SalesforceBulkProtocolError(
        "resultPages answer in an unknown shape (neither resultPages nor resultChunks): "
        f"{str(document)[:200]!r}"
    )


def parse_result_pages(document: Any, job_id: str | None = None) -> ResultPagesPage:
    """Parse one ``resultPages`` answer, in either shape of :data:`RESULT_PAGES_SHAPES`.

    The next call's link is read from ``nextRecordsUrl`` or the documented ``nextRecordUrl``. Links may be
    absolute, relative to the instance (``/services/data/vXX.X/jobs/...``) or relative to
    ``/services/data/vXX.X`` (``/jobs/...``): only their ``locator`` and ``maxRecords`` are used.

    :param job_id: when given, every link must lead to this job's ``/results``.
    :raises SalesforceBulkProtocolError: an answer that cannot be read as a list of result pages, a link
        to something else, or ``done: false`` without a next link.
    """
    if not isinstance(document, dict):
        raise SalesforceBulkProtocolError(f"resultPages answer is not an object: {str(document)[:200]!r}")
    pages = []
    for link in _result_links(document):
        path = urlsplit(link).path.rstrip("/")
        wanted = f"/jobs/query/{job_id}/results" if job_id else "/results"
        if not path.endswith(wanted):
            raise SalesforceBulkProtocolError(f"resultPages: {link!r} is not a link to {wanted}")
        pages.append(parse_result_url(link))
    next_url = document.get("nextRecordsUrl") or document.get("nextRecordUrl") or None
    if not isinstance(next_url, (str, type(None))):
        raise SalesforceBulkProtocolError(f"resultPages: next link is not a string: {next_url!r}")
    done = bool(document.get("done", next_url is None))
    if not done and not next_url:
        raise SalesforceBulkProtocolError("resultPages answered done=false without a next link")
    return ResultPagesPage(pages=tuple(pages), done=done, next_records_url=None if done else next_url)


def api_link_url(base: str, instance_url: str, link: str) -> str:
    """The absolute URL of a link in an answer: absolute, or relative to the instance or to ``base``.

    ``base`` is ``{instance}/services/data/vXX.X``; a path that starts with ``/services/`` is relative to
    the instance, any other path to ``base`` (as ``resultLink`` of the ``resultChunks`` shape is).
    """
    if "://" in link:
        return link
    path = f"/{link.lstrip('/')}"
    if path.startswith("/services/"):
        return f"{instance_url.rstrip('/')}{path}"
    return f"{base.rstrip('/')}{path}"


def parse_limits(document: Any) -> Limits:
    """Parse ``/limits``."""
    if not isinstance(document, dict):
        raise SalesforceBulkProtocolError(f"limits is not an object: {str(document)[:200]!r}")
    return Limits(document)


def parse_sf_datetime(value: str | None) -> datetime | None:
    """Parse ``2022-01-02T17:38:59.000+0000`` (and the ``Z`` / ``+00:00`` spellings)."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
