"""What every :class:`~airflow_provider_sfbulk.hooks.bulk.SalesforceBulkAsyncHook` of a process shares.

A triggerer runs hundreds of triggers in one event loop, each with its own async hook. Giving each hook
its own TLS context and ``aiohttp.ClientSession`` costs about 40 ms of CPU and 0.3 to 0.8 MB per hook
(``ssl.create_default_context`` loads the whole trust store), plus one connection pool each. So:

- **TLS contexts** (:class:`TlsContexts`): one per trust store and process, built once in a worker
  thread (concurrent first callers, in any thread or loop, wait for that one build). The key is the
  ``ca_bundle`` file (path, modification time and size, so a replaced bundle is read again) or the
  default store (system store plus certifi's). An ``SSLContext`` may be shared by threads and loops.
- **HTTP sessions** (:class:`SessionPool`): one ``ClientSession`` per connection and event loop, shared
  by every async hook of that loop. The key is the connection id and the digest of every field of the
  connection (:attr:`~airflow_provider_sfbulk.protocol.connection.ConnectionConfig.fingerprint`), so an
  edited connection gets a new session, as it gets a new token. The digest is never logged. A session
  belongs to its loop and is never used from another one. Each hook holds a :class:`SessionLease`; the
  session closes when the last lease of it is released (``aclose``, or the end of ``async with``).
  Sessions left behind by a closed loop (hooks never closed) are dropped the next time any loop asks
  for a session.

Connection limit: each shared session keeps aiohttp's pool of at most :data:`CONNECTION_LIMIT` (100)
connections. A poll takes tens of milliseconds, so 1,000 triggers polling every 5 s or more keep only
a few connections busy at once; 100 kept-alive connections absorb bursts (every trigger's first poll at
the same moment) while bounding file descriptors and TLS memory. Requests beyond it wait for a free
connection, with no timeout on that wait (only connect and read are timed). The token, shared too, lives
in the protocol's token cache.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.protocol.connection import ConnectionConfig

if TYPE_CHECKING:
    import aiohttp

__all__ = ["CONNECTION_LIMIT", "SESSIONS", "TLS_CONTEXTS", "SessionLease", "SessionPool", "TlsContexts"]

_log = logging.getLogger(__name__)

#: Connections per shared session (aiohttp's default, kept on purpose: see the module documentation).
CONNECTION_LIMIT = 100

_TrustKey = tuple[str | None, int, int]


def build_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying context: the connection's CA bundle only, else the system store plus certifi's."""
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    context = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
    try:
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    except (ImportError, OSError):  # pragma: no cover
        pass
    return context


class TlsContexts:
    """One ``SSLContext`` per trust store for the whole process (see the module documentation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: dict[_TrustKey, concurrent.futures.Future[ssl.SSLContext]] = {}

    @staticmethod
    def _key(ca_bundle: str | None) -> _TrustKey:
        if not ca_bundle:
            return (None, 0, 0)
        path = os.path.abspath(ca_bundle)
        try:
            stat = os.stat(path)
        except OSError:  # the build reports it
            return (path, 0, 0)
        return (path, stat.st_mtime_ns, stat.st_size)

    async def get(self, ca_bundle: str | None) -> ssl.SSLContext:
        """The context for ``ca_bundle`` (``None``: the default store); built once, off the event loop."""
        key = self._key(ca_bundle)
        with self._lock:
            future = self._contexts.get(key)
            start = future is None
            if future is None:
                future = concurrent.futures.Future()
                future.set_running_or_notify_cancel()  # a cancelled waiter cannot cancel the build
                for old in [k for k in self._contexts if k[0] == key[0]]:
                    del self._contexts[old]  # an older version of the same file
                self._contexts[key] = future
        if future.done():
            return future.result()
        if start:
            asyncio.get_running_loop().run_in_executor(None, self._build, key, ca_bundle, future)
        return await asyncio.wrap_future(future)

    def _build(
        self, key: _TrustKey, ca_bundle: str | None, future: concurrent.futures.Future[ssl.SSLContext]
    ) -> None:
        try:
            context = build_ssl_context(ca_bundle)
        except BaseException as exc:  # e.g. an unreadable bundle: the next caller tries again
            with self._lock:
                if self._contexts.get(key) is future:
                    del self._contexts[key]
            future.set_exception(exc)
        else:
            future.set_result(context)

    def clear(self) -> None:
        """Forget every context (tests; a process whose trust store changed in place)."""
        with self._lock:
            self._contexts.clear()


_SessionKey = tuple[str, str]  # (conn_id, fingerprint): never logged


@dataclass
class _Shared:
    session: aiohttp.ClientSession
    users: int = 0


@dataclass(eq=False)
class SessionLease:
    """One hook's share of a pooled session (release it once, through :meth:`SessionPool.release`)."""

    session: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop
    key: _SessionKey = field(repr=False)
    conn_id: str
    released: bool = False


class SessionPool:
    """One ``aiohttp.ClientSession`` per connection and event loop (see the module documentation)."""

    def __init__(self, contexts: TlsContexts) -> None:
        self._contexts = contexts
        self._lock = threading.Lock()  # guards _loops (loops live in different threads)
        self._loops: dict[asyncio.AbstractEventLoop, dict[_SessionKey, _Shared]] = {}

    async def acquire(self, config: ConnectionConfig) -> SessionLease:
        """A lease on the running loop's session for ``config``, opening the session if needed."""
        loop = asyncio.get_running_loop()
        key = (config.conn_id, config.fingerprint)
        self._forget_closed_loops()
        shared = self._find(loop, key)
        if shared is None:
            context = await self._contexts.get(config.ca_bundle) if config.verify_tls else None
            shared = self._find(loop, key)  # another hook of this loop may have opened it meanwhile
            if shared is None:
                shared = _Shared(_open_session(config, context))
                with self._lock:
                    self._loops.setdefault(loop, {})[key] = shared
                _log.debug(
                    "Opened the shared HTTP session of connection %r (%d open in this loop)",
                    config.conn_id,
                    self.open_sessions(loop),
                )
        shared.users += 1  # only this loop's thread touches its entries
        return SessionLease(shared.session, loop, key, config.conn_id)

    def _find(self, loop: asyncio.AbstractEventLoop, key: _SessionKey) -> _Shared | None:
        with self._lock:
            return self._loops.get(loop, {}).get(key)

    async def release(self, lease: SessionLease) -> None:
        """Give the lease back; the last one out closes the session (on its own loop)."""
        if lease.released:
            return
        lease.released = True
        with self._lock:
            sessions = self._loops.get(lease.loop, {})
            shared = sessions.get(lease.key)
            if shared is None or shared.session is not lease.session:
                return  # already dropped with its closed loop
            shared.users -= 1
            if shared.users > 0:
                return
            del sessions[lease.key]
            if not sessions:
                self._loops.pop(lease.loop, None)
        _log.debug("Closing the shared HTTP session of connection %r", lease.conn_id)
        await _close(lease.session, lease.loop)

    def _forget_closed_loops(self) -> None:
        with self._lock:
            closed = [loop for loop in self._loops if loop.is_closed()]
            orphans = [shared.session for loop in closed for shared in self._loops.pop(loop).values()]
        for session in orphans:
            _discard(session)

    def open_sessions(self, loop: asyncio.AbstractEventLoop | None = None) -> int:
        """How many shared sessions are open (in ``loop``, or in every loop)."""
        with self._lock:
            pools = [self._loops.get(loop, {})] if loop is not None else list(self._loops.values())
            return sum(len(pool) for pool in pools)


def _open_session(config: ConnectionConfig, context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """A session for ``config``; ``context`` None means no certificate check (``verify_tls=false``)."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context if context is not None else False, limit=CONNECTION_LIMIT),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.timeout, sock_read=config.timeout),
        auto_decompress=False,  # the protocol layer decodes gzip itself
        trust_env=True,  # HTTP(S)_PROXY / NO_PROXY, as requests does
    )


async def _close(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop) -> None:
    """Close ``session`` on its own loop, whichever loop the caller runs on."""
    if asyncio.get_running_loop() is loop:
        await session.close()
    elif loop.is_closed():
        _discard(session)
    else:  # the hook moved to another loop: close it there (now, or when that loop runs again)
        closing = asyncio.run_coroutine_threadsafe(session.close(), loop)
        if loop.is_running():
            await asyncio.wrap_future(closing)


def _discard(session: aiohttp.ClientSession) -> None:
    """Let go of a session whose loop is closed: nothing can run on it any more.

    Its connections died with the loop; ``detach`` marks the session closed so that it does not warn.
    """
    session.detach()


TLS_CONTEXTS = TlsContexts()
SESSIONS = SessionPool(TLS_CONTEXTS)
