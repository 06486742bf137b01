"""Injected HTTP faults: error statuses, dropped connections, delays, determinism and the admin API."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_sfbulk.emulator.faults import FaultRule, FaultSet, parse_fault
from airflow_provider_sfbulk.emulator.testing import ApiSession


def test_parse_fault_text_forms():
    rule = parse_fault("status=503,rate=0.5,method=GET,path=/jobs/ingest/[^/]+$")
    assert rule == FaultRule(kind="status", status=503, method="GET", path="/jobs/ingest/[^/]+$", rate=0.5)
    assert parse_fault("drop,method=PUT,path=/batches").kind == "drop"
    delay = parse_fault("delay=2.5,path=/results,times=3")
    assert (delay.kind, delay.delay, delay.times, delay.path) == ("delay", 2.5, None, "/results,times=3")
    assert parse_fault("delay=1,times=2,path=/x").times == 2
    assert parse_fault("status=429,path=a,b").path == "a,b"


@pytest.mark.parametrize("text", ["", "status=404", "status=503,rate=2", "bogus=1", "delay=0",
                                  "status=500,path=(unclosed", "method=GET"])
def test_parse_fault_rejects_bad_specs(text):
    with pytest.raises(ValueError):
        parse_fault(text)


def test_fault_set_is_deterministic_per_seed():
    def pattern(seed: int) -> list[bool]:
        faults = FaultSet([FaultRule(status=500, rate=0.5)], seed=seed)
        return [faults.decide("GET", "/x") is not None for _ in range(64)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 10 < sum(pattern(7)) < 54


@pytest.mark.parametrize(("status", "code"), [(500, "UNKNOWN_EXCEPTION"), (503, "SERVER_UNAVAILABLE"),
                                              (429, "REQUEST_LIMIT_EXCEEDED")])
def test_status_faults_hit_only_the_chosen_endpoint(emulator, status, code):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(status=status, method="GET", path=r"/limits$")])
    hit = api.get("/limits")
    assert hit.status_code == status
    assert hit.json()[0]["errorCode"] == code
    assert api.get("/jobs/ingest").status_code == 200
    assert api.post("/jobs/ingest", json={"object": "Account", "operation": "insert"}).status_code == 200
    emulator.reset_faults()
    assert api.get("/limits").status_code == 200


def test_times_limits_a_fault(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([{"status": 503, "path": "/jobs/ingest", "times": 2}])
    statuses = [api.get("/jobs/ingest").status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]


def test_rate_faults_are_reproducible_with_the_seed(emulator_factory):
    def run() -> list[int]:
        server = emulator_factory(seed=42)
        api = ApiSession(server)
        server.set_faults([FaultRule(status=500, path="/limits", rate=0.5)])
        result = [api.get("/limits").status_code for _ in range(20)]
        server.stop()
        return result

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 500}


def test_dropped_connection(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(kind="drop", path="/limits", times=1)])
    with pytest.raises(requests.ConnectionError):
        api.get("/limits")
    assert api.get("/limits").status_code == 200


def test_delay_fault_still_answers(emulator):
    api = ApiSession(emulator)
    emulator.set_faults([FaultRule(kind="delay", delay=0.2, path="/limits", times=1)])
    assert api.get("/limits").status_code == 200
    assert emulator.app.faults.status()[0]["fired"] == 1


def test_token_endpoint_can_fail_too(emulator):
    emulator.set_faults([FaultRule(status=503, path="/services/oauth2/token", times=1)])
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as err:
        ApiSession(emulator)
    assert err.value.code == 503
    assert ApiSession(emulator).get("/limits").status_code == 200


def test_admin_fault_endpoint(emulator):
    base = f"{emulator.base_url}/__emulator/faults"
    put = requests.put(base, json={"rules": [{"status": 500, "path": "/limits"}], "failing_batch": 3},
                       timeout=10)
    assert put.status_code == 200
    assert put.json()["rules"][0]["status"] == 500
    assert put.json()["failing_batch"] == 3
    added = requests.post(base, json={"rules": [{"kind": "drop", "path": "/batches"}]}, timeout=10).json()
    assert [r["kind"] for r in added["rules"]] == ["status", "drop"]
    api = ApiSession(emulator)
    assert api.get("/limits").status_code == 500
    assert requests.get(base, timeout=10).json()["rules"][0]["fired"] == 1
    assert requests.put(base, json={"rules": [{"status": 404}]}, timeout=10).status_code == 400
    assert requests.put(base, json={"rules": [{"colour": "red"}]}, timeout=10).status_code == 400
    assert requests.put(base, json={"lock_row_rate": 3}, timeout=10).status_code == 400
    cleared = requests.delete(base, timeout=10).json()
    assert cleared == {"rules": [], "lock_row_rate": 0.0, "failing_batch": None, "seed": 0,
                       "drop_result_rows": 0, "drop_result_jobs": None}
    assert api.get("/limits").status_code == 200


def test_admin_refuses_non_loopback_clients(emulator):
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    from airflow_provider_sfbulk.emulator.server import ApiError

    class Transport:
        def get_extra_info(self, name, default=None):
            return ("10.1.2.3", 5555) if name == "peername" else default

    request = make_mocked_request("GET", "/__emulator/health", transport=Transport())
    with pytest.raises(ApiError) as err:
        asyncio.run(emulator.app._admin(request, "/health"))
    assert err.value.status == 403
