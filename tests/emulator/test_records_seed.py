"""Synthetic seeding of record tables."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.records import seed_records
from airflow_provider_sfbulk.emulator.schema import Schema, create_tables, load_schema
from airflow_provider_sfbulk.emulator.values import make_parser
from airflow_provider_sfbulk.protocol.ids import is_valid_id

SCHEMA = load_schema()
FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def fresh(path: Path) -> tuple[sqlite3.Connection, Schema]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    create_tables(conn, SCHEMA)
    identity.ensure_id_table(conn)
    conn.execute("COMMIT")
    return conn, SCHEMA


def rows(conn: sqlite3.Connection, object_name: str) -> list[tuple]:
    return conn.execute(f'SELECT * FROM "rec_{object_name}" ORDER BY rowid').fetchall()


def columns(conn: sqlite3.Connection, object_name: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("rec_{object_name}")')]


def test_seeded_records_are_valid(tmp_path: Path):
    conn, schema = fresh(tmp_path / "db.sqlite3")
    assert seed_records(conn, schema, "Account", 300, seed=3, now=lambda: FIXED_NOW, chunk_size=128) == 300
    assert seed_records(conn, schema, "Opportunity", 200, seed=3, now=lambda: FIXED_NOW) == 200
    for object_name in ("Account", "Opportunity"):
        obj = schema.get_object(object_name)
        assert obj is not None
        names = columns(conn, object_name)
        for record in rows(conn, object_name):
            values = dict(zip(names, record, strict=True))
            assert is_valid_id(values["Id"])
            assert values["Id"].startswith(obj.key_prefix)
            assert values["IsDeleted"] == 0
            assert values["CreatedDate"] == "2026-01-02T03:04:05.678Z"
            assert values["CreatedById"] == identity.USER_ID
            for fdef in obj.user_fields():
                value = values[fdef.name]
                if fdef.required:
                    assert value is not None, fdef.name
                if value is None or fdef.type == "reference":
                    continue
                text = {"boolean": lambda v: "true" if v else "false"}.get(fdef.type, str)(value)
                make_parser(fdef, schema)(text)  # raises RowError when a value breaks the schema
    accounts = {r[0] for r in conn.execute('SELECT "Id" FROM "rec_Account"')}
    parents = [r[0] for r in conn.execute('SELECT "AccountId" FROM "rec_Opportunity"')]
    assert all(parent in accounts for parent in parents if parent is not None)
    assert sum(parent is not None for parent in parents) > 100


def test_external_ids_are_unique_and_continue_across_calls(tmp_path: Path):
    conn, schema = fresh(tmp_path / "db.sqlite3")
    seed_records(conn, schema, "Invoice__c", 5)
    seed_records(conn, schema, "Invoice__c", 3)
    numbers = [r[0] for r in conn.execute('SELECT "Invoice_Number__c" FROM "rec_Invoice__c" ORDER BY rowid')]
    assert numbers == [f"Invoice__c-{n}" for n in range(1, 9)]


def test_no_parents_means_null_references(tmp_path: Path):
    conn, schema = fresh(tmp_path / "db.sqlite3")
    seed_records(conn, schema, "Contact", 50)
    assert conn.execute('SELECT COUNT(*) FROM "rec_Contact" WHERE "AccountId" IS NOT NULL').fetchone()[0] == 0


def test_seeding_is_deterministic(tmp_path: Path):
    first, schema = fresh(tmp_path / "a.sqlite3")
    second, _ = fresh(tmp_path / "b.sqlite3")
    third, _ = fresh(tmp_path / "c.sqlite3")
    for conn, seed in ((first, 7), (second, 7), (third, 8)):
        seed_records(conn, schema, "Account", 40, seed=seed, now=lambda: FIXED_NOW)
        seed_records(conn, schema, "Contact", 60, seed=seed, now=lambda: FIXED_NOW)
    assert rows(first, "Contact") == rows(second, "Contact")
    assert rows(first, "Account") == rows(second, "Account")
    assert rows(first, "Account") != rows(third, "Account")


def test_seed_rejects_unknown_object_and_negative_count(tmp_path: Path):
    conn, schema = fresh(tmp_path / "db.sqlite3")
    with pytest.raises(ValueError, match="unknown object"):
        seed_records(conn, schema, "Nope", 1)
    with pytest.raises(ValueError, match="negative"):
        seed_records(conn, schema, "Account", -1)
    assert seed_records(conn, schema, "account", 0) == 0
