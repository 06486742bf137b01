"""Write the result files of Bulk API 2.0 jobs (from XCom, or started by another system) to storage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_sfbulk.common.job_ids import parse_job_ids
from airflow_provider_sfbulk.common.paths import task_results_path, to_storage_path
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
from airflow_provider_sfbulk.ingest.results import download_job_results, write_manifest
from airflow_provider_sfbulk.links.job import SalesforceBulkJobLink
from airflow_provider_sfbulk.operators.base import SalesforceBulkBaseOperator
from airflow_provider_sfbulk.protocol.api import job_kind
from airflow_provider_sfbulk.protocol.states import RESULT_SETS, JobKind, JobState
from airflow_provider_sfbulk.protocol.waiting import WaitOutcome
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.extract import extract_query_results

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["SalesforceBulkJobResultsOperator"]


class SalesforceBulkJobResultsOperator(SalesforceBulkBaseOperator):
    """Stream the result files of finished jobs to object storage and push their paths (never records).

    Jobs still running are waited for first (deferred or polling, as the base operator does) unless
    ``wait_for_completion=False``, in which case a running job fails the task. Ingest jobs give three files
    each (``successfulResults``, ``failedResults``, ``unprocessedrecords``: ``<results_path>/<job_id>/
    <set>.csv``); query jobs one file per result page (``<job_id>/part-00000.csv``..., each with its
    header) and the job's own ``<job_id>/manifest.json``, written by the query extraction path
    (:func:`~airflow_provider_sfbulk.query.extract.extract_query_results`): every page's count is
    checked against its ``Sforce-NumberOfRecords`` and the total against ``numberRecordsProcessed``
    (a mismatch fails the task naming the page), pages come from ``resultPages`` in parallel where the
    API version has it, and a rerun into the same folder downloads only the pages it lacks. Counts and
    SHA-256 of every file go to a ``manifest.json`` in ``results_path``.

    XCom for ingest jobs::

        {"job_kind": "ingest", "job_ids": [...], "results_path": uri, "manifest": uri,
         "records_successful": n, "records_failed": n, "records_unprocessed": n,
         "successful_results": [uri...], "failed_results": [uri...], "unprocessed_records": [uri...],
         "jobs": [{"id", "state", "error_message", "records_successful", "records_failed",
                   "records_unprocessed"}]}

    For query jobs: ``records`` and ``results`` (page files) instead of the three lists; ``jobs`` entries
    carry ``records``. Failed or aborted jobs do not fail the task unless ``fail_on_job_failure``.

    :param job_ids: ids (templated): a list, one id, an ingest operator XCom, or rendered list text.
    :param job_kind: ``ingest`` or ``query``.
    :param results_path: folder (templated); default ``<results base>/<dag>/<run>/<task>/try-<n>``.
    :param wait_for_completion: wait for running jobs (default True).
    :param fail_on_job_failure: fail the task, after writing the files, when a job ended ``Failed`` or
        ``Aborted``.
    :param cancel_on_kill: abort the jobs when this task is killed while waiting for them. Default False:
        the jobs belong to whoever created them (another task or system), not to this task.
    """

    template_fields: Sequence[str] = ("salesforce_conn_id", "job_ids", "results_path")
    operator_extra_links = (SalesforceBulkJobLink(),)

    def __init__(
        self,
        *,
        job_ids: Any,
        job_kind: str = "ingest",
        results_path: Any = None,
        wait_for_completion: bool = True,
        fail_on_job_failure: bool = False,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(cancel_on_kill=cancel_on_kill, **kwargs)
        self.job_ids = job_ids
        self.job_kind = job_kind
        self.results_path = results_path
        self.wait_for_completion = wait_for_completion
        self.fail_on_job_failure = fail_on_job_failure

    def _ids(self) -> list[str]:
        try:
            return parse_job_ids(self.job_ids)
        except (ValueError, SyntaxError) as err:
            raise AirflowException(f"job_ids: {err}") from err

    def execute(self, context: Context) -> dict[str, Any]:
        """Wait for the jobs (unless ``wait_for_completion=False``), then write their results."""
        ids = self._ids()
        kind = job_kind(self.job_kind)
        try:
            SalesforceBulkJobLink.persist(context, instance_url=self.hook.instance_url, job_ids=ids)
        except Exception as err:
            self.log.debug("Could not store the job link: %s", err)
        if self.wait_for_completion:
            outcome = self.wait_for_jobs(context, ids, kind.value, method_name="execute_complete")
            return self._write(context, outcome)
        jobs = [self.hook.get_job(job_id, kind) for job_id in ids]
        running = [f"{job.id} ({job.state.value})" for job in jobs if not job.state.is_terminal]
        if running:
            raise AirflowException(f"job(s) not finished: {', '.join(running)} (wait_for_completion=False)")
        return self._write(context, None)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: write the results."""
        return self._write(context, self.outcome_from_event(event))

    def _write(self, context: Context, outcome: WaitOutcome | None) -> dict[str, Any]:
        if outcome is not None and outcome.status == "timeout":
            raise AirflowException(f"timeout ({self.timeout}s) reached: {outcome.message}")
        self._active_job_ids = []
        ids = self._ids()
        kind = job_kind(self.job_kind)
        folder = to_storage_path(self.results_path) if self.results_path else task_results_path(context)
        started = datetime.now(timezone.utc).isoformat()
        result: dict[str, Any] = {"job_kind": kind.value, "job_ids": ids, "results_path": str(folder)}
        if kind is JobKind.INGEST:
            jobs = self._write_ingest(ids, folder, result)
        else:
            jobs = self._write_query(ids, folder, result)
        manifest = {"job_kind": kind.value, "written_at": started, "jobs": jobs}
        result["manifest"] = write_manifest(folder, manifest)
        result["jobs"] = [
            {key: value for key, value in job.items() if key not in ("files", "manifest")} for job in jobs
        ]
        broken = [job for job in jobs if job["state"] != JobState.JOB_COMPLETE.value]
        if broken and self.fail_on_job_failure:
            details = "; ".join(
                f"{j['id']} {j['state']}: {j['error_message'] or 'no errorMessage'}" for j in broken
            )
            context["ti"].xcom_push(key="return_value", value=result)
            raise AirflowException(f"{len(broken)} job(s) did not complete: {details}")
        return result

    def _write_ingest(self, ids: list[str], folder: Any, result: dict[str, Any]) -> list[dict[str, Any]]:
        """The three result sets of each ingest job, into ``<folder>/<job_id>/<set>.csv``."""
        jobs: list[dict[str, Any]] = []
        lists: dict[str, list[str]] = {name: [] for name in RESULT_SETS}
        for job_id in ids:
            results = download_job_results(self.hook, job_id, folder)
            jobs.append(results.to_dict())
            for name, found in results.files.items():
                if found.records:
                    lists[name].append(found.uri)
            self.log.info(
                "Job %s %s: successful=%d failed=%d unprocessed=%d",
                job_id,
                results.job.state.value,
                results.successful,
                results.failed,
                results.unprocessed,
            )
        result.update(
            records_successful=sum(j["records_successful"] for j in jobs),
            records_failed=sum(j["records_failed"] for j in jobs),
            records_unprocessed=sum(j["records_unprocessed"] for j in jobs),
            successful_results=lists["successfulResults"],
            failed_results=lists["failedResults"],
            unprocessed_records=lists["unprocessedrecords"],
        )
        return jobs

    def _write_query(self, ids: list[str], folder: Any, result: dict[str, Any]) -> list[dict[str, Any]]:
        """Extract each complete query job's pages through the query extraction path.

        Into ``<folder>/<job_id>/`` with that job's own manifest, counts checked, resumable.
        """
        conn_id = self.salesforce_conn_id
        jobs: list[dict[str, Any]] = []
        pages: list[str] = []
        for job_id in ids:
            info = self.hook.get_job(job_id, JobKind.QUERY)
            entry: dict[str, Any] = {
                "id": info.id,
                "state": info.state.value,
                "error_message": info.error_message,
            }
            if info.state is JobState.JOB_COMPLETE:
                try:
                    extract = extract_query_results(
                        lambda: SalesforceBulkHook(salesforce_conn_id=conn_id), info.id, folder / info.id
                    )
                except QueryExtractError as err:
                    raise AirflowException(str(err)) from err
                entry.update(records=extract.record_count, manifest=extract.manifest, files=extract.files)
                pages.extend(extract.files)
            else:
                entry.update(records=0, files=[])
            jobs.append(entry)
            self.log.info(
                "Job %s %s: %d record(s) in %d file(s)",
                job_id,
                info.state.value,
                entry["records"],
                len(entry["files"]),
            )
        result.update(records=sum(j["records"] for j in jobs), results=pages)
        return jobs

    # --- lineage (called by the OpenLineage provider only) ----------------------------------------------

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage datasets known before the run (:mod:`~airflow_provider_sfbulk.operators.lineage`)."""
        from airflow_provider_sfbulk.operators.lineage import results_lineage

        return results_lineage(self)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets, row counts and job ids of the finished run."""
        from airflow_provider_sfbulk.operators.lineage import results_lineage

        return results_lineage(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage datasets and the job ids so far (the provider adds the error message)."""
        from airflow_provider_sfbulk.operators.lineage import results_lineage

        return results_lineage(self, task_instance)
