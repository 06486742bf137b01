"""Streaming tools over Bulk API 2.0 ingest result files.

An ingest job has three result sets (Bulk API 2.0 guide, "Get Job Successful/Failed Record Results",
"Get Job Unprocessed Record Results"):

``successfulResults``   ``sf__Id``, ``sf__Created``, then the uploaded columns
``failedResults``       ``sf__Id``, ``sf__Error``, then the uploaded columns
``unprocessedrecords``  the uploaded columns only

They are written with the job's column delimiter and line ending; everything here reads either line
ending. ``sf__Error`` reads ``<STATUS_CODE>:<message>:<fields> --``; the status code is the text before
the first ``:``. Files can be gigabytes, so every function streams: rows are read one at a time with the
``csv`` module and nothing holds a whole file.

:class:`RetryFileBuilder` (and the :func:`write_retry_file` / :func:`copy_unprocessed` shortcuts) builds
the CSV for a follow-up job from several jobs' result files: only the rows worth retrying, the ``sf__``
columns dropped, the uploaded columns in their original order under one header, values re-quoted so
that the output passes :func:`airflow_provider_sfbulk.csvio.split.split_csv` with the same dialect.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, NamedTuple

from airflow_provider_sfbulk.csvio.split import (
    CsvSource,
    CsvValidationError,
    resolve_delimiter,
    resolve_line_ending,
)
from airflow_provider_sfbulk.csvio.split import count_records as _count_records
from airflow_provider_sfbulk.protocol.states import LINE_ENDINGS

__all__ = [
    "DEFAULT_RETRYABLE_ERROR_CODES",
    "RESULT_COLUMNS",
    "FailedRow",
    "RetryFileBuilder",
    "copy_unprocessed",
    "count_records",
    "error_code",
    "iter_failed_rows",
    "summarize_errors",
    "write_retry_file",
]

#: Row errors that go away by themselves: lock contention and a momentarily unavailable API.
DEFAULT_RETRYABLE_ERROR_CODES: frozenset[str] = frozenset(
    {"UNABLE_TO_LOCK_ROW", "API_TEMPORARILY_UNAVAILABLE"}
)

#: Columns Salesforce adds in front of the uploaded ones.
RESULT_COLUMNS: frozenset[str] = frozenset({"sf__Id", "sf__Error", "sf__Created"})

_ERROR_COLUMN = "sf__Error"
_FLUSH_ROWS = 1000


class FailedRow(NamedTuple):
    """One row of a ``failedResults`` file.

    :param error_code: the status code of ``sf__Error`` (text before the first ``:``), e.g.
        ``UNABLE_TO_LOCK_ROW``.
    :param row: every column of the row by header name, ``sf__Id`` and ``sf__Error`` included.
    """

    error_code: str
    row: dict[str, str]


def error_code(sf_error: str) -> str:
    """The status code of an ``sf__Error`` value: the text before the first ``:``, stripped."""
    return sf_error.split(":", 1)[0].strip()


@contextmanager
def _rows(stream: IO[bytes], delimiter: str, source: str) -> Iterator[Iterator[list[str]]]:
    """Rows of a result stream (header first); both line endings; a leading BOM is ignored."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
        yield _checked(reader, source)
    finally:
        text.detach()  # leave the caller's stream open


def _checked(reader: Iterator[list[str]], source: str) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error as exc:
        line = getattr(reader, "line_num", None)
        raise CsvValidationError(
            "malformed_result", f"cannot read the result file: {exc}", source=source, line_number=line
        ) from None
    except UnicodeDecodeError as exc:
        raise CsvValidationError(
            "invalid_utf8", f"the result file is not UTF-8 ({exc.reason})", source=source
        ) from None


def _name(stream: object) -> str:
    name = getattr(stream, "name", None)
    return str(name) if isinstance(name, str) else "<result stream>"


def count_records(stream: CsvSource, delimiter: str = "COMMA", line_ending: str | None = None) -> int:
    """Rows of a result file (header excluded); an empty body counts 0. See
    :func:`airflow_provider_sfbulk.csvio.split.count_records`."""
    return _count_records(stream, delimiter, line_ending)


def iter_failed_rows(stream: IO[bytes], delimiter: str = "COMMA") -> Iterator[FailedRow]:
    """Yield each row of a ``failedResults`` stream as a :class:`FailedRow`, one at a time.

    :param stream: the file opened in binary mode; it is read to its end and left open.
    :param delimiter: the job's ``columnDelimiter`` (name or character).
    """
    _, char = resolve_delimiter(delimiter)
    source = _name(stream)
    with _rows(stream, char, source) as rows:
        header = next(rows, None)
        if header is None:
            return
        if _ERROR_COLUMN not in header:
            raise CsvValidationError(
                "not_failed_results", f"no {_ERROR_COLUMN} column: not a failedResults file", source=source
            )
        where = header.index(_ERROR_COLUMN)
        width = len(header)
        for number, values in enumerate(rows, start=1):
            if len(values) != width:
                raise _width_error(source, number, len(values), width)
            yield FailedRow(error_code(values[where]), dict(zip(header, values, strict=True)))


def summarize_errors(stream: IO[bytes], delimiter: str = "COMMA") -> dict[str, int]:
    """Count the rows of a ``failedResults`` stream per error code, most frequent first."""
    counts: Counter[str] = Counter(row.error_code for row in iter_failed_rows(stream, delimiter))
    return dict(counts.most_common())


def _width_error(source: str, record: int, got: int, width: int) -> CsvValidationError:
    return CsvValidationError(
        "field_count",
        f"the row has {got} field(s) but the header has {width}",
        source=source,
        record_number=record,
    )


class RetryFileBuilder:
    """Write one CSV for a follow-up job out of several jobs' result files, streaming.

    The first result file that has a header fixes the columns (its uploaded columns, ``sf__`` columns
    dropped, in file order); later files must have the same uploaded columns, in any order, and are
    mapped onto them. Nothing is written until the first row, so an output with no rows stays empty.

    :param out: binary stream the CSV is written to (left open).
    :param delimiter: ``columnDelimiter`` of the new job (name or character).
    :param line_ending: ``lineEnding`` of the new job.
    :param input_delimiter: delimiter of the result files (default: the same as ``delimiter``).
    """

    def __init__(
        self,
        out: IO[bytes],
        *,
        delimiter: str = "COMMA",
        line_ending: str = "LF",
        input_delimiter: str | None = None,
    ) -> None:
        self._out = out
        _, self._delimiter = resolve_delimiter(delimiter)
        _, self._input_delimiter = resolve_delimiter(input_delimiter or delimiter)
        self._terminator = LINE_ENDINGS[resolve_line_ending(line_ending)]
        self._needs_quotes = re.compile("[" + re.escape(self._delimiter) + '"\r\n]').search
        self.columns: tuple[str, ...] | None = None
        self.rows_written = 0
        self._header_written = False
        self._pending: list[str] = []

    def add_failed_results(
        self, stream: IO[bytes], retryable_codes: Collection[str] = DEFAULT_RETRYABLE_ERROR_CODES
    ) -> tuple[int, dict[str, int]]:
        """Copy the rows of a ``failedResults`` stream whose error code is in ``retryable_codes``.

        Returns ``(rows written, {error code: rows skipped})``.
        """
        retryable = frozenset(retryable_codes)
        skipped: Counter[str] = Counter()
        written = 0
        source = _name(stream)
        with _rows(stream, self._input_delimiter, source) as rows:
            header = next(rows, None)
            if header is None:
                return 0, {}
            if _ERROR_COLUMN not in header:
                raise CsvValidationError(
                    "not_failed_results",
                    f"no {_ERROR_COLUMN} column: not a failedResults file",
                    source=source,
                )
            where = header.index(_ERROR_COLUMN)
            picks = self._mapping(header, source)
            width = len(header)
            for number, values in enumerate(rows, start=1):
                if len(values) != width:
                    raise _width_error(source, number, len(values), width)
                code = error_code(values[where])
                if code in retryable:
                    self._row([values[i] for i in picks])
                    written += 1
                else:
                    skipped[code] += 1
        self._flush()
        return written, dict(skipped)

    def add_unprocessed(self, stream: IO[bytes]) -> int:
        """Copy every row of an ``unprocessedrecords`` stream; returns the rows written."""
        written = 0
        source = _name(stream)
        with _rows(stream, self._input_delimiter, source) as rows:
            header = next(rows, None)
            if header is None:
                return 0
            picks = self._mapping(header, source)
            width = len(header)
            for number, values in enumerate(rows, start=1):
                if len(values) != width:
                    raise _width_error(source, number, len(values), width)
                self._row([values[i] for i in picks])
                written += 1
        self._flush()
        return written

    def _mapping(self, header: list[str], source: str) -> list[int]:
        """Indexes of this file's columns in output order."""
        data_columns = [name for name in header if name not in RESULT_COLUMNS]
        if len(set(data_columns)) != len(data_columns):
            raise CsvValidationError(
                "duplicate_header_name", "the result file repeats a column name", source=source
            )
        if self.columns is None:
            self.columns = tuple(data_columns)
        elif set(data_columns) != set(self.columns):
            raise CsvValidationError(
                "column_mismatch",
                f"columns {', '.join(data_columns)} differ from the first file's {', '.join(self.columns)}",
                source=source,
            )
        return [header.index(name) for name in self.columns]

    def _quote(self, value: str) -> str:
        if self._needs_quotes(value):
            return '"' + value.replace('"', '""') + '"'
        return value

    def _line(self, values: Iterable[str]) -> str:
        quoted = [self._quote(v) for v in values]
        if len(quoted) == 1 and quoted[0] == "":
            quoted[0] = '""'  # an empty line would not be a record
        return self._delimiter.join(quoted) + self._terminator

    def _row(self, values: list[str]) -> None:
        if not self._header_written:
            assert self.columns is not None
            self._pending.append(self._line(self.columns))
            self._header_written = True
        self._pending.append(self._line(values))
        self.rows_written += 1
        if len(self._pending) >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._out.write("".join(self._pending).encode("utf-8"))
            self._pending.clear()


def write_retry_file(
    failed_results_streams: Iterable[IO[bytes]],
    out: IO[bytes],
    retryable_codes: Collection[str] = DEFAULT_RETRYABLE_ERROR_CODES,
    delimiter: str = "COMMA",
    line_ending: str = "LF",
    *,
    unprocessed_streams: Iterable[IO[bytes]] = (),
    input_delimiter: str | None = None,
) -> tuple[int, dict[str, int]]:
    """Build the CSV of a retry job from ``failedResults`` (and optionally ``unprocessedrecords``) files.

    Keeps the failed rows whose error code is in ``retryable_codes`` and every unprocessed row, drops
    the ``sf__`` columns, writes one header with the uploaded columns in their original order.

    :param input_delimiter: delimiter of the result files, when it differs from ``delimiter``.
    :returns: ``(rows written, {error code: failed rows skipped because the code is not retryable})``.
    """
    builder = RetryFileBuilder(
        out, delimiter=delimiter, line_ending=line_ending, input_delimiter=input_delimiter
    )
    skipped: Counter[str] = Counter()
    for stream in failed_results_streams:
        _, skipped_here = builder.add_failed_results(stream, retryable_codes)
        skipped.update(skipped_here)
    for stream in unprocessed_streams:
        builder.add_unprocessed(stream)
    return builder.rows_written, dict(skipped)


def copy_unprocessed(
    streams: Iterable[IO[bytes]],
    out: IO[bytes],
    delimiter: str = "COMMA",
    line_ending: str = "LF",
    *,
    input_delimiter: str | None = None,
) -> int:
    """Concatenate ``unprocessedrecords`` files of several jobs under one header; returns rows written."""
    builder = RetryFileBuilder(
        out, delimiter=delimiter, line_ending=line_ending, input_delimiter=input_delimiter
    )
    for stream in streams:
        builder.add_unprocessed(stream)
    return builder.rows_written
