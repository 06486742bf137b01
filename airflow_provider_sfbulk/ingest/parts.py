"""The data of every part, spooled to local files.

The round's source is validated and cut into spooled files, and cut again when a restarted process
needs a part it no longer has.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection
from typing import IO

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.dialect import required_columns_for
from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.csvio.split import CsvPart, split_csv
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.ingest.state import Part, Round

__all__ = ["PartFiles", "new_round"]


class PartFiles:
    """Spooled part files of a load, keyed by ``(round number, part index)``.

    :param spec: the load's parameters (dialect, limits, operation).
    :param source_of: the file a round sends (round 0: the task's source; later: its retry file).
    :param log: where to say that a source is split again.
    """

    def __init__(
        self, spec: LoadSpec, source_of: Callable[[Round], ObjectStoragePath], log: Log
    ) -> None:
        self._spec = spec
        self._source_of = source_of
        self._log = log
        self._spool_dir: str | None = None
        self._parts: dict[tuple[int, int], CsvPart] = {}
        self._columns: dict[int, tuple[str, ...]] = {}
        self._part_bytes: dict[int, int] = {}
        self._lock = threading.Lock()

    def split(
        self,
        source: ObjectStoragePath,
        round_number: int,
        *,
        concurrency: int,
        part_bytes: int | None = None,
    ) -> list[CsvPart]:
        """Validate ``source`` completely and cut it into spooled parts (remembered for the round).

        :param concurrency: jobs of the round that may run at once: the parts are sized to spread the
            source over them (:meth:`~airflow_provider_sfbulk.ingest.spec.LoadSpec.part_bytes`).
        :param part_bytes: cut at this size instead (a round recorded in the checkpoint is cut again
            exactly as it was).
        :raises IngestInputError: the file is missing or cannot be loaded as it is.
        """
        required, allowed = required_columns_for(self._spec.operation, self._spec.external_id_field)
        if self._spool_dir is None:
            self._spool_dir = tempfile.mkdtemp(prefix="sfbulk-ingest-")
        try:
            with source.open("rb") as stream:
                if part_bytes is None:
                    part_bytes = self._spec.part_bytes(_size_of(stream), concurrency)
                result = split_csv(
                    stream,
                    part_bytes,
                    max_records=self._spec.max_records_per_job,
                    column_delimiter=self._spec.column_delimiter,
                    line_ending=self._spec.line_ending,
                    required_columns=required,
                    allowed_columns=allowed,
                    spool_dir=self._spool_dir,
                    source_name=str(source),
                )
        except FileNotFoundError as err:
            raise IngestInputError(f"the source file does not exist: {source}") from err
        except CsvValidationError as err:
            raise IngestInputError(f"the CSV cannot be loaded: {err}") from err
        for part in result.parts:
            self._parts[(round_number, part.index)] = part
        self._columns[round_number] = result.columns
        self._part_bytes[round_number] = part_bytes
        return result.parts

    def split_as_recorded(self, source: ObjectStoragePath, round_: Round) -> list[CsvPart]:
        """Cut ``source`` again exactly as ``round_`` was cut, at its recorded part size.

        A checkpoint written before sizes were recorded was cut at ``max_bytes_per_job``.
        """
        cut_at = round_.part_bytes or self._spec.max_bytes_per_job
        return self.split(source, round_.number, concurrency=round_.concurrency, part_bytes=cut_at)

    def part_bytes_of(self, round_number: int) -> int:
        """The part size a round's source was cut at by this process."""
        return self._part_bytes[round_number]

    def columns_of(self, round_number: int) -> tuple[str, ...]:
        """The header names of a round's source, once this process split it."""
        return self._columns[round_number]

    def parts_of(self, round_number: int) -> list[CsvPart]:
        """The parts of a round split by this process so far, in order (empty when none)."""
        found = [part for (number, _), part in self._parts.items() if number == round_number]
        return sorted(found, key=lambda part: part.index)

    def get(self, round_: Round, part: Part) -> CsvPart:
        """The spooled data of ``part``, split again from the round's source when this process lacks it.

        :raises IngestInputError: the source changed since the load started (a part's bytes differ).
        """
        key = (round_.number, part.index)
        with self._lock:  # upload threads may all find their part missing after a restart
            spooled = self._parts.get(key)
            if spooled is not None and spooled.path.exists():
                return spooled
            self._log.info("Splitting %s again to upload part %d", round_.source, part.index)
            for found in self.split_as_recorded(self._source_of(round_), round_):
                stored = round_.parts[found.index] if found.index < len(round_.parts) else None
                if stored is None or stored.sha256 != found.sha256:
                    raise IngestInputError(
                        f"{round_.source} changed since the load started (part {found.index} differs); "
                        "refusing to load it"
                    )
            return self._parts[key]

    def cleanup(self) -> None:
        """Delete every spooled file."""
        if self._spool_dir is not None:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            self._spool_dir = None
            self._parts.clear()


def _size_of(stream: IO[bytes]) -> int | None:
    """The size of a seekable source stream (left where it was), ``None`` when it cannot tell."""
    try:
        if not stream.seekable():
            return None
        position = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(position)
    except (OSError, ValueError, AttributeError):
        return None
    return end - position


def new_round(
    number: int,
    source: str,
    parts: list[CsvPart],
    concurrency: int,
    codes: Collection[str],
    part_bytes: int | None = None,
) -> Round:
    """A round of freshly split parts, none of which has a job yet.

    :param part_bytes: the size the parts were cut at (:meth:`PartFiles.part_bytes_of`).
    """
    return Round(
        number=number,
        source=source,
        concurrency=concurrency,
        part_bytes=part_bytes,
        retried_codes=sorted(codes),
        records=sum(part.record_count for part in parts),
        parts=[
            Part(
                index=part.index,
                bytes=part.byte_count,
                records=part.record_count,
                first_record=part.first_record_number,
                sha256=part.sha256,
            )
            for part in parts
        ],
    )
