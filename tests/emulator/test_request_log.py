"""The emulator's request log: one JSON line per answered request, the token only as a fingerprint."""

from __future__ import annotations

import hashlib
import json

import requests

from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import EmulatorServer


def test_every_request_is_logged_with_a_token_fingerprint(tmp_path):
    log = tmp_path / "requests.jsonl"
    with EmulatorServer(EmulatorConfig(request_log=log)) as server:
        token = server.get_token()
        http = requests.Session()
        http.trust_env = False
        headers = {"Authorization": f"Bearer {token}"}
        created = http.post(f"{server.base_url}/services/data/v60.0/jobs/ingest", headers=headers,
                            json={"object": "Account", "operation": "insert"}, timeout=10)
        job_id = created.json()["id"]
        assert http.get(f"{server.base_url}/services/data/v60.0//jobs/ingest/{job_id}/", headers=headers,
                        timeout=10).status_code == 200
        assert http.get(f"{server.base_url}/services/data/v60.0/jobs/ingest/nope?a=1", headers=headers,
                        timeout=10).status_code == 404
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
    assert [(x["method"], x["path"], x["query"], x["status"], x["client"]) for x in lines] == [
        ("POST", "/services/oauth2/token", "", 200, "-"),
        ("POST", "/services/data/v60.0/jobs/ingest", "", 200, fingerprint),
        ("GET", f"/services/data/v60.0/jobs/ingest/{job_id}", "", 200, fingerprint),
        ("GET", "/services/data/v60.0/jobs/ingest/nope", "a=1", 404, fingerprint),
    ]
    assert all(x["t"] <= x["end"] for x in lines)
    assert token not in log.read_text()
