"""Security tests: a throw-away Airflow home for ``dag.test()``, and the secret scanner.

As in ``tests/dags/conftest.py``, an ``AIRFLOW_HOME`` (and a dags folder) is created before Airflow is
imported when pytest runs without one; the metadata DB is created once per session.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

if "AIRFLOW_HOME" not in os.environ and "airflow" not in sys.modules:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sfbulk-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("_AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK", "1")
if "airflow" not in sys.modules:
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", tempfile.mkdtemp(prefix="sfbulk-dags-"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata DB, created (or migrated) once per session; returns the dags folder."""
    from airflow.configuration import conf
    from airflow.utils import db

    if hasattr(db, "initdb"):
        db.initdb()
    else:  # pragma: no cover
        db.resetdb()
    folder = Path(os.path.expanduser(conf.get("core", "dags_folder")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
