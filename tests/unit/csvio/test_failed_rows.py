"""The failed-rows writer on hand-written Salesforce-style failedResults files, and on random ones."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.csvio.failed_rows import (
    DEFAULT_RETRYABLE_ERROR_CODES,
    RESULT_COLUMNS,
    error_code,
    write_failed_rows,
)
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import split_csv
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS

# Shaped like Salesforce's examples: sf__ names and every value quoted, uploaded names as uploaded.
FAILED_1 = (
    '"sf__Id","sf__Error",Name,Description,NumberOfEmployees\n'
    '"","REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --","","plain","7"\n'
    '"001xx000003DHP1AAO","UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --",'
    '"Acme, Inc.","He said ""hi""\nand left","30"\n'
    '"","UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --","Zürich AG","","1"\n'
    '"","FIELD_CUSTOM_VALIDATION_EXCEPTION:Trigger failed:\nSystem.DmlException at line 3:--","Bad","x","2"\n'
).encode()

# A second job's file: CRLF, columns in another order.
FAILED_2 = (
    b'"sf__Id","sf__Error",NumberOfEmployees,Name,Description\r\n'
    b'"","API_TEMPORARILY_UNAVAILABLE:try later:--","5","Globex","a\r\nb"\r\n'
    b'"","DUPLICATE_VALUE:duplicate value found: Ext__c duplicates value on record with id: 001:--",'
    b'"6","Dup",""\r\n'
)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter, strict=True))


def test_error_code_is_the_text_before_the_first_colon() -> None:
    assert error_code("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --") == (
        "UNABLE_TO_LOCK_ROW"
    )
    assert error_code(" INVALID_FIELD :x:y") == "INVALID_FIELD"
    assert error_code("no colon at all") == "no colon at all"
    assert error_code("") == ""


def test_retryable_rows_keep_the_original_column_order(tmp_path: Path) -> None:
    kept, retry = io.BytesIO(), io.BytesIO()
    split = write_failed_rows(
        [(_file(tmp_path, "1.csv", FAILED_1), DEFAULT_RETRYABLE_ERROR_CODES),
         (_file(tmp_path, "2.csv", FAILED_2), DEFAULT_RETRYABLE_ERROR_CODES)],
        kept_out=kept,
        retry_out=retry,
    )
    assert (split.retried, split.kept) == (3, 3)
    assert dict(split.retried_codes) == {"UNABLE_TO_LOCK_ROW": 2, "API_TEMPORARILY_UNAVAILABLE": 1}
    assert dict(split.kept_codes) == {
        "REQUIRED_FIELD_MISSING": 1,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1,
        "DUPLICATE_VALUE": 1,
    }
    assert split.columns == ("Name", "Description", "NumberOfEmployees")
    assert retry.getvalue() == (
        'Name,Description,NumberOfEmployees\n"Acme, Inc.","He said ""hi""\nand left",30\n'
        "Zürich AG,,1\n"
        'Globex,"a\r\nb",5\n'
    ).encode()
    kept_rows = _read(kept.getvalue())
    assert kept_rows[0] == ["sf__Id", "sf__Error", "Name", "Description", "NumberOfEmployees"]
    assert kept_rows[-1] == ["", kept_rows[-1][1], "Dup", "", "6"]  # mapped by column name


def test_retry_output_passes_the_splitter(tmp_path: Path) -> None:
    semicolon = FAILED_1.replace(b",", b";").replace(b"Acme; Inc.", b"Acme, Inc.")
    retry = io.BytesIO()
    write_failed_rows(
        [(_file(tmp_path, "1.csv", semicolon), DEFAULT_RETRYABLE_ERROR_CODES | {"REQUIRED_FIELD_MISSING"})],
        kept_out=None,
        retry_out=retry,
        delimiter="SEMICOLON",
        line_ending="CRLF",
    )
    data = retry.getvalue()
    with split_csv(
        io.BytesIO(data), column_delimiter="SEMICOLON", line_ending="CRLF", spool_dir=tmp_path
    ) as split:
        assert split.record_count == 3
        assert split.columns == ("Name", "Description", "NumberOfEmployees")
    assert ["", "plain", "7"] in _read(data, ";")  # empty values stay empty


def test_outputs_stay_empty_without_rows(tmp_path: Path) -> None:
    kept, retry = io.BytesIO(), io.BytesIO()
    split = write_failed_rows(
        [(_file(tmp_path, "1.csv", FAILED_1), {"NOPE"}), (_file(tmp_path, "empty.csv", b""), {"NOPE"})],
        kept_out=kept,
        retry_out=retry,
    )
    assert (split.retried, split.kept) == (0, 4)
    assert retry.getvalue() == b""  # not even a header
    assert len(_read(kept.getvalue())) == 1 + 4


def test_single_column_empty_value_is_written_quoted(tmp_path: Path) -> None:
    retry = io.BytesIO()
    write_failed_rows(
        [(_file(tmp_path, "1.csv", b'"sf__Id","sf__Error",Id\n"","X:y","001"\n"","X:z",""\n'), {"X"})],
        kept_out=None,
        retry_out=retry,
    )
    assert retry.getvalue() == b'Id\n001\n""\n'


def test_result_files_in_the_job_delimiter(tmp_path: Path) -> None:
    failed = b'"sf__Id"|"sf__Error"|Name|Note\n""|"UNABLE_TO_LOCK_ROW:x:--"|"a|b"|"c"\n'
    retry = io.BytesIO()
    split = write_failed_rows(
        [(_file(tmp_path, "1.csv", failed), DEFAULT_RETRYABLE_ERROR_CODES)],
        kept_out=None, retry_out=retry, delimiter="PIPE",
    )
    assert split.retried == 1
    assert retry.getvalue() == b'Name|Note\n"a|b"|c\n'


def test_files_with_different_columns_or_no_error_column_are_refused(tmp_path: Path) -> None:
    other = b'"sf__Id","sf__Error",Name,Phone\n"","X:y","a","b"\n'
    with pytest.raises(ValueError, match="differ"):
        write_failed_rows(
            [(_file(tmp_path, "1.csv", FAILED_1), {"X"}), (_file(tmp_path, "2.csv", other), {"X"})],
            kept_out=io.BytesIO(), retry_out=io.BytesIO(),
        )
    with pytest.raises(ValueError, match="not a failedResults file"):
        write_failed_rows([(_file(tmp_path, "3.csv", b"Name\na\n"), {"X"})], kept_out=None, retry_out=None)


def test_large_inputs_are_written_in_bounded_writes(tmp_path: Path) -> None:
    class Recording(io.BytesIO):
        sizes: list[int]

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            self.sizes.append(len(data))
            return super().write(data)

    rows = "".join(f'"","UNABLE_TO_LOCK_ROW:x:--","n{i}"\n' for i in range(5000))
    failed = _file(tmp_path, "big.csv", ('"sf__Id","sf__Error",Name\n' + rows).encode())
    out = Recording()
    out.sizes = []
    split = write_failed_rows([(failed, DEFAULT_RETRYABLE_ERROR_CODES)], kept_out=None, retry_out=out)
    assert split.retried == 5000
    assert len(out.sizes) >= 5
    assert max(out.sizes) < 20_000
    assert inspect_csv(io.BytesIO(out.getvalue())).record_count == 5000


#: Quotes, line breaks (a lone CR too), every delimiter, multibyte characters and colons.
VALUES = st.lists(
    st.sampled_from(
        ["a", "Z", " ", ",", ";", "|", "\t", "^", "`", '"', "\r", "\n", "\r\n", "é", "漢", "😀", ":"]
    ),
    max_size=5,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    delimiter=st.sampled_from(sorted(COLUMN_DELIMITERS)),
    line_ending=st.sampled_from(["LF", "CRLF"]),
    width=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_random_rows_round_trip_exactly(
    delimiter: str, line_ending: str, width: int, data: st.DataObject, tmp_path: Path
) -> None:
    """Whatever the values (empty ones included), every output reads back as exactly the rows that went
    in, in order; the retry output and the fix-and-reload output (the kept rows in the uploaded columns)
    are valid uploads for a new job in the same dialect."""
    char = COLUMN_DELIMITERS[delimiter]
    terminator = LINE_ENDINGS[line_ending]
    names = [f"F{i}__c" for i in range(width)]
    rows = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["UNABLE_TO_LOCK_ROW", "INVALID_FIELD"]),
                st.lists(VALUES, min_size=width, max_size=width),
            ),
            max_size=12,
        )
    )
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=char, quoting=csv.QUOTE_ALL, lineterminator=terminator)
    writer.writerow(["sf__Id", "sf__Error", *names])
    for code, values in rows:
        writer.writerow(["", f"{code}:message: with colons:--", *values])
    source = _file(tmp_path, "failed.csv", text.getvalue().encode())
    kept, retry, reload = io.BytesIO(), io.BytesIO(), io.BytesIO()
    split = write_failed_rows(
        [(source, {"UNABLE_TO_LOCK_ROW"})], kept_out=kept, retry_out=retry, kept_data_out=reload,
        delimiter=delimiter, line_ending=line_ending,
    )
    to_reload = [values for code, values in rows if code != "UNABLE_TO_LOCK_ROW"]
    retried = [values for code, values in rows if code == "UNABLE_TO_LOCK_ROW"]
    final = [
        ["", f"{code}:message: with colons:--", *values]
        for code, values in rows
        if code != "UNABLE_TO_LOCK_ROW"
    ]
    assert (split.retried, split.kept) == (len(retried), len(final))
    outputs = (
        (retry, names, retried), (kept, ["sf__Id", "sf__Error", *names], final), (reload, names, to_reload)
    )
    for out, header, expected in outputs:
        if not expected:
            assert out.getvalue() == b""
            continue
        assert _read(out.getvalue(), char) == [header, *expected]
        assert out.getvalue().count(b"\r\n" if line_ending == "CRLF" else b"\n") >= len(expected) + 1
    assert not set(names) & RESULT_COLUMNS
    for out, expected in ((retry, retried), (reload, to_reload)):
        if expected:
            summary = inspect_csv(
                io.BytesIO(out.getvalue()), column_delimiter=delimiter, line_ending=line_ending
            )
            assert summary.record_count == len(expected)
