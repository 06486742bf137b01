"""Joining the pages of a single-file extract (``query/extract.py``), called directly on stored parts.

The join drops every page's header line but the first one written, and refuses parts that do not hold
what the manifest says: a header dropped twice, or one kept twice, silently corrupts the one file a
downstream job reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer
from airflow_provider_sfbulk.exceptions import SalesforceBulkTransientError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.extract import _Extract, extract_query_results
from airflow_provider_sfbulk.query.manifest import MANIFEST_NAME, PARTS_FOLDER, PageEntry
from airflow_provider_sfbulk.query.options import ExtractOptions

HEADER = b'"Id","Name"\n'


def _lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The messages of one of our loggers (Airflow's own loggers write to the same capture)."""
    return [record.getMessage() for record in caplog.records if record.name == logger]


def _extract(tmp_path: Path, pages: list[tuple[bytes, int, int]], **options: Any) -> _Extract:
    """An extract of job ``750Q`` whose parts are already stored: ``(bytes, records, header bytes)``."""
    job = JobInfo(id="750Q", kind=JobKind.QUERY, state=JobState.JOB_COMPLETE, operation="query")
    extract = _Extract(None, job, to_storage_path(tmp_path), ExtractOptions(output="single", **options))  # type: ignore[arg-type]
    (tmp_path / PARTS_FOLDER).mkdir(exist_ok=True)
    for index, (data, records, header_bytes) in enumerate(pages):
        name = f"{PARTS_FOLDER}/part-{index:05d}.csv"
        (tmp_path / name).write_bytes(data)
        extract.manifest.entries[index] = PageEntry(
            index, None, None, None, name, records, records, len(data), len(data), "00", header_bytes
        )
    return extract


def test_pages_are_joined_with_the_first_header_only(tmp_path: Path) -> None:
    pages = [
        (b"", 0, 0),  # an empty first page has no header: the next page's header is the file's
        (HEADER + b'"1","a"\n"2","b ""x"""\n', 2, len(HEADER)),
        (HEADER + b'"3","multi\nline"\n', 1, len(HEADER)),
        (b"", 0, 0),
    ]
    extract = _extract(tmp_path, pages)
    done = extract.join_pages()
    expected = HEADER + b'"1","a"\n"2","b ""x"""\n"3","multi\nline"\n'
    assert (tmp_path / "results.csv").read_bytes() == expected
    assert done == {
        "file": "results.csv",
        "bytes": len(expected),
        "sha256": hashlib.sha256(expected).hexdigest(),
        "record_count": 3,
    }


def test_a_part_shorter_than_its_header_is_refused(tmp_path: Path) -> None:
    pages = [(HEADER + b'"1","a"\n', 1, len(HEADER)), (HEADER[:5], 0, len(HEADER))]
    with pytest.raises(QueryExtractError) as caught:
        _extract(tmp_path, pages).join_pages()
    assert caught.value.job_id == "750Q"
    assert str(caught.value).startswith(f"part {PARTS_FOLDER}/part-00001.csv is shorter than its header")


def test_a_joined_count_that_differs_from_the_pages_is_refused(tmp_path: Path) -> None:
    pages = [(HEADER + b'"1","a"\n', 1, len(HEADER)), (HEADER + b'"2","b"\n"3","c"\n', 3, len(HEADER))]
    with pytest.raises(QueryExtractError) as caught:
        _extract(tmp_path, pages, file_name="accounts").join_pages()
    assert caught.value.job_id == "750Q"
    assert str(caught.value).startswith("accounts.csv holds 3 record(s) once joined, the pages 4")


def test_removing_the_parts_deletes_every_part_and_the_parts_folder(tmp_path: Path) -> None:
    pages = [(HEADER + b'"1","a"\n', 1, len(HEADER)), (HEADER + b'"2","b"\n', 1, len(HEADER))]
    extract = _extract(tmp_path, pages)
    extract.join_pages()
    extract.remove_parts()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_a_stale_file_that_cannot_be_deleted_is_named_in_a_warning(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    extract = _extract(tmp_path, [])
    for name in ("part-00007.csv", "part-00008.csv"):
        (tmp_path / name).write_bytes(b"x")
    stuck = to_storage_path(tmp_path / "part-00007.csv")
    unlink = type(stuck).unlink

    def refuse_one(path: Any, *args: Any, **kwargs: Any) -> None:
        # Tests run as root here, so file permissions cannot make a deletion fail.
        if path.name == "part-00007.csv":
            raise PermissionError(13, "Permission denied")
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(stuck), "unlink", refuse_one)
    caplog.set_level(logging.WARNING, logger="airflow_provider_sfbulk.query.extract")
    extract._remove_stale({"part-00007.csv", "part-00008.csv", "part-00009.csv"})
    assert not (tmp_path / "part-00008.csv").exists()
    refused = f"Could not delete {stuck}: [Errno 13] Permission denied"
    assert _lines(caplog, "airflow_provider_sfbulk.query.extract") == [refused]


def test_a_stale_name_that_is_now_a_folder_is_left_with_a_warning(tmp_path: Path, caplog) -> None:
    """ObjectStoragePath.unlink() of a folder raises fsspec's ValueError, not OSError: the extract still
    finishes; the folder (someone else's) stays."""
    extract = _extract(tmp_path, [])
    (tmp_path / "part-00007.csv").mkdir()
    (tmp_path / "part-00008.csv").write_bytes(b"x")
    caplog.set_level(logging.WARNING, logger="airflow_provider_sfbulk.query.extract")
    extract._remove_stale({"part-00007.csv", "part-00008.csv"})
    assert (tmp_path / "part-00007.csv").is_dir()
    assert not (tmp_path / "part-00008.csv").exists()
    (line,) = _lines(caplog, "airflow_provider_sfbulk.query.extract")
    assert line.startswith(f"Could not delete {to_storage_path(tmp_path / 'part-00007.csv')}: ")


# --- against the emulator: resuming and the locator chain of resultPages ---------------------------------

CONN_ID = "salesforce_bulk_default"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def _query(emulator: EmulatorServer, salesforce_conn: Callable[..., str], records: int) -> str:
    salesforce_conn(emulator)
    emulator.seed("Account", records, seed=3)
    return ApiSession(emulator).run_query("SELECT Id, Name FROM Account")["id"]


def test_a_rerun_keeps_every_stored_page_and_says_so(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], tmp_path: Path, caplog
) -> None:
    job_id = _query(emulator, salesforce_conn, 25)
    options = ExtractOptions(max_records_per_page=10, concurrency=1)
    factory = lambda: SalesforceBulkHook(CONN_ID, retry_policy=FAST)  # noqa: E731
    first = extract_query_results(factory, job_id, tmp_path, options)
    assert (first.paging, first.resumed_pages, len(first.pages)) == ("resultPages", 0, 3)
    listed = json.loads((tmp_path / MANIFEST_NAME).read_text("utf-8"))["files"]
    assert listed == [
        {"file": p.file, "bytes": p.bytes, "sha256": p.sha256, "record_count": p.record_count}
        for p in first.pages
    ]
    assert [entry["file"] for entry in listed] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    caplog.set_level(logging.INFO, logger="airflow_provider_sfbulk.query.extract")
    again = extract_query_results(factory, job_id, tmp_path, options)
    assert (again.resumed_pages, again.record_count) == (3, 25)
    kept = f"Query job {job_id}: 3 of 3 page(s) kept from an earlier run"
    assert kept in _lines(caplog, "airflow_provider_sfbulk.query.extract")


def test_pages_whose_locators_do_not_chain_are_recorded_as_inconsistent(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], tmp_path: Path, caplog
) -> None:
    job_id = _query(emulator, salesforce_conn, 25)

    class OwnLocators(SalesforceBulkHook):
        """Reports a next locator of its own for every page: the chain no longer matches resultPages."""

        def download_query_page(self, job: str, writable: Any, locator: str | None = None, **kw: Any) -> Any:
            page = super().download_query_page(job, writable, locator=locator, **kw)
            return dataclasses.replace(page, next_locator=f"own-{locator}")

    options = ExtractOptions(max_records_per_page=10, concurrency=1)
    caplog.set_level(logging.WARNING, logger="airflow_provider_sfbulk.query.extract")
    result = extract_query_results(lambda: OwnLocators(CONN_ID, retry_policy=FAST), job_id, tmp_path, options)
    assert result.record_count == 25
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text("utf-8"))
    assert (manifest["paging"], manifest["locator_chain"]) == ("resultPages", "inconsistent")
    assert _lines(caplog, "airflow_provider_sfbulk.query.extract") == [
        f"Query job {job_id}: the pages' Sforce-Locator headers do not chain into the resultPages locators; "
        "relying on the record counts"
    ]


def test_a_page_fetched_again_is_announced_with_its_attempt(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], tmp_path: Path, caplog
) -> None:
    job_id = _query(emulator, salesforce_conn, 5)
    failures = [SalesforceBulkTransientError("HTTP 503 busy")]

    class FailsOnce(SalesforceBulkHook):
        def download_query_page(self, job: str, writable: Any, locator: str | None = None, **kw: Any) -> Any:
            if failures:
                raise failures.pop()
            return super().download_query_page(job, writable, locator=locator, **kw)

    options = ExtractOptions(concurrency=1, page_attempts=3, page_retry_delay=0.0)
    caplog.set_level(logging.INFO, logger="airflow_provider_sfbulk.query.pages")
    result = extract_query_results(lambda: FailsOnce(CONN_ID, retry_policy=FAST), job_id, tmp_path, options)
    assert (result.record_count, result.pages[0].attempts) == (5, 2)
    page = result.pages[0]
    where = to_storage_path(tmp_path / page.file)
    assert _lines(caplog, "airflow_provider_sfbulk.query.pages") == [
        f"Query job {job_id}: page 0 failed (HTTP 503 busy); fetching it again in 0.0s (attempt 2 of 3)",
        f"Query job {job_id}: page 0 stored (5 records, {page.bytes} bytes) in {where}",
    ]


@pytest.mark.parametrize(("shape", "paging"), [("documented", "resultPages"), ("missing", "locator")])
def test_a_finished_single_file_extract_is_returned_again_as_it_was(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], tmp_path: Path, shape: str, paging: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = _query(emulator, salesforce_conn, 12)
    emulator.set_result_pages_shape(shape)
    options = ExtractOptions(output="single", max_records_per_page=5, concurrency=1)
    factory = lambda: SalesforceBulkHook(CONN_ID, retry_policy=FAST)  # noqa: E731
    caplog.set_level(logging.INFO, logger="airflow_provider_sfbulk.query.extract")
    first = extract_query_results(factory, job_id, tmp_path, options)
    done = f"Query job {job_id}: 12 record(s) in 3 page(s) extracted to {to_storage_path(tmp_path)}"
    assert done in _lines(caplog, "airflow_provider_sfbulk.query.extract")
    again = extract_query_results(factory, job_id, tmp_path, options)
    assert (first.paging, first.columns, first.record_count) == (paging, ["Id", "Name"], 12)
    assert (again.paging, again.paging_fallback) == (first.paging, first.paging_fallback)
    assert again.columns == first.columns
    assert (again.resumed_pages, again.files) == (3, first.files)
    assert (first.paging_fallback is None) == (shape == "documented")


def test_a_job_that_is_not_complete_is_refused_naming_it(
    emulator_factory: Callable[..., EmulatorServer], salesforce_conn: Callable[..., str], tmp_path: Path
) -> None:
    slow = emulator_factory(query_delay=30.0)
    salesforce_conn(slow)
    soql = {"operation": "query", "query": "SELECT Id FROM Account"}
    response = ApiSession(slow).post("/jobs/query", json=soql)
    job_id = response.json()["id"]
    with pytest.raises(QueryExtractError) as caught:
        extract_query_results(lambda: SalesforceBulkHook(CONN_ID, retry_policy=FAST), job_id, tmp_path)
    assert caught.value.job_id == job_id
    assert str(caught.value).startswith(
        "query job results can only be read once the job is JobComplete; it is "
    )
