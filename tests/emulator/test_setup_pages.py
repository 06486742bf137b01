"""The emulator's stand-in for Setup's job page, where the operators' extra link points."""

from __future__ import annotations

import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession
from airflow_provider_sfbulk.links.job import job_link_url


def _get(url: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False  # loopback only
    return session.get(url, timeout=10)


def test_the_job_link_opens_a_page_about_that_job(emulator):
    job = ApiSession(emulator).run_ingest("Account", "insert", b"Name\nAcme\nGlobex\n")
    response = _get(job_link_url(emulator.base_url, [job["id"]]))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"<h1>Bulk Data Load Job {job['id']}</h1>" in response.text
    assert '<td data-field="Status">JobComplete</td>' in response.text
    assert '<td data-field="Records Processed">2</td>' in response.text
    assert '<td data-field="Object">Account</td>' in response.text


def test_an_unknown_job_is_not_found(emulator):
    response = _get(f"{emulator.base_url}/lightning/setup/AsyncApiJobStatus/page?address=%2F750<b>")
    assert response.status_code == 404
    assert "No job 750&lt;b&gt; in this org." in response.text
