"""Find record boundaries in a binary CSV stream and validate every record on the way.

:class:`Scanner` reads the source once, in chunks, and yields runs of complete, checked records. Runs
of records are recognised by regular expressions that work through many records per call in C, so no
Python code runs per byte, nor per record, except for the record that straddles a chunk's end (and
for the record that holds a problem, to describe it). The only buffer is the current chunk plus that
straddling record.

Every record is checked against the header: the number of fields, quoting (a quoted field must close,
and be followed by a delimiter or the line ending; a quote may not appear inside an unquoted field),
the line ending (the declared one, everywhere), UTF-8, and empty lines. The header itself is checked in
:mod:`~airflow_provider_sfbulk.csvio.header`. Each problem raises :class:`CsvValidationError` naming the
source, the record number (data records count from 1; the header is not counted) and the line number.

:func:`inspect_csv` validates and counts without writing anything; the splitter
(:mod:`~airflow_provider_sfbulk.csvio.split`) cuts the same runs into upload parts.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import IO, Union

from airflow_provider_sfbulk.csvio.dialect import resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.header import check_columns, header_names

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "RECORD_END",
    "CsvSource",
    "CsvSummary",
    "OpenedSource",
    "Scanner",
    "header_only_error",
    "inspect_csv",
    "start_scan",
    "summarize",
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
#: The possessive quantifier suffix where the ``re`` module has it (Python 3.11+).
_POSSESSIVE = b"+" if sys.version_info >= (3, 11) else b""



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



#: One complete record of valid CSV, terminator included (any delimiter, LF or CRLF). Written as
#: "unquoted run, then (quoted field, unquoted run)*" so that every byte has one way to match and a
#: failed match (an incomplete record) backtracks in linear time.
RECORD_END = re.compile(b'[^"\\n]*(?:"[^"]*(?:""[^"]*)*"[^"\\n]*)*\\n')


#: ``bytes.translate`` deletion table: every byte but the double quote and the line feed.
_ALL_BUT_QUOTE_AND_LF = bytes(code for code in range(256) if code not in (_QUOTE, _LF))


def _count_complete_records(buf: bytes | bytearray, start: int, end: int) -> int:
    """Count the records of ``buf[start:end]``, a run of complete records of valid CSV.

    Every line feed outside quotes ends a record. In valid CSV a byte is inside quotes when an odd number
    of double quotes precedes it in the run, so the count needs no parsing: keep only the quotes and line
    feeds (``translate``, in C), drop every adjacent ``""`` (which cannot change the parity at any later
    byte), and what is left alternates between line feeds outside quotes and line feeds inside them.
    """
    if buf.find(b'"', start, end) < 0:
        return buf.count(b"\n", start, end)
    reduced = buf[start:end].translate(None, _ALL_BUT_QUOTE_AND_LF).replace(b'""', b"")
    inside = reduced.split(b'"')[1::2]
    return reduced.count(b"\n") - sum(map(len, inside))


def _count_records_before(buf: bytes | bytearray, start: int, index: int) -> int:
    """Count the complete records between ``start`` (a record start) and ``index`` (inside a record)."""
    count, pos = 0, start
    while True:
        found = RECORD_END.match(buf, pos, index)
        if found is None:
            return count
        count, pos = count + 1, found.end()


def _describe_byte(value: int) -> str:
    if 0x20 <= value < 0x7F:
        return repr(chr(value))
    return f"byte 0x{value:02x}"


def _unquoted_field(delimiter: bytes) -> bytes:
    return b"[^" + re.escape(delimiter) + b'"\\r\\n]*'


def _field_any(delimiter: bytes) -> bytes:
    """Regex source of one field, quoted (line breaks allowed inside) or not."""
    return b'(?:"[^"]*(?:""[^"]*)*"|' + _unquoted_field(delimiter) + b")"


@dataclass(frozen=True)
class _RecordPatterns:
    """The regexes that recognise whole records once the header fixed the number of fields."""

    #: Up to a bounded number of records whose quoted values hold no line feed.
    one_line: re.Pattern[bytes]
    #: Up to a bounded number of valid records, quoted line breaks included.
    any_records: re.Pattern[bytes]
    #: One record's fields, exactly as many as the header has.
    exact: re.Pattern[bytes]

    @classmethod
    def build(cls, delimiter: bytes, crlf: bool, fields: int) -> _RecordPatterns:
        d = re.escape(delimiter)
        term = b"\\r\\n" if crlf else b"\\n"
        # A field, quoted or not, can only be followed by the delimiter or the line ending, never by a
        # byte it could give back, so the bulk patterns take fields possessively (Python 3.11+): the
        # same matches without the backtracking state, about a third faster.
        p = _POSSESSIVE
        unquoted = b"[^" + d + b'"\\r\\n]*' + p
        any_field = b'(?:"[^"]*' + p + b'(?:""[^"]*' + p + b")*" + p + b'"|' + unquoted + b")"
        # Quoted fields without a line feed: every line feed in a bulk match then ends a record.
        one_line_field = b'(?:"[^"\\n]*' + p + b'(?:""[^"\\n]*' + p + b")*" + p + b'"|' + unquoted + b")"
        rest = b"){%d}" % (fields - 1)
        one_line = b"(?!" + term + b")" + one_line_field + b"(?:" + d + one_line_field + rest + term
        any_record = b"(?!" + term + b")" + any_field + b"(?:" + d + any_field + rest + term
        per_call = max(1, min(_BULK_RECORDS, _BULK_FIELDS // fields))
        return cls(
            one_line=re.compile(b"(?:" + one_line + b"){0,%d}" % per_call),
            any_records=re.compile(b"(?:" + any_record + b"){0,%d}" % per_call),
            exact=re.compile(_field_any(delimiter) + b"(?:" + d + _field_any(delimiter) + rest),
        )


def _plain_run(buf: bytearray, start: int, end: int, crlf: bool, delimiter: bytes, width: int) -> int:
    """Count the records of ``buf[start:end]`` when every one of them is valid; 0 when not.

    The run has no double quote and ends with a line feed. On 0 the regex path finds and reports the
    problem.
    """
    with memoryview(buf) as view, view[start : end - 1] as piece:
        region = piece.tobytes()
    if crlf:
        if not region.endswith(b"\r"):
            return 0
        lines = region[:-1].split(b"\r\n")
        if region.count(b"\r") != len(lines) or region.count(b"\n") != len(lines) - 1:
            return 0
    else:
        if b"\r" in region:
            return 0
        lines = region.split(b"\n")
    if set(map(bytes.count, lines, repeat(delimiter))) != {width - 1}:
        return 0
    if width == 1 and b"" in lines:
        return 0
    return len(lines)


class Scanner:
    """Finds record boundaries in a binary CSV stream and validates records on the way.

    Call :meth:`read_header` once, then iterate :meth:`spans`.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        source: str,
        delimiter: str,
        line_ending: str,
        chunk_size: int,
        max_record_bytes: int,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._stream = stream
        self.source = source
        self._delim = delimiter.encode("ascii")
        self._delim_int = self._delim[0]
        self._crlf = line_ending == "CRLF"
        self._chunk = chunk_size
        self.max_record_bytes = max_record_bytes
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
        field_any = _field_any(self._delim)
        self._field_rx = re.compile(field_any)
        self._generic = re.compile(field_any + b"(?:" + d + field_any + b")*")
        self._patterns: _RecordPatterns | None = None
        #: File offset up to which the quick check of a quote-free run already failed.
        self._bad_run_end = -1


    # -- reading ---------------------------------------------------------------------------------

    @property
    def bytes_read(self) -> int:
        """Bytes read from the source so far, byte order mark included."""
        return self._read_total

    @property
    def line_ending(self) -> str:
        """The declared ``lineEnding`` name, ``LF`` or ``CRLF`` (every record must end with it)."""
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
        """A :class:`CsvValidationError` at the current record and line (unless given)."""
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
        """The error for a record bigger than :attr:`max_record_bytes`."""
        amount = f"more than {self.max_record_bytes:,}" if partial else f"{size:,}"
        return self.error(
            "record_too_large",
            f"the record is {amount} bytes, more than fits in one upload next to the header "
            f"(at most {self.max_record_bytes:,} bytes){hint}",
            record=record,
            line=line,
        )

    def _utf8_guard(self, start: int, end: int, simple: bool | None) -> None:
        """Raise if the first invalid UTF-8 byte lies before ``end``.

        ``simple`` is as in :meth:`spans` (``None``: the span is one record).
        """
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
        """End of the record at ``start``: ``(body_end, terminator_length)``, or None for more data."""
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
                if not self._crlf:
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
        self.header = bytes(self._buf[: body_end + term])
        self.columns = header_names(
            self._buf[:body_end],
            field=self._field_rx,
            delimiter=self._delim,
            source=self.source,
        )
        self.line_number += self._buf.count(b"\n", 0, body_end + term)
        self._pos = body_end + term
        self._patterns = _RecordPatterns.build(self._delim, self._crlf, len(self.columns))
        return True


    # -- records ---------------------------------------------------------------------------------

    def spans(self) -> Iterator[tuple[bytearray, int, int, int, bool]]:
        """Yield runs of complete, validated records: ``(buf, start, end, count, simple)``.

        ``buf[start:end]`` holds ``count`` records, terminators included. When ``simple`` is true no
        quoted value in the run contains a line feed, so every line feed ends a record; otherwise
        :data:`RECORD_END` finds where records end. ``buf`` is the scanner's own buffer: use the run
        before asking for the next one and keep no memoryview of it.
        """
        while True:
            buf = self._buf
            pos = self._pos
            run = self._quick_run(buf, pos)
            if run is not None:
                end, count, simple = run
                yield buf, pos, end, count, simple
                self.record_number += count
                self.line_number += count if simple else buf.count(b"\n", pos, end)
                self._pos = end
                continue
            if pos >= len(buf):
                if self._eof:
                    return
                self._read(self._chunk)
                continue
            found = self._careful_record(buf, pos)
            if found is None:
                continue  # more data was read: look again
            yield buf, pos, found, 1, False
            self.record_number += 1
            self.line_number += buf.count(b"\n", pos, found)
            self._pos = found

    def _quick_run(self, buf: bytearray, pos: int) -> tuple[int, int, bool] | None:
        """Find the run of valid records at ``pos`` that can be recognised whole: ``(end, count, simple)``.

        The regexes (or, before the next double quote, plain splitting) recognise it; None when the record
        at ``pos`` needs the careful path (a problem, or a record not complete in the buffer).
        """
        patterns = self._patterns
        assert patterns is not None
        # Fastest: records before the next double quote, checked a whole run at a time.
        if self._base + pos >= self._bad_run_end:
            quote = buf.find(b'"', pos)
            end = buf.rfind(b"\n", pos, quote if quote >= 0 else len(buf)) + 1
            if end > pos:
                count = _plain_run(buf, pos, end, self._crlf, self._delim, len(self.columns))
                if count:
                    self._utf8_guard(pos, end, True)
                    return end, count, True
                self._bad_run_end = self._base + end  # something in there is wrong: go record by record
        # Then: records whose quoted values hold no line feed, a bounded number per regex call.
        end = patterns.one_line.match(buf, pos).end()  # type: ignore[union-attr]
        if end > pos:
            self._utf8_guard(pos, end, True)
            return end, buf.count(b"\n", pos, end), True
        end = patterns.any_records.match(buf, pos).end()  # type: ignore[union-attr]
        if end > pos:
            self._utf8_guard(pos, end, False)
            return end, _count_complete_records(buf, pos, end), False
        return None

    def _careful_record(self, buf: bytearray, pos: int) -> int | None:
        """Find the end of the one record at ``pos``, fully checked (raises at its problem).

        None after reading more data when the record is not complete in the buffer yet.
        """
        patterns = self._patterns
        assert patterns is not None
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
            return None
        body_end, term = found
        end = body_end + term
        if body_end == pos and term:
            raise self.error(
                "empty_line",
                'the record is an empty line; remove it (an empty single value is written "")',
            )
        if patterns.exact.fullmatch(buf, pos, body_end) is None:
            got = self._field_number(pos, body_end)
            raise self.error(
                "field_count",
                f"the record has {got} field(s) but the header has {len(self.columns)}",
            )
        # No whole-record size check: a complete record in the buffer is taken by _quick_run first, so a
        # record gets here only at the end of the file, as the rest of the buffer, which the partial check
        # above measured before the end was seen. The callers measure every run too (inspect_csv, parts).
        self._utf8_guard(pos, end, None)
        return end


class OpenedSource:
    """Open a path, or pass a stream through; gives the name used in messages (``name``).

    :attr:`stream` is the binary stream to read; :meth:`close` closes it only when it was opened here.
    """

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
        """Close the stream if this object opened it."""
        if self._owned is not None:
            self._owned.close()


def start_scan(
    opened: OpenedSource,
    *,
    column_delimiter: str,
    line_ending: str,
    chunk_size: int,
    max_record_bytes: int,
    required_columns: Collection[str],
    allowed_columns: Collection[str] | None,
) -> Scanner:
    """A scanner over ``opened`` whose header is read and checked (an empty stream raises ``empty_file``)."""
    _, delimiter = resolve_delimiter(column_delimiter)
    scanner = Scanner(
        opened.stream,
        source=opened.name,
        delimiter=delimiter,
        line_ending=resolve_line_ending(line_ending),
        chunk_size=chunk_size,
        max_record_bytes=max_record_bytes,
    )
    if not scanner.read_header():
        raise CsvValidationError(
            "empty_file",
            "the file is empty" + (" (it holds only a byte order mark)" if scanner.has_bom else ""),
            source=opened.name,
        )
    check_columns(scanner.columns, required_columns, allowed_columns, source=scanner.source)
    return scanner


def summarize(scanner: Scanner, delimiter: str) -> CsvSummary:
    """What ``scanner`` learned, once it has read its source to the end."""
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


def header_only_error(scanner: Scanner) -> CsvValidationError:
    """The error for a file with a header and no record: there is nothing to load."""
    return CsvValidationError(
        "header_only",
        "the file has a header but no records: there is nothing to load",
        source=scanner.source,
    )


def _check_record_sizes(scanner: Scanner, buf: bytearray, start: int, end: int, simple: bool) -> None:
    """Raise for the first record of a run bigger than ``max_record_bytes``, terminator included.

    The fast paths of :meth:`Scanner.spans` do not measure records; :func:`split_csv` refuses such a record
    when it does not fit in a part, with the same numbers, so that both refuse the same records.
    """
    pos, record, line = start, scanner.record_number + 1, scanner.line_number
    while pos < end:
        if simple:
            found = buf.index(b"\n", pos) + 1
        else:
            found = RECORD_END.match(buf, pos, end).end()  # type: ignore[union-attr]
        if found - pos > scanner.max_record_bytes:
            raise scanner.too_large(found - pos, record=record, line=line, partial=False)
        record, line, pos = record + 1, line + buf.count(b"\n", pos, found), found


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
    opened = OpenedSource(source, source_name)
    try:
        scanner = start_scan(
            opened,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            chunk_size=chunk_size,
            max_record_bytes=max_record_bytes,
            required_columns=required_columns,
            allowed_columns=allowed_columns,
        )
        for buf, start, end, _count, simple in scanner.spans():
            if end - start > max_record_bytes:
                _check_record_sizes(scanner, buf, start, end, simple)
        if scanner.record_number == 0:
            raise header_only_error(scanner)
        return summarize(scanner, column_delimiter)
    finally:
        opened.close()


