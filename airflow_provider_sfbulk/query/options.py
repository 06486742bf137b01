"""How a query extract is downloaded and stored: :class:`ExtractOptions`, and which paging an API offers."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_sfbulk.protocol.retry import DEFAULT_RETRY_POLICY, RetryPolicy

__all__ = [
    "COMPRESSIONS",
    "OUTPUT_MODES",
    "RESULT_PAGES_MIN_API_VERSION",
    "ExtractOptions",
    "result_pages_supported",
]

#: ``output`` values: one file per result page, or one file for the whole extract.
OUTPUT_MODES = ("pages", "single")
#: ``compression`` values of the stored files.
COMPRESSIONS = (None, "gzip")
#: First API version with ``GET /jobs/query/{id}/resultPages``.
RESULT_PAGES_MIN_API_VERSION = 58.0


@dataclass(frozen=True)
class ExtractOptions:
    """How an extract is downloaded and stored.

    :param output: ``"pages"`` (one file per result page) or ``"single"`` (one file, one header).
    :param compression: ``"gzip"`` or ``None`` for the stored files.
    :param concurrency: pages downloaded at once (``resultPages`` only; the locator chain is sequential).
    :param max_records_per_page: ``maxRecords`` to ask for; ``None`` lets Salesforce choose.
    :param use_result_pages: force (``True``) or avoid (``False``) ``resultPages``; ``None`` uses it when
        the connection's API version is 58.0 or later.
    :param page_attempts: attempts per page when the hook gives up on a transient error (1 = no retry).
    :param page_retry_delay: upper bound of the first page retry's wait, in seconds; each further retry
        doubles it (exponential backoff with full jitter, :class:`~airflow_provider_sfbulk.protocol.retry.
        RetryPolicy`).
    :param file_name: base name of the single output file (``results`` gives ``results.csv[.gz]``).
    :param transfer_gzip: ask Salesforce for a gzip-compressed transfer (decompressed on the fly).
    :param gzip_level: compression level of stored gzip files (1 fastest .. 9 smallest).
    :param manifest_interval: least seconds between two manifest rewrites while pages complete.
    """

    output: str = "pages"
    compression: str | None = None
    concurrency: int = 4
    max_records_per_page: int | None = None
    use_result_pages: bool | None = None
    page_attempts: int = 3
    page_retry_delay: float = 2.0
    file_name: str = "results"
    transfer_gzip: bool = True
    gzip_level: int = 6
    manifest_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {self.output!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be 'gzip' or None, got {self.compression!r}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_records_per_page is not None and self.max_records_per_page < 1:
            raise ValueError("max_records_per_page must be positive")
        if self.page_attempts < 1:
            raise ValueError("page_attempts must be at least 1")
        if self.page_retry_delay < 0 or self.manifest_interval < 0:
            raise ValueError("delays must not be negative")
        if not 1 <= self.gzip_level <= 9:
            raise ValueError("gzip_level must be between 1 and 9")
        if not self.file_name or "/" in self.file_name or self.file_name in (".", ".."):
            raise ValueError(f"file_name must be a plain file name, got {self.file_name!r}")

    @property
    def suffix(self) -> str:
        """File name suffix of stored files: ``.csv`` or ``.csv.gz``."""
        return ".csv.gz" if self.compression == "gzip" else ".csv"

    @property
    def page_retry_policy(self) -> RetryPolicy:
        """How a page the hook gave up on is fetched again: ``page_attempts`` attempts in all."""
        return RetryPolicy(
            max_attempts=self.page_attempts,
            base_delay=self.page_retry_delay,
            max_delay=max(DEFAULT_RETRY_POLICY.max_delay, self.page_retry_delay),
        )

    @property
    def page_gzip_level(self) -> int | None:
        """Gzip level of each stored page file; ``None`` when pages are stored as received.

        A single-file extract compresses the joined file, not its parts.
        """
        return self.gzip_level if self.compression == "gzip" and self.output == "pages" else None


def result_pages_supported(api_version: str | float) -> bool:
    """True when ``resultPages`` exists in this API version (58.0+)."""
    return float(api_version) >= RESULT_PAGES_MIN_API_VERSION
