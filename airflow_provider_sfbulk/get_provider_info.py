"""Provider metadata read by Airflow's provider manager. Kept static: it must import nothing heavy."""

from __future__ import annotations

from typing import Any

PACKAGE = "airflow_provider_sfbulk"
INTEGRATION = "Salesforce Bulk API 2.0"


def _text(label: str, description: str, secret: bool = False, **schema: Any) -> dict[str, Any]:
    field_schema: dict[str, Any] = {"type": ["string", "null"], **schema}
    if secret:
        field_schema["format"] = "password"
    return {"label": label, "description": description, "schema": field_schema}


#: Extra fields of the ``salesforce_bulk`` connection form (Airflow 3.2+ reads them from here; older
#: versions ask the hook's ``get_connection_form_widgets``).
CONN_FIELDS: dict[str, Any] = {
    "auth_type": _text(
        "Auth type",
        "password, client_credentials, jwt_bearer, refresh_token or access_token",
        default="password",
        enum=["password", "client_credentials", "jwt_bearer", "refresh_token", "access_token"],
    ),
    "client_id": _text("Client ID", "Consumer key of the connected app / external client app"),
    "client_secret": _text(
        "Client secret", "Consumer secret (password, client_credentials, refresh_token)", True
    ),
    "security_token": _text("Security token", "Appended to the password (password flow only)", True),
    "private_key": _text("Private key (PEM)", "RSA private key for the JWT bearer flow, inline", True),
    "private_key_file": _text("Private key file", "Path to the PEM private key for the JWT bearer flow"),
    "refresh_token": _text("Refresh token", "Refresh token for the refresh_token flow", True),
    "access_token": _text("Access token", "A ready session token (access_token flow; no refresh)", True),
    "instance_url": _text("Instance URL", "https://<my-domain>.my.salesforce.com (access_token flow)"),
    "api_version": _text("API version", "REST API version, 58.0 or newer", default="62.0"),
    "ca_bundle": _text(
        "CA bundle", "Path to a PEM CA bundle to trust (emulator certificate, corporate proxy)"
    ),
    "verify_tls": _text(
        "Verify TLS",
        "true (default) or false; false skips the server certificate check: prefer a CA bundle",
        default="true",
        enum=["true", "false"],
    ),
    "timeout": {
        "label": "Request timeout (s)",
        "description": "Seconds before an HTTP request times out",
        "schema": {"type": ["number", "null"], "default": 120},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["port", "schema"],
    "relabeling": {"host": "Login URL or My Domain", "login": "Username", "password": "Password"},
    "placeholders": {
        "host": "https://login.salesforce.com, https://test.salesforce.com or https://<name>.my.salesforce.com",
        "login": "integration.user@example.com",
    },
}


def _modules(*names: str) -> list[dict[str, Any]]:
    return [{"integration-name": INTEGRATION, "python-modules": [f"{PACKAGE}.{name}" for name in names]}]


def get_provider_info() -> dict[str, Any]:
    """Return the dictionary Airflow's ``apache_airflow_provider`` entry point expects."""
    from airflow_provider_sfbulk import __version__

    return {
        "package-name": "airflow-provider-sfbulk",
        "name": "Salesforce Bulk API 2.0",
        "description": "Deferrable Salesforce Bulk API 2.0 ingest and query jobs, streamed end to end.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_0.htm",
                "tags": ["software"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "salesforce_bulk",
                "hook-class-name": f"{PACKAGE}.hooks.bulk.SalesforceBulkHook",
                "hook-name": "Salesforce Bulk API 2.0",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
        "hooks": _modules("hooks.bulk"),
        "operators": _modules("operators.ingest", "operators.query", "operators.results", "operators.jobs"),
        "sensors": _modules("sensors.job"),
        "triggers": _modules("triggers.job"),
        "extra-links": [f"{PACKAGE}.links.job.SalesforceBulkJobLink"],
        "config": {
            "salesforce_bulk": {
                "description": "Options of the Salesforce Bulk API 2.0 provider.",
                "options": {
                    "results_base_path": {
                        "description": "Object storage folder under which operators write result files, "
                        "manifests and (before Airflow 3.3) task checkpoints when no results_path is given. "
                        "Empty means file://$AIRFLOW_HOME/sfbulk-results. Use shared storage (s3://, gs://, "
                        "...) when retries may run on another worker.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/salesforce-bulk",
                        "default": "",
                    }
                },
            }
        },
    }
