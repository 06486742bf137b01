"""Checks against the org before any job of a load exists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.split import CsvPart
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.spec import LoadSpec

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["RECORDS_PER_BATCH", "batches_needed", "check_daily_batches"]

#: Records per internal Salesforce batch; each counts against ``DailyBulkApiBatches``.
RECORDS_PER_BATCH = 10_000


def batches_needed(parts: Sequence[CsvPart]) -> int:
    """Internal batches Salesforce will count for these parts (one per started 10,000 records per job)."""
    return sum(math.ceil(part.record_count / RECORDS_PER_BATCH) for part in parts)


def check_daily_batches(
    spec: LoadSpec, parts: Sequence[CsvPart], hook: SalesforceBulkHook, log: Log
) -> None:
    """Compare the batches the load needs with the org's remaining ``DailyBulkApiBatches``.

    ``limits_check="fail"`` refuses a load that does not fit (:class:`IngestInputError`), ``"warn"``
    logs and goes on, ``"off"`` does not ask.
    """
    if spec.limits_check == "off":
        return
    needed = batches_needed(parts)
    remaining = hook.get_limits().remaining("DailyBulkApiBatches")
    if remaining is None or needed <= remaining:
        log.info("Preflight: %d batch(es) needed, %s left today", needed, remaining)
        return
    message = (
        f"the load needs about {needed} Bulk API batch(es) of {RECORDS_PER_BATCH} rows but the org has "
        f"{remaining} of its DailyBulkApiBatches left"
    )
    if spec.limits_check == "fail":
        raise IngestInputError(message + " (limits_check='warn' only warns)")
    log.warning("Preflight: %s; loading anyway (limits_check='warn')", message)
