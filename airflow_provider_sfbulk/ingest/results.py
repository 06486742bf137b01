"""Ingest job results: stream them to object storage, counting and hashing them on the way; the manifest.

Used by the ingest operator and :class:`~airflow_provider_sfbulk.operators.results.
SalesforceBulkJobResultsOperator`.

- :func:`download_job_results` streams ``successfulResults``, ``failedResults`` and
  ``unprocessedrecords`` of one job from the hook straight into ``<folder>/<job_id>/<set>.csv``
  (any :class:`ObjectStoragePath` scheme) through a :class:`~airflow_provider_sfbulk.csvio.tee.CsvTee`,
  which counts the records and computes a SHA-256 on the way; memory stays at one chunk whatever the size.
- :func:`write_manifest` writes the audit trail (JSON) beside the result files, atomically.

Failed rows are split into final failures and retries by
:func:`~airflow_provider_sfbulk.csvio.failed_rows.write_failed_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.json_files import write_json_atomic
from airflow_provider_sfbulk.csvio.tee import CsvTee
from airflow_provider_sfbulk.ingest.state import ResultFileSummary
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.states import RESULT_SETS, JobKind

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = [
    "MANIFEST_NAME",
    "JobResults",
    "download_job_results",
    "write_manifest",
]

#: File name of the manifest in a results folder.
MANIFEST_NAME = "manifest.json"

_SUCCESS, _FAILED, _UNPROCESSED = RESULT_SETS


@dataclass(frozen=True)
class JobResults:
    """The result files of one ingest job and its final JobInfo."""

    job: JobInfo
    files: dict[str, ResultFileSummary] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.id

    def count(self, result_set: str) -> int:
        """Records in one result set (0 when it was not downloaded)."""
        found = self.files.get(result_set)
        return found.records if found else 0

    @property
    def successful(self) -> int:
        """Records in ``successfulResults``."""
        return self.count(_SUCCESS)

    @property
    def failed(self) -> int:
        """Records in ``failedResults``."""
        return self.count(_FAILED)

    @property
    def unprocessed(self) -> int:
        """Records in ``unprocessedrecords``."""
        return self.count(_UNPROCESSED)

    @property
    def total(self) -> int:
        """Records over the three result sets."""
        return self.successful + self.failed + self.unprocessed

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry of this job: its final state, the three counts and the files."""
        return {
            "id": self.job.id,
            "state": self.job.state.value,
            "error_message": self.job.error_message,
            "number_records_processed": self.job.number_records_processed,
            "number_records_failed": self.job.number_records_failed,
            "records_successful": self.successful,
            "records_failed": self.failed,
            "records_unprocessed": self.unprocessed,
            "files": {name: f.to_json() for name, f in self.files.items()},
        }


def download_job_results(
    hook: Any,
    job: JobInfo | str,
    folder: ObjectStoragePath,
    *,
    result_sets: Sequence[str] = RESULT_SETS,
) -> JobResults:
    """Stream the result sets of a terminal ingest job into ``<folder>/<job_id>/<set>.csv``.

    :param hook: a :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`.
    :param job: the job's final JobInfo, or its id (then it is read first).
    """
    info = job if isinstance(job, JobInfo) else hook.get_job(job, JobKind.INGEST)
    target = folder / info.id
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, ResultFileSummary] = {}
    for result_set in result_sets:
        path = target / f"{result_set}.csv"
        with path.open("wb") as handle:
            tee = CsvTee(handle)
            hook.download_ingest_results(info.id, result_set, tee)
            tee.close()
        files[result_set] = ResultFileSummary(
            result_set, str(path), tee.records, tee.stored_bytes, tee.sha256
        )
    return JobResults(info, files)


def write_manifest(folder: ObjectStoragePath, document: dict[str, Any]) -> str:
    """Write ``document`` as ``<folder>/manifest.json`` atomically; return its URI.

    A reader never sees half of it.
    """
    return write_json_atomic(folder / MANIFEST_NAME, document, indent=2)

