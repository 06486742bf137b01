"""Run the emulator from tests: in process (:class:`EmulatorServer`) or as a child process.

In process::

    with EmulatorServer(EmulatorConfig()) as server:
        token = server.get_token()
        ...

As a separate process (what the demo and end-to-end tests do)::

    with start_emulator_process(data_dir=tmp_path, extra_args=["--batch-delay", "0.1"]) as proc:
        proc.base_url, proc.ca_path
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.faults import FaultRule
from airflow_provider_sfbulk.emulator.server import EmulatorApp

URL_LINE_PREFIX = "SFBULK_EMULATOR_URL="
CA_LINE_PREFIX = "SFBULK_EMULATOR_CA="


class EmulatorServer:
    """An emulator running in a background thread with its own event loop."""

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = EmulatorConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        self.config = config
        self.app = EmulatorApp(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> EmulatorServer:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="sfbulk-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the emulator failed to start") from self._error
        return self

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.app.start())
        except BaseException as err:
            self._error = err
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.app.stop())
            loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving, finish or interrupt running jobs, release the data directory."""
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmulatorServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- facts -------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>``: login URL and instance URL at once."""
        return self.app.base_url

    @property
    def data_dir(self) -> Path:
        """The directory holding the emulator's database and job files."""
        return self.app.data_dir

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate to trust when TLS is on."""
        return self.app.tls.ca_path if self.app.tls else None

    # -- control (thread-safe) ---------------------------------------------------------------------
    def set_faults(self, rules: Sequence[FaultRule | dict[str, Any]] | None = None, *,
                   lock_row_rate: float | None = None, failing_batch: int | None | str = "keep",
                   seed: int | None = None, drop_result_rows: int | None = None,
                   drop_result_jobs: int | None | str = "keep") -> None:
        """Replace HTTP fault rules and/or set ingest row faults (``failing_batch=None`` clears it).

        ``drop_result_rows=N`` leaves the first N successful rows out of ``successfulResults`` of each
        ingest job that starts from now on (``numberRecordsProcessed`` stays true);
        ``drop_result_jobs=M`` limits that to the next M jobs (``None``: every job).
        """
        parsed = None
        if rules is not None:
            parsed = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        self.app.set_faults(parsed, lock_row_rate=lock_row_rate, failing_batch=failing_batch, seed=seed,
                            drop_result_rows=drop_result_rows, drop_result_jobs=drop_result_jobs)

    def update_settings(self, **values: Any) -> dict[str, Any]:
        """Change runtime settings as ``PUT /__emulator/settings`` does; returns them all.

        The settings are ``result_pages_shape``, ``query_timeout_records`` and ``query_timeout_style``.
        """
        self.app.settings.update(**values)
        return self.app.settings.to_dict()

    def set_result_pages_shape(self, shape: str) -> None:
        """``documented``, ``chunks``, ``documented-singular`` or ``missing`` (see ``result_pages.py``)."""
        self.update_settings(result_pages_shape=shape)

    def set_query_timeout(self, records: int | None, style: str = "retries") -> None:
        """Query jobs returning more than ``records`` rows fail like a too-long query (None: off)."""
        self.update_settings(query_timeout_records=records, query_timeout_style=style)

    def reset_faults(self) -> None:
        """Remove every HTTP fault rule and every ingest row fault."""
        self.app.reset_faults()

    def expire_tokens(self) -> int:
        """End every access token now; the next API call with one answers 401 INVALID_SESSION_ID."""
        return self.app.store.expire_access_tokens()

    def records(self, object_name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every stored record of an object (values as Salesforce renders them, None for null)."""
        return self.app.read_records(object_name, include_deleted=include_deleted)

    def seed(self, object_name: str, count: int, *, seed: int | None = None) -> int:
        """Insert ``count`` synthetic valid records directly."""
        return self.app.seed(object_name, count, seed=seed)

    def mint_refresh_token(self) -> str:
        """A refresh token for the configured user, as a connected app's web-server flow would issue."""
        assert self.app.oauth is not None
        return self.app.oauth.mint_refresh_token()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no job is queued or running."""
        return self.app.worker.wait_idle(timeout)

    def sweep(self) -> list[str]:
        """Apply the retention now; returns the ids of deleted jobs."""
        return self.app.sweep()

    def get_token(self) -> str:
        """An access token from the password grant (fixture credentials)."""
        return password_token(self.base_url, self.config, ca_path=self.ca_path)["access_token"]


def password_token(base_url: str, config: EmulatorConfig, *, ca_path: Path | None = None) -> dict[str, Any]:
    """Call the token endpoint with the password grant and return the JSON answer."""
    import ssl
    import urllib.parse

    data = urllib.parse.urlencode({
        "grant_type": "password", "client_id": config.client_id, "client_secret": config.client_secret,
        "username": config.username, "password": config.password + config.security_token,
    }).encode()
    context = ssl.create_default_context(cafile=str(ca_path)) if ca_path else None
    request = urllib.request.Request(f"{base_url}/services/oauth2/token", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.loads(response.read())


@dataclass
class EmulatorProcess:
    """A running ``python -m airflow_provider_sfbulk.emulator`` child."""

    process: subprocess.Popen[str]
    base_url: str
    ca_path: Path | None
    data_dir: Path
    output: list[str]

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


@contextmanager
def start_emulator_process(data_dir: Path, *, port: int = 0, tls: bool = False,
                           extra_args: Sequence[str] = (), timeout: float = 30.0,
                           env: dict[str, str] | None = None) -> Iterator[EmulatorProcess]:
    """Start the emulator as a separate process, wait until its printed URL answers, stop it on exit."""
    args = [sys.executable, "-m", "airflow_provider_sfbulk.emulator", "--host", "127.0.0.1",
            "--port", str(port), "--data-dir", str(data_dir), *(["--tls"] if tls else []), *extra_args]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    output: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if line.startswith(URL_LINE_PREFIX):
                found["url"] = line[len(URL_LINE_PREFIX):].strip()
            elif line.startswith(CA_LINE_PREFIX):
                found["ca"] = line[len(CA_LINE_PREFIX):].strip()
            if "url" in found and (not tls or "ca" in found):
                ready.set()
        ready.set()

    threading.Thread(target=pump, name="sfbulk-emulator-output", daemon=True).start()
    handle = EmulatorProcess(process, "", None, Path(data_dir), output)
    try:
        if not ready.wait(timeout) or "url" not in found:
            raise RuntimeError("the emulator process did not print its URL:\n" + "\n".join(output))
        handle.base_url = found["url"]
        handle.ca_path = Path(found["ca"]) if "ca" in found else None
        _wait_until_answers(handle.base_url, handle.ca_path, deadline=time.monotonic() + timeout)
        yield handle
    finally:
        handle.stop()


def _wait_until_answers(base_url: str, ca_path: Path | None, *, deadline: float) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(ca_path)) if ca_path else None
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/services/data/", timeout=2,
                                        context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as err:
            last = err
        time.sleep(0.05)
    raise RuntimeError(f"the emulator at {base_url} did not answer: {last}")


AUTH_TYPES = ("password", "client_credentials", "jwt_bearer", "refresh_token", "access_token")


def connection_dict(server: EmulatorServer | EmulatorProcess | str, auth_type: str = "password", *,
                    private_key_file: Path | None = None, api_version: str = "60.0",
                    **extra: Any) -> dict[str, Any]:
    """An Airflow connection (JSON form) for ``salesforce_bulk`` pointing at ``server``.

    ``server`` is an in-process :class:`EmulatorServer`, an :class:`EmulatorProcess` or a base URL; the
    last two are assumed to run with the default credentials of :class:`EmulatorConfig`. The
    ``refresh_token`` and ``access_token`` flows need an in-process server (it mints the token).

    Layout: host = login URL (the emulator base URL), login = username, password = password,
    extra = auth_type, client_id, client_secret, security_token, private_key_file, refresh_token,
    access_token, instance_url, api_version, ca_bundle, timeout.
    """
    if auth_type not in AUTH_TYPES:
        raise ValueError(f"auth_type must be one of {AUTH_TYPES}")
    base_url = server if isinstance(server, str) else server.base_url
    ca_path = None if isinstance(server, str) else server.ca_path
    config = server.config if isinstance(server, EmulatorServer) else EmulatorConfig()
    fields: dict[str, Any] = {"auth_type": auth_type, "api_version": api_version, "timeout": 30}
    if auth_type in ("password", "client_credentials", "refresh_token"):
        fields["client_id"] = config.client_id
        fields["client_secret"] = config.client_secret
    if auth_type == "password":
        fields["security_token"] = config.security_token
    if auth_type == "jwt_bearer":
        fields["client_id"] = config.client_id
        if private_key_file is None:
            raise ValueError("the jwt_bearer connection needs private_key_file")
        fields["private_key_file"] = str(private_key_file)
    if auth_type in ("refresh_token", "access_token") and not isinstance(server, EmulatorServer):
        raise ValueError(f"a {auth_type} connection needs an in-process EmulatorServer to mint its token")
    if auth_type == "refresh_token":
        assert isinstance(server, EmulatorServer)
        fields["refresh_token"] = server.mint_refresh_token()
    if auth_type == "access_token":
        assert isinstance(server, EmulatorServer)
        fields["access_token"] = server.get_token()
        fields["instance_url"] = base_url
    if ca_path is not None:
        fields["ca_bundle"] = str(ca_path)
    fields.update(extra)
    conn: dict[str, Any] = {"conn_type": "salesforce_bulk", "host": base_url, "extra": fields}
    if auth_type in ("password", "jwt_bearer"):
        conn["login"] = config.username
    if auth_type == "password":
        conn["password"] = config.password
    return conn


def connection_json(server: EmulatorServer | EmulatorProcess | str, auth_type: str = "password",
                    **kwargs: Any) -> str:
    """:func:`connection_dict` as the JSON string ``AIRFLOW_CONN_<ID>`` accepts."""
    return json.dumps(connection_dict(server, auth_type, **kwargs))


def generate_jwt_keypair(directory: Path) -> tuple[Path, Path, Path]:
    """Write an RSA private key, its public key and a self-signed certificate; returns the three paths."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = directory / "jwt-private.pem"
    public_path = directory / "jwt-public.pem"
    cert_path = directory / "jwt-cert.pem"
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfbulk connected app")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return private_path, public_path, cert_path


class ApiSession:
    """A tiny ``requests`` client for tests: authenticated calls to one emulator's REST/Bulk API."""

    def __init__(self, server: EmulatorServer, version: str = "60.0", token: str | None = None) -> None:
        import requests

        self.server = server
        self.version = version
        self.session = requests.Session()
        if server.ca_path is not None:
            self.session.verify = str(server.ca_path)
        self.token = token or server.get_token()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def url(self, path: str, version: str | None = None) -> str:
        """The absolute URL of ``path``: from the REST API root of ``version`` unless already rooted."""
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/services/") or path.startswith("/__emulator"):
            return f"{self.server.base_url}{path}"
        return f"{self.server.base_url}/services/data/v{version or self.version}{path}"

    def request(self, method: str, path: str, *, version: str | None = None, **kwargs: Any) -> Any:
        """Send an authenticated request (30 s timeout unless given); returns the ``requests`` response."""
        kwargs.setdefault("timeout", 30)
        # per request: requests lets REQUESTS_CA_BUNDLE override Session.verify (psf/requests#3829)
        kwargs.setdefault("verify", self.session.verify)
        return self.session.request(method, self.url(path, version), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        """Send an authenticated GET (see :meth:`request`)."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        """Send an authenticated POST (see :meth:`request`)."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        """Send an authenticated PUT (see :meth:`request`)."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        """Send an authenticated PATCH (see :meth:`request`)."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        """Send an authenticated DELETE (see :meth:`request`)."""
        return self.request("DELETE", path, **kwargs)

    def create_ingest(self, object_name: str, operation: str = "insert", **body: Any) -> dict[str, Any]:
        """Create an ingest job; returns its JobInfo (raises on an error answer)."""
        response = self.post("/jobs/ingest", json={"object": object_name, "operation": operation, **body})
        response.raise_for_status()
        return response.json()

    def upload(self, job_id: str, data: bytes) -> Any:
        """Upload ``data`` as the CSV of an ingest job; returns the response."""
        return self.put(f"/jobs/ingest/{job_id}/batches", data=data, headers={"Content-Type": "text/csv"})

    def close(self, job_id: str) -> Any:
        """Mark an ingest job ``UploadComplete`` so it gets processed; returns the response."""
        return self.patch(f"/jobs/ingest/{job_id}", json={"state": "UploadComplete"})

    def wait_job(self, kind: str, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll until the job is terminal (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(f"/jobs/{kind}/{job_id}")
            response.raise_for_status()
            info = response.json()
            if info["state"] in ("JobComplete", "Failed", "Aborted"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info['state']} after {timeout}s")
            time.sleep(0.02)

    def run_ingest(self, object_name: str, operation: str, data: bytes, **body: Any) -> dict[str, Any]:
        """Create, upload, close and wait; returns the final JobInfo."""
        job = self.create_ingest(object_name, operation, **body)
        self.upload(job["id"], data).raise_for_status()
        self.close(job["id"]).raise_for_status()
        return self.wait_job("ingest", job["id"])

    def run_query(self, soql: str, operation: str = "query", **body: Any) -> dict[str, Any]:
        """Create a query job and wait for it; returns the final JobInfo."""
        response = self.post("/jobs/query", json={"operation": operation, "query": soql, **body})
        response.raise_for_status()
        return self.wait_job("query", response.json()["id"])
