"""OAuth 2.0 token requests, token responses, and the process-wide token cache (no network I/O).

Grants (``POST {login_url}/services/oauth2/token``, form encoded):

- ``password``: ``client_id``, ``client_secret``, ``username``, ``password`` + security token.
- ``client_credentials``: ``client_id``, ``client_secret`` (only on a My Domain host).
- ``jwt_bearer``: a fresh RS256 assertion (``iss`` client id, ``sub`` username, ``aud`` login host,
  ``exp`` three minutes ahead) signed with the connection's private key.
- ``refresh_token``: ``refresh_token``, ``client_id`` and ``client_secret`` when configured.
- ``access_token``: no request; the configured token and instance URL are used as they are and cannot
  be renewed.

The token response has no lifetime (``expires_in`` is absent): a token is used until a call answers 401
``INVALID_SESSION_ID``, then renewed once. Its ``instance_url`` must be ``https://`` (plain ``http://``
only on a loopback address, as for the connection's own URLs).

A refused token request becomes :class:`SalesforceBulkAuthError` through :func:`token_request_error`:
the message names the connection, its flow, Salesforce's ``error`` and ``error_description``, and what to
check for that flow (:data:`AUTH_HINTS`); it never contains a secret of the connection.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkAuthError,
    SalesforceBulkConfigError,
    SalesforceBulkError,
    SalesforceBulkProtocolError,
)
from airflow_provider_sfbulk.protocol.api import USER_AGENT
from airflow_provider_sfbulk.protocol.connection import AuthType, ConnectionConfig, check_secure_url
from airflow_provider_sfbulk.protocol.errors import error_from_response
from airflow_provider_sfbulk.protocol.messages import Request

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Lifetime of a JWT bearer assertion; Salesforce accepts ``exp`` up to about three minutes ahead.
JWT_LIFETIME = 180
PRODUCTION_LOGIN = "https://login.salesforce.com"
SANDBOX_LOGIN = "https://test.salesforce.com"


@dataclass(frozen=True)
class TokenInfo:
    """An access token and where to use it. ``repr`` never shows the token."""

    access_token: str = field(repr=False)
    instance_url: str
    token_type: str = "Bearer"
    id_url: str | None = None
    issued_at: str | None = None
    scope: str | None = None
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def user_id(self) -> str | None:
        """User id, the last segment of the ``id`` URL."""
        parts = (self.id_url or "").rstrip("/").split("/")
        return parts[-1] if self.id_url else None


def jwt_audience(login_url: str) -> str:
    """The ``aud`` claim: the production or sandbox login host, or the configured host itself.

    My Domain hosts (``*.my.salesforce.com``) take ``login.salesforce.com``, sandbox My Domains
    (``*.sandbox.my.salesforce.com``) take ``test.salesforce.com``. Any other host (an Experience Cloud
    site, the emulator) is used as given.
    """
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return SANDBOX_LOGIN
    if host == "login.salesforce.com" or host.endswith(".my.salesforce.com"):
        return PRODUCTION_LOGIN
    return login_url.rstrip("/")


def build_jwt_assertion(config: ConnectionConfig, now: float | None = None) -> str:
    """Sign a JWT bearer assertion with the connection's RSA private key (RS256)."""
    import jwt  # pyjwt; imported lazily, only this grant needs it

    issued = int(now if now is not None else time.time())
    claims = {
        "iss": config.client_id,
        "sub": config.username,
        "aud": jwt_audience(config.login_url),
        "exp": issued + JWT_LIFETIME,
    }
    try:
        return jwt.encode(claims, config.load_private_key(), algorithm="RS256")
    except (ValueError, TypeError, jwt.exceptions.PyJWTError) as exc:
        # The message of a key parsing error never contains the key itself.
        raise SalesforceBulkConfigError(
            f"connection {config.conn_id!r}: private key cannot sign RS256 JWTs ({type(exc).__name__})",
            field="private_key",
        ) from None


def build_token_request(
    config: ConnectionConfig, *, refresh_token: str | None = None, now: float | None = None
) -> Request:
    """The token request for the connection's grant. Build a new one per attempt (JWTs expire)."""
    params: dict[str, str]
    if config.auth_type is AuthType.PASSWORD:
        params = {
            "grant_type": "password",
            "client_id": config.client_id or "",
            "client_secret": config.client_secret or "",
            "username": config.username or "",
            "password": f"{config.password or ''}{config.security_token or ''}",
        }
    elif config.auth_type is AuthType.CLIENT_CREDENTIALS:
        params = {
            "grant_type": "client_credentials",
            "client_id": config.client_id or "",
            "client_secret": config.client_secret or "",
        }
    elif config.auth_type is AuthType.JWT_BEARER:
        params = {"grant_type": JWT_GRANT, "assertion": build_jwt_assertion(config, now)}
    elif config.auth_type is AuthType.REFRESH_TOKEN:
        params = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token or config.refresh_token or "",
            "client_id": config.client_id or "",
        }
        if config.client_secret:
            params["client_secret"] = config.client_secret
    else:
        raise ValueError(f"auth type {config.auth_type.value} does not request tokens")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
    return Request("POST", f"{config.login_url}{TOKEN_PATH}", headers, urlencode(params).encode())


#: What to check, per flow and OAuth ``error``, when the token endpoint refuses a connection.
AUTH_HINTS: dict[tuple[AuthType | None, str], str] = {
    (None, "invalid_client_id"): "the client_id (consumer key) is not known to this org: check 'client_id' "
    "and that the app exists where 'host' points",
    (None, "invalid_client"): "the client_secret (consumer secret) is wrong: check 'client_secret'",
    (None, "unsupported_grant_type"): "this OAuth flow is not enabled for the app",
    (AuthType.PASSWORD, "invalid_grant"): "wrong username, password or security token (or the org blocks "
    "the username-password flow): check 'login', 'password' and 'security_token'",
    (AuthType.REFRESH_TOKEN, "invalid_grant"): "the refresh token is expired or revoked (or belongs to "
    "another app): get a new one and store it in 'refresh_token'",
    (AuthType.JWT_BEARER, "invalid_grant"): "the JWT assertion was refused: the private key must match the "
    "certificate uploaded to the app, the user in 'login' must be pre-authorized, and the clock in sync",
    (AuthType.CLIENT_CREDENTIALS, "invalid_grant"): "'host' must be the org's My Domain and the app needs a "
    "Run As user with the client credentials flow enabled",
}


def token_request_error(config: ConnectionConfig, status: int, body: bytes) -> SalesforceBulkError:
    """The exception for a refused token request: which connection, which flow, what Salesforce said.

    4xx answers become :class:`SalesforceBulkAuthError` whose message reads, for example,
    ``HTTP 400 invalid_grant: connection 'sf' (auth_type password): login refused: authentication failure;
    wrong username, password or security token ...``; a secret of the connection echoed by the server is
    replaced by ``***``. 429 and 5xx answers keep their retryable classes.
    """
    error = error_from_response(status, body, oauth=True)
    if isinstance(error, SalesforceBulkAuthError):
        hint = AUTH_HINTS.get((config.auth_type, error.error_code or "")) or AUTH_HINTS.get(
            (None, error.error_code or "")
        )
        message = (
            f"connection {config.conn_id!r} (auth_type {config.auth_type.value}): login refused: "
            f"{error.message}{f'; {hint}' if hint else ''}"
        )
        error = SalesforceBulkAuthError(
            _redact(message, config), status=error.status, error_code=error.error_code
        )
    return error


def _redact(text: str, config: ConnectionConfig) -> str:
    for secret in sorted(config.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def parse_token_response(document: Any) -> TokenInfo:
    """Parse a successful token response; its ``instance_url`` must be https (http only on loopback)."""
    if not isinstance(document, dict) or not document.get("access_token") or not document.get("instance_url"):
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise SalesforceBulkProtocolError(f"token response lacks access_token/instance_url (got {keys})")
    instance_url = str(document["instance_url"]).rstrip("/")
    try:
        check_secure_url(instance_url)
    except ValueError as exc:
        raise SalesforceBulkProtocolError(f"token response refused: instance_url {exc}") from None
    return TokenInfo(
        access_token=str(document["access_token"]),
        instance_url=instance_url,
        token_type=str(document.get("token_type") or "Bearer"),
        id_url=document.get("id"),
        issued_at=document.get("issued_at"),
        scope=document.get("scope"),
        refresh_token=document.get("refresh_token"),
    )


def static_token(config: ConnectionConfig) -> TokenInfo:
    """The token of an ``access_token`` connection."""
    if not config.access_token or not config.instance_url:  # parse_connection guarantees both
        raise ValueError("an access_token connection needs access_token and instance_url")
    return TokenInfo(access_token=config.access_token, instance_url=config.instance_url)


# --- Process-wide cache --------------------------------------------------------------------------------

CacheKey = tuple[str, str]


class TokenCache:
    """Tokens shared by every hook (sync and async, every thread) of the process.

    Keyed by connection id and the connection's fingerprint, so editing a connection never reuses a
    token obtained with the old settings. At most one fetch per key runs at a time: :meth:`claim` gives
    the right to fetch to one caller, the others wait (by polling, which works for threads and event
    loops alike) until :meth:`release` publishes the token. A claim older than ``stale_after`` seconds is
    taken over, so a caller that died mid-fetch cannot block the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[CacheKey, TokenInfo] = {}
        self._claims: dict[CacheKey, tuple[object, float]] = {}
        self._refresh_tokens: dict[CacheKey, str] = {}

    def get(self, key: CacheKey) -> TokenInfo | None:
        """The cached token, if any."""
        with self._lock:
            return self._tokens.get(key)

    def claim(self, key: CacheKey, stale_after: float, now: float | None = None) -> object | None:
        """Try to become the fetcher for ``key``; returns a claim ticket, or ``None`` if another holds it."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            held = self._claims.get(key)
            if held is not None and moment - held[1] < stale_after:
                return None
            ticket = object()
            self._claims[key] = (ticket, moment)
            return ticket

    def release(self, key: CacheKey, ticket: object, token: TokenInfo | None) -> None:
        """End a claim, publishing ``token`` when the fetch succeeded."""
        with self._lock:
            held = self._claims.get(key)
            if held is not None and held[0] is ticket:
                del self._claims[key]
            if token is not None:
                self._tokens[key] = token
                if token.refresh_token:
                    self._refresh_tokens[key] = token.refresh_token

    def invalidate(self, key: CacheKey, stale: TokenInfo) -> TokenInfo | None:
        """Drop ``stale`` after a 401. Returns a newer token when another caller already renewed it."""
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and current.access_token != stale.access_token:
                return current
            self._tokens.pop(key, None)
            return None

    def refresh_token_for(self, key: CacheKey) -> str | None:
        """A refresh token issued by the server for ``key`` (if it rotated the configured one)."""
        with self._lock:
            return self._refresh_tokens.get(key)

    def clear(self) -> None:
        """Forget every token (tests; a process that changed all its credentials)."""
        with self._lock:
            self._tokens.clear()
            self._claims.clear()
            self._refresh_tokens.clear()


#: The cache every hook in the process uses.
TOKEN_CACHE = TokenCache()
