"""The failed-rows writer, exact outputs the random tests do not pin (mutation testing found these gaps).

The kept rows in uploaded columns (``kept_data_out``), ``unprocessedrecords`` files, a byte order mark,
malformed files, path arguments, kept-code counts and the bound on each write.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from airflow_provider_sfbulk.csvio.failed_rows import write_failed_rows

FAILED = (
    b'"sf__Id","sf__Error",Name,Phone\n'
    b'"","DUPLICATE_VALUE:dup:--","a","1"\n'
    b'"","UNABLE_TO_LOCK_ROW:lock:--","b","2"\n'
    b'"","DUPLICATE_VALUE:dup again:--","c","3"\n'
)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_kept_rows_in_the_uploaded_columns_and_kept_codes_counted(tmp_path: Path) -> None:
    kept, kept_data, retry = io.BytesIO(), io.BytesIO(), io.BytesIO()
    split = write_failed_rows(
        [(_file(tmp_path, "f.csv", FAILED), {"UNABLE_TO_LOCK_ROW"})],
        kept_out=kept,
        retry_out=retry,
        kept_data_out=kept_data,
        line_ending="CRLF",
    )
    assert (split.kept, split.retried, split.resubmitted) == (2, 1, 0)
    assert split.kept_codes == Counter({"DUPLICATE_VALUE": 2})
    assert split.retried_codes == Counter({"UNABLE_TO_LOCK_ROW": 1})
    assert kept_data.getvalue() == b"Name,Phone\r\na,1\r\nc,3\r\n"
    assert retry.getvalue() == b"Name,Phone\r\nb,2\r\n"
    assert kept.getvalue() == (
        b"sf__Id,sf__Error,Name,Phone\r\n,DUPLICATE_VALUE:dup:--,a,1\r\n,DUPLICATE_VALUE:dup again:--,c,3\r\n"
    )


def test_unprocessed_rows_follow_the_failed_ones_mapped_by_column_name(tmp_path: Path) -> None:
    retry = io.BytesIO()
    unprocessed = _file(tmp_path, "u.csv", b"Phone;Name\n9;x\n8;y\n")
    failed = FAILED.replace(b",", b";")
    split = write_failed_rows(
        [(_file(tmp_path, "f.csv", failed), {"UNABLE_TO_LOCK_ROW"})],
        kept_out=None,
        retry_out=retry,
        delimiter="SEMICOLON",
        unprocessed_files=[str(unprocessed)],  # a path as text
    )
    assert (split.kept, split.retried, split.resubmitted) == (2, 1, 2)
    assert split.columns == ("Name", "Phone")
    assert retry.getvalue() == b"Name;Phone\nb;2\nx;9\ny;8\n"


def test_unprocessed_rows_alone_fix_the_columns(tmp_path: Path) -> None:
    retry = io.BytesIO()
    split = write_failed_rows(
        [], kept_out=None, retry_out=retry, unprocessed_files=[_file(tmp_path, "u.csv", b"Name\nx\n")]
    )
    assert (split.resubmitted, split.columns) == (1, ("Name",))
    assert retry.getvalue() == b"Name\nx\n"


def test_unprocessed_files_with_result_or_other_columns_are_refused(tmp_path: Path) -> None:
    failed = _file(tmp_path, "f.csv", FAILED)
    results = _file(tmp_path, "r.csv", FAILED)
    with pytest.raises(ValueError) as caught:
        write_failed_rows([], kept_out=None, retry_out=io.BytesIO(), unprocessed_files=[results])
    assert str(caught.value) == f"{results} is not an unprocessedrecords file (it has sf__ columns)"
    other = _file(tmp_path, "o.csv", b"Name,Email\nx,y\n")
    with pytest.raises(ValueError) as caught:
        write_failed_rows(
            [(failed, {"X"})], kept_out=None, retry_out=io.BytesIO(), unprocessed_files=[other]
        )
    assert str(caught.value) == f"{other}: columns differ from the uploaded columns Name, Phone"


def test_errors_name_the_failed_results_file(tmp_path: Path) -> None:
    plain = _file(tmp_path, "plain.csv", b"Name\na\n")
    with pytest.raises(ValueError) as caught:
        write_failed_rows([(plain, {"X"})], kept_out=None, retry_out=None)
    assert str(caught.value) == f"{plain} is not a failedResults file (no sf__Error column)"


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    retry = io.BytesIO()
    split = write_failed_rows(
        [(_file(tmp_path, "bom.csv", b"\xef\xbb\xbf" + FAILED), {"UNABLE_TO_LOCK_ROW"})],
        kept_out=None,
        retry_out=retry,
    )
    assert split.columns == ("Name", "Phone")
    assert retry.getvalue() == b"Name,Phone\nb,2\n"


def test_a_malformed_failed_results_file_is_an_error_not_a_guess(tmp_path: Path) -> None:
    broken = _file(tmp_path, "broken.csv", b'"sf__Id","sf__Error",Name\n"","X:y","a"b\n')
    with pytest.raises(csv.Error):
        write_failed_rows([(broken, {"X"})], kept_out=None, retry_out=io.BytesIO())


def test_a_uri_must_come_as_a_path_object(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        write_failed_rows([("s3://bucket/failed.csv", {"X"})], kept_out=None, retry_out=None)
    assert str(caught.value) == "s3://bucket/failed.csv: pass an ObjectStoragePath for a URI, not its text"
    retry = io.BytesIO()
    text_path = str(_file(tmp_path, "f.csv", FAILED))
    split = write_failed_rows([(text_path, {"UNABLE_TO_LOCK_ROW"})], kept_out=None, retry_out=retry)
    assert split.retried == 1


class _Recording(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        self.writes.append(bytes(data))
        return super().write(data)


def test_each_write_holds_at_most_a_thousand_lines_and_empty_outputs_get_none(tmp_path: Path) -> None:
    rows = "".join(f'"","UNABLE_TO_LOCK_ROW:x:--","n{i}","{i}"\n' for i in range(1000))
    failed = _file(tmp_path, "f.csv", ('"sf__Id","sf__Error",Name,Phone\n' + rows).encode())
    retry, kept = _Recording(), _Recording()
    write_failed_rows([(failed, {"UNABLE_TO_LOCK_ROW"})], kept_out=kept, retry_out=retry)
    # The header and 999 rows, then the last row.
    assert [w.count(b"\n") for w in retry.writes] == [1000, 1]
    assert kept.writes == []
