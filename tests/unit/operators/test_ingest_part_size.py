"""How a source is cut into parts: spread over ``job_concurrency`` jobs of similar size above
``min_bytes_per_job``, at ``max_bytes_per_job`` otherwise, and cut again the same way after a restart."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from _fakes import FakeTI
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.ingest.parts import PartFiles, new_round
from airflow_provider_sfbulk.ingest.spec import DEFAULT_MIN_BYTES_PER_JOB, LoadSpec
from airflow_provider_sfbulk.ingest.state import Round
from airflow_provider_sfbulk.operators.ingest import SalesforceBulkIngestOperator

MB = 1_000_000


def spec(**kwargs: Any) -> LoadSpec:
    return LoadSpec("Account", "insert", **kwargs)


def write_rows(path: Path, count: int, width: int = 40) -> ObjectStoragePath:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Name", "Description"])
    for i in range(count):
        writer.writerow([f"Account {i:05d}", f"a, \"quoted\"\nline {i} " + "x" * (i % width)])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return ObjectStoragePath(f"file://{path}")


# --- the size rule ----------------------------------------------------------------------------------


def test_a_big_file_is_spread_over_the_concurrency_in_parts_of_similar_size():
    size = spec().part_bytes(220 * MB, 5)
    assert size == 44 * MB + 880_000  # an even fifth and 2 % of room: five parts, not six


def test_a_file_too_big_to_spread_is_cut_at_max_bytes_per_job():
    assert spec().part_bytes(1_074 * MB, 5) == 100 * MB


def test_parts_are_never_smaller_than_min_bytes_per_job():
    assert DEFAULT_MIN_BYTES_PER_JOB == 10 * MB
    assert spec().part_bytes(25 * MB, 5) == 12_750_000  # two even parts, not 10 + 10 + 5 MB
    assert spec().part_bytes(19_999_999, 5) == 20_399_998  # under twice the minimum: one part
    assert spec().part_bytes(3 * MB, 5) == 10 * MB  # a small file stays one part
    assert spec().part_bytes(0, 5) == 10 * MB  # an empty file is refused by the split, not by a size of 0


def test_min_at_or_above_max_cuts_only_where_a_part_is_full():
    assert spec(max_bytes_per_job=300, min_bytes_per_job=300).part_bytes(10 * MB, 5) == 300
    assert spec(max_bytes_per_job=300).part_bytes(10 * MB, 5) == 300


def test_an_unknown_size_cuts_at_max_bytes_per_job():
    assert spec().part_bytes(None, 5) == 100 * MB


def test_one_job_at_a_time_is_not_spread():
    assert spec().part_bytes(220 * MB, 1) == 100 * MB


def test_the_room_above_a_share_is_two_percent_of_it():
    assert spec(min_bytes_per_job=1).part_bytes(3_000_000, 3) == 1_020_000
    assert spec(min_bytes_per_job=1).part_bytes(3_000_001, 3) == 1_020_001


@pytest.mark.parametrize("name", ["max_bytes_per_job", "min_bytes_per_job"])
def test_sizes_below_one_byte_are_refused_when_the_dag_is_parsed(name):
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
        SalesforceBulkIngestOperator(
            task_id="t", source="/x.csv", object_name="Account", operation="insert", **{name: 0}
        )


# --- the parts and the checkpoint -------------------------------------------------------------------


def files_for(load_spec: LoadSpec, source: ObjectStoragePath) -> PartFiles:
    return PartFiles(load_spec, lambda round_: source, logging.getLogger("test"))


def test_split_spreads_a_file_over_the_concurrency_and_records_the_size(tmp_path):
    source = write_rows(tmp_path / "a.csv", 3000)
    total = Path(source.path).stat().st_size
    load_spec = spec(min_bytes_per_job=10_000)
    files = files_for(load_spec, source)
    parts = files.split(source, 0, concurrency=4)
    assert len(parts) == 4
    sizes = [part.byte_count for part in parts]
    assert max(sizes) - min(sizes) < total // 10  # similar sizes, not three full parts and a remnant
    assert sum(part.record_count for part in parts) == 3000
    assert files.part_bytes_of(0) == load_spec.part_bytes(total, 4)
    round_ = new_round(0, str(source), parts, 4, (), part_bytes=files.part_bytes_of(0))
    assert Round.from_json(json.loads(json.dumps(round_.to_json()))).part_bytes == files.part_bytes_of(0)
    files.cleanup()


def test_a_restarted_process_cuts_the_source_as_the_checkpoint_says(tmp_path):
    source = write_rows(tmp_path / "a.csv", 3000)
    first = files_for(spec(min_bytes_per_job=10_000), source)
    parts = first.split(source, 0, concurrency=4)
    recorded = new_round(0, str(source), parts, 4, (), part_bytes=first.part_bytes_of(0))
    round_ = Round.from_json(recorded.to_json())
    first.cleanup()
    # The restarted task runs with other settings: the recorded size, not these, decides the cut.
    restarted = files_for(spec(min_bytes_per_job=50_000), source)
    again = restarted.get(round_, round_.parts[3])
    assert again.sha256 == parts[3].sha256
    restarted.cleanup()


def test_a_checkpoint_without_a_recorded_size_is_cut_at_max_bytes_per_job(tmp_path):
    source = write_rows(tmp_path / "a.csv", 3000)
    old = files_for(spec(max_bytes_per_job=40_000, min_bytes_per_job=40_000), source)
    parts = old.split(source, 0, concurrency=4)
    document = new_round(0, str(source), parts, 4, ()).to_json()
    assert "part_bytes" not in document  # as written before the size was recorded
    old.cleanup()
    restarted = files_for(spec(max_bytes_per_job=40_000), source)
    again = restarted.get(Round.from_json(document), Round.from_json(document).parts[-1])
    assert again.sha256 == parts[-1].sha256
    restarted.cleanup()


@pytest.mark.usefixtures("results_base")
def test_the_operator_loads_a_spread_file_in_job_concurrency_jobs(emulator, salesforce_conn, tmp_path):
    salesforce_conn(emulator)
    source = write_rows(tmp_path / "a.csv", 2000)
    op = SalesforceBulkIngestOperator(
        task_id="load", source=str(source.path), object_name="Account", operation="insert",
        deferrable=False, poll_interval=0.05, max_poll_interval=0.1, multipart_max_bytes=0,
        min_bytes_per_job=20_000, job_concurrency=3,
    )
    result = op.execute({"ti": FakeTI()})
    assert len(result["job_ids"]) == 3
    assert result["records_successful"] == 2000
    manifest = json.loads(ObjectStoragePath(result["manifest"]).read_text())
    assert manifest["rounds"][0]["part_bytes"] == op._spec().part_bytes(Path(source.path).stat().st_size, 3)
    assert sorted(r["Name"] for r in emulator.records("Account")) == [f"Account {i:05d}" for i in range(2000)]
