"""The header line of a CSV: its column names, and the checks Bulk API 2.0 needs them to pass.

The scanner (:mod:`~airflow_provider_sfbulk.csvio.scanner`) finds the header line and calls
:func:`header_names` and :func:`check_columns`; :func:`parse_header` reads the names of a header line
captured elsewhere (a query result page, see :mod:`~airflow_provider_sfbulk.csvio.tee`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection

from airflow_provider_sfbulk.csvio.errors import CsvValidationError
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS

__all__ = ["check_columns", "header_names", "parse_header"]


def parse_header(header: bytes, column_delimiter: str) -> list[str]:
    """Column names of a header line (quoted or not) in the job's ``columnDelimiter`` (name or character)."""
    if not header:
        return []
    text = header.decode("utf-8-sig").rstrip("\r\n")
    delimiter = COLUMN_DELIMITERS.get(column_delimiter, column_delimiter)
    return next(csv.reader([text], delimiter=delimiter), [])


def _header_error(source: str, problem: str, detail: str) -> CsvValidationError:
    return CsvValidationError(problem, detail, source=source, record_number=0, line_number=1)


def header_names(
    line: bytes | bytearray,
    *,
    field: re.Pattern[bytes],
    delimiter: bytes,
    source: str,
) -> tuple[str, ...]:
    """The unquoted names of a header line (``line`` without its line ending), checked.

    Empty, space-padded and duplicate names are refused, and so is a one-column header that holds another
    Bulk API delimiter (:class:`CsvValidationError`).

    :param field: matches one field (quoted or not) of the file's dialect.
    :param delimiter: the column delimiter, one byte.
    :param source: the file's name, for messages.
    """
    names: list[str] = []
    pos, end, delimiter_code = 0, len(line), delimiter[0]
    while True:
        match = field.match(line, pos, end)
        stop = match.end() if match else pos
        raw = bytes(line[pos:stop])
        if raw.startswith(b'"'):
            raw = raw[1:-1].replace(b'""', b'"')
        names.append(raw.decode("utf-8"))
        if stop < end and line[stop] == delimiter_code:
            pos = stop + 1
            continue
        break
    _check_delimiter(names, line, delimiter, source)
    _check_names(names, source)
    return tuple(names)


def _check_delimiter(names: list[str], line: bytes | bytearray, delimiter: bytes, source: str) -> None:
    """A one-column header that holds another Bulk API delimiter was most likely declared wrongly."""
    if len(names) != 1:
        return
    others = [
        name
        for name, char in COLUMN_DELIMITERS.items()
        if char.encode() != delimiter and char.encode() in line
    ]
    if not others:
        return
    declared = next((name for name, char in COLUMN_DELIMITERS.items() if char.encode() == delimiter), "?")
    suggestion = " or ".join(f"column_delimiter={name!r}" for name in others)
    shown = ", ".join(repr(COLUMN_DELIMITERS[name]) for name in others)
    raise _header_error(
        source,
        "wrong_delimiter",
        f"column_delimiter is {declared} ({delimiter.decode()!r}) but the header "
        f"has no {delimiter.decode()!r} and contains {shown}; declare {suggestion}",
    )


def _check_names(names: list[str], source: str) -> None:
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise _header_error(
                source, "empty_header_name", f"column {number} has an empty name in the header"
            )
        if name != name.strip():
            raise _header_error(
                source,
                "header_whitespace",
                f"header name {name!r} (column {number}) has leading or trailing whitespace; "
                "Salesforce does not trim field names",
            )
        key = name.casefold()
        if key in seen:
            raise _header_error(
                source,
                "duplicate_header_name",
                f"header name {name!r} appears twice (columns {seen[key]} and {number}; "
                "field names are case-insensitive)",
            )
        seen[key] = number


def check_columns(
    columns: Collection[str], required: Collection[str], allowed: Collection[str] | None, *, source: str
) -> None:
    """Refuse a header that lacks a ``required`` column or, when ``allowed`` is given, has another one.

    Names compare case-insensitively, as Salesforce field names do.
    """
    have = {name.casefold() for name in columns}
    missing = [name for name in required if name.casefold() not in have]
    if missing:
        raise _header_error(
            source,
            "missing_columns",
            f"the header lacks required column(s) {', '.join(map(repr, missing))} "
            f"(header: {', '.join(columns)})",
        )
    if allowed is not None:
        permitted = {name.casefold() for name in allowed}
        extra = [name for name in columns if name.casefold() not in permitted]
        if extra:
            raise _header_error(
                source,
                "unexpected_columns",
                f"the header has column(s) {', '.join(map(repr, extra))} that this operation does not "
                f"take (allowed: {', '.join(allowed)})",
            )
