"""``resultPages`` in every shape real orgs have been seen to answer.

The shape is switched by config, the admin API and the helper.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession, start_emulator_process

SOQL = "SELECT Id, Name FROM Account"


def follow(api: ApiSession, url: str, *, items_key: str, link_key: str, next_key: str,
           link_root: str = "") -> tuple[list[str], list[dict]]:
    """Every link of every resultPages call from ``url`` (at most 20 calls) and the bodies seen."""
    links: list[str] = []
    bodies: list[dict] = []
    next_url: str | None = url
    for _ in range(20):
        if next_url is None:
            break
        response = api.get(next_url)
        assert response.status_code == 200, response.text
        body = response.json()
        bodies.append(body)
        links += [link_root + item[link_key] for item in body[items_key]]
        next_url = body[next_key]
        assert body["done"] == (next_url is None)
    assert next_url is None
    return links, bodies


def download(api: ApiSession, links: list[str]) -> list[str]:
    """The Ids of every row behind ``links`` (each page has its own header row)."""
    ids: list[str] = []
    for link in links:
        page = api.get(link)
        assert page.status_code == 200, page.text
        rows = list(csv.DictReader(io.StringIO(page.text)))
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(rows)
        ids += [row["Id"] for row in rows]
    return ids


@pytest.fixture
def loaded(emulator_factory):
    def start(**config):
        server = emulator_factory(**config)
        server.seed("Account", 23)
        api = ApiSession(server)
        info = api.run_query(SOQL)
        assert info["state"] == "JobComplete"
        return server, api, info["id"]

    return start


def test_documented_is_the_default(loaded):
    server, api, job_id = loaded()
    links, bodies = follow(api, f"/jobs/query/{job_id}/resultPages?maxRecords=2", items_key="resultPages",
                           link_key="resultUrl", next_key="nextRecordsUrl")
    assert [list(body) for body in bodies] == [["resultPages", "nextRecordsUrl", "done"]] * 3
    assert len(links) == 12
    assert links[0] == f"/services/data/v60.0/jobs/query/{job_id}/results?maxRecords=2"
    assert links[1] == f"/services/data/v60.0/jobs/query/{job_id}/results?locator=Mg&maxRecords=2"
    ids = download(api, links)
    assert sorted(ids) == sorted(r["Id"] for r in server.records("Account"))


def test_chunks_shape_links_are_relative_to_the_version_root(loaded):
    server, api, job_id = loaded(result_pages_shape="chunks")
    links, bodies = follow(api, f"/jobs/query/{job_id}/resultPages?maxRecords=2", items_key="resultChunks",
                           link_key="resultLink", next_key="nextRecordsUrl", link_root="/services/data/v60.0")
    assert [list(body) for body in bodies] == [["resultChunks", "nextRecordsUrl", "done"]] * 3
    assert bodies[0]["resultChunks"][0] == {"resultLink": f"/jobs/query/{job_id}/results?maxRecords=2"}
    assert bodies[0]["nextRecordsUrl"].startswith(f"/services/data/v60.0/jobs/query/{job_id}/resultPages?")
    assert bodies[-1]["nextRecordsUrl"] is None
    assert bodies[-1]["done"] is True
    assert len(links) == 12
    assert len(download(api, links)) == 23
    assert sorted(download(api, links)) == sorted(r["Id"] for r in server.records("Account"))


def test_chunks_single_call_when_everything_fits(loaded):
    _, api, job_id = loaded(result_pages_shape="chunks")
    body = api.get(f"/jobs/query/{job_id}/resultPages", version="62.0")
    assert body.status_code == 409  # results are read with the job's own version
    body = api.get(f"/jobs/query/{job_id}/resultPages").json()
    assert body == {"resultChunks": [{"resultLink": f"/jobs/query/{job_id}/results?maxRecords=1000000"}],
                    "nextRecordsUrl": None, "done": True}


def test_documented_singular_spells_next_record_url(loaded):
    _, api, job_id = loaded(result_pages_shape="documented-singular")
    links, bodies = follow(api, f"/jobs/query/{job_id}/resultPages?maxRecords=5", items_key="resultPages",
                           link_key="resultUrl", next_key="nextRecordUrl")
    assert [list(body) for body in bodies] == [["resultPages", "nextRecordUrl", "done"]]
    assert "nextRecordsUrl" not in bodies[0]
    assert len(links) == 5
    assert len(download(api, links)) == 23


def test_missing_answers_404_but_results_still_work(loaded):
    _, api, job_id = loaded(result_pages_shape="missing")
    response = api.get(f"/jobs/query/{job_id}/resultPages")
    assert response.status_code == 404
    assert response.json() == [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    page = api.get(f"/jobs/query/{job_id}/results")
    assert page.status_code == 200
    assert page.headers["Sforce-NumberOfRecords"] == "23"


def test_admin_endpoint_switches_at_runtime(loaded):
    server, api, job_id = loaded()
    admin = f"{server.base_url}/__emulator/settings"
    assert requests.get(admin, timeout=10).json() == {
        "result_pages_shape": "documented", "query_timeout_records": None, "query_timeout_style": "retries"}
    changed = requests.put(admin, json={"result_pages_shape": "chunks"}, timeout=10)
    assert changed.status_code == 200
    assert changed.json()["result_pages_shape"] == "chunks"
    assert list(api.get(f"/jobs/query/{job_id}/resultPages").json()) == [
        "resultChunks", "nextRecordsUrl", "done"]
    assert requests.patch(admin, json={"result_pages_shape": "missing"}, timeout=10).status_code == 200
    assert api.get(f"/jobs/query/{job_id}/resultPages").status_code == 404
    bad = requests.put(admin, json={"result_pages_shape": "sideways"}, timeout=10)
    assert bad.status_code == 400
    assert bad.json()[0]["errorCode"] == "INVALID_SETTING"
    assert requests.put(admin, json={"nope": 1}, timeout=10).status_code == 400
    assert requests.delete(admin, timeout=10).json()["result_pages_shape"] == "documented"
    assert list(api.get(f"/jobs/query/{job_id}/resultPages").json()) == [
        "resultPages", "nextRecordsUrl", "done"]


def test_testing_helper_switches_shape(loaded):
    server, api, job_id = loaded()
    server.set_result_pages_shape("documented-singular")
    assert "nextRecordUrl" in api.get(f"/jobs/query/{job_id}/resultPages").json()
    with pytest.raises(ValueError):
        server.set_result_pages_shape("bogus")
    assert server.update_settings()["result_pages_shape"] == "documented-singular"


def test_bad_cursor_is_refused(loaded):
    _, api, job_id = loaded(result_pages_shape="chunks")
    assert api.get(f"/jobs/query/{job_id}/resultPages?locator=bm9wZQ").status_code == 400
    assert api.get(f"/jobs/query/{job_id}/resultPages?locator=cnA5OTk").status_code == 400


def test_cli_flag_sets_the_shape(tmp_path):
    with start_emulator_process(tmp_path / "sf", extra_args=["--result-pages-shape", "chunks"]) as proc:
        answer = requests.get(f"{proc.base_url}/__emulator/settings", timeout=10).json()
    assert answer["result_pages_shape"] == "chunks"
    bad = subprocess.run([sys.executable, "-m", "airflow_provider_sfbulk.emulator", "--data-dir",
                          str(tmp_path / "x"), "--result-pages-shape", "sideways"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
