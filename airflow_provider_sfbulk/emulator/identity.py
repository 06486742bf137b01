"""The emulated org's fixed identities and a persistent allocator of record and job ids."""

from __future__ import annotations

import sqlite3
import threading

from airflow_provider_sfbulk.protocol.ids import make_id, make_ids

#: Pod / instance part used in every id the emulator makes (characters 4-6 of an id).
POD = "5fE"
ORG_ID = make_id("00D", POD, 1)
USER_ID = make_id("005", POD, 1)
JOB_KEY_PREFIX = "750"

_lock = threading.Lock()


def ensure_id_table(conn: sqlite3.Connection) -> None:
    """Create the table that holds the next id number of each key prefix, unless it exists."""
    conn.execute("CREATE TABLE IF NOT EXISTS id_sequence (prefix TEXT PRIMARY KEY, next INTEGER NOT NULL)")


def allocate_ids(conn: sqlite3.Connection, key_prefix: str, count: int = 1) -> list[str]:
    """Reserve ``count`` new 18-character ids with ``key_prefix``; durable across restarts.

    The caller's transaction is used; ids reserved by a transaction that rolls back are reused,
    which is harmless because nothing referenced them.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    with _lock:
        row = conn.execute("SELECT next FROM id_sequence WHERE prefix = ?", (key_prefix,)).fetchone()
        start = row[0] if row else 1
        conn.execute(
            "INSERT INTO id_sequence (prefix, next) VALUES (?, ?) "
            "ON CONFLICT(prefix) DO UPDATE SET next = excluded.next",
            (key_prefix, start + count),
        )
    return make_ids(key_prefix, POD, start, count)
