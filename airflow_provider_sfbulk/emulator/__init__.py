"""A local Salesforce Bulk API 2.0 + OAuth emulator: a real aiohttp server backed by SQLite.

Test and demo tooling only; the provider's runtime code never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_sfbulk.emulator.config import EmulatorConfig
    from airflow_provider_sfbulk.emulator.testing import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import airflow_provider_sfbulk.emulator.schema`` stays light.
    if name == "EmulatorConfig":
        from airflow_provider_sfbulk.emulator.config import EmulatorConfig

        return EmulatorConfig
    if name == "EmulatorServer":
        from airflow_provider_sfbulk.emulator.testing import EmulatorServer

        return EmulatorServer
    raise AttributeError(name)
