"""DAG-level tests: a throw-away Airflow home (metadata DB, dags folder) for ``dag.test()``.

``scripts/test`` already runs pytest with a temporary ``AIRFLOW_HOME``; when pytest runs directly and no
``AIRFLOW_HOME`` is set, one is created here, before Airflow is imported. The metadata DB is created
once per session. Airflow 3 syncs the dags folder before ``dag.test()`` runs a DAG, so the tests write
their DAG files there (:func:`write_dag`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

if "AIRFLOW_HOME" not in os.environ and "airflow" not in sys.modules:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sfbulk-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# Unit-test mode picks LocalExecutor; sensors' reschedule check on Airflow 2.11 then refuses SQLite.
# dag.test() runs everything in this process, so the check does not apply (Airflow's own tests set the
# same flag).
os.environ.setdefault("_AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK", "1")
if "airflow" not in sys.modules:
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", tempfile.mkdtemp(prefix="sfbulk-dags-"))


def _dags_folder() -> Path:
    """The dags folder Airflow actually uses. Read from Airflow's configuration, not from the environment:
    when another test module imported Airflow first, the configuration was loaded before this file ran."""
    from airflow.configuration import conf

    folder = Path(os.path.expanduser(conf.get("core", "dags_folder")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The metadata DB, created (or migrated) once per session; returns the dags folder."""
    from airflow.utils import db

    if hasattr(db, "initdb"):
        db.initdb()
    else:  # pragma: no cover
        db.resetdb()
    return _dags_folder()


@pytest.fixture
def write_dag(airflow_db: Path) -> Iterator[Callable[[str, str, dict[str, Any]], ModuleType]]:
    """``write_dag(dag_id, source, spec)``: write a DAG file (its spec beside it as JSON) and import it."""
    written: list[Path] = []

    def write(dag_id: str, source: str, spec: dict[str, Any]) -> ModuleType:
        path = airflow_db / f"{dag_id}.py"
        path.with_suffix(".json").write_text(json.dumps(spec))
        path.write_text(source)
        written.extend([path, path.with_suffix(".json")])
        module_spec = importlib.util.spec_from_file_location(f"sfbulk_test_dag_{dag_id}", path)
        assert module_spec is not None
        assert module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module

    yield write
    for path in written:
        path.unlink(missing_ok=True)
