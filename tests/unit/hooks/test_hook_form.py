"""Connection type metadata: hook identity, the declarative form (Airflow 3.2+), masking of secrets."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable

import airflow
import jsonschema
import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_sfbulk.hooks import bulk as bulk_module
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook, SalesforceBulkHook

CONNECTION_TYPE_INFO = next(
    entry
    for entry in get_provider_info()["connection-types"]
    if entry["connection-type"] == "salesforce_bulk"
)


def test_hook_identity():
    for hook_class in (SalesforceBulkHook, SalesforceBulkAsyncHook):
        assert hook_class.conn_name_attr == "salesforce_conn_id"
        assert hook_class.default_conn_name == "salesforce_bulk_default"
        assert hook_class.conn_type == "salesforce_bulk"
        assert hook_class.hook_name == "Salesforce Bulk API 2.0"
    assert CONNECTION_TYPE_INFO["hook-class-name"] == (
        f"{SalesforceBulkHook.__module__}.{SalesforceBulkHook.__qualname__}"
    )
    assert CONNECTION_TYPE_INFO["hook-name"] == SalesforceBulkHook.hook_name


def test_connection_type_entry_validates_against_airflows_provider_schema():
    path = os.path.join(os.path.dirname(airflow.__file__), "provider.yaml.schema.json")
    with open(path) as handle:
        schema = json.load(handle)
    if "conn-fields" not in json.dumps(schema["properties"]["connection-types"]):
        pytest.skip("this Airflow has no declarative connection fields")
    jsonschema.validate(CONNECTION_TYPE_INFO, schema["properties"]["connection-types"]["items"])


def test_airflow_builds_the_form_from_the_entry():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    if not hasattr(manager, "_load_ui_metadata"):  # Airflow < 3.2 asks the hook
        pytest.skip("this Airflow reads the form from the hook")
    manager._add_widgets(
        "airflow-provider-sfbulk", CONNECTION_TYPE_INFO["hook-class-name"], "salesforce_bulk", CONN_FIELDS
    )
    widgets = {
        k: v for k, v in manager._connection_form_widgets.items() if k.startswith("extra__salesforce_bulk__")
    }
    assert widgets["extra__salesforce_bulk__client_secret"].is_sensitive
    assert not widgets["extra__salesforce_bulk__client_id"].is_sensitive
    assert widgets["extra__salesforce_bulk__api_version"].field["value"] == "62.0"
    manager._field_behaviours.pop("salesforce_bulk", None)
    manager._add_customized_fields("airflow-provider-sfbulk", "salesforce_bulk",
                                   CONNECTION_TYPE_INFO["ui-field-behaviour"])
    behaviour = manager._field_behaviours["salesforce_bulk"]
    assert behaviour["relabeling"]["host"] == "Login URL or My Domain"
    assert "port" in behaviour["hidden_fields"]


def test_ui_field_behaviour_for_airflow_2():
    behaviour = SalesforceBulkHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Login URL or My Domain", "login": "Username",
                                       "password": "Password"}
    assert set(behaviour["hidden_fields"]) == {"schema", "port"}


def test_form_widgets_for_airflow_2():
    pytest.importorskip("flask_appbuilder")
    widgets = SalesforceBulkHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)


@pytest.mark.parametrize("auth_type", ["password", "refresh_token"])
def test_tokens_and_secrets_are_masked(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], auth_type
):
    from airflow.providers.common.compat.sdk import redact

    value = json.loads(salesforce_conn(emulator, auth_type))
    hook = SalesforceBulkHook()
    hook.get_limits()
    token = hook._get_client().cached_token()
    assert token is not None
    secrets = [token.access_token, value["extra"]["client_secret"]]
    if auth_type == "refresh_token":
        secrets.append(value["extra"]["refresh_token"])
    for secret in secrets:
        assert secret not in str(redact(f"value={secret}"))


def test_concurrent_async_hooks_share_one_token_fetch(emulator: EmulatorServer, salesforce_conn):
    salesforce_conn(emulator, "password")
    emulator.set_faults([{"kind": "delay", "delay": 0.2, "path": "^/services/oauth2/token$"}])

    async def one() -> int | None:
        async with SalesforceBulkAsyncHook() as hook:
            return (await hook.get_limits()).remaining("DailyApiRequests")

    async def many() -> list[int | None]:
        return await asyncio.gather(*(one() for _ in range(8)))

    results = asyncio.run(many())
    assert all(results)
    assert emulator.app.faults.status()[0]["fired"] == 1


def test_threads_of_blocking_hooks_take_turns_to_ask_airflow(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], monkeypatch: pytest.MonkeyPatch
):
    # Airflow 3.0/3.1 send connection look-ups and mask_secret() to the supervisor over a channel that is
    # not safe for threads: the worker threads of one task (one hook each) must never do so at once.
    salesforce_conn(emulator, "password")
    inside, most = 0, 0
    guard = threading.Lock()

    def one_at_a_time(real: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            nonlocal inside, most
            with guard:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.01)
                return real(*args, **kwargs)
            finally:
                with guard:
                    inside -= 1

        return call

    monkeypatch.setattr(bulk_module, "mask_secret", one_at_a_time(bulk_module.mask_secret))
    monkeypatch.setattr(SalesforceBulkHook, "get_connection",
                        classmethod(one_at_a_time(SalesforceBulkHook.get_connection.__func__)))
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            SalesforceBulkHook().get_limits()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert most == 1
