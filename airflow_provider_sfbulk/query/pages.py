"""Download one result page of a query job into its own file, counted and checked on the way.

A page goes from the socket straight into storage through a :class:`~airflow_provider_sfbulk.csvio.tee.
CsvTee` (compressed on the way when the pages are stored gzipped), which counts its records honouring
quotes, hashes what is stored and keeps its header line. The count must equal the page's
``Sforce-NumberOfRecords`` header, and the CSV must close its quotes.

The hook already retries a failed request with backoff (and restarts an interrupted body while nothing
was written). When it gives up with a transient error, or a compressed transfer arrives damaged, the
page alone is fetched again from scratch into a fresh file, as the extract's
:attr:`~airflow_provider_sfbulk.query.options.ExtractOptions.page_retry_policy` allows; the pages already
stored stay as they are. The tee is not restartable, so the hook never rewinds a page file itself.
"""

from __future__ import annotations

import logging
import threading
import zlib
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.common.threads import Cancelled, HookPerThread
from airflow_provider_sfbulk.csvio.errors import CsvShapeError
from airflow_provider_sfbulk.csvio.tee import CsvTee
from airflow_provider_sfbulk.exceptions import SalesforceBulkTransientError
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.manifest import PARTS_FOLDER, PageEntry, PageSpec

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
    from airflow_provider_sfbulk.query.options import ExtractOptions

__all__ = ["PageDownloader", "page_file_name"]

_log = logging.getLogger(__name__)

#: Failures after which a page is fetched again: the hook gave up on a transient error, or a compressed
#: transfer arrived damaged.
_RETRYABLE = (SalesforceBulkTransientError, zlib.error, EOFError)


def page_file_name(options: ExtractOptions, index: int) -> str:
    """File of page ``index``, relative to the destination (single-file extracts keep parts aside)."""
    if options.output == "single":
        return f"{PARTS_FOLDER}/part-{index:05d}.csv"
    return f"part-{index:05d}{options.suffix}"


class PageDownloader:
    """Downloads pages of one query job, each into its own file; safe to call from several threads.

    :param hooks: the hook of each thread.
    :param stop: set when another page failed: a download in flight stops at its next chunk.
    """

    def __init__(
        self,
        hooks: HookPerThread[SalesforceBulkHook],
        job_id: str,
        destination: ObjectStoragePath,
        options: ExtractOptions,
        stop: threading.Event,
    ) -> None:
        self.hooks = hooks
        self.job_id = job_id
        self.destination = destination
        self.options = options
        self.stop = stop

    def download(self, spec: PageSpec) -> tuple[PageEntry, bytes]:
        """Download page ``spec`` (again, after a transient failure, as the retry policy allows).

        Returns the page's manifest entry and its header line.

        :raises QueryExtractError: the page is not well-formed CSV, or holds another number of records
            than its ``Sforce-NumberOfRecords`` header says.
        :raises Cancelled: ``stop`` was set.
        """
        policy = self.options.page_retry_policy
        attempt = 0
        while True:
            attempt += 1
            if self.stop.is_set():
                raise Cancelled
            try:
                return self._download_once(spec, attempt)
            except _RETRYABLE as err:
                if not policy.may_retry(attempt):
                    raise
                delay = policy.backoff(attempt)
                _log.warning(
                    "Query job %s: page %d failed (%s); fetching it again in %.1fs (attempt %d of %d)",
                    self.job_id,
                    spec.index,
                    err,
                    delay,
                    attempt + 1,
                    policy.max_attempts,
                )
                if self.stop.wait(delay):
                    raise Cancelled from err

    def _download_once(self, spec: PageSpec, attempt: int) -> tuple[PageEntry, bytes]:
        name = page_file_name(self.options, spec.index)
        path = self.destination / name
        try:
            with path.open("wb") as raw:
                tee = CsvTee(raw, gzip_level=self.options.page_gzip_level, stop=self.stop, restartable=False)
                page = self.hooks.get().download_query_page(
                    self.job_id,
                    tee,
                    locator=spec.locator,
                    max_records=spec.max_records,
                    gzip=self.options.transfer_gzip,
                )
                tee.close()
            counted = tee.check_balanced()
        except CsvShapeError as err:
            raise QueryExtractError(
                f"page {spec.index} (locator {spec.locator!r}) is not well-formed CSV: {err}",
                job_id=self.job_id,
            ) from err
        if page.record_count >= 0 and counted != page.record_count:
            raise QueryExtractError(
                f"page {spec.index} (locator {spec.locator!r}) holds {counted} record(s) but its "
                f"Sforce-NumberOfRecords header says {page.record_count}",
                job_id=self.job_id,
            )
        entry = PageEntry(
            index=spec.index,
            locator=spec.locator,
            max_records=spec.max_records,
            next_locator=page.next_locator,
            file=name,
            record_count=counted,
            reported_record_count=page.record_count,
            bytes=tee.stored_bytes,
            csv_bytes=tee.csv_bytes,
            sha256=tee.sha256,
            header_bytes=tee.header_length or 0,
            attempts=attempt,
        )
        _log.info(
            "Query job %s: page %d stored (%d records, %d bytes) in %s",
            self.job_id,
            spec.index,
            counted,
            entry.bytes,
            path,
        )
        return entry, tee.header
