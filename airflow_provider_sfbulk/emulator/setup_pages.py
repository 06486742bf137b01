"""A stand-in for the Setup page the operators' extra link opens for one job (``Bulk Data Load Jobs``).

Salesforce serves it in Lightning, behind a browser login; the emulator answers its path with a small
HTML page and no login, so that following the link from Airflow's UI against the emulator lands on the
job it names. Nothing else of Setup is emulated.
"""

from __future__ import annotations

import html
from urllib.parse import unquote

from airflow_provider_sfbulk.emulator.store import JobRecord

#: The job's page; the job id comes in the ``address`` query parameter, as ``/<job id>``.
JOB_PAGE_PATH = "/lightning/setup/AsyncApiJobStatus/page"


def job_id_of(address: str) -> str:
    """The job id of an ``address`` parameter (``/750...``, percent-encoded or not)."""
    return unquote(address).lstrip("/")


def job_page(job: JobRecord | None, job_id: str) -> tuple[int, str]:
    """``(status, html)`` of one job's page: its object, operation, state and counts; 404 when unknown."""
    if job is None:
        return 404, _page("Bulk Data Load Job", f"<p>No job {html.escape(job_id)} in this org.</p>")
    rows = [
        ("Job ID", job.id), ("Object", job.object), ("Operation", job.operation), ("Status", job.state),
        ("Records Processed", str(job.records_processed)), ("Records Failed", str(job.records_failed)),
        ("Created Date", job.created_date),
    ]
    table = "".join(f"<tr><th>{html.escape(name)}</th><td data-field=\"{html.escape(name)}\">"
                    f"{html.escape(value)}</td></tr>" for name, value in rows)
    return 200, _page(f"Bulk Data Load Job {job.id}", f"<table>{table}</table>")


def _page(title: str, body: str) -> str:
    escaped = html.escape(title)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escaped}</title></head>"
            f"<body><p>Setup (sfbulk emulator)</p><h1>{escaped}</h1>{body}</body></html>")
