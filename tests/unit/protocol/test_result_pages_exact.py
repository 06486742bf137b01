"""Result-page paging in the sans-IO layer, exact values (mutation testing found these only partly pinned).

The ``/results`` and ``/resultPages`` requests, the locator headers, ``resultUrl`` parsing, both shapes of
``resultPages`` answers and link resolution: a wrong locator or a skipped page loses rows silently.
"""

from __future__ import annotations

import pytest

from airflow_provider_sfbulk.exceptions import SalesforceBulkProtocolError
from airflow_provider_sfbulk.protocol import api

BASE = "https://org.my.salesforce.com/services/data/v62.0"
INSTANCE = "https://org.my.salesforce.com"
V62 = "/services/data/v62.0"


def _headers(accept: str, encoding: str) -> dict[str, str]:
    return {
        "Authorization": "Bearer tok",
        "Accept": accept,
        "Accept-Encoding": encoding,
        "User-Agent": api.USER_AGENT,
    }


def test_first_results_page_request() -> None:
    request = api.build_query_results(BASE, "tok", "750 x")
    assert (request.method, request.url, request.body) == ("GET", f"{BASE}/jobs/query/750%20x/results", None)
    assert dict(request.headers) == _headers("text/csv", "gzip")


def test_next_results_page_request_carries_locator_and_max_records() -> None:
    request = api.build_query_results(BASE, "tok", "750x", locator="MTAwMDA", max_records=1, gzip=False)
    assert request.url == f"{BASE}/jobs/query/750x/results?locator=MTAwMDA&maxRecords=1"
    assert dict(request.headers) == _headers("text/csv", "identity")
    assert api.build_query_results(BASE, "tok", "750x", locator="", max_records=5).url == (
        f"{BASE}/jobs/query/750x/results?maxRecords=5"
    )


@pytest.mark.parametrize("builder", [api.build_query_results, api.build_result_pages])
def test_max_records_must_be_positive(builder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as caught:
        builder(BASE, "tok", "750x", max_records=0)
    assert str(caught.value) == "max_records must be positive"


def test_result_pages_requests() -> None:
    first = api.build_result_pages(BASE, "tok", "750 x")
    assert (first.method, first.url, first.body) == ("GET", f"{BASE}/jobs/query/750%20x/resultPages", None)
    assert dict(first.headers) == _headers("application/json", "identity")
    sized = api.build_result_pages(BASE, "tok", "750x", max_records=1)
    assert sized.url == f"{BASE}/jobs/query/750x/resultPages?maxRecords=1"
    nxt = api.build_result_pages(
        BASE, "tok", "750x", next_url="/services/data/v62.0/jobs/query/750x/resultPages?page=2",
        instance_url=INSTANCE + "/", max_records=3,
    )
    assert (nxt.method, nxt.url) == ("GET", f"{INSTANCE}{V62}/jobs/query/750x/resultPages?page=2")
    assert dict(nxt.headers) == _headers("application/json", "identity")
    relative = api.build_result_pages(BASE, "tok", "750x", next_url="jobs/query/750x/resultPages?page=3")
    assert relative.url == f"{BASE}/jobs/query/750x/resultPages?page=3"


def test_api_link_url_resolves_each_kind_of_link() -> None:
    absolute = "https://other.example/services/data/v62.0/jobs/query/750x/results?locator=a"
    assert api.api_link_url(BASE, INSTANCE, absolute) == absolute
    assert api.api_link_url(BASE + "/", INSTANCE + "/", "//services/x") == f"{INSTANCE}/services/x"
    assert api.api_link_url(BASE + "/", INSTANCE, "jobs/q") == f"{BASE}/jobs/q"
    assert api.api_link_url(BASE, INSTANCE, "/servicesX/q") == f"{BASE}/servicesX/q"


def test_result_page_headers() -> None:
    def page(headers: dict[str, str]) -> api.QueryResultPage:
        return api.parse_result_page_headers(headers.get, 42)

    first = page({"Sforce-Locator": " MTAw ", "Sforce-NumberOfRecords": "7"})
    assert first == api.QueryResultPage("MTAw", 7, 42)
    assert page({"Sforce-Locator": "null", "Sforce-NumberOfRecords": "0"}) == api.QueryResultPage(None, 0, 42)
    assert page({"Sforce-Locator": ""}) == api.QueryResultPage(None, -1, 42)
    with pytest.raises(SalesforceBulkProtocolError) as caught:
        page({"Sforce-NumberOfRecords": "7"})
    assert str(caught.value) == "query results without a Sforce-Locator header"
    with pytest.raises(SalesforceBulkProtocolError) as caught:
        page({"Sforce-Locator": "x", "Sforce-NumberOfRecords": "7.5"})
    assert str(caught.value) == "bad Sforce-NumberOfRecords header '7.5'"


def test_result_url_locator_and_max_records() -> None:
    url = "/services/data/v62.0/jobs/query/750x/results?locator=MTAw&maxRecords=50000"
    assert api.parse_result_url(url) == api.ResultPageRef(url, "MTAw", 50000)
    assert api.parse_result_url("/jobs/query/750x/results?locator=null&maxRecords=abc") == (
        api.ResultPageRef("/jobs/query/750x/results?locator=null&maxRecords=abc", None, None)
    )
    assert api.parse_result_url("/jobs/query/750x/results") == api.ResultPageRef(
        "/jobs/query/750x/results", None, None
    )


def test_result_pages_in_the_documented_shape() -> None:
    document = {
        "resultPages": [
            {"resultUrl": "/services/data/v62.0/jobs/query/750x/results?maxRecords=2"},
            {"resultUrl": f"{V62}/jobs/query/750x/results/?locator=Mg&maxRecords=2"},
        ],
        "done": False,
        "nextRecordsUrl": "/services/data/v62.0/jobs/query/750x/resultPages?page=2",
    }
    parsed = api.parse_result_pages(document, "750x")
    assert parsed == api.ResultPagesPage(
        pages=(
            api.ResultPageRef("/services/data/v62.0/jobs/query/750x/results?maxRecords=2", None, 2),
            api.ResultPageRef(f"{V62}/jobs/query/750x/results/?locator=Mg&maxRecords=2", "Mg", 2),
        ),
        done=False,
        next_records_url="/services/data/v62.0/jobs/query/750x/resultPages?page=2",
    )


def test_result_pages_in_the_chunks_shape_and_the_singular_next_link() -> None:
    document = {
        "resultChunks": [{"resultLink": "/jobs/query/750x/results?locator=MQ"}],
        "nextRecordUrl": "/jobs/query/750x/resultPages?page=2",
    }
    parsed = api.parse_result_pages(document)
    assert parsed == api.ResultPagesPage(
        pages=(api.ResultPageRef("/jobs/query/750x/results?locator=MQ", "MQ", None),),
        done=False,
        next_records_url="/jobs/query/750x/resultPages?page=2",
    )
    last = api.parse_result_pages({"resultPages": None, "nextRecordsUrl": "", "done": True})
    assert last == api.ResultPagesPage(pages=(), done=True, next_records_url=None)
    assert api.parse_result_pages({"resultPages": []}) == api.ResultPagesPage((), True, None)
    done_with_next = api.parse_result_pages({"resultPages": [], "done": True, "nextRecordsUrl": "/x"})
    assert done_with_next.next_records_url is None


@pytest.mark.parametrize(
    ("document", "job_id", "message"),
    [
        ([], None, "resultPages answer is not an object: '[]'"),
        ({"records": []}, None,
         "resultPages answer in an unknown shape (neither resultPages nor resultChunks): "
         "\"{'records': []}\""),
        ({"resultPages": "x"}, None, "resultPages: resultPages is not a list: 'x'"),
        ({"resultChunks": [{"resultUrl": "/results"}]}, None,
         "resultPages: an entry of resultChunks has no resultLink: \"[{'resultUrl': '/results'}]\""),
        ({"resultPages": ["/results"]}, None,
         "resultPages: an entry of resultPages has no resultUrl: \"['/results']\""),
        ({"resultPages": [{"resultUrl": ""}]}, None,
         "resultPages: an entry of resultPages has no resultUrl: \"[{'resultUrl': ''}]\""),
        ({"resultPages": [{"resultUrl": "/jobs/query/750y/results"}]}, "750x",
         "resultPages: '/jobs/query/750y/results' is not a link to /jobs/query/750x/results"),
        ({"resultPages": [{"resultUrl": "/jobs/query/750x/other"}]}, None,
         "resultPages: '/jobs/query/750x/other' is not a link to /results"),
        ({"resultPages": [], "nextRecordsUrl": 5}, None, "resultPages: next link is not a string: 5"),
        ({"resultPages": [], "done": False}, None, "resultPages answered done=false without a next link"),
    ],
)
def test_unreadable_result_pages_answers_are_refused(document, job_id, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SalesforceBulkProtocolError) as caught:
        api.parse_result_pages(document, job_id)
    assert str(caught.value) == message


def test_a_shape_with_an_empty_first_list_still_reads_the_second_field_only_if_the_first_is_absent() -> None:
    both = {"resultPages": [], "resultChunks": [{"resultLink": "/jobs/query/750x/results?locator=MQ"}]}
    assert api.parse_result_pages(both).pages == ()


def test_only_slashes_are_stripped_from_links_and_bases() -> None:
    assert api.api_link_url("https://h/baseX", "https://h/instX", "Xjobs/q") == "https://h/baseX/Xjobs/q"
    assert api.api_link_url("https://h/baseX/", "https://h/instX/", "/services/X") == "https://h/instX/services/X"
    with pytest.raises(SalesforceBulkProtocolError) as caught:
        api.parse_result_pages({"resultPages": [{"resultUrl": "/jobs/query/750x/resultsX"}]})
    assert str(caught.value) == "resultPages: '/jobs/query/750x/resultsX' is not a link to /results"


UNKNOWN_SHAPE = "resultPages answer in an unknown shape (neither resultPages nor resultChunks)"


@pytest.mark.parametrize(
    ("document", "prefix"),
    [
        ("y" * 300, "resultPages answer is not an object: "),
        ({"other": "y" * 300}, f"{UNKNOWN_SHAPE}: "),
        ({"resultPages": "y" * 300}, "resultPages: resultPages is not a list: "),
        ({"resultPages": ["y" * 300]}, "resultPages: an entry of resultPages has no resultUrl: "),
    ],
)
def test_a_long_answer_is_quoted_to_200_characters(document, prefix: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SalesforceBulkProtocolError) as caught:
        api.parse_result_pages(document)
    quoted = str(caught.value).removeprefix(prefix)
    assert str(caught.value).startswith(prefix)
    assert len(quoted) == 202  # the first 200 characters of the answer, in quotes
