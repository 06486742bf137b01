"""Daily allocations count the last 24 hours (rolling), not the UTC day.

Aged usage is planted in the store.
"""

from __future__ import annotations

import time

from airflow_provider_sfbulk.emulator.testing import ApiSession

HOUR = 3600.0


def remaining(api: ApiSession, name: str) -> int:
    return api.get("/limits").json()[name]["Remaining"]


def test_usage_older_than_24_hours_no_longer_counts(emulator):
    store = emulator.app.store
    now = time.time()
    store.increment("DailyBulkV2QueryJobs", 7, now=now - 24 * HOUR - 120)  # just out of the window
    store.increment("DailyBulkV2QueryJobs", 3, now=now - 23 * HOUR)  # yesterday by the UTC day, maybe
    store.increment("DailyBulkApiBatches", 11, now=now - 2 * HOUR)
    store.increment("DailyBulkApiBatches", 100, now=now - 30 * HOUR)
    api = ApiSession(emulator)
    assert remaining(api, "DailyBulkV2QueryJobs") == 10_000 - 3
    assert remaining(api, "DailyBulkApiBatches") == 15_000 - 11
    api.run_query("SELECT Id FROM Account")
    assert remaining(api, "DailyBulkV2QueryJobs") == 10_000 - 4


def test_counter_window_edges(emulator):
    store = emulator.app.store
    now = 1_800_000_000.0  # a fixed clock: the store takes ``now`` everywhere
    store.increment("X", 1, now=now - 24 * HOUR + 61)
    store.increment("X", 2, now=now - 24 * HOUR - 61)
    store.increment("X", 4, now=now)
    assert store.counter("X", now=now) == 5
    assert store.counters(now=now)["X"] == 5
    assert store.counter("X", now=now + 24 * HOUR) == 4
    assert store.counter("X", now=now + 24 * HOUR + 61) == 0
    assert store.purge_usage(now=now) == 1
    assert store.counter("X", now=now - 24 * HOUR) == 5  # purged bucket really gone from the earlier view


def test_api_request_cap_follows_the_rolling_window(emulator_factory):
    server = emulator_factory(daily_api_requests=5)
    api = ApiSession(server)
    now = time.time()
    server.app.store.increment("DailyApiRequests", 50, now=now - 25 * HOUR)
    assert api.get("/limits").status_code == 200
    server.app.store.increment("DailyApiRequests", 4, now=now - 23 * HOUR)
    capped = api.get("/limits")
    assert capped.status_code == 403
    assert capped.json() == [
        {"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
    assert capped.headers["Sforce-Limit-Info"] == "api-usage=6/5"


def test_sweep_forgets_old_usage(emulator):
    store = emulator.app.store
    store.increment("DailyBulkApiBatches", 9, now=time.time() - 48 * HOUR)
    emulator.sweep()
    row = store.connection().execute(
        "SELECT COUNT(*) FROM usage_counters WHERE name = 'DailyBulkApiBatches'").fetchone()
    assert row[0] == 0
