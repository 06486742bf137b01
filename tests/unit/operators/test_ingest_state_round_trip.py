"""The ingest checkpoint document (``ingest/state.py``): every field survives a write and a read exactly.

Mutation testing found fields a resumed load would silently lose (processing times, a part's error
message, a retry plan's counts): a checkpoint that drops a field resumes a load with less than it knew.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_sfbulk.ingest.state import (
    STATE_VERSION,
    ClockOffset,
    JobStats,
    LoadState,
    LostCreate,
    Part,
    PartResults,
    Phase,
    ResultFileSummary,
    RetryPlan,
    Round,
    Transition,
)


def _full_state() -> LoadState:
    files = {
        "failedResults": ResultFileSummary("failedResults", "file:///r/failed.csv", 2, 120, "ab" * 32),
        "successfulResults": ResultFileSummary("successfulResults", "file:///r/ok.csv", 5, 300, "cd" * 32),
    }
    results = PartResults(
        id="750A",
        state="JobComplete",
        error_message="partly failed",
        number_records_processed=7,
        number_records_failed=2,
        records_successful=5,
        records_failed=2,
        records_unprocessed=1,
        files=files,
        records_sent=8,
        reconciled=True,
        stats=JobStats(retries=3, total_processing_time=1500, apex_processing_time=40),
    )
    part = Part(
        index=0,
        bytes=1000,
        records=8,
        first_record=1,
        sha256="ef" * 32,
        phase=Phase.CLOSED,
        job_id="750A",
        abandoned_job_ids=["750Z"],
        states=[Transition("750A", "UploadComplete", "2024-06-01T12:00:00Z", {"note": "x"})],
        mode="multipart",
        sent_at=1717243200.5,
        state="JobComplete",
        results=results,
    )
    plan = RetryPlan(
        ["UNABLE_TO_LOCK_ROW"], rows=2, file="file:///r/retry.csv", by_code={"UNABLE_TO_LOCK_ROW": 2},
        resubmitted=1,
    )
    round0 = Round(0, "file:///in.csv", 2, ["UNABLE_TO_LOCK_ROW"], 8, [part], collected=True, retry=plan)
    return LoadState(
        fingerprint={"object": "Account"},
        started_at=1717243100.25,
        records_sent=8,
        rounds=[round0],
        stats_sent=True,
        lost_creates=[LostCreate((0, 1), 1717243150.0, 1717243160.0)],
        orphans_aborted=["750Y"],
        clock_offset=ClockOffset(-1.5, 2.5),
    )


def test_every_field_survives_a_json_round_trip() -> None:
    state = _full_state()
    document = json.loads(json.dumps(state.to_json()))
    assert LoadState.from_json(document) == state
    assert document["rounds"][0]["parts"][0]["results"]["stats"] == {
        "retries": 3,
        "totalProcessingTime": 1500,
        "apexProcessingTime": 40,
    }
    assert document["rounds"][0]["retry"] == {
        "codes": ["UNABLE_TO_LOCK_ROW"],
        "rows": 2,
        "resubmitted": 1,
        "file": "file:///r/retry.csv",
        "by_code": {"UNABLE_TO_LOCK_ROW": 2},
    }
    assert document["lost_creates"] == [{"part": [0, 1], "sent_at": 1717243150.0, "lost_at": 1717243160.0}]
    assert document["clock_offset"] == [-1.5, 2.5]
    assert document["stats_sent"] is True
    assert document["orphans_aborted"] == ["750Y"]


def test_optional_keys_read_back_as_their_defaults() -> None:
    assert RetryPlan.from_json({}) == RetryPlan([], 0, None, None, 0)
    assert JobStats.from_json({}) == JobStats(None, None, None)
    minimal_part = {
        "index": 1, "bytes": 10, "records": 1, "first_record": 9, "sha256": "00", "phase": Phase.NEW.value,
    }
    assert Part.from_json(minimal_part) == Part(index=1, bytes=10, records=1, first_record=9, sha256="00")
    round_ = Round.from_json(
        {"number": 1, "source": "s", "concurrency": 1, "records": 1, "parts": [minimal_part]}
    )
    assert (round_.retried_codes, round_.collected, round_.retry) == ([], False, None)
    state = LoadState.from_json(
        {"version": STATE_VERSION, "fingerprint": {}, "started_at": 1.0, "records_sent": 0, "rounds": []}
    )
    assert (state.stats_sent, state.lost_creates, state.orphans_aborted, state.clock_offset) == (
        False, [], [], None,
    )
    assert state.to_json() == {
        "version": STATE_VERSION, "fingerprint": {}, "started_at": 1.0, "records_sent": 0, "rounds": [],
    }


def test_another_checkpoint_version_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        LoadState.from_json({"version": STATE_VERSION + 1})
    assert str(caught.value) == f"checkpoint version {STATE_VERSION + 1} is not {STATE_VERSION}"
