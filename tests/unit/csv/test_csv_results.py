"""Result-file tools on hand-written Salesforce-style result files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.csvio.failed_rows import (
    DEFAULT_RETRYABLE_ERROR_CODES,
    FailedRow,
    RetryFileBuilder,
    copy_unprocessed,
    count_records,
    error_code,
    iter_failed_rows,
    summarize_errors,
    write_retry_file,
)
from airflow_provider_sfbulk.csvio.split import CsvValidationError, inspect_csv, split_csv
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
    b'"","DUPLICATE_VALUE:duplicate value found: Ext__c duplicates value on record with id: 001:--","6","Dup",""\r\n'
)

UNPROCESSED_1 = b'Name,Description,NumberOfEmployees\n"Initech","",\n"Umbrella","x;y","9"\n'
UNPROCESSED_2 = b'Name,Description,NumberOfEmployees\r\n"Hooli","quote "" inside","10"\r\n'


def test_error_code_is_the_text_before_the_first_colon() -> None:
    assert error_code("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record: --") == (
        "UNABLE_TO_LOCK_ROW"
    )
    assert error_code(" INVALID_FIELD :x:y") == "INVALID_FIELD"
    assert error_code("no colon at all") == "no colon at all"
    assert error_code("") == ""


def test_count_records_reads_quoted_newlines_and_both_line_endings() -> None:
    assert count_records(io.BytesIO(FAILED_1)) == 4
    assert count_records(io.BytesIO(FAILED_2)) == 2
    assert count_records(io.BytesIO(b"")) == 0
    assert count_records(io.BytesIO(b'"sf__Id","sf__Created",Name\n')) == 0


def test_iter_failed_rows_streams_rows_with_codes() -> None:
    rows = list(iter_failed_rows(io.BytesIO(FAILED_1)))
    assert [r.error_code for r in rows] == [
        "REQUIRED_FIELD_MISSING",
        "UNABLE_TO_LOCK_ROW",
        "UNABLE_TO_LOCK_ROW",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    ]
    second = rows[1]
    assert isinstance(second, FailedRow)
    code, row = second
    assert code == "UNABLE_TO_LOCK_ROW"
    assert row["sf__Id"] == "001xx000003DHP1AAO"
    assert row["Name"] == "Acme, Inc."
    assert row["Description"] == 'He said "hi"\nand left'
    assert list(row) == ["sf__Id", "sf__Error", "Name", "Description", "NumberOfEmployees"]


def test_iter_failed_rows_is_lazy_and_leaves_the_stream_open() -> None:
    stream = io.BytesIO(FAILED_1)
    rows = iter_failed_rows(stream)
    assert next(rows).error_code == "REQUIRED_FIELD_MISSING"
    rows.close()
    assert not stream.closed


def test_iter_failed_rows_on_empty_body_and_wrong_file() -> None:
    assert list(iter_failed_rows(io.BytesIO(b""))) == []
    with pytest.raises(CsvValidationError, match="not a failedResults file"):
        list(iter_failed_rows(io.BytesIO(UNPROCESSED_1)))


def test_semicolon_result_file() -> None:
    data = b'"sf__Id";"sf__Error";Name\n"";"INVALID_FIELD:bad;field:--";"a;b"\n'
    assert [(r.error_code, r.row["Name"]) for r in iter_failed_rows(io.BytesIO(data), "SEMICOLON")] == [
        ("INVALID_FIELD", "a;b")
    ]
    assert count_records(io.BytesIO(data), "SEMICOLON") == 1


def test_summarize_errors() -> None:
    assert summarize_errors(io.BytesIO(FAILED_1)) == {
        "UNABLE_TO_LOCK_ROW": 2,
        "REQUIRED_FIELD_MISSING": 1,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1,
    }
    assert summarize_errors(io.BytesIO(b"")) == {}


def test_malformed_result_file_raises() -> None:
    with pytest.raises(CsvValidationError, match="cannot read the result file"):
        summarize_errors(io.BytesIO(b'"sf__Id","sf__Error",A\n"","X:y" junk,"1"\n'))
    with pytest.raises(CsvValidationError, match="2 field"):
        summarize_errors(io.BytesIO(b'"sf__Id","sf__Error",A\n"","X:y"\n'))


def _read(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter, strict=True))


def test_write_retry_file_keeps_only_retryable_rows_in_original_column_order() -> None:
    out = io.BytesIO()
    written, skipped = write_retry_file([io.BytesIO(FAILED_1), io.BytesIO(FAILED_2)], out)
    assert written == 3
    assert skipped == {
        "REQUIRED_FIELD_MISSING": 1,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1,
        "DUPLICATE_VALUE": 1,
    }
    assert (
        out.getvalue()
        == (
            'Name,Description,NumberOfEmployees\nAcme,"He said ""hi""\nand left",30\n'.replace(
                "Acme", '"Acme, Inc."'
            )
            + "Zürich AG,,1\n"
            + 'Globex,"a\r\nb",5\n'
        ).encode()
    )
    assert _read(out.getvalue())[1] == ["Acme, Inc.", 'He said "hi"\nand left', "30"]


def test_retry_file_passes_the_splitter(tmp_path: Path) -> None:
    out = io.BytesIO()
    write_retry_file(
        [io.BytesIO(FAILED_1), io.BytesIO(FAILED_2)],
        out,
        retryable_codes=DEFAULT_RETRYABLE_ERROR_CODES | {"DUPLICATE_VALUE", "REQUIRED_FIELD_MISSING"},
        delimiter="SEMICOLON",
        line_ending="CRLF",
        unprocessed_streams=[io.BytesIO(UNPROCESSED_1)],
        input_delimiter="COMMA",
    )
    data = out.getvalue()
    with split_csv(
        io.BytesIO(data), column_delimiter="SEMICOLON", line_ending="CRLF", spool_dir=tmp_path
    ) as split:
        assert split.record_count == 5 + 2
        assert split.columns == ("Name", "Description", "NumberOfEmployees")
    rows = _read(data, ";")
    assert ["Umbrella", "x;y", "9"] in rows
    assert ["", "plain", "7"] in rows  # empty values stay empty


def test_retry_file_is_empty_when_nothing_is_retryable() -> None:
    out = io.BytesIO()
    assert write_retry_file([io.BytesIO(FAILED_1)], out, retryable_codes={"NOPE"}) == (
        0,
        {"REQUIRED_FIELD_MISSING": 1, "UNABLE_TO_LOCK_ROW": 2, "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1},
    )
    assert out.getvalue() == b""


def test_copy_unprocessed_writes_one_header() -> None:
    out = io.BytesIO()
    assert copy_unprocessed([io.BytesIO(UNPROCESSED_1), io.BytesIO(b""), io.BytesIO(UNPROCESSED_2)], out) == 3
    assert out.getvalue() == (
        b'Name,Description,NumberOfEmployees\nInitech,,\nUmbrella,x;y,9\nHooli,"quote "" inside",10\n'
    )


def test_single_column_empty_value_is_written_quoted() -> None:
    out = io.BytesIO()
    assert copy_unprocessed([io.BytesIO(b'Id\n""\n"001"\n')], out) == 2
    assert out.getvalue() == b'Id\n""\n001\n'


def test_result_files_in_the_job_delimiter() -> None:
    failed = b'"sf__Id"|"sf__Error"|Name|Note\n""|"UNABLE_TO_LOCK_ROW:x:--"|"a|b"|"c"\n'
    out = io.BytesIO()
    assert write_retry_file([io.BytesIO(failed)], out, delimiter="PIPE") == (1, {})
    assert out.getvalue() == b'Name|Note\n"a|b"|c\n'


def test_files_with_different_columns_are_refused() -> None:
    builder = RetryFileBuilder(io.BytesIO())
    builder.add_unprocessed(io.BytesIO(UNPROCESSED_1))
    with pytest.raises(CsvValidationError, match="differ"):
        builder.add_unprocessed(io.BytesIO(b"Name,Phone\na,b\n"))


def test_builder_streams_large_inputs_in_bounded_writes() -> None:
    class Recording(io.BytesIO):
        sizes: list[int]

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            self.sizes.append(len(data))
            return super().write(data)

    rows = "".join(f'"","UNABLE_TO_LOCK_ROW:x:--","n{i}"\n' for i in range(5000))
    failed = ('"sf__Id","sf__Error",Name\n' + rows).encode()
    out = Recording()
    out.sizes = []
    written, skipped = write_retry_file([io.BytesIO(failed)], out)
    assert (written, skipped) == (5000, {})
    assert len(out.sizes) >= 5
    assert max(out.sizes) < 20_000
    assert count_records(io.BytesIO(out.getvalue())) == 5000


VALUES = st.lists(
    st.sampled_from(["a", "Z", " ", ",", ";", "|", "\t", '"', "\r", "\n", "\r\n", "é", "😀", ":"]), max_size=5
).map("".join)


@settings(max_examples=150, deadline=None)
@given(
    delimiter=st.sampled_from(sorted(COLUMN_DELIMITERS)),
    line_ending=st.sampled_from(["LF", "CRLF"]),
    width=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_retry_file_round_trips_random_values(delimiter: str, line_ending: str, width: int, data) -> None:
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
    out = io.BytesIO()
    written, skipped = write_retry_file(
        [io.BytesIO(text.getvalue().encode())], out, delimiter=delimiter, line_ending=line_ending
    )
    expected = [values for code, values in rows if code == "UNABLE_TO_LOCK_ROW"]
    assert written == len(expected)
    assert sum(skipped.values()) == len(rows) - written
    if not expected:
        assert out.getvalue() == b""
        return
    assert _read(out.getvalue(), char) == [names, *expected]
    summary = inspect_csv(io.BytesIO(out.getvalue()), column_delimiter=delimiter, line_ending=line_ending)
    assert summary.record_count == len(expected)
