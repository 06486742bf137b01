"""A sliced query extract: one query job per slice, ``concurrency`` at a time, delivered as one extract.

:class:`SlicedExtract` drives a :class:`~airflow_provider_sfbulk.query.slices.SlicePlan` without waiting
itself; the caller waits for the jobs :meth:`SlicedExtract.advance` returns (as soon as any ends) and
calls it again:

1. :meth:`SlicedExtract.refresh` reads every running slice's job. ``JobComplete``: its results are
   extracted at once into the slice's sub-folder ``slice-NNNN/`` of the one results folder
   (:func:`~airflow_provider_sfbulk.query.extract.extract_query_results`: pages ``part-NNNNN.csv``, checked
   counts, the slice's own ``manifest.json``, resumable page by page). Ran too long for Salesforce
   (``QUERY_TIMEOUT``, or retried more than 15 times): the slice is split in halves down to the floor
   (:meth:`~airflow_provider_sfbulk.query.slices.SlicePlan.split`). ``Aborted`` or gone: the slice runs
   again. Any other failure: the slice will run again, and the try fails with Salesforce's message.
2. :meth:`SlicedExtract.advance` starts jobs for pending slices until ``concurrency`` run, and returns the
   running jobs' ids (none when every slice is extracted).

Every change is saved (the ``save`` callback: the task's checkpoint) before the next step, so a killed
task resumes with the slices it finished and the jobs it started. :meth:`SlicedExtract.finish` writes
``manifest.json`` at the top of the folder: the slices (window, SOQL sent, job, state, pages with counts,
sizes and SHA-256), every page file, the total record count; :class:`SlicedResult` is the XCom value.
The top manifest has the format of a single extract's manifest (``job_id`` null, ``sliced`` true), so a
later extract into the same folder deletes the files it lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.json_files import read_json, write_json_atomic
from airflow_provider_sfbulk.exceptions import SalesforceBulkNotFoundError
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.query.bounds import learn_window
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.extract import extract_query_results
from airflow_provider_sfbulk.query.incremental import soql_datetime
from airflow_provider_sfbulk.query.manifest import MANIFEST_FORMAT, MANIFEST_NAME, listed_files
from airflow_provider_sfbulk.query.slices import SlicePlan, plan_windows
from airflow_provider_sfbulk.query.timeouts import is_query_timeout

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.common.logs import Log
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
    from airflow_provider_sfbulk.protocol.api import JobInfo
    from airflow_provider_sfbulk.protocol.waiting import PollSchedule
    from airflow_provider_sfbulk.query.jobs import QueryJobs
    from airflow_provider_sfbulk.query.options import ExtractOptions
    from airflow_provider_sfbulk.query.slices import Slice

__all__ = ["SliceJobFailed", "SlicedExtract", "SlicedResult", "clear_earlier_extract", "plan_extract"]


class SliceJobFailed(QueryExtractError):
    """A slice's job failed for another reason than running too long; a retry of the task runs it again."""


@dataclass(frozen=True)
class SlicedResult:
    """What a sliced extract produced; :meth:`to_xcom` is the operator's XCom value."""

    job_ids: list[str]
    files: list[str]
    record_count: int
    columns: list[str]
    manifest: str
    results_path: str
    slices: int
    pages: list[dict[str, Any]] = field(default_factory=list)
    csv_bytes: int = 0

    def to_xcom(self) -> dict[str, Any]:
        """The XCom of a single extract (``job_id`` null), plus ``job_ids`` and the number of slices."""
        return {
            "job_id": None,
            "job_ids": list(self.job_ids),
            "slices": self.slices,
            "files": list(self.files),
            "record_count": self.record_count,
            "columns": list(self.columns),
            "manifest": self.manifest,
            "results_path": self.results_path,
        }


def clear_earlier_extract(folder: ObjectStoragePath, log: Log) -> None:
    """Delete the files an earlier extract's top manifest lists (a re-run of the same interval)."""
    try:
        document = read_json(folder / MANIFEST_NAME)
    except (OSError, ValueError):
        return
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        return
    names = listed_files(document)
    for name in sorted(names):
        try:
            path = folder / name
            if path.exists():
                path.unlink()
        except OSError as err:  # leftovers only cost space
            log.warning("Could not delete %s: %s", folder / name, err)
    log.info("Deleted %d file(s) of an earlier extract in %s", len(names), folder)


def plan_extract(
    jobs: QueryJobs,
    soql: str,
    field_name: str,
    folder: ObjectStoragePath,
    *,
    window: tuple[datetime, datetime] | None,
    slices: int | None,
    slice_by: str | None,
    min_slice: timedelta,
    reason: str,
    fingerprint: dict[str, Any],
    schedule: PollSchedule,
    deadline: float | None = None,
) -> SlicePlan:
    """The slices of a new sliced extract into ``folder``, whose earlier extract's files are deleted.

    ``window`` is the data interval; without one it is learnt from ``field_name``
    (:func:`~airflow_provider_sfbulk.query.bounds.learn_window`). A query without records gets no slice.
    Windows: :func:`~airflow_provider_sfbulk.query.slices.plan_windows`.

    :raises QueryJobRefused: a bound query was refused, or the window is too short to slice automatically.
    :raises QueryExtractError: a bound query did not complete.
    """
    if window is None:
        window = learn_window(jobs, soql, field_name, schedule=schedule, deadline=deadline)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    windows = []
    if window is not None:
        windows = plan_windows(*window, slices=slices, slice_by=slice_by, min_slice=min_slice)
    plan = SlicePlan.create(
        soql,
        field_name,
        windows,
        window=window or (now, now),
        reason=reason,
        fingerprint=fingerprint,
        results_path=str(folder),
    )
    clear_earlier_extract(folder, jobs.log)
    jobs.log.info(
        "Sliced extract (%s) of %s in [%s, %s): %d slice(s)",
        reason,
        field_name,
        soql_datetime(plan.start),
        soql_datetime(plan.end),
        len(plan.slices),
    )
    return plan


class SlicedExtract:
    """Run a plan's slices as query jobs and deliver one extract (see the module documentation)."""

    def __init__(
        self,
        plan: SlicePlan,
        jobs: QueryJobs,
        hook_factory: Callable[[], SalesforceBulkHook],
        folder: ObjectStoragePath,
        options: ExtractOptions,
        *,
        save: Callable[[SlicePlan], None],
        concurrency: int,
        min_slice: timedelta,
        on_end: Callable[[JobInfo], None] | None = None,
        interval: Mapping[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.jobs = jobs
        self.hook_factory = hook_factory
        self.folder = folder
        self.options = options
        self.save = save
        self.concurrency = concurrency
        self.min_slice = min_slice
        self.on_end = on_end
        self.interval = dict(interval) if interval else None
        self.log = jobs.log

    def running_job_ids(self) -> list[str]:
        """The jobs of the slices that run now."""
        return [piece.job_id for piece in self.plan.in_state("running") if piece.job_id]

    def refresh(self) -> None:
        """Learn how every running slice's job is doing, and act on those that ended."""
        for piece in self.plan.in_state("running"):
            try:
                job = self.jobs.hook.get_job(str(piece.job_id), JobKind.QUERY)
            except SalesforceBulkNotFoundError:
                self.log.info(
                    "%s: job %s no longer exists; running the slice again", piece.label, piece.job_id
                )
                self._again(piece)
                continue
            if job.state.is_terminal:
                self._ended(piece, job)

    def _again(self, piece: Slice) -> None:
        if piece.job_id:
            piece.failed_jobs.append(piece.job_id)
        piece.job_id, piece.state = None, "pending"
        self.save(self.plan)

    def _ended(self, piece: Slice, job: JobInfo) -> None:
        if self.on_end is not None:
            self.on_end(job)
        if job.state is JobState.JOB_COMPLETE:
            self._extract(piece, job)
        elif job.state is JobState.FAILED and is_query_timeout(job.error_message, job.retries):
            halves = self.plan.split(piece, self.min_slice)
            self.log.warning(
                "%s ran too long for Salesforce (job %s: %s); split into %s",
                piece.label,
                job.id,
                job.error_message,
                ", ".join(half.label for half in halves),
            )
            self.save(self.plan)
        elif job.state is JobState.ABORTED:
            self.log.info("%s: job %s was aborted; running the slice again", piece.label, job.id)
            self._again(piece)
        else:
            self._again(piece)
            raise SliceJobFailed(
                f"{piece.label}: query job {job.id} ended {job.state.value}: "
                f"{job.error_message or 'no errorMessage'} (a retry of the task runs the slice again)",
                job_id=job.id,
            )

    def _extract(self, piece: Slice, job: JobInfo) -> None:
        result = extract_query_results(
            self.hook_factory,
            job.id,
            self.folder / piece.folder,
            self.options,
            interval={"field": self.plan.field, **piece.window()},
        )
        piece.state = "done"
        piece.result = {
            "record_count": result.record_count,
            "columns": result.columns,
            "manifest": f"{piece.folder}/{MANIFEST_NAME}",
            "csv_bytes": result.csv_bytes,
            "pages": [
                {
                    "file": f"{piece.folder}/{page.file}",
                    "record_count": page.record_count,
                    "bytes": page.bytes,
                    "sha256": page.sha256,
                }
                for page in result.pages
            ],
        }
        self.log.info(
            "%s: job %s, %d record(s) in %d page(s)",
            piece.label,
            job.id,
            result.record_count,
            len(result.pages),
        )
        self.save(self.plan)

    def advance(self) -> list[str]:
        """Start jobs for pending slices up to ``concurrency`` running; the running jobs' ids.

        :raises QueryJobRefused: a job could not be created (preflight, rejected SOQL).
        """
        running = self.running_job_ids()
        for piece in self.plan.in_state("pending"):
            if len(running) >= self.concurrency:
                break
            job = self.jobs.create(piece.soql)
            piece.job_id, piece.state = job.id, "running"
            self.save(self.plan)
            self.log.info("%s: job %s; SOQL sent: %s", piece.label, job.id, piece.soql)
            running.append(job.id)
        return running

    def _columns(self) -> list[str]:
        columns: list[str] | None = None
        for piece in self.plan.delivered():
            found = (piece.result or {}).get("columns") or []
            if found and columns is None:
                columns = list(found)
            elif found and found != columns:
                raise QueryExtractError(f"{piece.label} has the columns {found}, another slice {columns}")
        return columns or []

    def finish(self) -> SlicedResult:
        """Write the top manifest of the whole extract and return what it holds."""
        delivered = self.plan.delivered()
        pages = [page for piece in delivered for page in (piece.result or {}).get("pages", [])]
        total = sum(int((piece.result or {}).get("record_count", 0)) for piece in delivered)
        columns = self._columns()
        plan = self.plan
        document = {
            "format": MANIFEST_FORMAT,
            "job_id": None,
            "sliced": True,
            "output": self.options.output,
            "compression": self.options.compression,
            "operation": plan.fingerprint.get("operation"),
            "query": plan.soql,
            "interval": self.interval,
            "field": plan.field,
            "window": {"start": soql_datetime(plan.start), "end": soql_datetime(plan.end)},
            "reason": plan.reason,
            "columns": columns,
            "record_count": total,
            "complete": True,
            "slices": [
                {
                    **piece.window(),
                    "index": piece.index,
                    "job_id": piece.job_id,
                    "state": piece.state,
                    "parent": piece.parent,
                    "failed_jobs": piece.failed_jobs,
                    "folder": piece.folder,
                    **{key: value for key, value in (piece.result or {}).items() if key != "columns"},
                }
                for piece in plan.slices
            ],
            "pages": pages,
            "files": pages,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(self.folder / MANIFEST_NAME, document, indent=1)
        self.log.info(
            "Sliced extract: %d record(s) in %d slice(s), %d page(s) in %s",
            total,
            len(delivered),
            len(pages),
            self.folder,
        )
        return SlicedResult(
            job_ids=[str(piece.job_id) for piece in delivered],
            files=[str(self.folder / page["file"]) for page in pages],
            record_count=total,
            columns=columns,
            manifest=str(self.folder / MANIFEST_NAME),
            results_path=str(self.folder),
            slices=len(delivered),
            pages=pages,
            csv_bytes=sum(int((piece.result or {}).get("csv_bytes", 0)) for piece in delivered),
        )
