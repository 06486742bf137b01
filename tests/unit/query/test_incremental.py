"""compose_interval_soql: the SOQL of one data interval (literals, the user's WHERE in parentheses, ORDER BY
and WITH kept after it), what it refuses, the interval's folder name, and the boundary rule checked on the
emulator's SOQL engine: a timestamp lies in exactly one of two consecutive intervals."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sfbulk.emulator.query_results import prepare_connection
from airflow_provider_sfbulk.emulator.schema import create_tables, load_schema
from airflow_provider_sfbulk.emulator.soql import compile_soql, format_datetime
from airflow_provider_sfbulk.query.incremental import (
    IncrementalQueryError,
    compose_interval_soql,
    soql_datetime,
)

UTC = timezone.utc
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 2, tzinfo=UTC)
FILTER = "SystemModstamp >= 2024-01-01T00:00:00Z AND SystemModstamp < 2024-01-02T00:00:00Z"


def compose(soql: str, field: str = "SystemModstamp") -> str:
    return compose_interval_soql(soql, field, START, END).soql


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT Id FROM Account", f"SELECT Id FROM Account WHERE {FILTER}"),
        (
            "SELECT Id, Name FROM Account WHERE Type = 'Customer' OR Rating = 'Hot' ORDER BY Id",
            "SELECT Id, Name FROM Account WHERE (Type = 'Customer' OR Rating = 'Hot') AND "
            f"{FILTER} ORDER BY Id",
        ),
        (  # WHERE and parentheses inside a string are not clauses
            "SELECT Id FROM Account WHERE Name = 'a WHERE (b\\' ORDER BY' ORDER BY Name DESC",
            f"SELECT Id FROM Account WHERE (Name = 'a WHERE (b\\' ORDER BY') AND {FILTER} ORDER BY Name DESC",
        ),
        (  # a semi-join's WHERE is not the top-level one; WITH stays after the filter
            "select Id from Account a where Id in (select AccountId from Contact where Name like 'a%') "
            "with security_enforced",
            "select Id from Account a WHERE (Id in (select AccountId from Contact where Name like 'a%')) "
            f"AND {FILTER} with security_enforced",
        ),
        (  # a parent-to-child sub-query in the select list
            "SELECT Id, (SELECT Id FROM Contacts WHERE Email != null) FROM Account",
            f"SELECT Id, (SELECT Id FROM Contacts WHERE Email != null) FROM Account WHERE {FILTER}",
        ),
        ("SELECT Id FROM Order ORDER BY Id", f"SELECT Id FROM Order WHERE {FILTER} ORDER BY Id"),
        ("SELECT Id FROM Group", f"SELECT Id FROM Group WHERE {FILTER}"),
        (
            "  SELECT Id\n  FROM Opportunity\n WHERE IsWon = true\n",
            f"SELECT Id\n  FROM Opportunity WHERE (IsWon = true) AND {FILTER}",
        ),
        (
            "SELECT Id FROM Account USING SCOPE mine WHERE Name != null",
            f"SELECT Id FROM Account USING SCOPE mine WHERE (Name != null) AND {FILTER}",
        ),
    ],
)
def test_composition(soql: str, expected: str) -> None:
    assert compose(soql) == expected


def test_other_field_and_what_it_reports() -> None:
    query = compose_interval_soql("SELECT Id FROM Contact", "LastModifiedDate", START, END)
    assert query.soql == (
        "SELECT Id FROM Contact WHERE LastModifiedDate >= 2024-01-01T00:00:00Z AND "
        "LastModifiedDate < 2024-01-02T00:00:00Z"
    )
    assert query.object_name == "Contact"
    assert query.folder_name == "20240101T000000Z_20240102T000000Z"
    assert query.describe() == {
        "field": "LastModifiedDate",
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-02T00:00:00Z",
        "soql": query.soql,
    }


def test_literals_are_utc_whole_seconds() -> None:
    assert soql_datetime(datetime(2024, 6, 1, 2, 30, 5, tzinfo=timezone(timedelta(hours=2)))) == (
        "2024-06-01T00:30:05Z"
    )
    with pytest.raises(IncrementalQueryError, match="no time zone"):
        soql_datetime(datetime(2024, 1, 1))
    with pytest.raises(IncrementalQueryError, match="fraction of a second"):
        soql_datetime(datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC))


@pytest.mark.parametrize(
    ("soql", "message"),
    [
        ("SELECT Id FROM Account LIMIT 10", "LIMIT would cut"),
        ("SELECT Id FROM Account ORDER BY Id LIMIT :n", "LIMIT would cut"),
        ("SELECT Id FROM Account ORDER BY Id OFFSET 5", "OFFSET"),
        ("SELECT Name, COUNT(Id) FROM Account GROUP BY Name", "GROUP BY"),
        ("SELECT Id FROM Account WHERE Name = 'x", "unterminated string"),
        ("SELECT Id FROM Account WHERE (Name = 'x'", r"unmatched '\('"),
        ("SELECT Id FROM Account WHERE Name = 'x')", r"unmatched '\)'"),
        ("Id FROM Account", "must start with SELECT"),
        ("SELECT Id, Name", "no top-level 'FROM Object'"),
        ("SELECT Id FROM Account ORDER BY Id WHERE Name = 'x'", "a second WHERE"),
        ("SELECT Id FROM Account WHERE ORDER BY Id", "has no condition"),
    ],
)
def test_refused(soql: str, message: str) -> None:
    with pytest.raises(IncrementalQueryError, match=message):
        compose(soql)


def test_bad_field_and_intervals_are_refused() -> None:
    with pytest.raises(IncrementalQueryError, match="incremental_field"):
        compose("SELECT Id FROM Account", "SystemModstamp > 2020-01-01T00:00:00Z OR Id")
    with pytest.raises(IncrementalQueryError, match="has none"):
        compose_interval_soql("SELECT Id FROM Account", "SystemModstamp", None, END)
    with pytest.raises(IncrementalQueryError, match="is empty"):
        compose_interval_soql("SELECT Id FROM Account", "SystemModstamp", END, END)
    with pytest.raises(IncrementalQueryError, match="is empty"):
        compose_interval_soql("SELECT Id FROM Account", "SystemModstamp", END, START)


_SCHEMA = load_schema()


def _matches(soql: str, stamp: str) -> bool:
    """True when a single Account stamped ``stamp`` is returned by ``soql`` on the emulator's engine."""
    db = sqlite3.connect(":memory:")
    create_tables(db, _SCHEMA)
    prepare_connection(db)
    db.execute(
        'INSERT INTO "rec_Account" ("Id", "Name", "IsDeleted", "CreatedDate", "LastModifiedDate", '
        '"SystemModstamp") VALUES (?, ?, 0, ?, ?, ?)',
        ("001000000000001AAA", "Acme", stamp, stamp, stamp),
    )
    compiled = compile_soql(soql, _SCHEMA, include_deleted=False)
    return bool(db.execute(compiled.sql, compiled.params).fetchall())


@settings(max_examples=40, deadline=None)
@given(offset_ms=st.integers(min_value=-3_000, max_value=3_000) | st.sampled_from([-1, 0, 1]))
def test_a_timestamp_lies_in_exactly_one_of_two_consecutive_intervals(offset_ms: int) -> None:
    bound = END
    stamp = format_datetime(bound + timedelta(milliseconds=offset_ms))
    soql = "SELECT Id FROM Account WHERE Name != null"
    first = compose_interval_soql(soql, "SystemModstamp", bound - timedelta(seconds=5), bound).soql
    second = compose_interval_soql(soql, "SystemModstamp", bound, bound + timedelta(seconds=5)).soql
    hits = (_matches(first, stamp), _matches(second, stamp))
    assert hits == ((True, False) if offset_ms < 0 else (False, True))
