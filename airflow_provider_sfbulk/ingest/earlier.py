"""What a task does with the load an earlier attempt of it left in the checkpoint.

The common day: a load fails (a bad column, a validation rule), the engineer fixes the file or the
parameters and clears the task. The checkpoint protects against loading rows twice, and the protection is
kept exactly where it matters:

- the same parameters and an unfinished load: resume it (a crash, a deferral, a retry);
- the same parameters and source, and a finished load: report its outcome again (nothing is loaded twice);
- changed parameters or a changed source, and the earlier attempt loaded nothing (every job ``Failed`` or
  ``Aborted`` with no successful row, or no job processed anything): start a fresh load, saying why;
- changed parameters or source, and rows were loaded (or jobs still run): refuse, naming the jobs and the
  counts, and the one setting that starts over, ``restart_load=True``;
- ``restart_load=True``: abort whatever of the earlier load still runs and start a fresh load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.split import CsvPart
from airflow_provider_sfbulk.exceptions import SalesforceBulkError
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.journal import LoadJournal
from airflow_provider_sfbulk.ingest.state import LoadState
from airflow_provider_sfbulk.protocol.states import JobKind, JobState

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["resume_earlier_load"]


def resume_earlier_load(
    journal: LoadJournal,
    *,
    fingerprint: dict[str, Any],
    split_source: Callable[[], Sequence[CsvPart]],
    hook: SalesforceBulkHook,
    log: Log,
    restart: bool,
) -> bool:
    """Decide about the earlier load in ``journal`` (see the module documentation).

    Returns True to resume it, False when it was discarded and a fresh load should start.

    :param fingerprint: the parameters of this attempt.
    :param split_source: validates and splits this attempt's source (only called for a finished load).
    :param restart: the task's ``restart_load``.
    :raises IngestInputError: rows were loaded (or jobs still run) and the parameters or source changed.
    """
    state = journal.state
    if restart:
        _discard(journal, hook, log, "restart_load=True")
        return False
    same_parameters = state.fingerprint == fingerprint
    if same_parameters and not _finished(state):
        return True
    if same_parameters:
        parts = split_source()
        if [part.sha256 for part in parts] == [part.sha256 for part in state.rounds[0].parts]:
            return True
        why = f"the source {fingerprint['source']} changed since the earlier attempt"
    else:
        changed = sorted(key for key in fingerprint if state.fingerprint.get(key) != fingerprint[key])
        why = f"the parameters changed since the earlier attempt ({', '.join(changed)})"
    loaded = _loaded_rows(state, hook)
    if loaded == 0:
        log.info("The earlier attempt of this task loaded no row and %s: starting a fresh load", why)
        _discard(journal, hook, log, why)
        return False
    raise IngestInputError(_refusal(state, loaded, why))


def _finished(state: LoadState) -> bool:
    """True when the last round was collected and its retry decided: the load reached its end."""
    return state.current.collected and state.current.retry is not None


def _loaded_rows(state: LoadState, hook: SalesforceBulkHook) -> int | None:
    """Rows the earlier attempt loaded; ``None`` while any of its jobs still processes."""
    total = 0
    for part in state.all_parts():
        if part.results is not None:
            total += part.results.records_successful
            continue
        if part.job_id is None:
            continue
        job = hook.get_job(part.job_id, JobKind.INGEST)
        if job.state is JobState.OPEN:
            continue  # an Open job has processed nothing (it is aborted when the load is discarded)
        if not job.state.is_terminal:
            return None
        total += (job.number_records_processed or 0) - (job.number_records_failed or 0)
    return total


def _refusal(state: LoadState, loaded: int | None, why: str) -> str:
    jobs = ", ".join(state.job_ids()) or "none"
    if loaded is None:
        done = f"jobs of the earlier attempt are still running ({jobs})"
    else:
        done = f"the earlier attempt loaded {loaded} of {state.records_sent} row(s) in job(s) {jobs}"
    return (
        f"{done}, and {why}. Loading again could load rows twice, so this task refuses. To start a fresh "
        "load anyway (rows already loaded stay loaded), set restart_load=True on the task (it is "
        "templated, e.g. restart_load=\"{{ params.get('restart_load', False) }}\") and clear it."
    )


def _discard(journal: LoadJournal, hook: SalesforceBulkHook, log: Log, why: str) -> None:
    """Abort what of the earlier load may still run, then forget it."""
    state = journal.state
    for part in state.all_parts():
        if part.job_id is None or part.terminal:
            continue
        try:
            job = hook.abort_job(part.job_id, JobKind.INGEST)
            log.warning("Job %s of the earlier attempt aborted (%s): %s", part.job_id, why, job.state.value)
        except SalesforceBulkError as err:  # already finished, or gone
            log.info("Job %s of the earlier attempt not aborted: %s", part.job_id, err)
    log.info("Discarding the earlier load (jobs %s): %s", ", ".join(state.job_ids()) or "none", why)
    journal.delete()
