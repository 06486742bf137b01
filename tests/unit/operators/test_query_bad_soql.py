"""SOQL that Salesforce rejects (a syntax error, a clause Bulk API 2.0 does not support) fails the task at
once with Salesforce's message, no query job exists, and the task is not retried."""

from __future__ import annotations

from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator

pytestmark = pytest.mark.usefixtures("results_base")


def query_jobs(server: Any) -> list[dict[str, Any]]:
    response = ApiSession(server).get("/jobs/query")
    response.raise_for_status()
    return response.json()["records"]


@pytest.mark.parametrize(
    ("soql", "expected"),
    [
        ("SELECT Id FROM Account WHERE", r"MALFORMED_QUERY.*ERROR at Row:1:Column:29"),
        ("SELECT Name FROM Account GROUP BY Name", r"API_ERROR.*GROUP BY clause is not supported"),
        ("SELECT Id FROM Account OFFSET 5", r"API_ERROR.*OFFSET clause is not supported"),
        ("SELECT Nope__c FROM Account", r"INVALID_FIELD.*No such column 'Nope__c'"),
        ("SELECT Id FROM Widget__x", r"INVALID_TYPE.*Widget__x"),
    ],
)
def test_rejected_soql_fails_at_once_naming_the_problem(emulator, salesforce_conn, soql, expected):
    salesforce_conn(emulator)
    op = SalesforceBulkQueryOperator(task_id="extract", soql=soql, deferrable=False)
    with pytest.raises(AirflowFailException, match=rf"(?s)Salesforce rejected the query: .*{expected}"):
        op.execute({"ti": FakeTI()})
    assert query_jobs(emulator) == []
