"""Flows of Bulk API 2.0 ingest jobs: create (with or without data), upload, close, download results."""

from __future__ import annotations

from typing import IO

from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.api import JobInfo
from airflow_provider_sfbulk.protocol.core import Call
from airflow_provider_sfbulk.protocol.effects import Blocking, Flow
from airflow_provider_sfbulk.protocol.job_flows import JobFlows
from airflow_provider_sfbulk.protocol.messages import UploadData, UploadSource, Writable, WritableCheckpoint
from airflow_provider_sfbulk.protocol.retry import Repeat
from airflow_provider_sfbulk.protocol.states import IngestOperation, JobKind, JobState


class IngestFlows(JobFlows):
    """The ingest job's life: create, upload, close, and the three result sets."""

    def create_ingest_job(
        self,
        object_name: str,
        operation: IngestOperation | str,
        external_id_field: str | None = None,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        assignment_rule_id: str | None = None,
    ) -> Flow[JobInfo]:
        """Create an ingest job (state ``Open``); upload its data with ``upload_job_data``.

        Not repeated once the request may have reached Salesforce (see the hook documentation).

        :param object_name: sObject API name, e.g. ``Account``.
        :param operation: ``insert``, ``update``, ``upsert``, ``delete`` or ``hardDelete``.
        :param external_id_field: external id field (required for ``upsert``).
        :param column_delimiter: ``COMMA`` (default), ``TAB``, ``PIPE``, ``SEMICOLON``, ``CARET`` or
            ``BACKQUOTE``.
        :param line_ending: ``LF`` (default) or ``CRLF``.
        :param assignment_rule_id: Case or Lead assignment rule id.
        :return: the new job's :class:`~airflow_provider_sfbulk.protocol.api.JobInfo`.
        """
        spec = api.ingest_job_spec(
            object_name, operation, external_id_field, column_delimiter, line_ending, assignment_rule_id
        )
        return self._create(
            "create ingest job",
            JobKind.INGEST,
            lambda base, token: api.build_create_ingest_job(base, token.access_token, spec),
        )

    def create_ingest_job_with_data(
        self,
        object_name: str,
        operation: IngestOperation | str,
        data: bytes | IO[bytes],
        external_id_field: str | None = None,
        column_delimiter: str = "COMMA",
        line_ending: str = "LF",
        assignment_rule_id: str | None = None,
    ) -> Flow[JobInfo]:
        """Create an ingest job and upload small CSV ``data`` in one multipart request.

        The job comes back ``UploadComplete`` and starts by itself: do not close it. ``data`` (bytes or a
        binary file object) holds at most :data:`~airflow_provider_sfbulk.protocol.api.MULTIPART_MAX_BYTES`
        bytes; use ``create_ingest_job`` and ``upload_job_data`` for more. Never repeated once sent.
        The other parameters are those of ``create_ingest_job``.
        """
        spec = api.ingest_job_spec(
            object_name, operation, external_id_field, column_delimiter, line_ending, assignment_rule_id
        )
        payload: bytes = yield Blocking(lambda: _read_small(data))
        if len(payload) > api.MULTIPART_MAX_BYTES:  # fail before authenticating
            api.build_create_ingest_job_with_data("", "", spec, payload)
        return (
            yield from self._create(
                "create ingest job with data",
                JobKind.INGEST,
                lambda base, token: api.build_create_ingest_job_with_data(
                    base, token.access_token, spec, payload
                ),
            )
        )

    def upload_job_data(self, job_id: str, data: UploadData) -> Flow[None]:
        """Stream CSV ``data`` into an ``Open`` ingest job (``PUT .../batches``, one upload per job).

        ``data`` is ``bytes``, a binary file object, an iterator of ``bytes`` or (async hook only) an async
        iterator of ``bytes``; it is sent in chunks and never held whole in memory. Never repeated once
        bytes were sent. A stream that cannot be rewound (an iterator) is preceded by a ``GET`` of the
        job, which checks that the job exists and renews an expired session first, so a 401 half-way
        through the stream is unlikely; if it happens anyway the hook raises instead of sending partial
        data twice.
        """
        source = data if isinstance(data, UploadSource) else UploadSource(data)
        if not source.rewindable:
            yield from self.get_job(job_id, JobKind.INGEST)
        yield from self.execute(
            Call(
                "upload job data",
                lambda base, token: api.build_upload_job_data(base, token.access_token, job_id, source),
                lambda response: None,
                repeat=Repeat.UNSAFE,
                job_id=job_id,
                upload=source,
            )
        )

    def close_job(self, job_id: str) -> Flow[JobInfo]:
        """Set the ingest job to ``UploadComplete`` so Salesforce starts processing it."""
        return self.set_job_state(job_id, JobKind.INGEST, JobState.UPLOAD_COMPLETE)

    def download_ingest_results(
        self, job_id: str, result_set: str, writable: Writable, gzip: bool = True
    ) -> Flow[int]:
        """Stream ``successfulResults``, ``failedResults`` or ``unprocessedrecords`` into ``writable``.

        ``writable`` is anything with a binary ``write``; the CSV arrives in chunks and is never held whole
        in memory (``gzip`` asks for a compressed transfer, decompressed on the fly). A retried download
        starts over: a seekable writable is seeked back and truncated to where it was, any other one is
        only retried while nothing was written.

        :return: number of (decompressed) bytes written.
        """
        name = api.result_set_name(result_set)
        return self.execute(
            Call(
                f"download {name}",
                lambda base, token: api.build_download_ingest_results(
                    base, token.access_token, job_id, name, gzip=gzip
                ),
                lambda response: response.sink.decoded_bytes,
                job_id=job_id,
                download=WritableCheckpoint(writable),
            )
        )



def _read_small(data: bytes | IO[bytes]) -> bytes:
    """Read a multipart payload (small by definition: at most one byte more than the limit is read)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    content = data.read(api.MULTIPART_MAX_BYTES + 1)
    if isinstance(content, str):
        raise TypeError("create_ingest_job_with_data needs bytes or a binary file object")
    return content

