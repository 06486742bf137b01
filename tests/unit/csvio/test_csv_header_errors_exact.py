"""Exact texts and locations of problems in the header line, and of the scanner's input checks.

Mutation testing of csv-split (second pass) found these asserted only by their problem name: the header
location (record 0, line 1), the byte offset and the whole sentence a user reads.
"""

from __future__ import annotations

import io

import pytest

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv


def _error(data: bytes, **kwargs) -> CsvValidationError:
    with pytest.raises(CsvValidationError) as caught:
        inspect_csv(io.BytesIO(data), source_name="h.csv", **kwargs)
    return caught.value


def test_a_crlf_header_when_lf_is_declared() -> None:
    error = _error(b"a,b\r\n1,2\r\n")
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "wrong_line_ending", 0, 1, 3
    )
    assert str(error) == (
        "h.csv (header, line 1, byte offset 3): the header line ends with CRLF but line_ending is LF; "
        "declare line_ending='CRLF' or convert the file to LF"
    )


def test_a_header_whose_quote_never_closes() -> None:
    error = _error(b'a,"b\n1,2\n')
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "unterminated_quote", 0, 1, 2
    )
    assert str(error) == (
        "h.csv (header, line 1, byte offset 2): unbalanced quotes: quoted field 2, opened on line 1, "
        "is never closed before the end of the file"
    )


def test_a_quote_that_never_closes_in_a_record_has_its_offset() -> None:
    error = _error(b'a,b\n1,"2\n3,4\n')
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "unterminated_quote", 1, 2, 6
    )


def test_a_bare_cr_in_the_header() -> None:
    error = _error(b"a\rb,c\n1,2\n")
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == ("bare_cr", 0, 1, 1)


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^chunk_size must be positive$"):
        inspect_csv(io.BytesIO(b"a\n1\n"), chunk_size=0)


def test_a_stream_that_reads_bytearrays_is_read_like_bytes() -> None:
    class Chunks(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytearray:  # type: ignore[override]
            return bytearray(self._data.read(size))

    summary = inspect_csv(Chunks("Name\né\n漢\n".encode()), chunk_size=3)
    assert (summary.record_count, summary.columns) == (2, ("Name",))


def test_the_sources_that_cannot_be_read_are_named(tmp_path) -> None:
    with pytest.raises(CsvValidationError) as missing:
        inspect_csv(str(tmp_path / "nope.csv"))
    assert (missing.value.problem, missing.value.detail) == ("missing_file", "the file does not exist")
    with pytest.raises(CsvValidationError) as folder:
        inspect_csv(str(tmp_path))
    assert (folder.value.problem, folder.value.detail) == (
        "missing_file", "the path is a directory, not a file"
    )
    with pytest.raises(CsvValidationError) as empty:
        inspect_csv(io.BytesIO(b""))
    assert (empty.value.problem, empty.value.detail) == ("empty_file", "the file is empty")
    assert str(empty.value).startswith("<stream>")


def test_a_path_like_object_without_open_is_opened_by_its_path(tmp_path) -> None:
    class Where:
        def __init__(self, path) -> None:
            self._path = path

        def __fspath__(self) -> str:
            return str(self._path)

    (tmp_path / "ok.csv").write_bytes(b"a\n1\n2\n")
    assert inspect_csv(Where(tmp_path / "ok.csv")).record_count == 2  # type: ignore[arg-type]


def test_a_bare_quote_in_the_header() -> None:
    error = _error(b'a"b,c\n1,2\n')
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "bare_quote", 0, 1, 1
    )
    assert str(error) == (
        'h.csv (header, line 1, byte offset 1): a double quote inside unquoted field 1; enclose the value in '
        'double quotes and double the quotes inside it ("")'
    )
