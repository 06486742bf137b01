"""The sans-IO Bulk API 2.0 client: every flow written once, driven by a sync or an async transport.

:class:`BulkClient` is the whole API, assembled by concept:

- :mod:`~airflow_provider_sfbulk.protocol.effects`: what a flow yields (``Send``, ``Sleep``,
  ``Blocking``) and the two driver loops, :func:`run_sync` and :func:`run_async`;
- :mod:`~airflow_provider_sfbulk.protocol.core`: the shared token and the authenticated exchange
  (authentication, one renewal on 401 ``INVALID_SESSION_ID``, retries with backoff, download restarts,
  error mapping);
- :mod:`~airflow_provider_sfbulk.protocol.job_flows`: jobs of either kind and the org's limits;
- :mod:`~airflow_provider_sfbulk.protocol.ingest_flows`: ingest jobs;
- this module: query jobs, :class:`BulkClient` itself and :class:`JobPager`.

The hooks contain nothing but a ``_send`` and a small driver loop each. The effect types and drivers
are re-exported here, where callers have always imported them from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.api import JobInfo, QueryResultPage, ResultPageRef, ResultPagesPage
from airflow_provider_sfbulk.protocol.auth import TokenInfo
from airflow_provider_sfbulk.protocol.core import Call
from airflow_provider_sfbulk.protocol.effects import (
    Blocking,
    Effect,
    Flow,
    Send,
    Sleep,
    T,
    TransportFailure,
    run_async,
    run_sync,
)
from airflow_provider_sfbulk.protocol.ingest_flows import IngestFlows
from airflow_provider_sfbulk.protocol.job_flows import JobFlows
from airflow_provider_sfbulk.protocol.messages import Request, Writable, WritableCheckpoint
from airflow_provider_sfbulk.protocol.states import JobKind, QueryOperation

__all__ = [
    "Blocking",
    "BulkClient",
    "Effect",
    "Flow",
    "JobPager",
    "QueryFlows",
    "Send",
    "Sleep",
    "T",
    "TransportFailure",
    "run_async",
    "run_sync",
]


class QueryFlows(JobFlows):
    """The query job's life: create it, list its result pages, download them."""

    def create_query_job(
        self,
        soql: str,
        operation: QueryOperation | str = QueryOperation.QUERY,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
    ) -> Flow[JobInfo]:
        """Create a query job; it starts by itself (state ``UploadComplete``).

        :param soql: the SOQL query; Salesforce validates it at once (bad SOQL: HTTP 400).
        :param operation: ``query`` or ``queryAll`` (includes deleted and archived rows).
        """
        spec = api.query_job_spec(soql, operation, column_delimiter=column_delimiter, line_ending=line_ending)
        return self._create(
            "create query job",
            JobKind.QUERY,
            lambda base, token: api.build_create_query_job(base, token.access_token, spec),
        )

    def download_query_page(
        self,
        job_id: str,
        writable: Writable,
        locator: str | None = None,
        max_records: int | None = None,
        gzip: bool = True,
    ) -> Flow[QueryResultPage]:
        """Stream one page of a finished query job's CSV results into ``writable``.

        Omit ``locator`` for the first page, then pass each page's ``next_locator`` until it is ``None``.
        Every page starts with its own header row. Streaming and restarts work as for
        ``download_ingest_results``.
        """
        return self.execute(
            Call(
                "download query results",
                lambda base, token: api.build_query_results(
                    base, token.access_token, job_id, locator=locator, max_records=max_records, gzip=gzip
                ),
                lambda response: api.parse_result_page_headers(response.header, response.sink.decoded_bytes),
                job_id=job_id,
                download=WritableCheckpoint(writable),
            )
        )

    def get_result_pages(self, job_id: str, max_records: int | None = None) -> Flow[list[ResultPageRef]]:
        """Every result page of a finished query job (API 58.0+), following ``nextRecordsUrl``.

        Reads both answer shapes (``resultPages``/``resultUrl`` and ``resultChunks``/``resultLink``, see
        :func:`~airflow_provider_sfbulk.protocol.api.parse_result_pages`). An org without the endpoint
        answers 404 (:class:`~airflow_provider_sfbulk.exceptions.SalesforceBulkNotFoundError`); an answer
        that cannot be read raises :class:`~airflow_provider_sfbulk.exceptions.SalesforceBulkProtocolError`.
        Each :class:`~airflow_provider_sfbulk.protocol.api.ResultPageRef` carries the ``locator`` and
        ``max_records`` to pass to ``download_query_page``, so pages can be fetched in parallel.

        :param max_records: preferred rows per page, sent as ``maxRecords`` on the first call (not
            documented for ``resultPages``; the server may choose other page sizes).
        """
        refs: list[ResultPageRef] = []
        next_url: str | None = None
        while True:
            page: ResultPagesPage = yield from self.execute(
                Call(
                    "get result pages",
                    _result_pages_builder(job_id, next_url, max_records),
                    lambda response: api.parse_result_pages(
                        api.decode_json(response.body, "resultPages"), job_id
                    ),
                    job_id=job_id,
                )
            )
            refs.extend(page.pages)
            if page.done:
                return refs
            next_url = page.next_records_url


class BulkClient(IngestFlows, QueryFlows):
    """Sans-IO Bulk API 2.0 client bound to one connection. Every public method returns a :data:`Flow`.

    :param config: the validated connection.
    :param policy: retry policy for repeatable calls.
    :param cache: token cache (the process-wide one by default).
    :param on_token: called with each new token (the hooks register it with the secrets masker).
    :param logger: receives one debug line per HTTP exchange: method, path (no query), status.
    :param rng: source of backoff jitter.
    """


class JobPager:
    """Walks the job list page by page; each :meth:`fetch` flow returns the next page's jobs."""

    def __init__(self, client: BulkClient, kind: JobKind | str, **filters: Any) -> None:
        self._client = client
        self._kind = kind
        self._filters = filters
        self._next_url: str | None = None
        self.done = False

    def fetch(self) -> Flow[tuple[JobInfo, ...]]:
        """Fetch the next page; sets :attr:`done` after the last one."""
        if self.done:
            return ()
        if self._next_url is None:
            page = yield from self._client.list_jobs_page(self._kind, **self._filters)
        else:
            page = yield from self._client.list_jobs_page(self._kind, next_url=self._next_url)
        self._next_url = page.next_records_url
        self.done = page.done
        return page.records


def _result_pages_builder(
    job_id: str, next_url: str | None, max_records: int | None = None
) -> Callable[[str, TokenInfo], Request]:
    def build(base: str, token: TokenInfo) -> Request:
        return api.build_result_pages(
            base,
            token.access_token,
            job_id,
            next_url=next_url,
            instance_url=token.instance_url,
            max_records=max_records,
        )

    return build
