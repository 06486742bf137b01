"""The errors of the CSV toolkit: a file that cannot be loaded, a stream that cannot be counted."""

from __future__ import annotations

from typing import Any

__all__ = ["CsvShapeError", "CsvValidationError"]


class CsvValidationError(ValueError):
    """The CSV cannot be loaded as it is.

    :param problem: a short stable name of the problem, e.g. ``unterminated_quote`` or ``field_count``.
    :param detail: what is wrong, in words.
    :param source: the file the problem is in.
    :param record_number: data record number from 1 (the header is 0), when the problem is in a record.
    :param line_number: line number from 1 (the header starts on line 1).
    :param byte_offset: offset in the source, counted from its first byte (byte order mark included).
    """

    def __init__(
        self,
        problem: str,
        detail: str,
        *,
        source: str,
        record_number: int | None = None,
        line_number: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        self.problem = problem
        self.detail = detail
        self.source = source
        self.record_number = record_number
        self.line_number = line_number
        self.byte_offset = byte_offset
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.record_number is not None:
            where.append("header" if self.record_number == 0 else f"record {self.record_number}")
        if self.line_number is not None:
            where.append(f"line {self.line_number}")
        if self.byte_offset is not None:
            where.append(f"byte offset {self.byte_offset}")
        location = f" ({', '.join(where)})" if where else ""
        return f"{self.source}{location}: {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "source": self.source,
            "record_number": self.record_number,
            "line_number": self.line_number,
            "byte_offset": self.byte_offset,
        }
        return (_rebuild_error, (self.problem, self.detail, kwargs))


def _rebuild_error(problem: str, detail: str, kwargs: dict[str, Any]) -> CsvValidationError:
    return CsvValidationError(problem, detail, **kwargs)



class CsvShapeError(ValueError):
    """A CSV stream cannot be counted: unbalanced quotes, or no end to its header line."""
