"""Shared fixtures: the Bulk API 2.0 emulator on a free loopback port, and Airflow connections to it.

Fixture credentials are fixed (see ``airflow_provider_sfbulk.emulator.config``): client_id
``sfbulk-emulator-client``, client_secret ``sfbulk-emulator-secret``, username
``emulator@sfbulk.example``, password ``emulator-password``, security token ``EMULATORTOKEN123``.
A JWT key pair is generated once per session; the emulator trusts its public key and hook tests sign
with ``jwt_keypair.private_key``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import EmulatorServer, connection_json, generate_jwt_keypair


@dataclass(frozen=True)
class JwtKeyPair:
    private_key: Path
    public_key: Path
    certificate: Path


@pytest.fixture(scope="session")
def jwt_keypair(tmp_path_factory: pytest.TempPathFactory) -> JwtKeyPair:
    """RSA key pair (and self-signed certificate) of the test connected app."""
    private, public, cert = generate_jwt_keypair(tmp_path_factory.mktemp("jwt"))
    return JwtKeyPair(private, public, cert)


@pytest.fixture
def emulator_factory(tmp_path: Path, jwt_keypair: JwtKeyPair) -> Iterator[Callable[..., EmulatorServer]]:
    """``emulator_factory(**config)`` starts an emulator (fresh data dir unless given).

    All of them stop at teardown.
    """
    servers: list[EmulatorServer] = []

    def start(**overrides: Any) -> EmulatorServer:
        overrides.setdefault("data_dir", tmp_path / f"emulator-{len(servers)}")
        overrides.setdefault("jwt_public_key", jwt_keypair.public_key)
        server = EmulatorServer(EmulatorConfig(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A fresh plain-HTTP emulator on a free port."""
    return emulator_factory()


@pytest.fixture
def emulator_tls(emulator_factory: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A fresh HTTPS emulator; trust ``emulator_tls.ca_path``."""
    return emulator_factory(tls=True)


@pytest.fixture
def salesforce_conn(monkeypatch: pytest.MonkeyPatch,
                    jwt_keypair: JwtKeyPair) -> Callable[..., str]:
    """``salesforce_conn(server, auth_type="password", conn_id="salesforce_bulk_default", **extra)``.

    Sets ``AIRFLOW_CONN_<CONN_ID>`` to a JSON connection for the emulator and returns the JSON.
    """

    def configure(server: EmulatorServer, auth_type: str = "password", *,
                  conn_id: str = "salesforce_bulk_default", **extra: Any) -> str:
        if auth_type == "jwt_bearer":
            extra.setdefault("private_key_file", jwt_keypair.private_key)
        value = connection_json(server, auth_type, **extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return value

    return configure
