"""The failed-rows writer: split ``failedResults`` files into final failures and rows worth another job.

An ingest job's ``failedResults`` file holds ``sf__Id``, ``sf__Error``, then the uploaded columns (Bulk
API 2.0 guide, "Get Job Failed Record Results"), in the job's column delimiter and line ending.
``sf__Error`` reads ``<STATUS_CODE>:<message>:<fields> --``; the status code is the text before the first
``:`` (:func:`error_code`).

:func:`write_failed_rows` streams several such files (rows are read one at a time with the ``csv``
module; nothing holds a whole file) into two outputs: the rows whose code is retryable, with the uploaded
columns only and in their original order (ready for a new job: they pass
:func:`~airflow_provider_sfbulk.csvio.split.split_csv` with the same dialect), and the others, every
column kept.
"""

from __future__ import annotations

import csv
import functools
import io
import pathlib
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_sfbulk.csvio.dialect import resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.protocol.states import LINE_ENDINGS

__all__ = [
    "DEFAULT_RETRYABLE_ERROR_CODES",
    "RESULT_COLUMNS",
    "FailedSplit",
    "error_code",
    "write_failed_rows",
]

#: Row errors that go away by themselves: lock contention and a momentarily unavailable API.
DEFAULT_RETRYABLE_ERROR_CODES: frozenset[str] = frozenset(
    {"UNABLE_TO_LOCK_ROW", "API_TEMPORARILY_UNAVAILABLE"}
)

#: Columns Salesforce adds in front of the uploaded ones.
RESULT_COLUMNS: frozenset[str] = frozenset({"sf__Id", "sf__Error", "sf__Created"})

_ERROR_COLUMN = "sf__Error"
#: Rows gathered before one write to the output.
_FLUSH_ROWS = 1000


def error_code(sf_error: str) -> str:
    """The status code of an ``sf__Error`` value: the text before the first ``:``, stripped."""
    return sf_error.split(":", 1)[0].strip()


@dataclass
class FailedSplit:
    """What :func:`write_failed_rows` wrote.

    :param kept: rows written to ``kept_out`` (final failures).
    :param retried: rows written to ``retry_out``.
    :param kept_codes: kept rows per error code.
    :param retried_codes: retried rows per error code.
    :param columns: the uploaded columns (``sf__`` columns dropped), ``None`` when no file had a header.
    :param resubmitted: rows of ``unprocessedrecords`` files written to ``retry_out``.
    """

    kept: int = 0
    retried: int = 0
    resubmitted: int = 0
    kept_codes: Counter[str] = field(default_factory=Counter)
    retried_codes: Counter[str] = field(default_factory=Counter)
    columns: tuple[str, ...] | None = None


class _CsvOut:
    """Writes rows in the job's dialect; nothing (not even the header) until the first row.

    A value is quoted when it holds the delimiter, a quote, a CR or an LF (``csv.writer`` would leave a
    lone CR bare, which Salesforce and the splitter read as a broken line); a row of one empty value is
    written ``""``, as an empty line is not a record.
    """

    def __init__(self, out: IO[bytes] | None, delimiter: str, line_ending: str) -> None:
        self._out = out
        self._delimiter = delimiter
        self._terminator = line_ending
        self._needs_quotes = re.compile("[" + re.escape(delimiter) + '"\r\n]').search
        self._pending: list[str] = []
        self.header: list[str] | None = None

    def _quote(self, value: str) -> str:
        if self._needs_quotes(value):
            return '"' + value.replace('"', '""') + '"'
        return value

    def _line(self, values: Sequence[str]) -> str:
        if len(values) == 1 and values[0] == "":
            return '""' + self._terminator
        return self._delimiter.join(map(self._quote, values)) + self._terminator

    def row(self, values: Sequence[str]) -> None:
        if self._out is None:
            return
        if self.header is not None:
            self._pending.append(self._line(self.header))
            self.header = None  # written
        self._pending.append(self._line(values))
        if len(self._pending) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending and self._out is not None:
            self._out.write("".join(self._pending).encode("utf-8"))
            self._pending.clear()


class _FailedRowsSplitter:
    """One :func:`write_failed_rows` call: the header fixed by the first file, and the two outputs."""

    def __init__(self, kept: _CsvOut, retry: _CsvOut, kept_data: _CsvOut) -> None:
        self.kept = kept
        self.retry = retry
        self.kept_data = kept_data
        self.split = FailedSplit()
        self.full_header: list[str] | None = None
        self.data_header: list[str] | None = None

    def _fix_data_header(self, data_header: list[str]) -> None:
        if self.data_header is None:
            self.data_header = data_header
            self.retry.header = data_header
            self.kept_data.header = data_header
            self.split.columns = tuple(data_header)

    def add(self, path: Any, rows: Iterable[list[str]], header: list[str], retryable: frozenset[str]) -> None:
        """Split the rows of one ``failedResults`` file."""
        if _ERROR_COLUMN not in header:
            raise ValueError(f"{path} is not a failedResults file (no sf__Error column)")
        if self.full_header is None:
            self.full_header = list(header)
            self.kept.header = self.full_header
        self._fix_data_header([name for name in header if name not in RESULT_COLUMNS])
        assert self.data_header is not None
        if set(header) != set(self.full_header):
            raise ValueError(f"{path}: columns differ from the first failedResults file")
        full_index = [header.index(name) for name in self.full_header]
        data_index = [header.index(name) for name in self.data_header]
        where = header.index(_ERROR_COLUMN)
        split = self.split
        for values in rows:
            code = error_code(values[where])
            if code in retryable:
                self.retry.row([values[i] for i in data_index])
                split.retried += 1
                split.retried_codes[code] += 1
            else:
                self.kept.row([values[i] for i in full_index])
                self.kept_data.row([values[i] for i in data_index])
                split.kept += 1
                split.kept_codes[code] += 1

    def add_unprocessed(self, path: Any, rows: Iterable[list[str]], header: list[str]) -> None:
        """Copy every row of one ``unprocessedrecords`` file to the retry output."""
        if any(name in RESULT_COLUMNS for name in header):
            raise ValueError(f"{path} is not an unprocessedrecords file (it has sf__ columns)")
        self._fix_data_header(list(header))
        assert self.data_header is not None
        if set(header) != set(self.data_header):
            uploaded = ", ".join(self.data_header)
            raise ValueError(f"{path}: columns differ from the uploaded columns {uploaded}")
        index = [header.index(name) for name in self.data_header]
        for values in rows:
            self.retry.row([values[i] for i in index])
            self.split.resubmitted += 1


def _as_path(item: Any) -> Any:
    """A path object with ``open("rb")``: ``item`` itself, or a local :class:`~pathlib.Path` for text.

    URIs of object stores must come as path objects (``ObjectStoragePath``): this module reads files, it
    does not know storage connections.
    """
    if hasattr(item, "open"):
        return item
    if "://" in str(item):
        raise ValueError(f"{item}: pass an ObjectStoragePath for a URI, not its text")
    return pathlib.Path(item)


def write_failed_rows(
    failed_files: Iterable[tuple[Any, Collection[str]]],
    *,
    kept_out: IO[bytes] | None,
    retry_out: IO[bytes] | None,
    delimiter: str = "COMMA",
    line_ending: str = "LF",
    unprocessed_files: Iterable[Any] = (),
    kept_data_out: IO[bytes] | None = None,
) -> FailedSplit:
    """Split the rows of ``failedResults`` files into rows to retry and rows kept as failures.

    Each file comes with its retryable error codes: rows with such a code go to ``retry_out`` (uploaded
    columns only, ready for a new job), the others to ``kept_out`` (every column, ``sf__`` included).

    Both outputs use one header taken from the first file with one; later files are mapped onto it by
    column name. Outputs with no rows stay empty; ``None`` discards that side.

    :param failed_files: ``(path, retryable codes)`` pairs; a path is an ``ObjectStoragePath``, a
        :class:`pathlib.Path` or a URI/path text.
    :param unprocessed_files: ``unprocessedrecords`` files whose every row goes to ``retry_out`` too (after
        the failed rows), mapped onto the same columns.
    :param kept_data_out: the kept rows again, in the uploaded columns only: a file a team can fix and load
        as it is.
    :param delimiter: ``columnDelimiter`` of the files and of the outputs (name or character).
    :param line_ending: ``lineEnding`` of the outputs (the files may use either).
    """
    _, char = resolve_delimiter(delimiter)
    terminator = LINE_ENDINGS[resolve_line_ending(line_ending)]
    splitter = _FailedRowsSplitter(
        _CsvOut(kept_out, char, terminator),
        _CsvOut(retry_out, char, terminator),
        _CsvOut(kept_data_out, char, terminator),
    )
    for item, codes in failed_files:
        _read(item, char, functools.partial(_add_failed, splitter, frozenset(codes)))
    for item in unprocessed_files:
        _read(item, char, splitter.add_unprocessed)
    for out in (splitter.kept, splitter.retry, splitter.kept_data):
        out.flush()
    return splitter.split


def _add_failed(
    splitter: _FailedRowsSplitter,
    codes: frozenset[str],
    path: Any,
    rows: Iterable[list[str]],
    header: list[str],
) -> None:
    splitter.add(path, rows, header, codes)


def _read(item: Any, delimiter: str, take: Callable[[Any, Iterable[list[str]], list[str]], None]) -> None:
    """Open one result file and hand ``take(path, rows, header)`` its rows (files with no header skip)."""
    path = _as_path(item)
    with path.open("rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            reader = csv.reader(text, delimiter=delimiter, strict=True)
            header = next(reader, None)
            if header:
                take(path, reader, header)
        finally:
            text.detach()
