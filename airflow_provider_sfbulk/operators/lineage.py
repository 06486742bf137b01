"""OpenLineage for the operators: the Salesforce object, the files, the row counts and the job ids.

The OpenLineage provider (``apache-airflow-providers-openlineage``) calls each operator's
``get_openlineage_facets_on_start``, ``..._on_complete`` and ``..._on_failure``; those methods call the
functions here. Nothing in this module imports OpenLineage at module level, and the operators import this
module only inside those methods, which only the OpenLineage provider calls: without it installed the
operators never touch it.

**Datasets.** A Salesforce object is ``namespace="salesforce://<host of the org's instance URL>"``,
``name="<object API name>"`` (``Account``, ``Invoice__c``), with its columns as a ``schema`` facet: the
CSV header of an ingest source, the header of a query's result (or, before the job ran, the SOQL select
list). Files follow the naming Airflow's own providers use for object storage: ``s3://<bucket>`` (``gs://``,
``abfs://``, ...) and the key as the name; a local file is namespace ``file`` and its absolute path.

**Facets.** Output datasets carry ``outputStatistics`` (``rowCount``: rows loaded by an ingest, records
extracted by a query, rows written by the results operator). The run carries ``sfbulk_jobs``
(:class:`SalesforceBulkJobsRunFacet`: job ids, job kind, operation, object, API version). On failure the
OpenLineage provider adds the ``errorMessage`` facet itself (the task's exception, which names Salesforce's
``errorMessage``); the datasets and the job ids known so far are reported as on completion.

Lineage never fails a task: whatever cannot be learnt (the org's host without a reachable token endpoint,
a source that cannot be read) is left out of the event, with a debug log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_sfbulk.common.job_ids import parse_job_ids
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.csvio.header import parse_header
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.protocol.api import job_kind

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator
    from airflow_provider_sfbulk.operators.query import SalesforceBulkQueryOperator
    from airflow_provider_sfbulk.operators.results import SalesforceBulkJobResultsOperator

__all__ = [
    "JOBS_FACET",
    "ingest_lineage",
    "query_lineage",
    "results_lineage",
    "salesforce_namespace",
    "soql_object_and_columns",
    "storage_dataset_id",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Name of the run facet that carries the Bulk API job ids.
JOBS_FACET = "sfbulk_jobs"

#: Longest header line read from an ingest source for its columns.
MAX_HEADER_BYTES = 1 << 20

#: Most jobs the results operator looks up (one ``GET`` each) to name the objects it read from.
MAX_JOBS_DESCRIBED = 20

_SELECT = re.compile(r"^\s*select\s", re.IGNORECASE)
_FROM = re.compile(r"\sfrom\s+([A-Za-z_]\w*)", re.IGNORECASE)
_FIELD = re.compile(r"^[A-Za-z_][\w.]*$")
_WRAPPED_FIELD = re.compile(r"^\w+\(\s*([A-Za-z_][\w.]*)\s*\)$")  # toLabel(Status), convertCurrency(Amount)


# --- naming ---------------------------------------------------------------------------------------------


def salesforce_namespace(instance_url: str) -> str:
    """``salesforce://<host>`` of an instance URL (``https://acme.my.salesforce.com`` -> ``acme.my...``).

    The port stays when the URL names one (the emulator); user info, path and query never do.
    """
    parts = urlsplit(instance_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"salesforce://{host}"


def storage_dataset_id(path: Any) -> tuple[str, str]:
    """``(namespace, name)`` of a file or folder, as Airflow's providers name object storage.

    ``s3://bucket/dir/a.csv`` -> ``("s3://bucket", "dir/a.csv")``; a local path or ``file://`` URI ->
    ``("file", "/abs/path")`` (the naming of Airflow's ``common.io`` file assets).
    """
    storage = to_storage_path(path)
    protocol = storage.protocol or "file"
    key = str(storage.key)
    if protocol in ("file", "local"):
        return "file", "/" + key.lstrip("/")
    bucket = storage.bucket
    return (f"{protocol}://{bucket}" if bucket else protocol), key.lstrip("/")


def soql_object_and_columns(soql: str) -> tuple[str | None, list[str]]:
    """The object and the result columns of a simple SOQL query, by its text (no API call).

    Plain and relationship fields (``Account.Name``) and one-argument wrappers (``toLabel(Status)``)
    give a column; subqueries, aggregates and ``TYPEOF`` do not (Bulk API queries do not return them).
    """
    select = _SELECT.match(soql or "")
    if select is None:
        return None, []
    depth, found = 0, None
    for index in range(select.end() - 1, len(soql)):  # the FROM outside any subquery's parentheses
        char = soql[index]
        depth += (char == "(") - (char == ")")
        if depth == 0 and (found := _FROM.match(soql, index)) is not None:
            break
    if found is None:
        return None, []
    columns: list[str] = []
    for item in _split_top_level(soql[select.end() : found.start()]):
        item = item.strip()
        wrapped = _WRAPPED_FIELD.match(item)
        if wrapped is not None:
            columns.append(wrapped.group(1))
        elif _FIELD.match(item):
            columns.append(item)
    return found.group(1), columns


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items


def source_columns(source: Any, column_delimiter: str) -> list[str]:
    """The header names of an ingest source (its first line only)."""
    with to_storage_path(source).open("rb") as handle:
        line = handle.readline(MAX_HEADER_BYTES)
    return parse_header(line, column_delimiter)


# --- the facets -----------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _jobs_facet_class() -> type:
    """The ``sfbulk_jobs`` run facet class (defined on first use: OpenLineage is optional)."""
    from airflow.providers.common.compat.openlineage.facet import RunFacet
    from attrs import define, field

    @define
    class SalesforceBulkJobsRunFacet(RunFacet):  # type: ignore[misc, valid-type]
        """The Bulk API 2.0 jobs of a task run.

        :param jobIds: every job, in order (retry jobs of an ingest included).
        :param jobKind: ``ingest`` or ``query``.
        :param operation: ``insert``, ``upsert``, ..., ``query`` or ``queryAll``.
        :param object: the sObject API name.
        :param apiVersion: the REST API version of the connection (``62.0``).
        """

        jobIds: list[str] = field(factory=list)
        jobKind: str | None = None
        operation: str | None = None
        object: str | None = None
        apiVersion: str | None = None

    return SalesforceBulkJobsRunFacet


def jobs_facet(**values: Any) -> Any:
    """A ``sfbulk_jobs`` facet (see :func:`_jobs_facet_class`)."""
    return _jobs_facet_class()(**values)


def _safe(what: str, compute: Callable[[], T], default: T | Any) -> T:
    try:
        return compute()
    except Exception as err:  # lineage never fails a task
        log.debug("OpenLineage: could not read %s: %s", what, err)
        return default


def _dataset(kind: str, namespace: str, name: str, columns: list[str], row_count: int | None = None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )

    facets: dict[str, Any] = {}
    if columns:
        facets["schema"] = SchemaDatasetFacet(fields=[SchemaDatasetFacetFields(name=col) for col in columns])
    if kind == "input":
        return InputDataset(namespace=namespace, name=name, facets=facets)
    output_facets: dict[str, Any] = {}
    if row_count is not None:
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=int(row_count))
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def _lineage(inputs: list[Any], outputs: list[Any], jobs: Any) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={JOBS_FACET: jobs})


def _result(task_instance: Any) -> dict[str, Any]:
    """The task's ``return_value`` XCom (pushed before the OpenLineage provider asks; {} when none)."""
    if task_instance is None:
        return {}

    def pull() -> Any:
        return task_instance.xcom_pull(
            task_ids=task_instance.task_id,
            key="return_value",
            map_indexes=getattr(task_instance, "map_index", -1),
        )

    value = _safe("the task's XCom", pull, None)
    return value if isinstance(value, dict) else {}


def _namespace(hook: SalesforceBulkHook) -> str | None:
    url = _safe("the org's instance URL", lambda: hook.instance_url, None)
    return salesforce_namespace(url) if url else None


def _api_version(hook: SalesforceBulkHook) -> str | None:
    return _safe("the API version", lambda: hook.config.api_version, None)


def _storage(kind: str, path: Any, columns: list[str], row_count: int | None = None) -> list[Any]:
    if not path:
        return []
    identity = _safe("a storage path", lambda: storage_dataset_id(path), None)
    if identity is None:
        return []
    return [_dataset(kind, identity[0], identity[1], columns, row_count)]


# --- per operator ---------------------------------------------------------------------------------------


def ingest_lineage(operator: SalesforceBulkIngestOperator, task_instance: Any = None) -> OperatorLineage:
    """Input: the source file; output: the object (``rowCount`` = rows loaded), both with the CSV header.

    Without ``task_instance`` (the start event) no count and no job id is known yet.
    """
    columns = _safe(
        "the source's header", lambda: source_columns(operator.source, operator.column_delimiter), []
    )
    namespace = _namespace(operator.hook)
    result = _result(task_instance)
    job_ids = result.get("job_ids")
    if job_ids is None and task_instance is not None:  # failed before its XCom: the jobs it created
        load = getattr(operator, "_load", None)
        job_ids = _safe("the load's jobs", lambda: load.state.job_ids(), []) if load is not None else []
    outputs = []
    if namespace:
        rows = result.get("records_successful") if task_instance is not None else None
        outputs.append(_dataset("output", namespace, str(operator.object_name), columns, rows))
    return _lineage(
        _storage("input", operator.source, columns),
        outputs,
        jobs_facet(
            jobIds=list(job_ids or []),
            jobKind="ingest",
            operation=str(operator.operation),
            object=str(operator.object_name),
            apiVersion=_api_version(operator.hook),
        ),
    )


def query_lineage(operator: SalesforceBulkQueryOperator, task_instance: Any = None) -> OperatorLineage:
    """Input: the object of the SOQL; output: the result files (``rowCount`` = records extracted).

    Columns: the result's header once extracted, else the SOQL select list. The output is the results
    folder, or the one file with ``output_mode="single"``; before the job ran (the start event) it is
    known only when ``results_path`` is given.
    """
    object_name, columns = soql_object_and_columns(str(operator.soql))
    result = _result(task_instance)
    columns = list(result.get("columns") or columns)
    namespace = _namespace(operator.hook)
    inputs = [_dataset("input", namespace, object_name, columns)] if namespace and object_name else []
    files = result.get("files") or []
    if operator.output_mode == "single" and len(files) == 1:
        target = files[0]
    else:
        target = result.get("results_path") or operator.results_path
    rows = result.get("record_count") if result else None
    job_id = result.get("job_id") or getattr(operator, "_job_id", None)  # a failure pushes no XCom
    job_ids = list(result.get("job_ids") or ([job_id] if job_id else []))  # a sliced extract has several
    return _lineage(
        inputs,
        _storage("output", target, columns, rows),
        jobs_facet(
            jobIds=job_ids,
            jobKind="query",
            operation=str(operator.operation),
            object=object_name,
            apiVersion=_api_version(operator.hook),
        ),
    )


def results_lineage(operator: SalesforceBulkJobResultsOperator, task_instance: Any = None) -> OperatorLineage:
    """Input: the objects of the jobs (one ``GET`` per job, at most 20); output: the results folder.

    ``rowCount`` is the rows written: ``records`` of query jobs, all three result sets of ingest jobs.
    """
    result = _result(task_instance)
    ids = list(result.get("job_ids") or _safe("job_ids", lambda: parse_job_ids(operator.job_ids), []))
    kind = _safe("job_kind", lambda: job_kind(operator.job_kind).value, str(operator.job_kind))
    namespace = _namespace(operator.hook)
    objects: list[str] = []
    if namespace and ids and task_instance is not None:
        described = ids[:MAX_JOBS_DESCRIBED]
        objects = _safe("the jobs' objects", lambda: _objects_of(operator, described, kind), [])
    rows: int | None = None
    if result:
        if kind == "query":
            rows = result.get("records")
        else:
            rows = sum(int(result.get(name) or 0) for name in (
                "records_successful", "records_failed", "records_unprocessed"
            ))
    return _lineage(
        [_dataset("input", namespace, name, []) for name in objects] if namespace else [],
        _storage("output", result.get("results_path") or operator.results_path, [], rows),
        jobs_facet(
            jobIds=ids,
            jobKind=kind,
            object=objects[0] if len(objects) == 1 else None,
            apiVersion=_api_version(operator.hook),
        ),
    )


def _objects_of(operator: SalesforceBulkJobResultsOperator, ids: list[str], kind: str) -> list[str]:
    with SalesforceBulkHook(salesforce_conn_id=operator.salesforce_conn_id) as hook:
        names = [hook.get_job(job_id, kind).object for job_id in ids]
    return list(dict.fromkeys(name for name in names if name))
