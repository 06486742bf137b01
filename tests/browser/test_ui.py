"""The provider in Airflow's UI, clicked through in headless Chromium.

1. *Add Connection*, type *Salesforce Bulk API 2.0*: every field docs/connections.md documents is on the
   form with the label the page gives it (and no undocumented one), the secret fields are password
   inputs, the connection saves, and *Test Connection* on its row succeeds against the emulator.
2. The finished ``load_accounts`` task of the getting-started DAG shows the *Salesforce Bulk Job* extra
   link, and following it opens the job's page in Setup (here: the emulator's stand-in for that page,
   which shows the job the task ran).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

DOCS = Path(__file__).resolve().parents[2] / "docs"
TYPE_NAME = "Salesforce Bulk API 2.0"
CONN_ID = "sfbulk_from_the_ui"
WAIT = 30  # seconds, for any one thing to show up in the page
LINK_NAME = "Salesforce Bulk Job"


def documented_fields() -> dict[str, tuple[str, bool]]:
    """``{form input name: (label, secret)}`` from the two field tables of docs/connections.md."""
    text = (DOCS / "connections.md").read_text(encoding="utf-8")
    section = text.split("## Step 2 in Airflow", 1)[1].split("\n## ", 1)[0]
    fields: dict[str, tuple[str, bool]] = {}
    for label, attribute in re.findall(r"^\| \*([^*|]+)\* \| `(\w+)` \|", section, re.MULTILINE):
        fields[attribute] = (label, attribute == "password")
    for name, label, rest in re.findall(r"^\| `(\w+)` \| ([^|]+?) \|(.*)$", section, re.MULTILINE):
        fields[f"element_{name}"] = (label, "secret field" in rest)
    assert {"host", "login", "password", "element_auth_type", "element_client_secret"} <= set(fields)
    return fields


def _by() -> Any:
    from selenium.webdriver.common.by import By

    return By


def _wait(driver: Any, condition: Any, timeout: float = WAIT) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _clickable(driver: Any, xpath: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec

    return _wait(driver, ec.element_to_be_clickable((_by().XPATH, xpath)))


def _visible(driver: Any, xpath: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec

    return _wait(driver, ec.visibility_of_element_located((_by().XPATH, xpath)))


def _field_label(dialog: Any, name: str) -> str:
    """The label of the form field that holds the input ``name`` (its text, without a required star)."""
    label = dialog.find_element(
        _by().XPATH, f".//div[@data-scope='field'][@data-part='root'][.//*[@name='{name}']]//label")
    return str(label.get_attribute("textContent")).replace("*", "").strip()


def _input_type(dialog: Any, name: str) -> str:
    return str(dialog.find_element(_by().NAME, name).get_attribute("type") or "")


def _shot(element: Any, path: Path) -> None:
    """A screenshot of one element (the dialog, a panel): small PNGs for the docs."""
    assert element.screenshot(str(path)), f"no screenshot written to {path}"


def _open_add_connection(driver: Any, base_url: str) -> Any:
    """The *Add Connection* dialog with the type chosen (its *Standard Fields* section open)."""
    driver.get(f"{base_url}/connections")
    _clickable(driver, "//button[normalize-space()='Add Connection']").click()
    dialog = _visible(driver, "//*[@role='dialog'][.//h2[normalize-space()='Add Connection']]")
    dialog.find_element(_by().NAME, "connection_id").send_keys(CONN_ID)
    dialog.find_element(_by().CSS_SELECTOR, "input[role=combobox]").send_keys("Salesforce Bulk")
    _clickable(driver, f"//*[@role='option'][normalize-space()='{TYPE_NAME}']").click()
    _visible(driver, "//*[@role='dialog']//input[@name='host']")
    return dialog


def _fill(dialog: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        box = dialog.find_element(_by().NAME, name)
        box.clear()
        box.send_keys(str(value))


def test_connection_form_save_and_test(browser_ui, driver, tmp_path):  # tmp_path: failure screenshot
    stack, emulator = browser_ui.stack, browser_ui.emulator
    documented = documented_fields()
    dialog = _open_add_connection(driver, stack.base_url)
    _fill(dialog, {"host": emulator.base_url, "login": "emulator@sfbulk.example",
                   "password": "emulator-password"})
    _shot(dialog, browser_ui.shot_path("connection-form"))
    _clickable(driver, "//button[normalize-space()='Extra Fields']").click()
    _visible(driver, "//*[@role='dialog']//input[@name='element_client_id']")

    # every documented field, with its label; the secret ones masked; nothing undocumented on the form
    shown = {name for name in documented if dialog.find_elements(_by().NAME, name)}
    assert shown == set(documented), f"documented but not on the form: {sorted(set(documented) - shown)}"
    labels = {name: _field_label(dialog, name) for name in documented}
    assert labels == {name: label for name, (label, _) in documented.items()}
    on_form = {str(box.get_attribute("name")) for box in dialog.find_elements(
        _by().XPATH, ".//*[starts-with(@name, 'element_')]")}
    assert on_form == {name for name in documented if name.startswith("element_")}, "undocumented fields"
    masked = {name for name in documented if _input_type(dialog, name) == "password"}
    assert masked == {name for name, (_, secret) in documented.items() if secret}
    assert not dialog.find_elements(_by().XPATH, ".//*[@name='port' or @name='schema']")

    _fill(dialog, {"element_client_id": "sfbulk-emulator-client",
                   "element_client_secret": "sfbulk-emulator-secret",
                   "element_security_token": "EMULATORTOKEN123"})
    for name in ("password", "element_client_secret", "element_security_token"):
        assert _input_type(dialog, name) == "password", f"{name} shows its value"
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                          dialog.find_element(_by().XPATH, ".//button[normalize-space()='Extra Fields']"))
    _shot(dialog, browser_ui.shot_path("connection-secrets-masked"))

    dialog.find_element(_by().XPATH, ".//button[normalize-space()='Save']").click()
    row_xpath = f"//tr[td[@data-testid='table-cell-connection_id'][normalize-space()='{CONN_ID}']]"
    row = _visible(driver, row_xpath)
    assert row.find_element(_by().XPATH, "td[@data-testid='table-cell-conn_type']").text == "salesforce_bulk"
    saved = stack.api("GET", f"/api/v2/connections/{CONN_ID}")
    assert saved["host"] == emulator.base_url
    assert saved["login"] == "emulator@sfbulk.example"
    assert saved["password"] == "***"  # stored, and masked by the API

    if _refuses_portless_tests(stack, emulator.base_url):
        # Airflow 3.3.2's Test button sends port 0 for a connection without a port, and the API refuses
        # it as "a different destination" (apache/airflow#73298, fixed after 3.3.2): store port 0, which
        # the provider ignores like no port, so the button reaches the provider's test_connection().
        stack.api("PATCH", f"/api/v2/connections/{CONN_ID}", params={"update_mask": "port"},
                  json={"connection_id": CONN_ID, "conn_type": "salesforce_bulk", "port": 0})
        driver.refresh()
        row = _visible(driver, row_xpath)
    row.find_element(_by().CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    # the notice of this test (the one of the save may still be showing)
    toast = _visible(driver, "//*[@data-scope='toast'][@data-part='root'][contains(., 'Test Connection')]")
    _wait(driver, lambda _: "Connected to" in toast.text or "Failed" in toast.text)
    assert "Test Connection Successful" in toast.text, toast.text
    assert f"Connected to {emulator.base_url}" in toast.text
    assert "API requests left today" in toast.text
    driver.save_screenshot(str(browser_ui.shot_path("connection-test-successful")))


def _refuses_portless_tests(stack: Any, host: str) -> bool:
    """Whether this Airflow refuses what its Test button sends for a connection without a port."""
    response = stack.request("POST", "/api/v2/connections/test", json={
        "connection_id": CONN_ID, "conn_type": "salesforce_bulk", "host": host, "port": 0})
    return response.status_code == 400 and "differs from the stored connection" in response.text


def test_finished_ingest_task_links_to_its_job(browser_ui, driver, tmp_path):  # failure screenshot
    stack = browser_ui.stack
    dag_id, run_id, task_id = "sfbulk_first_steps", browser_ui.run_id, "load_accounts"
    loaded = stack.xcom(dag_id, run_id, task_id)
    assert len(loaded["job_ids"]) == 1, loaded
    expected = (f"{browser_ui.emulator.base_url}/lightning/setup/AsyncApiJobStatus/page"
                f"?address=%2F{loaded['job_ids'][0]}")

    driver.get(f"{stack.base_url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id)}/tasks/{task_id}")
    _clickable(driver, "//button[@role='tab'][normalize-space()='Details'] | //a[normalize-space()='Details']"
               ).click()
    link = _clickable(driver, f"//a[normalize-space()='{LINK_NAME}']")
    assert link.get_attribute("href") == expected
    panel = link.find_element(_by().XPATH, "ancestor::*[.//*[normalize-space()='Extra Links']][1]")
    driver.save_screenshot(str(browser_ui.shot_path("task-extra-link")))
    assert panel.is_displayed()

    before = set(driver.window_handles)
    link.click()
    _wait(driver, lambda d: len(set(d.window_handles) - before) == 1)
    driver.switch_to.window((set(driver.window_handles) - before).pop())
    _wait(driver, lambda d: d.current_url == expected)
    # the emulator's stand-in for Setup's job page: the job the task ran, finished
    heading = _visible(driver, "//h1")
    assert heading.text == f"Bulk Data Load Job {loaded['job_ids'][0]}"
    assert driver.find_element(_by().XPATH, "//td[@data-field='Status']").text == "JobComplete"
    assert driver.find_element(_by().XPATH, "//td[@data-field='Records Processed']").text == "2"
