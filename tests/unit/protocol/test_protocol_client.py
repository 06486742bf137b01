"""The sans-IO client driven by a scripted fake transport: auth, retries, restarts, recovery (no server)."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkBadRequestError,
    SalesforceBulkConnectionError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkLimitExceededError,
    SalesforceBulkNotFoundError,
    SalesforceBulkOutcomeUnknownError,
    SalesforceBulkRateLimitError,
    SalesforceBulkTransientError,
)
from airflow_provider_sfbulk.protocol.auth import TokenCache, TokenInfo
from airflow_provider_sfbulk.protocol.client import (
    BulkClient,
    JobPager,
    Send,
    TransportFailure,
    run_sync,
)
from airflow_provider_sfbulk.protocol.connection import parse_connection
from airflow_provider_sfbulk.protocol.messages import Response, UploadSource
from airflow_provider_sfbulk.protocol.retry import RetryPolicy
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

INSTANCE = "https://acme.my.salesforce.com"
EXPIRED = (401, {}, [b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'])
SENT_FAILURE = TransportFailure("connection reset", request_sent=True)
CONNECT_FAILURE = TransportFailure("connection refused", request_sent=False)


def token_answer(n: int) -> tuple[int, dict, list[bytes]]:
    body = {"access_token": f"00D!TOKEN{n}", "instance_url": INSTANCE, "id": f"{INSTANCE}/id/00D/005",
            "token_type": "Bearer", "issued_at": "1"}
    return 200, {"Content-Type": "application/json"}, [json.dumps(body).encode()]


def job_answer(
    state: str = "Open", job_id: str = "750000000000001AAA", **extra: Any
) -> tuple[int, dict, list[bytes]]:
    body = {"id": job_id, "operation": "insert", "object": "Account", "state": state, **extra}
    return 200, {}, [json.dumps(body).encode()]


def error_answer(status: int, code: str, message: str = "m") -> tuple[int, dict, list[bytes]]:
    return status, {}, [json.dumps([{"errorCode": code, "message": message}]).encode()]


class Fake:
    """Plays back answers. An answer is (status, headers, chunks), a TransportFailure, or a callable.

    A TransportFailure inside ``chunks`` interrupts the body after the chunks before it.
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[Any] = []
        self.bodies: list[bytes | None] = []
        self.sleeps: list[float] = []

    def send(self, effect: Send) -> Response | TransportFailure:
        request = effect.request
        self.requests.append(request)
        body = request.body
        self.bodies.append(b"".join(body.sync_chunks()) if isinstance(body, UploadSource) else body)
        answer = self.answers.pop(0)
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, TransportFailure):
            return answer
        status, headers, chunks = answer
        sink = effect.open_sink(status, headers)
        for chunk in chunks:
            if isinstance(chunk, TransportFailure):
                return chunk
            sink.feed(chunk)
        sink.finish()
        return Response(status, headers, sink)

    def run(self, flow: Any) -> Any:
        result = run_sync(flow, self.send, self.sleeps.append)
        assert not self.answers, f"unused answers: {self.answers}"
        return result

    @property
    def tokens_used(self) -> list[str | None]:
        return [r.headers.get("Authorization") for r in self.requests]


def make_client(cache: TokenCache | None = None, auth_type: str = "password", attempts: int = 4,
                **extra: Any) -> BulkClient:
    extra = {"auth_type": auth_type, "client_id": "cid", "client_secret": "sec", **extra}
    config = parse_connection("sf", host="login.salesforce.com", login="u", password="p", extra=extra)
    return BulkClient(config, policy=RetryPolicy(max_attempts=attempts, base_delay=0.5, max_delay=4.0),
                      cache=cache or TokenCache())


def test_token_is_fetched_lazily_once_and_shared_by_clients_of_the_same_connection():
    cache = TokenCache()
    fake = Fake(token_answer(1), job_answer())
    fake.run(make_client(cache).get_job("750X", "ingest"))
    for _ in range(2):
        fake.answers.append(job_answer())
        fake.run(make_client(cache).get_job("750X", "ingest"))
    token_requests = [r for r in fake.requests if r.url.endswith("/services/oauth2/token")]
    assert len(token_requests) == 1
    assert token_requests[0].url == "https://login.salesforce.com/services/oauth2/token"
    assert fake.requests[1].url == f"{INSTANCE}/services/data/v62.0/jobs/ingest/750X"
    assert fake.tokens_used[1:] == ["Bearer 00D!TOKEN1"] * 3


def test_changed_connection_gets_its_own_token():
    cache = TokenCache()
    fake = Fake(token_answer(1), job_answer())
    fake.run(make_client(cache).get_job("750X", "ingest"))
    fake.answers += [token_answer(2), job_answer()]
    fake.run(make_client(cache, client_secret="rotated").get_job("750X", "ingest"))
    assert fake.tokens_used[3] == "Bearer 00D!TOKEN2"


def test_password_grant_body_appends_security_token():
    fake = Fake(token_answer(1), job_answer())
    fake.run(make_client(security_token="SEC").get_job("750X", "ingest"))
    form = dict(pair.split("=") for pair in fake.bodies[0].decode().split("&"))
    assert form == {"grant_type": "password", "client_id": "cid", "client_secret": "sec", "username": "u",
                    "password": "pSEC"}


def test_expired_session_is_renewed_once_and_the_call_repeated():
    fake = Fake(token_answer(1), EXPIRED, token_answer(2), job_answer("InProgress"))
    job = fake.run(make_client().get_job("750X", "ingest"))
    assert job.state is JobState.IN_PROGRESS
    assert fake.tokens_used[1] == "Bearer 00D!TOKEN1"
    assert fake.tokens_used[3] == "Bearer 00D!TOKEN2"
    assert fake.sleeps == []


def test_second_401_raises_auth_error_without_looping():
    fake = Fake(token_answer(1), EXPIRED, token_answer(2), EXPIRED)
    with pytest.raises(SalesforceBulkAuthError) as err:
        fake.run(make_client().get_job("750X", "ingest"))
    assert err.value.status == 401
    assert err.value.error_code == "INVALID_SESSION_ID"
    assert len(fake.requests) == 4


def test_renewal_reuses_a_token_another_caller_already_renewed():
    cache = TokenCache()
    client = make_client(cache)
    fake = Fake(token_answer(1), job_answer())
    fake.run(client.get_job("750X", "ingest"))
    stale = cache.get(client._key)

    def expired_then_someone_renews(request):
        cache.invalidate(client._key, stale)
        ticket = cache.claim(client._key, 60)
        cache.release(client._key, ticket, TokenInfo("00D!OTHER", INSTANCE))
        return EXPIRED

    fake.answers += [expired_then_someone_renews, job_answer()]
    fake.run(client.get_job("750X", "ingest"))
    assert fake.tokens_used[-1] == "Bearer 00D!OTHER"
    assert not any(r.url.endswith("/token") for r in fake.requests[2:])


def test_access_token_connection_cannot_renew():
    client = make_client(auth_type="access_token", access_token="00D!STATIC", instance_url=INSTANCE)
    fake = Fake(EXPIRED)
    with pytest.raises(SalesforceBulkAuthError, match="cannot renew"):
        fake.run(client.get_job("750X", "ingest"))
    assert fake.tokens_used == ["Bearer 00D!STATIC"]


def test_oauth_error_maps_to_auth_error_with_description():
    fake = Fake((400, {}, [b'{"error":"invalid_grant","error_description":"authentication failure"}']))
    with pytest.raises(SalesforceBulkAuthError) as err:
        fake.run(make_client().get_limits())
    assert err.value.error_code == "invalid_grant"
    assert "authentication failure" in err.value.message  # with the connection and a hint around it


def test_waiting_caller_uses_the_token_another_caller_fetches():
    cache = TokenCache()
    client = make_client(cache)
    ticket = cache.claim(client._key, 60)
    fake = Fake(job_answer())
    flow = client.get_job("750X", "ingest")

    def sleep(seconds: float) -> None:
        fake.sleeps.append(seconds)
        if len(fake.sleeps) == 3:
            cache.release(client._key, ticket, TokenInfo("00D!SHARED", INSTANCE))

    run_sync(flow, fake.send, sleep)
    assert len(fake.sleeps) == 3
    assert fake.tokens_used == ["Bearer 00D!SHARED"]


def test_failed_fetch_releases_the_claim():
    cache = TokenCache()
    client = make_client(cache)
    fake = Fake((400, {}, [b'{"error":"invalid_client_id","error_description":"client identifier invalid"}']))
    with pytest.raises(SalesforceBulkAuthError):
        fake.run(client.get_limits())
    assert cache.claim(client._key, 60) is not None


def test_safe_call_retried_on_5xx_and_dropped_connections_with_backoff():
    fake = Fake(
        token_answer(1), error_answer(503, "SERVER_UNAVAILABLE"), SENT_FAILURE, job_answer("JobComplete")
    )
    job = fake.run(make_client().get_job("750X", "ingest"))
    assert job.state is JobState.JOB_COMPLETE
    assert len(fake.sleeps) == 2
    assert 0 <= fake.sleeps[0] <= 0.5
    assert 0 <= fake.sleeps[1] <= 1.0


def test_retry_after_header_is_used():
    fake = Fake(token_answer(1), (429, {"Retry-After": "3"}, [b""]), job_answer())
    fake.run(make_client().get_job("750X", "ingest"))
    assert fake.sleeps == [3.0]


def test_retries_stop_after_the_attempt_budget():
    fake = Fake(token_answer(1), *[error_answer(500, "UNKNOWN_EXCEPTION")] * 4)
    with pytest.raises(SalesforceBulkTransientError) as err:
        fake.run(make_client(attempts=4).get_job("750X", "ingest"))
    assert err.value.status == 500
    assert len(fake.sleeps) == 3
    fake = Fake(token_answer(1), *[SENT_FAILURE] * 2)
    with pytest.raises(SalesforceBulkConnectionError, match="connection reset"):
        fake.run(make_client(attempts=2).get_limits())


def test_daily_limit_fails_fast():
    fake = Fake(token_answer(1), error_answer(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
    with pytest.raises(SalesforceBulkLimitExceededError) as err:
        fake.run(make_client().get_limits())
    assert not err.value.retryable
    assert fake.sleeps == []


def test_concurrency_limit_is_retried():
    fake = Fake(token_answer(1),
                error_answer(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentRequests Limit exceeded."),
                (200, {}, [b'{"DailyApiRequests":{"Max":5,"Remaining":4}}']))
    assert fake.run(make_client().get_limits()).remaining("DailyApiRequests") == 4
    assert len(fake.sleeps) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error_answer(503, "SERVER_UNAVAILABLE"), SalesforceBulkOutcomeUnknownError),
        (error_answer(400, "INVALIDJOB", "bad"), SalesforceBulkBadRequestError),
        (SENT_FAILURE, SalesforceBulkOutcomeUnknownError),
    ],
)
@pytest.mark.parametrize("create", ["ingest", "query", "multipart"])
def test_job_creation_is_never_repeated(answer, expected, create):
    client = make_client()
    flows: dict[str, Callable[[], Any]] = {
        "ingest": lambda: client.create_ingest_job("Account", "insert"),
        "query": lambda: client.create_query_job("SELECT Id FROM Account"),
        "multipart": lambda: client.create_ingest_job_with_data("Account", "insert", b"Name\nA\n"),
    }
    fake = Fake(token_answer(1), answer)
    with pytest.raises(expected):
        fake.run(flows[create]())
    assert len(fake.requests) == 2
    assert fake.sleeps == []


@pytest.mark.parametrize(
    "refusal",
    [(429, {"Retry-After": "2"}, [b""]),
     error_answer(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.")],
)
@pytest.mark.parametrize("create", ["ingest", "query", "multipart"])
def test_refused_job_creation_is_sent_again(refusal, create):
    """A 429 or a concurrency refusal means the server did not act: sending the creation again cannot make a
    second job."""
    client = make_client()
    flows: dict[str, Callable[[], Any]] = {
        "ingest": lambda: client.create_ingest_job("Account", "insert"),
        "query": lambda: client.create_query_job("SELECT Id FROM Account"),
        "multipart": lambda: client.create_ingest_job_with_data("Account", "insert", b"Name\nA\n"),
    }
    fake = Fake(token_answer(1), refusal, job_answer("Open"))
    job = fake.run(flows[create]())
    assert job.state is JobState.OPEN
    assert len(fake.requests) == 3
    assert len(fake.sleeps) == 1
    if refusal[0] == 429:
        assert fake.sleeps == [2.0]


def test_refused_job_creation_stops_after_the_attempt_budget():
    fake = Fake(token_answer(1), *[error_answer(429, "REQUEST_LIMIT_EXCEEDED")] * 3)
    with pytest.raises(SalesforceBulkRateLimitError):
        fake.run(make_client(attempts=3).create_ingest_job("Account", "insert"))
    assert len(fake.requests) == 4
    assert len(fake.sleeps) == 2


def test_refused_upload_is_sent_again_only_from_a_replayable_body():
    data = io.BytesIO(b"Name\nA\n")
    fake = Fake(token_answer(1), error_answer(429, "REQUEST_LIMIT_EXCEEDED"), (201, {}, [b""]))
    fake.run(make_client().upload_job_data("750X", data))
    assert len(fake.requests) == 3
    assert fake.bodies[1] == fake.bodies[2] == b"Name\nA\n"
    stream = iter([b"Name\n", b"A\n"])  # cannot be produced again: the refusal is reported, not retried
    fake = Fake(token_answer(1), job_answer("Open", "750X"), error_answer(429, "REQUEST_LIMIT_EXCEEDED"))
    with pytest.raises(SalesforceBulkRateLimitError) as err:
        fake.run(make_client().upload_job_data("750X", stream))
    assert err.value.job_id == "750X"
    assert fake.sleeps == []


def test_job_creation_retried_when_nothing_was_sent():
    fake = Fake(token_answer(1), CONNECT_FAILURE, job_answer("Open"))
    job = fake.run(make_client().create_ingest_job("Account", "insert"))
    assert job.state is JobState.OPEN
    assert len(fake.sleeps) == 1


def test_upload_is_not_repeated_and_reports_the_job():
    data = io.BytesIO(b"Name\nA\n")
    fake = Fake(token_answer(1), SENT_FAILURE)
    with pytest.raises(SalesforceBulkOutcomeUnknownError) as err:
        fake.run(make_client().upload_job_data("750X", data))
    assert err.value.job_id == "750X"
    assert fake.sleeps == []


def test_upload_from_an_iterator_checks_the_job_first_and_streams_every_chunk():
    chunks = [b"Name\n", b"A\n", b"", b"B\n"]
    fake = Fake(token_answer(1), job_answer("Open"), (201, {}, [b""]))
    fake.run(make_client().upload_job_data("750X", iter(chunks)))
    assert [r.method for r in fake.requests] == ["POST", "GET", "PUT"]
    assert fake.bodies[2] == b"Name\nA\nB\n"


def test_upload_of_a_file_is_rewound_after_a_token_renewal():
    data = io.BytesIO(b"skip|Name\nA\n")
    data.seek(5)
    fake = Fake(token_answer(1), EXPIRED, token_answer(2), (201, {}, [b""]))
    fake.run(make_client().upload_job_data("750X", data))
    assert fake.bodies[1] == fake.bodies[3] == b"Name\nA\n"


def test_upload_of_a_consumed_iterator_is_not_replayed_after_401():
    fake = Fake(token_answer(1), job_answer("Open"), EXPIRED)
    with pytest.raises(SalesforceBulkAuthError, match="cannot be replayed"):
        fake.run(make_client().upload_job_data("750X", iter([b"Name\n", b"A\n"])))
    assert len(fake.requests) == 3


def test_download_restarts_from_scratch_in_a_seekable_writable():
    out = io.BytesIO(b"KEEP")
    out.seek(4)
    fake = Fake(token_answer(1), (200, {}, [b"Id\n1\n", SENT_FAILURE]), (200, {}, [b"Id\n1\n2\n"]))
    written = fake.run(make_client().download_ingest_results("750X", "successfulResults", out))
    assert written == 7
    assert out.getvalue() == b"KEEPId\n1\n2\n"


class AppendOnly:
    def __init__(self) -> None:
        self.data = b""

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)


def test_download_into_a_non_seekable_writable_is_not_retried_after_bytes_were_written():
    out = AppendOnly()
    fake = Fake(token_answer(1), (200, {}, [b"Id\n1\n", SENT_FAILURE]))
    with pytest.raises(SalesforceBulkConnectionError, match="cannot restart"):
        fake.run(make_client().download_ingest_results("750X", "failedResults", out))
    out = AppendOnly()
    fake = Fake(token_answer(1), error_answer(503, "X"), (200, {}, [b"Id\n"]))
    assert fake.run(make_client().download_ingest_results("750X", "failedResults", out)) == 3
    assert out.data == b"Id\n"


def test_gzip_page_is_decompressed_on_the_fly():
    csv = b'"Id","Name"\n' + b"".join(b'"001%012d","Name %d"\n' % (i, i) for i in range(2000))
    packed = gzip.compress(csv)
    chunks = [packed[i : i + 1000] for i in range(0, len(packed), 1000)]
    headers = {"Content-Encoding": "gzip", "Sforce-Locator": "MjAwMA", "Sforce-NumberOfRecords": "2000"}
    out = io.BytesIO()
    fake = Fake(token_answer(1), (200, headers, chunks))
    page = fake.run(make_client().download_query_page("750Q", out, max_records=2000))
    assert out.getvalue() == csv
    assert (page.next_locator, page.record_count, page.bytes_written) == ("MjAwMA", 2000, len(csv))
    assert fake.requests[1].headers["Accept-Encoding"] == "gzip"


def test_close_after_an_ambiguous_retry_accepts_the_state_already_reached():
    fake = Fake(token_answer(1), SENT_FAILURE, error_answer(400, "INVALIDJOBSTATE"), job_answer("InProgress"))
    job = fake.run(make_client().close_job("750X"))
    assert job.state is JobState.IN_PROGRESS
    assert [r.method for r in fake.requests] == ["POST", "PATCH", "PATCH", "GET"]


def test_close_of_a_job_in_the_wrong_state_raises():
    fake = Fake(token_answer(1), error_answer(400, "INVALIDJOBSTATE", "Invalid state transition"))
    with pytest.raises(SalesforceBulkInvalidStateError) as err:
        fake.run(make_client().close_job("750X"))
    assert err.value.job_id == "750X"
    fake = Fake(token_answer(1), SENT_FAILURE, error_answer(400, "INVALIDJOBSTATE"), job_answer("Aborted"))
    with pytest.raises(SalesforceBulkInvalidStateError):
        fake.run(make_client().close_job("750X"))


def test_delete_after_an_ambiguous_retry_accepts_not_found():
    fake = Fake(token_answer(1), error_answer(503, "X"), error_answer(404, "NOT_FOUND"))
    assert fake.run(make_client().delete_job("750X", "query")) is None
    fake = Fake(token_answer(1), error_answer(404, "NOT_FOUND"))
    with pytest.raises(SalesforceBulkNotFoundError):
        fake.run(make_client().delete_job("750X", "query"))


def test_job_pager_follows_next_records_url():
    first = {"done": False, "records": [json.loads(job_answer(job_id="750A")[2][0])],
             "nextRecordsUrl": "/services/data/v62.0/jobs/ingest?queryLocator=abc"}
    last = {"done": True, "records": [json.loads(job_answer(job_id="750B")[2][0])], "nextRecordsUrl": None}
    fake = Fake(
        token_answer(1), (200, {}, [json.dumps(first).encode()]), (200, {}, [json.dumps(last).encode()])
    )
    pager = JobPager(make_client(), JobKind.INGEST, job_type="V2Ingest")
    ids = []
    while not pager.done:
        ids += [job.id for job in run_sync(pager.fetch(), fake.send, fake.sleeps.append)]
    assert ids == ["750A", "750B"]
    assert fake.requests[1].url.endswith("/jobs/ingest?jobType=V2Ingest")
    assert fake.requests[2].url == f"{INSTANCE}/services/data/v62.0/jobs/ingest?queryLocator=abc"


def test_result_pages_followed_to_the_end():
    results = "/services/data/v62.0/jobs/query/750Q/results"
    page1 = {"resultPages": [{"resultUrl": f"{results}?maxRecords=5"},
                             {"resultUrl": f"{results}?locator=NQ&maxRecords=5"}],
             "nextRecordsUrl": "/services/data/v62.0/jobs/query/750Q/resultPages?locator=p2", "done": False}
    page2 = {"resultChunks": [{"resultLink": "/jobs/query/750Q/results?locator=MTA&maxRecords=5"}],
             "nextRecordsUrl": None, "done": True}
    fake = Fake(
        token_answer(1), (200, {}, [json.dumps(page1).encode()]), (200, {}, [json.dumps(page2).encode()])
    )
    refs = fake.run(make_client().get_result_pages("750Q"))
    assert [r.locator for r in refs] == [None, "NQ", "MTA"]
    assert fake.requests[2].url == f"{INSTANCE}/services/data/v62.0/jobs/query/750Q/resultPages?locator=p2"


def test_jwt_bearer_request_is_signed_fresh(tmp_path):
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    client = make_client(auth_type="jwt_bearer", private_key=pem)
    fake = Fake(token_answer(1), job_answer())
    fake.run(client.get_job("750X", "ingest"))
    form = dict(pair.split("=", 1) for pair in fake.bodies[0].decode().split("&"))
    assert form["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    claims = jwt.decode(form["assertion"], key.public_key(), algorithms=["RS256"], audience="https://login.salesforce.com")
    assert (claims["iss"], claims["sub"]) == ("cid", "u")


def test_debug_log_has_method_path_status_and_no_secrets(caplog):
    logger = logging.getLogger("sfbulk-test")
    client = make_client()
    client._log = logger
    fake = Fake(token_answer(1), (200, {"Sforce-Locator": "null", "Sforce-NumberOfRecords": "0"}, [b""]))
    with caplog.at_level(logging.DEBUG, logger="sfbulk-test"):
        fake.run(client.download_query_page("750Q", io.BytesIO(), locator="SECRETLOCATOR"))
    text = caplog.text
    assert "GET /services/data/v62.0/jobs/query/750Q/results -> 200" in text
    assert "POST /services/oauth2/token -> 200" in text
    for secret in ("TOKEN1", "sec", "SECRETLOCATOR"):
        assert secret not in text
