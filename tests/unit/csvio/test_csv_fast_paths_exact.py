"""Invalid records that look almost valid to the scanner's fast paths are still refused, exactly.

The scanner takes whole runs of records with plain splitting and bulk regexes, and checks a record on its
own only when those do not recognise it. Mutation testing on the merged scanner showed fast-path changes
that accept invalid records surviving every test: a bare CR in a quote-free CRLF run, an empty line
between records that hold a space, text after a closing quote, a quote inside an unquoted field, and an
invalid UTF-8 byte after a truncated sequence in the last record. Each case below goes through the fast
path first and must come out with the careful path's error.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import split_csv

_BARE_QUOTE = (
    'a double quote inside unquoted field 1; enclose the value in double quotes and double the quotes '
    'inside it ("")'
)
_AFTER_QUOTE = (
    "'X' follows the closing quote of field 1; a quoted value must be followed by the delimiter or the "
    "end of the line (spaces around quotes are not allowed)"
)


def _errors(data: bytes, tmp_path: Path, **kwargs) -> list[CsvValidationError]:
    """The error of ``inspect_csv`` and of ``split_csv`` (both must refuse the file the same way)."""
    errors = []
    with pytest.raises(CsvValidationError) as caught:
        inspect_csv(io.BytesIO(data), source_name="s.csv", **kwargs)
    errors.append(caught.value)
    with pytest.raises(CsvValidationError) as caught:
        split_csv(io.BytesIO(data), source_name="s.csv", spool_dir=tmp_path, **kwargs)
    errors.append(caught.value)
    assert list(tmp_path.iterdir()) == []
    return errors


def _where(error: CsvValidationError) -> tuple[str, int, int, int | None]:
    return error.problem, error.record_number, error.line_number, error.byte_offset


@pytest.mark.parametrize("chunk_size", [1 << 20, 3])
def test_a_bare_cr_in_a_quote_free_crlf_run_is_refused(tmp_path: Path, chunk_size: int) -> None:
    # The run "a\rb\n" has no quote and ends with a line feed, so plain splitting looks at it first.
    for error in _errors(b"h\r\na\rb\n", tmp_path, line_ending="CRLF", chunk_size=chunk_size):
        assert _where(error) == ("bare_cr", 1, 2, 4)
        assert error.detail == (
            "a carriage return not followed by a line feed in unquoted field 1; quote the value"
        )


def test_an_empty_line_between_records_with_spaces_is_refused(tmp_path: Path) -> None:
    # Split on any whitespace, "a c", "" and "b" would be three values for three CRLFs: the split must be
    # on CRLF only, which finds the empty line.
    for error in _errors(b"h\r\na c\r\n\r\nb\r\n", tmp_path, line_ending="CRLF"):
        assert _where(error) == ("empty_line", 2, 3, None)
        assert error.detail == 'the record is an empty line; remove it (an empty single value is written "")'


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b'h\n"a"XX\n', 5),  # one column: nothing but the line ending may follow the field
        (b'h1,h2\n"a"XXXX,b\n', 9),  # two columns: nothing but the delimiter may follow it
    ],
)
def test_text_after_a_closing_quote_is_refused_in_a_record(tmp_path: Path, data: bytes, offset: int) -> None:
    for error in _errors(data, tmp_path):
        assert _where(error) == ("text_after_quote", 1, 2, offset)
        assert error.detail == _AFTER_QUOTE


def test_a_quote_inside_an_unquoted_field_is_refused_in_a_record(tmp_path: Path) -> None:
    for error in _errors(b'h1,h2\nXX"y",1\n', tmp_path):
        assert _where(error) == ("bare_quote", 1, 2, 8)
        assert error.detail == _BARE_QUOTE


def test_an_invalid_byte_after_a_split_sequence_keeps_its_reason_at_the_end_of_the_file(
    tmp_path: Path,
) -> None:
    # The first read ends inside the sequence (0xc3); the next byte "(" cannot continue it. The last
    # record has no line ending, so the scanner reads to the end of the file before it checks the record:
    # the end of the file must not replace the first problem by a "truncated" one at another offset.
    for error in _errors(b"h\nab\xc3(", tmp_path, chunk_size=5):
        assert _where(error) == ("invalid_utf8", 1, 2, 4)
        assert error.detail == (
            "the data is not valid UTF-8 (invalid continuation byte); Bulk API 2.0 reads UTF-8 only"
        )
