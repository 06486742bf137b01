"""Fixtures of the reliability suite; the helpers and the routing explanation are in ``rig.py``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from proxy import FaultProxy
from rig import FAST_POLICY, Rig, direct_api

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.hooks import bulk as bulk_hooks


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def rig_factory(emulator_factory: Callable[..., EmulatorServer], salesforce_conn: Callable[..., str],
                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """``rig_factory(**emulator_config)``: an emulator, a proxy in front of it, the connection and
    ``HTTP_PROXY`` set; the proxy stops at teardown."""
    proxies: list[FaultProxy] = []

    def make(conn_timeout: float = 10, **config: Any) -> Rig:
        emulator = emulator_factory(**config)
        api = direct_api(emulator)
        proxy = FaultProxy(emulator.base_url).start()
        proxies.append(proxy)
        salesforce_conn(emulator, timeout=conn_timeout)
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("http_proxy", proxy.base_url)
        monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
        monkeypatch.setattr(bulk_hooks, "DEFAULT_RETRY_POLICY", FAST_POLICY)
        return Rig(emulator, proxy, api, tmp_path)

    yield make
    for proxy in proxies:
        proxy.stop()
