"""The ``salesforce_bulk`` connection form, as plain data (imports nothing, so provider discovery can).

Airflow 3.2+ builds the connection form from ``get_provider_info()["connection-types"]``: each entry
may carry ``conn-fields`` (extra fields, JSON-schema typed) and ``ui-field-behaviour`` (hidden and
relabelled standard fields). :data:`CONNECTION_TYPE_INFO` is that entry for this provider. Airflow 2.x
asks the hook instead (``get_connection_form_widgets`` / ``get_ui_field_behaviour``), which are built
from the same data.
"""

from __future__ import annotations

from typing import Any

CONN_TYPE = "salesforce_bulk"
HOOK_CLASS_NAME = "airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook"
HOOK_NAME = "Salesforce Bulk API 2.0"
DEFAULT_API_VERSION = "62.0"
MIN_API_VERSION = 58.0
DEFAULT_TIMEOUT = 60.0
#: The ``auth_type`` values (the ``AuthType`` enum of :mod:`.connection`).
AUTH_TYPES = ("password", "client_credentials", "jwt_bearer", "refresh_token", "access_token")

#: Extra fields of the connection form, in the declarative ``conn-fields`` format Airflow 3.2+ reads from
#: ``get_provider_info()["connection-types"][i]["conn-fields"]`` (no wtforms/FAB import needed).
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "auth_type": {
        "label": "Auth type",
        "description": "password, client_credentials, jwt_bearer, refresh_token or access_token.",
        "schema": {"type": ["string", "null"], "enum": list(AUTH_TYPES), "default": "password"},
    },
    "client_id": {
        "label": "Client ID (consumer key)",
        "description": "Connected app consumer key (all grants except access_token).",
        "schema": {"type": ["string", "null"]},
    },
    "client_secret": {
        "label": "Client secret (consumer secret)",
        "description": "Connected app consumer secret (password, client_credentials, refresh_token).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "security_token": {
        "label": "Security token",
        "description": "Appended to the password for the password grant when the org requires it.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "private_key": {
        "label": "Private key (PEM)",
        "description": "RSA private key for the JWT bearer grant, inline PEM.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "private_key_file": {
        "label": "Private key file",
        "description": "Path to the PEM private key for the JWT bearer grant (instead of an inline key).",
        "schema": {"type": ["string", "null"]},
    },
    "refresh_token": {
        "label": "Refresh token",
        "description": "For the refresh_token grant.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "access_token": {
        "label": "Access token",
        "description": "A ready session id (access_token auth type; it cannot be renewed).",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "instance_url": {
        "label": "Instance URL",
        "description": "https://<domain>.my.salesforce.com, for the access_token auth type.",
        "schema": {"type": ["string", "null"]},
    },
    "api_version": {
        "label": "API version",
        "description": f"Salesforce API version, {MIN_API_VERSION} or newer.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_API_VERSION},
    },
    "ca_bundle": {
        "label": "CA bundle path",
        "description": "PEM file of trusted CAs (a proxy or the emulator). TLS verification is always on.",
        "schema": {"type": ["string", "null"]},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Connect and read timeout for each HTTP request.",
        "schema": {"type": ["number", "null"], "default": DEFAULT_TIMEOUT},
    },
}

#: Field relabelling in the declarative ``ui-field-behaviour`` format (kebab-case keys).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"host": "Login URL or My Domain", "login": "Username", "password": "Password"},
    "placeholders": {
        "host": "https://login.salesforce.com",
        "login": "integration.user@example.com",
        "auth_type": "password",
        "api_version": DEFAULT_API_VERSION,
        "instance_url": "https://acme.my.salesforce.com",
        "timeout": str(int(DEFAULT_TIMEOUT)),
    },
}

#: The ``connection-types`` entry of ``get_provider_info()``.
CONNECTION_TYPE_INFO: dict[str, Any] = {
    "connection-type": CONN_TYPE,
    "hook-class-name": HOOK_CLASS_NAME,
    "hook-name": HOOK_NAME,
    "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
    "conn-fields": CONN_FIELDS,
}
