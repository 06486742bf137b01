"""Operator extra link: open the task's Bulk API 2.0 job(s) in Salesforce Setup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_sfbulk.protocol.api import job_setup_url

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

__all__ = ["LINK_XCOM_KEY", "SalesforceBulkJobLink", "job_link_url"]

#: XCom key of the link data: ``{"instance_url": ..., "job_ids": [...]}``.
LINK_XCOM_KEY = "sfbulk_job_link"

#: Setup's "Bulk Data Load Jobs" list page.
JOBS_LIST_PATH = "/lightning/setup/AsyncApiJobStatus/home"


def job_link_url(instance_url: str, job_ids: Sequence[str]) -> str:
    """One job: its deep link in Setup; several: the Bulk Data Load Jobs list; none: ``""``."""
    if not instance_url or not job_ids:
        return ""
    if len(job_ids) == 1:
        return job_setup_url(instance_url, job_ids[0])
    return instance_url.rstrip("/") + JOBS_LIST_PATH


class SalesforceBulkJobLink(BaseOperatorLink):
    """"Salesforce Bulk Job": the job on Setup's Bulk Data Load Jobs page (the list when there are several).

    The operators store ``{"instance_url", "job_ids"}`` with :meth:`persist` as soon as the jobs exist;
    nothing secret is stored.
    """

    name = "Salesforce Bulk Job"

    @staticmethod
    def persist(context: Context, *, instance_url: str, job_ids: Sequence[str]) -> None:
        """Push the link data (a small XCom under :data:`LINK_XCOM_KEY`)."""
        context["ti"].xcom_push(
            key=LINK_XCOM_KEY, value={"instance_url": instance_url, "job_ids": list(job_ids)}
        )

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """The URL of the task's job(s), from the XCom :meth:`persist` pushed; ``""`` when none."""
        value = XCom.get_value(key=LINK_XCOM_KEY, ti_key=ti_key)
        if not isinstance(value, dict):
            return ""
        job_ids = value.get("job_ids") or []
        return job_link_url(str(value.get("instance_url") or ""), [str(job_id) for job_id in job_ids])
