"""Fixtures shared by the operator tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def results_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ``[salesforce_bulk] results_base_path`` of the test: a fresh folder under ``tmp_path``."""
    base = tmp_path / "results"
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(base))
    return base
