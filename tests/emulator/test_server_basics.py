"""REST basics of the emulator: versions, limits, counters, errors, path tolerance."""

from __future__ import annotations

import requests

from airflow_provider_sfbulk.emulator.server import normalize_path, release_label
from airflow_provider_sfbulk.emulator.testing import ApiSession


def test_versions_need_no_auth_and_are_not_counted(emulator):
    response = requests.get(f"{emulator.base_url}/services/data/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    versions = response.json()
    assert versions[0] == {"label": "Winter '18", "url": "/services/data/v41.0", "version": "41.0"}
    assert {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"} in versions
    assert versions[-1]["version"] == "66.0"
    assert "Sforce-Limit-Info" not in response.headers
    assert requests.get(f"{emulator.base_url}/services/data", timeout=10).status_code == 200


def test_release_labels():
    assert release_label(41) == "Winter '18"
    assert release_label(47) == "Winter '20"
    assert release_label(58) == "Summer '23"
    assert release_label(66) == "Spring '26"


def test_normalize_path():
    assert (normalize_path("/services/data/v60.0/jobs/query//750/results/")
            == "/services/data/v60.0/jobs/query/750/results")
    assert normalize_path("/") == "/"
    assert normalize_path("//") == "/"


def test_limits_and_limit_info_header(emulator):
    api = ApiSession(emulator)
    first = api.get("/limits")
    assert first.status_code == 200
    used = int(first.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0])
    limits = first.json()
    for key in ("DailyApiRequests", "DailyBulkApiBatches", "DailyBulkV2QueryJobs",
                "DailyBulkV2QueryFileStorageMB"):
        assert set(limits[key]) == {"Max", "Remaining"}
    assert limits["DailyApiRequests"]["Max"] - limits["DailyApiRequests"]["Remaining"] == used
    second = api.get("/limits")
    assert second.headers["Sforce-Limit-Info"] == f"api-usage={used + 1}/{emulator.config.daily_api_requests}"


def test_daily_api_request_limit(emulator_factory):
    server = emulator_factory(daily_api_requests=3)
    api = ApiSession(server)
    statuses = [api.get("/jobs/ingest").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 403]
    blocked = api.get("/limits")
    assert blocked.status_code == 403
    assert blocked.json() == [
        {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    assert blocked.headers["Sforce-Limit-Info"] == "api-usage=5/3"


def test_counters_survive_restart(emulator_factory, tmp_path):
    data_dir = tmp_path / "d"
    first = emulator_factory(data_dir=data_dir)
    api = ApiSession(first)
    api.get("/limits")
    used = api.get("/limits").headers["Sforce-Limit-Info"]
    first.stop()
    second = emulator_factory(data_dir=data_dir)
    after = ApiSession(second).get("/limits").headers["Sforce-Limit-Info"]
    assert int(after.split("=")[1].split("/")[0]) == int(used.split("=")[1].split("/")[0]) + 1


def test_unknown_resources_and_versions(emulator):
    api = ApiSession(emulator)
    not_found = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    for path, version in [("/jobs/ingest", "40.0"), ("/jobs/ingest", "67.0"), ("/jobs/ingest", "60.1"),
                          ("/jobs/query", "46.0"), ("/sobjects/nope/whatever", "60.0"),
                          ("/jobs/ingest/7505fE000000999AAA", "60.0")]:
        response = api.get(path, version=version)
        assert response.status_code == 404, (path, version)
        assert response.json() == not_found
    assert api.get("/jobs/query", version="47.0").status_code == 200
    assert requests.get(f"{emulator.base_url}/nothing/here", timeout=10).status_code == 404


def test_method_not_allowed(emulator):
    api = ApiSession(emulator)
    response = api.put("/jobs/ingest")
    assert response.status_code == 405
    assert response.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"
    assert api.delete("/limits").status_code == 405


def test_pretty_print_and_trailing_slash(emulator):
    api = ApiSession(emulator)
    pretty = api.get("/limits/", headers={"X-PrettyPrint": "1"})
    assert pretty.status_code == 200
    assert '"DailyApiRequests" : {' in pretty.text
    job = api.create_ingest("Account")
    assert api.get(f"//jobs//ingest/{job['id']}/").json()["id"] == job["id"]


def test_admin_endpoints(emulator):
    base = f"{emulator.base_url}/__emulator"
    assert requests.get(f"{base}/health", timeout=10).json()["status"] == "ok"
    seeded = requests.post(f"{base}/seed", json={"object": "Account", "count": 7}, timeout=10)
    assert seeded.status_code == 200
    assert seeded.json()["inserted"] == 7
    records = requests.get(f"{base}/records/Account", timeout=10).json()
    assert records["totalSize"] == 7
    assert all(r["Id"].startswith("001") and len(r["Id"]) == 18 for r in records["records"])
    assert requests.get(f"{base}/records/Nope", timeout=10).status_code == 404
    assert requests.post(f"{base}/seed", json={"object": "Nope", "count": 1}, timeout=10).status_code == 400
    assert requests.get(f"{base}/unknown", timeout=10).status_code == 404


def test_seed_records_at_start(emulator_factory):
    server = emulator_factory(seed_records={"Account": 12, "Contact": 5})
    assert len(server.records("Account")) == 12
    assert len(server.records("Contact")) == 5
