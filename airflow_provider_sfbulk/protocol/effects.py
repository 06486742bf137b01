"""What a sans-IO flow yields, and the two loops that drive one over a real transport.

A *flow* is a generator. It yields effects and receives their results:

- :class:`Send` ``(request, open_sink)``: the transport sends ``request``; once the status line and
  headers are in, it calls ``open_sink(status, headers)`` and feeds every raw body chunk to that sink,
  then calls ``sink.finish()``. It sends back a :class:`~.messages.Response`, or a
  :class:`TransportFailure` when the network failed (it never raises for network errors).
- :class:`Sleep` ``(seconds)``: the transport sleeps (``time.sleep`` or ``asyncio.sleep``) and sends
  back ``None``.
- :class:`Blocking` ``(func)``: blocking file I/O; the result of ``func()`` is sent back (the async
  driver calls it in a worker thread).

The flow's return value (``StopIteration.value``) is the call's result; errors are raised from the
generator. :func:`run_sync` and :func:`run_async` are the blocking and the asyncio driver loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_sfbulk.protocol.messages import BodySink, Request

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Effect: send ``request``; open the body sink with ``open_sink(status, headers)``."""

    request: Request
    open_sink: Callable[[int, Mapping[str, str]], BodySink]


@dataclass(frozen=True)
class Sleep:
    """Effect: wait ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Blocking:
    """Effect: call ``func`` (blocking file I/O) and send back its result; async drivers use a thread."""

    func: Callable[[], Any]


@dataclass(frozen=True)
class TransportFailure:
    """What a transport sends back instead of a response when the network failed.

    ``request_sent`` is False only when the connection could not be opened, so no byte of the request
    can have reached the server (connection refused, DNS failure, connect timeout). ``retryable`` is False
    for failures that waiting will not cure, such as a certificate that does not verify.
    """

    description: str
    request_sent: bool
    retryable: bool = True


Effect = Send | Sleep | Blocking
Flow = Generator[Effect, Any, T]


def done(value: T) -> Flow[T]:
    """A flow that returns ``value`` at once, without any effect."""
    yield from ()
    return value


def run_sync(flow: Flow[T], send: Callable[[Send], Any], sleep: Callable[[float], None]) -> T:
    """Drive ``flow`` with a blocking ``send`` and ``sleep`` (the sync hook's loop)."""
    try:
        effect = next(flow)
        while True:
            if isinstance(effect, Sleep):
                sleep(effect.seconds)
                effect = flow.send(None)
            elif isinstance(effect, Blocking):
                effect = flow.send(effect.func())
            else:
                effect = flow.send(send(effect))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], send: Callable[[Send], Any], sleep: Callable[[float], Any]) -> T:
    """Drive ``flow`` with an async ``send`` and ``sleep``; blocking effects run in a worker thread."""
    try:
        effect = next(flow)
        while True:
            if isinstance(effect, Sleep):
                await sleep(effect.seconds)
                effect = flow.send(None)
            elif isinstance(effect, Blocking):
                effect = flow.send(await asyncio.to_thread(effect.func))
            else:
                effect = flow.send(await send(effect))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
