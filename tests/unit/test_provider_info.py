"""The provider metadata Airflow reads: every listed module imports, every class exists, Airflow sees it."""

from __future__ import annotations

import importlib

from airflow_provider_sfbulk.get_provider_info import get_provider_info


def _import_path(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_listed_module_and_class_imports() -> None:
    info = get_provider_info()
    for group in ("hooks", "operators", "sensors", "triggers"):
        assert info[group], f"no {group} listed"
        for entry in info[group]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for link in info["extra-links"]:
        assert _import_path(link).name  # type: ignore[attr-defined]
    (conn_type,) = info["connection-types"]
    hook = _import_path(conn_type["hook-class-name"])
    assert hook.conn_type == conn_type["connection-type"] == "salesforce_bulk"  # type: ignore[attr-defined]


def test_airflow_provider_manager_lists_the_provider_and_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-sfbulk" in manager.providers
    assert "salesforce_bulk" in manager.hooks
    assert "airflow_provider_sfbulk.links.job.SalesforceBulkJobLink" in manager.extra_links_class_names
