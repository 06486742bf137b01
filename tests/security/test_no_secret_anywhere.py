"""No secret anywhere: the five example DAGs run once per auth flow with distinctive secret values, then
every place a run leaves something behind is scanned for them (see docs/reliability.md, "Secrets").

Secrets: the password, security token, client secret, the JWT private key (inline in the connection),
the refresh token, and every access token the emulator issued (read from its token store). Places: the
task logs under ``[logging] base_log_folder``, the test's captured stdout/stderr (task and trigger log
lines of ``dag.test()``), every row of every metadata DB table (XComs, rendered template fields, task
state, DAG run conf, audit log, ...), the trigger rows' kwargs decrypted, every file under the results
folder (results, manifests, failed-row files, checkpoints), and the connection-test output (success and
failure).
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from airflow_provider_sfbulk.emulator.testing import ApiSession, EmulatorServer, connection_dict

pytestmark = pytest.mark.security

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_IDS = (
    "example_sfbulk_parent_child",
    "example_sfbulk_load_with_failures",
    "example_sfbulk_extract_to_storage",
    "example_sfbulk_delete_by_extract",
    "example_sfbulk_job_watch",
)
#: Distinctive values: reserved URL characters so the URL-encoded forms differ from the raw ones.
PASSWORD = "Pw-sfbulkLEAK/9+q=x&z!password"
SECURITY_TOKEN = "STsfbulkLEAKsecuritytoken77"
CLIENT_SECRET = "CS-sfbulkLEAK+client/secret=42"
FLOWS = ("password", "client_credentials", "jwt_bearer", "refresh_token")


# --- the scanner ------------------------------------------------------------------------------------

#: Characters of context shown on each side of a match.
CONTEXT = 12
#: Shortest needle searched for: shorter fragments would match by chance.
MIN_NEEDLE = 16


@dataclass(frozen=True)
class Secret:
    """A secret value and every form of it that counts as a leak."""

    name: str
    needles: tuple[str, ...] = field(repr=False)

    @classmethod
    def of(cls, name: str, value: str) -> Secret:
        """The raw value, URL-encoded, JSON-escaped and base64 forms of ``value``."""
        raw = value.encode()
        forms = {
            value,
            quote(value, safe=""),
            quote_plus(value),
            json.dumps(value)[1:-1],
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
        }
        return cls(name, tuple(sorted(form for form in forms if len(form) >= MIN_NEEDLE)))

    @classmethod
    def private_key(cls, name: str, pem: str) -> Secret:
        """Each line of the PEM body (raw and URL-encoded), and the base64 form of the PEM's body part."""
        lines = [line.strip() for line in pem.strip().splitlines() if line.strip()]
        body = [line for line in lines if not line.startswith("-----")]
        forms = set(body) | {quote(line, safe="") for line in body} | {quote_plus(line) for line in body}
        joined = "".join(body)
        forms.add(joined[len(body[0]) // 2 : len(body[0]) // 2 + 48])  # a body spanning line breaks removed
        encoded = base64.b64encode(pem.encode()).decode()
        forms.add(encoded[64:128])
        forms.add(base64.urlsafe_b64encode(pem.encode()).decode()[64:128])
        forms.add(json.dumps(pem)[1:-1][40:120])  # JSON-escaped, across a "\n"
        return cls(name, tuple(sorted(form for form in forms if len(form) >= MIN_NEEDLE)))


@dataclass(frozen=True)
class Finding:
    """One secret found in one place."""

    place: str
    secret: str
    context: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.place}: ...{self.context}..."


def find(place: str, text: str, secrets: Iterable[Secret]) -> list[Finding]:
    """Every secret of ``secrets`` found in ``text`` (at most one finding per secret)."""
    findings = []
    for secret in secrets:
        for needle in secret.needles:
            start = text.find(needle)
            if start < 0:
                continue
            before = text[max(0, start - CONTEXT) : start]
            after = text[start + len(needle) : start + len(needle) + CONTEXT]
            context = f"{before}<{secret.name}>{after}"
            for other in secrets:  # the context must not show a piece of another secret either
                for other_needle in other.needles:
                    context = context.replace(other_needle, f"<{other.name}>")
            findings.append(Finding(place, secret.name, context.replace("\n", "\\n")))
            break
    return findings


def file_texts(root: Path, label: str) -> Iterator[tuple[str, str]]:
    """``(place, text)`` of every file under ``root`` (gzip files decompressed)."""
    if not root.exists():
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except OSError:
                pass
        yield f"{label} {path.relative_to(root)}", data.decode("utf-8", errors="replace")


def as_text(value: object) -> str:
    """A DB value as text: bytes decoded, everything else ``str``-ed."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


# --- the runs ---------------------------------------------------------------------------------------


@pytest.fixture
def secret_emulator(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """An emulator that accepts only the distinctive secrets above."""
    # Jobs take a second or more, so that every deferrable task really defers and its trigger runs.
    return emulator_factory(password=PASSWORD, security_token=SECURITY_TOKEN, client_secret=CLIENT_SECRET,
                            batch_seconds=1.0, query_delay=1.0)


def _connection(server: EmulatorServer, auth_type: str, private_key: str) -> dict[str, Any]:
    """A connection for ``auth_type`` that carries every secret it can (the private key inline)."""
    if auth_type == "jwt_bearer":
        conn = connection_dict(server, "jwt_bearer", private_key_file=Path("unused"))
        del conn["extra"]["private_key_file"]
        conn["extra"]["private_key"] = private_key
        return conn
    return connection_dict(server, auth_type)


@pytest.fixture
def run_example(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """``run_example(dag_id, **conf)``: copy the example into the dags folder and ``dag.test()`` it."""
    monkeypatch.setenv("SFBULK_EXAMPLE_POLL_SECONDS", "0.1")
    monkeypatch.setenv("AIRFLOW__SALESFORCE_BULK__RESULTS_BASE_PATH", str(tmp_path / "results"))
    data = airflow_db / "data"
    if not data.exists():
        shutil.copytree(EXAMPLES / "data", data)
    copied: list[Path] = []

    def run(dag_id: str, **conf: Any) -> Any:
        target = airflow_db / f"{dag_id}.py"
        shutil.copy(EXAMPLES / f"{dag_id}.py", target)
        copied.append(target)
        spec = importlib.util.spec_from_file_location(f"sfbulk_security_{dag_id}", target)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.dag.test(run_conf=conf or None)

    yield run
    for path in copied:
        path.unlink(missing_ok=True)


def _issued_tokens(server: EmulatorServer) -> list[str]:
    """Every access and refresh token the emulator issued (its token store)."""
    with sqlite3.connect(server.app.store.db_path) as db:
        return [row[0] for row in db.execute("SELECT token FROM oauth_tokens")]


@pytest.fixture
def serialized_triggers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every ``serialize()`` answer of the provider's trigger during the test.

    ``dag.test()`` runs a deferred task's trigger in line and writes no ``trigger`` row; these answers
    are what the row would hold (the test rebuilds the rows from them, see :func:`_trigger_rows`).
    """
    from airflow_provider_sfbulk.triggers.job import SalesforceBulkJobTrigger

    recorded: list[tuple[str, dict[str, Any]]] = []
    original = SalesforceBulkJobTrigger.serialize

    def serialize(self: SalesforceBulkJobTrigger) -> tuple[str, dict[str, Any]]:
        answer = original(self)
        recorded.append(answer)
        return answer

    monkeypatch.setattr(SalesforceBulkJobTrigger, "serialize", serialize)
    return recorded


def _trigger_rows(serialized: list[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, str]]:
    """The ``trigger`` rows the triggerer would get: the stored (encrypted) column, the kwargs decrypted."""
    from airflow.models.trigger import Trigger

    for number, (classpath, kwargs) in enumerate(serialized):
        row = Trigger(classpath=classpath, kwargs=kwargs)
        yield f"trigger row {number} ({classpath}), stored kwargs", row.encrypted_kwargs
        yield f"trigger row {number} ({classpath}), kwargs decrypted", repr(row.kwargs)


def _db_texts() -> Iterator[tuple[str, str]]:
    """Every row of every metadata DB table, and the trigger rows' kwargs decrypted."""
    import sqlalchemy as sa
    from airflow import settings
    from airflow.models.trigger import Trigger

    engine = settings.engine
    assert engine is not None
    tables = sa.inspect(engine).get_table_names()
    with engine.connect() as db:
        for table in tables:
            rows = db.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
            for number, row in enumerate(rows):
                yield f"metadata DB table {table} row {number}", " | ".join(as_text(v) for v in row)
    with settings.Session() as session:
        for trigger in session.scalars(sa.select(Trigger)):
            yield f"trigger {trigger.id} ({trigger.classpath}) kwargs", repr(trigger.kwargs)


def _counts() -> dict[str, int]:
    """Rows of the tables the scan must not find empty (else it would prove nothing)."""
    import sqlalchemy as sa
    from airflow import settings

    engine = settings.engine
    assert engine is not None
    with engine.connect() as db:
        return {
            table: db.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
            for table in ("xcom", "rendered_task_instance_fields", "trigger")
        }


def _connection_test_outputs(server: EmulatorServer) -> list[str]:
    """What Airflow's connection test shows: a success, then a refused login (right password, wrong token)."""
    from airflow.models.connection import Connection

    outputs = [str(Connection.get_connection_from_secrets("salesforce_bulk_default").test_connection())]
    wrong = connection_dict(server, "password")
    wrong["extra"]["security_token"] = "WRONG" + SECURITY_TOKEN[5:]
    conn = Connection(conn_id="sfbulk_wrong", **{k: v for k, v in wrong.items() if k != "extra"},
                      extra=json.dumps(wrong["extra"]))
    result = conn.test_connection()
    assert result[0] is False, result
    outputs.append(str(result))
    return outputs


def _run_every_example(server: EmulatorServer, run_example: Callable[..., Any]) -> None:
    server.seed("Account", 10)
    server.seed("Opportunity", 60)
    ApiSession(server).create_ingest("Account", "insert")  # an Open job for the job watch to find
    for dag_id in EXAMPLE_IDS:
        run = run_example(dag_id)
        state = str(getattr(run.state, "value", run.state))
        assert state == "success", f"{dag_id}: {state}"


def _secrets(server: EmulatorServer, connection: dict[str, Any], private_key: str) -> list[Secret]:
    """The known secrets of the run, and every token the emulator issued during it."""
    tokens = _issued_tokens(server)
    assert len(tokens) >= 2  # at least the first access token and the connection test's
    secrets = [
        Secret.of("password", PASSWORD),
        Secret.of("security_token", SECURITY_TOKEN),
        Secret.of("client_secret", CLIENT_SECRET),
        Secret.of("password+security_token", PASSWORD + SECURITY_TOKEN),
        Secret.private_key("private_key", private_key),
        *(Secret.of(f"issued_token#{n}", token) for n, token in enumerate(tokens)),
    ]
    if "refresh_token" in connection["extra"]:
        secrets.append(Secret.of("refresh_token", connection["extra"]["refresh_token"]))
    return secrets


@pytest.mark.parametrize("auth_type", FLOWS)
def test_no_secret_anywhere(
    auth_type: str,
    secret_emulator: EmulatorServer,
    jwt_keypair: Any,
    run_example: Callable[..., Any],
    serialized_triggers: list[tuple[str, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    from airflow.configuration import conf

    private_key = jwt_keypair.private_key.read_text()
    connection = _connection(secret_emulator, auth_type, private_key)
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_BULK_DEFAULT", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    caplog.set_level(logging.DEBUG)
    before = _counts()

    _run_every_example(secret_emulator, run_example)
    connection_outputs = _connection_test_outputs(secret_emulator)

    after = _counts()
    for table in ("xcom", "rendered_task_instance_fields"):
        assert after[table] > before[table], f"no {table} rows written: the scan would prove nothing"
    assert len(serialized_triggers) >= 5, "the deferrable tasks did not defer: no trigger was serialized"
    captured = capfd.readouterr()
    places: list[tuple[str, str]] = [
        ("captured stdout (task and trigger logs of dag.test)", captured.out),
        ("captured stderr", captured.err),
        ("log records (every logger, DEBUG and up)", caplog.text),
        *(("connection test output", text) for text in connection_outputs),
        *file_texts(Path(conf.get("logging", "base_log_folder")).expanduser(), "task log file"),
        *file_texts(tmp_path / "results", "results folder"),
        *_trigger_rows(serialized_triggers),
        *_db_texts(),
    ]
    assert sum(place.startswith("results folder") for place, _ in places) >= 10
    secrets = _secrets(secret_emulator, connection, private_key)
    findings = [finding for place, text in places for finding in find(place, text, secrets)]
    assert not findings, "secrets found:\n" + "\n".join(str(f) for f in findings[:20])


def test_the_scanner_finds_every_form() -> None:
    """A planted secret is found raw, URL-encoded, JSON-escaped and base64-encoded; the report hides it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    secrets = [Secret.of("password", PASSWORD), Secret.private_key("private_key", pem)]
    body = pem.splitlines()[3]
    planted = {
        "raw": f"login with {PASSWORD} now",
        "url": f"password={quote_plus(PASSWORD)}&x=1",
        "url-strict": f"p={quote(PASSWORD, safe='')}",
        "json": json.dumps({"p": "a\\" + PASSWORD}),
        "base64": base64.b64encode(PASSWORD.encode()).decode(),
        "pem line": f"key: {body}",
        "pem url": quote_plus(pem),
        "pem json": json.dumps({"private_key": pem}),
        "pem base64": base64.b64encode(pem.encode()).decode(),
    }
    for label, text in planted.items():
        findings = find(label, text, secrets)
        assert len(findings) == 1, label
        assert PASSWORD not in str(findings[0])
        assert body not in str(findings[0])
    assert find("clean", "nothing here: ***", secrets) == []
