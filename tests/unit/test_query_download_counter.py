"""The streaming record counter of query extracts: quote-aware, chunk-size independent, same counts as
the CSV splitter's parser."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.csvio.split import count_records
from airflow_provider_sfbulk.query.extract import CsvRecordCounter, parse_header


def _count(data: bytes, cuts: list[int] | None = None) -> CsvRecordCounter:
    counter = CsvRecordCounter()
    start = 0
    for cut in sorted(cuts or []):
        counter.feed(data[start:cut])
        start = cut
    counter.feed(data[start:])
    counter.finish()
    return counter


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
    ],
)
def test_counts_and_header(data: bytes, records: int, header_length: int | None) -> None:
    counter = _count(data)
    assert counter.records == records
    assert counter.header_length == header_length
    # byte-by-byte feeding gives the same answer
    one_by_one = _count(data, list(range(1, len(data))))
    assert (one_by_one.records, one_by_one.header_length) == (records, header_length)
    if header_length is not None:
        assert counter.header == data[:header_length]


def test_unbalanced_quotes_are_reported() -> None:
    counter = CsvRecordCounter()
    counter.feed(b'"Id"\n"unterminated\n')
    with pytest.raises(ValueError, match="unbalanced quotes"):
        counter.finish()


def test_header_longer_than_the_cap_is_refused() -> None:
    counter = CsvRecordCounter()
    for _ in range(3):
        counter.feed(b"x" * (300 * 1024))
    with pytest.raises(ValueError, match="no end of the header line"):
        counter.feed(b"x" * (300 * 1024))


def test_parse_header() -> None:
    assert parse_header(b'"Id","Account.Name"\n', "COMMA") == ["Id", "Account.Name"]
    assert parse_header(b'"Id"|"Name"\r\n', "PIPE") == ["Id", "Name"]
    assert parse_header(b"Id\tName\n", "TAB") == ["Id", "Name"]
    assert parse_header(b"", "COMMA") == []


_VALUE = st.text(alphabet=st.sampled_from(list('ab ,;"\n\r\u00e9\u2713')), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(_VALUE, min_size=3, max_size=3), max_size=12),
    crlf=st.booleans(),
    quote_all=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_same_count_as_the_csv_splitter(rows: list[list[str]], crlf: bool, quote_all: bool,
                                        cuts: list[int]) -> None:
    buffer = io.StringIO()
    # csv.writer leaves a lone CR unquoted under QUOTE_MINIMAL with an LF terminator: quote everything then
    quote_all = quote_all or any("\r" in value for row in rows for value in row)
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n",
                        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(["Id", "Name", "Text"])
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    counter = _count(data, [cut for cut in cuts if cut <= len(data)])
    assert counter.records == len(rows) == count_records(io.BytesIO(data), "COMMA", "CRLF" if crlf else "LF")
    assert counter.header == data[: counter.header_length]
    assert parse_header(counter.header, "COMMA") == ["Id", "Name", "Text"]


def test_large_chunks_are_counted_in_slices() -> None:
    """A multi-megabyte chunk (a decompressed gzip transfer) is scanned in slices: same count, same header,
    even with quoted line breaks and quote pairs falling on slice borders."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["Id", "Text"])
    for i in range(40_000):
        writer.writerow([str(i), 'line one\nline "two"' * (i % 4)])
    data = buffer.getvalue().encode("utf-8")
    assert len(data) > 1_000_000
    counter = CsvRecordCounter()
    counter.feed(data)
    assert counter.finish() == 40_000 == count_records(io.BytesIO(data))
    assert counter.header == b'"Id","Text"\n'
