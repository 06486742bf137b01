"""``hold`` faults: a request kept waiting until a test releases it, so a client can be stopped at an exact
step; a held request whose client went away is dropped, never acted upon. And ``skip`` (the Nth match)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from airflow_provider_sfbulk.emulator.faults import FaultRule, FaultSet, parse_fault
from airflow_provider_sfbulk.emulator.testing import ApiSession


def _held(emulator) -> dict:
    return requests.get(f"{emulator.base_url}/__emulator/holds", timeout=10).json()


def _wait_held(emulator, count: int = 1, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = _held(emulator)
        if len(view["held"]) >= count:
            return view
        time.sleep(0.02)
    raise AssertionError(f"nothing held: {_held(emulator)}")


def _release(emulator) -> int:
    return requests.post(f"{emulator.base_url}/__emulator/holds/release", timeout=10).json()["released"]


def test_parse_hold_and_skip():
    rule = parse_fault("hold=30,skip=2,times=1,method=GET,path=/results")
    assert rule == FaultRule(kind="hold", delay=30.0, skip=2, times=1, method="GET", path="/results")
    with pytest.raises(ValueError, match="hold=SECONDS"):
        parse_fault("hold=0,path=/x")
    with pytest.raises(ValueError, match="skip"):
        FaultRule(kind="status", skip=-1)


def test_skip_lets_the_first_matches_pass():
    faults = FaultSet([FaultRule(status=503, path="/x", skip=2, times=1)])
    assert [faults.decide("GET", "/x") is not None for _ in range(5)] == [False, False, True, False, False]
    assert faults.decide("GET", "/y") is None


def test_a_held_request_waits_until_released_then_is_answered(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(kind="hold", delay=20, method="GET", path=r"/limits$", skip=1, times=1)])
    assert api.get("/limits").status_code == 200  # the first one is skipped
    answers: list[int] = []
    caller = threading.Thread(target=lambda: answers.append(api.get("/limits").status_code))
    caller.start()
    view = _wait_held(emulator)
    assert [(h["method"], h["path"]) for h in view["held"]] == [("GET", "/services/data/v60.0/limits")]
    time.sleep(0.3)
    assert answers == []  # still waiting
    assert _release(emulator) == 1
    caller.join(10)
    assert answers == [200]
    assert _held(emulator) == {"held": [], "total": 1}
    assert api.get("/limits").status_code == 200  # times=1: no second hold


def test_a_hold_ends_by_itself_after_its_seconds(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(kind="hold", delay=0.5, method="GET", path=r"/limits$")])
    started = time.monotonic()
    assert api.get("/limits").status_code == 200
    assert 0.4 < time.monotonic() - started < 10


def _send_raw_and_die(emulator, api: ApiSession, request_line: str, content_type: str, body: bytes) -> None:
    """Send one whole request on a raw socket, wait until it is held, close the socket, release."""
    host, port = emulator.base_url.removeprefix("http://").split(":")
    raw = socket.create_connection((host, int(port)), timeout=10)
    raw.sendall(
        f"{request_line} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    _wait_held(emulator)
    raw.close()  # as a killed worker's socket
    time.sleep(0.3)
    assert _release(emulator) == 1
    time.sleep(0.3)


def test_a_held_create_whose_client_died_is_never_applied(emulator):
    api = ApiSession(emulator)
    before = len(api.get("/jobs/ingest").json()["records"])
    emulator.set_faults([FaultRule(kind="hold", delay=20, method="POST", path=r"/jobs/ingest$", times=1)])
    _send_raw_and_die(emulator, api, "POST /services/data/v60.0/jobs/ingest", "application/json",
                      b'{"object": "Account", "operation": "insert"}')
    assert len(api.get("/jobs/ingest").json()["records"]) == before


def test_a_held_delete_whose_client_died_is_never_applied(emulator):
    """A request without a body: nothing but the client's absence stops it."""
    api = ApiSession(emulator)
    job = api.post("/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()["id"]
    assert api.patch(f"/jobs/ingest/{job}", json={"state": "Aborted"}).status_code == 200
    emulator.set_faults([FaultRule(kind="hold", delay=20, method="DELETE", path=r"/jobs/ingest/", times=1)])
    _send_raw_and_die(emulator, api, f"DELETE /services/data/v60.0/jobs/ingest/{job}", "text/plain", b"")
    assert api.get(f"/jobs/ingest/{job}").json()["state"] == "Aborted"


def test_a_held_upload_whose_client_died_is_never_applied(emulator):
    api = ApiSession(emulator)
    job = api.post("/jobs/ingest", json={"object": "Account", "operation": "insert"}).json()["id"]
    emulator.set_faults([FaultRule(kind="hold", delay=20, method="PUT", path=r"/batches$", times=1)])
    body = b"Name\nHeld Co\n"
    _send_raw_and_die(emulator, api, f"PUT /services/data/v60.0/jobs/ingest/{job}/batches", "text/csv", body)
    # the upload never arrived: the job is still Open and takes an upload now
    assert api.get(f"/jobs/ingest/{job}").json()["state"] == "Open"
    assert api.put(f"/jobs/ingest/{job}/batches", data=body,
                   headers={"Content-Type": "text/csv"}).status_code == 201


def test_resetting_faults_releases_held_requests(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(kind="hold", delay=20, method="GET", path=r"/limits$")])
    answers: list[int] = []
    caller = threading.Thread(target=lambda: answers.append(api.get("/limits").status_code))
    caller.start()
    _wait_held(emulator)
    assert requests.delete(f"{emulator.base_url}/__emulator/faults", timeout=10).status_code == 200
    caller.join(10)
    assert answers == [200]
