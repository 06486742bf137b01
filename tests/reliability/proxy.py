"""A fault-injecting HTTP proxy for the reliability tests (test code, not part of the provider).

:class:`FaultProxy` is an aiohttp server on ``127.0.0.1`` (free port) running in a background thread with
its own event loop. Every request it receives is forwarded to one upstream base URL (the emulator), with
request and response bodies streamed in chunks both ways. It answers both forms of request target:

- origin form (``GET /services/data/...``): a client pointed at the proxy's ``base_url``;
- absolute form (``GET http://127.0.0.1:<emulator>/services/...``): a client using the proxy as its
  ``HTTP_PROXY``. The hooks honour ``HTTP_PROXY`` (docs/connections.md), and the emulator's OAuth answer
  names the emulator itself as ``instance_url``, so this is how *every* call of the provider (token, then
  the instance calls) goes through the proxy.

Faults are :class:`Fault` rules: method + path regex (searched in the path with its query string), a
seeded draw (``rate``), a bound on how often the rule may fire in all (``times``) and how many matching
requests to let through first (``skip``). Kinds:

- ``status``: answer ``status`` (503, 429, ...) with ``Retry-After`` when given, without forwarding;
- ``drop_before``: read the request, then close the client connection; nothing reaches the server;
- ``drop_after``: forward, let the server act and answer, then close the client connection unanswered;
- ``cut_body``: forward, send the status, the headers (full ``Content-Length``) and half the body, close;
- ``stall``: read the request, answer nothing for ``seconds`` (at most :data:`MAX_STALL`), then close
  without forwarding: a server that hangs (the client's read timeout must end the wait).

Every request is recorded (:attr:`FaultProxy.exchanges`) with the fault that fired, if any.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

KINDS = ("status", "drop_before", "drop_after", "cut_body", "stall")
#: Upper bound of a ``stall`` (every wait of the proxy stops by itself).
MAX_STALL = 30.0

#: Headers that belong to one hop and are never forwarded.
HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Host",
    )
)
CHUNK = 64 * 1024

# Paths of the Bulk API 2.0 endpoints the operators call (regexes searched in path + query).
JOB_ID = r"[A-Za-z0-9]{15,18}"
TOKEN = r"^/services/oauth2/token$"
INGEST_CREATE = r"/jobs/ingest$"
INGEST_UPLOAD = rf"/jobs/ingest/{JOB_ID}/batches$"
INGEST_JOB = rf"/jobs/ingest/{JOB_ID}$"  # PATCH: close/abort; GET: poll
INGEST_SUCCESSFUL = rf"/jobs/ingest/{JOB_ID}/successfulResults"
INGEST_FAILED = rf"/jobs/ingest/{JOB_ID}/failedResults"
INGEST_UNPROCESSED = rf"/jobs/ingest/{JOB_ID}/unprocessedrecords"
INGEST_LIST = r"/jobs/ingest\?"
LIMITS = r"/services/data/v[0-9.]+/limits"
QUERY_CREATE = r"/jobs/query$"
QUERY_JOB = rf"/jobs/query/{JOB_ID}$"
QUERY_RESULT_PAGES = rf"/jobs/query/{JOB_ID}/resultPages"
QUERY_RESULTS = rf"/jobs/query/{JOB_ID}/results"


@dataclass
class Fault:
    """One fault rule. ``method`` None matches any method; ``times`` None fires without bound."""

    kind: str
    path: str
    method: str | None = None
    status: int = 503
    retry_after: str | None = None
    rate: float = 1.0
    times: int | None = 1
    skip: int = 0
    seconds: float = 0.0
    name: str = ""
    # state
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if not 0.0 <= self.seconds <= MAX_STALL:
            raise ValueError(f"seconds must be between 0 and {MAX_STALL}")
        self._pattern = re.compile(self.path)
        if not self.name:
            status = "" if self.kind != "status" else self.status
            self.name = f"{self.kind}{status} {self.method or '*'} {self.path}"

    def matches(self, method: str, target: str) -> bool:
        method_matches = self.method is None or self.method.upper() == method.upper()
        return method_matches and bool(self._pattern.search(target))

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass(frozen=True)
class Exchange:
    """One request the proxy received."""

    seq: int
    method: str
    target: str  # path and query
    fault: str | None  # the name of the rule that fired
    kind: str | None  # its kind
    status: int | None  # what the client got (None: connection closed without an answer)
    upstream_status: int | None  # what the server answered (None: not forwarded / failed)
    started: float
    finished: float


class FaultProxy:
    """A fault-injecting forward/reverse proxy to ``upstream`` (see the module docstring)."""

    def __init__(self, upstream: str, faults: Sequence[Fault] = (), *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.seed = seed
        self._rng = random.Random(seed)
        self._faults: list[Fault] = list(faults)
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        #: Every bearer token clients sent (the secrets checks look for them in logs and errors).
        self.bearer_tokens: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._sock: socket.socket | None = None
        self.base_url = ""

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._astart(), self._loop).result(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _astart(self) -> None:
        # Never decompress: bytes go through as the server sent them (gzip result downloads included).
        self._client = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        assert self._sock is not None
        await web.SockSite(self._runner, self._sock, shutdown_timeout=0.5).start()

    async def _astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the port; safe to call twice or after a failed start."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout)
            except Exception:  # stopping anyway
                pass
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        if loop is not None and not loop.is_running():
            loop.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> FaultProxy:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control and facts (thread-safe) -----------------------------------------------------------------
    def set_faults(self, faults: Iterable[Fault], *, seed: int | None = None) -> None:
        """Replace the rules (and reseed the draw when ``seed`` is given)."""
        with self._lock:
            self._faults = list(faults)
            if seed is not None:
                self.seed = seed
                self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        self.set_faults([])

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def fired(self) -> list[Exchange]:
        """The exchanges in which a fault fired."""
        return [e for e in self.exchanges if e.fault is not None]

    def matching(self, method: str | None, path: str) -> list[Exchange]:
        pattern = re.compile(path)
        return [
            e for e in self.exchanges if (method is None or e.method == method) and pattern.search(e.target)
        ]

    def reset_log(self) -> None:
        with self._lock:
            self._exchanges.clear()

    # -- the proxy ---------------------------------------------------------------------------------------
    def _choose(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for rule in self._faults:
                if rule.exhausted() or not rule.matches(method, target):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                rule.fired += 1
                return rule
        return None

    def _record(self, request: web.Request, target: str, rule: Fault | None, status: int | None,
                upstream_status: int | None, started: float) -> None:
        with self._lock:
            self._exchanges.append(Exchange(
                len(self._exchanges) + 1, request.method, target, rule.name if rule else None,
                rule.kind if rule else None, status, upstream_status, started, time.monotonic(),
            ))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.rel_url.path_qs
        started = time.monotonic()
        rule = self._choose(request.method, target)
        kind = rule.kind if rule else None
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            with self._lock:
                self.bearer_tokens.add(authorization[len("Bearer "):])
        if rule is not None and kind == "status":
            await request.read()
            headers = {"Content-Type": "application/json"}
            if rule.retry_after is not None:
                headers["Retry-After"] = rule.retry_after
            body = _status_body(rule.status)
            self._record(request, target, rule, rule.status, None, started)
            return web.Response(status=rule.status, body=body, headers=headers)
        if kind == "stall":
            await request.read()
            assert rule is not None
            self._record(request, target, rule, None, None, started)  # now: the client gives up first
            await asyncio.sleep(rule.seconds)
            return self._drop(request)
        if kind == "drop_before":
            await request.read()
            self._record(request, target, rule, None, None, started)
            return self._drop(request)

        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = request.content.iter_chunked(CHUNK) if request.body_exists else None
        upstream_status: int | None = None
        recorded = False
        try:
            async with self._client.request(request.method, self.upstream + target, headers=headers,
                                            data=data, allow_redirects=False) as upstream:
                upstream_status = upstream.status
                out_headers = {k: v for k, v in upstream.headers.items()
                               if k.lower() not in HOP_HEADERS and k.lower() != "content-length"}
                if kind in ("drop_after", "cut_body"):
                    body = await upstream.read()  # the server has acted and answered in full
                    if kind == "drop_after":
                        self._record(request, target, rule, None, upstream_status, started)
                        return self._drop(request)
                    response = web.StreamResponse(status=upstream.status, headers=out_headers)
                    response.content_length = len(body)
                    await response.prepare(request)
                    await response.write(body[: len(body) // 2])
                    self._record(request, target, rule, upstream.status, upstream_status, started)
                    return self._drop(request)
                response = web.StreamResponse(status=upstream.status, headers=out_headers)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                # Recorded before the body goes out: a client that has read the whole answer always
                # finds its exchange in the record.
                self._record(request, target, rule, upstream_status, upstream_status, started)
                recorded = True
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as err:
            if not recorded:
                self._record(request, target, rule, None, upstream_status, started)
            if upstream_status is None:
                return web.Response(status=502, text=f"fault proxy: upstream failed: {err}")
            return self._drop(request)
        return response

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the client's connection now; aiohttp then writes nothing more to it."""
        transport = request.transport
        if transport is not None:
            transport.close()
        raise _Dropped


def _status_body(status: int) -> bytes:
    """A Salesforce-shaped error body for an injected status."""
    if status >= 500:
        return b'[{"errorCode":"SERVER_UNAVAILABLE","message":"injected by the fault proxy"}]'
    if status == 404:
        return b'[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]'
    return b'[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"ConcurrentRequests (injected)"}]'


class _Dropped(asyncio.CancelledError):
    """Ends a handler whose connection the proxy closed (aiohttp sends nothing for a cancelled handler)."""
