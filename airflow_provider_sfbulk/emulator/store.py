"""Durable state of the emulator in SQLite: jobs, OAuth tokens and API usage over a rolling 24 hours.

Everything lives in ``DATA_DIR/emulator.sqlite3`` (WAL mode), next to the record tables of
:mod:`airflow_provider_sfbulk.emulator.schema` and the id allocator of
:mod:`airflow_provider_sfbulk.emulator.identity`. Every thread gets its own connection
(:meth:`Store.connection`); the server calls the store from a small thread pool so the event loop never
waits on a database lock. Job files live in ``DATA_DIR/jobs/<jobId>/``.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.schema import Schema, create_tables
from airflow_provider_sfbulk.protocol.states import JobState

DB_NAME = "emulator.sqlite3"

_JOBS_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    operation TEXT NOT NULL,
    object TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_date TEXT NOT NULL,
    system_modstamp TEXT NOT NULL,
    state TEXT NOT NULL,
    external_id_field TEXT,
    content_type TEXT NOT NULL DEFAULT 'CSV',
    api_version TEXT NOT NULL,
    line_ending TEXT NOT NULL DEFAULT 'LF',
    column_delimiter TEXT NOT NULL DEFAULT 'COMMA',
    assignment_rule_id TEXT,
    query TEXT,
    records_processed INTEGER NOT NULL DEFAULT 0,
    records_failed INTEGER NOT NULL DEFAULT 0,
    records_unprocessed INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    total_processing_time INTEGER NOT NULL DEFAULT 0,
    api_active_processing_time INTEGER NOT NULL DEFAULT 0,
    apex_processing_time INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    upload_count INTEGER NOT NULL DEFAULT 0,
    upload_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
_TOKENS_DDL = """
CREATE TABLE IF NOT EXISTS oauth_tokens (
    token TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    client_id TEXT NOT NULL,
    username TEXT NOT NULL,
    scope TEXT NOT NULL,
    issued_at REAL NOT NULL,
    expires_at REAL,
    revoked INTEGER NOT NULL DEFAULT 0
)
"""
_COUNTERS_DDL = """
CREATE TABLE IF NOT EXISTS usage_counters (
    name TEXT NOT NULL,
    minute INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, minute)
)
"""
#: Salesforce's daily allocations are counted over a rolling 24 hours ("Bulk API and Bulk API 2.0 Limits
#: and Allocations": "per rolling 24-hour period").
ROLLING_WINDOW = 24 * 3600
#: Usage is kept in buckets of this many seconds, so an event stops counting between 24 h and
#: 24 h + 1 minute after it happened.
BUCKET_SECONDS = 60


def sf_datetime(epoch: float) -> str:
    """Salesforce's JobInfo timestamp form: ``2022-01-02T17:38:59.000+0000``."""
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _bucket(epoch: float) -> int:
    return int(epoch // BUCKET_SECONDS)


def _window_start(now: float | None) -> int:
    """The oldest bucket still inside the rolling window ending at ``now``."""
    return _bucket((time.time() if now is None else now) - ROLLING_WINDOW)


@dataclass(frozen=True)
class JobRecord:
    """One row of the ``jobs`` table."""

    seq: int
    id: str
    kind: str
    operation: str
    object: str
    created_by: str
    created_date: str
    system_modstamp: str
    state: str
    external_id_field: str | None
    content_type: str
    api_version: str
    line_ending: str
    column_delimiter: str
    assignment_rule_id: str | None
    query: str | None
    records_processed: int
    records_failed: int
    records_unprocessed: int
    retries: int
    total_processing_time: int
    api_active_processing_time: int
    apex_processing_time: int
    error_message: str | None
    upload_count: int
    upload_bytes: int
    created_at: float
    updated_at: float

    @property
    def job_state(self) -> JobState:
        """The ``state`` column as a :class:`JobState`."""
        return JobState(self.state)


_JOB_COLUMNS = [f.name for f in fields(JobRecord)]
_UPDATABLE = set(_JOB_COLUMNS) - {"seq", "id", "kind", "created_by", "created_date", "created_at"}


@dataclass(frozen=True)
class TokenRecord:
    """One row of the ``oauth_tokens`` table: an access or refresh token the emulator issued."""

    token: str
    kind: str
    client_id: str
    username: str
    scope: str
    issued_at: float
    expires_at: float | None
    revoked: bool


class Store:
    """Thread-safe access to the emulator database and job directories."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self.jobs_dir = self.data_dir / "jobs"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False

    # -- connections -------------------------------------------------------------------------------
    def open_connection(self) -> sqlite3.Connection:
        """A new autocommit connection (callers issue their own BEGIN/COMMIT); closed by :meth:`close`."""
        conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("the store is closed")
            conn = self.open_connection()
            self._local.conn = conn
        return conn

    def release(self, conn: sqlite3.Connection) -> None:
        """Close a connection made by :meth:`open_connection`."""
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        """Close every connection the store opened; later :meth:`connection` calls fail."""
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error)."""
        conn = conn or self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def initialize(self, schema: Schema) -> None:
        """Create the data directory, every table and index (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(exist_ok=True)
        conn = self.connection()
        with self.transaction(conn):
            conn.execute(_JOBS_DDL)
            conn.execute("CREATE INDEX IF NOT EXISTS idx_jobs_kind_seq ON jobs (kind, seq)")
            conn.execute(_TOKENS_DDL)
            conn.execute(_COUNTERS_DDL)
            identity.ensure_id_table(conn)
            create_tables(conn, schema)

    # -- jobs --------------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        """The directory holding a job's upload and result files."""
        return self.jobs_dir / job_id

    def create_job(self, *, kind: str, operation: str, object_name: str, state: JobState, api_version: str,
                   external_id_field: str | None = None, content_type: str = "CSV",
                   line_ending: str = "LF", column_delimiter: str = "COMMA",
                   assignment_rule_id: str | None = None, query: str | None = None,
                   created_by: str = identity.USER_ID, now: float | None = None) -> JobRecord:
        """Insert a new job with a fresh ``750`` id and create its directory."""
        now = time.time() if now is None else now
        stamp = sf_datetime(now)
        conn = self.connection()
        with self.transaction(conn):
            (job_id,) = identity.allocate_ids(conn, identity.JOB_KEY_PREFIX, 1)
            conn.execute(
                "INSERT INTO jobs (id, kind, operation, object, created_by, created_date, system_modstamp, "
                "state, external_id_field, content_type, api_version, line_ending, column_delimiter, "
                "assignment_rule_id, query, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, operation, object_name, created_by, stamp, stamp, state.value,
                 external_id_field, content_type, api_version, line_ending, column_delimiter,
                 assignment_rule_id, query, now, now),
            )
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str, kind: str | None = None) -> JobRecord | None:
        """The job with this id (and of this kind, when given), or None."""
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id = ?"
        params: tuple[Any, ...] = (job_id,)
        if kind is not None:
            sql += " AND kind = ?"
            params += (kind,)
        row = self.connection().execute(sql, params).fetchone()
        return JobRecord(*row) if row else None

    def update_job(self, job_id: str, *, only_if_state: Iterable[JobState] | None = None,
                   touch: bool = True, now: float | None = None, **changes: Any) -> JobRecord | None:
        """Change columns of a job; with ``only_if_state`` only when the job is in one of those states.

        Returns the updated job, or None when the job is missing or the state condition failed.
        ``touch`` also moves ``systemModstamp``.
        """
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update job columns {sorted(bad)}")
        if "state" in changes and isinstance(changes["state"], JobState):
            changes["state"] = changes["state"].value
        if touch:
            now = time.time() if now is None else now
            changes.setdefault("system_modstamp", sf_datetime(now))
            changes.setdefault("updated_at", now)
        if not changes:
            return self.get_job(job_id)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"
        params: list[Any] = [*changes.values(), job_id]
        if only_if_state is not None:
            states = [s.value for s in only_if_state]
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        conn = self.connection()
        cursor = conn.execute(sql, params)
        if cursor.rowcount == 0:
            return None
        return self.get_job(job_id)

    def claim_upload(self, job_id: str) -> bool:
        """Mark the single upload of an Open job as started; False when another upload came first."""
        cursor = self.connection().execute(
            "UPDATE jobs SET upload_count = 1 WHERE id = ? AND state = ? AND upload_count = 0",
            (job_id, JobState.OPEN.value),
        )
        return cursor.rowcount == 1

    def list_jobs(self, kind: str, *, after_seq: int = 0, limit: int = 1000) -> list[JobRecord]:
        """Up to ``limit`` jobs of one kind whose ``seq`` is above ``after_seq``, oldest first."""
        rows = self.connection().execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?",
            (kind, after_seq, limit),
        ).fetchall()
        return [JobRecord(*row) for row in rows]

    def jobs_in_states(self, states: Iterable[JobState]) -> list[JobRecord]:
        """Every job in one of ``states``, oldest first."""
        values = [s.value for s in states]
        rows = self.connection().execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE state IN ({', '.join('?' for _ in values)}) "
            "ORDER BY seq",
            values,
        ).fetchall()
        return [JobRecord(*row) for row in rows]

    def delete_job(self, job_id: str) -> None:
        """Remove the job row and every file of the job."""
        self.connection().execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def expired_job_ids(self, cutoff: float) -> list[str]:
        """Jobs whose last change is older than ``cutoff`` (epoch seconds), except jobs being processed."""
        rows = self.connection().execute(
            "SELECT id FROM jobs WHERE updated_at < ? AND state != ?", (cutoff, JobState.IN_PROGRESS.value)
        ).fetchall()
        return [row[0] for row in rows]

    # -- tokens ------------------------------------------------------------------------------------
    def save_token(self, token: TokenRecord) -> None:
        """Store a token, replacing a row with the same token."""
        self.connection().execute(
            "INSERT OR REPLACE INTO oauth_tokens (token, kind, client_id, username, scope, issued_at, "
            "expires_at, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (token.token, token.kind, token.client_id, token.username, token.scope, token.issued_at,
             token.expires_at, int(token.revoked)),
        )

    def get_token(self, token: str) -> TokenRecord | None:
        """The stored record of a token, or None when the emulator never issued it (or purged it)."""
        row = self.connection().execute(
            "SELECT token, kind, client_id, username, scope, issued_at, expires_at, revoked "
            "FROM oauth_tokens WHERE token = ?",
            (token,),
        ).fetchone()
        if row is None:
            return None
        return TokenRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))

    def expire_access_tokens(self, now: float | None = None) -> int:
        """End every access token now (refresh tokens stay valid); returns how many were live."""
        now = time.time() if now is None else now
        cursor = self.connection().execute(
            "UPDATE oauth_tokens SET expires_at = ? WHERE kind = 'access' AND (expires_at IS NULL OR "
            "expires_at > ?)",
            (now, now),
        )
        return cursor.rowcount

    def purge_tokens(self, before: float) -> None:
        """Delete the access tokens that expired before ``before`` (epoch seconds)."""
        self.connection().execute(
            "DELETE FROM oauth_tokens WHERE kind = 'access' AND expires_at < ?", (before,)
        )

    # -- usage over a rolling 24 hours -------------------------------------------------------------
    def increment(self, name: str, amount: int = 1, *, now: float | None = None) -> int:
        """Record ``amount`` units of ``name`` at ``now``; returns the usage of the last 24 hours."""
        now = time.time() if now is None else now
        conn = self.connection()
        conn.execute(
            "INSERT INTO usage_counters (name, minute, value) VALUES (?, ?, ?) "
            "ON CONFLICT(name, minute) DO UPDATE SET value = value + excluded.value",
            (name, _bucket(now), amount),
        )
        return self.counter(name, now=now)

    def counter(self, name: str, *, now: float | None = None) -> int:
        """Usage of ``name`` over the rolling 24 hours ending at ``now``."""
        row = self.connection().execute(
            "SELECT SUM(value) FROM usage_counters WHERE name = ? AND minute >= ?", (name, _window_start(now))
        ).fetchone()
        return int(row[0] or 0)

    def counters(self, *, now: float | None = None) -> dict[str, int]:
        """Usage of every counter over the rolling 24 hours ending at ``now``."""
        rows = self.connection().execute(
            "SELECT name, SUM(value) FROM usage_counters WHERE minute >= ? GROUP BY name",
            (_window_start(now),),
        ).fetchall()
        return {name: int(value) for name, value in rows}

    def purge_usage(self, *, now: float | None = None) -> int:
        """Forget usage older than the rolling window; returns how many buckets went."""
        cursor = self.connection().execute("DELETE FROM usage_counters WHERE minute < ?",
                                           (_window_start(now),))
        return cursor.rowcount
