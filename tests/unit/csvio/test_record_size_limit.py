"""``inspect_csv`` and ``split_csv`` refuse exactly the same records as too large.

A record counts with its line terminator. ``inspect_csv(max_record_bytes=L)`` accepts a record of ``L``
bytes and refuses one of ``L + 1``; ``split_csv(max_bytes=len(header) + L)`` leaves ``L`` bytes for
records and draws the line at the same place, with the same error (before, the scanner's fast paths did
not measure records, so ``inspect_csv`` accepted records that ``split_csv`` refused).
"""

from __future__ import annotations

import io

import pytest

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import split_csv

HEADER = b"Name,Note\n"

# The big record is the second one, on line 3 (or 4 after a record with a quoted line break).
BIG = {
    "plain": (b"a,b\n", b"x" * 30 + b",y\n", 3),
    "quoted": (b'"a",b\n', b'"' + b"x" * 28 + b'",y\n', 3),
    "quoted-line-break": (b'"a\nb",c\n', b'"' + b"x" * 14 + b"\n" + b"x" * 13 + b'",y\n', 4),
}


def _data(shape: str) -> tuple[bytes, int, int]:
    first, big, line = BIG[shape]
    return HEADER + first + big + b"c,d\n", len(big), line


def _inspect(data: bytes, limit: int, chunk_size: int) -> None:
    inspect_csv(io.BytesIO(data), max_record_bytes=limit, chunk_size=chunk_size, source_name="s.csv")


def _split(data: bytes, limit: int, chunk_size: int, tmp_path) -> None:
    with split_csv(
        io.BytesIO(data), len(HEADER) + limit, chunk_size=chunk_size, spool_dir=tmp_path, source_name="s.csv"
    ):
        pass


@pytest.mark.parametrize("chunk_size", [1 << 20, 7])
@pytest.mark.parametrize("shape", sorted(BIG))
def test_a_record_of_exactly_the_limit_passes_one_byte_more_fails_in_both(shape, chunk_size, tmp_path):
    data, size, line = _data(shape)
    assert size == 33
    _inspect(data, size, chunk_size)
    _split(data, size, chunk_size, tmp_path)
    with pytest.raises(CsvValidationError) as inspecting:
        _inspect(data, size - 1, chunk_size)
    with pytest.raises(CsvValidationError) as splitting:
        _split(data, size - 1, chunk_size, tmp_path)
    inspected, split = inspecting.value, splitting.value
    where = (inspected.problem, inspected.record_number, inspected.line_number)
    assert where == ("record_too_large", 2, line)
    assert inspected.detail == (
        "the record is 33 bytes, more than fits in one upload next to the header (at most 32 bytes)"
    )
    assert str(split) == str(inspected)
    assert list(tmp_path.iterdir()) == []  # no part left behind


def test_crlf_counts_both_terminator_bytes(tmp_path):
    header = b"Name,Note\r\n"
    data = header + b"a,b\r\n" + b"x" * 30 + b",y\r\n"
    inspect_csv(io.BytesIO(data), line_ending="CRLF", max_record_bytes=34)
    split_csv(io.BytesIO(data), len(header) + 34, line_ending="CRLF", spool_dir=tmp_path).cleanup()
    with pytest.raises(CsvValidationError) as inspecting:
        inspect_csv(io.BytesIO(data), line_ending="CRLF", max_record_bytes=33)
    with pytest.raises(CsvValidationError) as splitting:
        split_csv(io.BytesIO(data), len(header) + 33, line_ending="CRLF", spool_dir=tmp_path)
    assert (inspecting.value.record_number, inspecting.value.line_number) == (2, 3)
    assert inspecting.value.detail.startswith("the record is 34 bytes,")
    assert str(splitting.value) == str(inspecting.value)
