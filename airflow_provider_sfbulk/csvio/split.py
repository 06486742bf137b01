"""Validate a CSV stream and cut it into Bulk API 2.0 upload parts, only at record boundaries.

Salesforce takes one upload of at most about 100 MB of raw CSV per ingest job, so a bigger file has to
become several jobs. A record can span lines (quoted CR/LF), so the file is cut only where a CSV parser
finds the end of a record, never at an arbitrary newline.

How it works
------------
The source is read once, as a binary stream, in chunks (1 MiB by default). Runs of complete records
are recognised and checked by regular expressions that work through many records per call in C,
so no Python code runs per byte, nor per record, except for the record that straddles a chunk's end
(and for the record that holds a problem, to describe it). The only buffer is the current chunk plus
that straddling record. Record bytes are copied verbatim: nothing is re-quoted or re-encoded;
the one change is that a leading UTF-8 byte order mark is dropped.

Every record is checked against the header while it is scanned: the number of fields, quoting (a
quoted field must close, and be followed by a delimiter or the line ending; a quote may not appear
inside an unquoted field), the line ending (the declared one, everywhere), UTF-8, and empty lines. The
header is checked for empty, duplicate (case-insensitive) and space-padded names, for the declared
delimiter (a header with no declared delimiter but another Bulk API delimiter gets a suggestion), and for
the columns the operation needs (:func:`required_columns_for`). Each problem raises
:class:`CsvValidationError` naming the source, the record number (data records count from 1; the header
is not counted) and the line number.

Entry points
------------
:func:`split_csv`
    The one an ingest operator wants: it reads and validates the whole source, spooling the parts to
    temporary files as it goes, and returns only when everything is valid. A bad file therefore fails
    before any job is created, while memory stays flat (the parts sit on disk, not in memory). The
    caller uploads each :class:`CsvPart` (concurrently if it likes) and deletes it, or calls
    :meth:`CsvSplit.cleanup`.
:func:`iter_csv_parts`
    The same split as a lazy generator: a part is yielded as soon as it is complete, so a problem
    further down the file surfaces only after earlier parts were yielded.
:func:`inspect_csv`
    Validate and count without writing anything.
:func:`count_records`
    Count the records of any CSV stream (result files included), for reconciliation.

Example::

    required, allowed = required_columns_for("upsert", "External_Id__c")
    with open("accounts.csv", "rb") as source, split_csv(
        source, max_bytes=100_000_000, column_delimiter="COMMA", line_ending="LF",
        required_columns=required, allowed_columns=allowed, spool_dir="/tmp/spool",
    ) as split:
        for part in split.parts:           # every part already validated
            upload(part.path)              # then part.path.unlink(), or leave it to cleanup()
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Union

from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, IngestOperation

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "CsvPart",
    "CsvSplit",
    "CsvSummary",
    "CsvValidationError",
    "count_records",
    "inspect_csv",
    "iter_csv_parts",
    "required_columns_for",
    "resolve_delimiter",
    "resolve_line_ending",
    "split_csv",
]

#: Largest upload per job that stays under Salesforce's 150 MB limit after its base64 encoding
#: ("upload data that does not exceed 100 MB", Upload Job Data in the Bulk API 2.0 guide).
DEFAULT_MAX_BYTES = 100_000_000

#: How much is read from the source at a time.
DEFAULT_CHUNK_SIZE = 1 << 20

#: A binary stream (anything with ``read(n) -> bytes``), a local path, or a path object with
#: ``open("rb")`` such as :class:`pathlib.Path` or Airflow's ``ObjectStoragePath``.
CsvSource = Union[IO[bytes], str, "os.PathLike[str]"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_QUOTE = 0x22
#: Fields matched per regex call (records x columns): bounds the regex engine's backtracking stack,
#: which grows by about 200 bytes per field matched.
_BULK_FIELDS = 4096
#: Most records matched per regex call.
_BULK_RECORDS = 256


class CsvValidationError(ValueError):
    """The CSV cannot be loaded as it is.

    :param problem: a short stable name of the problem, e.g. ``unterminated_quote`` or ``field_count``.
    :param detail: what is wrong, in words.
    :param source: the file the problem is in.
    :param record_number: data record number from 1 (the header is 0), when the problem is in a record.
    :param line_number: line number from 1 (the header starts on line 1).
    :param byte_offset: offset in the source, counted from its first byte (byte order mark included).
    """

    def __init__(
        self,
        problem: str,
        detail: str,
        *,
        source: str,
        record_number: int | None = None,
        line_number: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        self.problem = problem
        self.detail = detail
        self.source = source
        self.record_number = record_number
        self.line_number = line_number
        self.byte_offset = byte_offset
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.record_number is not None:
            where.append("header" if self.record_number == 0 else f"record {self.record_number}")
        if self.line_number is not None:
            where.append(f"line {self.line_number}")
        if self.byte_offset is not None:
            where.append(f"byte offset {self.byte_offset}")
        location = f" ({', '.join(where)})" if where else ""
        return f"{self.source}{location}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "source": self.source,
            "record_number": self.record_number,
            "line_number": self.line_number,
            "byte_offset": self.byte_offset,
        }
        return (_rebuild_error, (self.problem, self.detail, kwargs))


def _rebuild_error(problem: str, detail: str, kwargs: dict[str, Any]) -> CsvValidationError:
    return CsvValidationError(problem, detail, **kwargs)


@dataclass(frozen=True)
class CsvPart:
    """One spooled part of a split: a complete CSV file (header first) ready to upload as one job.

    :param index: position of the part, from 0.
    :param path: the spool file; the caller owns it and deletes it once uploaded.
    :param byte_count: size of the file in bytes, header included.
    :param record_count: data records in the part (header excluded).
    :param first_record_number: number of the part's first record in the source (records count from 1).
    :param sha256: hex SHA-256 of the file's bytes, for the audit manifest.
    """

    index: int
    path: Path
    byte_count: int
    record_count: int
    first_record_number: int
    sha256: str

    @property
    def last_record_number(self) -> int:
        """Number of the part's last record in the source."""
        return self.first_record_number + self.record_count - 1

    def read_bytes(self) -> bytes:
        """The whole part (for small parts, e.g. a multipart create-and-upload request)."""
        return self.path.read_bytes()


@dataclass(frozen=True)
class CsvSummary:
    """What a validation pass learned about a CSV source.

    :param source: the name used in messages.
    :param columns: header names, unquoted, in file order.
    :param header: the header row exactly as in the file, line ending included (no byte order mark).
    :param record_count: data records (header excluded).
    :param byte_count: bytes read from the source, byte order mark included.
    :param has_bom: whether the source started with a UTF-8 byte order mark (it is never copied).
    :param column_delimiter: ``columnDelimiter`` name, e.g. ``COMMA``.
    :param line_ending: ``lineEnding`` name, ``LF`` or ``CRLF``.
    """

    source: str
    columns: tuple[str, ...]
    header: bytes
    record_count: int
    byte_count: int
    has_bom: bool
    column_delimiter: str
    line_ending: str


class CsvSplit:
    """A validated source cut into spooled parts; returned by :func:`split_csv`.

    Use it as a context manager, or call :meth:`cleanup`, to delete the spool files the caller has not
    deleted itself.
    """

    def __init__(self, parts: list[CsvPart], summary: CsvSummary) -> None:
        self.parts: list[CsvPart] = parts
        self.summary: CsvSummary = summary

    @property
    def record_count(self) -> int:
        """Data records over all parts."""
        return self.summary.record_count

    @property
    def columns(self) -> tuple[str, ...]:
        """Header names of the source."""
        return self.summary.columns

    def __iter__(self) -> Iterator[CsvPart]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def cleanup(self) -> None:
        """Delete every spool file that still exists."""
        for part in self.parts:
            part.path.unlink(missing_ok=True)

    def __enter__(self) -> CsvSplit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def resolve_delimiter(value: str) -> tuple[str, str]:
    """Return ``(name, character)`` for a ``columnDelimiter`` name (``COMMA``) or character (``,``)."""
    upper = value.upper()
    if upper in COLUMN_DELIMITERS:
        return upper, COLUMN_DELIMITERS[upper]
    for name, char in COLUMN_DELIMITERS.items():
        if value == char:
            return name, char
    raise ValueError(
        f"unsupported column delimiter {value!r}; Bulk API 2.0 accepts {', '.join(COLUMN_DELIMITERS)}"
    )


def resolve_line_ending(value: str) -> str:
    """Return the ``lineEnding`` name (``LF`` or ``CRLF``) for a name or the characters themselves."""
    upper = value.upper()
    if upper in LINE_ENDINGS:
        return upper
    for name, chars in LINE_ENDINGS.items():
        if value == chars:
            return name
    raise ValueError(f"unsupported line ending {value!r}; Bulk API 2.0 accepts LF and CRLF")


def required_columns_for(
    operation: str, external_id_field: str | None = None
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Columns an operation needs, as ``(required_columns, allowed_columns)`` for :func:`split_csv`.

    ``delete`` and ``hardDelete`` take an ``Id`` column and nothing else; ``update`` needs ``Id``;
    ``upsert`` needs its external id field; ``insert`` needs nothing in particular. ``allowed_columns``
    is ``None`` when any column may appear.
    """
    op = IngestOperation(operation)
    if op in (IngestOperation.DELETE, IngestOperation.HARD_DELETE):
        return ("Id",), ("Id",)
    if op is IngestOperation.UPDATE:
        return ("Id",), None
    if op is IngestOperation.UPSERT:
        if not external_id_field:
            raise ValueError("upsert needs external_id_field")
        return (external_id_field,), None
    return (), None


# --------------------------------------------------------------------------------------------------
# Scanner
# --------------------------------------------------------------------------------------------------


#: One complete record of valid CSV, terminator included (any delimiter, LF or CRLF). Written as
#: "unquoted run, then (quoted field, unquoted run)*" so that every byte has one way to match and a
#: failed match (an incomplete record) backtracks in linear time.
_RECORD_END = re.compile(b'[^"\\n]*(?:"[^"]*(?:""[^"]*)*"[^"\\n]*)*\\n')


def _count_complete_records(buf: bytes | bytearray, start: int, end: int) -> int:
    """Count the records of ``buf[start:end]``, a run of complete records of valid CSV."""
    if buf.find(b'"', start, end) < 0:
        return buf.count(b"\n", start, end)
    # Every match starts where the previous one ended, so the regex never scans in vain.
    return _RECORD_END.subn(b"", bytes(buf[start:end]))[1]


def _count_records_before(buf: bytes | bytearray, start: int, index: int) -> int:
    """Count the complete records between ``start`` (a record start) and ``index`` (inside a record)."""
    count, pos = 0, start
    while True:
        found = _RECORD_END.match(buf, pos, index)
        if found is None:
            return count
        count, pos = count + 1, found.end()


def _describe_byte(value: int) -> str:
    if value == _LF:
        return "a line feed"
    if value == _CR:
        return "a carriage return"
    if 0x20 <= value < 0x7F:
        return repr(chr(value))
    return f"byte 0x{value:02x}"


class _Scanner:
    """Finds record boundaries in a binary CSV stream and validates records on the way.

    Call :meth:`read_header` once, then iterate :meth:`spans`.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        source: str,
        delimiter: str,
        line_ending: str | None,
        chunk_size: int,
        max_record_bytes: int,
        check_header_names: bool,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._stream = stream
        self.source = source
        self._delim = delimiter.encode("ascii")
        self._delim_int = self._delim[0]
        self._delimiter_name, _ = resolve_delimiter(delimiter)
        #: None until known when the caller accepts both line endings (taken from the header).
        self._crlf: bool | None = None if line_ending is None else line_ending == "CRLF"
        self._chunk = chunk_size
        self.max_record_bytes = max_record_bytes
        self._check_header_names = check_header_names
        self._buf = bytearray()
        self._pos = 0
        self._base = 0
        self._read_total = 0
        self._eof = False
        self._utf8_tail = b""
        self._bad_utf8: tuple[int, str] | None = None
        self.has_bom = False
        self.record_number = 0
        self.line_number = 1
        self.header = b""
        self.columns: tuple[str, ...] = ()
        d = re.escape(self._delim)
        unquoted = b"[^" + d + b'"\\r\\n]*'
        quoted_any = b'"[^"]*(?:""[^"]*)*"'
        self._field_any = b"(?:" + quoted_any + b"|" + unquoted + b")"
        self._field_rx = re.compile(self._field_any)
        self._generic = re.compile(self._field_any + b"(?:" + d + self._field_any + b")*")
        self._unquoted = unquoted
        self._bulk: re.Pattern[bytes] | None = None
        self._bulk_any: re.Pattern[bytes] | None = None
        self._exact: re.Pattern[bytes] | None = None

    # -- reading ---------------------------------------------------------------------------------

    @property
    def bytes_read(self) -> int:
        return self._read_total

    @property
    def line_ending(self) -> str:
        return "CRLF" if self._crlf else "LF"

    def _read(self, size: int) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        data = self._stream.read(size)
        if not data:
            self._eof = True
            if self._utf8_tail and self._bad_utf8 is None:
                self._bad_utf8 = (self._read_total - len(self._utf8_tail), "truncated multi-byte sequence")
            return
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"{self.source}: the source must be opened in binary mode ('rb')")
            data = bytes(data)
        self._check_utf8(data)
        self._read_total += len(data)
        self._buf += data

    def _check_utf8(self, data: bytes) -> None:
        if self._bad_utf8 is not None:
            return
        tail = self._utf8_tail
        if not tail and data.isascii():
            return
        joined = tail + data if tail else data
        try:
            _, consumed = codecs.utf_8_decode(joined, "strict", False)
        except UnicodeDecodeError as exc:
            self._bad_utf8 = (self._read_total - len(tail) + exc.start, exc.reason)
            return
        self._utf8_tail = bytes(joined[consumed:])

    # -- errors ----------------------------------------------------------------------------------

    def error(
        self,
        problem: str,
        detail: str,
        *,
        record: int | None = None,
        line: int | None = None,
        offset: int | None = None,
    ) -> CsvValidationError:
        return CsvValidationError(
            problem,
            detail,
            source=self.source,
            record_number=self.record_number + 1 if record is None else record,
            line_number=self.line_number if line is None else line,
            byte_offset=offset,
        )

    def too_large(
        self, size: int, *, record: int, line: int, partial: bool, hint: str = ""
    ) -> CsvValidationError:
        amount = f"more than {self.max_record_bytes:,}" if partial else f"{size:,}"
        return self.error(
            "record_too_large",
            f"the record is {amount} bytes, more than fits in one upload next to the header "
            f"(at most {self.max_record_bytes:,} bytes){hint}",
            record=record,
            line=line,
        )

    def _utf8_guard(self, start: int, end: int, simple: bool | None) -> None:
        """Raise if the first invalid UTF-8 byte lies before ``end``; ``simple`` as in :meth:`spans`
        (``None``: the span is one record)."""
        bad = self._bad_utf8
        if bad is None or self._base + end <= bad[0]:
            return
        index = max(bad[0] - self._base, start)
        newlines = self._buf.count(b"\n", start, index)
        if not self.columns:
            record = 0
        elif simple is None:
            record = self.record_number + 1
        elif simple:
            record = self.record_number + 1 + newlines
        else:
            record = self.record_number + 1 + _count_records_before(self._buf, start, index)
        raise self.error(
            "invalid_utf8",
            f"the data is not valid UTF-8 ({bad[1]}); Bulk API 2.0 reads UTF-8 only",
            record=record,
            line=self.line_number + newlines,
            offset=bad[0],
        )

    def _field_number(self, start: int, end: int) -> int:
        """Number of the field that contains ``buf[end]`` (from 1), counting from ``start``."""
        return self._locate_field(start, end)[0]

    def _locate_field(self, start: int, end: int) -> tuple[int, int]:
        """``(number, first byte)`` of the field that contains ``buf[end]``, for the record at ``start``."""
        buf, number, pos, field_start = self._buf, 1, start, start
        while pos < end:
            field_start = pos
            match = self._field_rx.match(buf, pos, end)
            pos = match.end() if match else pos
            if pos < end and buf[pos] == self._delim_int:
                number += 1
                pos += 1
                field_start = pos
            else:
                break
        return number, field_start

    # -- one record, the careful way ---------------------------------------------------------------

    def _one_record(self, start: int, *, header: bool) -> tuple[int, int] | None:
        """Find the end of the record at ``start``: ``(body_end, terminator_length)``, or None for more data."""
        buf = self._buf
        size = len(buf)
        end = self._generic.match(buf, start).end()  # type: ignore[union-attr]
        what = "the header line" if header else "the record"
        if end >= size:
            if not self._eof:
                return None
            return end, 0
        char = buf[end]
        if char == _LF:
            if self._crlf:
                raise self.error(
                    "wrong_line_ending",
                    f"{what} ends with LF but line_ending is CRLF; declare line_ending='LF' "
                    "or convert the file to CRLF",
                    offset=self._base + end,
                    **self._header_location(header),
                )
            return end, 1
        if char == _CR:
            if end + 1 >= size and not self._eof:
                return None
            if end + 1 < size and buf[end + 1] == _LF:
                if self._crlf is False:
                    raise self.error(
                        "wrong_line_ending",
                        f"{what} ends with CRLF but line_ending is LF; declare line_ending='CRLF' "
                        "or convert the file to LF",
                        offset=self._base + end,
                        **self._header_location(header),
                    )
                return end, 2
            raise self.error(
                "bare_cr",
                f"a carriage return not followed by a line feed in unquoted field "
                f"{self._field_number(start, end)}; quote the value",
                offset=self._base + end,
                **self._header_location(header),
            )
        field, field_start = self._locate_field(start, end)
        if char == _QUOTE:
            # A quote where a field starts opens a field whose closing quote was not found; a quote
            # right after a quoted field means the field's last quote was the first of a doubled
            # pair ("") whose closing quote was not found. Either way more data may close it.
            if end == start or buf[end - 1] in (self._delim_int, _QUOTE):
                if not self._eof:
                    return None
                opened_at = self.line_number + buf.count(b"\n", start, field_start)
                raise self.error(
                    "unterminated_quote",
                    f"unbalanced quotes: quoted field {field}, opened on line {opened_at}, "
                    "is never closed before the end of the file",
                    offset=self._base + field_start,
                    **self._header_location(header),
                )
            raise self.error(
                "bare_quote",
                f"a double quote inside unquoted field {field}; enclose the value in double quotes "
                'and double the quotes inside it ("")',
                offset=self._base + end,
                **self._header_location(header),
            )
        raise self.error(
            "text_after_quote",
            f"{_describe_byte(char)} follows the closing quote of field {field}; a quoted value must be "
            "followed by the delimiter or the end of the line (spaces around quotes are not allowed)",
            offset=self._base + end,
            **self._header_location(header),
        )

    def _header_location(self, header: bool) -> dict[str, int]:
        return {"record": 0, "line": 1} if header else {}

    # -- header ----------------------------------------------------------------------------------

    def read_header(self) -> bool:
        """Read and check the header; False when the stream holds no data at all."""
        while len(self._buf) < len(_BOM) and not self._eof:
            self._read(self._chunk)
        if self._buf.startswith(_BOM):
            del self._buf[: len(_BOM)]
            self._base = len(_BOM)
            self.has_bom = True
        while True:
            if not self._buf and self._eof:
                return False
            found = self._one_record(0, header=True) if self._buf else None
            if found is not None:
                break
            if len(self._buf) > self.max_record_bytes:
                raise self.too_large(len(self._buf), record=0, line=1, partial=True)
            self._read(max(self._chunk, len(self._buf)))
        body_end, term = found
        self._utf8_guard(0, body_end + term, None)
        if self._crlf is None:
            self._crlf = term == 2
        self.header = bytes(self._buf[: body_end + term])
        self.columns = self._parse_names(body_end)
        self.line_number += self._buf.count(b"\n", 0, body_end + term)
        self._pos = body_end + term
        self._compile(len(self.columns))
        return True

    def _parse_names(self, end: int) -> tuple[str, ...]:
        buf, names, pos = self._buf, [], 0
        while True:
            match = self._field_rx.match(buf, pos, end)
            stop = match.end() if match else pos
            raw = bytes(buf[pos:stop])
            if raw.startswith(b'"'):
                raw = raw[1:-1].replace(b'""', b'"')
            names.append(raw.decode("utf-8"))
            if stop < end and buf[stop] == self._delim_int:
                pos = stop + 1
                continue
            break
        if self._check_header_names:
            self._check_names(names, buf[:end])
        return tuple(names)

    def _check_names(self, names: list[str], raw: bytearray) -> None:
        if len(names) == 1:
            others = [
                name
                for name, char in COLUMN_DELIMITERS.items()
                if char.encode() != self._delim and char.encode() in raw
            ]
            if others:
                suggestion = " or ".join(f"column_delimiter={name!r}" for name in others)
                shown = ", ".join(repr(COLUMN_DELIMITERS[name]) for name in others)
                raise self.error(
                    "wrong_delimiter",
                    f"column_delimiter is {self._delimiter_name} ({self._delim.decode()!r}) but the header "
                    f"has no {self._delim.decode()!r} and contains {shown}; declare {suggestion}",
                    record=0,
                    line=1,
                )
        seen: dict[str, int] = {}
        for number, name in enumerate(names, start=1):
            if not name:
                raise self.error(
                    "empty_header_name", f"column {number} has an empty name in the header", record=0, line=1
                )
            if name != name.strip():
                raise self.error(
                    "header_whitespace",
                    f"header name {name!r} (column {number}) has leading or trailing whitespace; "
                    "Salesforce does not trim field names",
                    record=0,
                    line=1,
                )
            key = name.casefold()
            if key in seen:
                raise self.error(
                    "duplicate_header_name",
                    f"header name {name!r} appears twice (columns {seen[key]} and {number}; "
                    "field names are case-insensitive)",
                    record=0,
                    line=1,
                )
            seen[key] = number

    def check_columns(self, required: Collection[str], allowed: Collection[str] | None) -> None:
        have = {name.casefold() for name in self.columns}
        missing = [name for name in required if name.casefold() not in have]
        if missing:
            raise self.error(
                "missing_columns",
                f"the header lacks required column(s) {', '.join(map(repr, missing))} "
                f"(header: {', '.join(self.columns)})",
                record=0,
                line=1,
            )
        if allowed is not None:
            permitted = {name.casefold() for name in allowed}
            extra = [name for name in self.columns if name.casefold() not in permitted]
            if extra:
                raise self.error(
                    "unexpected_columns",
                    f"the header has column(s) {', '.join(map(repr, extra))} that this operation does not "
                    f"take (allowed: {', '.join(allowed)})",
                    record=0,
                    line=1,
                )

    def _compile(self, fields: int) -> None:
        d = re.escape(self._delim)
        term = b"\\r\\n" if self._crlf else b"\\n"
        # Quoted fields without a line feed: every line feed in a bulk match then ends a record.
        quoted_one_line = b'"[^"\\n]*(?:""[^"\\n]*)*"'
        field = b"(?:" + quoted_one_line + b"|" + self._unquoted + b")"
        record = b"(?!" + term + b")" + field + b"(?:" + d + field + b"){%d}" % (fields - 1) + term
        per_call = max(1, min(_BULK_RECORDS, _BULK_FIELDS // fields))
        self._bulk = re.compile(b"(?:" + record + b"){0,%d}" % per_call)
        # Any valid records, quoted line breaks included; their ends are then found by _record_end.
        record_any = (
            b"(?!"
            + term
            + b")"
            + self._field_any
            + b"(?:"
            + d
            + self._field_any
            + b"){%d}" % (fields - 1)
            + term
        )
        self._bulk_any = re.compile(b"(?:" + record_any + b"){0,%d}" % per_call)
        self._exact = re.compile(self._field_any + b"(?:" + d + self._field_any + b"){%d}" % (fields - 1))

    # -- records ---------------------------------------------------------------------------------

    def _plain_run(self, buf: bytearray, start: int, end: int) -> int:
        """Number of records in ``buf[start:end]`` (no double quote in it, a line feed at its end) when
        every one of them is valid; 0 when not (the regex path then finds and reports the problem)."""
        with memoryview(buf) as view, view[start : end - 1] as piece:
            region = piece.tobytes()
        if self._crlf:
            if not region.endswith(b"\r"):
                return 0
            lines = region[:-1].split(b"\r\n")
            if region.count(b"\r") != len(lines) or region.count(b"\n") != len(lines) - 1:
                return 0
        else:
            if b"\r" in region:
                return 0
            lines = region.split(b"\n")
        if set(map(bytes.count, lines, repeat(self._delim))) != {len(self.columns) - 1}:
            return 0
        if len(self.columns) == 1 and b"" in lines:
            return 0
        return len(lines)

    def spans(self) -> Iterator[tuple[bytearray, int, int, int, bool]]:
        """Yield runs of complete, validated records: ``(buf, start, end, count, simple)``.

        ``buf[start:end]`` holds ``count`` records, terminators included. When ``simple`` is true no
        quoted value in the run contains a line feed, so every line feed ends a record; otherwise
        :data:`_RECORD_END` finds where records end. ``buf`` is the scanner's own buffer: use the run
        before asking for the next one and keep no memoryview of it.
        """
        assert self._bulk is not None
        assert self._bulk_any is not None
        assert self._exact is not None
        bulk = self._bulk.match
        bulk_any = self._bulk_any.match
        exact = self._exact.fullmatch
        fields = len(self.columns)
        plain_run = self._plain_run
        bad_run_end = -1  # file offset up to which the quick check already failed
        while True:
            buf = self._buf
            start = pos = self._pos
            # Fastest: records before the next double quote, checked a whole run at a time.
            count = 0
            if self._base + pos >= bad_run_end:
                quote = buf.find(b'"', pos)
                end = buf.rfind(b"\n", pos, quote if quote >= 0 else len(buf)) + 1
                if end > pos:
                    count = plain_run(buf, pos, end)
                    if not count:
                        bad_run_end = self._base + end  # something in there is wrong: go record by record
            if count:
                self._utf8_guard(pos, end, True)
                yield buf, pos, end, count, True
                self.record_number += count
                self.line_number += count
                self._pos = end
                continue
            # Then: records whose quoted values hold no line feed, a bounded number per regex call.
            end = bulk(buf, pos).end()  # type: ignore[union-attr]
            if end > pos:
                pos = end
                count = buf.count(b"\n", start, pos)
                self._utf8_guard(start, pos, True)
                yield buf, start, pos, count, True
                self.record_number += count
                self.line_number += count
                self._pos = pos
                continue
            end = bulk_any(buf, pos).end()  # type: ignore[union-attr]
            if end > pos:
                count = _count_complete_records(buf, pos, end)
                self._utf8_guard(pos, end, False)
                yield buf, pos, end, count, False
                self.record_number += count
                self.line_number += buf.count(b"\n", pos, end)
                self._pos = end
                continue
            if pos >= len(buf):
                if self._eof:
                    return
                self._read(self._chunk)
                continue
            found = self._one_record(pos, header=False)
            if found is None:
                partial = len(buf) - pos
                if partial > self.max_record_bytes:
                    hint = ""
                    if self._generic.match(buf, pos).end() < len(buf):  # type: ignore[union-attr]
                        hint = "; a quoted field in it may be missing its closing quote (unbalanced quotes)"
                    raise self.too_large(
                        partial, record=self.record_number + 1, line=self.line_number, partial=True, hint=hint
                    )
                self._read(max(self._chunk, partial))
                continue
            body_end, term = found
            end = body_end + term
            if body_end == pos and term:
                raise self.error(
                    "empty_line",
                    'the record is an empty line; remove it (an empty single value is written "")',
                )
            if exact(buf, pos, body_end) is None:
                got = self._field_number(pos, body_end)
                raise self.error(
                    "field_count",
                    f"the record has {got} field(s) but the header has {fields}",
                )
            if end - pos > self.max_record_bytes:
                raise self.too_large(
                    end - pos, record=self.record_number + 1, line=self.line_number, partial=False
                )
            self._utf8_guard(pos, end, None)
            yield buf, pos, end, 1, False
            self.record_number += 1
            self.line_number += buf.count(b"\n", pos, end)
            self._pos = end


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


class _Opened:
    """Open a path, or pass a stream through; gives the name used in messages."""

    def __init__(self, source: CsvSource, source_name: str | None) -> None:
        self._owned: IO[bytes] | None = None
        if hasattr(source, "read"):
            self.stream: IO[bytes] = source  # type: ignore[assignment]
            name = getattr(source, "name", None)
            self.name = source_name or (str(name) if isinstance(name, (str, os.PathLike)) else "<stream>")
            return
        self.name = source_name or str(source)
        try:
            if isinstance(source, str):
                self._owned = open(source, "rb")  # noqa: SIM115 - closed in close()
            elif hasattr(source, "open"):  # pathlib.Path, ObjectStoragePath, UPath
                self._owned = source.open("rb")
            else:
                self._owned = open(os.fspath(source), "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError:
            raise CsvValidationError("missing_file", "the file does not exist", source=self.name) from None
        except IsADirectoryError:
            raise CsvValidationError(
                "missing_file", "the path is a directory, not a file", source=self.name
            ) from None
        self.stream = self._owned

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()


def _start(
    opened: _Opened,
    *,
    column_delimiter: str,
    line_ending: str | None,
    chunk_size: int,
    max_record_bytes: int,
    required_columns: Collection[str],
    allowed_columns: Collection[str] | None,
    check_header: bool,
    allow_empty: bool,
) -> _Scanner | None:
    _, delimiter = resolve_delimiter(column_delimiter)
    scanner = _Scanner(
        opened.stream,
        source=opened.name,
        delimiter=delimiter,
        line_ending=None if line_ending is None else resolve_line_ending(line_ending),
        chunk_size=chunk_size,
        max_record_bytes=max_record_bytes,
        check_header_names=check_header,
    )
    if not scanner.read_header():
        if allow_empty:
            return None
        raise CsvValidationError(
            "empty_file",
            "the file is empty" + (" (it holds only a byte order mark)" if scanner.has_bom else ""),
            source=opened.name,
        )
    if check_header:
        scanner.check_columns(required_columns, allowed_columns)
    return scanner


def _summary(scanner: _Scanner, delimiter: str) -> CsvSummary:
    return CsvSummary(
        source=scanner.source,
        columns=scanner.columns,
        header=scanner.header,
        record_count=scanner.record_number,
        byte_count=scanner.bytes_read,
        has_bom=scanner.has_bom,
        column_delimiter=resolve_delimiter(delimiter)[0],
        line_ending=scanner.line_ending,
    )


def _header_only(scanner: _Scanner) -> CsvValidationError:
    return CsvValidationError(
        "header_only",
        "the file has a header but no records: there is nothing to load",
        source=scanner.source,
    )


def inspect_csv(
    source: CsvSource,
    *,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    required_columns: Collection[str] = (),
    allowed_columns: Collection[str] | None = None,
    max_record_bytes: int = DEFAULT_MAX_BYTES,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
) -> CsvSummary:
    """Validate a CSV for upload and count its records, writing nothing.

    Checks everything :func:`split_csv` checks (see the module docstring) and raises
    :class:`CsvValidationError` at the first problem.

    :param source: a binary stream (``open(p, "rb")``, ``ObjectStoragePath(...).open("rb")``) or a path.
    :param column_delimiter: ``columnDelimiter`` name (``COMMA``, ``SEMICOLON``, ...) or character.
    :param line_ending: ``LF`` or ``CRLF``; every record must end with it.
    :param required_columns: header names that must be present (case-insensitive).
    :param allowed_columns: when given, the only header names allowed (case-insensitive).
    :param max_record_bytes: largest record accepted; bounds memory.
    :param chunk_size: bytes read at a time.
    :param source_name: name used in error messages (default: the path or the stream's ``name``).
    """
    opened = _Opened(source, source_name)
    try:
        scanner = _start(
            opened,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            chunk_size=chunk_size,
            max_record_bytes=max_record_bytes,
            required_columns=required_columns,
            allowed_columns=allowed_columns,
            check_header=True,
            allow_empty=False,
        )
        assert scanner is not None
        for _ in scanner.spans():
            pass
        if scanner.record_number == 0:
            raise _header_only(scanner)
        return _summary(scanner, column_delimiter)
    finally:
        opened.close()


def count_records(
    stream: CsvSource,
    delimiter: str = "COMMA",
    line_ending: str | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_record_bytes: int = DEFAULT_MAX_BYTES,
) -> int:
    """Count the data records (header excluded) of any CSV stream, e.g. a Bulk API result file.

    Records are found by the same parser as the split, so quoted line breaks do not count. An empty
    stream and a header-only stream both count 0. The stream is still checked (consistent field
    counts, balanced quotes, UTF-8), so a damaged file raises :class:`CsvValidationError` rather than
    giving a wrong count.

    :param delimiter: ``columnDelimiter`` name or character of the file.
    :param line_ending: ``LF`` or ``CRLF``; ``None`` takes it from the header line (result files
        written by another tool may use either).
    """
    opened = _Opened(stream, None)
    try:
        scanner = _start(
            opened,
            column_delimiter=delimiter,
            line_ending=line_ending,
            chunk_size=chunk_size,
            max_record_bytes=max_record_bytes,
            required_columns=(),
            allowed_columns=None,
            check_header=False,
            allow_empty=True,
        )
        if scanner is None:
            return 0
        total = 0
        for _, _, _, count, _ in scanner.spans():
            total += count
        return total
    finally:
        opened.close()


class _Spool:
    """One part being written to its spool file."""

    def __init__(self, index: int, directory: str | None, header: bytes, first_record: int) -> None:
        fd, name = tempfile.mkstemp(prefix=f"sfbulk-part-{index:05d}-", suffix=".csv", dir=directory)
        self.path = Path(name)
        self.index = index
        self.first_record = first_record
        self.records = 0
        self.bytes = 0
        self._sha = hashlib.sha256()
        self._file = os.fdopen(fd, "wb")
        self.write(header)

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def write_span(self, buf: bytearray, start: int, end: int) -> None:
        with memoryview(buf) as view, view[start:end] as piece:
            self.write(piece)

    def finish(self) -> CsvPart:
        self._file.close()
        return CsvPart(
            index=self.index,
            path=self.path,
            byte_count=self.bytes,
            record_count=self.records,
            first_record_number=self.first_record,
            sha256=self._sha.hexdigest(),
        )

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _cut(
    buf: bytearray, start: int, end: int, count: int, simple: bool, room: int, slots: int
) -> tuple[int, int]:
    """Where to cut a run of records so that at most ``room`` bytes and ``slots`` records are taken.

    Returns ``(cut, records taken)``; ``cut == start`` when not even the first record fits.
    """
    if count == 1:
        return (end, 1) if end - start <= room and slots >= 1 else (start, 0)
    if simple:
        cut = max(buf.rfind(b"\n", start, min(end, start + room)) + 1, start)
        taken = buf.count(b"\n", start, cut)
        if taken <= slots:
            return cut, taken
        cut = start
        for _ in range(slots):
            cut = buf.index(b"\n", cut) + 1
        return cut, slots
    cut, taken, limit = start, 0, start + room
    match = _RECORD_END.match
    while taken < slots:
        found = match(buf, cut, end)
        if found is None or found.end() > limit:
            break
        cut = found.end()
        taken += 1
    return cut, taken


def _validate_limits(max_bytes: int, max_records: int | None) -> None:
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")
    if max_records is not None and max_records < 1:
        raise ValueError("max_records must be positive (or None for no limit)")


def iter_csv_parts(
    source: CsvSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_records: int | None = None,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    required_columns: Collection[str] = (),
    allowed_columns: Collection[str] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
    summary: list[CsvSummary] | None = None,
) -> Iterator[CsvPart]:
    """Cut a CSV stream into spooled parts, yielding each as soon as it is complete.

    Each part is a file in ``spool_dir`` (default: the system temp dir) that starts with the source's
    header row, holds whole records copied byte for byte, and is at most ``max_bytes`` bytes (header
    included) and ``max_records`` records. Records stay in file order; concatenating the parts' records
    gives the source's records exactly.

    Validation happens while reading, so :class:`CsvValidationError` may be raised after some parts
    were yielded; use :func:`split_csv` to validate the whole source before the first upload. Parts
    already yielded belong to the caller; the part being written when the generator fails or is
    closed is deleted.

    :param summary: when a list is given, a :class:`CsvSummary` is appended to it once the source has
        been read to its end.

    Other parameters as in :func:`inspect_csv`.
    """
    _validate_limits(max_bytes, max_records)
    directory = None if spool_dir is None else os.fspath(spool_dir)
    opened = _Opened(source, source_name)
    spool: _Spool | None = None
    try:
        scanner = _start(
            opened,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            chunk_size=chunk_size,
            max_record_bytes=max(max_bytes, 1),
            required_columns=required_columns,
            allowed_columns=allowed_columns,
            check_header=True,
            allow_empty=False,
        )
        assert scanner is not None
        header = scanner.header
        room_for_records = max_bytes - len(header)
        if room_for_records <= 0:
            raise ValueError(
                f"max_bytes={max_bytes} leaves no room for records after the {len(header)}-byte header"
            )
        scanner.max_record_bytes = room_for_records
        record_limit = max_records if max_records is not None else 1 << 62
        written = 0
        index = 0
        for buf, start, end, count, simple in scanner.spans():
            line = scanner.line_number
            while start < end:
                if spool is None:
                    spool = _Spool(index, directory, header, written + 1)
                    index += 1
                room = max_bytes - spool.bytes
                slots = record_limit - spool.records
                if end - start <= room and count <= slots:
                    spool.write_span(buf, start, end)
                    spool.records += count
                    written += count
                    break
                # The run does not fit whole: take the records that do, then close the part.
                cut, taken = _cut(buf, start, end, count, simple, room, slots)
                if taken:
                    spool.write_span(buf, start, cut)
                    spool.records += taken
                    written += taken
                    count -= taken
                    line += buf.count(b"\n", start, cut)
                    start = cut
                elif spool.records == 0:
                    size = _cut(buf, start, end, count, simple, end - start, 1)[0] - start
                    raise scanner.too_large(size, record=written + 1, line=line, partial=False)
                finished, spool = spool.finish(), None
                yield finished
        if written == 0:
            raise _header_only(scanner)
        if spool is not None:
            finished, spool = spool.finish(), None
            yield finished
        if summary is not None:
            summary.append(_summary(scanner, column_delimiter))
    finally:
        if spool is not None:
            spool.discard()
        opened.close()


def split_csv(
    source: CsvSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_records: int | None = None,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    required_columns: Collection[str] = (),
    allowed_columns: Collection[str] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
) -> CsvSplit:
    """Validate a whole CSV source and cut it into spooled upload parts; nothing is returned early.

    Reads the source once. If anything is wrong, every spool file written so far is deleted and
    :class:`CsvValidationError` is raised, so a caller that creates jobs only after this returns never
    starts a job for a bad file. On success the caller owns the parts: upload, then delete each one (or
    use the returned :class:`CsvSplit` as a context manager). Disk use is about the size of the source;
    memory stays at about one chunk plus one record.

    :param source: a binary stream (``open(p, "rb")``, ``ObjectStoragePath(...).open("rb")``) or a path.
    :param max_bytes: largest part, header included (default :data:`DEFAULT_MAX_BYTES`).
    :param max_records: most records per part (default: no limit).
    :param column_delimiter: ``columnDelimiter`` name (``COMMA``, ``SEMICOLON``, ...) or character.
    :param line_ending: ``LF`` or ``CRLF``, as the job will declare it; every record must end with it.
    :param required_columns: header names that must be present (case-insensitive); see
        :func:`required_columns_for`.
    :param allowed_columns: when given, the only header names allowed (``delete``: ``Id`` only).
    :param spool_dir: where part files go (default: the system temp dir).
    :param chunk_size: bytes read at a time.
    :param source_name: name used in error messages (default: the path or the stream's ``name``).
    """
    parts: list[CsvPart] = []
    summaries: list[CsvSummary] = []
    try:
        for part in iter_csv_parts(
            source,
            max_bytes,
            max_records=max_records,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            required_columns=required_columns,
            allowed_columns=allowed_columns,
            spool_dir=spool_dir,
            chunk_size=chunk_size,
            source_name=source_name,
            summary=summaries,
        ):
            parts.append(part)
    except BaseException:
        for part in parts:
            part.path.unlink(missing_ok=True)
        raise
    return CsvSplit(parts, summaries[0])
