"""Query result files: CSV bytes, dialects, atomic writes, O(1) paging and locator validation."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.emulator.identity import POD
from airflow_provider_sfbulk.emulator.query_results import (
    DATA_FILE,
    INDEX_FILE,
    META_FILE,
    ResultPage,
    decode_locator,
    encode_locator,
    page_locators,
    read_page,
    result_record_count,
    write_query_results,
)
from airflow_provider_sfbulk.emulator.schema import Schema, create_tables, load_schema
from airflow_provider_sfbulk.emulator.soql import SoqlError, compile_soql
from airflow_provider_sfbulk.protocol.ids import make_id
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


def _insert_accounts(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> None:
    for n, values in enumerate(rows, start=1):
        row = {"Id": make_id("001", POD, n), "IsDeleted": 0, "CreatedDate": "2024-01-31T10:00:00.000Z"}
        row.update(values)
        cols = ", ".join(f'"{c}"' for c in row)
        db.execute(f'INSERT INTO "rec_Account" ({cols}) VALUES ({", ".join("?" * len(row))})',
                   tuple(row.values()))


@pytest.fixture
def db(schema: Schema) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    create_tables(conn, schema)
    yield conn
    conn.close()


def write(db: sqlite3.Connection, schema: Schema, out: Path, soql: str, **kw: Any) -> int:
    compiled = compile_soql(soql, schema, include_deleted=kw.pop("include_deleted", False))
    return write_query_results(db, compiled, out, **kw)


def page_bytes(page: ResultPage) -> bytes:
    with open(page.path, "rb") as handle:
        handle.seek(page.start)
        return page.header + handle.read(page.end - page.start)


def all_pages(out: Path, max_records: int | None) -> list[ResultPage]:
    pages, locator = [], None
    for _ in range(10_000):
        page = read_page(out, locator, max_records)
        pages.append(page)
        locator = page.next_locator
        if locator is None:
            return pages
    raise AssertionError("paging did not end")


# ------------------------------------------------------------------------------------------- CSV bytes


def test_csv_bytes_quote_everything(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    _insert_accounts(db, [
        {"Name": "Acme", "NumberOfEmployees": 12, "AnnualRevenue": 10.0, "Active__c": 1,
         "Customer_Since__c": "2024-01-31"},
        {"Name": 'Comma, "quoted"\nnew line', "NumberOfEmployees": None, "AnnualRevenue": 1234.56,
         "Active__c": 0},
    ])
    rows = write(db, schema, tmp_path, "SELECT Id, Name, NumberOfEmployees, AnnualRevenue, Active__c, "
                 "Customer_Since__c, CreatedDate, Parent.Name FROM Account")
    assert rows == 2
    body = page_bytes(read_page(tmp_path, None, None))
    id1, id2 = make_id("001", POD, 1), make_id("001", POD, 2)
    assert body == (
        b'"Id","Name","NumberOfEmployees","AnnualRevenue","Active__c","Customer_Since__c","CreatedDate",'
        b'"Parent.Name"\n'
        + f'"{id1}","Acme","12","10.0","true","2024-01-31","2024-01-31T10:00:00.000Z",""\n'.encode()
        + (f'"{id2}","Comma, ""quoted""\nnew line","","1234.56","false","",'
           '"2024-01-31T10:00:00.000Z",""\n').encode()
    )


def test_multibyte_and_nul_survive_a_csv_round_trip(db: sqlite3.Connection, schema: Schema,
                                                    tmp_path: Path) -> None:
    names = ["Ünïcødé 日本語 🚀", "nul\x00byte", "tab\there", "cr\r\nlf", '""', "semi;colon|pipe^caret`back"]
    _insert_accounts(db, [{"Name": n} for n in names])
    write(db, schema, tmp_path, "SELECT Name FROM Account")
    text = page_bytes(read_page(tmp_path, None, None)).decode("utf-8")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["Name"], *[[n] for n in names]]


@pytest.mark.parametrize("delimiter", sorted(COLUMN_DELIMITERS))
@pytest.mark.parametrize("line_ending", sorted(LINE_ENDINGS))
def test_dialects(db: sqlite3.Connection, schema: Schema, tmp_path: Path, delimiter: str,
                  line_ending: str) -> None:
    sep, eol = COLUMN_DELIMITERS[delimiter], LINE_ENDINGS[line_ending]
    values = ["plain", f"has{sep}delimiter", "multi\nline"]
    _insert_accounts(db, [{"Name": v, "BillingCity": "X"} for v in values])
    write(db, schema, tmp_path, "SELECT Name, BillingCity FROM Account",
          column_delimiter=delimiter, line_ending=line_ending)
    raw = page_bytes(read_page(tmp_path, None, None)).decode("utf-8")
    assert raw.startswith(f'"Name"{sep}"BillingCity"{eol}')
    assert raw.endswith(f'"multi\nline"{sep}"X"{eol}')
    assert raw.count(eol) == 4 + (1 if eol == "\n" else 0)  # header, 3 rows, the LF inside a value
    parsed = list(csv.reader(io.StringIO(raw, newline=""), delimiter=sep))
    assert parsed == [["Name", "BillingCity"], *[[v, "X"] for v in values]]


def test_unknown_dialect_is_refused(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HASH"):
        write(db, schema, tmp_path, "SELECT Name FROM Account", column_delimiter="HASH")


# ---------------------------------------------------------------------------------------------- paging


def test_zero_rows_is_a_header_only_page(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    assert write(db, schema, tmp_path, "SELECT Id, Name FROM Account") == 0
    page = read_page(tmp_path, None, 10)
    assert (page.record_count, page.next_locator, page.start, page.end) == (0, None, 0, 0)
    assert page_bytes(page) == b'"Id","Name"\n'
    assert page_locators(tmp_path, 10) == [None]
    with pytest.raises(SoqlError):
        read_page(tmp_path, encode_locator(0), 10)


def test_pages_carry_headers_counts_and_locators(db: sqlite3.Connection, schema: Schema,
                                                 tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": f"A{i:02d}"} for i in range(25)])
    write(db, schema, tmp_path, "SELECT Name FROM Account ORDER BY Name")
    pages = all_pages(tmp_path, 10)
    assert [p.record_count for p in pages] == [10, 10, 5]
    assert [p.next_locator for p in pages] == ["MTA", "MjA", None]  # base64 of "10" and "20", as SF's look
    assert page_locators(tmp_path, 10) == [None, "MTA", "MjA"]
    second = page_bytes(pages[1]).decode()
    assert second.splitlines() == ['"Name"', *[f'"A{i:02d}"' for i in range(10, 20)]]
    one = read_page(tmp_path, encode_locator(17), 1)
    assert page_bytes(one) == b'"Name"\n"A17"\n'
    assert one.next_locator == encode_locator(18)


def test_default_page_size(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": f"A{i}"} for i in range(7)])
    write(db, schema, tmp_path, "SELECT Name FROM Account")
    assert read_page(tmp_path, None, None).record_count == 7
    small = read_page(tmp_path, None, None, default_page_records=3)
    assert (small.record_count, small.next_locator) == (3, encode_locator(3))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12), max_size=40),
    page_size=st.integers(min_value=1, max_value=45),
    fetch_rows=st.integers(min_value=1, max_value=7),
    dialect=st.sampled_from([("COMMA", "LF"), ("TAB", "CRLF"), ("PIPE", "LF"), ("SEMICOLON", "CRLF")]),
)
def test_pages_concatenate_to_the_full_file(
    schema: Schema, tmp_path_factory: pytest.TempPathFactory, names: list[str], page_size: int,
    fetch_rows: int, dialect: tuple[str, str],
) -> None:
    conn = sqlite3.connect(":memory:")
    create_tables(conn, schema)
    _insert_accounts(conn, [{"Name": n or None} for n in names])
    out = tmp_path_factory.mktemp("pages")
    compiled = compile_soql("SELECT Id, Name FROM Account", schema, include_deleted=False)
    count = write_query_results(conn, compiled, out, column_delimiter=dialect[0], line_ending=dialect[1],
                                fetch_rows=fetch_rows)
    assert count == len(names) == result_record_count(out)
    whole = read_page(out, None, None)
    full = page_bytes(whole)
    pages = all_pages(out, page_size)
    header = whole.header
    assert all(page_bytes(p).startswith(header) for p in pages)
    assert header + b"".join(page_bytes(p)[len(header):] for p in pages) == full
    assert sum(p.record_count for p in pages) == len(names)
    assert [None, *[p.next_locator for p in pages[:-1]]] == page_locators(out, page_size)
    sep = COLUMN_DELIMITERS[dialect[0]]
    parsed = list(csv.reader(io.StringIO(full.decode("utf-8"), newline=""), delimiter=sep))
    assert [row[1] for row in parsed[1:]] == names
    conn.close()


@pytest.mark.parametrize(
    "locator",
    ["", "null", "Zm9v", "MDEw", "Mg==", "LTE", "MjU", "MjY", "MTAwMDAwMDA", "not base64!", "MTA=x",
     "A" * 40],
)
def test_locators_we_did_not_issue_are_refused(
    db: sqlite3.Connection, schema: Schema, tmp_path: Path, locator: str
) -> None:
    _insert_accounts(db, [{"Name": f"A{i}"} for i in range(25)])
    write(db, schema, tmp_path, "SELECT Name FROM Account")
    with pytest.raises(SoqlError) as caught:
        read_page(tmp_path, locator, 10)
    assert caught.value.error_code == "INVALID_QUERY_LOCATOR"
    assert caught.value.status == 400


def test_locator_codec() -> None:
    assert encode_locator(10000) == "MTAwMDA"
    assert decode_locator("MTAwMDA") == 10000
    assert decode_locator("MDEw") is None  # "010": not a form we issue
    assert decode_locator("LTE") is None  # "-1"


@pytest.mark.parametrize("bad", [0, -5, True, 2.5, "10"])
def test_bad_max_records(db: sqlite3.Connection, schema: Schema, tmp_path: Path, bad: Any) -> None:
    write(db, schema, tmp_path, "SELECT Name FROM Account")
    with pytest.raises(SoqlError) as caught:
        read_page(tmp_path, None, bad)
    assert caught.value.error_code == "INVALIDPARAMETER"


def test_no_results_yet(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_page(tmp_path, None, None)
    with pytest.raises(FileNotFoundError):
        page_locators(tmp_path, 10)


def test_limit_and_deleted_rows(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": f"A{i}", "IsDeleted": i % 2} for i in range(10)])
    assert write(db, schema, tmp_path / "q", "SELECT Name FROM Account") == 5
    assert write(db, schema, tmp_path / "qa", "SELECT Name FROM Account", include_deleted=True) == 10
    assert write(db, schema, tmp_path / "l", "SELECT Name FROM Account LIMIT 3", include_deleted=True) == 3
    assert read_page(tmp_path / "l", None, None).record_count == 3


# ---------------------------------------------------------------------------------- atomic, streaming


def test_abort_keeps_nothing_and_leaves_previous_result(
    db: sqlite3.Connection, schema: Schema, tmp_path: Path
) -> None:
    _insert_accounts(db, [{"Name": f"A{i}"} for i in range(50)])
    compiled = compile_soql("SELECT Name FROM Account", schema, include_deleted=False)
    assert write_query_results(db, compiled, tmp_path) == 50
    before = page_bytes(read_page(tmp_path, None, None))
    calls = {"n": 0}

    def abort_on_third_check() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    rows = write_query_results(db, compiled, tmp_path, should_abort=abort_on_third_check, fetch_rows=10)
    assert rows == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DATA_FILE, INDEX_FILE, META_FILE])
    assert page_bytes(read_page(tmp_path, None, None)) == before


def test_abort_before_first_result(db: sqlite3.Connection, schema: Schema, tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": "A"}])
    compiled = compile_soql("SELECT Name FROM Account", schema, include_deleted=False)
    assert write_query_results(db, compiled, tmp_path, should_abort=lambda: True) == 0
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        read_page(tmp_path, None, None)


def test_failure_mid_write_leaves_no_temporary_files(db: sqlite3.Connection, schema: Schema,
                                                     tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": "A"}])
    compiled = compile_soql("SELECT Name FROM Account WHERE Name LIKE 'A%'", schema, include_deleted=False)
    db.execute('DROP TABLE "rec_Account"')
    with pytest.raises(sqlite3.OperationalError):
        write_query_results(db, compiled, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_index_has_one_offset_per_row_plus_end(db: sqlite3.Connection, schema: Schema,
                                               tmp_path: Path) -> None:
    _insert_accounts(db, [{"Name": "x" * i} for i in range(1, 6)])
    write(db, schema, tmp_path, "SELECT Name FROM Account", fetch_rows=2)
    raw = (tmp_path / INDEX_FILE).read_bytes()
    offsets = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]
    data = (tmp_path / DATA_FILE).read_bytes()
    assert offsets == [0, 4, 9, 15, 22, 30]
    assert offsets[-1] == len(data)


def test_sql_formatting_agrees_with_format_value(db: sqlite3.Connection, schema: Schema,
                                                 tmp_path: Path) -> None:
    """Booleans and integers are printed by SQLite; the text must stay what schema.format_value gives."""
    from airflow_provider_sfbulk.emulator.schema import format_value

    samples = [(1, 0), (0, -5), (None, 123456789012), (1, None), (0, 7.0), (1, 2**53)]
    _insert_accounts(db, [{"Active__c": a, "NumberOfEmployees": n} for a, n in samples])
    compiled = compile_soql("SELECT Active__c, NumberOfEmployees FROM Account", schema, include_deleted=False)
    assert compiled.preformatted == (True, True)
    write_query_results(db, compiled, tmp_path)
    rows = list(csv.reader(io.StringIO(page_bytes(read_page(tmp_path, None, None)).decode())))[1:]
    active, employees = schema.objects["Account"].fields["Active__c"], schema.objects["Account"].fields[
        "NumberOfEmployees"]
    assert rows == [[format_value(active, a), format_value(employees, n)] for a, n in samples]
