"""The persisted state of one load: its rounds, their parts (one job each), and its JSON form.

A load is a list of rounds. Round 0 sends the source file; each later round sends the rows of the round
before that are worth another try (a retry file). Every round is cut into parts at record boundaries, and
each part becomes one ingest job, walking the phases of :class:`Phase`. The whole
:class:`LoadState` is written to the task's checkpoint after every change, so a process that dies at any
point is followed by one that knows exactly which jobs exist and how far each part got.

The JSON form (:meth:`LoadState.to_json`) is the checkpoint document and, for its ``rounds``, part of the
load's manifest; :meth:`LoadState.from_json` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_provider_sfbulk.protocol.states import JobState

__all__ = [
    "CREATED_DATE_RESOLUTION",
    "STATE_VERSION",
    "ClockOffset",
    "JobStats",
    "LoadState",
    "LostCreate",
    "Part",
    "PartResults",
    "Phase",
    "ResultFileSummary",
    "RetryPlan",
    "Round",
    "Transition",
    "now_iso",
]

#: Version of the JSON document; a checkpoint of another version is not resumed.
STATE_VERSION = 1

#: Seconds: a job's ``createdDate`` is given to the second (``...T17:38:59.000+0000``).
CREATED_DATE_RESOLUTION = 1.0


def now_iso() -> str:
    """The current UTC time as ISO 8601 text with milliseconds (the audit trail's clock)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Phase(str, Enum):
    """How far one part got on its way into a job.

    ``NEW`` no job yet; ``CREATING`` a create request was sent (its answer may be lost); ``CREATED`` the job
    exists, no data sent; ``UPLOADING`` the upload was sent (it may or may not have arrived); ``UPLOADED``
    the job holds the data and is ``Open``; ``CLOSED`` ``UploadComplete`` was sent (or the job was created
    with its data in one request), so Salesforce processes it.
    """

    NEW = "new"
    CREATING = "creating"
    CREATED = "created"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    CLOSED = "closed"

    @property
    def has_data_in_a_job(self) -> bool:
        """True once a job holds the part's data (``UPLOADED`` or ``CLOSED``)."""
        return self in (Phase.UPLOADED, Phase.CLOSED)


@dataclass
class Transition:
    """One line of a part's audit trail: a job state seen, or a step of ours (``Uploaded``...)."""

    job_id: str
    state: str
    at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: ``job_id``, ``state``, ``at`` and the extra keys."""
        return {"job_id": self.job_id, "state": self.state, "at": self.at, **self.extra}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Transition:
        """Read the JSON form back."""
        rest = {key: value for key, value in document.items() if key not in ("job_id", "state", "at")}
        return cls(document["job_id"], document["state"], document["at"], rest)


@dataclass
class ResultFileSummary:
    """One result set of one job as stored: where, how many records, how big, its SHA-256."""

    result_set: str
    uri: str
    records: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """The JSON form (the manifest's file entries)."""
        return {
            "result_set": self.result_set,
            "uri": self.uri,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ResultFileSummary:
        """Read the JSON form back."""
        return cls(
            document["result_set"],
            document["uri"],
            document["records"],
            document["bytes"],
            document["sha256"],
        )


@dataclass
class JobStats:
    """What Salesforce reports about one job's work: internal retries and processing times (ms)."""

    retries: int | None = None
    total_processing_time: int | None = None
    apex_processing_time: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (Salesforce's names)."""
        return {
            "retries": self.retries,
            "totalProcessingTime": self.total_processing_time,
            "apexProcessingTime": self.apex_processing_time,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> JobStats:
        """Read the JSON form back."""
        return cls(
            document.get("retries"), document.get("totalProcessingTime"), document.get("apexProcessingTime")
        )


@dataclass
class PartResults:
    """What collecting one finished job found: its final state, counts and the three stored files."""

    id: str
    state: str
    error_message: str | None
    number_records_processed: int | None
    number_records_failed: int | None
    records_successful: int
    records_failed: int
    records_unprocessed: int
    files: dict[str, ResultFileSummary]
    records_sent: int
    reconciled: bool
    stats: JobStats = field(default_factory=JobStats)

    @property
    def completed(self) -> bool:
        """True when the job ended ``JobComplete`` (rows may still have failed)."""
        return self.state == JobState.JOB_COMPLETE.value

    def file_uri(self, result_set: str) -> str:
        """URI of one stored result set."""
        return self.files[result_set].uri

    def to_json(self) -> dict[str, Any]:
        """The JSON form (the manifest's ``results`` of a part)."""
        return {
            "id": self.id,
            "state": self.state,
            "error_message": self.error_message,
            "number_records_processed": self.number_records_processed,
            "number_records_failed": self.number_records_failed,
            "records_successful": self.records_successful,
            "records_failed": self.records_failed,
            "records_unprocessed": self.records_unprocessed,
            "files": {name: summary.to_json() for name, summary in self.files.items()},
            "records_sent": self.records_sent,
            "reconciled": self.reconciled,
            "stats": self.stats.to_json(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PartResults:
        """Read the JSON form back."""
        return cls(
            id=document["id"],
            state=document["state"],
            error_message=document.get("error_message"),
            number_records_processed=document.get("number_records_processed"),
            number_records_failed=document.get("number_records_failed"),
            records_successful=document["records_successful"],
            records_failed=document["records_failed"],
            records_unprocessed=document["records_unprocessed"],
            files={name: ResultFileSummary.from_json(f) for name, f in document["files"].items()},
            records_sent=document["records_sent"],
            reconciled=document["reconciled"],
            stats=JobStats.from_json(document.get("stats") or {}),
        )


@dataclass
class Part:
    """One part of a round: a slice of whole records that one job carries.

    :param index: position in the round, from 0.
    :param bytes: size of the part's CSV, header included.
    :param records: data records in the part.
    :param first_record: number of its first record in the round's source (from 1).
    :param sha256: SHA-256 of the part's bytes: a re-split after a restart must give the same bytes.
    """

    index: int
    bytes: int
    records: int
    first_record: int
    sha256: str
    phase: Phase = Phase.NEW
    job_id: str | None = None
    abandoned_job_ids: list[str] = field(default_factory=list)
    states: list[Transition] = field(default_factory=list)
    mode: str | None = None
    sent_at: float | None = None
    state: str | None = None
    results: PartResults | None = None

    @property
    def job_state(self) -> JobState | None:
        """The last job state seen (``None`` before the job was closed)."""
        return JobState(self.state) if self.state is not None else None

    @property
    def terminal(self) -> bool:
        """True when the part's job reached a terminal state."""
        job_state = self.job_state
        return job_state is not None and job_state.is_terminal

    @property
    def running(self) -> bool:
        """True when the job was closed and is still processing."""
        return self.phase is Phase.CLOSED and not self.terminal

    @property
    def broken(self) -> bool:
        """True when the job ended ``Failed`` or ``Aborted``."""
        return self.job_state in (JobState.FAILED, JobState.ABORTED)

    def known_job_ids(self) -> list[str]:
        """Every job id this part has had: the current one and the abandoned ones."""
        return [job_id for job_id in [self.job_id, *self.abandoned_job_ids] if job_id]

    def last_recorded_state(self) -> str | None:
        """The state of the last audit-trail line, if any."""
        return self.states[-1].state if self.states else None

    def to_json(self) -> dict[str, Any]:
        """The JSON form; optional keys appear once they have a value."""
        document: dict[str, Any] = {
            "index": self.index,
            "bytes": self.bytes,
            "records": self.records,
            "first_record": self.first_record,
            "sha256": self.sha256,
            "phase": self.phase.value,
            "job_id": self.job_id,
            "abandoned_job_ids": list(self.abandoned_job_ids),
            "states": [transition.to_json() for transition in self.states],
        }
        for key in ("mode", "sent_at", "state"):
            if getattr(self, key) is not None:
                document[key] = getattr(self, key)
        if self.results is not None:
            document["results"] = self.results.to_json()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Part:
        """Read the JSON form back."""
        results = document.get("results")
        return cls(
            index=document["index"],
            bytes=document["bytes"],
            records=document["records"],
            first_record=document["first_record"],
            sha256=document["sha256"],
            phase=Phase(document["phase"]),
            job_id=document.get("job_id"),
            abandoned_job_ids=list(document.get("abandoned_job_ids", [])),
            states=[Transition.from_json(item) for item in document.get("states", [])],
            mode=document.get("mode"),
            sent_at=document.get("sent_at"),
            state=document.get("state"),
            results=PartResults.from_json(results) if results is not None else None,
        )


@dataclass
class RetryPlan:
    """What a finished round decided about retrying: the codes retried and the rows sent again.

    :param codes: error codes retried after this round (empty: none).
    :param rows: failed rows written to the retry file.
    :param file: URI of the retry file (when rows were written).
    :param by_code: rows per error code.
    :param resubmitted: unprocessed rows (of jobs that failed or were aborted part-way) sent again.
    """

    codes: list[str]
    rows: int = 0
    file: str | None = None
    by_code: dict[str, int] | None = None
    resubmitted: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        document: dict[str, Any] = {
            "codes": list(self.codes),
            "rows": self.rows,
            "resubmitted": self.resubmitted,
        }
        if self.file is not None:
            document["file"] = self.file
        if self.by_code is not None:
            document["by_code"] = dict(self.by_code)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RetryPlan:
        """Read the JSON form back."""
        return cls(
            list(document.get("codes", [])),
            document.get("rows", 0),
            document.get("file"),
            document.get("by_code"),
            document.get("resubmitted", 0),
        )


@dataclass
class Round:
    """One round of a load: a source file (the original, or a retry file) and its parts.

    :param number: 0 for the source, then 1, 2, ... for retry rounds.
    :param source: URI of the file this round sends.
    :param concurrency: jobs of this round that may run at once.
    :param retried_codes: the error codes whose rows this round sends again (empty for round 0).
    :param records: data records of the round.
    :param collected: every part's results were downloaded.
    :param retry: what was decided after this round, once decided.
    :param part_bytes: the largest part the source was cut into, so that a restarted process cuts it
        the same way (``None`` in checkpoints written before it was recorded: ``max_bytes_per_job``).
    """

    number: int
    source: str
    concurrency: int
    retried_codes: list[str]
    records: int
    parts: list[Part]
    collected: bool = False
    retry: RetryPlan | None = None
    part_bytes: int | None = None

    def parts_in(self, *phases: Phase) -> list[Part]:
        """The parts whose phase is one of ``phases``."""
        return [part for part in self.parts if part.phase in phases]

    def running(self) -> list[Part]:
        """Parts whose job was closed and is not terminal yet."""
        return [part for part in self.parts if part.running]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (also the manifest's ``rounds`` entries)."""
        document: dict[str, Any] = {
            "number": self.number,
            "source": self.source,
            "concurrency": self.concurrency,
            "retried_codes": list(self.retried_codes),
            "records": self.records,
            "collected": self.collected,
            "parts": [part.to_json() for part in self.parts],
        }
        if self.retry is not None:
            document["retry"] = self.retry.to_json()
        if self.part_bytes is not None:
            document["part_bytes"] = self.part_bytes
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Round:
        """Read the JSON form back."""
        retry = document.get("retry")
        return cls(
            number=document["number"],
            source=document["source"],
            concurrency=document["concurrency"],
            retried_codes=list(document.get("retried_codes", [])),
            records=document["records"],
            parts=[Part.from_json(item) for item in document["parts"]],
            collected=document.get("collected", False),
            retry=RetryPlan.from_json(retry) if retry is not None else None,
            part_bytes=document.get("part_bytes"),
        )


@dataclass
class LostCreate:
    """A JSON create request whose answer never came: it may have left an empty ``Open`` job behind.

    :param part: ``(round number, part index)`` of the part it was for.
    :param sent_at: epoch seconds (this machine's clock) when the request was sent.
    :param lost_at: epoch seconds when the failure was seen.
    """

    part: tuple[int, int]
    sent_at: float
    lost_at: float

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return {"part": list(self.part), "sent_at": self.sent_at, "lost_at": self.lost_at}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LostCreate:
        """Read the JSON form back."""
        number, index = document["part"]
        return cls((number, index), document["sent_at"], document["lost_at"])


@dataclass
class ClockOffset:
    """Bounds of Salesforce's clock minus this machine's, learned from jobs this load created.

    A job created by a request sent at local time ``s`` and answered at ``r`` was created at Salesforce time
    ``t`` with ``s + offset <= t <= r + offset``; its ``createdDate`` ``c`` is ``t`` cut to the second
    (``c <= t < c + 1``), so ``c - r <= offset < c + 1 - s``.
    """

    low: float
    high: float

    def narrowed(self, sent_at: float, answered_at: float, created_at: float) -> ClockOffset:
        """These bounds combined with what one more created job tells."""
        return ClockOffset(
            max(self.low, created_at - answered_at),
            min(self.high, created_at + CREATED_DATE_RESOLUTION - sent_at),
        )

    def to_json(self) -> list[float]:
        """The JSON form: ``[low, high]``."""
        return [self.low, self.high]


@dataclass
class LoadState:
    """Everything a load must remember across a crash, a deferral or a retry.

    :param fingerprint: the parameters that define the load (object, operation, source, dialect, limits);
        a resumed task must render the same ones.
    :param started_at: epoch seconds of the start.
    :param records_sent: data records of the source.
    :param rounds: round 0, then the retry rounds.
    :param stats_sent: the metrics of the finished load were sent (sent once only).
    """

    fingerprint: dict[str, Any]
    started_at: float
    records_sent: int
    rounds: list[Round]
    stats_sent: bool = False
    version: int = STATE_VERSION
    lost_creates: list[LostCreate] = field(default_factory=list)
    orphans_aborted: list[str] = field(default_factory=list)
    clock_offset: ClockOffset | None = None

    @property
    def current(self) -> Round:
        """The last round."""
        return self.rounds[-1]

    def all_parts(self) -> list[Part]:
        """Every part of every round, in order."""
        return [part for round_ in self.rounds for part in round_.parts]

    def job_ids(self) -> list[str]:
        """The current job of every part that has one, in order."""
        return [part.job_id for part in self.all_parts() if part.job_id]

    def known_job_ids(self) -> set[str]:
        """Every job id this load has had, abandoned ones included."""
        return {job_id for part in self.all_parts() for job_id in part.known_job_ids()}

    def to_json(self) -> dict[str, Any]:
        """The checkpoint document."""
        document: dict[str, Any] = {
            "version": self.version,
            "fingerprint": dict(self.fingerprint),
            "started_at": self.started_at,
            "records_sent": self.records_sent,
            "rounds": [round_.to_json() for round_ in self.rounds],
        }
        if self.stats_sent:
            document["stats_sent"] = True
        if self.lost_creates:
            document["lost_creates"] = [lost.to_json() for lost in self.lost_creates]
        if self.orphans_aborted:
            document["orphans_aborted"] = list(self.orphans_aborted)
        if self.clock_offset is not None:
            document["clock_offset"] = self.clock_offset.to_json()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LoadState:
        """Read a checkpoint document back; raises ``ValueError`` for another version."""
        version = document.get("version")
        if version != STATE_VERSION:
            raise ValueError(f"checkpoint version {version!r} is not {STATE_VERSION}")
        return cls(
            fingerprint=dict(document["fingerprint"]),
            started_at=document["started_at"],
            records_sent=document["records_sent"],
            rounds=[Round.from_json(item) for item in document["rounds"]],
            stats_sent=bool(document.get("stats_sent", False)),
            lost_creates=[LostCreate.from_json(item) for item in document.get("lost_creates", [])],
            orphans_aborted=list(document.get("orphans_aborted", [])),
            clock_offset=ClockOffset(*document["clock_offset"]) if document.get("clock_offset") else None,
        )
