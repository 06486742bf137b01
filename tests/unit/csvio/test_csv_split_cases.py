"""Hand-written cases for the CSV splitter: every validation error, dialects, limits, spool handling."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest

from airflow_provider_sfbulk.csvio.dialect import required_columns_for, resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import iter_csv_parts, split_csv


def _inspect(data: bytes, **kwargs) -> None:
    inspect_csv(io.BytesIO(data), source_name="load.csv", **kwargs)


def _fails(data: bytes, problem: str, *words: str, **kwargs) -> CsvValidationError:
    with pytest.raises(CsvValidationError) as caught:
        _inspect(data, **kwargs)
    error = caught.value
    assert error.problem == problem, str(error)
    text = str(error)
    assert text.startswith("load.csv"), text
    for word in words:
        assert word in text, text
    return error


# -- validation errors --------------------------------------------------------------------------------


def test_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(CsvValidationError, match="does not exist") as caught:
        inspect_csv(missing)
    assert caught.value.problem == "missing_file"
    assert str(missing) in str(caught.value)
    with pytest.raises(CsvValidationError, match="does not exist"):
        split_csv(str(missing), spool_dir=tmp_path)


def test_empty_file() -> None:
    _fails(b"", "empty_file", "empty")


def test_file_with_only_a_byte_order_mark_is_empty() -> None:
    _fails(b"\xef\xbb\xbf", "empty_file", "byte order mark")


@pytest.mark.parametrize("data", [b"Name\n", b"Name", b"Name,Phone\r\n"])
def test_header_only(data: bytes) -> None:
    line_ending = "CRLF" if data.endswith(b"\r\n") else "LF"
    _fails(data, "header_only", "no records", line_ending=line_ending)


def test_unterminated_quote_names_the_record_and_the_line_it_opens_on() -> None:
    data = b'Name,Description\nAcme,fine\nGlobex,"multi\nline\nnever closed\n'
    error = _fails(data, "unterminated_quote", "unbalanced quotes", "field 2", "opened on line 3")
    assert error.record_number == 2
    assert error.line_number == 3
    assert error.byte_offset == data.index(b'"multi')


def test_unterminated_quote_after_doubled_quote_at_end_of_file() -> None:
    _fails(b'Name\n"say ""hi""\n', "unterminated_quote", "record 1")


def test_bare_quote_inside_unquoted_field() -> None:
    error = _fails(b'Name,Size\nAcme,12"\n', "bare_quote", "record 1", "field 2", "double quote")
    assert error.line_number == 2


def test_space_before_a_quote_is_a_bare_quote() -> None:
    # Salesforce: "John", "Smith" is not valid (the second value starts with a space).
    _fails(b'First,Last\n"John", "Smith"\n', "bare_quote", "field 2")


def test_text_after_closing_quote() -> None:
    _fails(b'First,Last\n"John" ,Smith\n', "text_after_quote", "' ' follows the closing quote of field 1")


def test_invalid_utf8_names_the_byte_offset_and_record() -> None:
    data = b"Name\nok\nbad \xff here\n"
    offset = data.index(b"\xff")
    error = _fails(data, "invalid_utf8", "UTF-8", "record 2", f"byte offset {offset}")
    assert error.byte_offset == offset


def test_invalid_utf8_counts_the_byte_order_mark_in_the_offset() -> None:
    data = b"\xef\xbb\xbfName\n\xc3(\n"
    error = _fails(data, "invalid_utf8")
    assert error.byte_offset == 8


def test_invalid_utf8_in_the_header() -> None:
    _fails(b"Na\xe9me\nx\n", "invalid_utf8", "header")


def test_multibyte_character_split_across_chunks_is_fine() -> None:
    data = "Name\nZürich 漢字 😀\n".encode()
    for chunk_size in (1, 2, 3, 5):
        assert inspect_csv(io.BytesIO(data), chunk_size=chunk_size).record_count == 1


def test_truncated_multibyte_character_at_end_of_file() -> None:
    _fails(b"Name\nab\xe6\xbc", "invalid_utf8", "truncated")


@pytest.mark.parametrize(
    ("header", "suggested"),
    [
        (b"Name;Phone", "SEMICOLON"),
        (b"Name\tPhone", "TAB"),
        (b"Name|Phone", "PIPE"),
        (b"Name^Phone", "CARET"),
        (b"Name`Phone", "BACKQUOTE"),
    ],
)
def test_wrong_delimiter_suggests_the_one_the_header_uses(header: bytes, suggested: str) -> None:
    _fails(header + b"\na\n", "wrong_delimiter", f"column_delimiter='{suggested}'", "COMMA")


def test_declared_semicolon_but_file_uses_commas() -> None:
    _fails(b"Name,Phone\na,b\n", "wrong_delimiter", "'COMMA'", column_delimiter="SEMICOLON")


def test_single_column_without_other_delimiters_is_fine() -> None:
    assert inspect_csv(io.BytesIO(b"Id\n001000000000001AAA\n")).record_count == 1


def test_declared_lf_but_file_uses_crlf() -> None:
    _fails(b"Name,Phone\r\na,b\r\n", "wrong_line_ending", "header", "line_ending='CRLF'")


def test_declared_crlf_but_file_uses_lf() -> None:
    _fails(b"Name,Phone\na,b\n", "wrong_line_ending", "header", "line_ending='LF'", line_ending="CRLF")


def test_one_record_with_the_other_line_ending() -> None:
    _fails(b"Name,Phone\na,b\nc,d\r\ne,f\n", "wrong_line_ending", "record 2", "CRLF")
    _fails(b"Name\r\na\r\nb\nc\r\n", "wrong_line_ending", "record 2", line_ending="CRLF")


def test_bare_carriage_return_in_unquoted_field() -> None:
    _fails(b"Name,Phone\na\rb,c\n", "bare_cr", "record 1", "field 1")


def test_quoted_carriage_returns_and_line_feeds_are_data() -> None:
    data = b'Name,Note\na,"x\ry"\nb,"p\r\nq"\nc,"\n"\n'
    assert inspect_csv(io.BytesIO(data)).record_count == 3


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"A,B,C\n1,2,3\n1,2\n", ("record 2", "2 field(s)", "header has 3")),
        (b"A,B\n1,2\n1,2,3\n", ("record 2", "3 field(s)", "header has 2")),
        (b'A,B\n"1,2"\n', ("record 1", "1 field(s)")),
    ],
)
def test_field_count_differs_from_header(data: bytes, words: tuple[str, ...]) -> None:
    _fails(data, "field_count", *words)


def test_field_count_error_reports_the_line_after_multiline_records() -> None:
    error = _fails(b'A,B\n"x\ny",1\n1\n', "field_count")
    assert error.record_number == 2
    assert error.line_number == 4


def test_empty_line_is_rejected() -> None:
    _fails(b"A,B\n1,2\n\n3,4\n", "empty_line", "record 2")
    _fails(b"Id\n001\n\n", "empty_line", "record 2")


def test_single_column_empty_value_must_be_quoted() -> None:
    assert inspect_csv(io.BytesIO(b'Id\n""\n001\n')).record_count == 2


def test_duplicate_header_names_case_insensitive() -> None:
    _fails(b"Name,Phone,name\n1,2,3\n", "duplicate_header_name", "'name'", "columns 1 and 3")


def test_empty_header_name() -> None:
    _fails(b"Name,,Phone\n1,2,3\n", "empty_header_name", "column 2")


def test_header_name_with_spaces() -> None:
    _fails(b"Name, Phone\n1,2\n", "header_whitespace", "' Phone'")


def test_quoted_header_names_are_unquoted() -> None:
    summary = inspect_csv(io.BytesIO(b'"Name","Desc ""x"""\n1,2\n'))
    assert summary.columns == ("Name", 'Desc "x"')


def test_required_columns_are_case_insensitive() -> None:
    required, allowed = required_columns_for("upsert", "External_Id__c")
    assert inspect_csv(io.BytesIO(b"external_id__C,Name\n1,2\n"), required_columns=required).record_count == 1
    _fails(b"Name\n1\n", "missing_columns", "'External_Id__c'", "header: Name", required_columns=required)


def test_delete_takes_the_id_column_only() -> None:
    required, allowed = required_columns_for("delete")
    assert (required, allowed) == (("Id",), ("Id",))
    assert inspect_csv(io.BytesIO(b"ID\n001\n"), required_columns=required, allowed_columns=allowed)
    _fails(b"Name\nx\n", "missing_columns", "'Id'", required_columns=required, allowed_columns=allowed)
    _fails(
        b"Id,Name\n1,x\n", "unexpected_columns", "'Name'", required_columns=required, allowed_columns=allowed
    )
    assert required_columns_for("hardDelete") == (("Id",), ("Id",))
    assert required_columns_for("update") == (("Id",), None)
    assert required_columns_for("insert") == ((), None)
    with pytest.raises(ValueError, match="external_id_field"):
        required_columns_for("upsert")
    with pytest.raises(ValueError):
        required_columns_for("merge")


def test_error_survives_pickling() -> None:
    error = _fails(b"A,B\n1\n", "field_count")
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error)
    assert (clone.problem, clone.record_number, clone.line_number) == ("field_count", 1, 2)


def test_text_mode_stream_is_refused() -> None:
    with pytest.raises(TypeError, match="binary"):
        inspect_csv(io.StringIO("A\n1\n"))  # type: ignore[arg-type]


def test_dialect_names_resolve() -> None:
    assert resolve_delimiter("tab") == ("TAB", "\t")
    assert resolve_delimiter(";") == ("SEMICOLON", ";")
    assert resolve_line_ending("\r\n") == "CRLF"
    with pytest.raises(ValueError, match="unsupported column delimiter"):
        resolve_delimiter(":")
    with pytest.raises(ValueError, match="unsupported line ending"):
        resolve_line_ending("CR")


# -- splitting --------------------------------------------------------------------------------------


def _parts(split) -> list[bytes]:
    return [part.path.read_bytes() for part in split.parts]


def test_bom_is_stripped_and_header_repeated(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfName,Note\na,1\nb,2\nc,3\n"
    with split_csv(io.BytesIO(data), max_bytes=len(b"Name,Note\na,1\nb,2\n"), spool_dir=tmp_path) as split:
        assert _parts(split) == [b"Name,Note\na,1\nb,2\n", b"Name,Note\nc,3\n"]
        assert split.summary.has_bom
        assert split.summary.byte_count == len(data)
        assert [p.first_record_number for p in split.parts] == [1, 3]
        assert [p.last_record_number for p in split.parts] == [2, 3]


@pytest.mark.parametrize(
    ("name", "char"),
    [("COMMA", ","), ("SEMICOLON", ";"), ("TAB", "\t"), ("PIPE", "|"), ("CARET", "^"), ("BACKQUOTE", "`")],
)
def test_each_delimiter(name: str, char: str, tmp_path: Path) -> None:
    rows = [["Name", "Note"], ["a", f'"x{char}y"'], ["b", '"q ""w"""'], ["c", ","]]
    if char == ",":
        rows[3][1] = '","'
    data = "".join(char.join(row) + "\n" for row in rows).encode()
    with split_csv(io.BytesIO(data), max_records=2, column_delimiter=name, spool_dir=tmp_path) as split:
        assert split.record_count == 3
        assert [p.record_count for p in split.parts] == [2, 1]
        header = f"Name{char}Note\n".encode()
        assert b"".join(p[len(header) :] for p in _parts(split)) == data[len(header) :]


def test_crlf_file(tmp_path: Path) -> None:
    data = b'Name,Note\r\na,"line1\r\nline2"\r\nb,x\r\n'
    with split_csv(io.BytesIO(data), max_records=1, line_ending="CRLF", spool_dir=tmp_path) as split:
        assert _parts(split) == [b'Name,Note\r\na,"line1\r\nline2"\r\n', b"Name,Note\r\nb,x\r\n"]


def test_last_record_without_line_ending(tmp_path: Path) -> None:
    with split_csv(io.BytesIO(b"Name\na\nb"), max_records=1, spool_dir=tmp_path) as split:
        assert _parts(split) == [b"Name\na\n", b"Name\nb"]


def test_record_bigger_than_max_bytes_names_the_record(tmp_path: Path) -> None:
    data = b"Name\nshort\n" + b"x" * 100 + b"\nshort\n"
    with pytest.raises(CsvValidationError, match=r"record 2, line 3\): the record is 101 bytes") as caught:
        split_csv(io.BytesIO(data), max_bytes=50, spool_dir=tmp_path, source_name="big.csv")
    assert caught.value.problem == "record_too_large"
    assert str(caught.value).startswith("big.csv (record 2, line 3)")
    assert list(tmp_path.iterdir()) == []


def test_record_bigger_than_max_bytes_with_quoted_newlines(tmp_path: Path) -> None:
    data = b'Name\nshort\n"' + b"x\n" * 50 + b'"\n'
    with pytest.raises(CsvValidationError, match="record 2") as caught:
        split_csv(io.BytesIO(data), max_bytes=50, spool_dir=tmp_path)
    assert caught.value.problem == "record_too_large"


def test_unclosed_quote_stops_reading_at_the_record_limit(tmp_path: Path) -> None:
    class Endless(io.RawIOBase):
        """Header, an opening quote, then an endless quoted value: must not be read forever."""

        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = b'Name\n"' if self.sent == 0 else b"y" * len(buffer)
            chunk = chunk[: len(buffer)]
            buffer[: len(chunk)] = chunk
            self.sent += len(chunk)
            return len(chunk)

    stream = Endless()
    with pytest.raises(CsvValidationError, match="unbalanced quotes") as caught:
        split_csv(stream, max_bytes=10_000, chunk_size=1000, spool_dir=tmp_path)
    assert caught.value.problem == "record_too_large"
    assert stream.sent < 100_000


def test_max_bytes_must_leave_room_after_the_header(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no room"):
        split_csv(io.BytesIO(b"LongHeaderName\nx\n"), max_bytes=10, spool_dir=tmp_path)
    with pytest.raises(ValueError, match="max_records"):
        split_csv(io.BytesIO(b"A\nx\n"), max_records=0, spool_dir=tmp_path)


def test_exact_fit(tmp_path: Path) -> None:
    data = b"A\n" + b"".join(b"%d\n" % i for i in range(10))
    with split_csv(io.BytesIO(data), max_bytes=len(b"A\n0\n1\n"), spool_dir=tmp_path) as split:
        assert [p.record_count for p in split.parts] == [2, 2, 2, 2, 2]
        assert all(p.byte_count == 6 for p in split.parts)


def test_max_records(tmp_path: Path) -> None:
    data = b"A\n" + b"".join(b"%d\n" % i for i in range(1000))
    with split_csv(io.BytesIO(data), max_records=300, spool_dir=tmp_path) as split:
        assert [p.record_count for p in split.parts] == [300, 300, 300, 100]
        assert [p.first_record_number for p in split.parts] == [1, 301, 601, 901]
        assert _parts(split)[1].splitlines()[1] == b"300"


def test_split_reads_the_stream_once_in_chunks(tmp_path: Path) -> None:
    class Counting(io.BytesIO):
        calls: list[int]

        def read(self, size: int | None = -1) -> bytes:
            self.calls.append(-1 if size is None else size)
            return super().read(size)

    data = b"A,B\n" + b"x,y\n" * 100_000
    stream = Counting(data)
    stream.calls = []
    with split_csv(stream, chunk_size=64 * 1024, spool_dir=tmp_path) as split:
        assert split.record_count == 100_000
    assert max(stream.calls) == 64 * 1024
    assert -1 not in stream.calls


def test_a_failure_deletes_every_spool_file(tmp_path: Path) -> None:
    data = b"A\n" + b"x\n" * 1000 + b'bad"\n'
    with pytest.raises(CsvValidationError, match="record 1001"):
        split_csv(io.BytesIO(data), max_records=10, spool_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_lazy_parts_are_yielded_before_the_end_and_the_open_part_is_deleted(tmp_path: Path) -> None:
    data = b"A\n" + b"x\n" * 100 + b'bad"\n'
    parts = iter_csv_parts(io.BytesIO(data), max_records=10, spool_dir=tmp_path, chunk_size=64)
    yielded = [next(parts)]
    assert yielded[0].record_count == 10
    with pytest.raises(CsvValidationError, match="record 101"):
        yielded.extend(_collect(parts, yielded))
    # The tenth part was still open when the bad record came: it is gone, the yielded ones stay.
    assert len(yielded) == 9
    assert sorted(tmp_path.iterdir()) == sorted(p.path for p in yielded)
    for part in yielded:
        part.path.unlink()
    gen = iter_csv_parts(io.BytesIO(b"A\n" + b"x\n" * 100), max_records=10, spool_dir=tmp_path, chunk_size=8)
    first = next(gen)
    gen.close()
    assert list(tmp_path.iterdir()) == [first.path]


def _collect(parts, into: list):  # type: ignore[no-untyped-def]
    for part in parts:
        into.append(part)
    return []


def test_cleanup_removes_parts_the_caller_left(tmp_path: Path) -> None:
    split = split_csv(io.BytesIO(b"A\n1\n2\n"), max_records=1, spool_dir=tmp_path)
    split.parts[0].path.unlink()
    split.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_sources_can_be_paths_and_path_objects(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"A\n1\n")
    assert inspect_csv(source).source == str(source)
    assert inspect_csv(str(source)).record_count == 1
    with source.open("rb") as stream:
        assert inspect_csv(stream).source == str(source)


def test_object_storage_path_source(tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    source = tmp_path / "in.csv"
    source.write_bytes(b'Name\n"a\nb"\nc\n')
    path = ObjectStoragePath(f"file://{source}")
    spool = tmp_path / "spool"
    spool.mkdir()
    with split_csv(path, max_records=1, spool_dir=spool) as split:
        assert split.record_count == 2
        assert _parts(split) == [b'Name\n"a\nb"\n', b"Name\nc\n"]
    with path.open("rb") as stream:
        assert inspect_csv(stream).record_count == 2


@pytest.mark.timeout(20)
def test_invalid_utf8_after_multiline_records_is_located_quickly() -> None:
    # Regression: locating the record inside a run of multi-line records used to backtrack for ages.
    data = b'A,B\n"x\ny",1\n"p\nq",' + b"a" * 50_000 + b"\xff\n"
    error = _fails(data, "invalid_utf8", "record 2")
    assert error.line_number == 5  # the line of the bad byte, inside record 2 (lines 4-5)
