"""Watch every Bulk API job of an org: list them to object storage, count the stuck and failed ones."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_sfbulk.common.paths import task_results_path, to_storage_path
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.operators.job_watch import (
    COLUMNS,
    PROBLEMS,
    STALE_OPEN,
    JobEntry,
    Thresholds,
    classify,
    expected_creators,
    failure_message,
    parse_user_ids,
    same_user,
    summarize,
)
from airflow_provider_sfbulk.protocol.api import JobInfo, job_kind
from airflow_provider_sfbulk.protocol.states import JobKind

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = [
    "COLUMNS",
    "OUTPUT_FORMATS",
    "PROBLEMS",
    "SalesforceBulkJobListOperator",
    "Thresholds",
    "classify",
]

#: File formats of the job list.
OUTPUT_FORMATS = ("jsonl", "csv")


def _seconds(value: Any, name: str) -> float:
    """A duration given as seconds (number or numeric text, e.g. a rendered template) or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise TypeError(f"{name} must be seconds or a timedelta, not a bool")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    else:
        raise TypeError(f"{name} must be seconds or a timedelta, got {type(value).__name__}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative")
    return seconds


def _flag(value: Any, name: str) -> bool:
    """A boolean that may arrive as rendered template text (``"True"``, ``"false"``, ``"1"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be a boolean, got {value!r}")


class SalesforceBulkJobListOperator(BaseOperator):
    """List every Bulk API job of the org, write the list to object storage and count what looks wrong.

    Every page of ``GET /jobs/ingest`` and ``GET /jobs/query`` is read (following ``nextRecordsUrl``);
    the ingest list also holds Bulk API 1.0 (``Classic``) and big object jobs, told apart by ``job_type``.
    Each job is classified at the time the task runs:

    * **stale Open**: still ``Open`` (its data was never closed with ``UploadComplete``, so Salesforce
      will never process it) and created more than ``stale_open_after`` ago;
    * **stale running**: ``UploadComplete`` or ``InProgress`` and created more than
      ``stale_running_after`` ago;
    * **failed recently**: ``Failed`` and last changed within ``failed_within``;
    * **unknown source** (only with ``expected_creators``): created by a user who is neither in
      ``expected_creators`` nor the connection's own user. Such a job is reported whatever its state, and
      never aborted.

    With ``abort_stale_open=True`` the stale ``Open`` Bulk API 2.0 ingest jobs (``jobType`` ``V2Ingest``)
    created by the connection's own user (the user of the OAuth token's ``id`` URL) are aborted; other
    users' jobs are never touched. An aborted job is no longer a problem. The list goes to
    ``<output_path>/jobs.jsonl`` (one JSON object per job) or ``jobs.csv``, with the columns
    :data:`COLUMNS`. With ``fail_on_problems=True`` (default) the task fails when any problem remains,
    after the file is written and the XCom pushed, so Airflow's usual failure callbacks and alerts fire.
    What the watch decides about each job lives in :mod:`~airflow_provider_sfbulk.operators.job_watch`.

    **XCom** (``return_value``), small and JSON::

        {"total": 12, "by_kind": {"ingest": 9, "query": 3},
         "by_state": {"JobComplete": 9, "Open": 1, ...},
         "stale_open": 1, "stale_running": 0, "failed_recently": 2,
         "aborted": ["750..."],              # stale Open jobs aborted by this task
         "unknown_sources": 1,               # jobs of users not expected (0 without expected_creators)
         "unknown_creators": {"005...": 1},  # those users (createdById) and their job counts
         "expected_creators": ["005..."],    # 15-character ids checked; None without expected_creators
         "problems": 3,                      # jobs needing attention: problems left after the aborts,
                                             # and jobs of unknown sources
         "problem_job_ids": ["750...", ...], # at most 100; the file has them all
         "jobs_file": uri, "format": "jsonl", "checked_at": "2026-01-01T00:00:00+00:00",
         "user_id": "005..."}                # the connection's user (None when the token has no id URL)

    :param salesforce_conn_id: id of a ``salesforce_bulk`` connection (templated).
    :param job_kinds: which lists to read: ``("ingest", "query")`` (default) or one of them.
    :param stale_open_after: age (seconds or timedelta; templated) from which an ``Open`` job is stale;
        default one hour.
    :param stale_running_after: age from which an ``UploadComplete``/``InProgress`` job is stuck; default
        four hours.
    :param failed_within: how recent a ``Failed`` job counts as a problem; default one day.
    :param fail_on_problems: fail the task when problems remain (templated; default True).
    :param abort_stale_open: abort stale ``Open`` jobs created by the connection's user (templated;
        default False).
    :param output_path: folder of the job list (templated; local path or storage URI); default
        ``<results base>/<dag>/<run>/<task>[/map-<i>]/try-<n>``.
    :param output_format: ``jsonl`` (default) or ``csv``.
    :param ingest_job_type: filter of the ingest list (``V2Ingest``, ``Classic``, ``BigObjectIngest``);
        default ``None`` lists every type.
    :param expected_creators: the users whose jobs are expected, as user ids (15 or 18 characters; they
        compare on the first 15), or a template rendering to a list of them (templated). The connection's
        own user is always expected. Jobs of anyone else are reported as unknown sources and count as
        problems. Default ``None``: creators are not checked. Usernames are refused: the job list carries
        only ``createdById``.
    """

    template_fields: Sequence[str] = (
        "salesforce_conn_id",
        "stale_open_after",
        "stale_running_after",
        "failed_within",
        "fail_on_problems",
        "abort_stale_open",
        "output_path",
        "expected_creators",
    )
    ui_color = "#00a1e0"

    def __init__(
        self,
        *,
        salesforce_conn_id: str = SalesforceBulkHook.default_conn_name,
        job_kinds: Sequence[str] = (JobKind.INGEST.value, JobKind.QUERY.value),
        stale_open_after: float | timedelta | str = timedelta(hours=1),
        stale_running_after: float | timedelta | str = timedelta(hours=4),
        failed_within: float | timedelta | str = timedelta(days=1),
        fail_on_problems: bool | str = True,
        abort_stale_open: bool | str = False,
        output_path: Any = None,
        output_format: str = "jsonl",
        ingest_job_type: str | None = None,
        expected_creators: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(job_kinds, str):
            job_kinds = (job_kinds,)
        kinds = [job_kind(kind) for kind in job_kinds]
        if not kinds:
            raise ValueError("job_kinds must name at least one kind (ingest, query)")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        self.salesforce_conn_id = salesforce_conn_id
        self.job_kinds = [kind.value for kind in dict.fromkeys(kinds)]
        self.stale_open_after = stale_open_after
        self.stale_running_after = stale_running_after
        self.failed_within = failed_within
        self.fail_on_problems = fail_on_problems
        self.abort_stale_open = abort_stale_open
        self.output_path = output_path
        self.output_format = output_format
        self.ingest_job_type = ingest_job_type
        self.expected_creators = expected_creators
        # Values that are not templates are checked at parse time.
        for name in ("stale_open_after", "stale_running_after", "failed_within"):
            value = getattr(self, name)
            if not (isinstance(value, str) and "{{" in value):
                _seconds(value, name)
        if not (isinstance(expected_creators, str) and "{{" in expected_creators):
            parse_user_ids(expected_creators)

    @cached_property
    def hook(self) -> SalesforceBulkHook:
        """The blocking hook of ``salesforce_conn_id``."""
        return SalesforceBulkHook(salesforce_conn_id=self.salesforce_conn_id)

    def _now(self) -> datetime:
        return datetime.now(timezone.utc)

    def connection_user_id(self) -> str | None:
        """The connection's user id: the last segment of the OAuth token's ``id`` URL (None without one)."""
        return self.hook.get_user_id()

    def _list(self) -> Iterable[JobInfo]:
        for kind in self.job_kinds:
            if kind == JobKind.INGEST.value and self.ingest_job_type:
                yield from self.hook.list_jobs(kind, job_type=self.ingest_job_type)
            else:
                yield from self.hook.list_jobs(kind)

    def execute(self, context: Context) -> dict[str, Any]:
        """List, classify, optionally abort, write the list and return the summary XCom (see above)."""
        thresholds = Thresholds(
            stale_open=_seconds(self.stale_open_after, "stale_open_after"),
            stale_running=_seconds(self.stale_running_after, "stale_running_after"),
            failed_within=_seconds(self.failed_within, "failed_within"),
        )
        fail_on_problems = _flag(self.fail_on_problems, "fail_on_problems")
        abort_stale_open = _flag(self.abort_stale_open, "abort_stale_open")
        listed = parse_user_ids(self.expected_creators)
        user_id = self.connection_user_id()
        expected = expected_creators(listed, user_id)
        now = self._now()
        entries: list[JobEntry] = []
        seen: set[tuple[str, str]] = set()
        for job in self._list():
            key = (job.kind.value, job.id)
            if key in seen:  # list order is not stable while jobs change; count each job once
                continue
            seen.add(key)
            entries.append(JobEntry.judge(job, now, thresholds, expected))
        self.log.info("Listed %d Bulk API job(s) (%s)", len(entries), ", ".join(self.job_kinds))

        aborted: list[str] = []
        if abort_stale_open:
            aborted = self._abort_own_stale_open(entries, user_id)

        folder = (
            to_storage_path(self.output_path) if self.output_path else task_results_path(context)
        )
        jobs_file = self._write(folder, entries)
        result = summarize(
            entries,
            aborted=aborted,
            expected=expected,
            jobs_file=jobs_file,
            format=self.output_format,
            checked_at=now.isoformat(timespec="seconds"),
            user_id=user_id,
        )
        self.log.info(
            "Bulk jobs: %d total; stale Open %d, stale running %d, failed recently %d; aborted %d; "
            "unknown sources %d; problems left %d; list at %s",
            result["total"], result["stale_open"], result["stale_running"], result["failed_recently"],
            len(aborted), result["unknown_sources"], result["problems"], jobs_file,
        )
        for entry in [entry for entry in entries if entry.needs_attention][:20]:
            job = entry.job
            self.log.warning(
                "%s: %s job %s (%s %s, created %s by %s)%s",
                entry.reasons(), job.kind.value, job.id, job.operation, job.object, job.created_date,
                job.created_by_id, f": {job.error_message}" if job.error_message else "",
            )
        if fail_on_problems and result["problems"]:
            context["ti"].xcom_push(key="return_value", value=result)
            raise AirflowFailException(failure_message(result, thresholds.failed_within))
        return result

    def _abort_own_stale_open(self, entries: list[JobEntry], user_id: str | None) -> list[str]:
        if not user_id:
            self.log.warning("The token carries no user id; not aborting any stale Open job")
            return []
        aborted: list[str] = []
        for entry in entries:
            job = entry.job
            if (
                entry.problem != STALE_OPEN
                or job.kind is not JobKind.INGEST
                or (job.job_type not in (None, "V2Ingest"))
                or not same_user(job.created_by_id, user_id)
            ):
                continue
            try:
                self.hook.abort_job(job.id, JobKind.INGEST)
            except Exception as err:  # closed or aborted meanwhile: report it, keep going with the others
                self.log.warning("Stale Open job %s not aborted: %s", job.id, err)
                continue
            entry.aborted = True
            aborted.append(job.id)
            self.log.info("Aborted stale Open job %s (%s %s, created %s)", job.id, job.operation,
                          job.object, job.created_date)
        return aborted

    def _write(self, folder: Any, entries: list[JobEntry]) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"jobs.{self.output_format}"
        if self.output_format == "jsonl":
            data = "".join(json.dumps(entry.row(), sort_keys=False) + "\n" for entry in entries)
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
            writer.writeheader()
            for entry in entries:
                writer.writerow({k: "" if v is None else v for k, v in entry.row().items()})
            data = buffer.getvalue()
        with path.open("wb") as handle:
            handle.write(data.encode("utf-8"))
        return str(path)
