"""Slices of a query extract: the windows a query is cut into, splitting one that timed out, their state.

A sliced extract runs one query job per **slice**: the user's query restricted to a half-open window
``[start, end)`` of a ``dateTime`` field (:func:`~airflow_provider_sfbulk.query.incremental.
compose_interval_soql` writes the filter). The windows of a plan are contiguous: each one starts where
the previous one ends, so a record whose value equals a boundary belongs to the later slice only, and
every record of the window is in exactly one slice. Bounds are whole seconds in UTC (SOQL ``dateTime``
literals have no fraction).

Windows come from a count (:func:`even_windows`: ``slices=N``, equal lengths rounded to the second) or
from calendar units (:func:`calendar_windows`: ``slice_by="year"|"month"|"week"|"day"``, boundaries at
the start of each unit in UTC, weeks starting on Monday; the first and last slices are cut to the window).

A slice whose job runs too long for Salesforce is **split** (:meth:`SlicePlan.split`) into two halves
that replace it, as long as each half is at least ``min_slice`` long; below that floor the extract fails
with :class:`~airflow_provider_sfbulk.query.errors.QueryJobRefused` naming the slice.

:class:`SlicePlan` is what the task's checkpoint keeps (:meth:`SlicePlan.to_dict`): every slice with its
window, SOQL, job id, state (``pending``, ``running``, ``done``, or ``split`` when replaced by halves) and,
once extracted, its pages, so a killed task resumes without running finished slices again.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_sfbulk.query.errors import QueryJobRefused
from airflow_provider_sfbulk.query.incremental import compose_interval_soql, soql_datetime

__all__ = [
    "AUTO_SLICES",
    "DEFAULT_MIN_SLICE",
    "SLICE_STATES",
    "SLICE_UNITS",
    "Slice",
    "SlicePlan",
    "calendar_windows",
    "even_windows",
    "plan_windows",
]

#: Values of ``slice_by``.
SLICE_UNITS = ("year", "month", "week", "day")
#: The shortest slice a timed-out slice may be split into, unless ``min_slice`` says otherwise.
DEFAULT_MIN_SLICE = timedelta(hours=1)
#: Slices a window is cut into when its unsliced query timed out.
AUTO_SLICES = 4
#: The states of a slice.
SLICE_STATES = ("pending", "running", "done", "split")

Window = tuple[datetime, datetime]


def _whole_second(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(microsecond=0)


def even_windows(start: datetime, end: datetime, count: int) -> list[Window]:
    """``[start, end)`` cut into ``count`` contiguous windows of (nearly) equal length, whole seconds.

    A window shorter than ``count`` seconds gives fewer windows (none is empty).
    """
    seconds = int((end - start).total_seconds())
    bounds = sorted({start + timedelta(seconds=round(i * seconds / count)) for i in range(count)} | {end})
    return list(zip(bounds, bounds[1:], strict=False))


def _unit_start(value: datetime, unit: str) -> datetime:
    day = value.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "year":
        return day.replace(month=1, day=1)
    if unit == "month":
        return day.replace(day=1)
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day


def _next_unit(value: datetime, unit: str) -> datetime:
    if unit == "year":
        return value.replace(year=value.year + 1)
    if unit == "month":
        return value.replace(year=value.year + value.month // 12, month=value.month % 12 + 1)
    return value + timedelta(days=7 if unit == "week" else 1)


def calendar_windows(start: datetime, end: datetime, unit: str) -> list[Window]:
    """``[start, end)`` cut at the start of every ``unit`` (UTC; weeks start on Monday)."""
    if unit not in SLICE_UNITS:
        raise ValueError(f"slice_by must be one of {', '.join(SLICE_UNITS)}, not {unit!r}")
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    bounds = [start]
    boundary = _next_unit(_unit_start(start, unit), unit)
    while boundary < end:
        bounds.append(boundary)
        boundary = _next_unit(boundary, unit)
    bounds.append(end)
    return list(zip(bounds, bounds[1:], strict=False))


def plan_windows(
    start: datetime,
    end: datetime,
    *,
    slices: int | None = None,
    slice_by: str | None = None,
    min_slice: timedelta = DEFAULT_MIN_SLICE,
) -> list[Window]:
    """The windows of a new plan: by ``slice_by``, else ``slices`` of equal length, else automatic.

    Automatic (the unsliced query ran too long): :data:`AUTO_SLICES` windows, fewer when they would be
    shorter than ``min_slice``.

    :raises QueryJobRefused: automatic slicing of a window shorter than twice ``min_slice``.
    """
    if slice_by is not None:
        return calendar_windows(start, end, slice_by)
    if slices is not None:
        return even_windows(start, end, slices)
    count = min(AUTO_SLICES, int((end - start) / min_slice))
    if count < 2:
        raise QueryJobRefused(
            f"the window [{soql_datetime(start)}, {soql_datetime(end)}) is shorter than twice "
            f"min_slice={min_slice}, so it is not sliced"
        )
    return even_windows(start, end, count)


@dataclass
class Slice:
    """One slice: its window, the SOQL sent, its job and state, and what its extract produced."""

    index: int
    start: datetime
    end: datetime
    soql: str
    job_id: str | None = None
    state: str = "pending"
    parent: int | None = None
    #: The extracted slice: ``{"record_count", "columns", "manifest", "pages": [{file, record_count,
    #: bytes, sha256}]}`` (file names relative to the extract's folder).
    result: dict[str, Any] | None = None
    #: Query jobs of this slice that ran too long or failed before the current one.
    failed_jobs: list[str] = _field(default_factory=list)

    @property
    def folder(self) -> str:
        """The slice's sub-folder of the results folder: ``slice-0003``."""
        return f"slice-{self.index:04d}"

    @property
    def label(self) -> str:
        """How messages name the slice: ``slice 3 [2024-01-01T00:00:00Z, 2024-02-01T00:00:00Z)``."""
        return f"slice {self.index} [{soql_datetime(self.start)}, {soql_datetime(self.end)})"

    def window(self) -> dict[str, str]:
        """The window as the manifest shows it."""
        return {"start": soql_datetime(self.start), "end": soql_datetime(self.end), "soql": self.soql}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in the checkpoint."""
        return {
            "index": self.index,
            "start": soql_datetime(self.start),
            "end": soql_datetime(self.end),
            "soql": self.soql,
            "job_id": self.job_id,
            "state": self.state,
            "parent": self.parent,
            "result": self.result,
            "failed_jobs": list(self.failed_jobs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Slice:
        """The slice :meth:`to_dict` saved."""
        return cls(
            index=int(data["index"]),
            start=_parse_time(data["start"]),
            end=_parse_time(data["end"]),
            soql=str(data["soql"]),
            job_id=data.get("job_id"),
            state=str(data.get("state", "pending")),
            parent=data.get("parent"),
            result=data.get("result"),
            failed_jobs=list(data.get("failed_jobs") or []),
        )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@dataclass
class SlicePlan:
    """Every slice of one extract, and what they were cut from (see the module documentation).

    :param soql: the user's query, without the slice filter (nor the interval filter).
    :param field: the ``dateTime`` field the windows filter.
    :param start: start of the whole window; ``end`` its end.
    :param reason: why the extract is sliced (``slices=4``, ``slice_by=month``, or the timed-out job).
    :param fingerprint: the rendered query and settings the plan belongs to (a changed query starts afresh).
    :param results_path: the one results folder of the extract.
    """

    soql: str
    field: str
    start: datetime
    end: datetime
    reason: str
    fingerprint: dict[str, Any]
    results_path: str
    slices: list[Slice] = _field(default_factory=list)

    @classmethod
    def create(
        cls,
        soql: str,
        field_name: str,
        windows: list[Window],
        *,
        window: Window,
        reason: str,
        fingerprint: dict[str, Any],
        results_path: str,
    ) -> SlicePlan:
        """A plan of one pending slice per window (the SOQL of each composed here)."""
        plan = cls(soql, field_name, window[0], window[1], reason, fingerprint, results_path)
        for start, end in windows:
            plan.add(start, end)
        return plan

    def add(self, start: datetime, end: datetime, parent: int | None = None) -> Slice:
        """Append a pending slice for ``[start, end)``."""
        start, end = _whole_second(start), _whole_second(end)
        soql = compose_interval_soql(self.soql, self.field, start, end).soql
        piece = Slice(len(self.slices), start, end, soql, parent=parent)
        self.slices.append(piece)
        return piece

    def in_state(self, state: str) -> list[Slice]:
        """The slices in ``state``, by index."""
        return [piece for piece in self.slices if piece.state == state]

    def delivered(self) -> list[Slice]:
        """The extracted slices, in window order: the extract's content."""
        return sorted(self.in_state("done"), key=lambda piece: piece.start)

    def split(self, piece: Slice, min_slice: timedelta, parts: int = 2) -> list[Slice]:
        """Replace a slice that ran too long by ``parts`` shorter ones, each at least ``min_slice`` long.

        :raises QueryJobRefused: the slice is too short to split (the floor), naming the slice.
        """
        count = min(parts, int((piece.end - piece.start) / min_slice))
        if count < 2:
            raise QueryJobRefused(
                f"{piece.label} of the query ran too long for Salesforce (job {piece.job_id}) and is shorter "
                f"than twice min_slice={min_slice}, so it is not split further: filter the query (fewer "
                "records or fields), or lower min_slice"
            )
        piece.state = "split"
        return [
            self.add(start, end, parent=piece.index)
            for start, end in even_windows(piece.start, piece.end, count)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in the checkpoint."""
        return {
            "soql": self.soql,
            "field": self.field,
            "start": soql_datetime(self.start),
            "end": soql_datetime(self.end),
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "results_path": self.results_path,
            "slices": [piece.to_dict() for piece in self.slices],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlicePlan:
        """The plan :meth:`to_dict` saved."""
        return cls(
            soql=str(data["soql"]),
            field=str(data["field"]),
            start=_parse_time(data["start"]),
            end=_parse_time(data["end"]),
            reason=str(data["reason"]),
            fingerprint=dict(data["fingerprint"]),
            results_path=str(data["results_path"]),
            slices=[Slice.from_dict(item) for item in data.get("slices") or []],
        )
