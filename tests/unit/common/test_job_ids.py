"""parse_job_ids: the shapes DAG authors pass job ids in."""

from __future__ import annotations

import pytest

from airflow_provider_sfbulk.common.job_ids import parse_job_ids

A, B = "750000000000001AAA", "750000000000002AAA"


@pytest.mark.parametrize(
    "value",
    [[A, B], (A, B), {"job_ids": [A, B]}, f"['{A}', '{B}']", f'["{A}", "{B}"]', f"{A}, {B}", f"{A} {B}",
     [A, B, A]],
)
def test_shapes(value):
    assert parse_job_ids(value) == [A, B]


def test_one_id_and_15_chars():
    assert parse_job_ids(A) == [A]
    assert parse_job_ids(A[:15]) == [A[:15]]


@pytest.mark.parametrize("value", ["", [], "[]", "750", ["x" * 18 + "!"], 42])
def test_rejects(value):
    with pytest.raises((ValueError, SyntaxError)):
        parse_job_ids(value)
