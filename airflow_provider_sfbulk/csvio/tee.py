r"""One streaming counter for CSV that passes through: :class:`CsvTee`.

A download writes the CSV it receives into a :class:`CsvTee`, which stores it (into any binary writable:
a local file, an object-store file, optionally gzip-compressed on the way) and learns, without holding
more than the chunk in hand:

- the number of records, honouring quotes: a line feed inside a quoted value does not end a record
  (``LF`` and ``CRLF`` both end in ``\n``). The first record is the header and is not counted; a last
  record without a line ending is counted;
- the header line exactly as received (line ending included), for column names and header checks;
- the SHA-256 and size of exactly what was stored (after compression), and the size of the CSV received;
- whether the stream ends inside a quoted value (unbalanced quotes).

Ingest result downloads (:mod:`~airflow_provider_sfbulk.ingest.results`) and query page downloads
(:mod:`~airflow_provider_sfbulk.query.pages`) both go through it.

How records are counted
    The quote state is tracked by the parity of ``"`` characters, which is exact for RFC 4180 CSV such
    as Salesforce writes (inner quotes doubled). Per chunk, ``bytes.translate`` keeps only the quotes and
    line feeds. When every run of quotes between line feeds is even (the ``count`` of ``""`` pairs says
    so), no line feed is inside quotes and they are counted as they are. Otherwise removing every
    adjacent ``""`` pair (which cannot change the parity before any later byte) leaves only the quotes
    that open or close a value holding a line feed. What remains is tiny, so the work per chunk runs in
    C at memory speed, with no Python loop per record or per quote.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from typing import Any

from airflow_provider_sfbulk.csvio.errors import CsvShapeError
from airflow_provider_sfbulk.exceptions import Cancelled

__all__ = ["MAX_HEADER_BYTES", "CsvTee"]

#: Longest header line accepted (Salesforce: at most 32,000 characters, i.e. up to ~128 kB of UTF-8).
MAX_HEADER_BYTES = 1 << 20

#: ``bytes.translate`` deletion table: every byte but the double quote and the line feed.
_ALL_BUT_QUOTE_AND_LF = bytes(code for code in range(256) if code not in (0x22, 0x0A))


class _Stored:
    """The storage side of the tee: writes on, hashing and counting exactly the bytes stored."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self.out, "flush", None)
        if flush is not None:
            flush()


class CsvTee:
    """A binary writable that stores CSV into ``out`` while counting records, hashing and keeping the header.

    :param out: where the bytes go (anything with ``write``); the tee never closes it.
    :param gzip_level: compress what is stored with gzip at this level (1..9); ``None`` stores as received.
        Counting always sees the CSV as received.
    :param stop: when this event is set, the next :meth:`write` raises
        :class:`~airflow_provider_sfbulk.exceptions.Cancelled` (another download failed).
    :param restartable: offer the hook's restart protocol: when ``out`` is seekable (and nothing is
        compressed), the tee is seekable too, and seeking back to where it started (what the hook does
        before it restarts an interrupted download) resets every counter; other seeks are refused.
        ``False`` makes the tee unseekable, so an interrupted download surfaces as an error instead.

    Call :meth:`close` at the end (it writes the gzip trailer), then read :attr:`records`,
    :attr:`header`, :attr:`sha256`, :attr:`stored_bytes`, :attr:`csv_bytes`; :meth:`check_balanced`
    raises :class:`~airflow_provider_sfbulk.csvio.errors.CsvShapeError` when the CSV ends inside quotes.
    """

    def __init__(
        self,
        out: Any,
        *,
        gzip_level: int | None = None,
        stop: threading.Event | None = None,
        restartable: bool = True,
    ) -> None:
        self._out = out
        self._gzip_level = gzip_level
        self._stop = stop
        self._start = self._tell_or_none() if restartable and gzip_level is None else None
        self._reset()

    def _tell_or_none(self) -> int | None:
        try:
            if self._out.seekable():
                return int(self._out.tell())
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def _reset(self) -> None:
        self._stored = _Stored(self._out)
        self._gzip: gzip.GzipFile | None = None
        if self._gzip_level is not None:
            self._gzip = gzip.GzipFile(
                fileobj=self._stored,  # type: ignore[arg-type]
                mode="wb",
                compresslevel=self._gzip_level,
                mtime=0,
            )
        self._inside = False
        self._breaks = 0
        self._open_tail = False
        self._received = 0
        self._head = bytearray()
        self._header_length: int | None = None

    # --- writing ------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Count ``data`` (a chunk of any size), then store it."""
        if self._stop is not None and self._stop.is_set():
            raise Cancelled
        if not isinstance(data, bytes):
            data = bytes(data)
        if not data:
            return 0
        if self._header_length is None:
            self._find_header(data)
        if b'"' not in data:  # no quote at all: every line feed ends a record, or none does
            if not self._inside:
                self._breaks += data.count(b"\n")
        elif 2 * (kept := data.translate(None, _ALL_BUT_QUOTE_AND_LF)).count(b'""') == len(kept) - (
            newlines := kept.count(b"\n")
        ):
            # Every run of quotes between two line feeds is even (``count`` takes them in pairs), so an
            # even number of quotes precedes each line feed: every one of them ends a record, or none
            # does, and the quote state is unchanged. Salesforce quotes every value: the usual case.
            if not self._inside:
                self._breaks += newlines
        elif b'"' not in (reduced := kept.replace(b'""', b"")):
            if not self._inside:
                self._breaks += len(reduced)
        else:
            pieces = reduced.split(b'"')
            self._breaks += len(b"".join(pieces[1 if self._inside else 0 :: 2]))
            if len(pieces) % 2 == 0:  # an odd number of quotes
                self._inside = not self._inside
        self._open_tail = self._inside or not data.endswith(b"\n")
        self._received += len(data)
        if self._gzip is not None:
            self._gzip.write(data)
        else:
            self._stored.write(data)
        return len(data)

    def _find_header(self, data: bytes) -> None:
        """Find the end of the header line (the first line feed outside quotes) in this chunk, if any."""
        # A line feed is outside quotes when an even number of quotes (odd when the data starts inside
        # a quoted value) precedes it; one count per line, never a split of the whole chunk.
        quotes, start, end = (1 if self._inside else 0), 0, None
        while (newline := data.find(b"\n", start)) >= 0:
            quotes += data.count(b'"', start, newline)
            start = newline + 1
            if quotes % 2 == 0:
                end = start
                break
        if end is None:
            self._head += data
            if len(self._head) > MAX_HEADER_BYTES:
                raise CsvShapeError(f"no end of the header line in the first {MAX_HEADER_BYTES} bytes")
            return
        self._head += data[:end]
        self._header_length = self._received + end

    def flush(self) -> None:
        """Flush what is buffered for storage (a gzip stream stays open)."""
        if self._gzip is not None:
            self._gzip.flush()
        self._stored.flush()

    def close(self) -> None:
        """Finish the stored stream (the gzip trailer); ``out`` itself stays open."""
        if self._gzip is not None:
            self._gzip.close()

    # --- the hook's restart protocol -------------------------------------------------------------

    def seekable(self) -> bool:
        """True when a download into this tee can restart from its start (see ``restartable``)."""
        return self._start is not None

    def tell(self) -> int:
        """Position in ``out``."""
        if self._start is None:
            raise OSError("not seekable")
        return self._start + self._stored.size

    def seek(self, position: int, whence: int = 0) -> int:
        """Go back to where the tee started, forgetting everything counted; no other seek is allowed."""
        if self._start is None or whence != 0 or position != self._start:
            raise OSError("CsvTee only seeks back to where it started")
        self._out.seek(position)
        self._reset()
        return position

    def truncate(self, size: int | None = None) -> int:
        """Truncate ``out`` (after :meth:`seek`, at the start)."""
        return int(self._out.truncate(size))

    # --- what was learned -------------------------------------------------------------------------

    @property
    def records(self) -> int:
        """Data records so far (header excluded)."""
        if self._breaks == 0:
            return 0
        return self._breaks - 1 + (1 if self._open_tail else 0)

    @property
    def header(self) -> bytes:
        """The header line as received, line ending included (what was seen so far if incomplete)."""
        return bytes(self._head)

    @property
    def header_length(self) -> int | None:
        """Size in bytes of the header line, line ending included (``None`` until it is complete)."""
        return self._header_length

    @property
    def csv_bytes(self) -> int:
        """Bytes of CSV received (before compression)."""
        return self._received

    @property
    def stored_bytes(self) -> int:
        """Bytes written to ``out`` (after compression; complete once :meth:`close` was called)."""
        return self._stored.size

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written to ``out`` (complete once :meth:`close` was called)."""
        return self._stored.sha256.hexdigest()

    def check_balanced(self) -> int:
        """Raise :class:`CsvShapeError` when the CSV ends inside a quoted value; return :attr:`records`."""
        if self._inside:
            raise CsvShapeError("the CSV ends inside a quoted value (unbalanced quotes)")
        return self.records
