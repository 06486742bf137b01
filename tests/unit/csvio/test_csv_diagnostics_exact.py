"""Exact texts and locations of the CSV checks' errors (mutation testing found them asserted only in part).

A user fixes a file from these messages: the byte named, the header location (record 0, line 1) and the
sizes must be the right ones, not only the problem's name.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import iter_csv_parts, split_csv

_AFTER_QUOTE = (
    " follows the closing quote of field 1; a quoted value must be followed by the delimiter or the end "
    "of the line (spaces around quotes are not allowed)"
)


def _error(data: bytes, **kwargs) -> CsvValidationError:
    with pytest.raises(CsvValidationError) as caught:
        inspect_csv(io.BytesIO(data), source_name="load.csv", **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("after", "named"),
    [
        (b"x", "'x'"),
        (b" ", "' '"),  # 0x20, the first printable byte
        (b"~", "'~'"),  # 0x7e, the last one
        (b"\x7f", "byte 0x7f"),
        (b"\x1f", "byte 0x1f"),
        (b"\xc3\xa9", "byte 0xc3"),
    ],
)
def test_the_byte_after_a_closing_quote_is_named_exactly(after: bytes, named: str) -> None:
    error = _error(b'"a"' + after + b",b\n1,2\n")
    assert error.problem == "text_after_quote"
    assert error.detail == named + _AFTER_QUOTE
    assert (error.record_number, error.line_number, error.byte_offset) == (0, 1, 3)
    assert str(error) == f"load.csv (header, line 1, byte offset 3): {named}{_AFTER_QUOTE}"


def test_an_error_in_a_record_has_no_header_location() -> None:
    error = _error(b'a,b\n"1"x,2\n')
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "text_after_quote",
        1,
        2,
        7,
    )


def test_header_only_file_detail() -> None:
    error = _error(b"a,b\n")
    assert error.problem == "header_only"
    assert error.detail == "the file has a header but no records: there is nothing to load"
    assert (error.record_number, error.line_number, error.byte_offset) == (None, None, None)


def test_a_header_too_large_is_reported_as_more_than_the_limit() -> None:
    error = _error(b"a" * 40 + b",b\n1,2\n", max_record_bytes=16, chunk_size=8)
    assert error.problem == "record_too_large"
    assert error.detail == (
        "the record is more than 16 bytes, more than fits in one upload next to the header "
        "(at most 16 bytes)"
    )
    assert (error.record_number, error.line_number) == (0, 1)


def test_a_whole_record_too_large_is_reported_with_its_size(tmp_path: Path) -> None:
    # max_bytes 50 less the 5-byte header "Name\n": 45 bytes are left for records.
    with pytest.raises(CsvValidationError) as caught:
        split_csv(io.BytesIO(b"Name\nshort\n" + b"x" * 1000 + b"\n"), max_bytes=50, spool_dir=tmp_path)
    error = caught.value
    assert error.problem == "record_too_large"
    assert error.detail == (
        "the record is 1,001 bytes, more than fits in one upload next to the header (at most 45 bytes)"
    )
    assert (error.record_number, error.line_number) == (2, 3)


def test_spool_files_are_named_by_part_in_the_spool_dir(tmp_path: Path) -> None:
    data = b"Name\n" + b"".join(b"r%d\n" % i for i in range(6))
    with split_csv(io.BytesIO(data), max_bytes=5 + 6, spool_dir=tmp_path) as split:
        assert [part.record_count for part in split.parts] == [2, 2, 2]
        for index, part in enumerate(split.parts):
            assert part.path.parent == tmp_path
            assert part.path.name.startswith(f"sfbulk-part-{index:05d}-")
            assert part.path.suffix == ".csv"


def test_iter_csv_parts_spools_to_the_system_temp_folder_by_default() -> None:
    parts = list(iter_csv_parts(io.BytesIO(b"Name\na\n")))
    try:
        assert [part.record_count for part in parts] == [1]
        assert parts[0].path.parent == Path(tempfile.gettempdir())
    finally:
        for part in parts:
            part.path.unlink()


def test_limits_must_be_positive_texts(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        split_csv(io.BytesIO(b"a\n1\n"), max_bytes=0, spool_dir=tmp_path)
    assert str(caught.value) == "max_bytes must be positive"
    with pytest.raises(ValueError) as caught:
        split_csv(io.BytesIO(b"a\n1\n"), max_records=0, spool_dir=tmp_path)
    assert str(caught.value) == "max_records must be positive (or None for no limit)"


def test_an_unclosed_quote_in_a_record_is_reported_at_its_record_and_line() -> None:
    error = _error(b'a,b\n1,2\n"' + b"x" * 100 + b",3\n", max_record_bytes=50, chunk_size=16)
    assert (error.problem, error.record_number, error.line_number) == ("record_too_large", 2, 3)
    assert error.detail == (
        "the record is more than 50 bytes, more than fits in one upload next to the header (at most 50 bytes)"
        "; a quoted field in it may be missing its closing quote (unbalanced quotes)"
    )


def test_a_record_with_the_wrong_line_ending_is_named_a_record() -> None:
    error = _error(b"a,b\r\n1,2\r\n3,4\n5,6\r\n", line_ending="CRLF")
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "wrong_line_ending", 2, 3, 13,
    )
    assert error.detail == (
        "the record ends with LF but line_ending is CRLF; declare line_ending='LF' "
        "or convert the file to CRLF"
    )
