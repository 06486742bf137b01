"""The shared fixtures themselves: connections for every auth type work, custom schemas load."""

from __future__ import annotations

import json
import os
import time

import jwt
import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import AUTH_TYPES, ApiSession


def token_from_connection(conn: dict) -> dict:
    """Log in the way the hook is expected to, from nothing but the connection."""
    extra = conn["extra"]
    url = f"{conn['host']}/services/oauth2/token"
    verify = extra.get("ca_bundle", True)
    auth_type = extra["auth_type"]
    if auth_type == "access_token":
        return {"access_token": extra["access_token"], "instance_url": extra["instance_url"]}
    if auth_type == "password":
        data = {"grant_type": "password", "client_id": extra["client_id"],
                "client_secret": extra["client_secret"],
                "username": conn["login"], "password": conn["password"] + extra["security_token"]}
    elif auth_type == "client_credentials":
        data = {"grant_type": "client_credentials", "client_id": extra["client_id"],
                "client_secret": extra["client_secret"]}
    elif auth_type == "refresh_token":
        data = {"grant_type": "refresh_token", "client_id": extra["client_id"],
                "client_secret": extra["client_secret"], "refresh_token": extra["refresh_token"]}
    else:
        key = open(extra["private_key_file"], "rb").read()  # noqa: SIM115 - tiny test helper
        assertion = jwt.encode({"iss": extra["client_id"], "sub": conn["login"], "aud": conn["host"],
                                "exp": int(time.time()) + 120}, key, algorithm="RS256")
        data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    response = requests.post(url, data=data, verify=verify, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("auth_type", AUTH_TYPES)
@pytest.mark.parametrize("tls", [False, True])
def test_connection_for_every_auth_type(emulator_factory, salesforce_conn, auth_type, tls):
    server = emulator_factory(tls=tls)
    value = salesforce_conn(server, auth_type)
    assert os.environ["AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT"] == value
    conn = json.loads(value)
    assert conn["conn_type"] == "salesforce_bulk"
    assert conn["host"] == server.base_url
    assert conn["extra"]["auth_type"] == auth_type
    assert ("ca_bundle" in conn["extra"]) == tls
    token = token_from_connection(conn)
    response = requests.get(f"{server.base_url}/services/data/v60.0/limits",
                            headers={"Authorization": f"Bearer {token['access_token']}"},
                            verify=conn["extra"].get("ca_bundle", True), timeout=10)
    assert response.status_code == 200


def test_connection_for_another_conn_id(emulator, salesforce_conn):
    value = salesforce_conn(emulator, "password", conn_id="my_sf")
    assert os.environ["AIRFLOW_CONN_MY_SF"] == value
    conn = json.loads(value)
    assert conn["login"] == emulator.config.username
    assert conn["password"] == emulator.config.password
    assert conn["extra"]["client_id"] == "sfbulk-emulator-client"


def test_custom_schema_file(emulator_factory, tmp_path):
    schema = {"objects": {"Widget__c": {"keyPrefix": "a07", "fields": {
        "Name": {"type": "string", "length": 20, "required": True},
        "Code__c": {"type": "string", "length": 10, "externalId": True, "unique": True}}}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    server = emulator_factory(schema_path=path)
    api = ApiSession(server)
    info = api.run_ingest("Widget__c", "insert", b"Name,Code__c\nSprocket,W-1\n")
    assert info["numberRecordsFailed"] == 0
    assert server.records("Widget__c")[0]["Id"].startswith("a07")
    assert api.post("/jobs/ingest", json={"object": "Account", "operation": "insert"}).status_code == 400


def test_connection_for_a_url_or_process_uses_the_default_credentials() -> None:
    from airflow_provider_sfbulk.emulator.config import EmulatorConfig
    from airflow_provider_sfbulk.emulator.testing import connection_dict

    defaults = EmulatorConfig()
    conn = connection_dict("http://127.0.0.1:9", timeout=600)
    assert conn["host"] == "http://127.0.0.1:9"
    assert (conn["login"], conn["password"]) == (defaults.username, defaults.password)
    assert conn["extra"]["security_token"] == defaults.security_token
    assert conn["extra"]["timeout"] == 600
    assert "ca_bundle" not in conn["extra"]
    with pytest.raises(ValueError, match="in-process EmulatorServer"):
        connection_dict("http://127.0.0.1:9", "refresh_token")
