"""An optional log of every request the emulator answered, one JSON line each (``--request-log FILE``).

Each line holds the time the request arrived and the time it was answered (Unix seconds), the method, the
normalised path, the query string, the status and ``client``: the first 12 hex digits of the SHA-256 of
the bearer token (``"-"`` without one), never the token itself. Every token request mints a new token
and every process of an Airflow deployment keeps its own, so ``client`` tells the processes apart: the
distributed test suite reads it to prove that each job is polled by one triggerer at a time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import IO

__all__ = ["RequestLog", "client_fingerprint"]


def client_fingerprint(authorization: str | None) -> str:
    """A short, one-way name of the bearer token in an ``Authorization`` header (``"-"`` for none)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return "-"
    token = authorization[len("bearer "):].strip()
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


class RequestLog:
    """Appends one JSON line per answered request to ``path`` (flushed at once, safe across threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()

    def record(self, *, started: float, ended: float, method: str, path: str, query: str, status: int,
               authorization: str | None) -> None:
        """Write one line."""
        line = json.dumps({"t": round(started, 4), "end": round(ended, 4), "method": method, "path": path,
                           "query": query, "status": status, "client": client_fingerprint(authorization)})
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")

    def close(self) -> None:
        """Close the file; later records are dropped."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
