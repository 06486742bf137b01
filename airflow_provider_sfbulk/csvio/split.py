"""Cut a CSV stream into Bulk API 2.0 upload parts, only at record boundaries.

Salesforce takes one upload of at most about 100 MB of raw CSV per ingest job, so a bigger file has to
become several jobs. A record can span lines (quoted CR/LF), so the file is cut only where the scanner
(:mod:`~airflow_provider_sfbulk.csvio.scanner`) finds the end of a record, never at an arbitrary
newline; every record is validated on the way. Record bytes are copied verbatim: nothing is re-quoted
or re-encoded; the one change is that a leading UTF-8 byte order mark is dropped.

Entry points
------------
:func:`split_csv`
    The one an ingest operator wants: it reads and validates the whole source, spooling the parts to
    temporary files as it goes, and returns only when everything is valid. A bad file therefore fails
    before any job is created, while memory stays flat (the parts sit on disk, not in memory). The
    caller uploads each :class:`CsvPart` (concurrently if it likes) and deletes it, or calls
    :meth:`CsvSplit.cleanup`.
:func:`iter_csv_parts`
    The same split as a lazy generator: a part is yielded as soon as it is complete, so a problem
    further down the file surfaces only after earlier parts were yielded.

Example::

    required, allowed = required_columns_for("upsert", "External_Id__c")
    with open("accounts.csv", "rb") as source, split_csv(
        source, max_bytes=100_000_000, column_delimiter="COMMA", line_ending="LF",
        required_columns=required, allowed_columns=allowed, spool_dir="/tmp/spool",
    ) as split:
        for part in split.parts:           # every part already validated
            upload(part.path)              # then part.path.unlink(), or leave it to cleanup()
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from airflow_provider_sfbulk.csvio.scanner import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    RECORD_END,
    CsvSource,
    CsvSummary,
    OpenedSource,
    Scanner,
    header_only_error,
    start_scan,
    summarize,
)

__all__ = ["CsvPart", "CsvSplit", "iter_csv_parts", "split_csv"]

#: Bytes gathered before one write to a spool file.
_WRITE_BUFFER = 1 << 20


@dataclass(frozen=True)
class CsvPart:
    """One spooled part of a split: a complete CSV file (header first) ready to upload as one job.

    :param index: position of the part, from 0.
    :param path: the spool file; the caller owns it and deletes it once uploaded.
    :param byte_count: size of the file in bytes, header included.
    :param record_count: data records in the part (header excluded).
    :param first_record_number: number of the part's first record in the source (records count from 1).
    :param sha256: hex SHA-256 of the file's bytes, for the audit manifest.
    """

    index: int
    path: Path
    byte_count: int
    record_count: int
    first_record_number: int
    sha256: str

    @property
    def last_record_number(self) -> int:
        """Number of the part's last record in the source."""
        return self.first_record_number + self.record_count - 1

    def read_bytes(self) -> bytes:
        """The whole part (for small parts, e.g. a multipart create-and-upload request)."""
        return self.path.read_bytes()


class CsvSplit:
    """A validated source cut into spooled parts; returned by :func:`split_csv`.

    Use it as a context manager, or call :meth:`cleanup`, to delete the spool files the caller has not
    deleted itself.
    """

    def __init__(self, parts: list[CsvPart], summary: CsvSummary) -> None:
        self.parts: list[CsvPart] = parts
        self.summary: CsvSummary = summary

    @property
    def record_count(self) -> int:
        """Data records over all parts."""
        return self.summary.record_count

    @property
    def columns(self) -> tuple[str, ...]:
        """Header names of the source."""
        return self.summary.columns

    def __iter__(self) -> Iterator[CsvPart]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def cleanup(self) -> None:
        """Delete every spool file that still exists."""
        for part in self.parts:
            part.path.unlink(missing_ok=True)

    def __enter__(self) -> CsvSplit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()




class _Spool:
    """One part being written to its spool file."""

    def __init__(self, index: int, directory: str | None, header: bytes, first_record: int) -> None:
        fd, name = tempfile.mkstemp(prefix=f"sfbulk-part-{index:05d}-", suffix=".csv", dir=directory)
        self.path = Path(name)
        self.index = index
        self.first_record = first_record
        self.records = 0
        self.bytes = 0
        self._sha = hashlib.sha256()
        # A run of records is often a few kB: gather them into large writes (fewer system calls).
        self._file = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
        self.write(header)

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def write_span(self, buf: bytearray, start: int, end: int) -> None:
        with memoryview(buf) as view, view[start:end] as piece:
            self.write(piece)

    def finish(self) -> CsvPart:
        self._file.close()
        return CsvPart(
            index=self.index,
            path=self.path,
            byte_count=self.bytes,
            record_count=self.records,
            first_record_number=self.first_record,
            sha256=self._sha.hexdigest(),
        )

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _cut(
    buf: bytearray, start: int, end: int, count: int, simple: bool, room: int, slots: int
) -> tuple[int, int]:
    """Where to cut a run of records so that at most ``room`` bytes and ``slots`` records are taken.

    Returns ``(cut, records taken)``; ``cut == start`` when not even the first record fits.
    """
    if count == 1:
        return (end, 1) if end - start <= room and slots >= 1 else (start, 0)
    if simple:
        cut = max(buf.rfind(b"\n", start, min(end, start + room)) + 1, start)
        taken = buf.count(b"\n", start, cut)
        if taken <= slots:
            return cut, taken
        cut = start
        for _ in range(slots):
            cut = buf.index(b"\n", cut) + 1
        return cut, slots
    cut, taken, limit = start, 0, start + room
    match = RECORD_END.match
    while taken < slots:
        found = match(buf, cut, end)
        if found is None or found.end() > limit:
            break
        cut = found.end()
        taken += 1
    return cut, taken


def _validate_limits(max_bytes: int, max_records: int | None) -> None:
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")
    if max_records is not None and max_records < 1:
        raise ValueError("max_records must be positive (or None for no limit)")


class _PartWriter:
    """Takes runs of records from the scanner and spools them into parts of bounded size and count."""

    def __init__(
        self, scanner: Scanner, directory: str | None, max_bytes: int, max_records: int | None
    ) -> None:
        self._scanner = scanner
        self._directory = directory
        self._header = scanner.header
        self._max_bytes = max_bytes
        self._record_limit = max_records if max_records is not None else 1 << 62
        self.spool: _Spool | None = None
        self.written = 0
        self._index = 0

    def take(
        self, buf: bytearray, start: int, end: int, count: int, simple: bool
    ) -> Iterator[CsvPart]:
        """Spool the run ``buf[start:end]`` of ``count`` records; yield every part it completes."""
        line = self._scanner.line_number
        while start < end:
            if self.spool is None:
                self.spool = _Spool(self._index, self._directory, self._header, self.written + 1)
                self._index += 1
            spool = self.spool
            room = self._max_bytes - spool.bytes
            slots = self._record_limit - spool.records
            if end - start <= room and count <= slots:
                spool.write_span(buf, start, end)
                spool.records += count
                self.written += count
                return
            # The run does not fit whole: take the records that do, then close the part.
            cut, taken = _cut(buf, start, end, count, simple, room, slots)
            if taken:
                spool.write_span(buf, start, cut)
                spool.records += taken
                self.written += taken
                count -= taken
                line += buf.count(b"\n", start, cut)
                start = cut
            elif spool.records == 0:
                size = _cut(buf, start, end, count, simple, end - start, 1)[0] - start
                raise self._scanner.too_large(size, record=self.written + 1, line=line, partial=False)
            yield self.finish()

    def finish(self) -> CsvPart:
        """Close the part being written."""
        assert self.spool is not None
        finished, self.spool = self.spool.finish(), None
        return finished

    def discard(self) -> None:
        """Delete the part being written, if any."""
        if self.spool is not None:
            self.spool.discard()
            self.spool = None


def iter_csv_parts(
    source: CsvSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_records: int | None = None,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    required_columns: Collection[str] = (),
    allowed_columns: Collection[str] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
    summary: list[CsvSummary] | None = None,
) -> Iterator[CsvPart]:
    """Cut a CSV stream into spooled parts, yielding each as soon as it is complete.

    Each part is a file in ``spool_dir`` (default: the system temp dir) that starts with the source's
    header row, holds whole records copied byte for byte, and is at most ``max_bytes`` bytes (header
    included) and ``max_records`` records. Records stay in file order; concatenating the parts' records
    gives the source's records exactly.

    Validation happens while reading, so :class:`~airflow_provider_sfbulk.csvio.errors.CsvValidationError`
    may be raised after some parts were yielded; use :func:`split_csv` to validate the whole source
    before the first upload. Parts already yielded belong to the caller; the part being written when
    the generator fails or is closed is deleted.

    :param summary: when a list is given, a :class:`~airflow_provider_sfbulk.csvio.scanner.CsvSummary`
        is appended to it once the source has been read to its end.

    Other parameters as in :func:`~airflow_provider_sfbulk.csvio.scanner.inspect_csv`.
    """
    _validate_limits(max_bytes, max_records)
    directory = None if spool_dir is None else os.fspath(spool_dir)
    opened = OpenedSource(source, source_name)
    writer: _PartWriter | None = None
    try:
        scanner = start_scan(
            opened,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            chunk_size=chunk_size,
            max_record_bytes=max(max_bytes, 1),
            required_columns=required_columns,
            allowed_columns=allowed_columns,
        )
        room_for_records = max_bytes - len(scanner.header)
        if room_for_records <= 0:
            raise ValueError(
                f"max_bytes={max_bytes} leaves no room for records after the "
                f"{len(scanner.header)}-byte header"
            )
        scanner.max_record_bytes = room_for_records
        writer = _PartWriter(scanner, directory, max_bytes, max_records)
        for buf, start, end, count, simple in scanner.spans():
            yield from writer.take(buf, start, end, count, simple)
        if writer.written == 0:
            raise header_only_error(scanner)
        if writer.spool is not None:
            yield writer.finish()
        if summary is not None:
            summary.append(summarize(scanner, column_delimiter))
    finally:
        if writer is not None:
            writer.discard()
        opened.close()


def split_csv(
    source: CsvSource,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_records: int | None = None,
    column_delimiter: str = "COMMA",
    line_ending: str = "LF",
    required_columns: Collection[str] = (),
    allowed_columns: Collection[str] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
) -> CsvSplit:
    """Validate a whole CSV source and cut it into spooled upload parts; nothing is returned early.

    Reads the source once. If anything is wrong, every spool file written so far is deleted and
    :class:`CsvValidationError` is raised, so a caller that creates jobs only after this returns never
    starts a job for a bad file. On success the caller owns the parts: upload, then delete each one (or
    use the returned :class:`CsvSplit` as a context manager). Disk use is about the size of the source;
    memory stays at about one chunk plus one record.

    :param source: a binary stream (``open(p, "rb")``, ``ObjectStoragePath(...).open("rb")``) or a path.
    :param max_bytes: largest part, header included (default :data:`DEFAULT_MAX_BYTES`).
    :param max_records: most records per part (default: no limit).
    :param column_delimiter: ``columnDelimiter`` name (``COMMA``, ``SEMICOLON``, ...) or character.
    :param line_ending: ``LF`` or ``CRLF``, as the job will declare it; every record must end with it.
    :param required_columns: header names that must be present (case-insensitive); see
        :func:`required_columns_for`.
    :param allowed_columns: when given, the only header names allowed (``delete``: ``Id`` only).
    :param spool_dir: where part files go (default: the system temp dir).
    :param chunk_size: bytes read at a time.
    :param source_name: name used in error messages (default: the path or the stream's ``name``).
    """
    parts: list[CsvPart] = []
    summaries: list[CsvSummary] = []
    try:
        for part in iter_csv_parts(
            source,
            max_bytes,
            max_records=max_records,
            column_delimiter=column_delimiter,
            line_ending=line_ending,
            required_columns=required_columns,
            allowed_columns=allowed_columns,
            spool_dir=spool_dir,
            chunk_size=chunk_size,
            source_name=source_name,
            summary=summaries,
        ):
            parts.append(part)
    except BaseException:
        for part in parts:
            part.path.unlink(missing_ok=True)
        raise
    return CsvSplit(parts, summaries[0])
