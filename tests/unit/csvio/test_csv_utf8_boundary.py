"""An invalid UTF-8 byte right at a boundary is reported in the record that holds it.

Mutation testing found the boundary untested: a byte just after the header is in record 1, not in the
header (the check compares the byte's offset with the end of what was read so far).
"""

from __future__ import annotations

import io

import pytest

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv


@pytest.mark.parametrize(("bom", "offset"), [(b"", 4), (b"\xef\xbb\xbf", 7)])
def test_an_invalid_byte_just_after_the_header_is_in_record_1(bom: bytes, offset: int) -> None:
    with pytest.raises(CsvValidationError) as caught:
        inspect_csv(io.BytesIO(bom + b"a,b\n\xff,2\n"), source_name="s.csv")
    error = caught.value
    assert (error.problem, error.record_number, error.line_number, error.byte_offset) == (
        "invalid_utf8", 1, 2, offset
    )
    assert str(error) == (
        f"s.csv (record 1, line 2, byte offset {offset}): the data is not valid UTF-8 (invalid start byte); "
        "Bulk API 2.0 reads UTF-8 only"
    )
