"""The query timeout switch: big queries fail as Salesforce fails a query that runs too long."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import ApiSession


def test_over_the_threshold_fails_with_retries(emulator_factory):
    server = emulator_factory(query_timeout_records=10)
    server.seed("Account", 11)
    api = ApiSession(server)
    info = api.run_query("SELECT Id FROM Account")
    assert info["state"] == "Failed"
    assert info["retries"] == 15
    assert info["errorMessage"] == "InternalServerError : Retried more than 15 times"
    assert info["numberRecordsProcessed"] == 0
    assert isinstance(info["totalProcessingTime"], int)
    results = api.get(f"/jobs/query/{info['id']}/results")
    assert results.status_code == 400
    assert results.json()[0]["errorCode"] == "INVALIDJOBSTATE"


def test_at_the_threshold_completes(emulator_factory):
    server = emulator_factory(query_timeout_records=10)
    server.seed("Account", 11)
    api = ApiSession(server)
    info = api.run_query("SELECT Id FROM Account LIMIT 10")
    assert info["state"] == "JobComplete"
    assert info["retries"] == 0
    assert info["numberRecordsProcessed"] == 10
    assert "errorMessage" not in info
    assert api.get(f"/jobs/query/{info['id']}/results").headers["Sforce-NumberOfRecords"] == "10"


def test_timeout_style(emulator):
    emulator.seed("Account", 3)
    emulator.set_query_timeout(2, style="timeout")
    api = ApiSession(emulator)
    info = api.run_query("SELECT Id, Name FROM Account")
    assert info["state"] == "Failed"
    assert info["retries"] == 0
    assert info["errorMessage"] == "QUERY_TIMEOUT : Your query request was running for too long."
    emulator.set_query_timeout(None)
    assert api.run_query("SELECT Id, Name FROM Account")["state"] == "JobComplete"


def test_admin_endpoint_turns_it_on_and_off(emulator):
    emulator.seed("Account", 5)
    api = ApiSession(emulator)
    admin = f"{emulator.base_url}/__emulator/settings"
    answer = requests.put(admin, json={"query_timeout_records": 4}, timeout=10).json()
    assert answer == {"result_pages_shape": "documented", "query_timeout_records": 4,
                      "query_timeout_style": "retries"}
    assert api.run_query("SELECT Id FROM Account")["state"] == "Failed"
    assert api.run_query("SELECT Id FROM Account WHERE Name = 'nobody'")["state"] == "JobComplete"
    assert requests.put(admin, json={"query_timeout_records": -1}, timeout=10).status_code == 400
    assert requests.put(admin, json={"query_timeout_style": "slow"}, timeout=10).status_code == 400
    assert requests.put(admin, json={"query_timeout_records": None}, timeout=10).status_code == 200
    assert api.run_query("SELECT Id FROM Account")["state"] == "JobComplete"


@pytest.mark.parametrize("bad", [{"query_timeout_records": -1}, {"query_timeout_style": "x"},
                                 {"result_pages_shape": "x"}, {"drop_result_rows": -1}])
def test_config_checks_values(bad):
    with pytest.raises(ValueError):
        EmulatorConfig(**bad)
