"""The fault proxy itself: forwarding (both request-target forms, streaming MBs both ways), each fault kind
doing what it says, ``times``/``skip`` bounds, seeded draws that repeat, and a clean stop."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from proxy import INGEST_CREATE, INGEST_JOB, INGEST_UPLOAD, Fault, FaultProxy
from rig import direct_api

from airflow_provider_sfbulk.emulator.testing import EmulatorServer


@pytest.fixture
def proxy(emulator: EmulatorServer) -> Iterator[FaultProxy]:
    with FaultProxy(emulator.base_url) as running:
        yield running


def session(
    proxy: FaultProxy, emulator: EmulatorServer, *, forward: bool = False
) -> tuple[requests.Session, str]:
    """A session sending through the proxy: as a reverse proxy (base URL) or as ``HTTP_PROXY``."""
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {direct_api(emulator).token}"
    if forward:
        s.proxies = {"http": proxy.base_url}
        return s, emulator.base_url
    return s, proxy.base_url


def api(base: str, path: str) -> str:
    return f"{base}/services/data/v60.0{path}"


def ingest_jobs(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return direct_api(emulator).get("/jobs/ingest").json()["records"]


@pytest.mark.parametrize("forward", [False, True], ids=["reverse", "http_proxy"])
def test_forwards_and_streams_megabytes_both_ways(emulator, proxy, forward):
    s, base = session(proxy, emulator, forward=forward)
    body = {"object": "Account", "operation": "insert"}
    job = s.post(api(base, "/jobs/ingest"), json=body, timeout=10).json()
    rows = 40_000
    body = b"Name,Description\n" + b"".join(b"Row %06d,%s\n" % (i, b"x" * 40) for i in range(rows))
    assert len(body) > 2_000_000

    def chunks() -> Iterator[bytes]:  # a streamed (chunked) upload: the proxy must not need it whole
        for start in range(0, len(body), 256 * 1024):
            yield body[start:start + 256 * 1024]

    assert s.put(api(base, f"/jobs/ingest/{job['id']}/batches"), data=chunks(),
                 headers={"Content-Type": "text/csv"}, timeout=30).status_code == 201
    assert s.patch(api(base, f"/jobs/ingest/{job['id']}"), json={"state": "UploadComplete"}, timeout=10).ok
    assert direct_api(emulator).wait_job("ingest", job["id"])["numberRecordsProcessed"] == rows
    downloaded = s.get(api(base, f"/jobs/ingest/{job['id']}/successfulResults"), timeout=30)
    assert downloaded.status_code == 200
    assert downloaded.content.count(b"\n") == rows + 1
    assert len(emulator.records("Account")) == rows
    assert [e.method for e in proxy.exchanges] == ["POST", "PUT", "PATCH", "GET"]
    assert all(e.fault is None and e.status == e.upstream_status for e in proxy.exchanges)


def test_status_answers_without_forwarding(emulator, proxy):
    proxy.set_faults([Fault("status", INGEST_CREATE, method="POST", status=429, retry_after="7", times=1)])
    s, base = session(proxy, emulator)
    first = s.post(api(base, "/jobs/ingest"), json={"object": "Account", "operation": "insert"}, timeout=10)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "7")
    assert first.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert ingest_jobs(emulator) == []  # nothing reached the server
    second = s.post(api(base, "/jobs/ingest"), json={"object": "Account", "operation": "insert"}, timeout=10)
    assert second.status_code == 200
    assert len(ingest_jobs(emulator)) == 1
    assert [(e.kind, e.status, e.upstream_status) for e in proxy.exchanges] == [("status", 429, None),
                                                                                  (None, 200, 200)]


def test_drop_before_never_reaches_the_server(emulator, proxy):
    proxy.set_faults([Fault("drop_before", INGEST_CREATE, method="POST")])
    s, base = session(proxy, emulator)
    with pytest.raises(requests.ConnectionError):
        s.post(api(base, "/jobs/ingest"), json={"object": "Account", "operation": "insert"}, timeout=10)
    assert ingest_jobs(emulator) == []
    assert [(e.kind, e.status, e.upstream_status) for e in proxy.exchanges] == [("drop_before", None, None)]


def test_drop_after_acts_but_never_answers(emulator, proxy):
    proxy.set_faults([Fault("drop_after", INGEST_CREATE, method="POST")])
    s, base = session(proxy, emulator, forward=True)
    with pytest.raises(requests.ConnectionError):
        s.post(api(base, "/jobs/ingest"), json={"object": "Account", "operation": "insert"}, timeout=10)
    assert [job["state"] for job in ingest_jobs(emulator)] == ["Open"]  # the job exists all the same
    assert [(e.kind, e.status, e.upstream_status) for e in proxy.exchanges] == [("drop_after", None, 200)]


def test_cut_body_sends_half_then_closes(emulator, proxy):
    proxy.set_faults([Fault("cut_body", INGEST_JOB, method="GET")])
    s, base = session(proxy, emulator)
    body = {"object": "Account", "operation": "insert"}
    job = s.post(api(base, "/jobs/ingest"), json=body, timeout=10).json()
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        s.get(api(base, f"/jobs/ingest/{job['id']}"), timeout=10)
    assert s.get(api(base, f"/jobs/ingest/{job['id']}"), timeout=10).json()["id"] == job["id"]
    assert [e.kind for e in proxy.exchanges] == [None, "cut_body", None]


def test_times_and_skip_bound_a_rule(emulator, proxy):
    proxy.set_faults([Fault("status", r"/services/data/$", method="GET", status=503, times=2, skip=1)])
    s, base = session(proxy, emulator)
    statuses = [s.get(f"{base}/services/data/", timeout=10).status_code for _ in range(6)]
    assert statuses == [200, 503, 503, 200, 200, 200]
    assert [e.fault is not None for e in proxy.exchanges] == [False, True, True, False, False, False]
    other = s.put(api(base, "/jobs/ingest/7505fE000000001ABA/batches"), data=b"x", timeout=10)
    assert other.status_code != 503  # the rule's method and path did not match
    assert not proxy.matching("PUT", INGEST_UPLOAD)[0].fault


@pytest.mark.parametrize("seed", [7, 2024])
def test_seeded_draws_repeat(emulator, seed):
    def pattern() -> list[int]:
        with FaultProxy(emulator.base_url, [Fault("status", r"/services/data/$", rate=0.5, times=None)],
                        seed=seed) as p:
            s, base = session(p, emulator)
            return [s.get(f"{base}/services/data/", timeout=10).status_code for _ in range(24)]

    first, second = pattern(), pattern()
    assert first == second, f"seed {seed}: {first} != {second}"
    assert 0 < first.count(503) < 24, f"seed {seed}: a 50 % draw fired {first.count(503)}/24 times"


def test_stop_releases_the_port_and_is_idempotent(emulator):
    p = FaultProxy(emulator.base_url).start()
    port = int(p.base_url.rsplit(":", 1)[1])
    assert requests.get(f"{p.base_url}/services/data/", timeout=10).status_code == 200
    p.stop()
    p.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_connection_host_at_the_proxy_routes_only_the_token(emulator, proxy, monkeypatch):
    """Why the suite uses HTTP_PROXY: the emulator's token answer names the emulator itself as instance_url
    (it has no public-base-URL setting), so a connection whose host is the proxy sends only the token
    request through it; every instance call goes straight to the emulator."""
    from airflow_provider_sfbulk.emulator.testing import connection_json
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SF_VIA_HOST", connection_json(proxy.base_url))
    hook = SalesforceBulkHook(salesforce_conn_id="sf_via_host")
    assert hook.get_limits().remaining("DailyBulkApiBatches") > 0
    assert hook.instance_url == emulator.base_url
    assert [(e.method, e.target) for e in proxy.exchanges] == [("POST", "/services/oauth2/token")]


def test_the_secret_check_catches_a_leak(emulator, proxy):
    """check_no_secrets fails on a token or a password in a text (so the operator runs' checks can fail)."""
    from harness import check_no_secrets
    from rig import Rig

    s, base = session(proxy, emulator)
    s.get(api(base, "/limits"), timeout=10)
    rig = Rig(emulator, proxy, direct_api(emulator), Path("."))
    check_no_secrets(rig, ["nothing to see"], "clean")
    token = next(iter(proxy.bearer_tokens))
    for leaked in (f"Authorization: Bearer {token}", f"password={emulator.config.password}"):
        with pytest.raises(AssertionError, match="leaked"):
            check_no_secrets(rig, [leaked], "leak")
