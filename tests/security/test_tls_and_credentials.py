"""TLS and plain-http rules, and refused credentials, against the emulator (both hooks).

- TLS verification is on: an HTTPS emulator whose CA is not trusted is refused; with ``ca_bundle`` it works.
- Plain ``http://`` works on a loopback address (the emulator on 127.0.0.1) and is refused, before any
  request, for any other host (``host`` or ``instance_url``), and in a token response's ``instance_url``.
- A wrong password, security token, client id or client secret, a revoked or unknown refresh token and a
  JWT signed with the wrong key each raise ``SalesforceBulkAuthError`` naming the connection, the flow and
  Salesforce's ``error``/``error_description`` with what to check, and never the secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import EmulatorServer, connection_dict, generate_jwt_keypair
from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkConfigError,
    SalesforceBulkError,
    SalesforceBulkProtocolError,
)
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook, SalesforceBulkHook
from airflow_provider_sfbulk.protocol.auth import TOKEN_CACHE, parse_token_response, token_request_error
from airflow_provider_sfbulk.protocol.connection import parse_connection

pytestmark = pytest.mark.security

PASSWORD = "Pw-sfbulkLEAK/9+q=x&z!password"
SECURITY_TOKEN = "STsfbulkLEAKsecuritytoken77"
CLIENT_SECRET = "CS-sfbulkLEAK+client/secret=42"
CONN_ID = "sfbulk_security"


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> None:
    TOKEN_CACHE.clear()


@pytest.fixture
def secret_emulator(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A plain-HTTP emulator on 127.0.0.1 with distinctive credentials."""
    return emulator_factory(password=PASSWORD, security_token=SECURITY_TOKEN, client_secret=CLIENT_SECRET)


@pytest.fixture
def use_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """Store a connection dict as ``AIRFLOW_CONN_SFBULK_SECURITY``."""

    def use(conn: dict[str, Any]) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))

    return use


@pytest.fixture
def no_request(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every request either hook tries to send."""
    sent: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[:3]))
        raise AssertionError("a request was sent")

    monkeypatch.setattr(requests.Session, "request", refuse)
    import aiohttp

    monkeypatch.setattr(aiohttp.ClientSession, "_request", refuse)
    return sent


def _sync_call(conn_id: str = CONN_ID) -> Any:
    with SalesforceBulkHook(salesforce_conn_id=conn_id) as hook:
        return hook.get_limits()


def _async_call(conn_id: str = CONN_ID) -> Any:
    async def call() -> Any:
        async with SalesforceBulkAsyncHook(salesforce_conn_id=conn_id) as hook:
            return await hook.get_limits()

    return asyncio.run(call())


CALLS = {"sync": _sync_call, "async": _async_call}


# --- TLS ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CALLS)
def test_tls_is_verified_by_default(kind: str, emulator_tls: EmulatorServer, use_connection) -> None:
    conn = connection_dict(emulator_tls, "client_credentials")
    del conn["extra"]["ca_bundle"]  # the emulator's CA is trusted by no default store
    use_connection(conn)
    with pytest.raises(SalesforceBulkError) as err:
        CALLS[kind]()
    assert "certificate" in str(err.value).lower() or "TLS" in str(err.value)
    assert CLIENT_SECRET not in str(err.value)


@pytest.mark.parametrize("kind", CALLS)
def test_tls_with_the_ca_bundle_works(kind: str, emulator_tls: EmulatorServer, use_connection) -> None:
    use_connection(connection_dict(emulator_tls, "client_credentials"))
    assert CALLS[kind]().remaining("DailyApiRequests") is not None


@pytest.mark.parametrize("kind", CALLS)
def test_other_spellings_of_verify_are_refused_before_any_request(
    kind: str, emulator_tls: EmulatorServer, use_connection, no_request: list[str]
) -> None:
    use_connection(connection_dict(emulator_tls, "client_credentials", verify=False))
    with pytest.raises(SalesforceBulkConfigError, match="'verify_tls': false") as err:
        CALLS[kind]()
    assert err.value.field == "verify"
    assert no_request == []


@pytest.mark.parametrize("kind", CALLS)
def test_verify_tls_false_turns_the_check_off_explicitly_and_says_so(
    kind: str, emulator_tls: EmulatorServer, use_connection, capsys
) -> None:
    conn = connection_dict(emulator_tls, "client_credentials", verify_tls="false")
    del conn["extra"]["ca_bundle"]  # without the check, the emulator's unknown CA does not matter
    use_connection(conn)
    assert CALLS[kind]().remaining("DailyApiRequests") is not None
    captured = capsys.readouterr()
    assert "turns TLS verification off (verify_tls=false)" in captured.out + captured.err


def test_verify_tls_takes_only_true_or_false(emulator_tls: EmulatorServer, use_connection) -> None:
    use_connection(connection_dict(emulator_tls, "client_credentials", verify_tls="/etc/ssl/corp.pem"))
    with pytest.raises(SalesforceBulkConfigError, match="ca_bundle") as err:
        CALLS["sync"]()
    assert err.value.field == "verify_tls"


# --- plain http ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CALLS)
def test_plain_http_on_loopback_works(kind: str, secret_emulator: EmulatorServer, use_connection) -> None:
    assert secret_emulator.base_url.startswith("http://127.0.0.1:")
    use_connection(connection_dict(secret_emulator, "password"))
    assert CALLS[kind]().remaining("DailyApiRequests") is not None


@pytest.mark.parametrize("kind", CALLS)
@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("host", {"host": "http://example.com"}),
        ("host", {"host": "http://login.salesforce.com:80"}),
        ("instance_url", {"extra": {"auth_type": "access_token", "access_token": "00D!AQsecret",
                                    "instance_url": "http://acme.example.com"}}),
    ],
)
def test_plain_http_elsewhere_is_refused_before_any_request(
    kind: str, field: str, overrides: dict[str, Any], use_connection, no_request: list[str]
) -> None:
    conn = connection_dict("http://127.0.0.1:1", "password")
    conn.update(overrides)
    use_connection(conn)
    with pytest.raises(SalesforceBulkConfigError) as err:
        CALLS[kind]()
    assert err.value.field == field
    assert f"{field}:" in str(err.value)
    assert "plain http://" in str(err.value)
    assert "00D!AQsecret" not in str(err.value)
    assert no_request == []


@pytest.mark.parametrize(
    ("instance_url", "accepted"),
    [("https://acme.my.salesforce.com/", True), ("http://127.0.0.1:8080", True), ("http://[::1]", True),
     ("http://acme.my.salesforce.com", False), ("http://evil.example", False)],
)
def test_token_response_instance_url_must_be_https_unless_loopback(instance_url: str, accepted: bool) -> None:
    document = {"access_token": "00D!AQtoken-secret", "instance_url": instance_url}
    if accepted:
        assert parse_token_response(document).instance_url == instance_url.rstrip("/")
        return
    with pytest.raises(SalesforceBulkProtocolError) as err:
        parse_token_response(document)
    assert "plain http://" in str(err.value)
    assert "00D!AQtoken-secret" not in str(err.value)


# --- refused credentials ------------------------------------------------------------------------------


def _revoke(server: EmulatorServer, token: str) -> None:
    store = server.app.store
    record = store.get_token(token)
    assert record is not None
    store.save_token(dataclasses.replace(record, revoked=True))


def _wrong_jwt_key(tmp_path: Path) -> str:
    private, _public, _cert = generate_jwt_keypair(tmp_path / "other-key")
    return private.read_text()


def _case(server: EmulatorServer, case: str, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """The connection of one refusal case, and the secrets it holds (none may show in the error)."""
    if case == "wrong password":
        conn = connection_dict(server, "password")
        conn["password"] = "Wrong-sfbulkLEAK-password"
        return conn, [conn["password"], SECURITY_TOKEN, CLIENT_SECRET]
    if case == "wrong security token":
        conn = connection_dict(server, "password", security_token="WRONGsfbulkLEAKtoken")
        return conn, [PASSWORD, "WRONGsfbulkLEAKtoken", CLIENT_SECRET]
    if case == "wrong client secret":
        conn = connection_dict(server, "client_credentials", client_secret="Wrong-sfbulkLEAK-secret")
        return conn, ["Wrong-sfbulkLEAK-secret"]
    if case == "wrong client id":
        return connection_dict(server, "client_credentials", client_id="no-such-app"), [CLIENT_SECRET]
    if case in ("revoked refresh token", "unknown refresh token"):
        conn = connection_dict(server, "refresh_token")
        if case == "revoked refresh token":
            _revoke(server, conn["extra"]["refresh_token"])
        else:
            conn["extra"]["refresh_token"] = "5Aep861sfbulkLEAKneverIssued"
        return conn, [conn["extra"]["refresh_token"], CLIENT_SECRET]
    assert case == "jwt signed with the wrong key"
    conn = connection_dict(server, "jwt_bearer", private_key_file=Path("unused"))
    del conn["extra"]["private_key_file"]
    conn["extra"]["private_key"] = _wrong_jwt_key(tmp_path)
    return conn, [line for line in conn["extra"]["private_key"].splitlines()[1:-1] if len(line) > 40]


REFUSALS = {
    # case: (OAuth error, Salesforce's description, words of the hint)
    "wrong password": ("invalid_grant", "authentication failure", "password or security token"),
    "wrong security token": ("invalid_grant", "authentication failure", "security_token"),
    "wrong client secret": ("invalid_client", "invalid client credentials", "client_secret"),
    "wrong client id": ("invalid_client_id", "client identifier invalid", "client_id"),
    "revoked refresh token": ("invalid_grant", "expired access/refresh token", "expired or revoked"),
    "unknown refresh token": ("invalid_grant", "expired access/refresh token", "expired or revoked"),
    "jwt signed with the wrong key": ("invalid_grant", "invalid assertion", "certificate uploaded"),
}


@pytest.mark.parametrize("kind", CALLS)
@pytest.mark.parametrize("case", REFUSALS)
def test_refused_credentials_name_the_problem(
    kind: str, case: str, secret_emulator: EmulatorServer, use_connection, tmp_path: Path
) -> None:
    conn, secrets = _case(secret_emulator, case, tmp_path)
    use_connection(conn)
    with pytest.raises(SalesforceBulkAuthError) as err:
        CALLS[kind]()
    error_code, description, hint = REFUSALS[case]
    text = str(err.value)
    assert err.value.error_code == error_code
    assert err.value.status == 400
    assert f"HTTP 400 {error_code}: connection {CONN_ID!r} (auth_type {conn['extra']['auth_type']})" in text
    assert description in text
    assert hint in text
    for secret in secrets:
        assert secret not in text, f"{case}: the error shows a secret"
        assert secret not in repr(err.value.__dict__)


def test_refused_connection_test_says_why(secret_emulator: EmulatorServer, use_connection) -> None:
    conn = connection_dict(secret_emulator, "password")
    conn["password"] = "Wrong-sfbulkLEAK-password"
    use_connection(conn)
    ok, message = SalesforceBulkHook(salesforce_conn_id=CONN_ID).test_connection()
    assert ok is False
    assert "invalid_grant" in message
    assert "authentication failure" in message
    assert "Wrong-sfbulkLEAK-password" not in message
    assert SECURITY_TOKEN not in message


def test_a_secret_echoed_by_the_server_is_redacted() -> None:
    config = parse_connection(
        "sf", host="https://acme.my.salesforce.com", login="u", password=PASSWORD,
        extra={"client_id": "c", "client_secret": CLIENT_SECRET, "security_token": SECURITY_TOKEN},
    )
    description = f"bad password {PASSWORD}{SECURITY_TOKEN}"
    body = json.dumps({"error": "invalid_grant", "error_description": description})
    error = token_request_error(config, 400, body.encode())
    assert isinstance(error, SalesforceBulkAuthError)
    assert PASSWORD not in str(error)
    assert SECURITY_TOKEN not in str(error)
    assert "bad password ******" in str(error)


def test_server_errors_of_the_token_endpoint_stay_retryable() -> None:
    extra = {"auth_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    config = parse_connection("sf", host="acme.my.salesforce.com", login=None, password=None, extra=extra)
    error = token_request_error(config, 503, b"Service Unavailable")
    assert error.retryable
    assert not isinstance(error, SalesforceBulkAuthError)
