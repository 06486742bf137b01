"""Synthetic, valid records written straight into the record tables (``--seed-records OBJECT=N``).

Query tests and benchmarks need millions of rows without loading them through the ingest path.
:func:`seed_records` builds them in Python and inserts them with ``executemany``, one transaction per
``chunk_size`` rows. Every value satisfies the schema (lengths, restricted picklists, precision, required
fields), unique and external id fields get ``"<Object>-<n>"`` (``<n>`` continues across calls, kept in
the ``id_sequence`` table under ``seed:<Object>``), and reference fields point at live parent records
that existed before the call (none when the parent object is empty). The output depends only on the
seed, the object and how many records were seeded before.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.schema import FieldDef, ObjectDef, Schema
from airflow_provider_sfbulk.emulator.values import format_datetime

#: Parent ids kept in memory to draw references from.
_PARENT_SAMPLE = 100_000
_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper",
          "kestrel", "lumen", "maple", "north", "onyx", "pine", "quartz", "river", "summit", "tundra")
_CITIES = ("Austin", "Berlin", "Chicago", "Dublin", "Lisbon", "Madrid", "Oslo", "Paris", "Sydney", "Tokyo")
_BASE_DATE = date(2015, 1, 1)
_BASE_MOMENT = datetime(2015, 1, 1, tzinfo=timezone.utc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _next_number(conn: sqlite3.Connection, obj: ObjectDef, count: int) -> int:
    """Reserve ``count`` sequence numbers for ``obj``'s synthetic external ids; returns the first."""
    key = f"seed:{obj.name}"
    row = conn.execute("SELECT next FROM id_sequence WHERE prefix = ?", (key,)).fetchone()
    start = row[0] if row else 1
    conn.execute(
        "INSERT INTO id_sequence (prefix, next) VALUES (?, ?) "
        "ON CONFLICT(prefix) DO UPDATE SET next = excluded.next",
        (key, start + count),
    )
    return start


def _fit(text: str, length: int | None) -> str:
    return text if length is None or len(text) <= length else text[-length:]


class _Picker:
    """Cheap deterministic choice: record ``n`` takes ``pool[(n * step + offset) % len(pool)]``."""

    def __init__(self, pool: list[Any], rng: random.Random) -> None:
        self.pool = pool
        self.size = len(pool)
        self.step = rng.randrange(1, 1 << 31) | 1
        self.offset = rng.randrange(1 << 31)

    def __call__(self, n: int) -> Any:
        return self.pool[(n * self.step + self.offset) % self.size]


def _pool(rng: random.Random, make: Callable[[], Any], size: int = 4093) -> list[Any]:
    return [make() for _ in range(size)]


def _generator(obj: ObjectDef, fdef: FieldDef, rng: random.Random,
               parents: dict[str, list[str]]) -> Callable[[int], Any]:
    """A function from the record number to a valid value of ``fdef``."""
    ftype, length = fdef.type, fdef.length
    lowered = fdef.name.lower()
    if fdef.unique or fdef.external_id:
        if ftype == "email":
            return lambda n: _fit(f"{obj.name.lower()}{n}@example.com", length)
        if ftype in ("int", "double", "currency", "percent"):
            return lambda n: n
        return lambda n: _fit(f"{obj.name}-{n}", length)
    if ftype == "reference":
        pool = parents.get(fdef.reference_to or "", [])
        return _Picker(pool, rng) if pool else (lambda n: None)
    if ftype == "picklist":
        return _Picker(list(fdef.picklist_values), rng)
    if ftype == "boolean":
        return _Picker([0, 1], rng)
    if ftype == "int":
        top = min(10 ** (fdef.precision or 9), 100_000)
        return _Picker(_pool(rng, lambda: rng.randrange(top)), rng)
    if ftype in ("double", "currency", "percent"):
        scale = fdef.scale if fdef.scale is not None else 2
        top = min(10 ** ((fdef.precision or 18) - scale), 10_000_000)
        if ftype == "percent":
            top = min(top, 100)
        return _Picker(_pool(rng, lambda: round(rng.random() * (top - 1), scale)), rng)
    if ftype == "date":
        return _Picker(_pool(rng, lambda: (_BASE_DATE + timedelta(days=rng.randrange(3650))).isoformat()),
                       rng)
    if ftype == "datetime":
        return _Picker(_pool(rng, lambda: format_datetime(
            _BASE_MOMENT + timedelta(seconds=rng.randrange(315_360_000)))), rng)
    if ftype == "phone":
        return _Picker(_pool(rng, lambda: _fit(f"+1 555 {rng.randrange(10_000_000):07d}", length)), rng)
    words = _Picker(list(_WORDS), rng)
    if ftype == "email":
        return lambda n: _fit(f"{words(n)}.{n}@example.com", length)
    if ftype == "url":
        return lambda n: _fit(f"https://www.{words(n)}{n}.example.com", length)
    if lowered == "name" or lowered.endswith("name"):
        return lambda n: _fit(f"{words(n).title()} {obj.name} {n}", length)
    if "city" in lowered:
        return _Picker([_fit(city, length) for city in _CITIES], rng)
    other = _Picker(list(_WORDS), rng)
    return lambda n: _fit(f"{words(n)} {other(n)} {n}", length)


def _column(gen: Callable[[int], Any], numbers: range) -> list[Any]:
    """Values of one field for every record number of a chunk."""
    if isinstance(gen, _Picker):
        pool, step, offset, size = gen.pool, gen.step, gen.offset, gen.size
        return [pool[(n * step + offset) % size] for n in numbers]
    return [gen(n) for n in numbers]


def _thin(values: list[Any], numbers: range, rng: random.Random) -> list[Any]:
    """Null about 15 % of an optional field's values."""
    step, offset = rng.randrange(1, 1 << 31) | 1, rng.randrange(1 << 31)
    return [v if (n * step + offset) % 100 < 85 else None for n, v in zip(numbers, values, strict=True)]


def seed_records(
    conn: sqlite3.Connection,
    schema: Schema,
    object_name: str,
    count: int,
    *,
    seed: int = 0,
    now: Callable[[], datetime] = _utcnow,
    chunk_size: int = 50_000,
) -> int:
    """Insert ``count`` synthetic valid records of ``object_name``; returns how many were inserted."""
    obj = schema.get_object(object_name)
    if obj is None:
        raise ValueError(f"unknown object {object_name!r}")
    if count < 0:
        raise ValueError("count must not be negative")
    identity.ensure_id_table(conn)
    if conn.in_transaction:
        conn.commit()
    parents: dict[str, list[str]] = {}
    for fdef in obj.user_fields():
        target = schema.get_object(fdef.reference_to or "") if fdef.type == "reference" else None
        if target is not None and target.name not in parents:
            parents[target.name] = [row[0] for row in conn.execute(
                f'SELECT "Id" FROM {target.table} WHERE "IsDeleted" = 0 ORDER BY rowid LIMIT ?',
                (_PARENT_SAMPLE,))]
    names = list(obj.fields)
    stamp = format_datetime(now())
    inserted = 0
    columns = ", ".join(f'"{name}"' for name in names)
    marks = ", ".join("?" * len(names))
    sql = f"INSERT INTO {obj.table} ({columns}) VALUES ({marks})"
    while inserted < count:
        size = min(chunk_size, count - inserted)
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = _next_number(conn, obj, size)
            rng = random.Random(f"{seed}:{obj.name}:{start}")
            numbers = range(start, start + size)
            system: dict[str, Any] = {
                "IsDeleted": 0, "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp,
                "CreatedById": identity.USER_ID, "LastModifiedById": identity.USER_ID,
            }
            values_by_field: list[list[Any]] = []
            for name in names:
                fdef = obj.fields[name]
                if name == "Id":
                    values_by_field.append(identity.allocate_ids(conn, obj.key_prefix, size))
                elif fdef.system:
                    values_by_field.append([system[name]] * size)
                else:
                    column = _column(_generator(obj, fdef, rng, parents), numbers)
                    keep = fdef.required or fdef.unique or fdef.external_id
                    values_by_field.append(column if keep else _thin(column, numbers, rng))
            rows = list(zip(*values_by_field, strict=True))
            conn.executemany(sql, rows)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        inserted += size
    return inserted
