"""What the job watch makes of each job, without Airflow: problems, unknown creators, the summary.

:class:`~airflow_provider_sfbulk.operators.jobs.SalesforceBulkJobListOperator` lists the jobs, aborts,
writes the file and fails the task; everything it decides about a job lives here, as plain functions
over :class:`~airflow_provider_sfbulk.protocol.api.JobInfo` that a test can call without a task:

- :func:`classify`: the age of a job and its problem (stale ``Open``, stale running, failed recently);
- :func:`parse_user_ids` and :func:`expected_creators`: the users whose jobs are expected, as 15-character
  ids (Salesforce ids compare on their first 15 characters, case-sensitively);
- :class:`JobEntry`: one job as judged, and its row in the job list file (:data:`COLUMNS`);
- :func:`summarize` and :func:`failure_message`: the XCom value and the task's failure message.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_provider_sfbulk.protocol.api import JobInfo, parse_sf_datetime
from airflow_provider_sfbulk.protocol.ids import is_valid_id
from airflow_provider_sfbulk.protocol.states import JobState

__all__ = [
    "COLUMNS",
    "MAX_XCOM_IDS",
    "PROBLEMS",
    "UNKNOWN_SOURCE",
    "JobEntry",
    "Thresholds",
    "classify",
    "expected_creators",
    "failure_message",
    "parse_user_ids",
    "summarize",
]

#: Problem names, as they appear in the file's ``problem`` column.
STALE_OPEN, STALE_RUNNING, FAILED_RECENTLY = "stale_open", "stale_running", "failed_recently"
PROBLEMS = (STALE_OPEN, STALE_RUNNING, FAILED_RECENTLY)

#: What a job created by a user outside ``expected_creators`` is called (the file's ``unknown_source``).
UNKNOWN_SOURCE = "unknown_source"

#: Columns of the job list file (CSV header; keys of each JSON line).
COLUMNS = (
    "kind",
    "id",
    "state",
    "object",
    "operation",
    "job_type",
    "created_by_id",
    "created_date",
    "system_modstamp",
    "age_seconds",
    "problem",
    "aborted",
    UNKNOWN_SOURCE,
)

#: Problem job ids (and unknown creators) listed in the XCom at most (the file has them all).
MAX_XCOM_IDS = 100

#: Key prefix of User ids: ``createdById`` is always a user.
USER_KEY_PREFIX = "005"

_RUNNING = frozenset({JobState.UPLOAD_COMPLETE, JobState.IN_PROGRESS})
_NO_LIST = ("", "none", "null")


@dataclass(frozen=True)
class Thresholds:
    """Seconds after which a job counts as a problem (see :func:`classify`)."""

    stale_open: float
    stale_running: float
    failed_within: float


def classify(job: JobInfo, now: datetime, thresholds: Thresholds) -> tuple[float | None, str | None]:
    """``(age in seconds, problem or None)`` of one job at ``now``.

    * ``stale_open``: ``Open`` (data never closed with ``UploadComplete``) and created longer ago than
      ``stale_open``; Salesforce processes nothing until the job is closed.
    * ``stale_running``: ``UploadComplete`` or ``InProgress`` and created longer ago than ``stale_running``.
    * ``failed_recently``: ``Failed`` and last changed (``systemModstamp``, else ``createdDate``) within
      ``failed_within``.
    """
    created = job.created_at
    age = (now - created).total_seconds() if created is not None else None
    if job.state is JobState.OPEN and age is not None and age >= thresholds.stale_open:
        return age, STALE_OPEN
    if job.state in _RUNNING and age is not None and age >= thresholds.stale_running:
        return age, STALE_RUNNING
    if job.state is JobState.FAILED:
        changed = parse_sf_datetime(job.system_modstamp) or created
        if changed is not None and (now - changed).total_seconds() <= thresholds.failed_within:
            return age, FAILED_RECENTLY
    return age, None


def same_user(a: str | None, b: str | None) -> bool:
    """True when ``a`` and ``b`` are the same user: Salesforce ids compare on their first 15 characters."""
    return bool(a) and bool(b) and str(a)[:15] == str(b)[:15]


def _user_id(value: Any) -> str:
    """One user id, checked, in its 15-character form."""
    text = str(value).strip()
    if "@" in text:
        raise ValueError(
            f"expected_creators takes user ids, not usernames ({text!r}): the job list only carries "
            "createdById. Find the id in Setup > Users, or with SELECT Id FROM User WHERE Username = '...'"
        )
    if not is_valid_id(text) or not text.startswith(USER_KEY_PREFIX):
        raise ValueError(
            f"expected_creators: {text!r} is not a user id (15 or 18 characters starting with "
            f"{USER_KEY_PREFIX}, an 18-character id with its right checksum)"
        )
    return text[:15]


def parse_user_ids(value: Any) -> list[str] | None:
    """The users of ``expected_creators`` as 15-character ids; ``None`` when no list is given.

    Accepts ``None``, a list (or tuple, set) of ids, one id, or the text a template renders: a JSON or
    Python list (``"['005...', '005...']"``), ids separated by commas or spaces, or ``"None"``. An empty
    list is a list: only the connection's own user is expected. Ids of 15 and 18 characters are both
    taken; usernames are refused (the job list carries ``createdById`` only).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NO_LIST:
            return None
        if text.startswith(("[", "(")):
            try:
                value = json.loads(text)
            except ValueError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise ValueError(f"expected_creators: cannot read {text!r} as a list of ids") from None
        else:
            value = [item for item in re.split(r"[\s,]+", text) if item]
    if isinstance(value, (dict, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"expected_creators must be a list of user ids, not {type(value).__name__}")
    return list(dict.fromkeys(_user_id(item) for item in value))


def expected_creators(listed: list[str] | None, connection_user_id: str | None) -> frozenset[str] | None:
    """The 15-character ids whose jobs are expected: ``listed`` and the connection's own user.

    ``None`` when no list was given: then nobody's jobs are reported for their creator.
    """
    if listed is None:
        return None
    ids = set(listed)
    if connection_user_id:
        ids.add(connection_user_id[:15])
    return frozenset(ids)


def is_unknown_source(job: JobInfo, expected: frozenset[str] | None) -> bool:
    """True when ``expected`` is given and the job's creator is not in it (a job without creator included)."""
    if expected is None:
        return False
    return not job.created_by_id or job.created_by_id[:15] not in expected


@dataclass
class JobEntry:
    """One job as the watch judged it: its age, its problem, its creator, and whether it was aborted."""

    job: JobInfo
    age_seconds: float | None
    problem: str | None
    unknown_source: bool = False
    aborted: bool = False

    @classmethod
    def judge(
        cls, job: JobInfo, now: datetime, thresholds: Thresholds, expected: frozenset[str] | None
    ) -> JobEntry:
        """Classify ``job`` at ``now`` and check its creator against ``expected``."""
        age, problem = classify(job, now, thresholds)
        return cls(job, age, problem, is_unknown_source(job, expected))

    @property
    def needs_attention(self) -> bool:
        """True when a problem remains (not resolved by an abort) or the job comes from an unknown user."""
        return bool(self.problem and not self.aborted) or self.unknown_source

    def reasons(self) -> str:
        """What is wrong with the job, for the log: its problem and ``unknown_source``, comma separated."""
        found = [self.problem] if self.problem and not self.aborted else []
        return ", ".join([*found, UNKNOWN_SOURCE] if self.unknown_source else found)

    def row(self) -> dict[str, Any]:
        """The job's line in the job list file, keyed by :data:`COLUMNS`."""
        job = self.job
        return {
            "kind": job.kind.value,
            "id": job.id,
            "state": job.state.value,
            "object": job.object,
            "operation": job.operation,
            "job_type": job.job_type,
            "created_by_id": job.created_by_id,
            "created_date": job.created_date,
            "system_modstamp": job.system_modstamp,
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 3),
            "problem": self.problem,
            "aborted": self.aborted,
            UNKNOWN_SOURCE: self.unknown_source,
        }


def summarize(
    entries: list[JobEntry], *, aborted: list[str], expected: frozenset[str] | None, **extra: Any
) -> dict[str, Any]:
    """The XCom value of a watch: counts, problems left, unknown creators, and the ``extra`` keys."""
    counts = Counter(entry.problem for entry in entries if entry.problem)
    attention = [entry for entry in entries if entry.needs_attention]
    unknown = Counter(entry.job.created_by_id or "" for entry in entries if entry.unknown_source)
    return {
        "total": len(entries),
        "by_kind": dict(sorted(Counter(entry.job.kind.value for entry in entries).items())),
        "by_state": dict(sorted(Counter(entry.job.state.value for entry in entries).items())),
        "stale_open": counts[STALE_OPEN],
        "stale_running": counts[STALE_RUNNING],
        "failed_recently": counts[FAILED_RECENTLY],
        "aborted": aborted,
        "unknown_sources": sum(unknown.values()),
        "unknown_creators": dict(unknown.most_common(MAX_XCOM_IDS)),
        "expected_creators": None if expected is None else sorted(expected),
        "problems": len(attention),
        "problem_job_ids": [entry.job.id for entry in attention[:MAX_XCOM_IDS]],
        **extra,
    }


def failure_message(result: dict[str, Any], failed_within: float) -> str:
    """Why the watch fails: every count of :func:`summarize`'s ``result`` and where the list is."""
    unknown = ""
    if result["unknown_sources"]:
        creators = ", ".join(sorted(result["unknown_creators"]))
        unknown = f", {result['unknown_sources']} created by users not expected ({creators})"
    return (
        f"{result['problems']} Bulk API job problem(s): {result['stale_open']} stale Open "
        f"({len(result['aborted'])} aborted), {result['stale_running']} stale UploadComplete/InProgress, "
        f"{result['failed_recently']} Failed within {failed_within:.0f}s{unknown}; see {result['jobs_file']}"
    )
