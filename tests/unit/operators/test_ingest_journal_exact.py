"""``LoadJournal`` (``ingest/journal.py``): every change is in the checkpoint when the call returns.

A change that is not saved is lost by the next crash, and a resumed load then starts a second job for a
part that already has one; each test reads the checkpoint back with a new reader.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from _loads import a_round, journal, part, saved

from airflow_provider_sfbulk.common.checkpoint import TaskCheckpoint
from airflow_provider_sfbulk.common.paths import to_storage_path
from airflow_provider_sfbulk.ingest.journal import STATE_KEY, LoadJournal
from airflow_provider_sfbulk.ingest.state import ClockOffset, LostCreate, Phase, Transition, now_iso

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def _new(tmp_path: Path) -> LoadJournal:
    return journal(tmp_path, a_round(0, part(0), part(1)))


def _between(before: datetime, at: str) -> None:
    assert ISO_MS.fullmatch(at), at
    moment = datetime.fromisoformat(at)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= moment
    assert moment <= datetime.now(timezone.utc)


def test_now_iso_is_utc_with_milliseconds() -> None:
    before = datetime.now(timezone.utc)
    _between(before, now_iso())


def test_the_state_key_is_ingest() -> None:
    assert STATE_KEY == "ingest"


def test_update_changes_the_part_and_saves(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    first = journal_.state.rounds[0].parts[0]
    journal_.update(first, phase=Phase.CREATED, job_id="750A")
    assert (first.phase, first.job_id) == (Phase.CREATED, "750A")
    assert saved(tmp_path) == journal_.state.to_json()
    assert saved(tmp_path)["rounds"][0]["parts"][0]["job_id"] == "750A"


def test_update_refuses_an_unknown_field_and_saves_nothing(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    first = journal_.state.rounds[0].parts[0]
    with pytest.raises(AttributeError) as caught:
        journal_.update(first, job_id="750A", jobid="750B")
    assert str(caught.value) == "a part has no field 'jobid'"
    assert saved(tmp_path) is None


def test_record_appends_a_transition_saved_with_the_next_change(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    first = journal_.state.rounds[0].parts[0]
    before = datetime.now(timezone.utc)
    journal_.record(first, "750A", "UploadComplete", mode="multipart")
    assert [(t.job_id, t.state, t.extra) for t in first.states] == [
        ("750A", "UploadComplete", {"mode": "multipart"})
    ]
    _between(before, first.states[0].at)
    assert saved(tmp_path) is None
    journal_.save()
    assert saved(tmp_path)["rounds"][0]["parts"][0]["states"] == [first.states[0].to_json()]


def test_abandon_forgets_the_job_and_sends_the_part_back_to_new(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    first = journal_.state.rounds[0].parts[0]
    journal_.update(first, phase=Phase.UPLOADING, job_id="750A")
    journal_.job_started("750A")
    journal_.job_started("750B")
    before = datetime.now(timezone.utc)
    journal_.abandon(first, "750A")
    assert (first.phase, first.job_id, first.abandoned_job_ids) == (Phase.NEW, None, ["750A"])
    assert [(t.job_id, t.state, t.extra) for t in first.states] == [("750A", "Abandoned", {})]
    _between(before, first.states[0].at)
    assert journal_.jobs_in_flight() == ["750B"]
    assert saved(tmp_path) == journal_.state.to_json()
    journal_.abandon(first, "750Z")  # a job not in flight: nothing to remove
    assert first.abandoned_job_ids == ["750A", "750Z"]
    assert journal_.jobs_in_flight() == ["750B"]


def test_jobs_in_flight_are_remembered_once_and_copied(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    for job_id in ("750A", "750B", "750A"):
        journal_.job_started(job_id)
    in_flight = journal_.jobs_in_flight()
    assert in_flight == ["750A", "750B"]
    in_flight.append("750C")
    assert journal_.jobs_in_flight() == ["750A", "750B"]
    journal_.forget_jobs()
    assert journal_.jobs_in_flight() == []


def test_lost_creates_and_orphans_are_saved(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    journal_.lost_create(LostCreate((0, 1), 10.0, 12.5))
    assert saved(tmp_path)["lost_creates"] == [{"part": [0, 1], "sent_at": 10.0, "lost_at": 12.5}]
    journal_.state.orphans_aborted.append("750O")
    journal_.orphans_settled(["750X", "750Y"])
    assert journal_.state.lost_creates == []
    assert journal_.state.orphans_aborted == ["750O", "750X", "750Y"]
    document = saved(tmp_path)
    assert "lost_creates" not in document
    assert document["orphans_aborted"] == ["750O", "750X", "750Y"]


def test_the_clock_offset_narrows_and_ignores_a_contradiction(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    journal_.learn_clock(sent_at=100.0, answered_at=100.5, created_at=200.0)
    # created - answered <= offset < created + 1 - sent
    assert journal_.state.clock_offset == ClockOffset(99.5, 101.0)
    journal_.learn_clock(sent_at=110.25, answered_at=110.25, created_at=210.0)
    assert journal_.state.clock_offset == ClockOffset(99.75, 100.75)
    journal_.learn_clock(sent_at=120.0, answered_at=120.0, created_at=300.0)  # offset ~180: a clock jump
    assert journal_.state.clock_offset == ClockOffset(99.75, 100.75)
    journal_.learn_clock(sent_at=130.0, answered_at=130.0, created_at=130.0)  # offset ~0: a jump back
    assert journal_.state.clock_offset == ClockOffset(99.75, 100.75)


def test_bounds_that_meet_in_one_point_are_kept(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    journal_.learn_clock(sent_at=10.0, answered_at=10.0, created_at=10.0)
    assert journal_.state.clock_offset == ClockOffset(0.0, 1.0)
    journal_.learn_clock(sent_at=13.0, answered_at=13.0, created_at=14.0)
    assert journal_.state.clock_offset == ClockOffset(1.0, 1.0)
    assert saved(tmp_path) is None  # learning the clock alone does not write the checkpoint


def test_load_reads_the_saved_state_and_delete_forgets_it(tmp_path: Path) -> None:
    checkpoint = TaskCheckpoint(folder=to_storage_path(tmp_path / "checkpoint"))
    assert LoadJournal.load(checkpoint) is None
    journal_ = _new(tmp_path)
    first = journal_.state.rounds[0].parts[0]
    first.states.append(Transition("750A", "Open", "2024-01-01T00:00:00.000+00:00"))
    journal_.save()
    loaded = LoadJournal.load(TaskCheckpoint(folder=to_storage_path(tmp_path / "checkpoint")))
    assert loaded is not None
    assert loaded.state == journal_.state
    assert loaded.jobs_in_flight() == []
    journal_.checkpoint.set("other", 1)
    journal_.delete()
    assert saved(tmp_path) is None
    assert TaskCheckpoint(folder=to_storage_path(tmp_path / "checkpoint")).get("other") == 1


def test_load_refuses_another_version(tmp_path: Path) -> None:
    journal_ = _new(tmp_path)
    document = journal_.state.to_json()
    document["version"] = 2
    journal_.checkpoint.set(STATE_KEY, document)
    with pytest.raises(ValueError, match=r"^checkpoint version 2 is not 1$"):
        LoadJournal.load(journal_.checkpoint)
