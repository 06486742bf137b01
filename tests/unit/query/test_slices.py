"""The slicing engine without Airflow or a server: windows (calendar units, equal lengths, automatic), the
split of a slice and its floor, the plan's checkpoint form, and the bound queries' SOQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_sfbulk.query.bounds import parse_field_time
from airflow_provider_sfbulk.query.errors import QueryJobRefused
from airflow_provider_sfbulk.query.incremental import IncrementalQueryError, bound_soql
from airflow_provider_sfbulk.query.slices import (
    SlicePlan,
    calendar_windows,
    even_windows,
    plan_windows,
)

UTC = timezone.utc


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_calendar_windows_cut_at_each_unit_and_keep_the_ends() -> None:
    assert calendar_windows(at(2023, 11, 20, 5), at(2024, 2, 1), "month") == [
        (at(2023, 11, 20, 5), at(2023, 12, 1)),
        (at(2023, 12, 1), at(2024, 1, 1)),
        (at(2024, 1, 1), at(2024, 2, 1)),
    ]
    assert calendar_windows(at(2023, 6, 1), at(2025, 1, 1, 0, 0, 1), "year") == [
        (at(2023, 6, 1), at(2024, 1, 1)),
        (at(2024, 1, 1), at(2025, 1, 1)),
        (at(2025, 1, 1), at(2025, 1, 1, 0, 0, 1)),
    ]
    # 2024-01-03 is a Wednesday; weeks start on Monday 2024-01-08.
    assert calendar_windows(at(2024, 1, 3), at(2024, 1, 16), "week") == [
        (at(2024, 1, 3), at(2024, 1, 8)),
        (at(2024, 1, 8), at(2024, 1, 15)),
        (at(2024, 1, 15), at(2024, 1, 16)),
    ]
    assert calendar_windows(at(2024, 2, 28, 12), at(2024, 3, 1, 6), "day") == [
        (at(2024, 2, 28, 12), at(2024, 2, 29)),
        (at(2024, 2, 29), at(2024, 3, 1)),
        (at(2024, 3, 1), at(2024, 3, 1, 6)),
    ]
    with pytest.raises(ValueError, match="slice_by must be one of"):
        calendar_windows(at(2024, 1, 1), at(2024, 1, 2), "hour")


def test_even_windows_are_contiguous_whole_seconds_and_never_empty() -> None:
    assert even_windows(at(2024, 1, 1), at(2024, 1, 1, 0, 0, 10), 3) == [
        (at(2024, 1, 1, 0, 0, 0), at(2024, 1, 1, 0, 0, 3)),
        (at(2024, 1, 1, 0, 0, 3), at(2024, 1, 1, 0, 0, 7)),
        (at(2024, 1, 1, 0, 0, 7), at(2024, 1, 1, 0, 0, 10)),
    ]
    assert even_windows(at(2024, 1, 1), at(2024, 1, 1, 0, 0, 2), 5) == [
        (at(2024, 1, 1, 0, 0, 0), at(2024, 1, 1, 0, 0, 1)),
        (at(2024, 1, 1, 0, 0, 1), at(2024, 1, 1, 0, 0, 2)),
    ]


def test_automatic_windows_respect_the_floor() -> None:
    day = (at(2024, 1, 1), at(2024, 1, 2))
    assert len(plan_windows(*day)) == 4
    assert len(plan_windows(*day, min_slice=timedelta(hours=8))) == 3
    with pytest.raises(QueryJobRefused, match=r"shorter than twice min_slice=12:00:01, so it is not sliced"):
        plan_windows(*day, min_slice=timedelta(hours=12, seconds=1))


def plan(windows: list[tuple[datetime, datetime]]) -> SlicePlan:
    return SlicePlan.create(
        "SELECT Id FROM Account WHERE Type = 'x'",
        "CreatedDate",
        windows,
        window=(windows[0][0], windows[-1][1]),
        reason="slices=2",
        fingerprint={"soql": "SELECT Id FROM Account WHERE Type = 'x'"},
        results_path="file:///tmp/r",
    )


def test_a_split_replaces_a_slice_by_halves_down_to_the_floor() -> None:
    the_plan = plan(even_windows(at(2024, 1, 1), at(2024, 1, 1, 4), 2))
    first = the_plan.slices[0]
    halves = the_plan.split(first, timedelta(hours=1))
    assert first.state == "split"
    assert [(h.index, h.parent, h.start, h.end) for h in halves] == [
        (2, 0, at(2024, 1, 1, 0), at(2024, 1, 1, 1)),
        (3, 0, at(2024, 1, 1, 1), at(2024, 1, 1, 2)),
    ]
    assert halves[1].soql == (
        "SELECT Id FROM Account WHERE (Type = 'x') AND CreatedDate >= 2024-01-01T01:00:00Z "
        "AND CreatedDate < 2024-01-01T02:00:00Z"
    )
    halves[0].job_id = "750X"
    with pytest.raises(QueryJobRefused) as refused:
        the_plan.split(halves[0], timedelta(minutes=31))
    assert str(refused.value).startswith(
        "slice 2 [2024-01-01T00:00:00Z, 2024-01-01T01:00:00Z) of the query ran too long for Salesforce "
        "(job 750X) and is shorter than twice min_slice=0:31:00"
    )
    assert halves[0].state == "pending"


def test_the_plan_survives_its_checkpoint_form() -> None:
    the_plan = plan(even_windows(at(2024, 1, 1), at(2024, 1, 3), 2))
    the_plan.slices[0].job_id, the_plan.slices[0].state = "750A", "done"
    the_plan.slices[0].result = {"record_count": 3, "pages": []}
    the_plan.split(the_plan.slices[1], timedelta(hours=1))
    again = SlicePlan.from_dict(the_plan.to_dict())
    assert again == the_plan
    assert [piece.index for piece in again.delivered()] == [0]
    assert [piece.index for piece in again.in_state("pending")] == [2, 3]


def test_bound_queries_keep_the_condition_and_drop_the_order() -> None:
    assert bound_soql("SELECT Id, Name FROM Account a WHERE a.Type = 'x' ORDER BY Name", "CreatedDate",
                      last=True) == (
        "SELECT CreatedDate FROM Account a WHERE (a.Type = 'x') AND CreatedDate != null "
        "ORDER BY CreatedDate DESC NULLS LAST LIMIT 1"
    )
    assert bound_soql("SELECT Id FROM Contact", "SystemModstamp", last=False) == (
        "SELECT SystemModstamp FROM Contact WHERE SystemModstamp != null "
        "ORDER BY SystemModstamp ASC NULLS LAST LIMIT 1"
    )
    with pytest.raises(IncrementalQueryError, match="LIMIT would cut"):
        bound_soql("SELECT Id FROM Account LIMIT 10", "CreatedDate", last=False)


def test_field_values_are_read_in_utc() -> None:
    assert parse_field_time("2024-01-31T10:00:00.000+0000") == at(2024, 1, 31, 10)
    assert parse_field_time("2024-01-31T12:00:00.250+0200") == datetime(2024, 1, 31, 10, 0, 0, 250000, UTC)
    assert parse_field_time("2024-01-31T10:00:00Z") == at(2024, 1, 31, 10)
