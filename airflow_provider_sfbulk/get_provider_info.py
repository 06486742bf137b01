"""Provider metadata read by Airflow's provider manager. Kept static: it must import nothing heavy."""

from __future__ import annotations

from typing import Any

PACKAGE = "airflow_provider_sfbulk"
INTEGRATION = "Salesforce Bulk API 2.0"


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
            }
        ],
        "hooks": _modules("hooks.bulk"),
        "operators": [],
        "sensors": [],
        "triggers": [],
        "extra-links": [],
    }
