"""Ingest job results: stream them to object storage, count and hash them, reconcile, merge, audit.

Used by :class:`~airflow_provider_sfbulk.operators.ingest.SalesforceBulkIngestOperator` and
:class:`~airflow_provider_sfbulk.operators.results.SalesforceBulkJobResultsOperator`.

- :func:`download_job_results` streams ``successfulResults``, ``failedResults`` and
  ``unprocessedrecords`` of one job from the hook straight into ``<folder>/<job_id>/<set>.csv``
  (any :class:`ObjectStoragePath` scheme), counting the records and computing a SHA-256 on the way;
  memory stays at one chunk whatever the size.
- :func:`write_failed_rows` and :func:`write_retry_rows` split failed rows into the ones kept as final
  failures and the ones worth another job (``sf__`` columns dropped, original column order).
- :func:`write_manifest` writes the audit trail (JSON) beside the result files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.csvio.failed_rows import RESULT_COLUMNS, error_code
from airflow_provider_sfbulk.csvio.split import resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import LINE_ENDINGS, RESULT_SETS, JobKind

__all__ = [
    "MANIFEST_NAME",
    "CountingWriter",
    "FailedSplit",
    "JobResults",
    "ResultFile",
    "concat_result_files",
    "download_job_results",
    "download_query_results",
    "write_failed_rows",
    "write_manifest",
]

#: File name of the manifest in a results folder.
MANIFEST_NAME = "manifest.json"

_SUCCESS, _FAILED, _UNPROCESSED = RESULT_SETS


class CountingWriter:
    """A binary writable that forwards to ``out`` while counting CSV records and hashing the bytes.

    Records are counted by line endings outside double quotes (quotes toggle, so a doubled ``""`` inside
    a quoted value toggles twice); a last record without a line ending also counts. The first record is
    the header and is not counted. Seeking back to the start (what the hook does before it restarts a
    failed download) resets the counters; other seeks are refused, so the hook never restarts a
    download in the middle.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._start = self._tell_or_none()
        self._reset()

    def _tell_or_none(self) -> int | None:
        try:
            if self._out.seekable():
                return self._out.tell()
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def _reset(self) -> None:
        self.bytes_written = 0
        self._lines = 0
        self._in_quotes = False
        self._pending = False  # bytes after the last record end
        self._sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        view = bytes(data)
        self._out.write(view)
        self._sha.update(view)
        self.bytes_written += len(view)
        if view:
            if not self._in_quotes and b'"' not in view:
                self._lines += view.count(b"\n")
            else:
                pieces = view.split(b'"')
                for number, piece in enumerate(pieces):
                    if not self._in_quotes:
                        self._lines += piece.count(b"\n")
                    if number < len(pieces) - 1:
                        self._in_quotes = not self._in_quotes
            self._pending = not view.endswith(b"\n") or self._in_quotes
        return len(view)

    # the hook's restart protocol ------------------------------------------------------------------------
    def seekable(self) -> bool:
        return self._start is not None

    def tell(self) -> int:
        if self._start is None:
            raise OSError("not seekable")
        return self._start + self.bytes_written

    def seek(self, position: int, whence: int = 0) -> int:
        if self._start is None or whence != 0 or position != self._start:
            raise OSError("CountingWriter only seeks back to where it started")
        self._out.seek(position)
        self._reset()
        return position

    def truncate(self, size: int | None = None) -> int:
        return self._out.truncate(size)

    # results -----------------------------------------------------------------------------------------------
    @property
    def records(self) -> int:
        """Data records written so far (header excluded)."""
        total = self._lines + (1 if self._pending else 0)
        return max(0, total - 1)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@dataclass(frozen=True)
class ResultFile:
    """One downloaded result set."""

    result_set: str
    uri: str
    records: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "result_set": self.result_set,
            "uri": self.uri,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class JobResults:
    """The result files of one ingest job and its final JobInfo."""

    job: JobInfo
    files: dict[str, ResultFile] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        return self.job.id

    def count(self, result_set: str) -> int:
        found = self.files.get(result_set)
        return found.records if found else 0

    @property
    def successful(self) -> int:
        return self.count(_SUCCESS)

    @property
    def failed(self) -> int:
        return self.count(_FAILED)

    @property
    def unprocessed(self) -> int:
        return self.count(_UNPROCESSED)

    @property
    def total(self) -> int:
        return self.successful + self.failed + self.unprocessed

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "state": self.job.state.value,
            "error_message": self.job.error_message,
            "number_records_processed": self.job.number_records_processed,
            "number_records_failed": self.job.number_records_failed,
            "records_successful": self.successful,
            "records_failed": self.failed,
            "records_unprocessed": self.unprocessed,
            "files": {name: f.to_dict() for name, f in self.files.items()},
        }


def download_job_results(
    hook: Any,
    job: JobInfo | str,
    folder: ObjectStoragePath,
    *,
    result_sets: Sequence[str] = RESULT_SETS,
) -> JobResults:
    """Stream the result sets of a terminal ingest job into ``<folder>/<job_id>/<set>.csv``.

    :param hook: a :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`.
    :param job: the job's final JobInfo, or its id (then it is read first).
    """
    info = job if isinstance(job, JobInfo) else hook.get_job(job, JobKind.INGEST)
    target = folder / info.id
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, ResultFile] = {}
    for result_set in result_sets:
        path = target / f"{result_set}.csv"
        with path.open("wb") as handle:
            writer = CountingWriter(handle)
            hook.download_ingest_results(info.id, result_set, writer)
        files[result_set] = ResultFile(
            result_set, str(path), writer.records, writer.bytes_written, writer.sha256
        )
    return JobResults(info, files)


# --- splitting failed rows --------------------------------------------------------------------------------


@dataclass
class FailedSplit:
    """What :func:`write_failed_rows` wrote."""

    kept: int = 0
    retried: int = 0
    kept_codes: Counter[str] = field(default_factory=Counter)
    retried_codes: Counter[str] = field(default_factory=Counter)
    columns: tuple[str, ...] | None = None


class _CsvOut:
    """Writes rows with the job's dialect; nothing (not even the header) until the first row."""

    def __init__(self, out: IO[bytes] | None, delimiter: str, line_ending: str) -> None:
        self._out = out
        self._text: io.TextIOWrapper | None = None
        self._writer: Any = None
        self._delimiter = delimiter
        self._terminator = line_ending
        self.header: list[str] | None = None

    def row(self, values: Sequence[str]) -> None:
        if self._out is None:
            return
        if self._writer is None:
            self._text = io.TextIOWrapper(self._out, encoding="utf-8", newline="", write_through=True)
            self._writer = csv.writer(
                self._text,
                delimiter=self._delimiter,
                lineterminator=self._terminator,
                quoting=csv.QUOTE_MINIMAL,
            )
            assert self.header is not None
            self._writer.writerow(self.header)
        self._writer.writerow(values)

    def close(self) -> None:
        if self._text is not None:
            self._text.flush()
            self._text.detach()
            self._text = None


def write_failed_rows(
    failed_files: Iterable[tuple[ObjectStoragePath | str, Collection[str]]],
    *,
    kept_out: IO[bytes] | None,
    retry_out: IO[bytes] | None,
    delimiter: str = "COMMA",
    line_ending: str = "LF",
) -> FailedSplit:
    """Read ``failedResults`` files, each given with its retryable error codes: rows with such a code go
    to ``retry_out`` (uploaded columns only, ready for a new job), the others to ``kept_out`` (every
    column, ``sf__`` included).

    Both outputs use one header taken from the first file with one; later files are mapped onto it by
    column name. Outputs with no rows stay empty.
    """
    _, char = resolve_delimiter(delimiter)
    terminator = LINE_ENDINGS[resolve_line_ending(line_ending)]
    kept = _CsvOut(kept_out, char, terminator)
    retry = _CsvOut(retry_out, char, terminator)
    split = FailedSplit()
    full_header: list[str] | None = None
    data_header: list[str] | None = None
    for item, codes in failed_files:
        retryable = frozenset(codes)
        path = item if isinstance(item, ObjectStoragePath) else ObjectStoragePath(item)
        with path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            reader = csv.reader(text, delimiter=char, strict=True)
            header = next(reader, None)
            if not header:
                text.detach()
                continue
            if "sf__Error" not in header:
                raise ValueError(f"{path} is not a failedResults file (no sf__Error column)")
            if full_header is None:
                full_header = list(header)
                data_header = [name for name in header if name not in RESULT_COLUMNS]
                kept.header = full_header
                retry.header = data_header
                split.columns = tuple(data_header)
            assert data_header is not None
            if set(header) != set(full_header):
                raise ValueError(f"{path}: columns differ from the first failedResults file")
            full_index = [header.index(name) for name in full_header]
            data_index = [header.index(name) for name in data_header]
            where = header.index("sf__Error")
            for values in reader:
                code = error_code(values[where])
                if code in retryable:
                    retry.row([values[i] for i in data_index])
                    split.retried += 1
                    split.retried_codes[code] += 1
                else:
                    kept.row([values[i] for i in full_index])
                    split.kept += 1
                    split.kept_codes[code] += 1
            text.detach()
    kept.close()
    retry.close()
    return split


def concat_result_files(
    files: Iterable[ObjectStoragePath | str],
    out: IO[bytes],
    *,
    delimiter: str = "COMMA",
    line_ending: str = "LF",
) -> int:
    """Concatenate result files of one kind under the first file's header (mapped by column name)."""
    _, char = resolve_delimiter(delimiter)
    writer = _CsvOut(out, char, LINE_ENDINGS[resolve_line_ending(line_ending)])
    rows = 0
    for item in files:
        path = item if isinstance(item, ObjectStoragePath) else ObjectStoragePath(item)
        with path.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            reader = csv.reader(text, delimiter=char, strict=True)
            header = next(reader, None)
            if not header:
                text.detach()
                continue
            if writer.header is None:
                writer.header = list(header)
            if set(header) != set(writer.header):
                raise ValueError(f"{path}: columns differ from the first result file")
            index = [header.index(name) for name in writer.header]
            for values in reader:
                writer.row([values[i] for i in index])
                rows += 1
            text.detach()
    writer.close()
    return rows


def write_manifest(folder: ObjectStoragePath, document: dict[str, Any]) -> str:
    """Write ``document`` as ``<folder>/manifest.json``; returns its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    with path.open("wb") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=False, default=str).encode("utf-8"))
    return str(path)


def download_query_results(hook: Any, job: JobInfo | str, folder: ObjectStoragePath) -> list[ResultFile]:
    """Stream every result page of a finished query job into ``<folder>/<job_id>/results-<n>.csv``
    (each page keeps its header row), following ``Sforce-Locator`` until Salesforce says ``null``."""
    info = job if isinstance(job, JobInfo) else hook.get_job(job, JobKind.QUERY)
    target = folder / info.id
    target.mkdir(parents=True, exist_ok=True)
    files: list[ResultFile] = []
    locator: str | None = None
    while True:
        path = target / f"results-{len(files) + 1:05d}.csv"
        with path.open("wb") as handle:
            writer = CountingWriter(handle)
            page = hook.download_query_page(info.id, writer, locator=locator)
        files.append(ResultFile("results", str(path), writer.records, writer.bytes_written, writer.sha256))
        locator = page.next_locator
        if not locator:
            return files
