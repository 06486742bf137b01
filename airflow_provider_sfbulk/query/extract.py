"""Query extracts: stream a finished Bulk API 2.0 query job's results into object storage.

:func:`extract_query_results` downloads every result page of a ``JobComplete`` query job into a folder
(any :class:`ObjectStoragePath`: ``file://``, ``s3://``, ``gs://``...), checks what arrived and writes a
manifest beside the files.

Paging
    Where the connection's API version offers it (58.0+), the pages come from ``resultPages`` and are
    fetched in parallel, ``concurrency`` at a time (one hook, hence one HTTP session, per worker thread;
    the access token is shared). Older versions follow ``Sforce-Locator`` one page after the other until
    it reads ``null``. Locators are only ever taken from Salesforce (a ``resultUrl`` or the previous
    page's header), never made up.

Streaming
    Every page goes from the socket straight into its own file (``part-00000.csv``...), compressed on
    the way when ``compression="gzip"``. Nothing holds a page in memory: the bytes pass through a record
    counter and a SHA-256 and are written out chunk by chunk. For ``output="single"`` the pages land
    in ``.parts/`` first and are then copied, in page order, into one file, dropping every page's header
    line but the first; the parts are deleted afterwards.

Checks
    Records are counted as they stream by, honouring quotes (a line break inside a quoted value does not
    end a record). Each page's count must equal its ``Sforce-NumberOfRecords``, every page must carry the
    same header line, and the sum must equal the job's ``numberRecordsProcessed``. Any mismatch raises
    :class:`QueryExtractError` naming the page and both numbers.

Manifest and resuming
    ``manifest.json`` lists every page: its locator, ``maxRecords``, the next locator, the record count
    (counted and reported), the bytes stored and received, the SHA-256 of the stored file and the size of
    its header line. It is rewritten as pages complete (at most once per ``manifest_interval`` seconds,
    and always at the end or on failure). A later run for the same job reads it back and skips every page
    whose file still has the recorded size and checksum, so a retried task resumes after the pages it
    already has. A manifest of another job, or of other output settings, is ignored and overwritten.

Retries
    The hook already retries a failed page request with backoff (and restarts an interrupted body while
    nothing was written). When it gives up with a transient error, or a compressed transfer arrives
    damaged, that page alone is fetched again from scratch, up to ``page_attempts`` times; the pages
    already stored stay as they are.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.exceptions import SalesforceBulkError, SalesforceBulkTransientError
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, JobKind, JobState

if TYPE_CHECKING:
    import os

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = [
    "COMPRESSIONS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "OUTPUT_MODES",
    "RESULT_PAGES_MIN_API_VERSION",
    "CsvRecordCounter",
    "CsvShapeError",
    "ExtractOptions",
    "ExtractResult",
    "PageEntry",
    "QueryExtractError",
    "extract_query_results",
    "parse_header",
    "result_pages_supported",
]

#: ``output`` values: one file per result page, or one file for the whole extract.
OUTPUT_MODES = ("pages", "single")
#: ``compression`` values of the stored files.
COMPRESSIONS = (None, "gzip")
#: The manifest's ``format`` field.
MANIFEST_FORMAT = "sfbulk-query-manifest/1"
#: File name of the manifest inside the destination folder.
MANIFEST_NAME = "manifest.json"
#: Folder (inside the destination) holding the pages of a single-file extract until they are joined.
PARTS_FOLDER = ".parts"
#: First API version with ``GET /jobs/query/{id}/resultPages``.
RESULT_PAGES_MIN_API_VERSION = 58.0
#: Bytes per read when copying or checking stored files.
COPY_CHUNK = 1 << 20
#: Bytes the record counter splits at once: bounds the temporary list of pieces (a decompressed chunk of
#: a gzip transfer can be several megabytes, and every quoted value is one piece).
COUNT_SLICE = 64 * 1024
#: Longest header line accepted (Salesforce: at most 32,000 characters, i.e. up to ~128 kB of UTF-8).
MAX_HEADER_BYTES = 1 << 20

_log = logging.getLogger(__name__)


class QueryExtractError(SalesforceBulkError):
    """The results that arrived do not add up: counts, headers or the job's state. Nothing is wrong with
    the request itself; the message names the page and the numbers that disagree."""


# --------------------------------------------------------------------------------------------- counting


class CsvShapeError(ValueError):
    """The CSV stream cannot be counted: unbalanced quotes, or no end to its header line."""


class CsvRecordCounter:
    """Count the records of a CSV stream fed in chunks of any size, honouring quotes.

    A record ends at a line feed outside a quoted field (``LF`` or ``CRLF`` line endings both end in
    ``\\n``); a line break inside quotes belongs to the value. The quote state is tracked across chunks by
    the parity of ``"`` characters, which is exact for RFC 4180 CSV such as Salesforce writes (every value
    quoted, inner quotes doubled). The first record is the header and is not counted; a last record
    without a line ending is counted. Work per chunk runs in C (``split``/``count``), with no Python loop
    per record.
    """

    def __init__(self) -> None:
        self._inside = False
        self._breaks = 0
        self._open_tail = False
        self._offset = 0
        self._head = bytearray()
        #: Size in bytes of the header line, line ending included (``None`` until it is complete).
        self.header_length: int | None = None

    def feed(self, data: bytes) -> None:
        """Take the next chunk (of any size: it is scanned in slices, so the work lists stay small)."""
        if len(data) <= COUNT_SLICE:
            self._feed(data)
            return
        for start in range(0, len(data), COUNT_SLICE):
            self._feed(data[start : start + COUNT_SLICE])

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        parts = data.split(b'"')
        start = 1 if self._inside else 0
        if self.header_length is None:
            self._find_header(data, parts, start)
        self._breaks += b"".join(parts[start::2]).count(b"\n")
        if (len(parts) - 1) & 1:
            self._inside = not self._inside
        self._open_tail = not (data.endswith(b"\n") and not self._inside)
        self._offset += len(data)

    def _find_header(self, data: bytes, parts: list[bytes], start: int) -> None:
        position = 0
        end: int | None = None
        for index, part in enumerate(parts):
            if index >= start and (index - start) % 2 == 0:
                newline = part.find(b"\n")
                if newline >= 0:
                    end = position + newline + 1
                    break
            position += len(part) + 1
        if end is None:
            self._head += data
            if len(self._head) > MAX_HEADER_BYTES:
                raise CsvShapeError(f"no end of the header line in the first {MAX_HEADER_BYTES} bytes")
            return
        self._head += data[:end]
        self.header_length = self._offset + end

    @property
    def header(self) -> bytes:
        """The header line as received, line ending included (what was seen so far if incomplete)."""
        return bytes(self._head)

    @property
    def records(self) -> int:
        """Data records seen so far (header excluded)."""
        if self._breaks == 0:
            return 0
        return self._breaks - 1 + (1 if self._open_tail else 0)

    @property
    def bytes_seen(self) -> int:
        return self._offset

    def finish(self) -> int:
        """Check that the stream ended outside quotes; return the record count."""
        if self._inside:
            raise CsvShapeError("the CSV ends inside a quoted value (unbalanced quotes)")
        return self.records


def parse_header(header: bytes, column_delimiter: str) -> list[str]:
    """Column names of a header line (quoted or not) in the job's ``columnDelimiter``."""
    if not header:
        return []
    text = header.decode("utf-8-sig").rstrip("\r\n")
    delimiter = COLUMN_DELIMITERS.get(column_delimiter, column_delimiter)
    return next(csv.reader([text], delimiter=delimiter), [])


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ExtractOptions:
    """How an extract is downloaded and stored.

    :param output: ``"pages"`` (one file per result page) or ``"single"`` (one file, one header).
    :param compression: ``"gzip"`` or ``None`` for the stored files.
    :param concurrency: pages downloaded at once (``resultPages`` only; the locator chain is sequential).
    :param max_records_per_page: ``maxRecords`` to ask for; ``None`` lets Salesforce choose.
    :param use_result_pages: force (``True``) or avoid (``False``) ``resultPages``; ``None`` uses it when
        the connection's API version is 58.0 or later.
    :param page_attempts: attempts per page when the hook gives up on a transient error (1 = no retry).
    :param page_retry_delay: seconds before the first page retry (doubled for each further one).
    :param file_name: base name of the single output file (``results`` gives ``results.csv[.gz]``).
    :param transfer_gzip: ask Salesforce for a gzip-compressed transfer (decompressed on the fly).
    :param gzip_level: compression level of stored gzip files (1 fastest .. 9 smallest).
    :param manifest_interval: least seconds between two manifest rewrites while pages complete.
    """

    output: str = "pages"
    compression: str | None = None
    concurrency: int = 4
    max_records_per_page: int | None = None
    use_result_pages: bool | None = None
    page_attempts: int = 3
    page_retry_delay: float = 2.0
    file_name: str = "results"
    transfer_gzip: bool = True
    gzip_level: int = 6
    manifest_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {self.output!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be 'gzip' or None, got {self.compression!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_records_per_page is not None and self.max_records_per_page < 1:
            raise ValueError("max_records_per_page must be positive")
        if self.page_attempts < 1:
            raise ValueError("page_attempts must be at least 1")
        if self.page_retry_delay < 0 or self.manifest_interval < 0:
            raise ValueError("delays must not be negative")
        if not 1 <= self.gzip_level <= 9:
            raise ValueError("gzip_level must be between 1 and 9")
        if not self.file_name or "/" in self.file_name or self.file_name in (".", ".."):
            raise ValueError(f"file_name must be a plain file name, got {self.file_name!r}")

    @property
    def suffix(self) -> str:
        return ".csv.gz" if self.compression == "gzip" else ".csv"


def result_pages_supported(api_version: str | float) -> bool:
    """True when ``resultPages`` exists in this API version (58.0+)."""
    return float(api_version) >= RESULT_PAGES_MIN_API_VERSION


# ---------------------------------------------------------------------------------------- manifest data


@dataclass(frozen=True)
class _PageSpec:
    index: int
    locator: str | None
    max_records: int | None


@dataclass(frozen=True)
class PageEntry:
    """One downloaded page, as listed in the manifest.

    :param index: position of the page, from 0.
    :param locator: the locator it was fetched with (``None``: the first page).
    :param max_records: the ``maxRecords`` it was fetched with.
    :param next_locator: its ``Sforce-Locator`` header (``None`` for the literal ``null``).
    :param file: file name relative to the destination folder.
    :param record_count: records counted in the page.
    :param reported_record_count: its ``Sforce-NumberOfRecords`` header (-1 when absent).
    :param bytes: size of the stored file.
    :param csv_bytes: size of the CSV as received (decompressed).
    :param sha256: hex SHA-256 of the stored file.
    :param header_bytes: size of the page's header line, line ending included.
    :param attempts: downloads it took.
    """

    index: int
    locator: str | None
    max_records: int | None
    next_locator: str | None
    file: str
    record_count: int
    reported_record_count: int
    bytes: int
    csv_bytes: int
    sha256: str
    header_bytes: int
    attempts: int = 1

    @property
    def key(self) -> tuple[str | None, int | None]:
        return (self.locator, self.max_records)


@dataclass(frozen=True)
class ExtractResult:
    """What an extract produced; :meth:`to_xcom` is the operator's small XCom value."""

    job_id: str
    files: list[str]
    record_count: int
    columns: list[str]
    manifest: str
    results_path: str
    pages: list[PageEntry] = field(default_factory=list)
    resumed_pages: int = 0
    paging: str = "locator"
    bytes_stored: int = 0
    csv_bytes: int = 0

    def to_xcom(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "files": list(self.files),
            "record_count": self.record_count,
            "columns": list(self.columns),
            "manifest": self.manifest,
            "results_path": self.results_path,
        }


# -------------------------------------------------------------------------------------------- writers


class _Cancelled(Exception):
    """Another page failed: stop writing this one."""


class _HashingWriter:
    """Pass bytes on to the storage file, counting and hashing exactly what is stored."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _PageSink:
    """The writable a page is downloaded into: counts records, then stores (optionally gzip) and hashes.

    It has no ``seek``, so the hook never rewinds it: an interrupted body it cannot restart surfaces as an
    error and the whole page is fetched again into a fresh file.
    """

    def __init__(self, raw: Any, *, gzip_level: int | None, stop: threading.Event) -> None:
        self.counter = CsvRecordCounter()
        self.stored = _HashingWriter(raw)
        self._gzip = (
            gzip.GzipFile(fileobj=self.stored, mode="wb", compresslevel=gzip_level, mtime=0)  # type: ignore[arg-type]
            if gzip_level is not None
            else None
        )
        self._stop = stop

    def write(self, data: bytes) -> int:
        if self._stop.is_set():
            raise _Cancelled
        self.counter.feed(data)
        if self._gzip is not None:
            self._gzip.write(data)
        else:
            self.stored.write(data)
        return len(data)

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.close()


# ---------------------------------------------------------------------------------------------- engine


def _is_local(path: ObjectStoragePath) -> bool:
    return (getattr(path, "protocol", "file") or "file") in ("file", "local")


def _ensure_folder(path: ObjectStoragePath) -> None:
    if _is_local(path):  # object stores have no folders to create
        path.mkdir(parents=True, exist_ok=True)


def _stored_size(path: ObjectStoragePath) -> int | None:
    try:
        if not path.exists():
            return None
        return int(path.stat()["size"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _listed_files(document: dict[str, Any]) -> set[str]:
    """Names of the files a manifest lists (pages and outputs), only plain names inside the folder."""
    names = set()
    for item in [*(document.get("pages") or []), *(document.get("files") or [])]:
        name = item.get("file") if isinstance(item, dict) else None
        if isinstance(name, str) and name and ".." not in name.split("/") and not name.startswith("/"):
            names.add(name)
    return names


def _sha256_of(path: ObjectStoragePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Extract:
    """One run of :func:`extract_query_results` (see the module documentation)."""

    def __init__(
        self,
        hook_factory: Callable[[], SalesforceBulkHook],
        job_id: str,
        destination: ObjectStoragePath,
        options: ExtractOptions,
    ) -> None:
        self.hook_factory = hook_factory
        self.job_id = job_id
        self.destination = destination
        self.options = options
        self.manifest_path = destination / MANIFEST_NAME
        self.stop = threading.Event()
        self._local = threading.local()
        self._hooks: list[SalesforceBulkHook] = []
        self._hooks_lock = threading.Lock()
        self._manifest_lock = threading.Lock()
        self._last_manifest_write = 0.0
        self.entries: dict[int, PageEntry] = {}
        self.job: JobInfo | None = None
        self.paging = "locator"
        self.locator_chain: str | None = None
        self.resumed = 0
        self._first_header: bytes | None = None
        self._previous_files: set[str] = set()

    # --- hooks, one per thread ------------------------------------------------------------------

    def hook(self) -> SalesforceBulkHook:
        hook = getattr(self._local, "hook", None)
        if hook is None:
            hook = self.hook_factory()
            self._local.hook = hook
            with self._hooks_lock:
                self._hooks.append(hook)
        return hook

    def close_hooks(self) -> None:
        with self._hooks_lock:
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            close = getattr(hook, "close", None)
            if close is not None:
                close()

    # --- paths ------------------------------------------------------------------------------------

    @property
    def _pages_folder(self) -> ObjectStoragePath:
        return self.destination / PARTS_FOLDER if self.options.output == "single" else self.destination

    def _page_name(self, index: int) -> str:
        if self.options.output == "single":
            return f"{PARTS_FOLDER}/part-{index:05d}.csv"
        return f"part-{index:05d}{self.options.suffix}"

    def _page_path(self, index: int) -> ObjectStoragePath:
        return self.destination / self._page_name(index)

    @property
    def _single_name(self) -> str:
        return f"{self.options.file_name}{self.options.suffix}"

    # --- manifest ---------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        job = self.job
        assert job is not None
        return {
            "job_id": self.job_id,
            "output": self.options.output,
            "compression": self.options.compression,
            "column_delimiter": job.column_delimiter or "COMMA",
            "line_ending": job.line_ending or "LF",
        }

    def _manifest(self, *, complete: bool, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        job = self.job
        assert job is not None
        pages = [self.entries[index] for index in sorted(self.entries)]
        header = self._first_header
        return {
            "format": MANIFEST_FORMAT,
            **self._settings(),
            "operation": job.operation,
            "object": job.object,
            "api_version": job.api_version,
            "query": job.query,
            "paging": self.paging,
            "locator_chain": self.locator_chain,
            "columns": parse_header(header, job.column_delimiter or "COMMA") if header is not None else None,
            "header": header.decode("utf-8", errors="replace") if header is not None else None,
            "number_records_processed": job.number_records_processed,
            "record_count": sum(page.record_count for page in pages),
            "complete": complete,
            "pages": [asdict(page) for page in pages],
            "files": files or [],
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def write_manifest(
        self, *, complete: bool = False, files: list[dict[str, Any]] | None = None, force: bool = True
    ) -> None:
        with self._manifest_lock:
            now = time.monotonic()
            if not force and now - self._last_manifest_write < self.options.manifest_interval:
                return
            document = json.dumps(self._manifest(complete=complete, files=files), indent=1).encode("utf-8")
            if _is_local(self.manifest_path):
                temporary = self.destination / f".{MANIFEST_NAME}.tmp"
                temporary.write_bytes(document)
                temporary.replace(self.manifest_path)
            else:  # an object PUT replaces the object atomically
                self.manifest_path.write_bytes(document)
            self._last_manifest_write = time.monotonic()

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            if not self.manifest_path.exists():
                return None
            document = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as err:
            _log.warning("Ignoring unreadable manifest %s: %s", self.manifest_path, err)
            return None
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            return None
        self._previous_files = _listed_files(document)
        settings = self._settings()
        if any(document.get(key) != value for key, value in settings.items()):
            _log.info(
                "Manifest %s belongs to another job or other settings; starting afresh", self.manifest_path
            )
            return None
        return document

    # --- resuming ---------------------------------------------------------------------------------

    def _verified(self, entry: PageEntry) -> bool:
        path = self.destination / entry.file
        if _stored_size(path) != entry.bytes:
            return False
        try:
            return _sha256_of(path) == entry.sha256
        except OSError:
            return False

    def previous_entries(self, document: dict[str, Any] | None) -> list[PageEntry]:
        if document is None:
            return []
        entries = []
        for raw in document.get("pages") or []:
            try:
                entries.append(PageEntry(**raw))
            except TypeError:
                return []
        return entries

    # --- one page ---------------------------------------------------------------------------------

    def download_page(self, spec: _PageSpec) -> PageEntry:
        path = self._page_path(spec.index)
        gzip_level = (
            self.options.gzip_level
            if self.options.compression == "gzip" and self.options.output == "pages"
            else None
        )
        attempt = 0
        while True:
            attempt += 1
            if self.stop.is_set():
                raise _Cancelled
            try:
                with path.open("wb") as raw:
                    sink = _PageSink(raw, gzip_level=gzip_level, stop=self.stop)
                    page = self.hook().download_query_page(
                        self.job_id,
                        sink,
                        locator=spec.locator,
                        max_records=spec.max_records,
                        gzip=self.options.transfer_gzip,
                    )
                    sink.close()
                counted = sink.counter.finish()
                break
            except (SalesforceBulkTransientError, zlib.error, EOFError) as err:
                if attempt >= self.options.page_attempts:
                    raise
                delay = self.options.page_retry_delay * 2 ** (attempt - 1)
                _log.warning(
                    "Query job %s: page %d failed (%s); fetching it again in %.1fs (attempt %d of %d)",
                    self.job_id,
                    spec.index,
                    err,
                    delay,
                    attempt + 1,
                    self.options.page_attempts,
                )
                if self.stop.wait(delay):
                    raise _Cancelled from err
            except CsvShapeError as err:
                raise QueryExtractError(
                    f"page {spec.index} (locator {spec.locator!r}) is not well-formed CSV: {err}",
                    job_id=self.job_id,
                ) from err
        if page.record_count >= 0 and counted != page.record_count:
            raise QueryExtractError(
                f"page {spec.index} (locator {spec.locator!r}) holds {counted} record(s) but its "
                f"Sforce-NumberOfRecords header says {page.record_count}",
                job_id=self.job_id,
            )
        entry = PageEntry(
            index=spec.index,
            locator=spec.locator,
            max_records=spec.max_records,
            next_locator=page.next_locator,
            file=self._page_name(spec.index),
            record_count=counted,
            reported_record_count=page.record_count,
            bytes=sink.stored.size,
            csv_bytes=sink.counter.bytes_seen,
            sha256=sink.stored.sha256.hexdigest(),
            header_bytes=sink.counter.header_length or 0,
            attempts=attempt,
        )
        self._check_header(entry, sink.counter.header)
        _log.info(
            "Query job %s: page %d stored (%d records, %d bytes) in %s",
            self.job_id,
            spec.index,
            counted,
            entry.bytes,
            path,
        )
        return entry

    def _check_header(self, entry: PageEntry, header: bytes) -> None:
        if not header:
            return  # an empty page carries no header
        with self._manifest_lock:
            if self._first_header is None:
                self._first_header = header
            elif header != self._first_header:
                raise QueryExtractError(
                    f"page {entry.index} starts with header {header!r}, another page with "
                    f"{self._first_header!r}",
                    job_id=self.job_id,
                )

    def _read_header(self, entry: PageEntry) -> None:
        """Load the header of a page kept from an earlier run (for the columns and header checks)."""
        if entry.header_bytes <= 0:
            return
        path = self.destination / entry.file
        with path.open("rb") as raw:
            stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if entry.file.endswith(".gz") else raw
            header = stream.read(entry.header_bytes)
        self._check_header(entry, header)

    def record(self, entry: PageEntry) -> None:
        with self._manifest_lock:
            self.entries[entry.index] = entry
        self.write_manifest(force=False)

    # --- the two paging flavours ------------------------------------------------------------------

    def run_result_pages(self, previous: list[PageEntry]) -> None:
        self.paging = "resultPages"
        refs = self.hook().get_result_pages(self.job_id, max_records=self.options.max_records_per_page)
        specs = [_PageSpec(index, ref.locator, ref.max_records) for index, ref in enumerate(refs)]
        if not specs:
            raise QueryExtractError("resultPages listed no page at all", job_id=self.job_id)
        kept = {entry.index: entry for entry in previous}
        todo: list[_PageSpec] = []
        for spec in specs:
            old = kept.get(spec.index)
            if old is not None and old.key == (spec.locator, spec.max_records) and self._verified(old):
                self._read_header(old)
                self.entries[spec.index] = old
            else:
                todo.append(spec)
        self.resumed = len(specs) - len(todo)
        if self.resumed:
            _log.info(
                "Query job %s: %d of %d page(s) kept from an earlier run",
                self.job_id,
                self.resumed,
                len(specs),
            )
        self._run_parallel(todo)
        ordered = [self.entries[index] for index in range(len(specs))]
        chain_ok = all(a.next_locator == b.locator for a, b in pairwise(ordered)) and (
            ordered[-1].next_locator is None
        )
        self.locator_chain = "consistent" if chain_ok else "inconsistent"
        if not chain_ok:
            # Not documented either way: the resultUrl locators need not be the Sforce-Locator values.
            _log.warning(
                "Query job %s: the pages' Sforce-Locator headers do not chain into the resultPages locators; "
                "relying on the record counts",
                self.job_id,
            )

    def _run_parallel(self, todo: Sequence[_PageSpec]) -> None:
        if not todo:
            return
        workers = min(self.options.concurrency, len(todo))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sfbulk-page") as pool:
            futures: dict[Future[PageEntry], _PageSpec] = {
                pool.submit(self.download_page, spec): spec for spec in todo
            }
            pending = set(futures)
            error: BaseException | None = None
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.cancelled():
                        continue
                    failure = future.exception()
                    if failure is None:
                        self.record(future.result())
                    elif error is None and not isinstance(failure, _Cancelled):
                        error = failure
                if error is not None and pending:
                    self.stop.set()
                    for future in pending:
                        future.cancel()
            if error is not None:
                raise error

    def run_locator_chain(self, previous: list[PageEntry]) -> None:
        self.paging = "locator"
        max_records = self.options.max_records_per_page
        # Keep the unbroken run of verified pages from the start of the chain.
        index = 0
        locator: str | None = None
        for entry in sorted(previous, key=lambda item: item.index):
            if entry.index != index or entry.locator != locator or entry.max_records != max_records:
                break
            if not self._verified(entry):
                break
            self._read_header(entry)
            self.entries[index] = entry
            index += 1
            locator = entry.next_locator
            if locator is None:
                break
        self.resumed = index
        if index:
            _log.info("Query job %s: %d page(s) kept from an earlier run", self.job_id, index)
        done = index > 0 and locator is None
        seen = {entry.locator for entry in self.entries.values()}
        while not done:
            entry = self.download_page(_PageSpec(index, locator, max_records))
            self.record(entry)
            seen.add(locator)
            if entry.next_locator is not None and entry.next_locator in seen:
                raise QueryExtractError(
                    f"page {index} names locator {entry.next_locator!r} as the next page, which was already "
                    "read: the locator chain loops",
                    job_id=self.job_id,
                )
            locator = entry.next_locator
            index += 1
            done = locator is None
        self.locator_chain = "consistent"

    # --- single file ------------------------------------------------------------------------------

    def join_pages(self) -> dict[str, Any]:
        """Copy the parts in order into one file, keeping only the first page's header line."""
        target = self.destination / self._single_name
        entries = [self.entries[index] for index in sorted(self.entries)]
        with target.open("wb") as raw:
            stored = _HashingWriter(raw)
            out: Any = (
                gzip.GzipFile(fileobj=stored, mode="wb", compresslevel=self.options.gzip_level, mtime=0)  # type: ignore[arg-type]
                if self.options.compression == "gzip"
                else stored
            )
            header_written = False
            for entry in entries:
                with (self.destination / entry.file).open("rb") as part:
                    skip = entry.header_bytes if header_written else 0
                    if skip:
                        head = part.read(skip)
                        if len(head) != skip:
                            raise QueryExtractError(
                                f"part {entry.file} is shorter than its header", job_id=self.job_id
                            )
                    while chunk := part.read(COPY_CHUNK):
                        out.write(chunk)
                if entry.header_bytes:
                    header_written = True
            if out is not stored:
                out.close()
        return {
            "file": self._single_name,
            "bytes": stored.size,
            "sha256": stored.sha256.hexdigest(),
            "record_count": sum(entry.record_count for entry in entries),
        }

    def _remove_stale(self, stale: set[str]) -> None:
        """Delete files an earlier run listed that the finished extract does not include."""
        for name in sorted(stale):
            path = self.destination / name
            try:
                if path.exists():
                    path.unlink()
            except OSError as err:  # leftovers only cost space
                _log.warning("Could not delete %s: %s", path, err)

    def remove_parts(self) -> None:
        """Delete the joined parts, and whatever an earlier manifest listed that is not the output."""
        parts = {entry.file for entry in self.entries.values()}
        self._remove_stale((parts | self._previous_files) - {self._single_name})
        if _is_local(self._pages_folder):
            try:
                self._pages_folder.rmdir()
            except OSError:
                pass

    # --- checks and the whole run -----------------------------------------------------------------

    def check_total(self) -> int:
        job = self.job
        assert job is not None
        total = sum(entry.record_count for entry in self.entries.values())
        expected = job.number_records_processed
        if expected is not None and total != expected:
            raise QueryExtractError(
                f"the result pages hold {total} record(s) but the job reports numberRecordsProcessed="
                f"{expected}",
                job_id=self.job_id,
            )
        return total

    def result(self, files: list[str], total: int) -> ExtractResult:
        job = self.job
        assert job is not None
        header = self._first_header
        entries = [self.entries[index] for index in sorted(self.entries)]
        return ExtractResult(
            job_id=self.job_id,
            files=files,
            record_count=total,
            columns=parse_header(header, job.column_delimiter or "COMMA") if header else [],
            manifest=str(self.manifest_path),
            results_path=str(self.destination),
            pages=entries,
            resumed_pages=self.resumed,
            paging=self.paging,
            bytes_stored=sum(entry.bytes for entry in entries),
            csv_bytes=sum(entry.csv_bytes for entry in entries),
        )

    def finished_single(self, document: dict[str, Any] | None) -> ExtractResult | None:
        """A single-file extract that an earlier run completed: verify it and return it again."""
        if document is None or not document.get("complete") or self.options.output != "single":
            return None
        files = document.get("files") or []
        if len(files) != 1 or files[0].get("file") != self._single_name:
            return None
        target = self.destination / self._single_name
        if _stored_size(target) != files[0].get("bytes") or _sha256_of(target) != files[0].get("sha256"):
            return None
        for entry in self.previous_entries(document):
            self.entries[entry.index] = entry
        header = document.get("header")
        self._first_header = header.encode("utf-8") if header else None
        self.paging = document.get("paging") or self.paging
        self.locator_chain = document.get("locator_chain")
        self.resumed = len(self.entries)
        self.remove_parts()  # a crash may have come between the manifest and the clean-up
        return self.result([str(target)], self.check_total())

    def run(self) -> ExtractResult:
        hook = self.hook()
        job = hook.get_job(self.job_id, JobKind.QUERY)
        if job.state is not JobState.JOB_COMPLETE:
            raise QueryExtractError(
                f"query job results can only be read once the job is JobComplete; it is {job.state.value}",
                job_id=self.job_id,
            )
        self.job = job
        _ensure_folder(self.destination)
        document = self.read_manifest()
        done = self.finished_single(document)
        if done is not None:
            _log.info("Query job %s: %s is already complete", self.job_id, done.files[0])
            return done
        self.entries.clear()
        previous = self.previous_entries(document)
        if self.options.output == "single":
            _ensure_folder(self._pages_folder)
        use_pages = self.options.use_result_pages
        if use_pages is None:
            use_pages = result_pages_supported(hook.config.api_version)
        try:
            if use_pages:
                self.run_result_pages(previous)
            else:
                self.run_locator_chain(previous)
        except BaseException:
            self.write_manifest()  # keep what was stored for the next try
            raise
        total = self.check_total()
        if self.options.output == "single":
            single = self.join_pages()
            self.write_manifest(complete=True, files=[single])
            self.remove_parts()
            files = [str(self.destination / self._single_name)]
        else:
            entries = [self.entries[index] for index in sorted(self.entries)]
            page_files = [
                {"file": e.file, "bytes": e.bytes, "sha256": e.sha256, "record_count": e.record_count}
                for e in entries
            ]
            self.write_manifest(complete=True, files=page_files)
            files = [str(self.destination / e.file) for e in entries]
            self._remove_stale(stale=self._previous_files - {e.file for e in entries})
        _log.info(
            "Query job %s: %d record(s) in %d page(s) extracted to %s",
            self.job_id,
            total,
            len(self.entries),
            self.destination,
        )
        return self.result(files, total)


def extract_query_results(
    hook_factory: Callable[[], SalesforceBulkHook],
    job_id: str,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    options: ExtractOptions | None = None,
) -> ExtractResult:
    """Download the results of ``JobComplete`` query job ``job_id`` into folder ``destination``.

    :param hook_factory: makes a :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`; called
        once per download thread (each thread gets its own HTTP session; hooks are closed at the end).
    :param destination: folder for the files and ``manifest.json`` (a local path or any storage URI).
    :param options: output, compression, concurrency and retry settings (:class:`ExtractOptions`).
    :raises QueryExtractError: counts or headers do not add up, or the job is not ``JobComplete``.
    :raises SalesforceBulkError: an API call failed for good.
    """
    extract = _Extract(hook_factory, job_id, to_storage_path(destination), options or ExtractOptions())
    try:
        return extract.run()
    finally:
        extract.close_hooks()
