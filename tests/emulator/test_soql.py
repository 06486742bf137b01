"""SOQL subset: parsing, validation errors as Salesforce words them, and compiled SQL run on sample data."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.emulator.identity import POD
from airflow_provider_sfbulk.emulator.query_results import prepare_connection
from airflow_provider_sfbulk.emulator.schema import Schema, create_tables, load_schema
from airflow_provider_sfbulk.emulator.soql import SoqlError, compile_soql, like_to_regex
from airflow_provider_sfbulk.protocol.ids import make_id

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)


def rid(schema: Schema, obj: str, n: int) -> str:
    return make_id(schema.objects[obj].key_prefix, POD, n)


def insert(conn: sqlite3.Connection, schema: Schema, obj: str, n: int, **values: Any) -> str:
    """Insert one record in the storage encoding of schema.py; returns its Id."""
    record_id = rid(schema, obj, n)
    row: dict[str, Any] = {
        "Id": record_id,
        "IsDeleted": 0,
        "CreatedDate": "2024-01-01T00:00:00.000Z",
        "LastModifiedDate": "2024-01-01T00:00:00.000Z",
        "SystemModstamp": "2024-01-01T00:00:00.000Z",
    }
    row.update(values)
    columns = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f'INSERT INTO "rec_{obj}" ({columns}) VALUES ({marks})', tuple(row.values()))
    return record_id


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema()


@pytest.fixture
def conn(schema: Schema) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    create_tables(db, schema)
    prepare_connection(db)
    acme = insert(db, schema, "Account", 1, Name="Acme", Industry="Technology", NumberOfEmployees=100,
                  Rating="Hot", Customer_Since__c="2024-01-31", Active__c=1, AnnualRevenue=1500.5,
                  CreatedDate="2026-11-27T08:00:00.000Z")
    insert(db, schema, "Account", 2, Name="acme labs", Rating="Cold", Customer_Since__c="2023-05-01",
           Active__c=0, CreatedDate="2026-11-26T23:59:59.999Z")
    beta = insert(db, schema, "Account", 3, Name="Beta_Corp 100%", Industry="Retail", NumberOfEmployees=50,
                  Rating="Warm", Active__c=0, CreatedDate="2026-11-20T10:00:00.000Z")
    insert(db, schema, "Account", 4, Name="Zeta", Industry="Retail", IsDeleted=1, Active__c=1)
    insert(db, schema, "Account", 5, Name="Élan", Industry="Banking", NumberOfEmployees=7, ParentId=acme,
           Active__c=1)
    insert(db, schema, "Contact", 1, LastName="Smith", FirstName="Ann", AccountId=acme,
           Last_Contacted__c="2026-11-27T08:30:00.000Z", Birthdate="1990-02-03")
    insert(db, schema, "Contact", 2, LastName="O'Brien", Last_Contacted__c="2026-11-25T00:00:00.000Z")
    insert(db, schema, "Contact", 3, LastName="Müller", AccountId=beta, Email="m@example.com")
    insert(db, schema, "Contact", 4, LastName="Ng", AccountId=rid(schema, "Account", 5))
    yield db
    db.close()


def run(conn: sqlite3.Connection, schema: Schema, soql: str, *, include_deleted: bool = False) -> list[tuple]:
    compiled = compile_soql(soql, schema, include_deleted=include_deleted, now=NOW)
    return conn.execute(compiled.sql, compiled.params).fetchall()


def names(conn: sqlite3.Connection, schema: Schema, where: str, obj: str = "Account", **kw: Any) -> list[str]:
    field = "Name" if obj == "Account" else "LastName"
    return [row[0] for row in run(conn, schema, f"SELECT {field} FROM {obj} {where}", **kw)]


def error_of(schema: Schema, soql: str, **kw: Any) -> SoqlError:
    with pytest.raises(SoqlError) as caught:
        compile_soql(soql, schema, include_deleted=kw.pop("include_deleted", False), now=NOW)
    return caught.value


# ----------------------------------------------------------------------------- headers and objects


def test_canonical_names_for_object_and_headers(schema: Schema) -> None:
    compiled = compile_soql("select id, NAME, parent.name from ACCOUNT", schema, include_deleted=False)
    assert compiled.object_name == "Account"
    assert compiled.columns == ["Id", "Name", "Parent.Name"]
    assert [f.name for f in compiled.fields] == ["Id", "Name", "Name"]


def test_custom_relationship_and_two_levels(conn: sqlite3.Connection, schema: Schema) -> None:
    insert(conn, schema, "Invoice__c", 1, Invoice_Number__c="INV-1", Amount__c=10.0,
           Account__c=rid(schema, "Account", 5))
    compiled = compile_soql(
        "SELECT Invoice_Number__c, Account__r.Name, Account__r.Parent.Name FROM Invoice__c",
        schema, include_deleted=False,
    )
    assert compiled.columns == ["Invoice_Number__c", "Account__r.Name", "Account__r.Parent.Name"]
    assert conn.execute(compiled.sql, compiled.params).fetchall() == [("INV-1", "Élan", "Acme")]


def test_null_parent_gives_null_values(conn: sqlite3.Connection, schema: Schema) -> None:
    rows = run(conn, schema, "SELECT LastName, Account.Name, Account.Industry FROM Contact ORDER BY LastName")
    assert rows == [("Müller", "Beta_Corp 100%", "Retail"), ("Ng", "Élan", "Banking"),
                    ("O'Brien", None, None), ("Smith", "Acme", "Technology")]


def test_alias_and_object_prefix_are_accepted(conn: sqlite3.Connection, schema: Schema) -> None:
    compiled = compile_soql("SELECT c.LastName, Contact.FirstName FROM Contact c WHERE c.LastName = 'Smith'",
                            schema, include_deleted=False)
    assert compiled.columns == ["LastName", "FirstName"]
    assert conn.execute(compiled.sql, compiled.params).fetchall() == [("Smith", "Ann")]


def test_fields_standard_expands_to_standard_fields(schema: Schema) -> None:
    compiled = compile_soql("SELECT FIELDS(STANDARD) FROM Invoice__c", schema, include_deleted=False)
    assert compiled.columns == ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp",
                                "CreatedById", "LastModifiedById", "Name"]


def test_fields_all_and_custom_need_a_limit(schema: Schema) -> None:
    custom = compile_soql("SELECT FIELDS(CUSTOM) FROM Account LIMIT 200", schema, include_deleted=False)
    assert custom.columns == ["External_Id__c", "Active__c", "Customer_Since__c"]
    every = compile_soql("SELECT FIELDS(ALL) FROM Account LIMIT 10", schema, include_deleted=False)
    assert every.columns == list(schema.objects["Account"].fields)
    mixed = compile_soql("SELECT Id, FIELDS(CUSTOM) FROM Contact LIMIT 5", schema, include_deleted=False)
    assert mixed.columns == ["Id", "Last_Contacted__c", "External_Id__c"]


def test_fields_custom_without_custom_fields(schema: Schema) -> None:
    from airflow_provider_sfbulk.emulator.schema import parse_schema

    plain = parse_schema({"objects": {"Thing": {"keyPrefix": "a09", "fields": {"Name": {"type": "string"}}}}})
    err = error_of(plain, "SELECT FIELDS(CUSTOM) FROM Thing LIMIT 200")
    assert err.error_code == "MALFORMED_QUERY"
    assert err.message == "'FIELDS(...)' expansion function must result in at least one field being selected."
    assert compile_soql("SELECT Id, FIELDS(CUSTOM) FROM Thing LIMIT 200", plain,
                        include_deleted=False).columns == ["Id"]


def test_deleted_rows_only_with_query_all(conn: sqlite3.Connection, schema: Schema) -> None:
    assert "Zeta" not in names(conn, schema, "")
    rows = run(conn, schema, "SELECT Name, IsDeleted FROM Account WHERE Name = 'zeta'", include_deleted=True)
    assert rows == [("Zeta", "true")]
    assert run(conn, schema, "SELECT Name, IsDeleted FROM Account WHERE IsDeleted = true") == []


# ----------------------------------------------------------------------------------------- WHERE


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("WHERE Name = 'ACME'", ["Acme"]),
        ("WHERE Name != 'acme'", ["acme labs", "Beta_Corp 100%", "Élan"]),
        ("WHERE Name <> 'acme'", ["acme labs", "Beta_Corp 100%", "Élan"]),
        ("WHERE Industry != 'Retail'", ["Acme", "acme labs", "Élan"]),  # != keeps nulls, as SOQL
        ("WHERE Industry = null", ["acme labs"]),
        ("WHERE Industry != null", ["Acme", "Beta_Corp 100%", "Élan"]),
        ("WHERE Industry IN ('retail', 'Banking')", ["Beta_Corp 100%", "Élan"]),
        ("WHERE Industry NOT IN ('Retail')", ["Acme", "acme labs", "Élan"]),
        ("WHERE Industry IN ('Retail', null)", ["acme labs", "Beta_Corp 100%"]),
        ("WHERE NumberOfEmployees > 50", ["Acme"]),
        ("WHERE NumberOfEmployees >= 50", ["Acme", "Beta_Corp 100%"]),
        ("WHERE NumberOfEmployees < 60", ["Beta_Corp 100%", "Élan"]),  # null is not < 60
        ("WHERE NumberOfEmployees <= 7", ["Élan"]),
        ("WHERE AnnualRevenue = 1500.5", ["Acme"]),
        ("WHERE Active__c = true", ["Acme", "Élan"]),
        ("WHERE Active__c = FALSE", ["acme labs", "Beta_Corp 100%"]),
        ("WHERE NOT Active__c = true", ["acme labs", "Beta_Corp 100%"]),
        ("WHERE NOT (Industry = 'Retail' OR Industry = 'Banking')", ["Acme", "acme labs"]),
        ("WHERE (Industry = 'Retail' OR Industry = null) AND Active__c = false",
         ["acme labs", "Beta_Corp 100%"]),
        ("WHERE Industry = 'Retail' OR (Industry = null AND Rating = 'Cold')",
         ["acme labs", "Beta_Corp 100%"]),
        ("WHERE Parent.Name = 'Acme'", ["Élan"]),
        ("WHERE Parent.Name != 'Acme'", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("WHERE Id = '" + make_id("001", POD, 3)[:15] + "'", ["Beta_Corp 100%"]),
        ("WHERE ParentId = null AND NumberOfEmployees = null", ["acme labs"]),
    ],
)
def test_where_semantics(conn: sqlite3.Connection, schema: Schema, where: str, expected: list[str]) -> None:
    assert sorted(names(conn, schema, where)) == sorted(expected)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("acme%", ["Acme", "acme labs"]),
        ("%LABS", ["acme labs"]),
        ("_cme", ["Acme"]),
        ("%\\_%", ["Beta_Corp 100%"]),  # escaped underscore is literal
        ("%\\%", ["Beta_Corp 100%"]),  # escaped percent is literal
        ("%100\\%", ["Beta_Corp 100%"]),
        ("élan", ["Élan"]),  # case-insensitive beyond ASCII
        ("%", ["Acme", "acme labs", "Beta_Corp 100%", "Élan"]),
        ("a.me", []),  # regex characters are literal
    ],
)
def test_like(conn: sqlite3.Connection, schema: Schema, pattern: str, expected: list[str]) -> None:
    assert sorted(names(conn, schema, f"WHERE Name LIKE '{pattern}'")) == sorted(expected)


def test_like_never_matches_null_and_not_like_keeps_null(conn: sqlite3.Connection, schema: Schema) -> None:
    assert names(conn, schema, "WHERE Industry LIKE '%'") == ["Acme", "Beta_Corp 100%", "Élan"]
    assert names(conn, schema, "WHERE NOT Industry LIKE 'Re%'") == ["Acme", "acme labs", "Élan"]


def test_like_to_regex_escapes() -> None:
    assert like_to_regex("a%b_c") == "a.*b.c"
    assert like_to_regex("\\%\\_") == "%_"


def test_string_escapes(conn: sqlite3.Connection, schema: Schema) -> None:
    assert names(conn, schema, "WHERE LastName = 'O\\'Brien'", obj="Contact") == ["O'Brien"]
    insert(conn, schema, "Account", 9, Name="tab\there \\ \"q\"\nline")
    assert names(conn, schema, "WHERE Name = 'tab\\there \\\\ \\\"q\\\"\\nline'") == [
        "tab\there \\ \"q\"\nline"]


def test_values_are_parameters_not_sql(conn: sqlite3.Connection, schema: Schema) -> None:
    assert names(conn, schema, "WHERE Name = 'x\\'; DROP TABLE rec_Account; --'") == []
    assert len(names(conn, schema, "")) == 4


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("WHERE Customer_Since__c = 2024-01-31", ["Acme"]),
        ("WHERE Customer_Since__c < 2024-01-31", ["acme labs"]),
        ("WHERE Customer_Since__c >= 2023-05-01", ["Acme", "acme labs"]),
        ("WHERE CreatedDate = TODAY", ["Acme"]),
        ("WHERE CreatedDate = YESTERDAY", ["acme labs"]),
        ("WHERE CreatedDate < TODAY", ["acme labs", "Beta_Corp 100%", "Élan"]),
        ("WHERE CreatedDate > YESTERDAY", ["Acme"]),
        ("WHERE CreatedDate <= YESTERDAY", ["acme labs", "Beta_Corp 100%", "Élan"]),
        ("WHERE CreatedDate >= YESTERDAY", ["Acme", "acme labs"]),
        ("WHERE CreatedDate != TODAY", ["acme labs", "Beta_Corp 100%", "Élan"]),
        ("WHERE CreatedDate = LAST_N_DAYS:7", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("WHERE CreatedDate = LAST_N_DAYS:1", ["Acme", "acme labs"]),
        ("WHERE CreatedDate = THIS_MONTH", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("WHERE CreatedDate = THIS_YEAR", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("WHERE CreatedDate = LAST_YEAR", []),
        ("WHERE CreatedDate < LAST_YEAR", ["Élan"]),
        ("WHERE CreatedDate IN (TODAY, YESTERDAY)", ["Acme", "acme labs"]),
        ("WHERE CreatedDate = NEXT_N_DAYS:3", []),
        ("WHERE CreatedDate > 2026-11-27T08:00:00Z", []),
        ("WHERE CreatedDate >= 2026-11-27T08:00:00Z", ["Acme"]),
        ("WHERE CreatedDate = 2026-11-27T09:00:00.000+01:00", ["Acme"]),
        ("WHERE CreatedDate > 2026-11-26T23:59:59.998Z", ["Acme", "acme labs"]),
        ("WHERE CreatedDate < 2026-11-27t00:00:00-00:00", ["acme labs", "Beta_Corp 100%", "Élan"]),
    ],
)
def test_dates_and_datetimes(conn: sqlite3.Connection, schema: Schema, where: str,
                             expected: list[str]) -> None:
    assert sorted(names(conn, schema, where)) == sorted(expected)


def test_date_constants_on_a_date_field(conn: sqlite3.Connection, schema: Schema) -> None:
    insert(conn, schema, "Opportunity", 1, Name="Today deal", StageName="Prospecting", CloseDate="2026-11-27")
    insert(conn, schema, "Opportunity", 2, Name="Next month", StageName="Prospecting", CloseDate="2026-12-31")
    rows = run(conn, schema, "SELECT Name FROM Opportunity WHERE CloseDate = TODAY")
    assert rows == [("Today deal",)]
    rows = run(conn, schema, "SELECT Name FROM Opportunity WHERE CloseDate = NEXT_MONTH")
    assert rows == [("Next month",)]
    assert run(conn, schema, "SELECT Name FROM Opportunity WHERE CloseDate > TODAY") == [("Next month",)]


# -------------------------------------------------------------------------------- ORDER BY, LIMIT


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("NumberOfEmployees", ["acme labs", "Élan", "Beta_Corp 100%", "Acme"]),  # nulls first by default
        ("NumberOfEmployees ASC NULLS LAST", ["Élan", "Beta_Corp 100%", "Acme", "acme labs"]),
        ("NumberOfEmployees DESC", ["acme labs", "Acme", "Beta_Corp 100%", "Élan"]),
        ("NumberOfEmployees DESC NULLS LAST", ["Acme", "Beta_Corp 100%", "Élan", "acme labs"]),
        ("Name", ["Acme", "acme labs", "Beta_Corp 100%", "Élan"]),  # case-insensitive
        ("Name DESC", ["Élan", "Beta_Corp 100%", "acme labs", "Acme"]),
        ("Rating", ["Élan", "Acme", "Beta_Corp 100%", "acme labs"]),  # picklist order Hot, Warm, Cold
        ("Rating DESC NULLS LAST", ["acme labs", "Beta_Corp 100%", "Acme", "Élan"]),
        ("Active__c DESC, Name", ["Acme", "Élan", "acme labs", "Beta_Corp 100%"]),
        ("Parent.Name NULLS LAST, Name DESC", ["Élan", "Beta_Corp 100%", "acme labs", "Acme"]),
    ],
)
def test_order_by(conn: sqlite3.Connection, schema: Schema, order: str, expected: list[str]) -> None:
    assert names(conn, schema, f"ORDER BY {order}") == expected


def test_limit(conn: sqlite3.Connection, schema: Schema) -> None:
    assert names(conn, schema, "ORDER BY Name LIMIT 2") == ["Acme", "acme labs"]
    assert names(conn, schema, "LIMIT 0") == []
    compiled = compile_soql("SELECT Id FROM Account LIMIT 3", schema, include_deleted=False)
    assert compiled.limit == 3


def test_multiline_query_and_keyword_case(conn: sqlite3.Connection, schema: Schema) -> None:
    soql = "select Name\nfrom Account\nwhere Industry = 'Retail'\norder by Name desc nulls last\nlimit 5"
    assert [r[0] for r in run(conn, schema, soql)] == ["Beta_Corp 100%"]


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("soql", "code", "column", "text"),
    [
        ("SELECT Id FROM Foo", "INVALID_TYPE", 16,
         "sObject type 'Foo' is not supported. If you are attempting to use a custom object, be sure to "
         "append the '__c' after the entity name. Please reference your WSDL or the describe call for the "
         "appropriate names."),
        ("SELECT Foo FROM Account", "INVALID_FIELD", 8,
         "No such column 'Foo' on entity 'Account'. If you are attempting to use a custom field, be sure to "
         "append the '__c' after the custom field name. Please reference your WSDL or the describe call for "
         "the appropriate names."),
        ("SELECT Id FROM Account WHERE Nope__c = 1", "INVALID_FIELD", 30,
         "No such column 'Nope__c' on entity"),
        ("SELECT Id FROM Account ORDER BY Nope", "INVALID_FIELD", 33, "No such column 'Nope' on entity"),
        ("SELECT Id, Account.Nope FROM Contact", "INVALID_FIELD", 12,
         "No such column 'Nope' on entity 'Account'"),
        ("SELECT Owner.Name FROM Account", "INVALID_FIELD", 8,
         "Didn't understand relationship 'Owner' in field path. If you are attempting to use a custom "
         "relationship, be sure to append the '__r' after the custom relationship name."),
        ("SELECT CreatedBy.Name FROM Account", "INVALID_FIELD", 8,
         "Didn't understand relationship 'CreatedBy'"),
        ("SELECT Name.Foo FROM Account", "INVALID_FIELD", 8, "Didn't understand relationship 'Name'"),
        ("SELECT Id, FROM Account", "MALFORMED_QUERY", 12, "unexpected token: 'FROM'"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY", 29, "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Account WHERE Name = 'a' AND Industry = 'b' OR Rating = 'Hot'",
         "MALFORMED_QUERY", 60, "unexpected token: 'OR'"),
        ("SELECT Id FROM Account WHERE Name = 'a' OR Industry = 'b' AND Rating = 'Hot'",
         "MALFORMED_QUERY", 59, "unexpected token: 'AND'"),
        ("SELECT Id from $account", "MALFORMED_QUERY", 16, "line 1:15 unexpected token: '$'"),
        ("SELECT Id FROM Account;", "MALFORMED_QUERY", 23, "unexpected token: ';'"),
        ("SELECT Id FROM Account LIMIT x", "MALFORMED_QUERY", 30, "unexpected token: 'x'"),
        ("SELECT Id FROM Account LIMIT -1", "MALFORMED_QUERY", 30, "unexpected token: '-1'"),
        ("SELECT Id FROM Account WHERE Name IN ()", "MALFORMED_QUERY", 39, "unexpected token: ')'"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees < null", "MALFORMED_QUERY", 50,
         "unexpected token: 'null'"),
        ("SELECT Id FROM Account WHERE Name = 'abc", "MALFORMED_QUERY", 37, "Unterminated string literal"),
        ("SELECT Id FROM Account WHERE Name = 'a\\qb'", "MALFORMED_QUERY", 37,
         "Illegal character sequence '\\q'"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2020-52-12T12:12:00-05:00", "MALFORMED_QUERY", 44,
         "Invalid datetime: 2020-52-12T12:12:00-05:00"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2020-12-12T12:12:00", "MALFORMED_QUERY", 44,
         "Invalid datetime: 2020-12-12T12:12:00"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = 2020-02-30", "MALFORMED_QUERY", 50,
         "Invalid date: 2020-02-30"),
        ("SELECT Id FROM Account WHERE Id = 'abc'", "MALFORMED_QUERY", 35, "invalid ID field: abc"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = '2024-01-01'", "INVALID_FIELD", 50,
         "value of filter criterion for field 'Customer_Since__c' must be of type date and should not be "
         "enclosed in quotes"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = 2024-01-01T00:00:00Z", "INVALID_FIELD", 50,
         "field 'Customer_Since__c' must be of type date"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2024-01-01", "INVALID_FIELD", 44,
         "value of filter criterion for field 'CreatedDate' must be of type dateTime and should not be "
         "enclosed in quotes"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees = '5'", "INVALID_FIELD", 50,
         "field 'NumberOfEmployees' must be of type integer and should not be enclosed in quotes"),
        ("SELECT Id FROM Account WHERE AnnualRevenue IN (1, '2')", "INVALID_FIELD", 51,
         "field 'AnnualRevenue' must be of type double"),
        ("SELECT Id FROM Account WHERE Active__c = 'true'", "INVALID_FIELD", 42,
         "field 'Active__c' must be of type boolean"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", 37,
         "value of filter criterion for field 'Name' must be of type string and should be enclosed in "
         "quotes"),
        ("SELECT Id FROM Account WHERE Name = TODAY", "INVALID_FIELD", 37, "must be of type string"),
        ("SELECT Id FROM Account WHERE Description = 'x'", "INVALID_FIELD", 30,
         "field 'Description' can not be filtered in a query call"),
        ("SELECT Id FROM Account ORDER BY Description", "INVALID_FIELD", 33,
         "field 'Description' can not be sorted in a query call"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees LIKE '5%'", "INVALID_FIELD", 48, "LIKE"),
        ("SELECT Id FROM Account WHERE Active__c LIKE 'x'", "INVALID_FIELD", 40, "LIKE"),
        ("SELECT FIELDS(ALL) FROM Account", "MALFORMED_QUERY", 8, "must have a LIMIT of at most 200"),
        ("SELECT FIELDS(CUSTOM) FROM Account LIMIT 201", "MALFORMED_QUERY", 8, "LIMIT of at most 200"),
        ("SELECT FIELDS(SOME) FROM Account", "MALFORMED_QUERY", 15, "unexpected token: 'SOME'"),
        ("SELECT Id Name FROM Account", "MALFORMED_QUERY", 11, "unexpected token: 'Name'"),
        ("SELECT Id FROM Account WITH SECURITY_ENFORCED", "MALFORMED_QUERY", 24, "unexpected token: 'WITH'"),
        ("SELECT Id\nFROM Account\nWHERE Nope = 1", "INVALID_FIELD", 7, "No such column 'Nope'"),
    ],
)
def test_errors(schema: Schema, soql: str, code: str, column: int, text: str) -> None:
    err = error_of(schema, soql)
    assert err.error_code == code
    assert err.status == 400
    assert text in err.message
    assert f":Column:{column}\n" in err.message
    # Salesforce's layout: the query excerpt, a caret under the error, the row/column hint, the text.
    excerpt, caret, hint, *_ = err.message.lstrip("\n").split("\n")
    assert caret.strip() == "^"
    assert hint.startswith("ERROR at Row:")
    assert excerpt[len(caret) - 1 :].startswith(
        soql.split("\n")[int(hint.split(":")[1]) - 1][column - 1 :][:5])


def test_error_row_on_later_line(schema: Schema) -> None:
    err = error_of(schema, "SELECT Id\nFROM Account\nWHERE Nope = 1")
    assert "\nWHERE Nope = 1\n      ^\nERROR at Row:3:Column:7\n" in err.message


@pytest.mark.parametrize(
    ("soql", "text"),
    [
        ("SELECT Id, (SELECT Id FROM Contacts) FROM Account",
         "Aggregate Relationships not supported in Bulk V2 Query with CSV content type"),
        ("SELECT COUNT() FROM Account", "Aggregate Relationships not supported in Bulk V2 Query"),
        ("SELECT count(Id) FROM Account", "Aggregate Relationships not supported in Bulk V2 Query"),
        ("SELECT MAX(NumberOfEmployees) FROM Account", "Aggregate Relationships not supported"),
        ("SELECT Industry FROM Account GROUP BY Industry", "GROUP BY"),
        ("SELECT Id FROM Account OFFSET 10", "OFFSET"),
        ("SELECT Id FROM Account ORDER BY Name LIMIT 10 OFFSET 10", "OFFSET"),
        ("SELECT TYPEOF What WHEN Account THEN Name END FROM Event", "TYPEOF"),
        ("SELECT toLabel(Industry) FROM Account", "not supported by the Bulk API 2.0 emulator"),
    ],
)
def test_unsupported_in_bulk_v2(schema: Schema, soql: str, text: str) -> None:
    err = error_of(schema, soql)
    assert err.error_code == "API_ERROR"
    assert text in err.message


def test_duplicate_field(schema: Schema) -> None:
    err = error_of(schema, "SELECT Id, name, NAME FROM Account")
    assert (err.error_code, err.message) == (
        "INVALID_FIELD", "duplicate field selected: NAME".replace("NAME", "Name"))
    err = error_of(schema, "SELECT Id, FIELDS(STANDARD) FROM Account")
    assert err.message == "duplicate field selected: Id"


@pytest.mark.parametrize("soql", ["", "   ", "UPDATE Account", "SELECT FROM Account", "SELECT Id Account"])
def test_malformed(schema: Schema, soql: str) -> None:
    assert error_of(schema, soql).error_code == "MALFORMED_QUERY"


def test_syntax_errors_win_over_unknown_names(schema: Schema) -> None:
    err = error_of(schema, "SELECT Nope FROM Nowhere WHERE a = 1 AND b = 2 OR c = 3")
    assert err.error_code == "MALFORMED_QUERY"


def test_deeper_than_five_levels_is_refused(schema: Schema) -> None:
    path = ".".join(["Parent"] * 6) + ".Name"
    assert error_of(schema, f"SELECT {path} FROM Account").error_code == "INVALID_FIELD"
    compiled = compile_soql(f"SELECT {'.'.join(['Parent'] * 5)}.Name FROM Account", schema,
                            include_deleted=False)
    assert compiled.columns == ["Parent.Parent.Parent.Parent.Parent.Name"]


def test_boolean_null_means_false(conn: sqlite3.Connection, schema: Schema) -> None:
    assert sorted(names(conn, schema, "WHERE Active__c = null")) == sorted(["acme labs", "Beta_Corp 100%"])
    assert sorted(names(conn, schema, "WHERE Active__c != null")) == ["Acme", "Élan"]
    assert sorted(names(conn, schema, "WHERE Active__c IN (null)")) == sorted(["acme labs", "Beta_Corp 100%"])


# ------------------------------------------------------------ WHERE trees against a Python oracle

_EMPLOYEES = [None, 1, 5, 10]
_INDUSTRIES = [None, "Retail", "Banking", "Energy"]
_NAMES = ["a", "B", "c", "Ab", "ba"]


def _leaf() -> st.SearchStrategy[tuple[str, Callable[[dict[str, Any]], bool]]]:
    def number(op: str, value: int | None) -> tuple[str, Callable[[dict[str, Any]], bool]]:
        def check(rec: dict[str, Any]) -> bool:
            field = rec["NumberOfEmployees"]
            if value is None:
                return (field is None) if op == "=" else (field is not None)
            if field is None:
                return op == "!="
            return {"=": field == value, "!=": field != value, "<": field < value, "<=": field <= value,
                    ">": field > value, ">=": field >= value}[op]
        return f"NumberOfEmployees {op} {'null' if value is None else value}", check

    def industry(op: str, values: list[str | None]) -> tuple[str, Callable[[dict[str, Any]], bool]]:
        lowered = [v.lower() if v else v for v in values]

        def check(rec: dict[str, Any]) -> bool:
            field = rec["Industry"]
            hit = (field is None and None in lowered) or (field is not None and field.lower() in lowered)
            return hit if op == "IN" else not hit
        text = ", ".join("null" if v is None else f"'{v}'" for v in values)
        return f"Industry {op} ({text})", check

    def like(pattern: str) -> tuple[str, Callable[[dict[str, Any]], bool]]:
        regex = re.compile(pattern.replace("%", ".*").replace("_", "."), re.IGNORECASE | re.DOTALL)
        return f"Name LIKE '{pattern}'", lambda rec: regex.fullmatch(rec["Name"]) is not None

    def equal_text(op: str, value: str) -> tuple[str, Callable[[dict[str, Any]], bool]]:
        def check(rec: dict[str, Any]) -> bool:
            field = rec["Industry"]
            if field is None:
                return op == "!="
            return (field.lower() == value.lower()) == (op == "=")
        return f"Industry {op} '{value}'", check

    ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
    return st.one_of(
        st.builds(number, ops, st.sampled_from([1, 5, 10])),
        st.builds(number, st.sampled_from(["=", "!="]), st.none()),
        st.builds(industry, st.sampled_from(["IN", "NOT IN"]),
                  st.lists(st.sampled_from(["Retail", "banking", "ENERGY", None]), min_size=1, max_size=3)),
        st.builds(like, st.sampled_from(["a%", "%B", "_", "%", "b_", "%a%"])),
        st.builds(equal_text, st.sampled_from(["=", "!="]), st.sampled_from(["retail", "Banking", "x"])),
    )


def _tree(leaf: Any) -> Any:
    def combine(kind: str, parts: list[tuple[str, Callable[[dict[str, Any]], bool]]]) -> Any:
        if kind == "NOT":
            text, check = parts[0]
            return f"NOT ({text})", lambda rec: not check(rec)
        text = f" {kind} ".join(f"({t})" for t, _ in parts)
        checks = [c for _, c in parts]
        if kind == "AND":
            return text, lambda rec: all(c(rec) for c in checks)
        return text, lambda rec: any(c(rec) for c in checks)

    return st.recursive(
        leaf,
        lambda children: st.builds(combine, st.sampled_from(["AND", "OR", "NOT"]),
                                   st.lists(children, min_size=2, max_size=3)),
        max_leaves=8,
    )


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.fixed_dictionaries({
            "NumberOfEmployees": st.sampled_from(_EMPLOYEES),
            "Industry": st.sampled_from(_INDUSTRIES),
            "Name": st.sampled_from(_NAMES),
        }),
        min_size=1, max_size=10,
    ),
    condition=_tree(_leaf()),
)
def test_where_matches_soql_semantics(records: list[dict[str, Any]], condition: Any) -> None:
    schema = load_schema()
    db = sqlite3.connect(":memory:")
    create_tables(db, schema)
    prepare_connection(db)
    for n, rec in enumerate(records, start=1):
        insert(db, schema, "Account", n, **rec)
    text, check = condition
    compiled = compile_soql(f"SELECT Id FROM Account WHERE {text}", schema, include_deleted=False)
    got = [row[0] for row in db.execute(compiled.sql, compiled.params)]
    expected = [rid(schema, "Account", n) for n, rec in enumerate(records, start=1) if check(rec)]
    db.close()
    assert got == expected, text


_CLOSE_DATES = ["2025-12-31", "2026-01-01", "2026-08-28", "2026-09-30", "2026-10-01", "2026-10-31",
                "2026-11-14", "2026-11-15", "2026-11-21", "2026-11-22", "2026-11-26", "2026-11-27",
                "2026-11-28", "2026-11-29", "2026-12-01", "2027-01-01", "2027-02-25"]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [  # NOW is Friday 2026-11-27; weeks start on Sunday
        ("THIS_WEEK", ["2026-11-22", "2026-11-26", "2026-11-27", "2026-11-28"]),
        ("LAST_WEEK", ["2026-11-15", "2026-11-21"]),
        ("NEXT_WEEK", ["2026-11-29", "2026-12-01"]),
        ("LAST_N_DAYS:1", ["2026-11-26", "2026-11-27"]),
        ("N_DAYS_AGO:1", ["2026-11-26"]),
        ("LAST_N_WEEKS:2", ["2026-11-14", "2026-11-15", "2026-11-21"]),
        ("LAST_N_MONTHS:1", ["2026-10-01", "2026-10-31"]),
        ("LAST_N_MONTHS:3", ["2026-08-28", "2026-09-30", "2026-10-01", "2026-10-31"]),
        ("NEXT_N_MONTHS:2", ["2026-12-01", "2027-01-01"]),
        ("N_MONTHS_AGO:3", ["2026-08-28"]),
        ("THIS_QUARTER", [d for d in _CLOSE_DATES if "2026-10-01" <= d <= "2026-12-31"]),
        ("LAST_QUARTER", ["2026-08-28", "2026-09-30"]),
        ("NEXT_QUARTER", ["2027-01-01", "2027-02-25"]),
        ("LAST_N_QUARTERS:2", [d for d in _CLOSE_DATES if "2026-04-01" <= d <= "2026-09-30"]),
        ("LAST_N_YEARS:1", ["2025-12-31"]),
        ("N_YEARS_AGO:1", ["2025-12-31"]),
        ("NEXT_N_YEARS:1", ["2027-01-01", "2027-02-25"]),
        ("LAST_90_DAYS", [d for d in _CLOSE_DATES if "2026-08-29" <= d <= "2026-11-27"]),
        ("NEXT_90_DAYS", [d for d in _CLOSE_DATES if "2026-11-28" <= d <= "2027-02-25"]),
        ("next_n_days:2", ["2026-11-28", "2026-11-29"]),
    ],
)
def test_date_literal_ranges(conn: sqlite3.Connection, schema: Schema, literal: str,
                             expected: list[str]) -> None:
    for n, day in enumerate(_CLOSE_DATES, start=1):
        insert(conn, schema, "Opportunity", n, Name=day, StageName="Prospecting", CloseDate=day)
    rows = run(conn, schema,
               f"SELECT CloseDate FROM Opportunity WHERE CloseDate = {literal} ORDER BY CloseDate")
    assert [r[0] for r in rows] == expected


@pytest.mark.parametrize("literal", ["LAST_N_DAYS", "TODAY:3", "LAST_FISCAL_YEAR", "SOMEDAY"])
def test_unknown_date_literals(schema: Schema, literal: str) -> None:
    err = error_of(schema, f"SELECT Id FROM Opportunity WHERE CloseDate = {literal}")
    assert err.error_code == "MALFORMED_QUERY"


_FRAGMENTS = ["SELECT", "Id", "Name", ",", "FROM", "Account", "Contact", "WHERE", "=", "!=", "<", "LIKE",
              "IN", "NOT", "AND", "OR", "(", ")", "'x'", "'", "\\", "5", "-1", "2024-01-31",
              "2024-01-31T10:00:00Z", "TODAY", "LAST_N_DAYS:3", "null", "true", "ORDER", "BY", "DESC",
              "NULLS", "LAST", "LIMIT", ".", "Account.Name", "Parent", "FIELDS", "COUNT", "GROUP", "OFFSET",
              ":", "é", "\n", "$", ";",
              "(SELECT Id FROM Account", "(SELECT AccountId FROM Contact WHERE"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=14).map(" ".join),
    st.text(max_size=60),
))
def test_any_input_fails_only_with_soql_error(text: str) -> None:
    schema = load_schema()
    failure: SoqlError | None = None
    try:
        compiled = compile_soql(text, schema, include_deleted=False, now=NOW)
    except SoqlError as err:
        failure = err
    if failure is not None:
        assert failure.error_code in {"MALFORMED_QUERY", "INVALID_FIELD", "INVALID_TYPE", "API_ERROR"}
        assert failure.message
        return
    db = sqlite3.connect(":memory:")
    create_tables(db, schema)
    prepare_connection(db)
    db.execute(compiled.sql, compiled.params).fetchall()  # whatever compiles must also run
    db.close()


# ------------------------------------------------------------------------------------------ semi-joins


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT LastName FROM Contact WHERE AccountId IN (SELECT Id FROM Account WHERE Industry = 'retail')",
         ["Müller"]),
        ("SELECT LastName FROM Contact WHERE AccountId NOT IN "
         "(SELECT Id FROM Account WHERE Industry = 'Retail')",
         ["Ng", "O'Brien", "Smith"]),  # NOT IN keeps the contact without an account
        ("SELECT LastName FROM Contact WHERE AccountId IN (SELECT Id FROM Account WHERE ParentId != null) "
         "OR LastName = 'Smith'", ["Ng", "Smith"]),
        ("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Contact)",
         ["Acme", "Beta_Corp 100%", "Élan"]),
        # null ids ignored
        ("SELECT Name FROM Account WHERE Id NOT IN (SELECT AccountId FROM Contact)", ["acme labs"]),
        ("SELECT Name FROM Account WHERE Id IN (SELECT ParentId FROM Account)", ["Acme"]),
        ("SELECT Name FROM Account WHERE Id IN (SELECT Account.ParentId FROM Contact)", ["Acme"]),
        ("SELECT Name FROM Account WHERE Id IN (SELECT AccountId FROM Contact WHERE Account.Name LIKE 'A%') "
         "AND Active__c = true", ["Acme"]),
    ],
)
def test_semi_joins(conn: sqlite3.Connection, schema: Schema, soql: str, expected: list[str]) -> None:
    assert sorted(r[0] for r in run(conn, schema, soql)) == sorted(expected)


def test_semi_join_hides_deleted_rows_unless_query_all(conn: sqlite3.Connection, schema: Schema) -> None:
    zeta = rid(schema, "Account", 4)  # soft-deleted
    insert(conn, schema, "Contact", 9, LastName="OfZeta", AccountId=zeta)
    soql = "SELECT LastName FROM Contact WHERE AccountId IN (SELECT Id FROM Account WHERE Name = 'Zeta')"
    assert run(conn, schema, soql) == []
    assert run(conn, schema, soql, include_deleted=True) == [("OfZeta",)]


@pytest.mark.parametrize(
    ("soql", "code", "text"),
    [
        ("SELECT Id FROM Account WHERE Name IN (SELECT Id FROM Contact)", "INVALID_FIELD", "Id or reference"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT LastName FROM Contact)", "INVALID_FIELD", "'LastName'"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact WHERE ReportsToId IN "
         "(SELECT Id FROM Contact))", "MALFORMED_QUERY", "Nesting of semi join"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact ORDER BY LastName)",
         "MALFORMED_QUERY", "unexpected token: 'ORDER'"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId, Id FROM Contact)", "MALFORMED_QUERY",
         "unexpected token: ','"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT Id FROM Nope)", "INVALID_TYPE", "sObject type 'Nope'"),
        ("SELECT Id FROM Account WHERE Id IN (SELECT Nope FROM Contact)", "INVALID_FIELD",
         "No such column 'Nope' on entity 'Contact'"),
    ],
)
def test_semi_join_errors(schema: Schema, soql: str, code: str, text: str) -> None:
    err = error_of(schema, soql)
    assert err.error_code == code
    assert text in err.message


# ----------------------------------------------------------------------------------- date functions


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("CALENDAR_YEAR(CreatedDate) = 2026", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("CALENDAR_YEAR(CreatedDate) < 2026", ["Élan"]),
        ("CALENDAR_MONTH(CreatedDate) = 11", ["Acme", "acme labs", "Beta_Corp 100%"]),
        ("CALENDAR_QUARTER(CreatedDate) IN (1, 2)", ["Élan"]),
        ("DAY_IN_MONTH(CreatedDate) = 26", ["acme labs"]),
        ("DAY_IN_WEEK(CreatedDate) = 6", ["Acme", "Beta_Corp 100%"]),  # Fridays; Sunday = 1
        ("DAY_IN_WEEK(CreatedDate) = 2", ["Élan"]),  # 2024-01-01 was a Monday
        ("DAY_IN_YEAR(CreatedDate) = 1", ["Élan"]),
        ("HOUR_IN_DAY(CreatedDate) = 23", ["acme labs"]),
        ("HOUR_IN_DAY(CreatedDate) >= 8 AND HOUR_IN_DAY(CreatedDate) < 11", ["Acme", "Beta_Corp 100%"]),
        ("DAY_ONLY(CreatedDate) = 2026-11-26", ["acme labs"]),
        ("DAY_ONLY(CreatedDate) = TODAY", ["Acme"]),
        ("CALENDAR_YEAR(Customer_Since__c) = 2023", ["acme labs"]),
        ("CALENDAR_YEAR(Parent.CreatedDate) = 2026", ["Élan"]),
        ("NOT CALENDAR_YEAR(CreatedDate) = 2026", ["Élan"]),
    ],
)
def test_date_functions(conn: sqlite3.Connection, schema: Schema, where: str, expected: list[str]) -> None:
    assert sorted(names(conn, schema, f"WHERE {where}")) == sorted(expected)


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("HOUR_IN_DAY(Customer_Since__c) = 3", "MALFORMED_QUERY"),
        ("CALENDAR_MONTH(Name) = 3", "MALFORMED_QUERY"),
        ("CALENDAR_YEAR(CreatedDate) = '2024'", "INVALID_FIELD"),
        ("DAY_ONLY(CreatedDate) = 2024-01-01T00:00:00Z", "INVALID_FIELD"),
        ("CALENDAR_YEAR(CreatedDate LIKE 'x'", "MALFORMED_QUERY"),
        ("FISCAL_YEAR(CreatedDate) = 2024", "API_ERROR"),
    ],
)
def test_date_function_errors(schema: Schema, where: str, code: str) -> None:
    assert error_of(schema, f"SELECT Id FROM Account WHERE {where}").error_code == code
