"""SalesforceBulkQueryOperator with ``incremental=True`` and ``asset``, driven directly against the emulator:
the interval's records only, the SOQL sent in the log and the manifest, the folder keyed by the interval,
a re-run that replaces the interval's files (even when it fails half-way), refusals, and the Asset."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import DAG, AirflowException, AirflowFailException, Asset

from airflow_provider_sfbulk.emulator import records
from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.hooks import bulk as bulk_hooks
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.manifest import PageSpec
from airflow_provider_sfbulk.query.pages import PageDownloader

UTC = timezone.utc
DAY1 = datetime(2024, 1, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
FOLDER1 = "20240101T000000Z_20240102T000000Z"


@pytest.fixture(autouse=True)
def fast_hook_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_hooks, "DEFAULT_RETRY_POLICY", RetryPolicy(2, 0.01, 0.02))


def context(start: datetime | None, end: datetime | None, try_number: int = 1, run_id: str = "r1") -> Any:
    return {
        "ti": FakeTI(try_number, task_id="extract", run_id=run_id),
        "data_interval_start": start,
        "data_interval_end": end,
    }


def operator(**kwargs: Any) -> SalesforceBulkQueryOperator:
    kwargs.setdefault("soql", "SELECT Id, Name FROM Account WHERE Name != 'skip me'")
    kwargs.setdefault("incremental", True)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("deferrable", False)
    return SalesforceBulkQueryOperator(task_id="extract", **kwargs)


def insert_at(api: ApiSession, monkeypatch: pytest.MonkeyPatch, moment: datetime, *names: str) -> None:
    monkeypatch.setattr(records, "clock", lambda: moment)
    body = "Name\n" + "".join(f"{name}\n" for name in names)
    assert api.run_ingest("Account", "insert", body.encode())["numberRecordsFailed"] == 0


def names_in(result: dict[str, Any]) -> list[str]:
    found = []
    for uri in result["files"]:
        lines = Path(uri.removeprefix("file://")).read_text().splitlines()[1:]
        found.extend(line.split(",")[1].strip('"') for line in lines)
    return sorted(found)


def folder_files(result: dict[str, Any]) -> list[str]:
    return sorted(p.name for p in Path(result["results_path"].removeprefix("file://")).iterdir())


def test_extracts_the_interval_only_into_its_folder(emulator, salesforce_conn, results_base, monkeypatch,
                                                    caplog, capsys) -> None:
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    insert_at(api, monkeypatch, DAY1 - timedelta(seconds=1), "before")
    insert_at(api, monkeypatch, DAY1, "on start", "skip me")
    insert_at(api, monkeypatch, DAY2 - timedelta(milliseconds=1), "last ms")
    insert_at(api, monkeypatch, DAY2, "on end")
    caplog.set_level(logging.INFO)
    result = operator().execute(context(DAY1, DAY2))
    assert names_in(result) == ["last ms", "on start"]
    assert result["results_path"] == f"file://{results_base}/dag/extract/{FOLDER1}"
    sent = (
        "SELECT Id, Name FROM Account WHERE (Name != 'skip me') AND SystemModstamp >= 2024-01-01T00:00:00Z "
        "AND SystemModstamp < 2024-01-02T00:00:00Z"
    )
    assert f"SOQL sent: {sent}" in caplog.text + capsys.readouterr().out
    manifest = json.loads(Path(result["manifest"].removeprefix("file://")).read_text())
    assert manifest["interval"] == {"field": "SystemModstamp", "start": "2024-01-01T00:00:00Z",
                                    "end": "2024-01-02T00:00:00Z", "soql": sent}
    # The next interval starts with the record stamped on the bound.
    assert names_in(operator().execute(context(DAY2, DAY3))) == ["on end"]


def test_a_rerun_of_the_interval_replaces_its_files(emulator, salesforce_conn, results_base,
                                                    monkeypatch) -> None:
    salesforce_conn(emulator)
    api = ApiSession(emulator)
    insert_at(api, monkeypatch, DAY1 + timedelta(hours=1), *(f"a{i}" for i in range(6)))
    op = operator(max_records_per_page=2, download_concurrency=1, page_attempts=1)
    first = op.execute(context(DAY1, DAY2, run_id="scheduled"))
    assert folder_files(first) == ["manifest.json", "part-00000.csv", "part-00001.csv", "part-00002.csv"]
    # Two records move out of the interval: the re-run (another run id: a backfill) has two pages.
    ids = [r["Id"] for r in emulator.records("Account")][:2]
    monkeypatch.setattr(records, "clock", lambda: DAY3)
    api.run_ingest("Account", "update", ("Id,Name\n" + "".join(f"{i},moved\n" for i in ids)).encode())
    # Its second page fails: the old job's pages must be gone all the same, not left beside the new ones.
    download = PageDownloader.download

    def fail_second_page(self: PageDownloader, spec: PageSpec) -> Any:
        if spec.index == 1:
            raise QueryExtractError("lost page", job_id=self.job_id)
        return download(self, spec)

    monkeypatch.setattr(PageDownloader, "download", fail_second_page)
    again = operator(max_records_per_page=2, download_concurrency=1, page_attempts=1)
    with pytest.raises(AirflowException, match="lost page"):
        again.execute(context(DAY1, DAY2, run_id="backfill"))
    folder = Path(first["results_path"].removeprefix("file://"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job_id"] != first["job_id"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-00000.csv"]
    monkeypatch.setattr(PageDownloader, "download", download)
    second = operator(max_records_per_page=2, download_concurrency=1, page_attempts=1).execute(
        context(DAY1, DAY2, try_number=2, run_id="backfill")
    )
    assert second["results_path"] == first["results_path"]
    assert second["job_id"] != first["job_id"]
    assert folder_files(second) == ["manifest.json", "part-00000.csv", "part-00001.csv"]
    assert names_in(second) == ["a2", "a3", "a4", "a5"]


@pytest.mark.parametrize(
    ("soql", "start", "end", "message"),
    [
        ("SELECT Id FROM Account LIMIT 5", DAY1, DAY2, "LIMIT would cut"),
        ("SELECT Id FROM Account", None, None, "has none"),
        ("SELECT Id FROM Account", DAY1, DAY1, "is empty"),
    ],
)
def test_refusals_fail_without_a_job(emulator, salesforce_conn, results_base, soql, start, end,
                                     message) -> None:
    salesforce_conn(emulator)
    with pytest.raises(AirflowFailException, match=message):
        operator(soql=soql).execute(context(start, end))
    assert ApiSession(emulator).get("/jobs/query").json()["records"] == []


def test_without_incremental_the_soql_is_sent_as_written(emulator, salesforce_conn, results_base) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 3, seed=1)
    result = operator(incremental=False).execute(context(DAY1, DAY2))
    assert len(names_in(result)) == 3
    assert "/try-1" in result["results_path"]


def test_asset_parameter(results_base, tmp_path) -> None:
    assert operator().results_asset is None
    named = operator(asset="s3://bucket/accounts")
    assert named.results_asset == Asset("s3://bucket/accounts")
    assert named.results_asset in named.outlets
    fixed = operator(incremental=False, results_path=str(tmp_path / "out"), asset=True)
    assert fixed.results_asset == Asset(f"file://{tmp_path}/out")
    with DAG("accounts_dag", schedule=None, start_date=DAY1):
        in_dag = operator(asset=True)
    assert in_dag.results_asset == Asset(f"file://{results_base}/accounts_dag/extract")
    assert list(in_dag.outlets) == [in_dag.results_asset]
    with pytest.raises(ValueError, match="fixed results location"):
        operator(incremental=False, asset=True)
    with pytest.raises(ValueError, match="without templates"):
        operator(results_path="/x/{{ ds }}", asset=True)
    with pytest.raises(ValueError, match="inside a DAG"):
        operator(asset=True)


class _Event:
    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}


def test_the_asset_event_carries_the_extract(emulator, salesforce_conn, results_base, monkeypatch) -> None:
    salesforce_conn(emulator)
    insert_at(ApiSession(emulator), monkeypatch, DAY1, "one")
    op = operator(asset="file:///somewhere/accounts")
    events: defaultdict[Any, _Event] = defaultdict(_Event)
    ctx = {**context(DAY1, DAY2), "outlet_events": events}
    result = op.execute(ctx)
    extra = events[op.results_asset].extra
    assert extra["job_id"] == result["job_id"]
    assert extra["record_count"] == 1
    assert extra["file_count"] == 1
    assert extra["results_path"] == result["results_path"]
    assert extra["interval"]["start"] == "2024-01-01T00:00:00Z"
    json.dumps(extra)  # JSON, as Airflow stores it
