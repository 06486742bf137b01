"""Connection parsing and validation (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_sfbulk.exceptions import SalesforceBulkConfigError
from airflow_provider_sfbulk.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_sfbulk.protocol.connection import (
    DEFAULT_API_VERSION,
    DEFAULT_TIMEOUT,
    AuthType,
    is_loopback_host,
    normalize_api_version,
    normalize_url,
    parse_connection,
)

FULL = {
    "client_id": "cid",
    "client_secret": "csecret",
    "security_token": "tok",
    "refresh_token": "rtok",
    "access_token": "atok",
}


def parse(extra: dict | str | None, host: str | None = "login.salesforce.com", login: str | None = "u@x",
          password: str | None = "pw", **kwargs):
    return parse_connection("sf", host=host, login=login, password=password, extra=extra, **kwargs)


@pytest.mark.parametrize(
    ("auth_type", "extra", "host", "login", "password", "missing"),
    [
        ("password", {"client_id": "c", "client_secret": "s"}, "h", "u", None, "password"),
        ("password", {"client_id": "c", "client_secret": "s"}, "h", None, "p", "login"),
        ("password", {"client_secret": "s"}, "h", "u", "p", "client_id"),
        ("password", {"client_id": "c"}, "h", "u", "p", "client_secret"),
        ("password", {"client_id": "c", "client_secret": "s"}, None, "u", "p", "host"),
        ("client_credentials", {"client_id": "c"}, "h", None, None, "client_secret"),
        ("jwt_bearer", {"client_id": "c"}, "h", "u", None, "private_key"),
        ("jwt_bearer", {"private_key": "PEM"}, "h", "u", None, "client_id"),
        ("jwt_bearer", {"client_id": "c", "private_key": "PEM"}, "h", None, None, "login"),
        ("refresh_token", {"client_id": "c"}, "h", None, None, "refresh_token"),
        ("access_token", {"instance_url": "https://x.my.salesforce.com"}, None, None, None, "access_token"),
        ("access_token", {"access_token": "t"}, None, None, None, "instance_url"),
    ],
)
def test_missing_field_is_named_before_any_call(auth_type, extra, host, login, password, missing):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"auth_type": auth_type, **extra}, host=host, login=login, password=password)
    assert err.value.field == missing
    assert missing.split("_")[0] in str(err.value)


def test_password_connection_defaults():
    config = parse({"client_id": "c", "client_secret": "s"})
    assert config.auth_type is AuthType.PASSWORD
    assert config.login_url == "https://login.salesforce.com"
    assert config.api_version == DEFAULT_API_VERSION
    assert float(config.api_version) >= 58.0
    assert config.timeout == DEFAULT_TIMEOUT
    assert config.ca_bundle is None


def test_host_keeps_explicit_scheme_and_port_and_drops_trailing_slash():
    config = parse({"client_id": "c", "client_secret": "s"}, host="http://127.0.0.1:8765/")
    assert config.login_url == "http://127.0.0.1:8765"
    config = parse({"client_id": "c", "client_secret": "s"}, host="127.0.0.1", port=9000)
    assert config.login_url == "https://127.0.0.1:9000"


def test_bad_host_scheme_is_a_config_error():
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"client_id": "c", "client_secret": "s"}, host="ftp://example.com")
    assert err.value.field == "host"


@pytest.mark.parametrize(
    ("raw", "expected"), [("62.0", "62.0"), ("v60.0", "60.0"), (61, "61.0"), ("58", "58.0")]
)
def test_api_version_normalised(raw, expected):
    assert normalize_api_version(raw) == expected


@pytest.mark.parametrize("raw", ["57.0", "abc", "v41.0"])
def test_api_version_too_old_or_bad(raw):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"client_id": "c", "client_secret": "s", "api_version": raw})
    assert err.value.field == "api_version"


def test_unknown_auth_type():
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"auth_type": "kerberos"})
    assert err.value.field == "auth_type"
    assert "client_credentials" in str(err.value)


@pytest.mark.parametrize("timeout", [0, -3, "soon"])
def test_bad_timeout(timeout):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"client_id": "c", "client_secret": "s", "timeout": timeout})
    assert err.value.field == "timeout"


def test_missing_ca_bundle_file(tmp_path: Path):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"client_id": "c", "client_secret": "s", "ca_bundle": str(tmp_path / "nope.pem")})
    assert err.value.field == "ca_bundle"
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert parse({"client_id": "c", "client_secret": "s", "ca_bundle": str(bundle)}).ca_bundle == str(bundle)


def test_missing_private_key_file(tmp_path: Path):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({"auth_type": "jwt_bearer", "client_id": "c", "private_key_file": str(tmp_path / "k.pem")})
    assert err.value.field == "private_key_file"


def test_inline_pem_with_escaped_newlines_is_restored():
    config = parse(
        {"auth_type": "jwt_bearer", "client_id": "c", "private_key": "-----BEGIN-----\\nabc\\n-----END-----"}
    )
    assert config.load_private_key() == "-----BEGIN-----\nabc\n-----END-----"


def test_access_token_falls_back_to_host_as_instance_url():
    config = parse(
        {"auth_type": "access_token", "access_token": "t"}, host="acme.my.salesforce.com", login=None
    )
    assert config.instance_url == "https://acme.my.salesforce.com"


def test_extra_as_json_string_and_airflow2_prefixed_keys():
    extra = json.dumps(
        {"extra__salesforce_bulk__client_id": "c", "extra__salesforce_bulk__client_secret": "s"}
    )
    config = parse(extra)
    assert (config.client_id, config.client_secret) == ("c", "s")
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse("{not json")
    assert err.value.field == "extra"


def test_repr_hides_secrets_and_secrets_lists_them():
    config = parse({"auth_type": "password", **FULL})
    text = repr(config)
    for secret in ("pw", "csecret", "tok", "rtok", "atok"):
        assert f"'{secret}'" not in text
    assert set(config.secrets) == {"pw", "csecret", "tok", "rtok", "atok"}


def test_fingerprint_changes_with_any_field():
    a = parse({"client_id": "c", "client_secret": "s"})
    b = parse({"client_id": "c", "client_secret": "s2"})
    c = parse({"client_id": "c", "client_secret": "s"})
    assert a.fingerprint == c.fingerprint
    assert a.fingerprint != b.fingerprint


def test_connection_form_agrees_with_the_parser():
    """The form in get_provider_info offers exactly what parse_connection reads, with its defaults."""
    parsed_extras = {"auth_type", "client_id", "client_secret", "security_token", "private_key",
                     "private_key_file", "refresh_token", "access_token", "instance_url", "api_version",
                     "ca_bundle", "timeout", "verify_tls"}
    assert set(CONN_FIELDS) == parsed_extras
    assert CONN_FIELDS["auth_type"]["schema"]["enum"] == [a.value for a in AuthType]
    assert CONN_FIELDS["api_version"]["schema"]["default"] == DEFAULT_API_VERSION
    assert float(CONN_FIELDS["timeout"]["schema"]["default"]) == DEFAULT_TIMEOUT
    assert {"client_secret", "private_key", "refresh_token", "access_token", "security_token"} == {
        n for n, s in CONN_FIELDS.items() if s["schema"].get("format") == "password"
    }
    assert UI_FIELD_BEHAVIOUR["relabeling"]["host"] == "Login URL or My Domain"
    assert UI_FIELD_BEHAVIOUR["relabeling"]["login"] == "Username"


# --- TLS and plain http ---------------------------------------------------------------------------------

PASSWORD_EXTRA = {"client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8765",
        "http://127.8.9.10",
        "http://localhost:9000",
        "http://LOCALHOST",
        "http://[::1]:8443",
        "https://acme.my.salesforce.com",
        "acme.my.salesforce.com",  # https is added
    ],
)
def test_https_or_loopback_http_hosts_are_accepted(host):
    assert parse(PASSWORD_EXTRA, host=host).login_url == normalize_url(host)


@pytest.mark.parametrize(
    "host",
    [
        "http://example.com",
        "http://login.salesforce.com",
        "http://10.0.0.5:8080",
        "http://128.0.0.1",
        "http://[::2]",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_host_is_refused_unless_loopback(host):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse(PASSWORD_EXTRA, host=host)
    assert err.value.field == "host"
    assert "plain http://" in str(err.value)
    assert "host:" in str(err.value)
    assert "loopback" in str(err.value)


def test_plain_http_instance_url_is_refused_unless_loopback():
    extra = {"auth_type": "access_token", "access_token": "00D!tok", "instance_url": "http://acme.example.com"}
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse(extra, host=None)
    assert err.value.field == "instance_url"
    assert "instance_url" in str(err.value)
    assert "00D!tok" not in str(err.value)
    extra["instance_url"] = "http://127.0.0.1:9999"
    assert parse(extra, host=None).instance_url == "http://127.0.0.1:9999"
    with pytest.raises(SalesforceBulkConfigError) as err:  # the host stands in for a missing instance_url
        parse({"auth_type": "access_token", "access_token": "00D!tok"}, host="http://acme.example.com")
    assert err.value.field == "host"


def test_http_with_a_port_from_the_connection_is_checked_too():
    with pytest.raises(SalesforceBulkConfigError):
        parse(PASSWORD_EXTRA, host="http://example.com", port=8080)
    assert parse(PASSWORD_EXTRA, host="http://127.0.0.1", port=8080).login_url == "http://127.0.0.1:8080"


def test_url_errors_never_show_user_info_or_query():
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse(PASSWORD_EXTRA, host="http://user:hunter2secret@example.com/path?token=abc123")
    assert "hunter2secret" not in str(err.value)
    assert "abc123" not in str(err.value)
    assert "'http://example.com'" in str(err.value)
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse(PASSWORD_EXTRA, host="ftp://user:hunter2secret@example.com")
    assert "hunter2secret" not in str(err.value)


@pytest.mark.parametrize("name", ["verify", "verify_ssl", "tls_verify", "extra__salesforce_bulk__verify"])
@pytest.mark.parametrize("value", [False, "false", "False", "0", 0, "no", "off"])
def test_turning_tls_verification_off_is_refused(name, value):
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({**PASSWORD_EXTRA, name: value})
    assert err.value.field == name.removeprefix("extra__salesforce_bulk__")
    assert "say so with 'verify_tls': false" in str(err.value)
    assert "ca_bundle" in str(err.value)


@pytest.mark.parametrize("value", [True, "true", "1", 1, "yes"])
def test_verify_on_is_accepted(value):
    assert parse({**PASSWORD_EXTRA, "verify": value}).login_url == "https://login.salesforce.com"


def test_a_ca_path_in_verify_points_to_ca_bundle():
    with pytest.raises(SalesforceBulkConfigError) as err:
        parse({**PASSWORD_EXTRA, "verify": "/etc/ssl/corp.pem"})
    assert err.value.field == "verify"
    assert "belongs in 'ca_bundle'" in str(err.value)


@pytest.mark.parametrize(
    ("hostname", "loopback"),
    [("127.0.0.1", True), ("127.255.255.254", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("localhost.", True), ("128.0.0.1", False), ("0.0.0.0", False), ("example.com", False), (None, False),
     ("", False), ("::", False)],
)
def test_is_loopback_host(hostname, loopback):
    assert is_loopback_host(hostname) is loopback
