"""What a load is asked to do.

The object, the operation, the CSV dialect, the limits and the failure policy, checked before anything
is read or created.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_sfbulk.csvio.dialect import resolve_delimiter, resolve_line_ending
from airflow_provider_sfbulk.csvio.failed_rows import DEFAULT_RETRYABLE_ERROR_CODES
from airflow_provider_sfbulk.csvio.scanner import DEFAULT_MAX_BYTES
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.protocol.api import MULTIPART_MAX_BYTES
from airflow_provider_sfbulk.protocol.states import IngestOperation

__all__ = ["DEFAULT_MIN_BYTES_PER_JOB", "LIMITS_CHECKS", "LOCK_ERROR_CODE", "LoadSpec"]

#: The row error that lock retries deal with.
LOCK_ERROR_CODE = "UNABLE_TO_LOCK_ROW"

#: Values of ``limits_check``.
LIMITS_CHECKS = ("fail", "warn", "off")

#: Smallest part a file is cut into so that its jobs run side by side (``min_bytes_per_job``): a file under
#: twice this size stays one job; a bigger one is spread over up to ``job_concurrency`` jobs of similar
#: size (see :meth:`LoadSpec.part_bytes`).
DEFAULT_MIN_BYTES_PER_JOB = 10_000_000

#: Room above an even share (a fraction of it), so that parts cut at record boundaries still come to
#: ``job_concurrency`` and not one more small part: a part ends before the record that would not fit,
#: so each falls short of its size by less than one record (2 % of 10 MB is 200 KB).
_SHARE_SLACK_DIVISOR = 50


@dataclass
class LoadSpec:
    """The parameters of one load, as rendered (see the ingest operator for their meaning).

    Build it, then call :meth:`validate` once the values are final: it normalises the operation,
    delimiter and line ending and raises :class:`~airflow_provider_sfbulk.ingest.errors.IngestInputError`
    naming the first problem.
    """

    object_name: str
    operation: str
    external_id_field: str | None = None
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    assignment_rule_id: str | None = None
    max_bytes_per_job: int = DEFAULT_MAX_BYTES
    min_bytes_per_job: int = DEFAULT_MIN_BYTES_PER_JOB
    max_records_per_job: int | None = None
    multipart_max_bytes: int = MULTIPART_MAX_BYTES
    job_concurrency: int = 5
    upload_concurrency: int = 4
    max_failed_records: int = 0
    retry_failed_records: int = 0
    retryable_error_codes: Collection[str] = field(
        default_factory=lambda: sorted(DEFAULT_RETRYABLE_ERROR_CODES)
    )
    lock_retry: bool = False
    limits_check: str = "fail"
    limits_warn_share: float = 0.1
    allow_hard_delete: bool = False
    describe_check: bool = True
    retry_unprocessed_records: bool = True

    def check_numbers(self) -> None:
        """Checks that do not depend on templates (the operator runs them when the DAG is parsed)."""
        for name in ("job_concurrency", "upload_concurrency", "max_bytes_per_job", "min_bytes_per_job"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_failed_records", "retry_failed_records", "multipart_max_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.limits_check not in LIMITS_CHECKS:
            raise ValueError("limits_check must be 'fail', 'warn' or 'off'")
        if not 0 <= self.limits_warn_share <= 1:
            raise ValueError("limits_warn_share must be between 0 and 1")

    def validate(self) -> None:
        """Check and normalise the rendered values; raise ``IngestInputError`` naming the problem."""
        try:
            operation = IngestOperation(self.operation)
        except ValueError:
            allowed = ", ".join(op.value for op in IngestOperation)
            raise IngestInputError(f"operation must be one of {allowed}, not {self.operation!r}") from None
        self.operation = operation.value
        if operation is IngestOperation.HARD_DELETE and not self.allow_hard_delete:
            raise IngestInputError(
                "hardDelete bypasses the Recycle Bin (deleted rows cannot be restored); pass "
                "allow_hard_delete=True to run it"
            )
        if operation is IngestOperation.UPSERT and not self.external_id_field:
            raise IngestInputError("upsert needs external_id_field")
        if not self.object_name:
            raise IngestInputError("object_name is required")
        try:
            self.column_delimiter = resolve_delimiter(self.column_delimiter)[0]
            self.line_ending = resolve_line_ending(self.line_ending)
        except ValueError as err:
            raise IngestInputError(str(err)) from err

    def fingerprint(self, source: str) -> dict[str, Any]:
        """The values a resumed load must share with the one in the checkpoint."""
        return {
            "object": self.object_name,
            "operation": self.operation,
            "source": source,
            "external_id_field": self.external_id_field,
            "column_delimiter": self.column_delimiter,
            "line_ending": self.line_ending,
            "max_bytes_per_job": self.max_bytes_per_job,
            "max_records_per_job": self.max_records_per_job,
        }

    def part_bytes(self, source_bytes: int | None, concurrency: int) -> int:
        """The largest part to cut a source of ``source_bytes`` into, for jobs ``concurrency`` at a time.

        The source is spread over as many parts of similar size as run at once, but no part smaller than
        ``min_bytes_per_job`` and none larger than ``max_bytes_per_job``, so that its jobs run side by side
        instead of one full job after another: 220 MB with the defaults becomes five parts of about 45 MB
        instead of 100 + 100 + 20 MB; 25 MB two of 12.5 MB; a file up to 20 MB stays one part; 1 GB is cut
        at 100 MB. With ``min_bytes_per_job`` at or above ``max_bytes_per_job``, or a source of unknown
        size, parts are cut at ``max_bytes_per_job``.

        :param source_bytes: the size of the source file, ``None`` when it cannot be known beforehand.
        :param concurrency: jobs of the round that may run at once.
        """
        if source_bytes is None or self.min_bytes_per_job >= self.max_bytes_per_job:
            return self.max_bytes_per_job
        count = max(1, min(concurrency, source_bytes // self.min_bytes_per_job))
        share = -(-source_bytes // count)
        share += share // _SHARE_SLACK_DIVISOR
        return min(self.max_bytes_per_job, max(self.min_bytes_per_job, share))

    def job_args(self) -> dict[str, Any]:
        """Keyword arguments of the hook's job creation calls."""
        return {
            "external_id_field": self.external_id_field,
            "column_delimiter": self.column_delimiter,
            "line_ending": self.line_ending,
            "assignment_rule_id": self.assignment_rule_id,
        }

    def multipart_limit(self) -> int:
        """Largest single part sent with the one-request multipart create."""
        return min(self.multipart_max_bytes, MULTIPART_MAX_BYTES)

    def resubmits_unprocessed(self, round_number: int) -> bool:
        """True when the unprocessed rows of round ``round_number`` go into a new round."""
        return self.retry_unprocessed_records and round_number < max(1, self.retry_failed_records)

    def retry_codes(self, round_number: int) -> set[str]:
        """Error codes whose rows are sent again after round ``round_number``."""
        codes: set[str] = set()
        if round_number < self.retry_failed_records:
            codes.update(self.retryable_error_codes)
        if self.lock_retry and round_number < max(1, self.retry_failed_records):
            codes.add(LOCK_ERROR_CODE)
        return codes
