"""Property tests: random CSVs survive the split byte for byte, and agree with the ``csv`` module."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.scanner import inspect_csv
from airflow_provider_sfbulk.csvio.split import iter_csv_parts, split_csv
from airflow_provider_sfbulk.csvio.tee import CsvTee
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS

VALUE_ALPHABET = st.sampled_from(
    ["a", "B", "z", "0", " ", ",", ";", "|", "^", "`", "\t", '"', "\r", "\n", "\r\n", "é", "漢", "😀", "#N/A"]
)
VALUE = st.lists(VALUE_ALPHABET, max_size=6).map("".join)
NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}(__c)?", fullmatch=True)


@dataclass
class GeneratedCsv:
    data: bytes
    body: bytes  # the records exactly as written (no BOM, no header)
    header: bytes
    names: list[str]
    rows: list[list[str]]
    records: list[bytes]  # each record as written, terminator included (except maybe the last)
    delimiter_name: str
    line_ending_name: str


def _encode_value(value: str, delimiter: str, force_quotes: bool, single_column: bool) -> str:
    special = delimiter in value or '"' in value or "\r" in value or "\n" in value
    if special or force_quotes or (single_column and value == ""):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_files(draw: st.DrawFn) -> GeneratedCsv:
    delimiter_name = draw(st.sampled_from(sorted(COLUMN_DELIMITERS)))
    line_ending_name = draw(st.sampled_from(sorted(LINE_ENDINGS)))
    delimiter = COLUMN_DELIMITERS[delimiter_name]
    terminator = LINE_ENDINGS[line_ending_name]
    names = draw(st.lists(NAME, min_size=1, max_size=5, unique_by=str.casefold))
    width = len(names)
    rows = draw(
        st.lists(
            st.lists(VALUE, min_size=width, max_size=width),
            min_size=1,
            max_size=25,
        )
    )
    quote_header = draw(st.booleans())
    header_text = delimiter.join(f'"{n}"' if quote_header else n for n in names) + terminator
    lines = []
    for row in rows:
        forced = draw(st.lists(st.booleans(), min_size=width, max_size=width))
        lines.append(
            delimiter.join(
                _encode_value(v, delimiter, f, width == 1) for v, f in zip(row, forced, strict=True)
            )
        )
    records = [(line + terminator).encode() for line in lines]
    if not draw(st.booleans()):
        records[-1] = lines[-1].encode()
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    header = header_text.encode()
    body = b"".join(records)
    return GeneratedCsv(
        bom + header + body, body, header, names, rows, records, delimiter_name, line_ending_name
    )


def _parse(data: bytes, delimiter: str) -> list[list[str]]:
    text = data.decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    generated=csv_files(),
    extra_room=st.integers(min_value=0, max_value=400),
    max_records=st.one_of(st.none(), st.integers(min_value=1, max_value=7)),
    chunk_size=st.sampled_from([1, 2, 3, 5, 7, 16, 64, 4096]),
)
def test_split_round_trips_exactly(
    generated: GeneratedCsv, extra_room: int, max_records: int | None, chunk_size: int, tmp_path_factory
) -> None:
    spool = tmp_path_factory.mktemp("spool")
    delimiter = COLUMN_DELIMITERS[generated.delimiter_name]
    # The longest record decides the smallest max_bytes that can work.
    record_sizes = [len(r) for r in generated.records]
    max_bytes = len(generated.header) + max(record_sizes) + extra_room

    with split_csv(
        io.BytesIO(generated.data),
        max_bytes,
        max_records=max_records,
        column_delimiter=generated.delimiter_name,
        line_ending=generated.line_ending_name,
        spool_dir=spool,
        chunk_size=chunk_size,
    ) as split:
        assert split.record_count == len(generated.rows)
        assert list(split.columns) == generated.names
        joined = b""
        parsed_rows: list[list[str]] = []
        expected_first = 1
        for index, part in enumerate(split.parts):
            content = part.path.read_bytes()
            assert part.index == index
            assert content.startswith(generated.header)
            assert len(content) == part.byte_count <= max_bytes
            assert hashlib.sha256(content).hexdigest() == part.sha256
            assert part.record_count >= 1
            if max_records is not None:
                assert part.record_count <= max_records
            assert part.first_record_number == expected_first
            expected_first += part.record_count
            rows = _parse(content, delimiter)
            assert rows[0] == generated.names
            assert len(rows) - 1 == part.record_count
            parsed_rows.extend(rows[1:])
            joined += content[len(generated.header) :]
        assert joined == generated.body
        assert parsed_rows == generated.rows
        # A part is only closed when the next record would not fit.
        for part, following in zip(split.parts, split.parts[1:], strict=False):
            first_of_next = record_sizes[following.first_record_number - 1]
            full_by_records = max_records is not None and part.record_count == max_records
            assert full_by_records or part.byte_count + first_of_next > max_bytes
    assert list(spool.iterdir()) == []


@settings(max_examples=200, deadline=None)
@given(generated=csv_files(), chunk_size=st.sampled_from([1, 4, 9, 1024]))
def test_inspection_and_the_tee_agree_with_the_rows(generated: GeneratedCsv, chunk_size: int) -> None:
    kwargs = {"column_delimiter": generated.delimiter_name, "line_ending": generated.line_ending_name}
    summary = inspect_csv(io.BytesIO(generated.data), chunk_size=chunk_size, **kwargs)
    assert summary.record_count == len(generated.rows)
    assert summary.byte_count == len(generated.data)
    assert summary.header == generated.header
    # The download tee finds the same records, whatever the chunks, and keeps the header as it came.
    tee = CsvTee(io.BytesIO())
    for start in range(0, len(generated.data), chunk_size):
        tee.write(generated.data[start : start + chunk_size])
    assert tee.check_balanced() == len(generated.rows)
    assert tee.header == generated.data[: len(generated.data) - len(generated.body)]


@settings(max_examples=150, deadline=None)
@given(generated=csv_files())
def test_lazy_iteration_gives_the_same_parts(generated: GeneratedCsv, tmp_path_factory) -> None:
    spool = tmp_path_factory.mktemp("lazy")
    kwargs = {
        "column_delimiter": generated.delimiter_name,
        "line_ending": generated.line_ending_name,
        "spool_dir": spool,
        "max_records": 3,
    }
    lazy = [(p.record_count, p.sha256) for p in iter_csv_parts(io.BytesIO(generated.data), **kwargs)]
    with split_csv(io.BytesIO(generated.data), **kwargs) as split:
        assert [(p.record_count, p.sha256) for p in split.parts] == lazy


NOISE = st.lists(
    st.sampled_from(["a", ",", '"', '""', "\n", "\r", "\r\n", "é", " ", "a,", '"a"', ',"', '",']), max_size=40
)


def _reference_parse(text: str, delimiter: str, terminator: str) -> list[list[str]] | None:
    """A slow, obviously-correct reading of the Bulk API CSV rules; None when the text breaks them."""
    records: list[list[str]] = []
    fields: list[str] = []
    value = ""
    state = "start"  # start of a field; "plain", "quoted" or "closed" (after a closing quote)
    record_start = 0
    i = 0

    def end_record(at: int) -> bool:
        nonlocal fields, value, state
        if at == record_start:
            return False  # an empty line
        records.append([*fields, value])
        fields, value, state = [], "", "start"
        return True

    while i < len(text):
        c = text[i]
        if state == "quoted":
            if text.startswith('""', i):
                value += '"'
                i += 2
            elif c == '"':
                state = "closed"
                i += 1
            else:
                value += c
                i += 1
            continue
        if state == "start" and c == '"':
            state = "quoted"
            i += 1
            continue
        if c == delimiter:
            fields.append(value)
            value, state = "", "start"
            i += 1
            continue
        if text.startswith(terminator, i):
            if not end_record(i):
                return None
            i += len(terminator)
            record_start = i
            continue
        if state == "closed" or c in '"\r\n':
            return None
        value += c
        state = "plain"
        i += 1
    if state == "quoted":
        return None
    if i > record_start:
        end_record(i)
    width = len(records[0])
    return records if all(len(r) == width for r in records) else None


def _scanned_records(raw: bytes, line_ending: str, chunk_size: int) -> int:
    """Records the scanner accepts (a header-only file, refused for upload, counts 0 here)."""
    try:
        return inspect_csv(io.BytesIO(raw), line_ending=line_ending, chunk_size=chunk_size).record_count
    except CsvValidationError as error:
        if error.problem == "header_only":
            return 0
        raise


@st.composite
def damaged_csv_bodies(draw: st.DrawFn, terminator: str) -> str:
    """Valid two-column records, then maybe one character inserted or deleted somewhere."""
    rows = draw(st.lists(st.lists(VALUE, min_size=2, max_size=2), min_size=1, max_size=6))
    forced = draw(st.booleans())
    body = "".join(",".join(_encode_value(v, ",", forced, False) for v in row) + terminator for row in rows)
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(body)))
        if draw(st.booleans()):
            body = body[:at] + draw(st.sampled_from(['"', ",", "\r", "\n", " "])) + body[at:]
        else:
            body = body[:at] + body[at + 1 :]
    return body


@settings(max_examples=600, deadline=None)
@given(data=st.data(), crlf=st.booleans(), chunk_size=st.sampled_from([1, 2, 3, 64]))
def test_noisy_input_is_judged_like_the_reference_parser(
    data: st.DataObject, crlf: bool, chunk_size: int
) -> None:
    """Differential check: accept exactly what a per-character reference parser accepts, count the same
    records, and whatever is accepted reads the same with Python's csv module."""
    terminator = "\r\n" if crlf else "\n"
    body = data.draw(st.one_of(NOISE.map("".join), damaged_csv_bodies(terminator)))
    text = "A,B" + terminator + body
    expected = _reference_parse(text, ",", terminator)
    raw = text.encode()
    if expected is None:
        with pytest.raises(CsvValidationError):
            _scanned_records(raw, "CRLF" if crlf else "LF", chunk_size)
        return
    records = _scanned_records(raw, "CRLF" if crlf else "LF", chunk_size)
    assert expected is not None, f"accepted an invalid file ({records} records)"
    assert records == len(expected) - 1
    assert _parse(raw, ",") == expected
