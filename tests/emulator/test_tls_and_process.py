"""HTTPS with a generated CA (verification on), the CLI, and the emulator as a separate process."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request

import pytest
import requests

from airflow_provider_sfbulk.emulator.cli import build_parser, config_from_args
from airflow_provider_sfbulk.emulator.testing import ApiSession, start_emulator_process


def test_tls_with_verification(emulator_tls):
    assert emulator_tls.base_url.startswith("https://127.0.0.1:")
    assert emulator_tls.ca_path is not None
    assert emulator_tls.ca_path.exists()
    api = ApiSession(emulator_tls)
    assert api.session.verify == str(emulator_tls.ca_path)
    info = api.run_ingest("Account", "insert", b"Name\nSecure\n")
    assert info["state"] == "JobComplete"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emulator_tls.base_url}/services/data/", timeout=10)  # system CAs do not trust it
    localhost = emulator_tls.base_url.replace("127.0.0.1", "localhost")
    assert requests.get(f"{localhost}/services/data/", verify=str(emulator_tls.ca_path), timeout=10).ok


def test_tls_certificates_are_reused(emulator_factory, tmp_path):
    data_dir = tmp_path / "tls"
    first = emulator_factory(data_dir=data_dir, tls=True)
    ca = first.ca_path.read_bytes()
    first.stop()
    second = emulator_factory(data_dir=data_dir, tls=True)
    assert second.ca_path.read_bytes() == ca
    context = ssl.create_default_context(cafile=str(second.ca_path))
    with urllib.request.urlopen(f"{second.base_url}/services/data/", context=context, timeout=10) as response:
        assert response.status == 200


def test_cli_parser_builds_a_config(tmp_path):
    args = build_parser().parse_args([
        "--data-dir", str(tmp_path), "--port", "0", "--seed-records", "Account=5",
        "--seed-records", "Contact=2",
        "--fault", "status=503,rate=0.1,path=/jobs", "--batch-delay", "0.5", "--token-ttl", "60", "--tls",
        "--retention", "3600", "--lock-row-rate", "0.25", "--failing-batch", "2", "--seed", "9",
    ])
    config = config_from_args(args)
    assert config.seed_records == {"Account": 5, "Contact": 2}
    assert config.faults[0].status == 503
    assert (config.batch_delay, config.token_ttl, config.tls, config.retention) == (0.5, 60.0, True, 3600.0)
    assert (config.lock_row_rate, config.failing_batch, config.seed) == (0.25, 2, 9)
    assert config.host == "127.0.0.1"


@pytest.mark.parametrize("bad", [["--seed-records", "Account"], ["--seed-records", "Account=x"],
                                 ["--fault", "status=418"]])
def test_cli_rejects_bad_flags(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--data-dir", str(tmp_path), *bad])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_separate_process_serves_and_stops(tmp_path):
    with start_emulator_process(tmp_path / "proc", extra_args=[
            "--seed-records", "Account=6", "--fault", "status=503,times=1,path=/limits"]) as proc:
        assert proc.base_url.startswith("http://127.0.0.1:")
        assert any("client_id" in line for line in proc.output)
        data = {"grant_type": "password", "client_id": "sfbulk-emulator-client",
                "client_secret": "sfbulk-emulator-secret", "username": "emulator@sfbulk.example",
                "password": "emulator-passwordEMULATORTOKEN123"}
        token = requests.post(f"{proc.base_url}/services/oauth2/token", data=data, timeout=10).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        limits = f"{proc.base_url}/services/data/v60.0/limits"
        assert requests.get(limits, headers=headers, timeout=10).status_code == 503
        assert requests.get(limits, headers=headers, timeout=10).ok
        records = requests.get(f"{proc.base_url}/__emulator/records/Account", timeout=10).json()
        assert records["totalSize"] == 6
    assert proc.process.returncode == 0
    # durable: a new process on the same directory still knows the token and the records
    with start_emulator_process(tmp_path / "proc") as again:
        response = requests.get(f"{again.base_url}/services/data/v60.0/limits", headers=headers, timeout=10)
        assert response.status_code == 200
        assert json.loads(requests.get(f"{again.base_url}/__emulator/records/Account", timeout=10).text)[
            "totalSize"] == 6


def test_separate_process_with_tls(tmp_path):
    with start_emulator_process(tmp_path / "tlsproc", tls=True) as proc:
        assert proc.base_url.startswith("https://")
        assert proc.ca_path is not None
        assert proc.ca_path.exists()
        assert requests.get(f"{proc.base_url}/services/data/", verify=str(proc.ca_path), timeout=10).ok


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "airflow_provider_sfbulk.emulator", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--data-dir", "--jwt-public-key", "--batch-delay", "--seed-records", "--fault", "--tls",
                 "--retention", "--token-ttl"):
        assert flag in result.stdout
