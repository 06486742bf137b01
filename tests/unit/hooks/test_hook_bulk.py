"""Both hooks against the emulator over loopback HTTP(S).

Every test that can runs twice, once per hook: the ``hook`` fixture gives a driver whose ``call`` runs a
hook method by name, synchronously for :class:`SalesforceBulkHook` and on a private event loop for
:class:`SalesforceBulkAsyncHook` (inside ``async with``), so one test body checks both.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkBadRequestError,
    SalesforceBulkConfigError,
    SalesforceBulkConnectionError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkNotFoundError,
    SalesforceBulkOutcomeUnknownError,
    SalesforceBulkRateLimitError,
)
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook, SalesforceBulkHook
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.auth import TOKEN_CACHE
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
CONN_ID = "salesforce_bulk_default"


class SyncDriver:
    mode = "sync"

    def __init__(self, conn_id: str = CONN_ID, policy: RetryPolicy = FAST) -> None:
        self.hook = SalesforceBulkHook(conn_id, retry_policy=policy)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.hook, name)(*args, **kwargs)
        return list(result) if name == "list_jobs" else result

    def close(self) -> None:
        self.hook.close()


class AsyncDriver:
    mode = "async"

    def __init__(self, conn_id: str = CONN_ID, policy: RetryPolicy = FAST) -> None:
        self.hook = SalesforceBulkAsyncHook(conn_id, retry_policy=policy)
        self.loop = asyncio.new_event_loop()
        self._entered = False

    def _enter(self) -> None:
        if not self._entered:
            self.loop.run_until_complete(self.hook.__aenter__())
            self._entered = True

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        if name == "list_jobs":
            async def collect() -> list[JobInfo]:
                return [job async for job in self.hook.list_jobs(*args, **kwargs)]

            return self.loop.run_until_complete(collect())
        return self.loop.run_until_complete(getattr(self.hook, name)(*args, **kwargs))

    def close(self) -> None:
        if self._entered:
            self.loop.run_until_complete(self.hook.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make_hook(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    drivers: list[Any] = []

    def make(conn_id: str = CONN_ID, policy: RetryPolicy = FAST) -> Any:
        driver = (SyncDriver if request.param == "sync" else AsyncDriver)(conn_id, policy)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def hook(make_hook: Callable[..., Any], emulator: EmulatorServer, salesforce_conn: Callable[..., str]) -> Any:
    salesforce_conn(emulator, "password")
    return make_hook()


def wait_terminal(hook: Any, job_id: str, kind: str, timeout: float = 20.0) -> JobInfo:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.call("get_job", job_id, kind)
        if job.state.is_terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.state}"
        time.sleep(0.02)


def token_requests(server: EmulatorServer) -> Callable[[], int]:
    """Count token endpoint calls with a no-op delay fault (its ``fired`` counter)."""
    server.set_faults([{"kind": "delay", "delay": 0.001, "path": "^/services/oauth2/token$"}])
    return lambda: server.app.faults.status()[0]["fired"]


def csv_rows(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode()), delimiter=delimiter))


# --- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth_type", ["password", "client_credentials", "jwt_bearer", "refresh_token", "access_token"]
)
def test_every_auth_flow(make_hook, emulator, salesforce_conn, auth_type):
    salesforce_conn(emulator, auth_type)
    hook = make_hook()
    limits = hook.call("get_limits")
    assert limits.remaining("DailyApiRequests") > 0
    assert hook.call("get_job_url", "750000000000001AAA") == (
        f"{emulator.base_url}/lightning/setup/AsyncApiJobStatus/page?address=%2F750000000000001AAA"
    )


def test_bad_credentials_raise_auth_error_with_salesforce_description(make_hook, emulator, salesforce_conn):
    salesforce_conn(emulator, "password", security_token="WRONG")
    with pytest.raises(SalesforceBulkAuthError) as err:
        make_hook().call("get_limits")
    assert err.value.error_code == "invalid_grant"
    assert "authentication failure" in str(err.value)


def test_missing_field_fails_before_any_http_call(make_hook, emulator, salesforce_conn):
    salesforce_conn(emulator, "client_credentials", client_secret="")
    count = token_requests(emulator)
    with pytest.raises(SalesforceBulkConfigError) as err:
        make_hook().call("get_limits")
    assert err.value.field == "client_secret"
    assert count() == 0


def test_token_is_cached_and_shared_by_sync_and_async_hooks(emulator, salesforce_conn):
    salesforce_conn(emulator, "password")
    count = token_requests(emulator)
    sync, asynchronous = SyncDriver(), AsyncDriver()
    try:
        sync.call("get_limits")
        asynchronous.call("get_limits")
        SyncDriver().call("get_limits")
    finally:
        sync.close()
        asynchronous.close()
    assert count() == 1


def test_expired_token_is_renewed_and_the_call_repeated(hook, emulator):
    hook.call("get_limits")
    count = token_requests(emulator)
    assert emulator.expire_tokens() >= 1
    job = hook.call("create_ingest_job", "Account", "insert")
    assert job.state is JobState.OPEN
    assert count() == 1
    assert hook.call("get_job", job.id, "ingest").id == job.id
    assert count() == 1


def test_expired_session_during_file_upload_is_renewed_and_the_file_resent(hook, emulator):
    job = hook.call("create_ingest_job", "Account", "insert")
    emulator.expire_tokens()
    hook.call("upload_job_data", job.id, io.BytesIO(b"Name\nAfter Renewal\n"))
    hook.call("close_job", job.id)
    assert wait_terminal(hook, job.id, "ingest").number_records_processed == 1
    assert [r["Name"] for r in emulator.records("Account")] == ["After Renewal"]


def test_second_401_is_an_auth_error(make_hook, emulator_factory, salesforce_conn):
    server = emulator_factory(token_ttl=1e-6)  # every token is expired on arrival
    salesforce_conn(server, "password")
    count = token_requests(server)
    with pytest.raises(SalesforceBulkAuthError) as err:
        make_hook().call("get_limits")
    assert err.value.error_code == "INVALID_SESSION_ID"
    assert count() == 2  # first token + exactly one renewal


def test_access_token_connection_cannot_renew(make_hook, emulator, salesforce_conn):
    salesforce_conn(emulator, "access_token")
    hook = make_hook()
    hook.call("get_limits")
    emulator.expire_tokens()
    with pytest.raises(SalesforceBulkAuthError, match="cannot renew"):
        hook.call("get_limits")


def test_tls_with_the_emulator_ca(make_hook, emulator_tls, salesforce_conn):
    salesforce_conn(emulator_tls, "password")
    assert emulator_tls.base_url.startswith("https://")
    assert make_hook().call("get_limits").maximum("DailyApiRequests") > 0


def test_tls_verification_stays_on(make_hook, emulator_tls, salesforce_conn):
    salesforce_conn(emulator_tls, "password", ca_bundle=None, conn_id="no_ca")
    count = token_requests(emulator_tls)
    started = time.monotonic()
    with pytest.raises(SalesforceBulkConnectionError, match="TLS|SSL|certificate"):
        make_hook("no_ca").call("get_limits")
    assert count() == 0
    assert time.monotonic() - started < 5  # not retried


def test_test_connection(emulator, salesforce_conn):
    salesforce_conn(emulator, "password")
    ok, message = SalesforceBulkHook().test_connection()
    assert ok
    assert emulator.base_url in message
    salesforce_conn(emulator, "password", client_id="unknown-app")
    TOKEN_CACHE.clear()
    ok, message = SalesforceBulkHook().test_connection()
    assert not ok
    assert "invalid_client_id" in message


# --- endpoints ------------------------------------------------------------------------------------------


def test_ingest_lifecycle_with_a_streamed_generator(hook, emulator):
    job = hook.call("create_ingest_job", "Account", "insert", column_delimiter="SEMICOLON")
    assert (job.state, job.kind, job.column_delimiter) == (JobState.OPEN, JobKind.INGEST, "SEMICOLON")
    pulled: list[int] = []

    def rows() -> Iterator[bytes]:
        yield b"Name;NumberOfEmployees\n"
        for start in range(0, 3000, 500):
            pulled.append(start)
            yield b"".join(b"Acme %d;%d\n" % (i, i) for i in range(start, start + 500))
        yield b";7\n"  # Name is required: one failed row

    hook.call("upload_job_data", job.id, rows())
    assert pulled == list(range(0, 3000, 500))
    assert hook.call("close_job", job.id).state is JobState.UPLOAD_COMPLETE
    done = wait_terminal(hook, job.id, "ingest")
    assert (done.state, done.number_records_processed, done.number_records_failed) == (
        JobState.JOB_COMPLETE,
        3001,
        1,
    )

    results = {}
    for result_set in ("successfulResults", "failedResults", "unprocessedrecords"):
        out = io.BytesIO()
        written = hook.call("download_ingest_results", job.id, result_set, out)
        assert written == len(out.getvalue())
        results[result_set] = out.getvalue()
    assert len(csv_rows(results["successfulResults"], ";")) == 3000
    failed = csv_rows(results["failedResults"], ";")
    assert len(failed) == 1
    assert failed[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING")
    assert results["unprocessedrecords"].startswith(b"Name")
    assert len(emulator.records("Account")) == 3000

    assert job.id in [j.id for j in hook.call("list_jobs", "ingest")]
    hook.call("delete_job", job.id, "ingest")
    with pytest.raises(SalesforceBulkNotFoundError) as err:
        hook.call("get_job", job.id, "ingest")
    assert err.value.status == 404


def test_upload_from_a_file_object(hook, emulator, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"LastName,FirstName\n" + b"".join(b"Doe%d,Jane\n" % i for i in range(2000)))
    job = hook.call("create_ingest_job", "Contact", "insert")
    with path.open("rb") as handle:
        hook.call("upload_job_data", job.id, handle)
    hook.call("close_job", job.id)
    assert wait_terminal(hook, job.id, "ingest").number_records_processed == 2000


def test_async_hook_uploads_an_async_iterator(emulator, salesforce_conn):
    salesforce_conn(emulator, "password")

    async def scenario() -> JobInfo:
        async with SalesforceBulkAsyncHook(retry_policy=FAST) as hook:
            session = hook._session
            job = await hook.create_ingest_job("Account", "insert")

            async def rows():
                yield b"Name\n"
                for i in range(100):
                    await asyncio.sleep(0)
                    yield b"Async %d\n" % i

            await hook.upload_job_data(job.id, rows())
            await hook.close_job(job.id)
            for _ in range(1000):  # bounded: at most ~20 s
                info = await hook.get_job(job.id, "ingest")
                if info.state.is_terminal:
                    break
                await asyncio.sleep(0.02)
            assert hook._session is session  # one ClientSession for the whole block
            return info

    info = asyncio.run(scenario())
    assert info.number_records_processed == 100


def test_multipart_create_with_data(hook, emulator):
    job = hook.call("create_ingest_job_with_data", "Account", "insert", b"Name,Industry\nMulti,Energy\n")
    assert job.state is JobState.UPLOAD_COMPLETE
    assert wait_terminal(hook, job.id, "ingest").number_records_processed == 1
    with pytest.raises(SalesforceBulkInvalidStateError):
        hook.call("close_job", job.id)


def test_upsert_and_abort(hook, emulator):
    job = hook.call("create_ingest_job", "Account", "upsert", external_id_field="Id")
    assert job.external_id_field_name == "Id"
    aborted = hook.call("abort_job", job.id, "ingest")
    assert aborted.state is JobState.ABORTED
    with pytest.raises(SalesforceBulkInvalidStateError):
        hook.call("abort_job", job.id, JobKind.INGEST)


def test_query_pages_follow_locators(hook, emulator):
    emulator.seed("Account", 1234)
    job = hook.call("create_query_job", "SELECT Id, Name FROM Account")
    assert job.kind is JobKind.QUERY
    assert wait_terminal(hook, job.id, "query").number_records_processed == 1234
    locator, total, pages = None, 0, 0
    while True:
        out = io.BytesIO()
        page = hook.call("download_query_page", job.id, out, locator=locator, max_records=500)
        rows = csv_rows(out.getvalue())
        assert len(rows) == page.record_count
        assert page.bytes_written == len(out.getvalue())
        total, pages, locator = total + len(rows), pages + 1, page.next_locator
        if locator is None:
            break
    assert (total, pages) == (1234, 3)


def test_gzip_and_plain_downloads_are_identical(hook, emulator):
    emulator.seed("Account", 300)
    job = hook.call("create_query_job", "SELECT Id, Name, NumberOfEmployees FROM Account")
    wait_terminal(hook, job.id, "query")
    encodings: list[str | None] = []
    send = hook.hook._send

    def spy(effect: Any) -> Any:
        result = send(effect)
        encodings.append(result.header("Content-Encoding") if hasattr(result, "header") else None)
        return result

    hook.hook._send = spy if hook.mode == "sync" else _async_spy(send, encodings)
    packed, plain = io.BytesIO(), io.BytesIO()
    first = hook.call("download_query_page", job.id, packed, gzip=True)
    second = hook.call("download_query_page", job.id, plain, gzip=False)
    assert encodings == ["gzip", None]
    assert packed.getvalue() == plain.getvalue()
    assert first.record_count == second.record_count == 300
    assert first.next_locator is None


def _async_spy(send: Any, encodings: list[str | None]) -> Any:
    async def spy(effect: Any) -> Any:
        result = await send(effect)
        encodings.append(result.header("Content-Encoding") if hasattr(result, "header") else None)
        return result

    return spy


def test_result_pages(hook, emulator):
    emulator.seed("Account", 50)
    job = hook.call("create_query_job", "SELECT Id FROM Account", "queryAll", column_delimiter="PIPE")
    wait_terminal(hook, job.id, "query")
    refs = hook.call("get_result_pages", job.id)
    assert refs
    assert refs[0].locator is None
    assert all(f"/jobs/query/{job.id}/results" in ref.url for ref in refs)
    out = io.BytesIO()
    hook.call("download_query_page", job.id, out, locator=refs[0].locator, max_records=refs[0].max_records)
    assert out.getvalue().count(b"\n") == 51
    hook.call("delete_job", job.id, "query")
    assert job.id not in [j.id for j in hook.call("list_jobs", "query")]


def test_list_jobs_follows_next_records_url(make_hook, emulator_factory, salesforce_conn):
    server = emulator_factory(list_page_size=2)
    salesforce_conn(server, "password")
    hook = make_hook()
    created = {hook.call("create_ingest_job", "Account", "insert").id for _ in range(5)}
    listed = [job.id for job in hook.call("list_jobs", "ingest")]
    assert sorted(listed) == sorted(created)


# --- error mapping --------------------------------------------------------------------------------------


def test_error_mapping(hook, emulator):
    with pytest.raises(SalesforceBulkNotFoundError):
        hook.call("get_job", "750000000000009AAA", "ingest")
    with pytest.raises(SalesforceBulkBadRequestError) as err:
        hook.call("create_query_job", "SELECT Nope FROM Account")
    assert err.value.status == 400
    assert err.value.error_code == "INVALID_FIELD"
    with pytest.raises(SalesforceBulkBadRequestError) as err:
        hook.call("create_ingest_job", "NoSuchObject__c", "insert")
    job = hook.call("create_ingest_job", "Account", "insert")
    with pytest.raises(SalesforceBulkBadRequestError):
        hook.call("close_job", job.id)  # nothing uploaded
    hook.call("upload_job_data", job.id, b"Name\nA\n")
    with pytest.raises(SalesforceBulkInvalidStateError) as state_err:
        hook.call("upload_job_data", job.id, b"Name\nB\n")
    assert state_err.value.job_id == job.id
    hook.call("close_job", job.id)
    with pytest.raises(SalesforceBulkInvalidStateError):
        hook.call("close_job", job.id)


# --- retries --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 429}, {"status": 500}, {"kind": "drop"}])
def test_safe_calls_are_retried(hook, emulator, fault):
    job = hook.call("create_ingest_job", "Account", "insert")
    emulator.set_faults([{**fault, "times": 2, "method": "GET", "path": "/jobs/ingest/"}])
    assert hook.call("get_job", job.id, "ingest").state is JobState.OPEN
    assert emulator.app.faults.status()[0]["fired"] == 2


def test_retries_give_up_after_the_budget(make_hook, emulator, salesforce_conn):
    salesforce_conn(emulator, "password")
    hook = make_hook(policy=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01))
    hook.call("get_limits")
    emulator.set_faults([{"status": 503, "path": "/limits"}])
    with pytest.raises(Exception) as err:
        hook.call("get_limits")
    assert err.value.status == 503
    assert err.value.retryable
    assert emulator.app.faults.status()[0]["fired"] == 2


@pytest.mark.parametrize(
    ("fault", "expected"),
    [({"status": 503}, SalesforceBulkOutcomeUnknownError),
     ({"kind": "drop"}, SalesforceBulkOutcomeUnknownError)],
)
def test_job_creation_is_not_retried(hook, emulator, fault, expected):
    hook.call("get_limits")
    emulator.set_faults([{**fault, "method": "POST", "path": "/jobs/(ingest|query)$"}])
    with pytest.raises(expected):
        hook.call("create_ingest_job", "Account", "insert")
    with pytest.raises(expected):
        hook.call("create_query_job", "SELECT Id FROM Account")
    assert emulator.app.faults.status()[0]["fired"] == 2


def test_refused_job_creation_and_upload_are_sent_again(hook, emulator):
    """429 is a refusal: the org did nothing, so the creation (and a replayable upload) is sent again, and
    exactly one job exists, holding the rows once."""
    hook.call("get_limits")
    emulator.set_faults([{"status": 429, "times": 1, "method": "POST", "path": "/jobs/(ingest|query)$"},
                         {"status": 429, "times": 1, "method": "PUT", "path": "/batches$"}])
    job = hook.call("create_ingest_job", "Account", "insert")
    hook.call("upload_job_data", job.id, io.BytesIO(b"Name\nA\n"))
    assert [fault["fired"] for fault in emulator.app.faults.status()] == [1, 1]
    assert [j.id for j in emulator.app.store.list_jobs("ingest")] == [job.id]
    hook.call("close_job", job.id)
    wait_terminal(hook, job.id, "ingest")
    assert [r["Name"] for r in emulator.records("Account")] == ["A"]


def test_refusal_on_a_stream_that_cannot_be_replayed_is_reported(hook, emulator):
    job = hook.call("create_ingest_job", "Account", "insert")
    emulator.set_faults([{"status": 429, "method": "PUT", "path": "/batches$"}])
    with pytest.raises(SalesforceBulkRateLimitError) as err:
        hook.call("upload_job_data", job.id, iter([b"Name\n", b"A\n"]))
    assert err.value.job_id == job.id
    assert emulator.app.faults.status()[0]["fired"] == 1


@pytest.mark.parametrize("fault", [{"status": 503}, {"kind": "drop"}])
def test_upload_is_not_retried(hook, emulator, fault):
    job = hook.call("create_ingest_job", "Account", "insert")
    emulator.set_faults([{**fault, "method": "PUT", "path": "/batches$"}])
    with pytest.raises(SalesforceBulkOutcomeUnknownError) as err:
        hook.call("upload_job_data", job.id, io.BytesIO(b"Name\nA\n"))
    assert err.value.job_id == job.id
    assert emulator.app.faults.status()[0]["fired"] == 1
    emulator.reset_faults()
    assert hook.call("abort_job", job.id, "ingest").state is JobState.ABORTED


def test_dropped_download_restarts_into_the_same_buffer(hook, emulator):
    emulator.seed("Account", 200)
    job = hook.call("create_query_job", "SELECT Id FROM Account")
    wait_terminal(hook, job.id, "query")
    emulator.set_faults([{"kind": "drop", "times": 1, "path": "/results$"}])
    out = io.BytesIO()
    page = hook.call("download_query_page", job.id, out)
    assert page.record_count == 200
    assert len(csv_rows(out.getvalue())) == 200


# --- streaming ------------------------------------------------------------------------------------------


def test_upload_streams_without_holding_the_body(hook, emulator):
    import tracemalloc

    chunk_rows = b"".join(b"Streamed %06d,%d\n" % (i, i) for i in range(3000))  # ~60 KB
    chunks = 400  # ~24 MB in total, produced lazily

    def rows() -> Iterator[bytes]:
        yield b"Name,NumberOfEmployees\n"
        for _ in range(chunks):
            yield bytes(chunk_rows)

    job = hook.call("create_ingest_job", "Account", "insert")
    tracemalloc.start()
    try:
        hook.call("upload_job_data", job.id, rows())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while uploading {chunks * len(chunk_rows)}"
    size = (emulator.data_dir / "jobs" / job.id / "upload.csv").stat().st_size
    assert size == len(b"Name,NumberOfEmployees\n") + chunks * len(chunk_rows)
    assert hook.call("abort_job", job.id, "ingest").state is JobState.ABORTED


def test_user_id_is_the_connection_users_id(hook):
    from airflow_provider_sfbulk.emulator.identity import USER_ID

    assert hook.call("get_user_id") == USER_ID
    job = hook.call("create_ingest_job", "Account", "insert")
    assert job.created_by_id == USER_ID
