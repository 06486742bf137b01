"""The distributed stack of tests/distributed (see stack.py), one per module, stopped even on failure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from stack import REPO, DistributedStack, Servers, Unavailable
from stack_processes import http_json

from airflow_provider_sfbulk.emulator.testing import EmulatorProcess, connection_dict, start_emulator_process

HERE = Path(__file__).resolve().parent
RESULTS_BASE = "s3://aws_default@sfbulk/results"


@dataclass
class Distributed:
    stack: DistributedStack
    servers: Servers
    emulator: EmulatorProcess
    request_log: Path

    def emulator_api(self, method: str, path: str, **kwargs: Any) -> Any:
        return http_json(method, f"{self.emulator.base_url}{path}", **kwargs)

    def records(self, object_name: str) -> list[dict[str, Any]]:
        return list(self.emulator_api("GET", f"/__emulator/records/{object_name}")["records"])

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    root = tmp_path_factory.mktemp("distributed")
    request_log = root / "emulator-requests.jsonl"
    with ExitStack() as cleanup:
        servers = Servers(root)
        leftovers: list[str] = []
        cleanup.callback(lambda: leftovers.extend(servers.stop()))
        try:
            servers.start()
        except Unavailable as missing:
            pytest.skip(f"distributed suite: {missing}")
        emulator = cleanup.enter_context(start_emulator_process(
            root / "emulator",
            # Jobs take 10 s, as in e2e (a trigger firing before the scheduler has seen the defer would
            # hit apache/airflow#67287); ten job threads so that ten jobs run side by side.
            extra_args=["--seed-records", "Account=20", "--seed-records", "Opportunity=1200", "--seed", "7",
                        "--batch-delay", "10", "--query-delay", "10", "--workers", "10",
                        "--request-log", str(request_log)],
        ))
        aws = {"conn_type": "aws", "login": "testing", "password": "testing",
               "extra": {"endpoint_url": servers.s3_url, "region_name": "us-east-1"}}
        stack = DistributedStack(
            root=root / "machines", servers=servers, dag_sources=[REPO / "example_dags", HERE / "dags"],
            extra_env={
                "AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT": json.dumps(connection_dict(emulator)),
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
                "AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH": RESULTS_BASE,
                "SFBULK_EXAMPLE_POLL_SECONDS": "2",
            },
        )
        cleanup.callback(lambda: leftovers.extend(stack.stop()))
        # the tests read results through the same AWS connection as the workers
        environment = cleanup.enter_context(pytest.MonkeyPatch.context())
        environment.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(aws))
        stack.start()
        yield Distributed(stack, servers, emulator, request_log)
    assert not leftovers, f"processes left running in the groups of: {leftovers}"
