"""The Bulk API 2.0 CSV dialect: delimiter and line-ending names, and the columns an operation needs."""

from __future__ import annotations

from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, IngestOperation

__all__ = ["required_columns_for", "resolve_delimiter", "resolve_line_ending"]


def resolve_delimiter(value: str) -> tuple[str, str]:
    """Return ``(name, character)`` for a ``columnDelimiter`` name (``COMMA``) or character (``,``)."""
    upper = value.upper()
    if upper in COLUMN_DELIMITERS:
        return upper, COLUMN_DELIMITERS[upper]
    for name, char in COLUMN_DELIMITERS.items():
        if value == char:
            return name, char
    raise ValueError(
        f"unsupported column delimiter {value!r}; Bulk API 2.0 accepts {', '.join(COLUMN_DELIMITERS)}"
    )


def resolve_line_ending(value: str) -> str:
    """Return the ``lineEnding`` name (``LF`` or ``CRLF``) for a name or the characters themselves."""
    upper = value.upper()
    if upper in LINE_ENDINGS:
        return upper
    for name, chars in LINE_ENDINGS.items():
        if value == chars:
            return name
    raise ValueError(f"unsupported line ending {value!r}; Bulk API 2.0 accepts LF and CRLF")


def required_columns_for(
    operation: str, external_id_field: str | None = None
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Columns an operation needs, as ``(required_columns, allowed_columns)``.

    The pair is what :func:`~airflow_provider_sfbulk.csvio.split.split_csv` takes.

    ``delete`` and ``hardDelete`` take an ``Id`` column and nothing else; ``update`` needs ``Id``;
    ``upsert`` needs its external id field; ``insert`` needs nothing in particular. ``allowed_columns``
    is ``None`` when any column may appear.
    """
    op = IngestOperation(operation)
    if op in (IngestOperation.DELETE, IngestOperation.HARD_DELETE):
        return ("Id",), ("Id",)
    if op is IngestOperation.UPDATE:
        return ("Id",), None
    if op is IngestOperation.UPSERT:
        if not external_id_field:
            raise ValueError("upsert needs external_id_field")
        return (external_id_field,), None
    return (), None

