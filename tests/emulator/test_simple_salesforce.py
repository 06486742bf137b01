"""An independent client, simple-salesforce's ``bulk2``, works against the emulator unmodified.

simple-salesforce only builds ``https://`` URLs and logs in at ``https://<domain>.salesforce.com``, so the
test runs the HTTPS emulator, trusts its CA through ``REQUESTS_CA_BUNDLE``, and gives the client a
``requests.Session`` whose adapter sends ``login.salesforce.com`` to the emulator (the DNS step a real
network would do). Every Bulk API call then goes to the ``instance_url`` the token endpoint returned.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

simple_salesforce = pytest.importorskip("simple_salesforce")

WAIT = 0.05  # simple-salesforce's first poll delay, in seconds


class LoginHostAdapter(HTTPAdapter):
    """Route ``https://login.salesforce.com`` to the emulator's base URL."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request, **kwargs):  # type: ignore[override]
        request.url = request.url.replace("https://login.salesforce.com", self.base_url, 1)
        return super().send(request, **kwargs)


@pytest.fixture
def sf(emulator_tls, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator_tls.ca_path))
    session = requests.Session()
    session.mount("https://login.salesforce.com", LoginHostAdapter(emulator_tls.base_url))
    config = emulator_tls.config
    client = simple_salesforce.Salesforce(
        username=config.username,
        password=config.password + config.security_token,
        consumer_key=config.client_id,
        consumer_secret=config.client_secret,
        domain="login",
        session=session,
        version="60.0",
    )
    assert client.sf_instance == emulator_tls.base_url.removeprefix("https://")
    return client


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_insert_upsert_delete_and_results(sf, emulator_tls):
    records = [{"Name": f"SS {i}", "External_Id__c": f"SS-{i}", "NumberOfEmployees": str(i)}
               for i in range(30)]
    inserted = sf.bulk2.Account.insert(records=records, wait=WAIT)
    assert len(inserted) == 1
    assert inserted[0]["numberRecordsProcessed"] == 30
    assert inserted[0]["numberRecordsFailed"] == 0
    job_id = inserted[0]["job_id"]
    ok = parse(sf.bulk2.Account.get_successful_records(job_id))
    assert len(ok) == 30
    assert all(r["sf__Created"] == "true" for r in ok)
    assert parse(sf.bulk2.Account.get_failed_records(job_id)) == []
    assert parse(sf.bulk2.Account.get_unprocessed_records(job_id)) == []

    upserts = [{"External_Id__c": "SS-1", "Name": "SS one renamed"},
               {"External_Id__c": "SS-new", "Name": "SS new"},
               {"External_Id__c": "SS-2", "NumberOfEmployees": "lots"}]
    upserted = sf.bulk2.Account.upsert(records=upserts, external_id_field="External_Id__c", wait=WAIT)
    assert upserted[0]["numberRecordsProcessed"] == 3
    assert upserted[0]["numberRecordsFailed"] == 1
    created = {r["External_Id__c"]: r["sf__Created"] for r in parse(
        sf.bulk2.Account.get_successful_records(upserted[0]["job_id"]))}
    assert created == {"SS-1": "false", "SS-new": "true"}
    failed = parse(sf.bulk2.Account.get_failed_records(upserted[0]["job_id"]))
    assert failed[0]["sf__Error"].startswith("INVALID_TYPE_ON_FIELD_IN_RECORD")
    names = {r["External_Id__c"]: r["Name"] for r in emulator_tls.records("Account")}
    assert names["SS-1"] == "SS one renamed"

    doomed = [{"Id": r["sf__Id"]} for r in ok[:5]]
    deleted = sf.bulk2.Account.delete(records=doomed, wait=WAIT)
    assert deleted[0]["numberRecordsProcessed"] == 5
    assert deleted[0]["numberRecordsFailed"] == 0
    assert len(emulator_tls.records("Account")) == 31 - 5


def test_insert_from_file_in_several_jobs(sf, tmp_path: Path):
    path = tmp_path / "contacts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FirstName", "LastName", "Email"])
        for i in range(25):
            writer.writerow([f"First {i}", f"Last, {i}", f"c{i}@example.com"])
    results = sf.bulk2.Contact.insert(csv_file=str(path), batch_size=10, wait=WAIT)
    assert [r["numberRecordsProcessed"] for r in results] == [10, 10, 5]
    assert sum(r["numberRecordsFailed"] for r in results) == 0


def test_query_with_paging_and_download(sf, emulator_tls, tmp_path: Path):
    emulator_tls.seed("Account", 23)
    pages = list(sf.bulk2.Account.query("SELECT Id, Name FROM Account", max_records=10, wait=WAIT))
    assert len(pages) == 3
    rows = [row for page in pages for row in parse(page)]
    assert len(rows) == 23
    assert len({r["Id"] for r in rows}) == 23
    everything = list(sf.bulk2.Account.query_all("SELECT Id FROM Account", max_records=50, wait=WAIT))
    assert sum(len(parse(page)) for page in everything) == 23
    results = sf.bulk2.Account.download("SELECT Id, Name FROM Account", path=str(tmp_path), max_records=7,
                                        wait=WAIT)
    assert len(results) == 4
    assert sum(r["number_of_records"] for r in results) == 23
    downloaded = sum(len(parse(Path(r["file"]).read_text())) for r in results)
    assert downloaded == 23


def test_direct_session_with_instance_url(emulator_tls, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emulator_tls.ca_path))
    client = simple_salesforce.Salesforce(instance_url=emulator_tls.base_url,
                                          session_id=emulator_tls.get_token(), version="60.0")
    result = client.bulk2.Opportunity.insert(
        records=[{"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2026-12-31",
                  "Amount": "1000.50"}],
        wait=WAIT)
    assert result[0]["numberRecordsFailed"] == 0
    assert client.limits()["DailyApiRequests"]["Max"] == emulator_tls.config.daily_api_requests
