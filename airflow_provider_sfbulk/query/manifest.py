"""The manifest of a query extract: what each page is and what was stored, read back to resume.

``manifest.json`` (format :data:`MANIFEST_FORMAT`) lists every page: its locator, ``maxRecords``, the next
locator, the record count (counted and reported), the bytes stored and received, the SHA-256 of the
stored file and the size of its header line. :class:`Manifest` rewrites it as pages complete (at most
once per ``manifest_interval`` seconds, and always at the end or on failure), each time whole
(:func:`~airflow_provider_sfbulk.common.json_files.write_json_atomic`). A later run for the same job
reads it back and keeps every page whose file still has the recorded size and checksum. A manifest of
another job, or of other output settings, is ignored (and overwritten); the extract deletes the files it
listed before downloading anything (:attr:`Manifest.previous_files`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.json_files import read_json, write_json_atomic
from airflow_provider_sfbulk.csvio.header import parse_header
from airflow_provider_sfbulk.query.errors import QueryExtractError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.protocol.api import JobInfo
    from airflow_provider_sfbulk.query.options import ExtractOptions

__all__ = [
    "COPY_CHUNK",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "PARTS_FOLDER",
    "ExtractResult",
    "Manifest",
    "PageEntry",
    "PageSpec",
    "listed_files",
    "sha256_of",
    "stored_size",
]

#: The manifest's ``format`` field.
MANIFEST_FORMAT = "sfbulk-query-manifest/1"
#: File name of the manifest inside the destination folder.
MANIFEST_NAME = "manifest.json"
#: Folder (inside the destination) holding the pages of a single-file extract until they are joined.
PARTS_FOLDER = ".parts"
#: Bytes per read when copying or checking stored files.
COPY_CHUNK = 1 << 20

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PageSpec:
    """One page to download: its position, and the locator and ``maxRecords`` that fetch it."""

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
        """What fetches this page: ``(locator, max_records)``."""
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
    paging_fallback: str | None = None
    retries: int | None = None
    total_processing_time: int | None = None
    bytes_stored: int = 0
    csv_bytes: int = 0

    def to_xcom(self) -> dict[str, Any]:
        """The small JSON value pushed to XCom: paths and counts, never records."""
        return {
            "job_id": self.job_id,
            "files": list(self.files),
            "record_count": self.record_count,
            "columns": list(self.columns),
            "manifest": self.manifest,
            "results_path": self.results_path,
        }


def stored_size(path: ObjectStoragePath) -> int | None:
    """Size of a stored file; ``None`` when it is missing or cannot be read."""
    try:
        if not path.exists():
            return None
        return int(path.stat()["size"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def sha256_of(path: ObjectStoragePath) -> str:
    """Hex SHA-256 of a stored file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def listed_files(document: dict[str, Any]) -> set[str]:
    """Names of the files a manifest lists, only names inside the folder.

    Pages and outputs, and the slice manifests of a sliced extract.
    """
    names = set()
    listed = [
        *((item, "file") for item in document.get("pages") or []),
        *((item, "file") for item in document.get("files") or []),
        *((item, "manifest") for item in document.get("slices") or []),
    ]
    for item, key in listed:
        name = item.get(key) if isinstance(item, dict) else None
        if isinstance(name, str) and name and ".." not in name.split("/") and not name.startswith("/"):
            names.add(name)
    return names


class Manifest:
    """The pages of one extract (kept or downloaded), the first header line, and ``manifest.json``.

    Thread-safe: download threads :meth:`record` pages and :meth:`check_header` concurrently.
    """

    def __init__(
        self,
        destination: ObjectStoragePath,
        job: JobInfo,
        options: ExtractOptions,
        interval: Mapping[str, Any] | None = None,
    ) -> None:
        self.destination = destination
        #: The data interval of an incremental extract (field, bounds, SOQL sent), shown as ``interval``.
        self.interval = dict(interval) if interval else None
        self.path = destination / MANIFEST_NAME
        self.job = job
        self.options = options
        self.entries: dict[int, PageEntry] = {}
        self.first_header: bytes | None = None
        self.paging = "locator"
        #: Why ``resultPages`` could not be used and the locator chain was followed instead.
        self.paging_fallback: str | None = None
        self.locator_chain: str | None = None
        #: Files an earlier manifest listed (deleted at the end unless the new extract has them).
        self.previous_files: set[str] = set()
        self._lock = threading.Lock()
        self._last_write = 0.0

    # --- the document -----------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "job_id": self.job.id,
            "output": self.options.output,
            "compression": self.options.compression,
            "column_delimiter": self.job.column_delimiter or "COMMA",
            "line_ending": self.job.line_ending or "LF",
        }

    def ordered(self) -> list[PageEntry]:
        """The pages so far, in page order."""
        return [self.entries[index] for index in sorted(self.entries)]

    def columns(self) -> list[str] | None:
        """Column names of the first header line seen (``None`` before any)."""
        if self.first_header is None:
            return None
        return parse_header(self.first_header, self.job.column_delimiter or "COMMA")

    def _document(self, *, complete: bool, files: list[dict[str, Any]] | None) -> dict[str, Any]:
        job, pages, header = self.job, self.ordered(), self.first_header
        return {
            "format": MANIFEST_FORMAT,
            **self._settings(),
            "operation": job.operation,
            "object": job.object,
            "api_version": job.api_version,
            "query": job.query,
            "interval": self.interval,
            "paging": self.paging,
            "paging_fallback": self.paging_fallback,
            "locator_chain": self.locator_chain,
            "columns": self.columns(),
            "header": header.decode("utf-8", errors="replace") if header is not None else None,
            "number_records_processed": job.number_records_processed,
            "retries": job.retries,
            "total_processing_time": job.total_processing_time,
            "record_count": sum(page.record_count for page in pages),
            "complete": complete,
            "pages": [asdict(page) for page in pages],
            "files": files or [],
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def write(
        self, *, complete: bool = False, files: list[dict[str, Any]] | None = None, force: bool = True
    ) -> None:
        """Rewrite ``manifest.json`` whole; unless ``force``, at most once per ``manifest_interval``."""
        with self._lock:
            if not force and time.monotonic() - self._last_write < self.options.manifest_interval:
                return
            write_json_atomic(self.path, self._document(complete=complete, files=files), indent=1)
            self._last_write = time.monotonic()

    def read(self) -> dict[str, Any] | None:
        """The manifest an earlier run left for this job and these settings; ``None`` when there is none."""
        try:
            document = read_json(self.path)
        except (OSError, ValueError) as err:
            _log.warning("Ignoring unreadable manifest %s: %s", self.path, err)
            return None
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            return None
        self.previous_files = listed_files(document)
        if any(document.get(key) != value for key, value in self._settings().items()):
            _log.info("Manifest %s belongs to another job or other settings; starting afresh", self.path)
            return None
        return document

    @staticmethod
    def previous_entries(document: dict[str, Any] | None) -> list[PageEntry]:
        """The pages an earlier manifest lists (none when it is missing or not understood)."""
        if document is None:
            return []
        entries = []
        for raw in document.get("pages") or []:
            try:
                entries.append(PageEntry(**raw))
            except TypeError:
                return []
        return entries

    # --- pages ------------------------------------------------------------------------------------

    def record(self, entry: PageEntry) -> None:
        """Add a downloaded page (the manifest is rewritten unless it was a moment ago)."""
        with self._lock:
            self.entries[entry.index] = entry
        self.write(force=False)

    def keep(self, entry: PageEntry) -> None:
        """Take a page an earlier run stored (already :meth:`verified`), with its header."""
        self.check_header(entry, self._stored_header(entry))
        self.entries[entry.index] = entry

    def verified(self, entry: PageEntry) -> bool:
        """True when the page's file is still there with the recorded size and checksum."""
        path = self.destination / entry.file
        if stored_size(path) != entry.bytes:
            return False
        try:
            return sha256_of(path) == entry.sha256
        except OSError:
            return False

    def check_header(self, entry: PageEntry, header: bytes) -> None:
        """Every page must start with the same header line (an empty page has none)."""
        if not header:
            return
        with self._lock:
            if self.first_header is None:
                self.first_header = header
            elif header != self.first_header:
                raise QueryExtractError(
                    f"page {entry.index} starts with header {header!r}, another page with "
                    f"{self.first_header!r}",
                    job_id=self.job.id,
                )

    def _stored_header(self, entry: PageEntry) -> bytes:
        if entry.header_bytes <= 0:
            return b""
        with (self.destination / entry.file).open("rb") as raw:
            stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if entry.file.endswith(".gz") else raw
            return bytes(stream.read(entry.header_bytes))

    def check_total(self) -> int:
        """The records of every page; they must add up to the job's ``numberRecordsProcessed``."""
        total = sum(entry.record_count for entry in self.entries.values())
        expected = self.job.number_records_processed
        if expected is not None and total != expected:
            raise QueryExtractError(
                f"the result pages hold {total} record(s) but the job reports numberRecordsProcessed="
                f"{expected}",
                job_id=self.job.id,
            )
        return total
