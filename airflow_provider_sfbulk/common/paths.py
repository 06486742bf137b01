"""Where the provider writes result files and task state: one folder per dag / run / task (/ try).

The base folder is the ``[salesforce_bulk] results_base_path`` option (or the environment variable
``AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH``); any :class:`ObjectStoragePath` URI works
(``file://``, ``s3://``, ``gs://``, ``memory://``). Without it, results go to
``file://$AIRFLOW_HOME/sfbulk-results``.

Layout under the base::

    <dag_id>/<run_id>/<task_id>[/map-<i>]/try-<n>/   results of one try (fresh per try)
    <dag_id>/<run_id>/<task_id>[/map-<i>]/state/     checkpoint kept across retries
    <dag_id>/<task_id>[/map-<i>]/<interval>/          an incremental extract's results, keyed by its
                                                      data interval (the same folder on every re-run)

Each name is made safe for every storage scheme: characters other than letters, digits, ``.``, ``_``,
``-`` and ``=`` are percent-encoded (``:`` and ``+`` of a run id become ``%3A`` and ``%2B``), so two
different ids never share a folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath, conf

__all__ = [
    "RESULTS_BASE_OPTION",
    "results_base",
    "safe_name",
    "storage_conn_id",
    "task_folder",
    "task_interval_path",
    "task_series_folder",
    "task_results_path",
    "task_state_path",
    "to_storage_path",
]

#: ``(section, key)`` of the option naming the results base folder.
RESULTS_BASE_OPTION = ("salesforce_bulk", "results_base_path")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _airflow_home() -> str:
    home = os.environ.get("AIRFLOW_HOME")
    if home:
        return home
    try:
        return str(conf.get("core", "airflow_home", fallback="") or os.path.expanduser("~/airflow"))
    except Exception:  # pragma: no cover - very old configs
        return os.path.expanduser("~/airflow")


def results_base() -> ObjectStoragePath:
    """The configured results base folder; default ``file://$AIRFLOW_HOME/sfbulk-results``."""
    section, key = RESULTS_BASE_OPTION
    configured = os.environ.get(f"AIRFLOW__{section.upper()}__{key.upper()}")
    if not configured:
        configured = conf.get(section, key, fallback=None)
    if not configured:
        configured = os.path.join(_airflow_home(), "sfbulk-results")
    return to_storage_path(configured)


def to_storage_path(
    value: str | os.PathLike[str] | ObjectStoragePath, *, conn_id: str | None = None
) -> ObjectStoragePath:
    """Turn ``value`` into an :class:`ObjectStoragePath`.

    Local paths become absolute ``file://`` paths; URIs (``s3://``, ``gs://``, ``file://``,
    ``memory://``, ...) and storage paths are kept as they are.

    :param conn_id: Airflow connection of the object store, for a URI string (a URI kept as text, e.g.
        in XCom, loses the connection of the path it came from).
    """
    if isinstance(value, ObjectStoragePath):
        return value
    text = os.fspath(value)
    if not isinstance(text, str):
        raise TypeError(f"expected a path or URI string, got {type(value).__name__}")
    if _URI.match(text):
        return ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)
    return ObjectStoragePath("file://" + os.path.abspath(os.path.expanduser(text)))


def storage_conn_id(path: ObjectStoragePath) -> str | None:
    """The Airflow connection id an :class:`ObjectStoragePath` uses, if any."""
    value = getattr(path, "conn_id", None)  # Airflow 3
    if not value:
        options = getattr(path, "storage_options", None) or {}  # Airflow 2.x
        value = options.get("conn_id")
    return str(value) if value else None


def safe_name(value: object) -> str:
    """``value`` as one folder name: unsafe characters percent-encoded, never empty, never ``.``/``..``."""
    text = str(value)
    encoded = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), text)
    if encoded in ("", ".", ".."):
        encoded = encoded.replace(".", "%2E") or "%00"
    return encoded


def _ti_value(context: Mapping[str, Any], name: str) -> Any:
    ti = context.get("ti") or context.get("task_instance")
    value = getattr(ti, name, None) if ti is not None else None
    if value is None and name == "run_id":
        value = context.get("run_id")
    if value is None and name == "dag_id":
        dag = context.get("dag")
        value = getattr(dag, "dag_id", None)
    if value is None and name == "task_id":
        task = context.get("task")
        value = getattr(task, "task_id", None)
    return value


def task_folder(
    context: Mapping[str, Any], base: str | os.PathLike[str] | ObjectStoragePath | None = None
) -> ObjectStoragePath:
    """``<base>/<dag_id>/<run_id>/<task_id>[/map-<i>]`` for the task instance in ``context``."""
    root = to_storage_path(base) if base is not None else results_base()
    dag_id = _ti_value(context, "dag_id")
    run_id = _ti_value(context, "run_id")
    task_id = _ti_value(context, "task_id")
    if not (dag_id and run_id and task_id):
        raise ValueError("the context does not identify a task instance (dag_id, run_id, task_id)")
    folder = root / safe_name(dag_id) / safe_name(run_id) / safe_name(task_id)
    map_index = _ti_value(context, "map_index")
    if map_index is not None and int(map_index) >= 0:
        folder = folder / f"map-{int(map_index)}"
    return folder


def task_results_path(
    context: Mapping[str, Any], base: str | os.PathLike[str] | ObjectStoragePath | None = None
) -> ObjectStoragePath:
    """``<base>/<dag_id>/<run_id>/<task_id>[/map-<i>]/try-<n>``: a fresh folder for every try."""
    try_number = _ti_value(context, "try_number")
    return task_folder(context, base) / f"try-{int(try_number) if try_number is not None else 1}"


def task_state_path(
    context: Mapping[str, Any], base: str | os.PathLike[str] | ObjectStoragePath | None = None
) -> ObjectStoragePath:
    """``<base>/<dag_id>/<run_id>/<task_id>[/map-<i>]/state``: the same folder for every try."""
    return task_folder(context, base) / "state"


def task_series_folder(
    context: Mapping[str, Any], base: str | os.PathLike[str] | ObjectStoragePath | None = None
) -> ObjectStoragePath:
    """``<base>/<dag_id>/<task_id>[/map-<i>]``: the folder of a task's results across all its runs."""
    root = to_storage_path(base) if base is not None else results_base()
    dag_id = _ti_value(context, "dag_id")
    task_id = _ti_value(context, "task_id")
    if not (dag_id and task_id):
        raise ValueError("the context does not identify a task (dag_id, task_id)")
    folder = root / safe_name(dag_id) / safe_name(task_id)
    map_index = _ti_value(context, "map_index")
    if map_index is not None and int(map_index) >= 0:
        folder = folder / f"map-{int(map_index)}"
    return folder


def task_interval_path(
    context: Mapping[str, Any],
    interval_name: str,
    base: str | os.PathLike[str] | ObjectStoragePath | None = None,
) -> ObjectStoragePath:
    """``<base>/<dag_id>/<task_id>[/map-<i>]/<interval_name>``: one data interval's results, any run."""
    return task_series_folder(context, base) / safe_name(interval_name)
