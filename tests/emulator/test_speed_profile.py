"""The "Salesforce-like" speed profile: a fixed time per internal batch and capped download bandwidth."""

from __future__ import annotations

import time

import pytest

from airflow_provider_sfbulk.emulator.cli import build_parser, config_from_args
from airflow_provider_sfbulk.emulator.config import EmulatorConfig
from airflow_provider_sfbulk.emulator.testing import ApiSession


def test_each_internal_batch_takes_the_fixed_time(emulator_factory):
    server = emulator_factory(batch_size=2, batch_seconds=0.25)
    api = ApiSession(server)
    started = time.monotonic()
    info = api.run_ingest("Account", "insert", b"Name\na\nb\nc\nd\ne\n")
    elapsed = time.monotonic() - started
    assert info["numberRecordsProcessed"] == 5
    assert elapsed >= 0.75  # three batches
    assert info["totalProcessingTime"] >= 750


def test_download_bandwidth_caps_every_stream(emulator_factory):
    server = emulator_factory(download_bandwidth=40_000)
    server.seed("Account", 400)
    api = ApiSession(server)
    info = api.run_query("SELECT Id, Name, Description FROM Account")
    started = time.monotonic()
    page = api.get(f"/jobs/query/{info['id']}/results", headers={"Accept-Encoding": "identity"})
    elapsed = time.monotonic() - started
    size = len(page.content)
    assert page.headers["Sforce-NumberOfRecords"] == "400"
    assert size > 20_000
    assert elapsed >= size / 40_000 * 0.8
    started = time.monotonic()
    zipped = api.get(f"/jobs/query/{info['id']}/results", headers={"Accept-Encoding": "gzip"}, stream=True)
    wire = len(zipped.raw.read(decode_content=False))
    elapsed = time.monotonic() - started
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert elapsed >= wire / 40_000 * 0.8
    ingest = api.run_ingest("Account", "insert", b"Name\nx\n")
    started = time.monotonic()
    assert api.get(f"/jobs/ingest/{ingest['id']}/successfulResults").status_code == 200
    assert time.monotonic() - started < 2.0  # a tiny file is not held back


def test_cli_flags_reach_the_config(tmp_path):
    args = build_parser().parse_args([
        "--data-dir", str(tmp_path), "--batch-seconds", "1.5", "--download-bandwidth", "1000000",
        "--drop-result-rows", "2", "--drop-result-jobs", "1", "--result-pages-shape", "documented-singular",
        "--query-timeout-records", "500", "--query-timeout-style", "timeout"])
    config = config_from_args(args)
    assert (config.batch_seconds, config.download_bandwidth) == (1.5, 1_000_000)
    assert (config.drop_result_rows, config.drop_result_jobs) == (2, 1)
    assert (config.result_pages_shape, config.query_timeout_records, config.query_timeout_style) == (
        "documented-singular", 500, "timeout")
    defaults = config_from_args(build_parser().parse_args(["--data-dir", str(tmp_path)]))
    assert (defaults.batch_seconds, defaults.download_bandwidth, defaults.drop_result_rows,
            defaults.drop_result_jobs, defaults.result_pages_shape, defaults.query_timeout_records,
            defaults.query_timeout_style) == (0.0, None, 0, None, "documented", None, "retries")


@pytest.mark.parametrize("bad", [{"batch_seconds": -1}, {"download_bandwidth": 0}, {"drop_result_jobs": -1}])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        EmulatorConfig(**bad)
