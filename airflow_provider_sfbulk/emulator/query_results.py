"""Query job result files: write them once, then serve any page by byte range in O(1).

Layout of ``out_dir`` (``DIR/jobs/<jobId>/query/``):

- ``records.csv`` -- every result row as CSV, *without* the header line;
- ``records.idx`` -- one little-endian unsigned 64-bit byte offset per row (where row ``k`` starts in
  ``records.csv``) followed by the file size, so rows ``[k, k + n)`` are bytes ``idx[k] .. idx[k + n]``;
- ``meta.json`` -- header line, row count and sizes. It is written last: without it there is no result.

Every file is written under a temporary name and renamed into place, so a crash never leaves a
half-written result that :func:`read_page` would serve.

CSV as Salesforce prints Bulk API 2.0 query results: the header and every value double-quoted, inner
quotes doubled, line breaks kept inside quotes, the job's ``columnDelimiter`` and ``lineEnding``. Null
values print as ``""`` like any other value: not documented, but the CDAP Salesforce plugin split Bulk
query rows on ``","`` because "every value is in quotes every time" (data-integrations/salesforce#4),
which only works if nulls are quoted too; CSV readers see an empty string either way. NUL characters are
kept (Salesforce has been seen to return them, airbytehq/airbyte#8300).

Paging: a locator is the base64 text of the row offset the page starts at, unpadded, as Salesforce's look
(``MTAwMDA`` is ``10000``); ``None`` is the first page. A locator that does not decode to a row offset
inside the result is refused with :class:`SoqlError` ``INVALID_QUERY_LOCATOR`` (code and text unverified).
Every page begins with the header line; with zero rows the only page is the header line alone, with a
record count of 0 and no next locator (Salesforce's choice for an empty result is unverified).
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import os
import re
import sqlite3
import uuid
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.emulator.schema import FieldDef, format_value
from airflow_provider_sfbulk.emulator.soql import CompiledQuery, SoqlError
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS

__all__ = [
    "ResultPage",
    "decode_locator",
    "encode_locator",
    "page_locators",
    "prepare_connection",
    "read_page",
    "write_query_results",
]

DATA_FILE = "records.csv"
INDEX_FILE = "records.idx"
META_FILE = "meta.json"
_FETCH_ROWS = 2_000
_OFFSET_SIZE = 8


class _Aborted(Exception):
    """``should_abort`` turned true while results were being written."""


@dataclass(frozen=True)
class ResultPage:
    """One page of results: send ``header`` and then bytes ``[start, end)`` of ``path``."""

    path: Path
    header: bytes
    start: int
    end: int
    record_count: int
    next_locator: str | None


# ------------------------------------------------------------------------------------- SQL functions


@lru_cache(maxsize=256)
def _like_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


def _soql_like(value: Any, pattern: str) -> int | None:
    if value is None:
        return None
    return 1 if _like_regex(pattern).fullmatch(str(value)) else 0


def prepare_connection(conn: sqlite3.Connection) -> None:
    """Register the SQL functions compiled queries use (``soql_like``); idempotent."""
    conn.create_function("soql_like", 2, _soql_like, deterministic=True)


# ---------------------------------------------------------------------------------------- CSV output


def _formatter(fdef: FieldDef) -> Callable[[Any], Any] | None:
    """Stored value -> text as ``schema.format_value`` prints it; None where the stored text is final."""
    if fdef.type in ("boolean", "int", "double", "currency", "percent"):
        return lambda value: None if value is None else format_value(fdef, value)
    return None  # text, ids, dates and datetimes are stored exactly as Salesforce prints them


class _ByteSink:
    """File-like target for ``csv.writer``: encodes each row once and remembers its byte length."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.parts.append(data)
        return len(data)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def csv_line(values: Iterable[str], delimiter: str, line_ending: str) -> str:
    """One CSV line with every value double-quoted."""
    return delimiter.join(_quote(v) for v in values) + line_ending


def _dialect(column_delimiter: str, line_ending: str) -> tuple[str, str]:
    try:
        return COLUMN_DELIMITERS[column_delimiter], LINE_ENDINGS[line_ending]
    except KeyError as err:
        raise ValueError(f"unknown columnDelimiter or lineEnding: {err.args[0]!r}") from None


def write_query_results(
    conn: sqlite3.Connection,
    compiled: CompiledQuery,
    out_dir: Path,
    *,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    should_abort: Callable[[], bool] = lambda: False,
    fetch_rows: int = _FETCH_ROWS,
) -> int:
    """Run ``compiled`` and write its rows, index and metadata into ``out_dir``; return the row count.

    Streams with ``fetchmany`` so memory stays flat whatever the result size. Checks ``should_abort``
    between fetches; when it turns true the partial files are removed, nothing is installed and the
    number of rows fetched so far is returned (the caller checks ``should_abort`` itself). A previous
    result in ``out_dir`` is replaced only once the new one is complete.
    """
    delimiter, eol = _dialect(column_delimiter, line_ending)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_connection(conn)
    if len(compiled.fields) != len(compiled.columns):
        raise ValueError("a compiled query needs one field definition per column")
    preformatted = compiled.preformatted or (False,) * len(compiled.fields)
    formatters = [None if done else _formatter(f)
                  for f, done in zip(compiled.fields, preformatted, strict=True)]
    converters = any(f is not None for f in formatters)
    sink = _ByteSink()
    # QUOTE_ALL: every value quoted, inner quotes doubled, None printed as "" -- one write() per row.
    writer = csv.writer(sink, delimiter=delimiter, lineterminator=eol, quoting=csv.QUOTE_ALL,
                        doublequote=True)
    header = csv_line(compiled.columns, delimiter, eol).encode("utf-8")
    tag = uuid.uuid4().hex
    tmp_data = out_dir / f".{DATA_FILE}.{tag}.tmp"
    tmp_index = out_dir / f".{INDEX_FILE}.{tag}.tmp"
    tmp_meta = out_dir / f".{META_FILE}.{tag}.tmp"
    count = 0
    offset = 0
    try:
        with open(tmp_data, "wb") as data, open(tmp_index, "wb") as index:
            cursor = conn.execute(compiled.sql, compiled.params)
            try:
                while True:
                    if should_abort():
                        raise _Aborted
                    rows = cursor.fetchmany(fetch_rows)
                    if not rows:
                        break
                    offsets = array("Q")
                    for row in rows:
                        values = (
                            [value if conv is None else conv(value)
                             for conv, value in zip(formatters, row, strict=True)]
                            if converters
                            else row
                        )
                        offsets.append(offset)
                        offset += writer.writerow(values)
                    data.write(b"".join(sink.parts))
                    sink.parts.clear()
                    _write_offsets(index, offsets)
                    count += len(rows)
            finally:
                cursor.close()
            _write_offsets(index, array("Q", [offset]))
            data.flush()
            os.fsync(data.fileno())
            index.flush()
            os.fsync(index.fileno())
        meta = {
            "version": 1,
            "header": header.decode("utf-8"),
            "records": count,
            "size": offset,
            "columnDelimiter": column_delimiter,
            "lineEnding": line_ending,
            "object": compiled.object_name,
        }
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        (out_dir / META_FILE).unlink(missing_ok=True)  # a reader never pairs the new data with old meta
        os.replace(tmp_data, out_dir / DATA_FILE)
        os.replace(tmp_index, out_dir / INDEX_FILE)
        os.replace(tmp_meta, out_dir / META_FILE)
    except _Aborted:
        return count
    finally:
        for tmp in (tmp_data, tmp_index, tmp_meta):
            tmp.unlink(missing_ok=True)
    return count


def _write_offsets(stream: Any, offsets: array[int]) -> None:
    if offsets.itemsize != _OFFSET_SIZE:  # pragma: no cover - "Q" is 8 bytes on every supported platform
        raise RuntimeError("unsigned 64-bit array items are not 8 bytes here")
    if array("H", [1]).tobytes() != b"\x01\x00":  # big-endian host: store little-endian anyway
        offsets.byteswap()
    stream.write(offsets.tobytes())


# --------------------------------------------------------------------------------------------- paging


def encode_locator(row_offset: int) -> str:
    """Salesforce-looking locator for a row offset: unpadded base64 of its decimal text."""
    return base64.b64encode(str(row_offset).encode("ascii")).decode("ascii").rstrip("=")


def decode_locator(locator: str) -> int | None:
    """The row offset a locator we issued stands for, or None when it is not one of ours."""
    if not locator or len(locator) > 32 or not re.fullmatch(r"[A-Za-z0-9+/]+", locator):
        return None
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not text.isdigit() or encode_locator(int(text)) != locator:
        return None
    return int(text)


@dataclass(frozen=True)
class _Meta:
    header: bytes
    records: int
    size: int


def _load_meta(out_dir: Path) -> _Meta:
    try:
        meta = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no query results in {out_dir}") from None
    return _Meta(meta["header"].encode("utf-8"), int(meta["records"]), int(meta["size"]))


def _offset_at(index_path: Path, row: int) -> int:
    with open(index_path, "rb") as index:
        index.seek(row * _OFFSET_SIZE)
        raw = index.read(_OFFSET_SIZE)
    if len(raw) != _OFFSET_SIZE:
        raise RuntimeError(f"query result index {index_path} is truncated")
    return int.from_bytes(raw, "little")


def _invalid_locator(locator: str) -> SoqlError:
    return SoqlError("INVALID_QUERY_LOCATOR", f"Invalid query locator: {locator}")


def _check_max_records(max_records: int | None, default_page_records: int) -> int:
    if max_records is None:
        return default_page_records
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records <= 0:
        raise SoqlError("INVALIDPARAMETER", f"maxRecords must be a positive integer, got {max_records!r}")
    return max_records


def read_page(
    out_dir: Path,
    locator: str | None,
    max_records: int | None,
    *,
    default_page_records: int = 1_000_000,
) -> ResultPage:
    """The page starting at ``locator`` (None: the first) with at most ``max_records`` rows.

    Raises :class:`SoqlError` ``INVALID_QUERY_LOCATOR`` for a locator this result never issues and
    ``INVALIDPARAMETER`` for a ``max_records`` that is not a positive integer; FileNotFoundError when
    ``out_dir`` holds no complete result.
    """
    out_dir = Path(out_dir)
    meta = _load_meta(out_dir)
    page_size = _check_max_records(max_records, default_page_records)
    if locator is None:
        first = 0
    else:
        decoded = decode_locator(locator)
        if decoded is None or decoded >= meta.records:
            raise _invalid_locator(locator)
        first = decoded
    last = min(first + page_size, meta.records)
    index_path = out_dir / INDEX_FILE
    start = _offset_at(index_path, first) if meta.records else 0
    end = _offset_at(index_path, last) if meta.records else 0
    return ResultPage(
        path=out_dir / DATA_FILE,
        header=meta.header,
        start=start,
        end=end,
        record_count=last - first,
        next_locator=encode_locator(last) if last < meta.records else None,
    )


def page_locators(out_dir: Path, max_records: int) -> list[str | None]:
    """Locators of every page of ``max_records`` rows, for ``resultPages``; the first is None."""
    meta = _load_meta(Path(out_dir))
    page_size = _check_max_records(max_records, max_records)
    return [None] + [encode_locator(k) for k in range(page_size, meta.records, page_size)]


def result_record_count(out_dir: Path) -> int:
    """Rows in the complete result stored in ``out_dir``."""
    return _load_meta(Path(out_dir)).records
