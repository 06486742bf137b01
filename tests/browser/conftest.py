"""The Airflow UI in a real browser: an Airflow API server (the React UI) with the provider installed,
a finished run of the getting-started DAG in the same ``AIRFLOW_HOME``, the emulator as a process, and
headless Chromium driven by Selenium.

Chromium and its driver are Debian's (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; scripts/test
installs them): nothing is downloaded at run time, Selenium Manager included. Without them the tests
skip, saying what is missing.

The API server is :class:`AirflowStack` of ``tests/e2e/conftest.py`` reduced to that one component; the
finished task comes from ``airflow dags test`` (in-process, triggers included), run while the API server
starts.

Screenshots go to the test's temporary folder; ``SFBULK_REFRESH_SCREENSHOTS=1`` writes the ones the docs
show into ``docs/images/`` instead. A failing test saves the page it was on as ``failure-<test>.png`` in
its temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from stack_processes import HTTP

from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_dict, start_emulator_process

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Flags that let Chromium run as root in a container and keep it off the network (this one is closed:
#: its background connections would be refused and slow every page down).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900", "--force-device-scale-factor=1",
)
FIRST_DAG_ID = "sfbulk_first_steps"
FIRST_DAG_CSV = "/tmp/sfbulk-first-steps/accounts.csv"


def _load_e2e_stack() -> Any:
    """``tests/e2e/conftest.py`` as a plain module (its :class:`AirflowStack` and process helpers)."""
    name = "sfbulk_e2e_stack"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "e2e" / "conftest.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


_E2E = _load_e2e_stack()


class ApiServerStack(_E2E.AirflowStack):  # type: ignore[misc,name-defined]
    """The API server (REST API and UI) alone: nothing is scheduled, runs come from ``airflow dags test``."""

    def start_api_server(self) -> None:
        self.migrate()
        self.start_component("api-server")

    def wait_api_server(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = HTTP.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                if response.status_code == 200 and response.json()["metadatabase"]["status"] == "healthy":
                    return
                last = response.text
            except (requests.RequestException, ValueError, KeyError) as err:
                last = str(err)
            time.sleep(0.5)
        raise TimeoutError(f"the API server did not answer: {last}\n{self.diagnostics()}")

    def dags_test(self, dag_id: str) -> subprocess.Popen[bytes]:
        """Start ``airflow dags test DAG_ID`` (in its own session); its output goes to ``dags-test.out``."""
        return self.spawn("dags-test", "dags", "test", dag_id)

    def check_alive(self) -> None:
        process = self.processes.get("api-server")
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}\n{self.diagnostics()}")

    def diagnostics(self, runs: dict[str, str] | None = None) -> str:
        parts = [super().diagnostics(runs)]
        for name in ("api-server.out", "dags-test.out"):
            path = self.home / name
            if path.exists():
                parts.append(f"--- {name} (tail) ---\n"
                             + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)


def getting_started_dag(csv_path: Path) -> str:
    """The first DAG of docs/getting-started.md, reading its CSV from ``csv_path``."""
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    blocks = [block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
              if f'dag_id="{FIRST_DAG_ID}"' in block]
    assert len(blocks) == 1, f"docs/getting-started.md should hold one {FIRST_DAG_ID} DAG"
    code = "\n".join(line[3:] if line.startswith("   ") else line for line in blocks[0].splitlines())
    assert FIRST_DAG_CSV in code, f"the {FIRST_DAG_ID} DAG no longer reads {FIRST_DAG_CSV}"
    return code.replace(FIRST_DAG_CSV, str(csv_path))


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Debian's Chromium and chromedriver, and Selenium; the browser tests skip (saying why) without them."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(f"browser tests need Debian's chromium and chromium-driver: {', '.join(missing)} missing "
                    "(scripts/test installs them with apt-get)")
    pytest.importorskip("selenium", reason="browser tests need selenium (the dev extra)")
    return CHROMIUM, CHROMEDRIVER


@dataclass
class BrowserUi:
    """The running UI, the emulator behind its connections and the finished run of the first DAG."""

    stack: ApiServerStack
    emulator: EmulatorProcess
    run_id: str
    shots: Path

    def shot_path(self, name: str) -> Path:
        return self.shots / f"{name}.png"


@pytest.fixture(scope="module")
def browser_ui(chromium: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserUi]:
    """Emulator, API server and a finished ``sfbulk_first_steps`` run; everything stopped at the end."""
    root = tmp_path_factory.mktemp("browser")
    refresh = os.environ.get("SFBULK_REFRESH_SCREENSHOTS", "") not in ("", "0")
    shots = DOCS / "images" if refresh else root / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    dags = root / "dags"
    dags.mkdir()
    csv_path = root / "accounts.csv"
    csv_path.write_text("External_Id__c,Name,Industry\nACME-1,Acme,Manufacturing\nGLOBEX-1,Globex,Energy\n",
                        encoding="utf-8")
    (dags / f"{FIRST_DAG_ID}.py").write_text(getting_started_dag(csv_path), encoding="utf-8")
    with ExitStack() as resources:
        emulator = resources.enter_context(start_emulator_process(root / "emulator"))
        stack = ApiServerStack(
            home=root / "airflow-home",
            dags_folder=dags,
            extra_env={
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT": json.dumps(connection_dict(emulator)),
                "AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH": str(root / "results"),
            },
        )
        leftovers: list[str] = []
        try:
            stack.start_api_server()
            run = stack.dags_test(FIRST_DAG_ID)
            stack.wait_api_server()
            try:
                code = run.wait(timeout=150)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"airflow dags test {FIRST_DAG_ID} ended with {code}\n{stack.diagnostics()}"
            runs = stack.api("GET", f"/api/v2/dags/{FIRST_DAG_ID}/dagRuns")["dag_runs"]
            assert [r["state"] for r in runs] == ["success"], runs
            yield BrowserUi(stack, emulator, str(runs[0]["dag_run_id"]), shots)
        finally:
            leftovers = stack.stop()
        assert not leftovers, f"processes left running in the groups of: {leftovers}"


@pytest.fixture(scope="module")
def driver(chromium: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium through Debian's chromedriver (Selenium Manager never runs)."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = chromium
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path_factory.getbasetemp()))
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        browser = getattr(item, "funcargs", {}).get("driver")
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        if browser is not None and tmp_path is not None:
            target = Path(tmp_path) / f"failure-{item.name}.png"
            try:
                browser.save_screenshot(str(target))
                report.sections.append(("browser", f"screenshot of the failing page: {target}"))
            except Exception as err:  # the browser itself may be what failed
                report.sections.append(("browser", f"no screenshot: {err}"))
    return report
