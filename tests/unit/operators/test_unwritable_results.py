"""A results folder that cannot be written fails the task before any job exists."""

from __future__ import annotations

from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

pytestmark = pytest.mark.usefixtures("results_base")


def jobs(server: Any, kind: str) -> list[dict[str, Any]]:
    response = ApiSession(server).get(f"/jobs/{kind}")
    response.raise_for_status()
    return response.json()["records"]


@pytest.fixture
def blocked(tmp_path):
    """A folder that cannot exist: a file stands where one of its parents should be (root or not)."""
    (tmp_path / "a-file").write_text("not a folder")
    return str(tmp_path / "a-file" / "results")


def test_ingest_refuses_before_creating_a_job(emulator, salesforce_conn, tmp_path, blocked):
    salesforce_conn(emulator)
    source = tmp_path / "a.csv"
    source.write_text("Name\nA\nB\n")
    op = SalesforceBulkIngestOperator(
        task_id="load", source=str(source), object_name="Account", operation="insert",
        results_path=blocked, deferrable=False,
    )
    with pytest.raises(AirflowFailException, match=r"results folder .*a-file/results cannot be written"):
        op.execute({"ti": FakeTI()})
    assert jobs(emulator, "ingest") == []


def test_query_refuses_before_creating_a_job(emulator, salesforce_conn, blocked):
    salesforce_conn(emulator)
    op = SalesforceBulkQueryOperator(
        task_id="extract", soql="SELECT Id FROM Account", results_path=blocked, deferrable=False
    )
    with pytest.raises(AirflowFailException, match=r"cannot be written.*no query job was created"):
        op.execute({"ti": FakeTI()})
    assert jobs(emulator, "query") == []
