"""The streaming counter of downloads (CsvTee): quote-aware, chunk-size independent, the same counts as the
scanner, exact hashes of what it stores, gzip on the way, and the hook's restart protocol."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.common.threads import Cancelled
from airflow_provider_sfbulk.csvio.errors import CsvShapeError
from airflow_provider_sfbulk.csvio.header import parse_header
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.tee import MAX_HEADER_BYTES, CsvTee


def _tee(data: bytes, cuts: list[int] | None = None, **kwargs) -> tuple[CsvTee, io.BytesIO]:
    out = io.BytesIO()
    tee = CsvTee(out, **kwargs)
    start = 0
    for cut in sorted(cuts or []):
        tee.write(data[start:cut])
        start = cut
    tee.write(data[start:])
    tee.close()
    return tee, out


@pytest.mark.parametrize(
    ("data", "records", "header_length"),
    [
        (b"", 0, None),
        (b'"Id"', 0, None),
        (b'"Id"\n', 0, 5),
        (b'"Id"\n"1"\n', 1, 5),
        (b'"Id"\n"1"', 1, 5),  # a last record without a line ending still counts
        (b'"Id","Text"\r\n"1","a\r\nb"\r\n"2","c"\r\n', 2, 13),
        (b'"Id","Text"\n"1","line\nbreak ""quoted"" \n"\n', 1, 12),
        (b'"A\nB"\n"x"\n', 1, 6),  # a line break inside a quoted header name
        (b'Id,Name\n1,plain\n2,"with, comma"\n', 2, 8),
        (b'h\n"a\nb"\n', 1, 2),
        (b"h\r\nx\r\ny\r\n", 2, 3),
        (b'h\n"""\n"""\n', 1, 2),  # a value that is a quote, a line feed, a quote
    ],
)
def test_counts_and_header(data: bytes, records: int, header_length: int | None) -> None:
    tee, out = _tee(data)
    assert tee.records == records
    assert tee.header_length == header_length
    assert out.getvalue() == data
    assert (tee.csv_bytes, tee.stored_bytes) == (len(data), len(data))
    assert tee.sha256 == hashlib.sha256(data).hexdigest()
    # byte-by-byte writing gives the same answer
    one_by_one, _ = _tee(data, list(range(1, len(data))))
    assert (one_by_one.records, one_by_one.header_length) == (records, header_length)
    if header_length is not None:
        assert tee.header == data[:header_length]


def test_unbalanced_quotes_are_reported() -> None:
    tee, _ = _tee(b'"Id"\n"unterminated\n')
    assert tee.records == 1  # the open record counts, as a last record without a line ending does
    with pytest.raises(CsvShapeError, match="unbalanced quotes"):
        tee.check_balanced()
    balanced, _ = _tee(b'"Id"\n"closed"\n')
    assert balanced.check_balanced() == 1


def test_header_longer_than_the_cap_is_refused() -> None:
    tee = CsvTee(io.BytesIO())
    chunk = b"x" * (MAX_HEADER_BYTES // 3)
    for _ in range(3):
        tee.write(chunk)
    with pytest.raises(CsvShapeError, match="no end of the header line"):
        tee.write(chunk)


def test_parse_header() -> None:
    assert parse_header(b'"Id","Account.Name"\n', "COMMA") == ["Id", "Account.Name"]
    assert parse_header(b'"Id"|"Name"\r\n', "PIPE") == ["Id", "Name"]
    assert parse_header(b"Id\tName\n", "TAB") == ["Id", "Name"]
    assert parse_header(b"", "COMMA") == []


_VALUE = st.text(alphabet=st.sampled_from(list('ab ,;"\n\r\u00e9\u2713')), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_VALUE, min_size=3, max_size=3), max_size=12),
    crlf=st.booleans(),
    quote_all=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_same_count_as_the_scanner(
    rows: list[list[str]], crlf: bool, quote_all: bool, cuts: list[int]
) -> None:
    buffer = io.StringIO()
    # csv.writer leaves a lone CR unquoted under QUOTE_MINIMAL with an LF terminator: quote everything then
    quote_all = quote_all or any("\r" in value for row in rows for value in row)
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["Id", "Name", "Text"])
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    tee, out = _tee(data, [cut for cut in cuts if cut <= len(data)])
    assert tee.records == len(rows)
    if rows:
        assert tee.records == inspect_csv(io.BytesIO(data), line_ending="CRLF" if crlf else "LF").record_count
    assert tee.check_balanced() == len(rows)
    assert tee.header == data[: tee.header_length]
    assert parse_header(tee.header, "COMMA") == ["Id", "Name", "Text"]
    assert out.getvalue() == data
    assert tee.sha256 == hashlib.sha256(data).hexdigest()


def test_large_chunks() -> None:
    """A multi-megabyte chunk (a decompressed gzip transfer) counts the same, with quoted line breaks and
    quote pairs anywhere."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["Id", "Text"])
    for i in range(40_000):
        writer.writerow([str(i), 'line one\nline "two"' * (i % 4)])
    data = buffer.getvalue().encode("utf-8")
    assert len(data) > 1_000_000
    tee, _ = _tee(data)
    assert tee.check_balanced() == 40_000 == inspect_csv(io.BytesIO(data)).record_count
    assert tee.header == b'"Id","Text"\n'


def test_gzip_stores_compressed_and_counts_the_csv() -> None:
    data = b'"Id","Text"\n' + b"".join(b'"%d","a\nb"\n' % i for i in range(1000))
    tee, out = _tee(data, [7, 500, 4000], gzip_level=1)
    stored = out.getvalue()
    assert gzip.decompress(stored) == data
    assert tee.records == 1000
    assert tee.csv_bytes == len(data)
    assert tee.stored_bytes == len(stored) < len(data)
    assert tee.sha256 == hashlib.sha256(stored).hexdigest()
    assert not tee.seekable()  # a compressed stream cannot restart in place


def test_restarts_only_from_the_start() -> None:
    out = io.BytesIO()
    out.write(b"before")
    tee = CsvTee(out)
    tee.write(b"h\nx\n")
    assert tee.seekable()
    assert tee.tell() == len(b"before") + 4
    with pytest.raises(OSError, match="only seeks back"):
        tee.seek(2)
    tee.seek(len(b"before"))
    tee.truncate()
    tee.write(b"h\ny\nz\n")
    assert tee.records == 2
    assert out.getvalue() == b"beforeh\ny\nz\n"
    assert tee.sha256 == hashlib.sha256(b"h\ny\nz\n").hexdigest()
    assert (tee.stored_bytes, tee.csv_bytes) == (6, 6)


def test_unrestartable_tee_is_not_seekable() -> None:
    tee = CsvTee(io.BytesIO(), restartable=False)
    assert not tee.seekable()
    with pytest.raises(OSError):
        tee.seek(0)


def test_stop_event_cancels_the_next_write() -> None:
    stop = threading.Event()
    out = io.BytesIO()
    tee = CsvTee(out, stop=stop)
    tee.write(b"h\n")
    stop.set()
    with pytest.raises(Cancelled):
        tee.write(b"x\n")
    assert out.getvalue() == b"h\n"
