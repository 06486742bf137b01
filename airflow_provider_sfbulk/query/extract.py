"""Query extracts: stream a finished Bulk API 2.0 query job's results into object storage.

:func:`extract_query_results` downloads every result page of a ``JobComplete`` query job into a folder
(any :class:`ObjectStoragePath`: ``file://``, ``s3://``, ``gs://``...), checks what arrived and writes a
manifest beside the files (:mod:`~airflow_provider_sfbulk.query.manifest`).

Paging
    Where the connection's API version offers it (58.0+), the pages come from ``resultPages`` (either
    answer shape, :func:`~airflow_provider_sfbulk.protocol.api.parse_result_pages`) and are fetched in
    parallel, ``concurrency`` at a time (:func:`~airflow_provider_sfbulk.common.threads.run_concurrently`,
    one hook, hence one HTTP session, per worker thread; the access token is shared). Older versions
    follow ``Sforce-Locator`` one page after the other until it reads ``null``. So does an extract whose
    ``resultPages`` answers 404 (an org without the endpoint), answers what cannot be read, or lists no
    page: it falls back to the locator chain for that job with one warning line, and the manifest records
    why (``paging_fallback``), unless ``use_result_pages=True`` insists. Locators are only ever taken from
    Salesforce (a result link or the previous page's header), never made up.

Streaming
    Every page goes from the socket straight into its own file (``part-00000.csv``...), compressed on
    the way when ``compression="gzip"`` (:mod:`~airflow_provider_sfbulk.query.pages`). For
    ``output="single"`` the pages land in ``.parts/`` first and are then copied, in page order, into one
    file, dropping every page's header line but the first; the parts are deleted afterwards.

Checks
    Each page's record count must equal its ``Sforce-NumberOfRecords``, every page must carry the same
    header line, and the sum must equal the job's ``numberRecordsProcessed``. Any mismatch raises
    :class:`~airflow_provider_sfbulk.query.errors.QueryExtractError` naming the page and both numbers.

Resuming
    A later run for the same job reads the manifest back and skips every page whose file still has the
    recorded size and checksum, so a retried task resumes after the pages it already has; a finished
    single-file extract is verified and returned again. A folder holding the extract of another job (a
    re-run of an incremental interval) is emptied of that extract's files first, so the new extract
    replaces the old one and never mixes with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.json_files import is_local
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.common.threads import HookPerThread, run_concurrently
from airflow_provider_sfbulk.csvio.tee import CsvTee
from airflow_provider_sfbulk.exceptions import SalesforceBulkNotFoundError, SalesforceBulkProtocolError
from airflow_provider_sfbulk.protocol.states import JobKind, JobState
from airflow_provider_sfbulk.query.errors import QueryExtractError
from airflow_provider_sfbulk.query.manifest import (
    COPY_CHUNK,
    PARTS_FOLDER,
    ExtractResult,
    Manifest,
    PageEntry,
    PageSpec,
    sha256_of,
    stored_size,
)
from airflow_provider_sfbulk.query.options import ExtractOptions, result_pages_supported
from airflow_provider_sfbulk.query.pages import PageDownloader

if TYPE_CHECKING:
    import os

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook
    from airflow_provider_sfbulk.protocol.api import JobInfo, ResultPageRef

__all__ = ["extract_query_results"]

_log = logging.getLogger(__name__)


def _ensure_folder(path: ObjectStoragePath) -> None:
    if is_local(path):  # object stores have no folders to create
        path.mkdir(parents=True, exist_ok=True)


class _Extract:
    """One run of :func:`extract_query_results` (see the module documentation)."""

    def __init__(
        self,
        hooks: HookPerThread[SalesforceBulkHook],
        job: JobInfo,
        destination: ObjectStoragePath,
        options: ExtractOptions,
        interval: Mapping[str, Any] | None = None,
    ) -> None:
        self.hooks = hooks
        self.job = job
        self.job_id = job.id
        self.destination = destination
        self.options = options
        self.stop = threading.Event()
        self.manifest = Manifest(destination, job, options, interval)
        self.pages = PageDownloader(hooks, job.id, destination, options, self.stop)
        self.resumed = 0

    @property
    def _single_name(self) -> str:
        return f"{self.options.file_name}{self.options.suffix}"

    # --- the two paging flavours ------------------------------------------------------------------

    def _fetch(self, spec: PageSpec) -> PageEntry:
        """Download one page, check its header against the others and record it in the manifest."""
        entry, header = self.pages.download(spec)
        self.manifest.check_header(entry, header)
        self.manifest.record(entry)
        return entry

    def list_result_pages(self) -> tuple[list[ResultPageRef], str | None]:
        """The pages ``resultPages`` lists, or none and why they cannot be used."""
        try:
            refs = self.hooks.get().get_result_pages(
                self.job_id, max_records=self.options.max_records_per_page
            )
        except SalesforceBulkNotFoundError as err:
            return [], f"resultPages answered 404 (an org without the endpoint): {err}"
        except SalesforceBulkProtocolError as err:
            return [], f"resultPages answered in a shape that cannot be read: {err}"
        if not refs:
            return [], (
                f"resultPages listed no page while the job reports {self.job.number_records_processed} "
                "record(s)"
            )
        return refs, None

    def run_result_pages(self, refs: list[ResultPageRef], previous: list[PageEntry]) -> None:
        """Download the pages ``resultPages`` lists, in parallel, keeping those an earlier run stored."""
        manifest = self.manifest
        manifest.paging = "resultPages"
        specs = [PageSpec(index, ref.locator, ref.max_records) for index, ref in enumerate(refs)]
        kept = {entry.index: entry for entry in previous}
        todo: list[PageSpec] = []
        for spec in specs:
            old = kept.get(spec.index)
            if old is not None and old.key == (spec.locator, spec.max_records) and manifest.verified(old):
                manifest.keep(old)
            else:
                todo.append(spec)
        self.resumed = len(specs) - len(todo)
        if self.resumed:
            _log.info(
                "Query job %s: %d of %d page(s) kept from an earlier run",
                self.job_id,
                self.resumed,
                len(specs),
            )
        run_concurrently(
            self._fetch, todo, concurrency=self.options.concurrency, name="sfbulk-page", stop=self.stop
        )
        ordered = manifest.ordered()
        chain_ok = all(a.next_locator == b.locator for a, b in pairwise(ordered)) and (
            ordered[-1].next_locator is None
        )
        manifest.locator_chain = "consistent" if chain_ok else "inconsistent"
        if not chain_ok:
            # Not documented either way: the resultUrl locators need not be the Sforce-Locator values.
            _log.warning(
                "Query job %s: the pages' Sforce-Locator headers do not chain into the resultPages locators; "
                "relying on the record counts",
                self.job_id,
            )

    def _keep_chain_start(self, previous: list[PageEntry]) -> tuple[int, str | None]:
        """Keep the unbroken run of verified pages from the start of the chain.

        Returns ``(pages kept, next locator)``.
        """
        index, locator = 0, None
        for entry in sorted(previous, key=lambda item: item.index):
            if entry.index != index or entry.key != (locator, self.options.max_records_per_page):
                break
            if not self.manifest.verified(entry):
                break
            self.manifest.keep(entry)
            index += 1
            locator = entry.next_locator
            if locator is None:
                break
        return index, locator

    def run_locator_chain(self, previous: list[PageEntry]) -> None:
        """Follow ``Sforce-Locator`` from the first page (or after the pages an earlier run stored)."""
        self.manifest.paging = "locator"
        index, locator = self._keep_chain_start(previous)
        self.resumed = index
        if index:
            _log.info("Query job %s: %d page(s) kept from an earlier run", self.job_id, index)
        done = index > 0 and locator is None
        seen = {entry.locator for entry in self.manifest.entries.values()}
        while not done:
            entry = self._fetch(PageSpec(index, locator, self.options.max_records_per_page))
            seen.add(locator)
            if entry.next_locator is not None and entry.next_locator in seen:
                raise QueryExtractError(
                    f"page {index} names locator {entry.next_locator!r} as the next page, which was already "
                    "read: the locator chain loops",
                    job_id=self.job_id,
                )
            locator = entry.next_locator
            index += 1
            done = locator is None
        self.manifest.locator_chain = "consistent"

    # --- single file ------------------------------------------------------------------------------

    def join_pages(self) -> dict[str, Any]:
        """Copy the parts in order into one file, keeping only the first page's header line."""
        target = self.destination / self._single_name
        entries = self.manifest.ordered()
        gzip_level = self.options.gzip_level if self.options.compression == "gzip" else None
        with target.open("wb") as raw:
            out = CsvTee(raw, gzip_level=gzip_level, restartable=False)
            header_written = False
            for entry in entries:
                with (self.destination / entry.file).open("rb") as part:
                    skip = entry.header_bytes if header_written else 0
                    if skip and len(part.read(skip)) != skip:
                        raise QueryExtractError(
                            f"part {entry.file} is shorter than its header", job_id=self.job_id
                        )
                    while chunk := part.read(COPY_CHUNK):
                        out.write(chunk)
                header_written = header_written or entry.header_bytes > 0
            out.close()
        total = sum(entry.record_count for entry in entries)
        if out.records != total:
            raise QueryExtractError(
                f"{self._single_name} holds {out.records} record(s) once joined, the pages {total}",
                job_id=self.job_id,
            )
        return {
            "file": self._single_name,
            "bytes": out.stored_bytes,
            "sha256": out.sha256,
            "record_count": total,
        }

    def _remove_stale(self, stale: set[str]) -> None:
        """Delete files an earlier run listed that the finished extract does not include."""
        for name in sorted(stale):
            path = self.destination / name
            try:
                if path.exists():
                    path.unlink()
            except (OSError, ValueError) as err:  # leftovers only cost space; fsspec: ValueError for a folder
                _log.warning("Could not delete %s: %s", path, err)

    def remove_parts(self) -> None:
        """Delete the joined parts, and whatever an earlier manifest listed that is not the output."""
        parts = {entry.file for entry in self.manifest.entries.values()}
        self._remove_stale((parts | self.manifest.previous_files) - {self._single_name})
        if is_local(self.destination / PARTS_FOLDER):
            try:
                (self.destination / PARTS_FOLDER).rmdir()
            except OSError:
                pass

    def finished_single(self, document: dict[str, Any] | None) -> ExtractResult | None:
        """A single-file extract that an earlier run completed: verify it and return it again."""
        if document is None or not document.get("complete") or self.options.output != "single":
            return None
        files = document.get("files") or []
        if len(files) != 1 or files[0].get("file") != self._single_name:
            return None
        target = self.destination / self._single_name
        if stored_size(target) != files[0].get("bytes") or sha256_of(target) != files[0].get("sha256"):
            return None
        manifest = self.manifest
        for entry in manifest.previous_entries(document):
            manifest.entries[entry.index] = entry
        header = document.get("header")
        manifest.first_header = header.encode("utf-8") if header else None
        manifest.paging = document.get("paging") or manifest.paging
        manifest.paging_fallback = document.get("paging_fallback")
        manifest.locator_chain = document.get("locator_chain")
        self.resumed = len(manifest.entries)
        self.remove_parts()  # a crash may have come between the manifest and the clean-up
        return self.result([str(target)], manifest.check_total())

    # --- the whole run ----------------------------------------------------------------------------

    def result(self, files: list[str], total: int) -> ExtractResult:
        """What the extract produced."""
        entries = self.manifest.ordered()
        return ExtractResult(
            job_id=self.job_id,
            files=files,
            record_count=total,
            columns=self.manifest.columns() or [],
            manifest=str(self.manifest.path),
            results_path=str(self.destination),
            pages=entries,
            resumed_pages=self.resumed,
            paging=self.manifest.paging,
            paging_fallback=self.manifest.paging_fallback,
            retries=self.job.retries,
            total_processing_time=self.job.total_processing_time,
            bytes_stored=sum(entry.bytes for entry in entries),
            csv_bytes=sum(entry.csv_bytes for entry in entries),
        )

    def download(self, previous: list[PageEntry]) -> None:
        """Download every page the folder lacks; the manifest keeps what was stored if anything fails."""
        if self.options.output == "single":
            _ensure_folder(self.destination / PARTS_FOLDER)
        use_pages = self.options.use_result_pages
        if use_pages is None:
            use_pages = result_pages_supported(self.hooks.get().config.api_version)
        try:
            refs: list[ResultPageRef] = []
            if use_pages:
                refs, why = self.list_result_pages()
                if why is not None:
                    if self.options.use_result_pages:
                        raise QueryExtractError(f"{why} (use_result_pages=True)", job_id=self.job_id)
                    _log.warning("Query job %s: %s; following Sforce-Locator instead", self.job_id, why)
                    self.manifest.paging_fallback = why
            if refs:
                self.run_result_pages(refs, previous)
            else:
                self.run_locator_chain(previous)
        except BaseException:
            self.manifest.write()  # keep what was stored for the next try
            raise

    def finish(self, total: int) -> list[str]:
        """Write the output's final form (joined or pages), the complete manifest, and clean up."""
        entries = self.manifest.ordered()
        if self.options.output == "single":
            single = self.join_pages()
            self.manifest.write(complete=True, files=[single])
            self.remove_parts()
            return [str(self.destination / self._single_name)]
        page_files = [
            {"file": e.file, "bytes": e.bytes, "sha256": e.sha256, "record_count": e.record_count}
            for e in entries
        ]
        self.manifest.write(complete=True, files=page_files)
        self._remove_stale(stale=self.manifest.previous_files - {e.file for e in entries})
        return [str(self.destination / e.file) for e in entries]

    def run(self) -> ExtractResult:
        """The whole extract (see the module documentation)."""
        _ensure_folder(self.destination)
        document = self.manifest.read()
        if document is None and self.manifest.previous_files:
            # Another job's (or other settings') files: none can be kept, and none may be left beside
            # this job's pages, even if this run fails half-way (its manifest will no longer list them).
            _log.info(
                "Query job %s: deleting %d file(s) of an earlier extract in %s",
                self.job_id,
                len(self.manifest.previous_files),
                self.destination,
            )
            self._remove_stale(self.manifest.previous_files)
            self.manifest.previous_files = set()
        done = self.finished_single(document)
        if done is not None:
            _log.info("Query job %s: %s is already complete", self.job_id, done.files[0])
            return done
        self.manifest.entries.clear()
        self.download(self.manifest.previous_entries(document))
        total = self.manifest.check_total()
        files = self.finish(total)
        _log.info(
            "Query job %s: %d record(s) in %d page(s) extracted to %s",
            self.job_id,
            total,
            len(self.manifest.entries),
            self.destination,
        )
        return self.result(files, total)


def extract_query_results(
    hook_factory: Callable[[], SalesforceBulkHook],
    job_id: str,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    options: ExtractOptions | None = None,
    *,
    interval: Mapping[str, Any] | None = None,
) -> ExtractResult:
    """Download the results of ``JobComplete`` query job ``job_id`` into folder ``destination``.

    :param hook_factory: makes a :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkHook`; called
        once per download thread (each thread gets its own HTTP session; hooks are closed at the end).
    :param destination: folder for the files and ``manifest.json`` (a local path or any storage URI).
    :param options: output, compression, concurrency and retry settings (:class:`ExtractOptions`).
    :param interval: the data interval of an incremental extract, written into the manifest as ``interval``
        (:meth:`~airflow_provider_sfbulk.query.incremental.IntervalQuery.describe`).
    :raises QueryExtractError: counts or headers do not add up, or the job is not ``JobComplete``.
    :raises SalesforceBulkError: an API call failed for good.
    """
    hooks: HookPerThread[SalesforceBulkHook] = HookPerThread(hook_factory)
    try:
        job = hooks.get().get_job(job_id, JobKind.QUERY)
        if job.state is not JobState.JOB_COMPLETE:
            raise QueryExtractError(
                f"query job results can only be read once the job is JobComplete; it is {job.state.value}",
                job_id=job_id,
            )
        return _Extract(
            hooks, job, to_storage_path(destination), options or ExtractOptions(), interval
        ).run()
    finally:
        hooks.close()

