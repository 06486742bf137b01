"""Hand-built loads for the exact tests of retry planning, the summary and resuming.

A load's state is built part by part with result files written on disk, so that ``plan_retry``,
``summarize`` and ``resume_earlier_load`` can be called directly, without a DAG run: these tests run in
milliseconds, which makes mutation testing of those modules take minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.ingest.journal import STATE_KEY, LoadJournal
from airflow_provider_sfbulk.ingest.state import (
    JobStats,
    LoadState,
    Part,
    PartResults,
    ResultFileSummary,
    Round,
)

SOURCE = "file:///data/accounts.csv"


class RecordedLog:
    """A ``Log`` that keeps every line, formatted, with its level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, msg: str, args: tuple[Any, ...]) -> None:
        self.lines.append((level, msg % args if args else msg))

    def debug(self, msg: str, /, *args: Any, **kwargs: Any) -> None:
        self._add("debug", msg, args)

    def info(self, msg: str, /, *args: Any, **kwargs: Any) -> None:
        self._add("info", msg, args)

    def warning(self, msg: str, /, *args: Any, **kwargs: Any) -> None:
        self._add("warning", msg, args)

    def error(self, msg: str, /, *args: Any, **kwargs: Any) -> None:
        self._add("error", msg, args)


def job_results(
    folder: Path,
    job_id: str,
    *,
    successful: int = 0,
    failed: tuple[tuple[str, str], ...] = (),
    unprocessed: tuple[str, ...] = (),
    state: str = "JobComplete",
    error_message: str | None = None,
    sent: int | None = None,
    reconciled: bool = True,
    stats: JobStats | None = None,
    char: str = ",",
    terminator: str = "\n",
) -> PartResults:
    """One collected job with its three result files on disk (one ``Name`` column).

    :param failed: ``(error code, name)`` of each failed row.
    :param unprocessed: the names of the unprocessed rows.
    :param char: the files' delimiter; ``terminator`` their line ending.
    """
    where = folder / job_id
    where.mkdir(parents=True, exist_ok=True)
    texts = {
        "successfulResults": '"sf__Id","sf__Created",Name\n'
        + "".join(f'"001{job_id}{i}","true","ok{i}"\n' for i in range(successful)),
        "failedResults": '"sf__Id","sf__Error",Name\n'
        + "".join(f'"","{code}:{name} went wrong:--","{name}"\n' for code, name in failed),
        "unprocessedrecords": "Name\n" + "".join(f"{name}\n" for name in unprocessed),
    }
    counts = {
        "successfulResults": successful, "failedResults": len(failed), "unprocessedrecords": len(unprocessed)
    }
    files = {}
    for name, text in texts.items():
        text = text.replace(",", char).replace("\n", terminator)
        path = where / f"{name}.csv"
        path.write_text(text, "utf-8")
        files[name] = ResultFileSummary(name, str(to_storage_path(path)), counts[name], len(text), "00" * 32)
    total = successful + len(failed) + len(unprocessed)
    return PartResults(
        id=job_id,
        state=state,
        error_message=error_message,
        number_records_processed=successful + len(failed),
        number_records_failed=len(failed),
        records_successful=successful,
        records_failed=len(failed),
        records_unprocessed=len(unprocessed),
        files=files,
        records_sent=total if sent is None else sent,
        reconciled=reconciled,
        stats=stats or JobStats(),
    )


def part(index: int, results: PartResults | None = None, *, job_id: str | None = None, **fields: Any) -> Part:
    """A part of a round; its job is the results' job unless ``job_id`` says otherwise."""
    records = results.records_sent if results is not None else 1
    return Part(
        index=index,
        bytes=100,
        records=records,
        first_record=1,
        sha256=f"{index:064x}",
        job_id=job_id if job_id is not None else (results.id if results is not None else None),
        state=results.state if results is not None else None,
        results=results,
        **fields,
    )


def a_round(number: int, *parts: Part, source: str = SOURCE) -> Round:
    """A collected round of ``parts``."""
    return Round(number, source, 5, [], sum(p.records for p in parts), list(parts), collected=True)


def journal(
    tmp_path: Path, *rounds: Round, sent: int | None = None, fingerprint: dict[str, Any] | None = None
) -> LoadJournal:
    """The journal of a load of ``rounds`` with a file checkpoint under ``tmp_path``."""
    state = LoadState(
        fingerprint=fingerprint if fingerprint is not None else {"source": SOURCE},
        started_at=1_700_000_000.5,
        records_sent=rounds[0].records if sent is None else sent,
        rounds=list(rounds),
    )
    return LoadJournal(TaskCheckpoint(folder=to_storage_path(tmp_path / "checkpoint")), state)


def saved(tmp_path: Path) -> Any:
    """The checkpoint document of :func:`journal` as a new reader sees it."""
    return TaskCheckpoint(folder=to_storage_path(tmp_path / "checkpoint")).get(STATE_KEY)
