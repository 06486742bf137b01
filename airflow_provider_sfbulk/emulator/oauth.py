"""The emulator's ``/services/oauth2/token`` endpoint logic and bearer-token validation.

Grants: ``password`` (password immediately followed by the security token), ``client_credentials``
(secret in the body or HTTP Basic), ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (RS256 assertion
verified with the configured public key or certificate) and ``refresh_token`` (tokens minted by
:func:`mint_refresh_token`, as a connected app's web-server flow would hand them out).

Success and error bodies follow Salesforce (see ``bulk-api-2.md`` section 1). Secrets never leave this
module except inside responses to the caller who proved them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from airflow_provider_sfbulk.emulator import identity
from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.store import Store, TokenRecord

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
DEFAULT_SCOPE = "api"
REFRESH_SCOPE = "api refresh_token"


class OAuthError(Exception):
    """A token request Salesforce would refuse: HTTP 400 with ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        """The JSON error answer of the token endpoint."""
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class Principal:
    """Who a valid access token belongs to."""

    username: str
    client_id: str
    scope: str


def load_jwt_public_key(path: Path) -> Any:
    """Public key from a PEM public key or PEM X.509 certificate (as uploaded to a connected app)."""
    data = Path(path).read_bytes()
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return load_pem_public_key(data)


def new_access_token() -> str:
    """A token shaped like Salesforce's: ``<15-char org id>!AQ<opaque>``."""
    return f"{identity.ORG_ID[:15]}!AQ{secrets.token_urlsafe(72)}"


def new_refresh_token() -> str:
    """A token shaped like Salesforce's refresh tokens: ``5Aep861<opaque>``."""
    return "5Aep861" + secrets.token_urlsafe(64)


class OAuthService:
    """Issues and checks tokens for one emulator instance."""

    def __init__(self, config: EmulatorConfig, store: Store, base_url: str) -> None:
        self.config = config
        self.store = store
        self.base_url = base_url.rstrip("/")
        self._jwt_key = load_jwt_public_key(config.jwt_public_key) if config.jwt_public_key else None

    # -- token endpoint ----------------------------------------------------------------------------
    def token(self, params: Mapping[str, str], authorization: str | None = None,
              now: float | None = None) -> dict[str, Any]:
        """Handle one token request; raises :class:`OAuthError` for everything Salesforce refuses."""
        now = time.time() if now is None else now
        grant = params.get("grant_type", "")
        if grant == "password":
            self._check_client(params.get("client_id"), params.get("client_secret"))
            self._check_user(params.get("username"), params.get("password"))
            return self._issue(self.config.username, self.config.client_id, DEFAULT_SCOPE, now)
        if grant == "client_credentials":
            client_id, client_secret = params.get("client_id"), params.get("client_secret")
            basic = _basic_credentials(authorization)
            if basic is not None:
                client_id, client_secret = basic
            self._check_client(client_id, client_secret)
            return self._issue(self.config.username, self.config.client_id, DEFAULT_SCOPE, now)
        if grant == JWT_GRANT:
            username = self._check_assertion(params.get("assertion"), now)
            return self._issue(username, self.config.client_id, DEFAULT_SCOPE, now)
        if grant == "refresh_token":
            record = self._check_refresh(params, authorization)
            return self._issue(record.username, record.client_id, record.scope, now)
        raise OAuthError("unsupported_grant_type", "grant type not supported")

    def _check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if not client_id or not hmac.compare_digest(client_id, self.config.client_id):
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not client_secret or not hmac.compare_digest(client_secret, self.config.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_user(self, username: str | None, password: str | None) -> None:
        expected = self.config.password + self.config.security_token
        if (
            not username
            or username.lower() != self.config.username.lower()
            or not password
            or not hmac.compare_digest(password, expected)
        ):
            raise OAuthError("invalid_grant", "authentication failure")

    def _check_assertion(self, assertion: str | None, now: float) -> str:
        if not assertion:
            raise OAuthError("invalid_request", "assertion parameter is missing")
        if self._jwt_key is None:
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as err:
            raise OAuthError("invalid_grant", "invalid assertion") from err
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            claims = jwt.decode(
                assertion,
                self._jwt_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False, "require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.PyJWTError as err:
            raise OAuthError("invalid_grant", "invalid assertion") from err
        if claims.get("iss") != self.config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        allowed = {*LOGIN_AUDIENCES, self.base_url}
        if not any(isinstance(aud, str) and aud.rstrip("/") in allowed for aud in audiences):
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            exp = float(claims["exp"])
        except (TypeError, ValueError) as err:
            raise OAuthError("invalid_grant", "invalid assertion") from err
        if exp <= now or exp > now + self.config.jwt_max_exp_ahead:
            raise OAuthError("invalid_grant", "invalid assertion")
        subject = claims.get("sub")
        if not isinstance(subject, str) or subject.lower() != self.config.username.lower():
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return self.config.username

    def _check_refresh(self, params: Mapping[str, str], authorization: str | None) -> TokenRecord:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        basic = _basic_credentials(authorization)
        if basic is not None:
            client_id, client_secret = basic
        self._check_client(client_id, client_secret)
        value = params.get("refresh_token")
        if not value:
            raise OAuthError("invalid_request", "refresh_token parameter is missing")
        record = self.store.get_token(value)
        if record is None or record.kind != "refresh" or record.revoked or record.client_id != client_id:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        return record

    def _issue(self, username: str, client_id: str, scope: str, now: float) -> dict[str, Any]:
        token = new_access_token()
        self.store.save_token(TokenRecord(token=token, kind="access", client_id=client_id, username=username,
                                          scope=scope, issued_at=now, expires_at=now + self.config.token_ttl,
                                          revoked=False))
        issued_at = str(int(now * 1000))
        id_url = self._identity_url()
        return {
            "access_token": token,
            "signature": self.signature(id_url, issued_at),
            "scope": scope,
            "instance_url": self.base_url,
            "id": id_url,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }

    def _identity_url(self) -> str:
        return f"{self.base_url}/id/{identity.ORG_ID}/{identity.USER_ID}"

    def signature(self, id_url: str, issued_at: str) -> str:
        """base64 HMAC-SHA256 of ``id + issued_at`` keyed by the client secret, as Salesforce signs."""
        digest = hmac.new(self.config.client_secret.encode(), (id_url + issued_at).encode(),
                          hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def mint_refresh_token(self, now: float | None = None) -> str:
        """A refresh token for the configured user, as a web-server (authorization code) flow issues."""
        now = time.time() if now is None else now
        token = new_refresh_token()
        self.store.save_token(TokenRecord(token=token, kind="refresh", client_id=self.config.client_id,
                                          username=self.config.username, scope=REFRESH_SCOPE,
                                          issued_at=now, expires_at=None, revoked=False))
        return token

    # -- API calls ---------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None, now: float | None = None) -> Principal | None:
        """The principal of a valid ``Bearer``/``OAuth`` access token, else None (answer 401)."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not value.strip():
            return None
        record = self.store.get_token(value.strip())
        now = time.time() if now is None else now
        if record is None or record.kind != "access" or record.revoked:
            return None
        if record.expires_at is not None and record.expires_at <= now:
            return None
        return Principal(record.username, record.client_id, record.scope)


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    return client_id, client_secret
