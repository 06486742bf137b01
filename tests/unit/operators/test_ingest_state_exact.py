"""The questions the ingest state answers (``ingest/state.py``): which parts run, which jobs exist.

A resumed load acts on these answers: a part wrongly taken as terminal is never collected, a job id
missing from ``known_job_ids`` is taken for an orphan and aborted.
"""

from __future__ import annotations

import pytest

from airflow_provider_sfbulk.ingest.state import (
    CREATED_DATE_RESOLUTION,
    STATE_VERSION,
    ClockOffset,
    JobStats,
    LoadState,
    Part,
    PartResults,
    Phase,
    ResultFileSummary,
    Round,
    Transition,
)
from airflow_provider_sfbulk.protocol.states import JobState


def _part(index: int, phase: Phase = Phase.NEW, **fields) -> Part:
    return Part(index=index, bytes=10, records=1, first_record=index + 1, sha256="00", phase=phase, **fields)


def test_constants() -> None:
    assert (STATE_VERSION, CREATED_DATE_RESOLUTION) == (1, 1.0)


@pytest.mark.parametrize("phase", list(Phase))
def test_only_uploaded_and_closed_parts_have_data_in_a_job(phase: Phase) -> None:
    assert phase.has_data_in_a_job is (phase in (Phase.UPLOADED, Phase.CLOSED))


def test_phase_values_are_the_checkpoint_words() -> None:
    words = ["new", "creating", "created", "uploading", "uploaded", "closed"]
    assert [phase.value for phase in Phase] == words


@pytest.mark.parametrize(
    ("phase", "state", "terminal", "running", "broken"),
    [
        (Phase.CLOSED, None, False, True, False),
        (Phase.CLOSED, "UploadComplete", False, True, False),
        (Phase.CLOSED, "InProgress", False, True, False),
        (Phase.CLOSED, "JobComplete", True, False, False),
        (Phase.CLOSED, "Failed", True, False, True),
        (Phase.CLOSED, "Aborted", True, False, True),
        (Phase.UPLOADED, None, False, False, False),
        (Phase.UPLOADED, "Aborted", True, False, True),
    ],
)
def test_a_part_is_terminal_running_or_broken_by_its_job_state(
    phase, state, terminal, running, broken
) -> None:
    part = _part(0, phase, state=state)
    assert part.job_state == (JobState(state) if state else None)
    assert (part.terminal, part.running, part.broken) == (terminal, running, broken)


def test_job_ids_known_and_current() -> None:
    first = _part(0, Phase.CLOSED, job_id="750B", abandoned_job_ids=["750A"])
    second = _part(1)
    third = _part(2, Phase.CREATED, job_id="750C", abandoned_job_ids=["", "750Z"])
    assert first.known_job_ids() == ["750B", "750A"]
    assert second.known_job_ids() == []
    assert third.known_job_ids() == ["750C", "750Z"]
    retry = _part(0, job_id="750D")
    state = LoadState(
        {}, 0.0, 3, [Round(0, "s", 1, [], 3, [first, second, third]), Round(1, "r", 1, [], 1, [retry])]
    )
    assert state.current.number == 1
    assert state.all_parts() == [first, second, third, retry]
    assert state.job_ids() == ["750B", "750C", "750D"]
    assert state.known_job_ids() == {"750A", "750B", "750C", "750Z", "750D"}


def test_the_last_recorded_state() -> None:
    part = _part(0)
    assert part.last_recorded_state() is None
    part.states = [Transition("750A", "Open", "t1")]
    assert part.last_recorded_state() == "Open"
    part.states += [Transition("750A", "UploadComplete", "t2"), Transition("750A", "JobComplete", "t3")]
    assert part.last_recorded_state() == "JobComplete"


def test_a_round_lists_its_parts_by_phase_and_the_running_ones() -> None:
    parts = [
        _part(0, Phase.NEW),
        _part(1, Phase.CLOSED, state="InProgress"),
        _part(2, Phase.CLOSED, state="JobComplete"),
        _part(3, Phase.UPLOADED),
        _part(4, Phase.CLOSED),
    ]
    round_ = Round(0, "s", 2, [], 5, parts)
    assert round_.parts_in(Phase.NEW, Phase.UPLOADED) == [parts[0], parts[3]]
    assert round_.parts_in(Phase.CLOSED) == [parts[1], parts[2], parts[4]]
    assert round_.parts_in() == []
    assert round_.running() == [parts[1], parts[4]]


def test_part_results_answer_completed_and_file_uri() -> None:
    files = {"failedResults": ResultFileSummary("failedResults", "file:///f.csv", 1, 2, "ab")}
    results = PartResults("750A", "JobComplete", None, 1, 1, 0, 1, 0, files, 1, True, JobStats())
    assert results.completed is True
    assert results.file_uri("failedResults") == "file:///f.csv"
    for state in ("Failed", "Aborted", "InProgress"):
        results.state = state
        assert results.completed is False


def test_the_clock_offset_bounds() -> None:
    known = ClockOffset(-10.0, 10.0)
    assert known.narrowed(100.0, 102.0, 103.0) == ClockOffset(1.0, 4.0)
    assert known.narrowed(100.0, 130.0, 95.0) == ClockOffset(-10.0, -4.0)
    assert ClockOffset(0.5, 0.75).to_json() == [0.5, 0.75]
