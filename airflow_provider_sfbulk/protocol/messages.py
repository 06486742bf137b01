"""HTTP messages as plain values, request body sources and response body sinks.

The protocol layer describes requests with :class:`Request` and tells the transport what to do with a
response body through a :class:`BodySink` it picks after seeing the status and headers. Transports hand
over raw bytes exactly as received (they never decompress): the sink decodes ``Content-Encoding: gzip``
itself, so the decoding lives here once.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, runtime_checkable

#: Bytes read from a file object per upload chunk, and the preferred download chunk size.
CHUNK_SIZE = 256 * 1024
#: Largest non-streamed response body accepted (JSON documents, error bodies).
MAX_BUFFERED_BODY = 64 * 1024 * 1024


@runtime_checkable
class Writable(Protocol):
    """Anything with a binary ``write`` method: an open file, ``BytesIO``, an object-storage stream."""

    def write(self, data: bytes, /) -> Any:
        """Write ``data``; the return value is ignored."""


UploadData = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]


class UploadSource:
    """A request body read in chunks from a file object, an iterator or an async iterator of bytes.

    The data is never read whole into memory. A seekable file object can be rewound to send it a second
    time (after a token refresh); iterators cannot, see :attr:`rewindable`.
    """

    def __init__(self, data: UploadData) -> None:
        if isinstance(data, str):
            raise TypeError("upload data must be bytes, a binary file object or an iterator of bytes")
        self._data = data
        self._start: int | None = None
        self._consumed = False
        if _is_file(data):
            try:
                if data.seekable():  # type: ignore[union-attr]
                    self._start = data.tell()  # type: ignore[union-attr]
            except (OSError, ValueError):
                self._start = None

    @property
    def rewindable(self) -> bool:
        """True when the body can be produced again from the start."""
        return isinstance(self._data, (bytes, bytearray, memoryview)) or self._start is not None

    def rewind(self) -> bool:
        """Prepare to send the body again from the start; False when that is impossible."""
        if not self._consumed:
            return True
        if isinstance(self._data, (bytes, bytearray, memoryview)):
            self._consumed = False
            return True
        if self._start is not None:
            self._data.seek(self._start)  # type: ignore[union-attr]
            self._consumed = False
            return True
        return False

    def sync_chunks(self) -> Iterator[bytes]:
        """The body as an iterator of ``bytes`` for a blocking transport."""
        data = self._data
        if isinstance(data, AsyncIterable) and not _is_file(data):
            raise TypeError("an async iterator can only be uploaded with SalesforceBulkAsyncHook")
        return self._mark(self._sync_source())

    def _sync_source(self) -> Iterator[bytes]:
        data = self._data
        if isinstance(data, (bytes, bytearray, memoryview)):
            return iter((bytes(data),))
        if _is_file(data):
            return _file_chunks(data)  # type: ignore[arg-type]
        return _checked_chunks(iter(data))  # type: ignore[arg-type]

    def _mark(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._consumed = True
            yield chunk

    async def async_chunks(self) -> AsyncIterator[bytes]:
        """The body as an async iterator of ``bytes``; blocking reads run in a worker thread."""
        data = self._data
        if isinstance(data, AsyncIterable) and not _is_file(data):
            async for chunk in async_checked_chunks(data.__aiter__()):
                self._consumed = True
                yield chunk
            return
        source = self._sync_source()
        in_memory = isinstance(data, (bytes, bytearray, memoryview))
        while True:
            piece = _next_or_none(source) if in_memory else await asyncio.to_thread(_next_or_none, source)
            if piece is None:
                return
            self._consumed = True
            yield piece


def _next_or_none(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


def _is_file(data: object) -> bool:
    return hasattr(data, "read") and not isinstance(data, (bytes, bytearray, memoryview))


def _file_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = handle.read(CHUNK_SIZE)
        if not chunk:
            return
        if isinstance(chunk, str):
            raise TypeError("upload file objects must be opened in binary mode ('rb')")
        yield chunk


def _checked_chunks(chunks: Iterator[Any]) -> Iterator[bytes]:
    for chunk in chunks:
        if isinstance(chunk, str):
            raise TypeError("upload iterators must yield bytes, not str")
        if chunk:
            yield bytes(chunk)


async def async_checked_chunks(chunks: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Validate the chunks of an async iterator (``bytes`` only, empty chunks dropped)."""
    async for chunk in chunks:
        if isinstance(chunk, str):
            raise TypeError("upload iterators must yield bytes, not str")
        if chunk:
            yield bytes(chunk)


@dataclass(frozen=True)
class Request:
    """One HTTP request. ``body`` is ``None``, ``bytes``, or an :class:`UploadSource` to stream."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | UploadSource | None = None

    @property
    def path(self) -> str:
        """The URL path without scheme, host and query string: safe to log."""
        without_scheme = self.url.split("://", 1)[-1]
        slash = without_scheme.find("/")
        path = without_scheme[slash:] if slash >= 0 else "/"
        return path.split("?", 1)[0]


class BodySink:
    """Receives a response body in raw chunks as they arrive (see module docstring)."""

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder: Any = zlib.decompressobj(wbits=47)  # gzip or zlib header, auto-detected
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding in ("identity", ""):
            self._decoder = None
        else:
            raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")
        self.raw_bytes = 0
        self.decoded_bytes = 0

    def feed(self, chunk: bytes) -> None:
        """Take one raw chunk from the transport."""
        if not chunk:
            return
        self.raw_bytes += len(chunk)
        if self._decoder is None:
            self._take(chunk)
            return
        # At most CHUNK_SIZE decoded bytes at a time: result CSVs compress about 9 to 1, so one raw chunk
        # would otherwise become a 2-3 MB piece, held (and copied by the tee) by every parallel download.
        self._take(self._decoder.decompress(chunk, CHUNK_SIZE))
        while self._decoder.unconsumed_tail:
            self._take(self._decoder.decompress(self._decoder.unconsumed_tail, CHUNK_SIZE))

    def _take(self, data: bytes) -> None:
        if data:
            self.decoded_bytes += len(data)
            self._emit(data)

    def finish(self) -> None:
        """Called once after the last chunk."""
        if self._decoder is not None:
            self._take(self._decoder.flush())
            if not self._decoder.eof and self.raw_bytes:
                raise zlib.error("compressed response body ended early")

    def _emit(self, data: bytes) -> None:
        raise NotImplementedError


class BufferSink(BodySink):
    """Keeps the body in memory (JSON documents and error bodies, capped by :data:`MAX_BUFFERED_BODY`)."""

    def __init__(self, content_encoding: str | None, limit: int = MAX_BUFFERED_BODY) -> None:
        super().__init__(content_encoding)
        self._buffer = io.BytesIO()
        self._limit = limit

    def _emit(self, data: bytes) -> None:
        if self.decoded_bytes > self._limit:
            raise ValueError(f"response body larger than {self._limit} bytes")
        self._buffer.write(data)

    @property
    def body(self) -> bytes:
        """Everything received so far, decoded."""
        return self._buffer.getvalue()


class StreamSink(BodySink):
    """Writes the decoded body into the caller's writable as it arrives."""

    def __init__(self, content_encoding: str | None, writable: Writable) -> None:
        super().__init__(content_encoding)
        self._writable = writable

    def _emit(self, data: bytes) -> None:
        self._writable.write(data)


class WritableCheckpoint:
    """Remembers where a download started in a writable so a retry can start over cleanly.

    A retried download must not leave the bytes of the failed attempt in front of the new ones. When the
    writable is seekable and truncatable the retry seeks back and truncates; otherwise a retry is only
    possible while nothing has been written yet.
    """

    def __init__(self, writable: Writable) -> None:
        self.writable = writable
        self._start: int | None = None
        try:
            if writable.seekable() and hasattr(writable, "truncate"):  # type: ignore[attr-defined]
                self._start = writable.tell()  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            self._start = None

    def restart(self, written: int) -> bool:
        """Undo ``written`` bytes; True when the writable is back where the download started."""
        if written == 0:
            return True
        if self._start is None:
            return False
        try:
            self.writable.seek(self._start)  # type: ignore[attr-defined]
            self.writable.truncate()  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Response:
    """A response whose body went into ``sink``; ``body`` is the buffered body (empty when streamed)."""

    status: int
    headers: Mapping[str, str]
    sink: BodySink

    @property
    def body(self) -> bytes:
        """The body, when it was buffered."""
        return self.sink.body if isinstance(self.sink, BufferSink) else b""

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None
