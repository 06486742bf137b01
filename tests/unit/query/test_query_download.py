"""The query extract engine against the emulator: paging, streaming, checks, manifest, resuming, retries."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.exceptions import SalesforceBulkTransientError
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.protocol.waiting import PollSchedule
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.extract import extract_query_results
from airflow_provider_sfbulk.query.manifest import MANIFEST_NAME
from airflow_provider_sfbulk.query.options import ExtractOptions, result_pages_supported

CONN_ID = "salesforce_bulk_default"
ONE_TRY = RetryPolicy(max_attempts=1, base_delay=0.0, max_delay=0.0)
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
SOQL = "SELECT Id, Name, Description FROM Account"

#: Values that break naive CSV handling: quoted line breaks (LF and CRLF), quotes, delimiters, unicode.
TRICKY = [
    ("Multi Line", "first line\nsecond line\nthird"),
    ("Quote \"Corp\"", 'he said "hi", then left'),
    ("Comma, Inc", "a,b,c"),
    ("CRLF Ltd", "one\r\ntwo"),
    ("Ünïcödé GmbH", "ümlaut ✓"),
    ("Empty Desc", ""),
]


def _ingest_tricky(hook: SalesforceBulkHook) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Name", "Description"])
    writer.writerows(TRICKY)
    job = hook.create_ingest_job("Account", "insert")
    hook.upload_job_data(job.id, buffer.getvalue().encode("utf-8"))
    hook.close_job(job.id)
    outcome = hook.wait_for_jobs([job.id], "ingest", schedule=PollSchedule(0.02, 1.5, 0.2),
                                 deadline=time.time() + 30)
    assert outcome.succeeded, outcome.message


def _run_query(hook: SalesforceBulkHook, soql: str = SOQL, operation: str = "query") -> str:
    job = hook.create_query_job(soql, operation)
    outcome = hook.wait_for_jobs([job.id], "query", schedule=PollSchedule(0.02, 1.5, 0.2),
                                 deadline=time.time() + 30)
    assert outcome.succeeded, outcome.message
    return job.id


def _read_rows(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of every file (each file has its own header line)."""
    header: list[str] = []
    rows: list[list[str]] = []
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        file_header = next(reader)
        assert not header or file_header == header
        header = file_header
        rows.extend(reader)
    return header, rows


def _expected(server: EmulatorServer, *, include_deleted: bool = False) -> list[tuple[str, str, str]]:
    return sorted(
        (record["Id"], record["Name"] or "", record["Description"] or "")
        for record in server.records("Account", include_deleted=include_deleted)
    )


def _local(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri[len("file://"):])


@pytest.fixture
def loaded(emulator: EmulatorServer, salesforce_conn: Callable[..., str]) -> EmulatorServer:
    """250 seeded Accounts plus the tricky ones ingested through the hook."""
    salesforce_conn(emulator)
    emulator.seed("Account", 250, seed=7)
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        _ingest_tricky(hook)
    return emulator


def _factory(
    policy: RetryPolicy = FAST, cls: type[SalesforceBulkHook] = SalesforceBulkHook
) -> Callable[[], Any]:
    return lambda: cls(CONN_ID, retry_policy=policy)


# The connection refuses API versions before 58.0 (protocol/connection.py), so the Sforce-Locator chain
# that older versions need is forced with use_result_pages=False; the emulator serves it on any version.
PAGING = [pytest.param(None, id="resultPages"), pytest.param(False, id="locator")]


def test_paging_follows_the_api_version() -> None:
    assert result_pages_supported("58.0")
    assert result_pages_supported(60.0)
    assert not result_pages_supported("57.0")


@pytest.mark.parametrize("use_result_pages", PAGING)
def test_multi_page_extract_matches_the_records(
    loaded: EmulatorServer, tmp_path: Path, use_result_pages: bool | None
) -> None:
    emulator = loaded
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    result = extract_query_results(
        _factory(),
        job_id,
        tmp_path / "out",
        ExtractOptions(max_records_per_page=40, concurrency=3, use_result_pages=use_result_pages),
    )
    assert result.paging == ("locator" if use_result_pages is False else "resultPages")
    assert len(result.pages) == 7  # 256 rows / 40
    assert [page.record_count for page in result.pages] == [40] * 6 + [16]
    assert result.record_count == 256
    assert result.columns == ["Id", "Name", "Description"]
    header, rows = _read_rows([_local(uri) for uri in result.files])
    assert header == ["Id", "Name", "Description"]
    assert sorted(map(tuple, rows)) == _expected(emulator)
    assert len(rows) == len(set(row[0] for row in rows))  # nothing doubled
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    assert manifest["record_count"] == manifest["number_records_processed"] == 256
    assert manifest["locator_chain"] == "consistent"
    assert manifest["pages"][0]["locator"] is None
    # the locators form the chain Salesforce handed out: each page's next locator opens the next page
    for page, following in zip(manifest["pages"], manifest["pages"][1:], strict=False):
        assert page["next_locator"] == following["locator"]
    assert manifest["pages"][-1]["next_locator"] is None
    for page in manifest["pages"]:
        stored = (tmp_path / "out" / page["file"]).read_bytes()
        assert len(stored) == page["bytes"]
        assert hashlib.sha256(stored).hexdigest() == page["sha256"]
    assert result.to_xcom() == {
        "job_id": job_id,
        "files": result.files,
        "record_count": 256,
        "columns": ["Id", "Name", "Description"],
        "manifest": str(result.manifest),
        "results_path": result.results_path,
    }


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_single_file_has_one_header_and_every_row(loaded: EmulatorServer, tmp_path: Path,
                                                  compression: str | None) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    result = extract_query_results(
        _factory(), job_id, tmp_path,
        ExtractOptions(output="single", compression=compression, max_records_per_page=50, concurrency=4),
    )
    suffix = ".csv.gz" if compression else ".csv"
    assert result.files == [f"file://{tmp_path}/results{suffix}"]
    data = _local(result.files[0]).read_bytes()
    if compression:
        data = gzip.decompress(data)
    assert data.count(b'"Id","Name","Description"') == 1
    assert data.startswith(b'"Id","Name","Description"\n')
    header, rows = _read_rows([_local(result.files[0])])
    assert sorted(map(tuple, rows)) == _expected(loaded)
    assert not (tmp_path / ".parts").exists()  # the parts are gone once joined
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert len(manifest["pages"]) == 6
    assert manifest["files"][0]["record_count"] == 256
    assert manifest["files"][0]["bytes"] == _local(result.files[0]).stat().st_size

    # Running again for the same job finds the finished file and does not download anything.
    class NoDownload(SalesforceBulkHook):
        def download_query_page(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing should be downloaded again")

    again = extract_query_results(
        _factory(cls=NoDownload), job_id, tmp_path,
        ExtractOptions(output="single", compression=compression, max_records_per_page=50),
    )
    assert again.files == result.files
    assert (again.record_count, again.resumed_pages) == (256, 6)


def test_gzip_pages_are_valid_gzip_files(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    result = extract_query_results(
        _factory(), job_id, tmp_path, ExtractOptions(compression="gzip", max_records_per_page=100)
    )
    assert [Path(uri).name for uri in result.files] == [f"part-0000{i}.csv.gz" for i in range(3)]
    _, rows = _read_rows([_local(uri) for uri in result.files])
    assert sorted(map(tuple, rows)) == _expected(loaded)
    assert result.bytes_stored < result.csv_bytes  # what is stored is compressed


def test_a_page_the_hook_gives_up_on_is_fetched_again(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    # The hook makes a single attempt, so the first /results request fails for the engine to handle.
    loaded.set_faults([{"status": 503, "method": "GET", "path": "/results$", "times": 1}])
    result = extract_query_results(
        _factory(ONE_TRY), job_id, tmp_path,
        ExtractOptions(max_records_per_page=100, concurrency=1, page_retry_delay=0.01),
    )
    assert [page.attempts for page in result.pages] == [2, 1, 1]
    _, rows = _read_rows([_local(uri) for uri in result.files])
    assert sorted(map(tuple, rows)) == _expected(loaded)


def test_page_retries_wait_as_the_protocol_retry_policy_says(
    loaded: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    waits: list[tuple[RetryPolicy, int]] = []

    def backoff(policy: RetryPolicy, retry_number: int, rng: Any = None) -> float:
        waits.append((policy, retry_number))
        return 0.0

    monkeypatch.setattr(RetryPolicy, "backoff", backoff)
    loaded.set_faults([{"status": 503, "method": "GET", "path": "/results$", "times": 2}])
    options = ExtractOptions(max_records_per_page=100, concurrency=1, page_attempts=3, page_retry_delay=5.0)
    result = extract_query_results(_factory(ONE_TRY), job_id, tmp_path, options)
    assert [page.attempts for page in result.pages] == [3, 1, 1]
    assert waits == [(options.page_retry_policy, 1), (options.page_retry_policy, 2)]
    assert (options.page_retry_policy.max_attempts, options.page_retry_policy.base_delay) == (3, 5.0)


def test_a_page_that_keeps_failing_fails_the_extract(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    loaded.set_faults([{"status": 503, "method": "GET", "path": "/results$"}])
    with pytest.raises(SalesforceBulkTransientError):
        extract_query_results(
            _factory(ONE_TRY), job_id, tmp_path,
            ExtractOptions(max_records_per_page=100, page_attempts=2, page_retry_delay=0.01),
        )
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    assert manifest["pages"] == []


@pytest.mark.parametrize("use_result_pages", PAGING)
def test_a_second_run_resumes_after_the_stored_pages(
    emulator: EmulatorServer,
    salesforce_conn: Callable[..., str],
    tmp_path: Path,
    use_result_pages: bool | None,
) -> None:
    salesforce_conn(emulator)
    emulator.seed("Account", 250, seed=7)
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    downloads: list[str | None] = []
    armed = [True]

    class BreaksAfterThree(SalesforceBulkHook):
        """Turns the emulator's /results into a permanent 503 once three pages were fetched."""

        def download_query_page(self, job: str, writable: Any, locator: str | None = None, **kw: Any) -> Any:
            downloads.append(locator)
            if armed[0] and len(downloads) == 4:
                emulator.set_faults([{"status": 503, "method": "GET", "path": "/results$"}])
            return super().download_query_page(job, writable, locator=locator, **kw)

    options = ExtractOptions(
        max_records_per_page=30,
        concurrency=1,
        page_attempts=1,
        manifest_interval=0,
        use_result_pages=use_result_pages,
    )
    with pytest.raises(SalesforceBulkTransientError):
        extract_query_results(_factory(ONE_TRY, BreaksAfterThree), job_id, tmp_path, options)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    assert [page["index"] for page in manifest["pages"]] == [0, 1, 2]
    kept = {name: (tmp_path / name).stat().st_mtime_ns for name in ("part-00000.csv", "part-00001.csv")}
    failed_locator = downloads[3]

    emulator.reset_faults()
    armed[0] = False
    downloads.clear()
    result = extract_query_results(_factory(FAST, BreaksAfterThree), job_id, tmp_path, options)
    assert result.resumed_pages == 3
    assert downloads[0] == failed_locator  # starts with the page that failed
    assert len(downloads) == 9 - 3  # 250 rows in pages of 30: 9 pages, 3 kept
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in kept} == kept
    assert result.record_count == 250
    _, rows = _read_rows([_local(uri) for uri in result.files])
    assert sorted(row[0] for row in rows) == sorted(r["Id"] for r in emulator.records("Account"))


def test_a_damaged_stored_page_is_downloaded_again(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    options = ExtractOptions(max_records_per_page=100)
    extract_query_results(_factory(), job_id, tmp_path, options)
    page = tmp_path / "part-00001.csv"
    good = page.read_bytes()
    page.write_bytes(good.replace(b"a", b"b", 1))  # same size, other checksum
    result = extract_query_results(_factory(), job_id, tmp_path, options)
    assert result.resumed_pages == 2
    assert page.read_bytes() == good


def test_a_manifest_of_another_job_is_not_reused(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        first = _run_query(hook)
        second = _run_query(hook, "SELECT Id, Name, Description FROM Account WHERE Name LIKE 'C%'")
    extract_query_results(_factory(), first, tmp_path, ExtractOptions(max_records_per_page=20))
    assert len(list(tmp_path.glob("part-*.csv"))) == 13
    result = extract_query_results(_factory(), second, tmp_path, ExtractOptions(max_records_per_page=20))
    assert result.resumed_pages == 0
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["job_id"] == second
    # the first job's extra pages are gone: the folder holds exactly the second extract
    assert sorted(p.name for p in tmp_path.glob("part-*.csv")) == [Path(uri).name for uri in result.files]


def test_page_count_mismatch_fails(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)

    class OverReports(SalesforceBulkHook):
        def download_query_page(self, *args: Any, **kwargs: Any) -> Any:
            page = super().download_query_page(*args, **kwargs)
            return dataclasses.replace(page, record_count=page.record_count + 1)

    with pytest.raises(QueryExtractError) as failure:
        extract_query_results(_factory(cls=OverReports), job_id, tmp_path,
                              ExtractOptions(max_records_per_page=100))
    # Pages download in parallel, so whichever page finishes first is the one reported (256 rows: 100/100/56).
    found = re.search(r"page \d+ .* holds (\d+) record\(s\) but its Sforce-NumberOfRecords header says (\d+)",
                      str(failure.value))
    assert found, str(failure.value)
    held, claimed = int(found.group(1)), int(found.group(2))
    assert held in (100, 56)
    assert claimed == held + 1


def test_job_total_mismatch_fails(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)

    class CountsMore(SalesforceBulkHook):
        def get_job(self, *args: Any, **kwargs: Any) -> Any:
            job = super().get_job(*args, **kwargs)
            return dataclasses.replace(job, number_records_processed=job.number_records_processed + 5)

    with pytest.raises(QueryExtractError, match=r"hold 256 record\(s\) but the job reports "
                                                 r"numberRecordsProcessed=261"):
        extract_query_results(_factory(cls=CountsMore), job_id, tmp_path)


def test_zero_rows(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook, "SELECT Id, Name FROM Account WHERE Name = 'nobody at all'")
    result = extract_query_results(_factory(), job_id, tmp_path, ExtractOptions(output="single"))
    assert result.record_count == 0
    assert _local(result.files[0]).read_bytes() == b'"Id","Name"\n'
    assert result.columns == ["Id", "Name"]


def test_unfinished_job_is_refused(
    emulator_factory: Callable[..., EmulatorServer], salesforce_conn: Callable[..., str], tmp_path: Path
) -> None:
    # The job would take 30 s, so the abort always finds it running (with a fast emulator the job could
    # complete first on a loaded machine, and the test raced it).
    salesforce_conn(emulator_factory(query_delay=30.0))
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job = hook.create_query_job(SOQL)
        hook.abort_job(job.id, "query")
    with pytest.raises(QueryExtractError, match="JobComplete; it is Aborted"):
        extract_query_results(_factory(), job.id, tmp_path)


def test_other_dialects(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], tmp_path: Path
) -> None:
    salesforce_conn(emulator)
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        _ingest_tricky(hook)
        job = hook.create_query_job(SOQL, column_delimiter="PIPE", line_ending="CRLF")
        hook.wait_for_jobs(
            [job.id], "query", schedule=PollSchedule(0.02, 1.5, 0.2), deadline=time.time() + 30
        )
    result = extract_query_results(
        _factory(), job.id, tmp_path, ExtractOptions(output="single", max_records_per_page=2)
    )
    data = _local(result.files[0]).read_bytes()
    assert data.startswith(b'"Id"|"Name"|"Description"\r\n')
    assert data.count(b'"Id"|') == 1
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="|"))[1:]
    assert sorted((name, desc) for _, name, desc in rows) == sorted(TRICKY)
    assert result.columns == ["Id", "Name", "Description"]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="output"):
        ExtractOptions(output="many")
    with pytest.raises(ValueError, match="compression"):
        ExtractOptions(compression="zip")
    with pytest.raises(ValueError, match="concurrency"):
        ExtractOptions(concurrency=0)
    with pytest.raises(ValueError, match="file_name"):
        ExtractOptions(file_name="a/b")


def test_a_damaged_page_fails_with_a_clear_error(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)

    class Garbles(SalesforceBulkHook):
        """Writes one stray quote in front of what the server sent: the page no longer closes its quotes."""

        def download_query_page(self, job: str, writable: Any, *args: Any, **kwargs: Any) -> Any:
            writable.write(b'"')
            return super().download_query_page(job, writable, *args, **kwargs)

    expected = r"page 0 \(locator None\) is not well-formed CSV: .*unbalanced"
    with pytest.raises(QueryExtractError, match=expected):
        extract_query_results(_factory(cls=Garbles), job_id, tmp_path)


def test_the_first_error_wins_and_other_pages_stop(loaded: EmulatorServer, tmp_path: Path) -> None:
    from airflow_provider_sfbulk.exceptions import SalesforceBulkBadRequestError

    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)

    class RefusesPageTwo(SalesforceBulkHook):
        def download_query_page(self, job: str, writable: Any, locator: str | None = None, **kw: Any) -> Any:
            if locator == "MTAw":  # the locator of row 100, as the emulator spells it
                raise SalesforceBulkBadRequestError(
                    "locator refused", status=400, error_code="INVALID_LOCATOR"
                )
            return super().download_query_page(job, writable, locator=locator, **kw)

    with pytest.raises(SalesforceBulkBadRequestError, match="locator refused"):
        extract_query_results(_factory(cls=RefusesPageTwo), job_id, tmp_path,
                              ExtractOptions(max_records_per_page=50, concurrency=2, manifest_interval=0))
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["complete"] is False
    assert 2 not in [page["index"] for page in manifest["pages"]]
    for page in manifest["pages"]:  # whatever finished is recorded and intact
        assert hashlib.sha256((tmp_path / page["file"]).read_bytes()).hexdigest() == page["sha256"]


def test_a_looping_locator_chain_is_refused(loaded: EmulatorServer, tmp_path: Path) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)

    class Loops(SalesforceBulkHook):
        """The third page points back at the second one."""

        def download_query_page(self, job: str, writable: Any, locator: str | None = None, **kw: Any) -> Any:
            page = super().download_query_page(job, writable, locator=locator, **kw)
            return dataclasses.replace(page, next_locator="NTA") if locator == "MTAw" else page

    with pytest.raises(QueryExtractError, match="'NTA' as the next page, which was already read"):
        extract_query_results(_factory(cls=Loops), job_id, tmp_path,
                              ExtractOptions(max_records_per_page=50, use_result_pages=False))


# --- resultPages answer shapes and the Sforce-Locator fallback (issue 16) ----------------------------------

_FALLBACK_LINE = "following Sforce-Locator instead"


def _fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    return [message for message in messages if _FALLBACK_LINE in message]


def _check_extract(server: EmulatorServer, result: Any, folder: Path) -> dict[str, Any]:
    """The files hold exactly the emulator's records, row for row; returns the manifest."""
    _, rows = _read_rows([_local(uri) for uri in result.files])
    assert sorted(map(tuple, rows)) == _expected(server)
    assert result.record_count == len(rows) == 256
    return json.loads((folder / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    ("shape", "paging"),
    [
        ("documented", "resultPages"),
        ("documented-singular", "resultPages"),
        ("chunks", "resultPages"),
        ("missing", "locator"),
    ],
)
def test_every_result_pages_shape_extracts_every_record(
    loaded: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: str, paging: str
) -> None:
    loaded.set_result_pages_shape(shape)
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    # 7 pages of 40: resultPages needs two calls (5 links per call), so the next link is followed too.
    options = ExtractOptions(max_records_per_page=40, concurrency=3)
    result = extract_query_results(_factory(), job_id, tmp_path / "out", options)
    manifest = _check_extract(loaded, result, tmp_path / "out")
    assert len(result.pages) == 7
    assert result.paging == manifest["paging"] == paging
    warnings = _fallback_warnings(caplog)
    if shape == "missing":
        assert len(warnings) == 1
        assert "404" in warnings[0]
        assert "404" in manifest["paging_fallback"]
        assert result.paging_fallback == manifest["paging_fallback"]
    else:
        assert warnings == []
        assert manifest["paging_fallback"] is None


def test_an_unreadable_result_pages_answer_falls_back_to_the_locator_chain(
    loaded: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_sfbulk.protocol import api

    real = api.parse_result_pages

    def renamed(document: Any, job_id: str | None = None) -> Any:  # a third shape nobody has documented
        return real({"resultRows": document.pop("resultPages"), **document}, job_id)

    monkeypatch.setattr(api, "parse_result_pages", renamed)
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    result = extract_query_results(_factory(), job_id, tmp_path, ExtractOptions(max_records_per_page=100))
    manifest = _check_extract(loaded, result, tmp_path)
    assert manifest["paging"] == "locator"
    assert "shape that cannot be read" in manifest["paging_fallback"]
    assert len(_fallback_warnings(caplog)) == 1


class ListsNoPage(SalesforceBulkHook):
    def get_result_pages(self, job_id: str, max_records: int | None = None) -> list[Any]:
        return []


def test_a_result_pages_list_without_pages_falls_back_when_the_job_has_records(
    loaded: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    options = ExtractOptions(output="single")
    result = extract_query_results(_factory(cls=ListsNoPage), job_id, tmp_path, options)
    manifest = _check_extract(loaded, result, tmp_path)
    assert manifest["paging"] == "locator"
    assert manifest["paging_fallback"] == "resultPages listed no page while the job reports 256 record(s)"
    assert len(_fallback_warnings(caplog)) == 1


def test_use_result_pages_true_does_not_fall_back(loaded: EmulatorServer, tmp_path: Path) -> None:
    loaded.set_result_pages_shape("missing")
    with SalesforceBulkHook(CONN_ID, retry_policy=FAST) as hook:
        job_id = _run_query(hook)
    with pytest.raises(QueryExtractError, match=r"resultPages answered 404.*\(use_result_pages=True\)"):
        extract_query_results(_factory(), job_id, tmp_path, ExtractOptions(use_result_pages=True))
