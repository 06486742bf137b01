"""SalesforceBulkJobLink: the Setup deep link for one job, the list for several."""

from __future__ import annotations

from unittest import mock

from airflow_provider_sfbulk.links.job import LINK_XCOM_KEY, SalesforceBulkJobLink, job_link_url

URL = "https://acme.my.salesforce.com"


def test_one_job_deep_link():
    assert job_link_url(URL, ["750000000000001AAA"]) == (
        f"{URL}/lightning/setup/AsyncApiJobStatus/page?address=%2F750000000000001AAA"
    )


def test_several_jobs_list_page_and_none():
    assert job_link_url(URL + "/", ["a", "b"]) == f"{URL}/lightning/setup/AsyncApiJobStatus/home"
    assert job_link_url(URL, []) == ""
    assert job_link_url("", ["a"]) == ""


def test_persist_pushes_small_xcom():
    ti = mock.Mock()
    SalesforceBulkJobLink.persist({"ti": ti}, instance_url=URL, job_ids=("750a",))
    ti.xcom_push.assert_called_once_with(key=LINK_XCOM_KEY, value={"instance_url": URL, "job_ids": ["750a"]})


def test_get_link_reads_xcom():
    link = SalesforceBulkJobLink()
    with mock.patch("airflow_provider_sfbulk.links.job.XCom.get_value") as get_value:
        get_value.return_value = {"instance_url": URL, "job_ids": ["750b"]}
        assert link.get_link(None, ti_key="k").endswith("address=%2F750b")
        get_value.assert_called_once_with(key=LINK_XCOM_KEY, ti_key="k")
        get_value.return_value = None
        assert link.get_link(None, ti_key="k") == ""
