"""Flows for jobs of either kind, the org's limits and the sObject describe.

Jobs: read, change state, abort, delete, list.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow_provider_sfbulk.exceptions import (
    SalesforceBulkError,
    SalesforceBulkInvalidStateError,
    SalesforceBulkNotFoundError,
)
from airflow_provider_sfbulk.protocol import api
from airflow_provider_sfbulk.protocol.api import JobInfo, JobList, Limits
from airflow_provider_sfbulk.protocol.auth import TokenInfo
from airflow_provider_sfbulk.protocol.core import Call, ClientCore
from airflow_provider_sfbulk.protocol.describe import ObjectDescribe, parse_describe
from airflow_provider_sfbulk.protocol.effects import Flow, done
from airflow_provider_sfbulk.protocol.messages import Request, Response
from airflow_provider_sfbulk.protocol.retry import Repeat
from airflow_provider_sfbulk.protocol.states import JobKind, JobState


class JobFlows(ClientCore):
    """The flows every job has, whatever its kind, and the org's ``/limits``."""

    def _create(self, what: str, kind: JobKind, build: Callable[[str, TokenInfo], Request]) -> Flow[JobInfo]:
        """A job creation: never repeated once it may have reached the server (``Repeat.UNSAFE``)."""
        return self.execute(Call(what, build, _job_parser(kind), repeat=Repeat.UNSAFE))

    def set_job_state(self, job_id: str, kind: JobKind | str, state: JobState) -> Flow[JobInfo]:
        """``PATCH`` the job state. A retry that finds the state already set counts as success."""
        job_kind = api.job_kind(kind)

        def recover(error: SalesforceBulkError) -> Flow[JobInfo] | None:
            if isinstance(error, SalesforceBulkInvalidStateError):
                return self._confirm_state(job_id, job_kind, state, error)
            return None

        return self.execute(
            Call(
                f"set job state to {state.value}",
                lambda base, token: api.build_set_job_state(
                    base, token.access_token, job_id, job_kind, state
                ),
                _job_parser(job_kind),
                job_id=job_id,
                recover=recover,
            )
        )

    def _confirm_state(
        self, job_id: str, kind: JobKind, wanted: JobState, error: SalesforceBulkError
    ) -> Flow[JobInfo]:
        job = yield from self.get_job(job_id, kind)
        reached = job.state is wanted or (
            wanted is JobState.UPLOAD_COMPLETE
            and job.state is not JobState.OPEN
            and job.state is not JobState.ABORTED
        )
        if not reached:
            raise error
        return job

    def abort_job(self, job_id: str, kind: JobKind | str) -> Flow[JobInfo]:
        """Abort an ingest or query job (``Aborted``); rows already committed stay committed."""
        return self.set_job_state(job_id, kind, JobState.ABORTED)

    def get_job(self, job_id: str, kind: JobKind | str) -> Flow[JobInfo]:
        """Read a job's full JobInfo: state, counters, timings and ``errorMessage``.

        :param kind: ``"ingest"`` or ``"query"`` (or a :class:`JobKind`).
        """
        job_kind = api.job_kind(kind)
        return self.execute(
            Call(
                "get job",
                lambda base, token: api.build_get_job(base, token.access_token, job_id, job_kind),
                _job_parser(job_kind),
                job_id=job_id,
            )
        )

    def delete_job(self, job_id: str, kind: JobKind | str) -> Flow[None]:
        """Delete a finished (or ``UploadComplete``) job and its data. A retry finding it gone succeeds."""
        job_kind = api.job_kind(kind)

        def recover(error: SalesforceBulkError) -> Flow[None] | None:
            return done(None) if isinstance(error, SalesforceBulkNotFoundError) else None

        return self.execute(
            Call(
                "delete job",
                lambda base, token: api.build_delete_job(base, token.access_token, job_id, job_kind),
                lambda response: None,
                job_id=job_id,
                recover=recover,
            )
        )

    def list_jobs_page(
        self,
        kind: JobKind | str,
        *,
        next_url: str | None = None,
        is_pk_chunking_enabled: bool | None = None,
        job_type: str | None = None,
        concurrency_mode: str | None = None,
    ) -> Flow[JobList]:
        """One page of the job list: the first (with filters) or the one at ``next_url``."""
        job_kind = api.job_kind(kind)
        return self.execute(
            Call(
                "list jobs",
                lambda base, token: api.build_list_jobs(
                    base,
                    token.access_token,
                    job_kind,
                    next_url=next_url,
                    instance_url=token.instance_url,
                    is_pk_chunking_enabled=is_pk_chunking_enabled,
                    job_type=job_type,
                    concurrency_mode=concurrency_mode,
                ),
                lambda response: api.parse_job_list(api.decode_json(response.body, "list jobs"), job_kind),
            )
        )

    def get_limits(self) -> Flow[Limits]:
        """The org's ``/limits`` (a dict with ``remaining(name)`` and ``maximum(name)`` helpers)."""
        return self.execute(
            Call(
                "get limits",
                lambda base, token: api.build_limits(base, token.access_token),
                lambda response: api.parse_limits(api.decode_json(response.body, "limits")),
            )
        )


    def describe_object(self, object_name: str) -> Flow[ObjectDescribe]:
        """The object's describe: its fields and what may be written to each.

        :raises SalesforceBulkNotFoundError: no such object (or this user cannot see it).
        """
        return self.execute(
            Call(
                f"describe {object_name}",
                lambda base, token: api.build_describe(base, token.access_token, object_name),
                lambda response: parse_describe(api.decode_json(response.body, "describe")),
            )
        )


def _job_parser(kind: JobKind) -> Callable[[Response], JobInfo]:
    return lambda response: api.parse_job_info(api.decode_json(response.body, "job info"), kind)

