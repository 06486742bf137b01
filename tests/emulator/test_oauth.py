"""OAuth token endpoint and session validation of the emulator, over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import pytest
import requests

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.testing import ApiSession

INVALID_SESSION = b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'


def token_url(server) -> str:
    return f"{server.base_url}/services/oauth2/token"


def password_params(server, **overrides) -> dict[str, str]:
    config = server.config
    params = {
        "grant_type": "password",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "username": config.username,
        "password": config.password + config.security_token,
    }
    params.update(overrides)
    return params


def assert_token_shape(server, body: dict) -> None:
    assert body["access_token"].startswith(identity.ORG_ID[:15] + "!AQ")
    assert body["instance_url"] == server.base_url
    assert body["id"] == f"{server.base_url}/id/{identity.ORG_ID}/{identity.USER_ID}"
    assert body["token_type"] == "Bearer"
    assert body["issued_at"].isdigit()
    assert abs(int(body["issued_at"]) / 1000 - time.time()) < 60
    expected = base64.b64encode(hmac.new(server.config.client_secret.encode(),
                                         (body["id"] + body["issued_at"]).encode(), hashlib.sha256).digest())
    assert body["signature"] == expected.decode()
    assert "expires_in" not in body


def test_password_grant_issues_a_working_token(emulator):
    response = requests.post(token_url(emulator), data=password_params(emulator), timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert_token_shape(emulator, body)
    assert "refresh_token" not in body
    api = requests.get(f"{emulator.base_url}/services/data/v60.0/limits",
                       headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=10)
    assert api.status_code == 200


def test_parameters_in_the_query_string_are_accepted(emulator):
    response = requests.post(token_url(emulator), params=password_params(emulator), timeout=10)
    assert response.status_code == 200
    assert_token_shape(emulator, response.json())


@pytest.mark.parametrize(
    ("overrides", "error", "description"),
    [
        ({"password": "emulator-password"}, "invalid_grant", "authentication failure"),
        ({"username": "someone@else.example"}, "invalid_grant", "authentication failure"),
        ({"client_id": "nope"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "nope"}, "invalid_client", "invalid client credentials"),
        ({"grant_type": "authorization_magic"}, "unsupported_grant_type", "grant type not supported"),
        ({"grant_type": ""}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_password_grant_errors(emulator, overrides, error, description):
    response = requests.post(token_url(emulator), data=password_params(emulator, **overrides), timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


def test_client_credentials_in_body_and_basic(emulator):
    config = emulator.config
    in_body = requests.post(token_url(emulator), data={
        "grant_type": "client_credentials", "client_id": config.client_id,
        "client_secret": config.client_secret,
    }, timeout=10)
    assert in_body.status_code == 200
    assert_token_shape(emulator, in_body.json())
    assert in_body.json()["scope"] == "api"
    basic = requests.post(token_url(emulator), data={"grant_type": "client_credentials"},
                          auth=(config.client_id, config.client_secret), timeout=10)
    assert basic.status_code == 200
    wrong = requests.post(token_url(emulator), data={"grant_type": "client_credentials"},
                          auth=(config.client_id, "wrong"), timeout=10)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_client"


def make_assertion(server, keypair, **claims) -> str:
    payload = {"iss": server.config.client_id, "sub": server.config.username,
               "aud": "https://login.salesforce.com", "exp": int(time.time()) + 120}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, keypair.private_key.read_bytes(), algorithm="RS256")


def jwt_request(server, assertion: str) -> requests.Response:
    return requests.post(token_url(server), data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}, timeout=10)


@pytest.mark.parametrize("aud", ["https://login.salesforce.com", "https://test.salesforce.com", "SELF"])
def test_jwt_bearer_grant(emulator, jwt_keypair, aud):
    assertion = make_assertion(emulator, jwt_keypair, aud=emulator.base_url if aud == "SELF" else aud)
    response = jwt_request(emulator, assertion)
    assert response.status_code == 200, response.text
    assert_token_shape(emulator, response.json())
    assert "refresh_token" not in response.json()


def test_jwt_verified_with_a_certificate(emulator_factory, jwt_keypair):
    server = emulator_factory(jwt_public_key=jwt_keypair.certificate)
    assert jwt_request(server, make_assertion(server, jwt_keypair)).status_code == 200


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({"aud": "https://evil.example.com"}, "invalid_grant", "audience is invalid"),
        ({"exp": int(time.time()) - 10}, "invalid_grant", "invalid assertion"),
        ({"exp": int(time.time()) + 3600}, "invalid_grant", "invalid assertion"),
        ({"exp": None}, "invalid_grant", "invalid assertion"),
        ({"iss": "someone-else"}, "invalid_client_id", "client identifier invalid"),
        ({"sub": "stranger@example.com"}, "invalid_grant", "user hasn't approved this consumer"),
    ],
)
def test_jwt_claim_errors(emulator, jwt_keypair, claims, error, description):
    response = jwt_request(emulator, make_assertion(emulator, jwt_keypair, **claims))
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


def test_jwt_with_a_foreign_key_or_algorithm_is_refused(emulator, tmp_path):
    from airflow_provider_sfbulk.emulator.testing import generate_jwt_keypair

    other_private, _, _ = generate_jwt_keypair(tmp_path / "other")
    claims = {"iss": emulator.config.client_id, "sub": emulator.config.username,
              "aud": "https://login.salesforce.com", "exp": int(time.time()) + 60}
    foreign = jwt.encode(claims, other_private.read_bytes(), algorithm="RS256")
    assert jwt_request(emulator, foreign).json() == {"error": "invalid_grant",
                                                     "error_description": "invalid assertion"}
    hs256 = jwt.encode(claims, "a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256")
    assert jwt_request(emulator, hs256).status_code == 400
    assert jwt_request(emulator, "not-a-jwt").json()["error"] == "invalid_grant"


def test_refresh_token_grant(emulator):
    config = emulator.config
    refresh = emulator.mint_refresh_token()
    response = requests.post(token_url(emulator), data={
        "grant_type": "refresh_token", "refresh_token": refresh,
        "client_id": config.client_id, "client_secret": config.client_secret}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert_token_shape(emulator, body)
    assert "refresh_token" not in body  # no rotation: the same refresh token stays valid
    again = requests.post(token_url(emulator), data={
        "grant_type": "refresh_token", "refresh_token": refresh,
        "client_id": config.client_id, "client_secret": config.client_secret}, timeout=10)
    assert again.status_code == 200
    bad = requests.post(token_url(emulator), data={
        "grant_type": "refresh_token", "refresh_token": "5Aep861bogus",
        "client_id": config.client_id, "client_secret": config.client_secret}, timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


def test_refresh_token_via_admin_endpoint(emulator):
    minted = requests.post(f"{emulator.base_url}/__emulator/refresh-token", timeout=10)
    assert minted.status_code == 200
    config = emulator.config
    response = requests.post(token_url(emulator), data={
        "grant_type": "refresh_token", "refresh_token": minted.json()["refresh_token"],
        "client_id": config.client_id, "client_secret": config.client_secret}, timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "OAuth"])
def test_both_authorization_schemes(emulator, scheme):
    token = emulator.get_token()
    response = requests.get(f"{emulator.base_url}/services/data/v60.0/limits",
                            headers={"Authorization": f"{scheme} {token}"}, timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic abc", "Bearer "])
def test_missing_or_unknown_token_gets_the_exact_401_body(emulator, header):
    headers = {"Authorization": header} if header else {}
    response = requests.get(f"{emulator.base_url}/services/data/v60.0/jobs/ingest", headers=headers,
                            timeout=10)
    assert response.status_code == 401
    assert response.content == INVALID_SESSION


def test_expire_tokens_makes_every_call_401(emulator):
    api = ApiSession(emulator)
    assert api.get("/limits").status_code == 200
    assert emulator.expire_tokens() >= 1
    response = api.get("/limits")
    assert response.status_code == 401
    assert response.content == INVALID_SESSION
    fresh = ApiSession(emulator)  # a new login works again
    assert fresh.get("/limits").status_code == 200


def test_expire_tokens_admin_endpoint(emulator):
    api = ApiSession(emulator)
    assert requests.post(f"{emulator.base_url}/__emulator/expire-tokens", timeout=10).json()["expired"] >= 1
    assert api.get("/jobs/ingest").status_code == 401


def test_token_ttl_expires_tokens(emulator_factory):
    server = emulator_factory(token_ttl=0.3)
    api = ApiSession(server)
    deadline = time.monotonic() + 10
    status = api.get("/limits").status_code
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        status = api.get("/limits").status_code
    assert status == 401


def test_tokens_survive_a_restart(emulator_factory, tmp_path):
    data_dir = tmp_path / "durable"
    first = emulator_factory(data_dir=data_dir)
    token = first.get_token()
    first.stop()
    second = emulator_factory(data_dir=data_dir)
    response = requests.get(f"{second.base_url}/services/data/v60.0/limits",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200


def test_identity_url_answers(emulator):
    body = requests.post(token_url(emulator), data=password_params(emulator), timeout=10).json()
    response = requests.get(body["id"], headers={"Authorization": f"Bearer {body['access_token']}"},
                            timeout=10)
    assert response.status_code == 200
    assert response.json()["user_id"] == identity.USER_ID
    assert response.json()["organization_id"] == identity.ORG_ID


def test_token_endpoint_only_takes_post(emulator):
    response = requests.get(token_url(emulator), timeout=10)
    assert response.status_code == 405
