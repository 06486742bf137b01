"""SalesforceBulkQueryOperator slicing a query, driven directly against the emulator with its query timeout
switch (a query job returning more than N records fails as a query that ran too long): the unsliced query
times out and the sliced one delivers every record exactly once (in the worker and deferred), slices=N and
slice_by with a record on a slice boundary, a slice that times out again is split, the floor, a killed task
that resumes without running its finished slices again, and the refusals before any job."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_sfbulk.emulator import records
from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer
from airflow_provider_sfbulk.hooks import bulk as bulk_hooks
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.query.sliced import SlicedExtract
from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

UTC = timezone.utc
DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SOQL = "SELECT Id, Name FROM Account"


@pytest.fixture(autouse=True)
def fast_hook_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_hooks, "DEFAULT_RETRY_POLICY", RetryPolicy(2, 0.01, 0.02))


def context(try_number: int = 1, start: datetime | None = None, end: datetime | None = None) -> Any:
    return {
        "ti": FakeTI(try_number, task_id="extract"),
        "data_interval_start": start,
        "data_interval_end": end,
    }


def operator(**kwargs: Any) -> SalesforceBulkQueryOperator:
    kwargs.setdefault("soql", SOQL)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("min_slice", timedelta(seconds=1))
    return SalesforceBulkQueryOperator(task_id="extract", **kwargs)


async def _first_event(trigger: SalesforceBulkJobTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def run(op: SalesforceBulkQueryOperator, ctx: Any) -> tuple[dict[str, Any], int]:
    """Run as Airflow does: every deferral's trigger is rebuilt from its serialised form and run; returns
    the XCom and the number of deferrals."""
    call: Callable[[], dict[str, Any]] = functools.partial(op.execute, ctx)
    for deferrals in range(100):
        try:
            return call(), deferrals
        except TaskDeferred as deferred:
            classpath, kwargs = deferred.trigger.serialize()
            assert classpath == "airflow_provider_sfbulk.triggers.job.SalesforceBulkJobTrigger"
            payload = asyncio.run(_first_event(SalesforceBulkJobTrigger(**kwargs)))
            method = getattr(op, deferred.method_name)
            call = functools.partial(method, ctx, event=payload, **(deferred.kwargs or {}))
    raise AssertionError("the task never ended")


def insert_at(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch, moment: datetime, *names: str) -> None:
    monkeypatch.setattr(records, "clock", lambda: moment)
    body = "Name\n" + "".join(f"{name}\n" for name in names)
    assert ApiSession(server).run_ingest("Account", "insert", body.encode())["numberRecordsFailed"] == 0
    monkeypatch.setattr(records, "clock", None)


def spread(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """24 accounts: 3 at 01:00 and 3 at 13:00 on each of four days from 2024-01-01."""
    for day in range(4):
        for hour in (1, 13):
            moment = DAY1 + day * DAY + hour * HOUR
            insert_at(server, monkeypatch, moment, *(f"d{day}h{hour:02d}n{i}" for i in range(3)))


def rows_of(files: list[str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for uri in files:
        reader = csv.reader(io.StringIO(Path(uri.removeprefix("file://")).read_text(), newline=""))
        assert next(reader) == ["Id", "Name"]
        rows.extend(tuple(row) for row in reader)
    return rows


def emulator_rows(server: EmulatorServer) -> list[tuple[str, ...]]:
    return sorted((r["Id"], r["Name"]) for r in server.records("Account"))


def manifest_of(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(result["manifest"].removeprefix("file://")).read_text())


def query_jobs(server: EmulatorServer) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/query")
    response.raise_for_status()
    return response.json()["records"]


def names_by_slice(result: dict[str, Any]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for piece in manifest_of(result)["slices"]:
        if piece["state"] == "done":
            folder = Path(result["results_path"].removeprefix("file://"))
            files = [str(folder / page["file"]) for page in piece["pages"]]
            found[piece["index"]] = sorted(name for _, name in rows_of(files))
    return found


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_query_that_times_out_unsliced_completes_sliced_with_every_record_once(
    emulator_factory, salesforce_conn, results_base, monkeypatch, deferrable
) -> None:
    # Jobs that take a moment, so that the deferrable task finds its slices running and defers.
    server = emulator_factory(query_timeout_records=10, query_timeout_style="timeout", query_delay=0.2)
    salesforce_conn(server)
    spread(server, monkeypatch)
    result, deferrals = run(operator(deferrable=deferrable), context())
    rows = rows_of(result["files"])
    assert len(rows) == len(set(rows)) == 24
    assert sorted(rows) == emulator_rows(server)
    assert result["record_count"] == 24
    assert result["job_id"] is None
    assert result["slices"] == 4
    assert (deferrals > 0) if deferrable else (deferrals == 0)
    manifest = manifest_of(result)
    assert manifest["sliced"] is True
    assert manifest["record_count"] == 24
    assert manifest["field"] == "CreatedDate"
    assert manifest["window"] == {"start": "2024-01-01T01:00:00Z", "end": "2024-01-04T13:00:01Z"}
    assert manifest["reason"].endswith("ran too long")
    jobs = {job["id"]: job for job in query_jobs(server)}
    timed_out = [job_id for job_id, job in jobs.items() if job["state"] == "Failed"]
    assert len(timed_out) == 1  # the unsliced job; 2 bound queries and 4 slices completed
    assert len(jobs) == 7
    assert sorted(result["job_ids"]) == sorted(piece["job_id"] for piece in manifest["slices"])
    assert set(result["job_ids"]) <= {job_id for job_id, job in jobs.items() if job["state"] == "JobComplete"}
    for piece in manifest["slices"]:
        assert piece["soql"] == (
            "SELECT Id, Name FROM Account WHERE "
            f"CreatedDate >= {piece['start']} AND CreatedDate < {piece['end']}"
        )
        assert sum(page["record_count"] for page in piece["pages"]) == piece["record_count"] == 6
        for page in piece["pages"]:
            assert page["file"].startswith(f"slice-{piece['index']:04d}/")
    # The windows are contiguous and cover the whole window.
    bounds = sorted((piece["start"], piece["end"]) for piece in manifest["slices"])
    assert bounds[0][0] == manifest["window"]["start"]
    assert bounds[-1][1] == manifest["window"]["end"]
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_a_slice_that_times_out_again_is_split_again(
    emulator_factory, salesforce_conn, results_base, monkeypatch
) -> None:
    server = emulator_factory(query_timeout_records=4)
    salesforce_conn(server)
    spread(server, monkeypatch)
    result, _ = run(operator(slice_concurrency=2), context())
    rows = rows_of(result["files"])
    assert sorted(rows) == emulator_rows(server)
    assert len(rows) == len(set(rows)) == 24
    slices = manifest_of(result)["slices"]
    split = [piece for piece in slices if piece["state"] == "split"]
    done = [piece for piece in slices if piece["state"] == "done"]
    assert len(split) == 4
    assert len(done) == 8
    for piece in done:
        parent = next(item for item in slices if item["index"] == piece["parent"])
        assert parent["start"] <= piece["start"] < piece["end"] <= parent["end"]
        assert piece["record_count"] == 3
    for piece in split:
        children = sorted((c["start"], c["end"]) for c in slices if c["parent"] == piece["index"])
        assert children[0][0] == piece["start"]
        assert children[-1][1] == piece["end"]
        assert children[0][1] == children[1][0]
        assert piece["job_id"] not in result["job_ids"]


def test_slices_n_of_the_data_interval_with_a_record_on_the_boundary(
    emulator, salesforce_conn, results_base, monkeypatch
) -> None:
    salesforce_conn(emulator)
    day2, day3 = DAY1 + DAY, DAY1 + 2 * DAY
    insert_at(emulator, monkeypatch, DAY1 - timedelta(seconds=1), "before")
    insert_at(emulator, monkeypatch, DAY1, "on start")
    insert_at(emulator, monkeypatch, day2 - timedelta(milliseconds=1), "last ms")
    insert_at(emulator, monkeypatch, day2, "on boundary")
    insert_at(emulator, monkeypatch, day3 - timedelta(seconds=1), "last second")
    insert_at(emulator, monkeypatch, day3, "on end")
    result, _ = run(operator(incremental=True, slices=2), context(start=DAY1, end=day3))
    assert names_by_slice(result) == {0: ["last ms", "on start"], 1: ["last second", "on boundary"]}
    assert result["record_count"] == 4
    manifest = manifest_of(result)
    assert [piece["soql"] for piece in manifest["slices"]] == [
        "SELECT Id, Name FROM Account WHERE SystemModstamp >= 2024-01-01T00:00:00Z "
        "AND SystemModstamp < 2024-01-02T00:00:00Z",
        "SELECT Id, Name FROM Account WHERE SystemModstamp >= 2024-01-02T00:00:00Z "
        "AND SystemModstamp < 2024-01-03T00:00:00Z",
    ]
    assert manifest["reason"] == "slices=2"
    assert manifest["interval"]["start"] == "2024-01-01T00:00:00Z"
    assert len(query_jobs(emulator)) == 2  # the interval is the window: no bound query


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_a_rerun_of_the_interval_replaces_the_other_shape_of_extract(
    emulator, salesforce_conn, results_base, monkeypatch
) -> None:
    salesforce_conn(emulator)
    day2, day3 = DAY1 + DAY, DAY1 + 2 * DAY
    insert_at(emulator, monkeypatch, DAY1 + HOUR, "one", "two")
    insert_at(emulator, monkeypatch, day2 + HOUR, "three")
    interval = {"start": DAY1, "end": day3}
    unsliced, _ = run(operator(incremental=True), context(**interval))
    folder = Path(unsliced["results_path"].removeprefix("file://"))
    assert files_in(folder) == ["manifest.json", "part-00000.csv"]
    sliced, _ = run(operator(incremental=True, slices=2), context(try_number=2, **interval))
    assert sliced["results_path"] == unsliced["results_path"]
    assert files_in(folder) == [
        "manifest.json", "slice-0000/manifest.json", "slice-0000/part-00000.csv",
        "slice-0001/manifest.json", "slice-0001/part-00000.csv",
    ]
    again, _ = run(operator(incremental=True), context(try_number=3, **interval))
    assert files_in(folder) == ["manifest.json", "part-00000.csv"]
    assert sorted(name for _, name in rows_of(again["files"])) == ["one", "three", "two"]


def test_slice_by_month_without_an_interval(emulator, salesforce_conn, results_base, monkeypatch) -> None:
    salesforce_conn(emulator)
    for moment, name in [
        (datetime(2024, 1, 15, 12, tzinfo=UTC), "january"),
        (datetime(2024, 2, 1, tzinfo=UTC), "first of february"),
        (datetime(2024, 2, 20, tzinfo=UTC), "february"),
        (datetime(2024, 3, 3, 8, 30, 15, 500000, tzinfo=UTC), "march"),
    ]:
        insert_at(emulator, monkeypatch, moment, name)
    soql = "SELECT Id, Name FROM Account WHERE Name != 'x'"
    result, _ = run(operator(soql=soql, slice_by="month"), context())
    assert names_by_slice(result) == {0: ["january"], 1: ["february", "first of february"], 2: ["march"]}
    slices = manifest_of(result)["slices"]
    assert [(piece["start"], piece["end"]) for piece in slices] == [
        ("2024-01-15T12:00:00Z", "2024-02-01T00:00:00Z"),
        ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2024-03-01T00:00:00Z", "2024-03-03T08:30:16Z"),
    ]
    assert slices[1]["soql"] == (
        "SELECT Id, Name FROM Account WHERE (Name != 'x') AND CreatedDate >= 2024-02-01T00:00:00Z "
        "AND CreatedDate < 2024-03-01T00:00:00Z"
    )
    assert sorted(rows_of(result["files"])) == emulator_rows(emulator)


def test_a_slice_at_the_floor_fails_naming_it(emulator_factory, salesforce_conn, results_base,
                                              monkeypatch) -> None:
    server = emulator_factory(query_timeout_records=2)
    salesforce_conn(server)
    insert_at(server, monkeypatch, DAY1, *(f"dense {i}" for i in range(5)))
    insert_at(server, monkeypatch, DAY1 + HOUR, "later")
    with pytest.raises(AirflowFailException) as failed:
        run(operator(slices=2, min_slice=HOUR), context())
    text = str(failed.value)
    assert text.startswith(
        "slice 0 [2024-01-01T00:00:00Z, 2024-01-01T00:30:00Z) of the query ran too long for Salesforce "
        "(job 750"
    )
    assert "shorter than twice min_slice=1:00:00" in text
    assert "filter the query" in text


def test_an_unsliced_timeout_too_short_to_slice_fails_with_the_advice(
    emulator_factory, salesforce_conn, results_base, monkeypatch
) -> None:
    server = emulator_factory(query_timeout_records=2)
    salesforce_conn(server)
    insert_at(server, monkeypatch, DAY1, *(f"same second {i}" for i in range(5)))
    with pytest.raises(AirflowFailException) as failed:
        run(operator(), context())
    text = str(failed.value)
    assert "ended Failed: InternalServerError : Retried more than 15 times" in text
    assert "apply a filter and try again" in text
    assert text.endswith(
        "The query cannot be sliced: the window [2024-01-01T00:00:00Z, 2024-01-01T00:00:01Z) is shorter than "
        "twice min_slice=0:00:01, so it is not sliced"
    )


class Killed(BaseException):
    """The worker dies (not an exception the operator could catch)."""


def test_a_killed_task_resumes_without_running_finished_slices_again(
    emulator, salesforce_conn, results_base, monkeypatch
) -> None:
    salesforce_conn(emulator)
    spread(emulator, monkeypatch)
    advance = SlicedExtract.advance

    def kill_once_a_slice_is_done(self: SlicedExtract) -> list[str]:
        running = advance(self)
        if self.plan.in_state("done"):
            raise Killed  # slice 0 extracted, slice 1's job started
        return running

    monkeypatch.setattr(SlicedExtract, "advance", kill_once_a_slice_is_done)
    with pytest.raises(Killed):
        operator(slices=3, slice_concurrency=1).execute(context())
    assert len(query_jobs(emulator)) == 4  # 2 bound queries, slices 0 and 1
    folder = results_base / "dag" / "run-1" / "extract" / "try-1"
    first_page = folder / "slice-0000" / "part-00000.csv"
    stamp = first_page.stat().st_mtime_ns
    monkeypatch.setattr(SlicedExtract, "advance", advance)
    result = operator(slices=3, slice_concurrency=1).execute(context(try_number=2))
    assert len(query_jobs(emulator)) == 5  # only slice 2 was still to start
    assert first_page.stat().st_mtime_ns == stamp
    assert result["results_path"] == f"file://{folder}"
    rows = rows_of(result["files"])
    assert sorted(rows) == emulator_rows(emulator)
    assert len(rows) == len(set(rows))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slices": 2, "slice_by": "month"}, "slices or slice_by, not both"),
        ({"slices": 0}, "slices must be a whole number of at least 1"),
        ({"slices": True}, "slices must be a whole number"),
        ({"slice_by": "hour"}, "slice_by must be one of year, month, week, day"),
        ({"min_slice": timedelta(0)}, "min_slice must be a timedelta of at least one second"),
        ({"min_slice": 60}, "min_slice must be a timedelta"),
        ({"slice_concurrency": 0}, "slice_concurrency must be at least 1"),
        ({"slices": 2, "output_mode": "single"}, "need output_mode='pages'"),
    ],
)
def test_bad_slicing_parameters_are_refused_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        operator(**kwargs)


def test_a_query_that_cannot_be_sliced_is_refused_before_any_job(emulator, salesforce_conn,
                                                                  results_base) -> None:
    salesforce_conn(emulator)
    with pytest.raises(AirflowFailException, match="The query cannot be sliced: LIMIT would cut"):
        operator(soql="SELECT Id FROM Account LIMIT 5", slices=2).execute(context())
    assert query_jobs(emulator) == []
