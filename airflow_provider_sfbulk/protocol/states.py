"""Job states, operations and CSV dialect names of the Bulk API 2.0.

One definition shared by the hook, the operators, the sensor, the trigger and the emulator.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    """State of a Bulk API 2.0 job, spelled exactly as Salesforce spells it."""

    OPEN = "Open"
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"
    #: Bulk API 1.0 ("Classic") jobs only: no more batches will be added. They show up in the Bulk API 2.0
    #: job list unless it is filtered by ``jobType``; Bulk API 2.0 jobs never take this state.
    CLOSED = "Closed"

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change state."""
        return self in TERMINAL_STATES

    @property
    def outcome(self) -> str:
        """The trigger event status for a terminal state: ``success``, ``failed`` or ``aborted``."""
        if self is JobState.JOB_COMPLETE:
            return "success"
        if self is JobState.FAILED:
            return "failed"
        if self is JobState.ABORTED:
            return "aborted"
        raise ValueError(f"job state {self.value} is not terminal")


TERMINAL_STATES = frozenset({JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED})


class JobKind(str, Enum):
    """The two Bulk API 2.0 job families; the value is the URL segment under ``/jobs/``."""

    INGEST = "ingest"
    QUERY = "query"


class IngestOperation(str, Enum):
    """Operations an ingest job can run."""

    INSERT = "insert"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"
    HARD_DELETE = "hardDelete"


class QueryOperation(str, Enum):
    """Operations a query job can run (``queryAll`` includes deleted and archived rows)."""

    QUERY = "query"
    QUERY_ALL = "queryAll"


#: ``columnDelimiter`` names and the character each one stands for.
COLUMN_DELIMITERS: dict[str, str] = {
    "BACKQUOTE": "`",
    "CARET": "^",
    "COMMA": ",",
    "PIPE": "|",
    "SEMICOLON": ";",
    "TAB": "\t",
}

#: ``lineEnding`` names and the bytes each one stands for.
LINE_ENDINGS: dict[str, str] = {"LF": "\n", "CRLF": "\r\n"}

#: Salesforce's result set names as they appear in URLs.
RESULT_SETS: tuple[str, ...] = ("successfulResults", "failedResults", "unprocessedrecords")
