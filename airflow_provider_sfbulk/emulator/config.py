"""Settings of one emulator instance (what the CLI flags and the test fixtures fill in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_sfbulk.emulator.faults import FaultRule
from airflow_provider_sfbulk.emulator.settings import RuntimeSettings

#: Fixed, documented fixture credentials; every one can be changed with a flag.
DEFAULT_CLIENT_ID = "sfbulk-emulator-client"
DEFAULT_CLIENT_SECRET = "sfbulk-emulator-secret"
DEFAULT_USERNAME = "emulator@sfbulk.example"
DEFAULT_PASSWORD = "emulator-password"
DEFAULT_SECURITY_TOKEN = "EMULATORTOKEN123"

#: API versions the emulator answers (Bulk API 2.0 ingest exists since 41.0).
MIN_API_VERSION = 41
MAX_API_VERSION = 66


@dataclass
class EmulatorConfig:
    """Everything an emulator instance needs to start.

    ``data_dir=None`` makes the server create (and remove at stop) a temporary directory.
    ``port=0`` binds a free port; the real one is in ``EmulatorServer.base_url``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None
    schema_path: Path | None = None
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    security_token: str = DEFAULT_SECURITY_TOKEN
    #: PEM public key or X.509 certificate used to verify JWT bearer assertions (None: JWT grant refused).
    jwt_public_key: Path | None = None
    #: Seconds an access token stays valid (Salesforce's default session timeout is 2 hours).
    token_ttl: float = 7200.0
    #: Seconds after ``iat``/now a JWT ``exp`` may lie (Salesforce: about 3 minutes; a little slack here).
    jwt_max_exp_ahead: float = 300.0
    #: Seconds each internal ingest batch takes at least (simulates a busy org).
    batch_delay: float = 0.0
    #: Speed profile: each internal ingest batch takes at least this long in all (0 = off).
    batch_seconds: float = 0.0
    #: Speed profile: bytes per second of each result download (None = as fast as possible).
    download_bandwidth: int | None = None
    #: Seconds each query job takes at least (so that waiting clients see it running); 0 = as fast as it can.
    query_delay: float = 0.0
    #: Records per internal ingest batch (Salesforce: 10,000).
    batch_size: int = 10_000
    #: Seed of every random decision (faults, synthetic records).
    seed: int = 0
    #: Seconds a job and its results live after their last state change (Salesforce: 7 days).
    retention: float = 7 * 24 * 3600.0
    #: Serve HTTPS with a certificate generated into ``data_dir/tls``.
    tls: bool = False
    #: Objects to fill with synthetic records at start: {"Account": 1000}.
    seed_records: dict[str, int] = field(default_factory=dict)
    #: HTTP fault rules active from the start.
    faults: list[FaultRule] = field(default_factory=list)
    #: Share of ingest rows failing with UNABLE_TO_LOCK_ROW.
    lock_row_rate: float = 0.0
    #: 1-based internal batch that fails past its retries (the job goes Failed).
    failing_batch: int | None = None
    #: Rows removed from ``successfulResults`` of each ingest job (a fault: the counters stay true).
    drop_result_rows: int = 0
    #: How many ingest jobs ``drop_result_rows`` hits (the next N that start); None = every job.
    drop_result_jobs: int | None = None
    #: How ``resultPages`` answers: documented, chunks, documented-singular or missing (see result_pages.py).
    result_pages_shape: str = "documented"
    #: Query jobs whose result would exceed this many records fail like a query that runs too long.
    query_timeout_records: int | None = None
    #: ``retries`` (Retried more than 15 times) or ``timeout`` (QUERY_TIMEOUT), see settings.py.
    query_timeout_style: str = "retries"
    #: Largest accepted ``PUT .../batches`` body in bytes (Salesforce: 150 MB after base64, ~100 MB raw).
    max_upload_bytes: int = 100 * 1024 * 1024
    #: Largest accepted CSV part of a multipart create request, in characters.
    max_multipart_chars: int = 100_000
    #: Jobs per page of ``GET /jobs/ingest`` and ``GET /jobs/query``.
    list_page_size: int = 1000
    #: Rows of a query result page when the client sends no ``maxRecords``.
    default_page_records: int = 1_000_000
    #: Daily limits reported by ``/limits`` and enforced where Salesforce enforces them.
    daily_api_requests: int = 1_000_000
    daily_bulk_api_batches: int = 15_000
    daily_bulk_v2_query_jobs: int = 10_000
    daily_bulk_v2_query_file_storage_mb: int = 976_562
    #: Background threads processing jobs.
    workers: int = 2
    #: Seconds between retention sweeps (None: derived from ``retention``).
    sweep_interval: float | None = None
    #: File getting one JSON line per answered request (see request_log.py); None: no log.
    request_log: Path | None = None

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if self.schema_path is not None:
            self.schema_path = Path(self.schema_path)
        if self.request_log is not None:
            self.request_log = Path(self.request_log)
        if self.jwt_public_key is not None:
            self.jwt_public_key = Path(self.jwt_public_key)
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.retention <= 0:
            raise ValueError("retention must be positive")
        if self.list_page_size < 1:
            raise ValueError("list_page_size must be at least 1")
        if not 0.0 <= self.lock_row_rate <= 1.0:
            raise ValueError("lock_row_rate must be between 0 and 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.query_delay < 0:
            raise ValueError("query_delay must not be negative")
        if self.batch_seconds < 0:
            raise ValueError("batch_seconds must not be negative")
        if self.download_bandwidth is not None and self.download_bandwidth < 1:
            raise ValueError("download_bandwidth must be at least 1 byte per second")
        if self.drop_result_rows < 0:
            raise ValueError("drop_result_rows must not be negative")
        if self.drop_result_jobs is not None and self.drop_result_jobs < 0:
            raise ValueError("drop_result_jobs must not be negative")
        RuntimeSettings(self.result_pages_shape, self.query_timeout_records, self.query_timeout_style)
