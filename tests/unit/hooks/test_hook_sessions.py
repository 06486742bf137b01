"""Sharing across the async hooks of a process: one TLS context per trust store, one session per
connection and event loop (``airflow_provider_sfbulk.hooks.sessions``), against the emulator over loopback.

Creations are counted by instrumenting ``ssl.create_default_context`` and ``aiohttp.ClientSession``
(the real ones still run); requests by the emulator's fault counters.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from airflow_provider_sfbulk.emulator.testing import EmulatorServer
from airflow_provider_sfbulk.hooks import sessions
from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkAsyncHook
from airflow_provider_sfbulk.protocol.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
HOOKS = 50


@dataclass
class Created:
    """What was built since the fixture started: TLS contexts (by ``cafile``) and client sessions."""

    contexts: list[str | None] = field(default_factory=list)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> Iterator[Created]:
    """Count real TLS context and session creations (the process-wide context cache starts empty)."""
    found = Created()
    real_context = ssl.create_default_context
    real_init = aiohttp.ClientSession.__init__

    def create_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        found.contexts.append(kwargs.get("cafile"))
        return real_context(*args, **kwargs)

    def init(self: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        found.sessions.append(self)
        real_init(self, *args, **kwargs)

    sessions.TLS_CONTEXTS.clear()
    monkeypatch.setattr(ssl, "create_default_context", create_default_context)
    monkeypatch.setattr(aiohttp.ClientSession, "__init__", init)
    yield found
    sessions.TLS_CONTEXTS.clear()


def token_requests(server: EmulatorServer) -> Callable[[], int]:
    server.set_faults([{"kind": "delay", "delay": 0.001, "path": "^/services/oauth2/token$"}])
    return lambda: server.app.faults.status()[0]["fired"]


async def _hold_together(
    hooks: list[SalesforceBulkAsyncHook], inside: Callable[[], Any] | None = None
) -> None:
    """Enter every hook and make one call with each, all at once; ``inside`` runs while all are open."""
    entered = asyncio.Barrier(len(hooks))

    async def one(hook: SalesforceBulkAsyncHook) -> None:
        async with hook:
            await hook.get_limits()
            await entered.wait()
            if inside is not None and hook is hooks[0]:
                inside()
            await entered.wait()

    await asyncio.gather(*(one(hook) for hook in hooks))


def test_many_hooks_in_one_loop_share_one_session_and_one_tls_context(
    emulator_tls: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator_tls)  # ca_bundle: the emulator's CA, through the shared context
    tokens = token_requests(emulator_tls)
    hooks = [SalesforceBulkAsyncHook(retry_policy=FAST) for _ in range(HOOKS)]
    seen: dict[str, Any] = {}

    def inside() -> None:
        seen["sessions"] = {id(hook._session) for hook in hooks}
        seen["open"] = sessions.SESSIONS.open_sessions(asyncio.get_running_loop())

    asyncio.run(_hold_together(hooks, inside))
    assert created.contexts == [str(emulator_tls.ca_path)]
    assert len(created.sessions) == 1
    assert seen == {"sessions": {id(created.sessions[0])}, "open": 1}
    assert tokens() == 1
    assert created.sessions[0].closed  # the last hook out closed it
    assert all(hook._session is None for hook in hooks)


def test_the_session_closes_when_the_last_hook_leaves(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        first, second = SalesforceBulkAsyncHook(retry_policy=FAST), SalesforceBulkAsyncHook(retry_policy=FAST)
        await first.__aenter__()
        await second.__aenter__()
        session = first._session
        assert session is not None
        assert second._session is session
        await first.aclose()
        assert not session.closed
        assert sessions.SESSIONS.open_sessions(loop) == 1
        await second.get_limits()  # still served by the shared session
        await second.aclose()
        await second.aclose()  # closing twice is harmless
        assert session.closed
        assert sessions.SESSIONS.open_sessions(loop) == 0
        async with SalesforceBulkAsyncHook(retry_policy=FAST) as third:  # a new session, the same context
            await third.get_limits()
            assert third._session is not session

    asyncio.run(scenario())
    assert len(created.sessions) == 2
    assert created.contexts == [None]  # the default trust store, built once


def test_two_connections_do_not_share_a_session(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator, conn_id="sf_a")
    salesforce_conn(emulator, conn_id="sf_b")
    hooks = [SalesforceBulkAsyncHook(conn_id, retry_policy=FAST) for conn_id in ("sf_a", "sf_b", "sf_a")]
    seen: list[Any] = []
    asyncio.run(_hold_together(hooks, lambda: seen.extend(hook._session for hook in hooks)))
    assert seen[0] is seen[2]
    assert seen[0] is not seen[1]
    assert len(created.sessions) == 2
    assert created.contexts == [None]  # one trust store: one context for both connections


def test_an_edited_connection_gets_a_new_session(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator)

    async def scenario() -> None:
        async with SalesforceBulkAsyncHook(retry_policy=FAST) as before:
            await before.get_limits()
            salesforce_conn(emulator, timeout=7)  # same conn id, other settings
            async with SalesforceBulkAsyncHook(retry_policy=FAST) as after:
                await after.get_limits()
                assert after._session is not before._session
                assert after._session is not None
                assert after._session.timeout.sock_read == 7

    asyncio.run(scenario())
    assert len(created.sessions) == 2


def test_two_event_loops_do_not_share_a_session(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator)
    both_open = threading.Barrier(2, timeout=20)
    seen: dict[str, tuple[Any, Any]] = {}

    def run(name: str) -> None:
        async def scenario() -> None:
            async with SalesforceBulkAsyncHook(retry_policy=FAST) as hook:
                await hook.get_limits()
                seen[name] = (hook._session, asyncio.get_running_loop())
                await asyncio.to_thread(both_open.wait)  # both loops hold their session at once

        asyncio.run(scenario())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert set(seen) == {"a", "b"}
    (session_a, loop_a), (session_b, loop_b) = seen["a"], seen["b"]
    assert session_a is not session_b
    assert loop_a is not loop_b
    assert session_a._loop is loop_a
    assert session_b._loop is loop_b
    assert created.contexts == [None]  # the TLS context is shared across loops and threads


def test_a_hook_moved_to_another_loop_takes_that_loops_session(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator)
    hook = SalesforceBulkAsyncHook(retry_policy=FAST)
    first_loop, second_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first_loop.run_until_complete(hook.get_limits())  # outside "async with": the hook keeps a lease
        first = hook._session
        second_loop.run_until_complete(hook.get_limits())
        second = hook._session
        assert first is not None
        assert second is not None
        assert first is not second
        assert second._loop is second_loop
        first_loop.run_until_complete(asyncio.sleep(0.05))  # the old session closes on its own loop
        assert first.closed
        second_loop.run_until_complete(hook.aclose())
        assert second.closed
    finally:
        first_loop.close()
        second_loop.close()


def test_no_unclosed_session_warning_even_when_a_loop_closes_under_an_open_hook(
    emulator: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    salesforce_conn(emulator)
    forgotten = asyncio.new_event_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hook = SalesforceBulkAsyncHook(retry_policy=FAST)
        forgotten.run_until_complete(hook.get_limits())  # never closed
        forgotten.close()
        assert sessions.SESSIONS.open_sessions(forgotten) == 1

        async def later() -> None:
            async with SalesforceBulkAsyncHook(retry_policy=FAST) as other:
                await other.get_limits()

        asyncio.run(later())  # a new acquire drops what the closed loop left behind
        assert sessions.SESSIONS.open_sessions(forgotten) == 0
        assert hook._session is not None
        assert hook._session.closed
        del hook
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed client session" in str(w.message)]
    assert unclosed == []
    assert len(created.sessions) == 2


def test_a_bad_ca_bundle_is_not_cached(
    tmp_path: Any, emulator_tls: EmulatorServer, salesforce_conn: Callable[..., str], created: Created
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate")
    salesforce_conn(emulator_tls, ca_bundle=str(bundle))

    async def call() -> None:
        async with SalesforceBulkAsyncHook(retry_policy=FAST) as hook:
            await hook.get_limits()

    for _ in range(2):  # a failed build is not cached: the second hook tries again
        with pytest.raises(ssl.SSLError):
            asyncio.run(call())
    assert emulator_tls.ca_path is not None
    bundle.write_bytes(emulator_tls.ca_path.read_bytes())  # fixed in place: read again, and it works
    asyncio.run(call())
    asyncio.run(call())  # then cached
    assert created.contexts == [str(bundle)] * 3
