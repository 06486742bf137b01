"""The ``salesforce_bulk`` connection: its fields, validation, and the UI form description.

Connection layout (fixed; the emulator fixtures use it):

- ``host``: the login URL: ``https://login.salesforce.com``, ``https://test.salesforce.com``, a My Domain
  such as ``https://acme.my.salesforce.com``, or the emulator's base URL. The scheme defaults to https.
- ``login``: the Salesforce username; ``password``: the user's password (without the security token).
- ``extra`` (JSON): ``auth_type`` (one of :class:`AuthType`, default ``password``), ``client_id``,
  ``client_secret``, ``security_token``, ``private_key`` (inline PEM) or ``private_key_file`` (path),
  ``refresh_token``, ``access_token``, ``instance_url`` (for ``access_token``), ``api_version``
  (default :data:`DEFAULT_API_VERSION`, at least 58.0), ``ca_bundle`` (path to a PEM trust store that
  replaces the system one), ``timeout`` (seconds per connect/read, default :data:`DEFAULT_TIMEOUT`).

Transport rules (checked here, before any request):

- TLS verification is on unless the connection turns it off explicitly with ``"verify_tls": false`` (a
  warning is logged each time a hook of that connection is made). ``ca_bundle`` replaces the trust
  store, which is the right answer for a TLS-inspecting proxy or a private CA. The spellings other
  libraries use (``verify``, ``verify_ssl``, ``tls_verify``) are refused with a pointer to these two, so
  that nobody believes verification is off (or on) when it is not.
- ``host`` and ``instance_url`` must be ``https://``; plain ``http://`` is accepted only for a loopback
  address (``127.0.0.0/8``, ``::1``, ``localhost``), where nothing crosses a network (the emulator).

The connection form itself (extra fields, relabelled standard fields) is declared as plain data in
:mod:`airflow_provider_sfbulk.get_provider_info`. This module is pure: it never opens a socket.
:func:`parse_connection` checks that the fields the chosen auth type needs are present and raises
:class:`SalesforceBulkConfigError` naming the first missing field, before any HTTP call is made.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_sfbulk.exceptions import SalesforceBulkConfigError

CONN_TYPE = "salesforce_bulk"
DEFAULT_API_VERSION = "62.0"
MIN_API_VERSION = 58.0
#: Seconds per connect and per read; the connection form (``get_provider_info``) shows the same default.
DEFAULT_TIMEOUT = 120.0
DEFAULT_LOGIN_URL = "https://login.salesforce.com"


class AuthType(str, Enum):
    """How the hook obtains its access token."""

    PASSWORD = "password"
    CLIENT_CREDENTIALS = "client_credentials"
    JWT_BEARER = "jwt_bearer"
    REFRESH_TOKEN = "refresh_token"
    ACCESS_TOKEN = "access_token"


@dataclass(frozen=True)
class ConnectionConfig:
    """A validated ``salesforce_bulk`` connection. ``repr`` never shows secrets."""

    conn_id: str
    auth_type: AuthType
    login_url: str
    api_version: str
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    private_key_file: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    instance_url: str | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True

    @property
    def secrets(self) -> list[str]:
        """Every secret value of the connection, for registration with the secrets masker."""
        return [
            value
            for value in (
                self.password,
                self.security_token,
                self.client_secret,
                self.private_key,
                self.refresh_token,
                self.access_token,
            )
            if value
        ]

    @property
    def fingerprint(self) -> str:
        """A digest of every field: a token cached for one fingerprint is never used for another."""
        digest = hashlib.sha256()
        for item in fields(self):
            value = getattr(self, item.name)
            digest.update(f"{item.name}={value!s}\x00".encode())
        return digest.hexdigest()

    def load_private_key(self) -> str:
        """Return the PEM private key, reading ``private_key_file`` when no inline key is set."""
        if self.private_key:
            return self.private_key
        if not self.private_key_file:
            raise SalesforceBulkConfigError(
                f"connection {self.conn_id!r} needs 'private_key' or 'private_key_file' for jwt_bearer",
                field="private_key",
            )
        try:
            with open(self.private_key_file, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise SalesforceBulkConfigError(
                f"connection {self.conn_id!r}: cannot read private_key_file {self.private_key_file!r}: "
                f"{exc.strerror}",
                field="private_key_file",
            ) from None


#: Which fields each auth type needs. Tuples are alternatives: one of them must be set.
REQUIRED_FIELDS: dict[AuthType, tuple[str | tuple[str, ...], ...]] = {
    AuthType.PASSWORD: ("host", "login", "password", "client_id", "client_secret"),
    AuthType.CLIENT_CREDENTIALS: ("host", "client_id", "client_secret"),
    AuthType.JWT_BEARER: ("host", "login", "client_id", ("private_key", "private_key_file")),
    AuthType.REFRESH_TOKEN: ("host", "client_id", "refresh_token"),
    AuthType.ACCESS_TOKEN: ("access_token", ("instance_url", "host")),
}

_FIELD_LABELS = {"host": "host (login URL)", "login": "login (username)", "password": "password"}

#: Extras that would turn TLS verification off in other clients; refused when they say so.
_VERIFY_EXTRAS = ("verify", "verify_ssl", "tls_verify")
_FALSE_WORDS = frozenset({"false", "0", "no", "off", "none", ""})


def _extra_value(extra: Mapping[str, Any], name: str) -> Any:
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__{CONN_TYPE}__{name}")  # Airflow 2 form widgets prefix extras
    return None if value == "" else value


def normalize_url(value: str) -> str:
    """Add ``https://`` when the scheme is missing and drop trailing slashes."""
    value = value.strip()
    if "://" not in value:
        value = f"https://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {display_url(value)!r}")
    return value.rstrip("/")


def display_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what an error message may show (never user info or a query)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}" if parts.scheme else netloc


def is_loopback_host(hostname: str | None) -> bool:
    """True for ``localhost`` and the loopback addresses ``127.0.0.0/8`` and ``::1``."""
    if not hostname:
        return False
    name = hostname.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_secure_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is ``https://``, or ``http://`` to a loopback address."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"{display_url(url)!r} uses plain http://, which would send the credentials and the data "
            "unencrypted; use https:// (plain http:// is accepted only for a loopback address: "
            "127.0.0.0/8, ::1, localhost)"
        )


def normalize_api_version(value: Any) -> str:
    """Return ``"NN.0"`` for ``62``, ``"62"``, ``"v62.0"`` or ``62.0``; reject versions below 58.0."""
    text = str(value).strip().lstrip("vV")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"api_version {value!r} is not a number such as '{DEFAULT_API_VERSION}'") from None
    if number < MIN_API_VERSION:
        raise ValueError(f"api_version {text} is older than {MIN_API_VERSION} (resultPages needs 58.0)")
    return f"{number:.1f}"


def _pem(value: str) -> str:
    # A PEM pasted into a one-line JSON value often arrives with literal "\n" sequences.
    if "\n" not in value and "\\n" in value:
        return value.replace("\\n", "\n")
    return value


#: The fields read from ``extra`` (besides ``auth_type``).
_EXTRA_FIELDS = (
    "client_id",
    "client_secret",
    "security_token",
    "private_key",
    "private_key_file",
    "refresh_token",
    "access_token",
    "instance_url",
    "api_version",
    "ca_bundle",
    "timeout",
)


def parse_connection(
    conn_id: str,
    *,
    host: str | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any] | str | None,
    schema: str | None = None,
    port: int | None = None,
) -> ConnectionConfig:
    """Validate raw Airflow connection fields and return a :class:`ConnectionConfig`.

    :raises SalesforceBulkConfigError: a field the auth type needs is missing, or a value is invalid;
        ``.field`` names it.
    """
    extra_values = _extra_dict(conn_id, extra)
    auth_type = _auth_type(conn_id, extra_values)
    values: dict[str, Any] = {
        "host": host or None,
        "login": login or None,
        "password": password or None,
    }
    for name in _EXTRA_FIELDS:
        values[name] = _extra_value(extra_values, name)
    _check_required(conn_id, auth_type, values)
    _check_verify(conn_id, extra_values)
    verify_tls = _verify_tls(conn_id, extra_values)

    login_url = DEFAULT_LOGIN_URL
    if values["host"]:
        login_url = _login_url(conn_id, str(values["host"]), port)
    instance_url = None
    if values["instance_url"]:
        instance_url = _checked_url(conn_id, "instance_url", str(values["instance_url"]))
    elif auth_type is AuthType.ACCESS_TOKEN:
        instance_url = login_url
    api_version = _api_version(conn_id, values["api_version"])
    timeout = _timeout(conn_id, values["timeout"])
    _check_files(conn_id, auth_type, values)

    return ConnectionConfig(
        conn_id=conn_id,
        auth_type=auth_type,
        login_url=login_url,
        api_version=api_version,
        timeout=timeout,
        username=values["login"],
        password=values["password"],
        security_token=values["security_token"],
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        private_key=_pem(values["private_key"]) if values["private_key"] else None,
        private_key_file=values["private_key_file"],
        refresh_token=values["refresh_token"],
        access_token=values["access_token"],
        instance_url=instance_url,
        ca_bundle=values["ca_bundle"],
        verify_tls=verify_tls,
    )


def _extra_dict(conn_id: str, extra: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The ``extra`` field as a dict, from JSON text or a mapping."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise SalesforceBulkConfigError(
                f"connection {conn_id!r}: extra is not valid JSON ({exc.msg})", field="extra"
            ) from None
    extra = dict(extra or {})
    if not isinstance(extra, dict):
        raise SalesforceBulkConfigError(f"connection {conn_id!r}: extra must be a JSON object", field="extra")
    return extra


def _auth_type(conn_id: str, extra: Mapping[str, Any]) -> AuthType:
    """The connection's auth flow (``password`` when ``extra`` names none)."""
    raw_auth = _extra_value(extra, "auth_type") or AuthType.PASSWORD.value
    try:
        return AuthType(str(raw_auth).strip().lower())
    except ValueError:
        allowed = ", ".join(a.value for a in AuthType)
        raise SalesforceBulkConfigError(
            f"connection {conn_id!r}: auth_type {raw_auth!r} is not one of {allowed}", field="auth_type"
        ) from None


def _check_required(conn_id: str, auth_type: AuthType, values: Mapping[str, Any]) -> None:
    """Raise naming the first field the auth flow needs (see :data:`REQUIRED_FIELDS`) that is not set."""
    for requirement in REQUIRED_FIELDS[auth_type]:
        options = requirement if isinstance(requirement, tuple) else (requirement,)
        if not any(values.get(option) for option in options):
            names = " or ".join(repr(_FIELD_LABELS.get(option, option)) for option in options)
            raise SalesforceBulkConfigError(
                f"connection {conn_id!r} (auth_type {auth_type.value}) is missing {names}",
                field=options[0],
            )


def _login_url(conn_id: str, host: str, port: int | None) -> str:
    """The login URL from ``host``, with the connection's ``port`` when the host names none."""
    if port and ":" not in urlsplit(normalize_url_lenient(host)).netloc:
        host = _with_port(host, port)
    return _checked_url(conn_id, "host", host)


def _api_version(conn_id: str, value: Any) -> str:
    """The normalized ``api_version`` (:data:`DEFAULT_API_VERSION` when not set)."""
    try:
        return normalize_api_version(value or DEFAULT_API_VERSION)
    except ValueError as exc:
        raise SalesforceBulkConfigError(f"connection {conn_id!r}: {exc}", field="api_version") from None


def _timeout(conn_id: str, value: Any) -> float:
    """The ``timeout`` in seconds (:data:`DEFAULT_TIMEOUT` when not set); it must be positive."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = -1.0
    if not timeout > 0:
        raise SalesforceBulkConfigError(
            f"connection {conn_id!r}: timeout must be a positive number of seconds", field="timeout"
        )
    return timeout


def _verify_tls(conn_id: str, extra: Mapping[str, Any]) -> bool:
    """The ``verify_tls`` extra: True unless the connection says ``false`` in so many words."""
    value = _extra_value(extra, "verify_tls")
    if value is None or value is True or str(value).strip().lower() in ("true", "1", "yes", "on"):
        return True
    if value is False or str(value).strip().lower() in ("false", "0", "no", "off"):
        return False
    raise SalesforceBulkConfigError(
        f"connection {conn_id!r}: verify_tls must be true or false (a CA bundle path belongs in 'ca_bundle')",
        field="verify_tls",
    )


def _check_verify(conn_id: str, extra: Mapping[str, Any]) -> None:
    """Refuse the other libraries' spellings of TLS verification, pointing to ``verify_tls``/``ca_bundle``."""
    for name in _VERIFY_EXTRAS:
        value = _extra_value(extra, name)
        if value is None or value is True or str(value).strip().lower() in ("true", "1", "yes", "on"):
            continue
        if value is False or str(value).strip().lower() in _FALSE_WORDS:
            message = "to turn TLS verification off, say so with 'verify_tls': false"
        else:  # requests would take a string as a CA bundle path: say where that belongs
            message = "a CA bundle path belongs in 'ca_bundle'"
        raise SalesforceBulkConfigError(
            f"connection {conn_id!r}: extra {name!r}: {message}; to trust a private CA (a TLS-inspecting "
            "proxy, the emulator's certificate) set 'ca_bundle' to its PEM file",
            field=name,
        )


def _check_files(conn_id: str, auth_type: AuthType, values: Mapping[str, Any]) -> None:
    """The files the connection names must exist: ``ca_bundle``, and the JWT flow's ``private_key_file``."""
    ca_bundle = values["ca_bundle"]
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise SalesforceBulkConfigError(
            f"connection {conn_id!r}: ca_bundle {ca_bundle!r} is not a readable file", field="ca_bundle"
        )
    private_key_file = values["private_key_file"]
    if (
        auth_type is AuthType.JWT_BEARER
        and not values["private_key"]
        and not os.path.isfile(private_key_file)
    ):
        raise SalesforceBulkConfigError(
            f"connection {conn_id!r}: private_key_file {private_key_file!r} is not a readable file",
            field="private_key_file",
        )


def normalize_url_lenient(value: str) -> str:
    """Like :func:`normalize_url` but never raises (used to inspect a host before validation)."""
    value = value.strip()
    return value if "://" in value else f"https://{value}"


def _with_port(host: str, port: int) -> str:
    url = normalize_url_lenient(host)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}:{port}{parts.path}"


def _checked_url(conn_id: str, name: str, value: str) -> str:
    """``value`` normalized; a config error naming ``name`` when it is no http(s) URL or insecure http."""
    try:
        url = normalize_url(value)
        check_secure_url(url)
        return url
    except ValueError as exc:
        raise SalesforceBulkConfigError(f"connection {conn_id!r}: {name}: {exc}", field=name) from None
