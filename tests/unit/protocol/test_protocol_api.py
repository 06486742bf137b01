"""Request building and response parsing of the Bulk API 2.0 endpoints (pure)."""

from __future__ import annotations

import json
from datetime import timezone
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from airflow_provider_sfbulk.exceptions import SalesforceBulkProtocolError
from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.messages import UploadSource
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

BASE = "https://acme.my.salesforce.com/services/data/v62.0"

# Salesforce's documented create response, key order kept.
CREATE_RESPONSE = {
    "id": "7505fEXAMPLE4C2AAM", "operation": "insert", "object": "Account",
    "createdById": "0055fEXAMPLEtG4AAM", "createdDate": "2022-01-02T21:33:43.000+0000",
    "systemModstamp": "2022-01-02T21:33:43.000+0000", "state": "Open", "externalIdFieldName": None,
    "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": 60.0,
    "contentUrl": "services/data/v60.0/jobs/ingest/7505fEXAMPLE4C2AAM/batches",
    "lineEnding": "LF", "columnDelimiter": "COMMA",
}
GET_RESPONSE = {
    **CREATE_RESPONSE, "state": "Failed", "jobType": "V2Ingest", "numberRecordsProcessed": 10,
    "numberRecordsFailed": 3, "retries": 1, "totalProcessingTime": 345, "apiActiveProcessingTime": 200,
    "apexProcessingTime": 0, "errorMessage": "InvalidBatch : Field name not found : Foo", "newField": "x",
}


def test_create_ingest_job_request():
    spec = api.ingest_job_spec("Account", "upsert", external_id_field="Ext__c", column_delimiter="PIPE",
                               line_ending="CRLF", assignment_rule_id="01Q000000000001")
    request = api.build_create_ingest_job(BASE, "TOKEN", spec)
    assert (request.method, request.url) == ("POST", f"{BASE}/jobs/ingest")
    assert request.headers["Authorization"] == "Bearer TOKEN"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.headers["Accept-Encoding"] == "identity"
    assert json.loads(request.body) == {
        "object": "Account", "operation": "upsert", "contentType": "CSV", "columnDelimiter": "PIPE",
        "lineEnding": "CRLF", "externalIdFieldName": "Ext__c", "assignmentRuleId": "01Q000000000001",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"object_name": "Account", "operation": "merge"}, "operation"),
        ({"object_name": "Account", "operation": "upsert"}, "external_id_field"),
        ({"object_name": "", "operation": "insert"}, "object_name"),
        ({"object_name": "Account", "operation": "insert", "column_delimiter": ","}, "column_delimiter"),
        ({"object_name": "Account", "operation": "insert", "line_ending": "CR"}, "line_ending"),
    ],
)
def test_ingest_spec_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        api.ingest_job_spec(**kwargs)


def test_multipart_request_has_job_and_content_parts():
    spec = api.ingest_job_spec("Contact", "insert")
    csv = b"FirstName,LastName\nAstro,Nomical\n"
    request = api.build_create_ingest_job_with_data(BASE, "T", spec, csv, boundary="BOUNDARY")
    assert request.headers["Content-Type"] == "multipart/form-data; boundary=BOUNDARY"
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.body
    )
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["job", "content"]
    assert json.loads(parts[0].get_payload(decode=True)) == spec
    assert parts[1].get_content_type() == "text/csv"
    assert parts[1].get_payload(decode=True) == csv


def test_multipart_refuses_large_payloads():
    with pytest.raises(ValueError, match="upload_job_data"):
        api.build_create_ingest_job_with_data(BASE, "T", {}, b"x" * (api.MULTIPART_MAX_BYTES + 1))


def test_upload_request_streams_a_source():
    source = UploadSource(iter([b"a,b\n", b"1,2\n"]))
    request = api.build_upload_job_data(BASE, "T", "750X", source)
    assert (request.method, request.url) == ("PUT", f"{BASE}/jobs/ingest/750X/batches")
    assert request.headers["Content-Type"] == "text/csv"
    assert request.body is source


@pytest.mark.parametrize(
    ("state", "kind"), [(JobState.UPLOAD_COMPLETE, JobKind.INGEST), (JobState.ABORTED, JobKind.QUERY)]
)
def test_set_state_request(state, kind):
    request = api.build_set_job_state(BASE, "T", "750X", kind, state)
    assert (request.method, request.url) == ("PATCH", f"{BASE}/jobs/{kind.value}/750X")
    assert json.loads(request.body) == {"state": state.value}


def test_get_and_delete_requests():
    assert api.build_get_job(BASE, "T", "750X", JobKind.QUERY).url == f"{BASE}/jobs/query/750X"
    request = api.build_delete_job(BASE, "T", "750X", JobKind.INGEST)
    assert (request.method, request.body) == ("DELETE", None)


def test_list_jobs_filters_and_next_url():
    request = api.build_list_jobs(
        BASE, "T", JobKind.INGEST, is_pk_chunking_enabled=False, job_type="V2Ingest"
    )
    assert request.url == f"{BASE}/jobs/ingest?isPkChunkingEnabled=false&jobType=V2Ingest"
    request = api.build_list_jobs(
        BASE, "T", JobKind.INGEST, next_url="/services/data/v62.0/jobs/ingest?queryLocator=01g-1000",
        instance_url="https://acme.my.salesforce.com",
    )
    assert request.url == "https://acme.my.salesforce.com/services/data/v62.0/jobs/ingest?queryLocator=01g-1000"


def test_results_requests():
    request = api.build_download_ingest_results(BASE, "T", "750X", "unprocessedRecords")
    assert request.url == f"{BASE}/jobs/ingest/750X/unprocessedrecords"
    assert request.headers["Accept"] == "text/csv"
    assert request.headers["Accept-Encoding"] == "gzip"
    request = api.build_query_results(BASE, "T", "750Q", locator="MTAwMDA", max_records=500, gzip=False)
    assert request.url == f"{BASE}/jobs/query/750Q/results?locator=MTAwMDA&maxRecords=500"
    assert request.headers["Accept-Encoding"] == "identity"
    assert api.build_query_results(BASE, "T", "750Q").url == f"{BASE}/jobs/query/750Q/results"
    with pytest.raises(ValueError):
        api.build_query_results(BASE, "T", "750Q", max_records=0)
    with pytest.raises(ValueError, match="result_set"):
        api.result_set_name("allResults")


def test_query_spec():
    spec = api.query_job_spec("SELECT Id FROM Account", "queryAll", column_delimiter="TAB")
    assert spec == {"operation": "queryAll", "query": "SELECT Id FROM Account", "contentType": "CSV",
                    "columnDelimiter": "TAB", "lineEnding": "LF"}
    with pytest.raises(ValueError):
        api.query_job_spec("SELECT Id FROM Account", "search")
    with pytest.raises(ValueError):
        api.query_job_spec("  ")


def test_request_path_never_carries_the_query_string():
    request = api.build_query_results(BASE, "T", "750Q", locator="abc")
    assert request.path == "/services/data/v62.0/jobs/query/750Q/results"


def test_parse_create_response():
    job = api.parse_job_info(CREATE_RESPONSE, JobKind.INGEST)
    assert job.state is JobState.OPEN
    assert (job.id, job.object, job.operation, job.api_version) == (
        "7505fEXAMPLE4C2AAM",
        "Account",
        "insert",
        60.0,
    )
    assert job.content_url.endswith("/batches")
    assert job.number_records_processed is None
    assert job.created_at.tzinfo is not None
    assert job.created_at.astimezone(timezone.utc).hour == 21
    assert job.to_dict() == CREATE_RESPONSE


def test_parse_get_response_every_field():
    job = api.parse_job_info(GET_RESPONSE)
    assert job.kind is JobKind.INGEST
    assert job.state is JobState.FAILED
    assert (job.number_records_processed, job.number_records_failed, job.retries) == (10, 3, 1)
    timings = (job.total_processing_time, job.api_active_processing_time, job.apex_processing_time)
    assert timings == (345, 200, 0)
    assert job.message == "InvalidBatch : Field name not found : Foo"
    assert job.raw["newField"] == "x"


def test_parse_query_job_kind_detected():
    job = api.parse_job_info(
        {"id": "750Q", "state": "JobComplete", "operation": "query", "jobType": "V2Query",
         "isPkChunkingSupported": True}
    )
    assert job.kind is JobKind.QUERY
    assert job.is_pk_chunking_supported is True


@pytest.mark.parametrize("document", [[], {"id": "x"}, {"id": "x", "state": "Sleeping"}, "text"])
def test_parse_job_info_rejects_garbage(document):
    with pytest.raises(SalesforceBulkProtocolError):
        api.parse_job_info(document)


def test_parse_job_list_pages():
    page = api.parse_job_list(
        {"done": False, "records": [CREATE_RESPONSE],
         "nextRecordsUrl": "/services/data/v62.0/jobs/ingest?queryLocator=x"},
        JobKind.INGEST,
    )
    assert len(page.records) == 1
    assert not page.done
    assert page.next_records_url.endswith("queryLocator=x")
    last = api.parse_job_list({"done": True, "records": [], "nextRecordsUrl": None}, JobKind.INGEST)
    assert last.done
    assert last.next_records_url is None


def test_parse_result_pages_both_spellings():
    document = {
        "resultPages": [
            {"resultUrl": "/services/data/v58.0/jobs/query/750Q/results?maxRecords=10000"},
            {"resultUrl": "/services/data/v58.0/jobs/query/750Q/results?locator=MTAwMDA&maxRecords=10000"},
        ],
        "nextRecordUrl": "/services/data/v58.0/jobs/query/750Q/resultPages?locator=abc",
        "done": False,
    }
    page = api.parse_result_pages(document, "750Q")
    assert [(p.locator, p.max_records) for p in page.pages] == [(None, 10000), ("MTAwMDA", 10000)]
    assert page.next_records_url.endswith("locator=abc")
    plural = {**document, "nextRecordsUrl": document.pop("nextRecordUrl")}
    assert api.parse_result_pages(plural, "750Q").next_records_url.endswith("locator=abc")
    assert api.parse_result_pages({"resultPages": [], "done": True}).done


def test_parse_result_pages_chunks_shape():
    # msrivastav13/node-sf-bulk2 pull request 35: links relative to /services/data/vXX.X.
    document = {
        "resultChunks": [
            {"resultLink": "/jobs/query/750Q/results?maxRecords=50"},
            {"resultLink": "/jobs/query/750Q/results?locator=NTA&maxRecords=50"},
            {"resultLink": f"{BASE}/jobs/query/750Q/results?locator=MTAw"},
        ],
        "nextRecordsUrl": None,
        "done": True,
    }
    page = api.parse_result_pages(document, "750Q")
    assert [(p.locator, p.max_records) for p in page.pages] == [(None, 50), ("NTA", 50), ("MTAw", None)]
    assert page.done
    assert page.next_records_url is None


@pytest.mark.parametrize(
    "document",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"records": [], "done": True}, id="unknown-list-field"),
        pytest.param({"resultPages": {"resultUrl": "/jobs/query/750Q/results"}, "done": True},
                     id="not-a-list"),
        pytest.param({"resultChunks": [{"resultUrl": "/jobs/query/750Q/results"}], "done": True},
                     id="mixed-link-field"),
        pytest.param({"resultPages": [{"resultUrl": "/jobs/query/750OTHER/results"}], "done": True},
                     id="another-job"),
        pytest.param({"resultPages": [{"resultUrl": "/jobs/query/750Q/resultPages"}], "done": True},
                     id="not-results"),
        pytest.param({"resultPages": [{"resultUrl": "/jobs/query/750Q/results"}], "done": False},
                     id="not-done-without-next-link"),
    ],
)
def test_parse_result_pages_refuses_what_it_cannot_read(document):
    with pytest.raises(SalesforceBulkProtocolError):
        api.parse_result_pages(document, "750Q")


@pytest.mark.parametrize(
    ("link", "url"),
    [
        ("https://other.example/services/data/v62.0/jobs/query/750Q/resultPages?locator=a",
         "https://other.example/services/data/v62.0/jobs/query/750Q/resultPages?locator=a"),
        ("/services/data/v62.0/jobs/query/750Q/resultPages?locator=a",
         "https://acme.my.salesforce.com/services/data/v62.0/jobs/query/750Q/resultPages?locator=a"),
        ("services/data/v62.0/jobs/query/750Q/resultPages?locator=a",
         "https://acme.my.salesforce.com/services/data/v62.0/jobs/query/750Q/resultPages?locator=a"),
        ("/jobs/query/750Q/resultPages?locator=a", f"{BASE}/jobs/query/750Q/resultPages?locator=a"),
    ],
)
def test_next_result_pages_link_relative_to_instance_or_data_base(link, url):
    request = api.build_result_pages(
        BASE, "t", "750Q", next_url=link, instance_url="https://acme.my.salesforce.com"
    )
    assert request.url == url


def test_parse_result_page_headers():
    headers = {"Sforce-Locator": "MTAwMDA", "Sforce-NumberOfRecords": "10000"}
    page = api.parse_result_page_headers(headers.get, 1234)
    assert (page.next_locator, page.record_count, page.bytes_written) == ("MTAwMDA", 10000, 1234)
    last = api.parse_result_page_headers({"Sforce-Locator": "null", "Sforce-NumberOfRecords": "0"}.get, 0)
    assert last.next_locator is None
    with pytest.raises(SalesforceBulkProtocolError):
        api.parse_result_page_headers({}.get, 0)


def test_limits():
    limits = api.parse_limits({"DailyApiRequests": {"Max": 15000, "Remaining": 14998}, "Other": 1})
    assert isinstance(limits, dict)
    assert (limits.maximum("DailyApiRequests"), limits.remaining("DailyApiRequests")) == (15000, 14998)
    assert limits.remaining("Other") is None
    assert limits.remaining("Missing") is None


def test_job_setup_url_and_absolute_url():
    assert api.job_setup_url("https://acme.my.salesforce.com/", "750X") == (
        "https://acme.my.salesforce.com/lightning/setup/AsyncApiJobStatus/page?address=%2F750X"
    )
    assert api.absolute_url("https://a.b", "services/data/v1/x") == "https://a.b/services/data/v1/x"
    assert api.absolute_url("https://a.b", "https://c.d/x") == "https://c.d/x"


def test_decode_json_error_names_the_call():
    with pytest.raises(SalesforceBulkProtocolError, match="get job"):
        api.decode_json(b"<html>", "get job")


def test_job_list_tolerates_classic_jobs_in_closed_state() -> None:
    """Bulk API 1.0 jobs appear in the 2.0 job list (unless filtered) and can read ``Closed``."""
    from airflow_provider_sfbulk.protocol.api import parse_job_info
    from airflow_provider_sfbulk.protocol.states import JobKind, JobState

    job = parse_job_info(
        {"id": "7505fE000000001AAA", "operation": "insert", "object": "Account", "state": "Closed",
         "jobType": "Classic"},
        JobKind.INGEST,
    )
    assert job.state is JobState.CLOSED
    assert not job.state.is_terminal
