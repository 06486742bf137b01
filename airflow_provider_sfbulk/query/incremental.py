"""Incremental extracts: the SOQL of one data interval, and the folder name that keys its results.

:func:`compose_interval_soql` adds the half-open filter ``Field >= start AND Field < end`` to a query
written without it. Consecutive intervals share their bound, so a record whose timestamp equals one
interval's end belongs to the next interval only: no record is missed or read twice at a boundary.

The bounds are SOQL ``dateTime`` literals in UTC, ``YYYY-MM-DDThh:mm:ssZ`` (the documented form, not
quoted); a bound with a fraction of a second is refused rather than rounded, since rounding would move
the boundary. The user's own ``WHERE`` condition is kept whole, in parentheses, before the interval
filter::

    SELECT Id, Name FROM Account WHERE Type = 'Customer' OR Rating = 'Hot' ORDER BY Id
    -> SELECT Id, Name FROM Account WHERE (Type = 'Customer' OR Rating = 'Hot')
       AND SystemModstamp >= 2024-01-01T00:00:00Z AND SystemModstamp < 2024-01-02T00:00:00Z ORDER BY Id

The query is read as SOQL tokens (string literals with their escapes, parentheses, words), so a
``WHERE`` inside a sub-query or a string is never taken for the top-level one. What the filter cannot be
added to safely is refused with :class:`IncrementalQueryError`: ``LIMIT`` or ``OFFSET`` (they would cut
an interval short), ``GROUP BY``/``HAVING``, a query that does not start with ``SELECT ... FROM Object``,
unbalanced parentheses or an unterminated string.

:attr:`IntervalQuery.folder_name` names the results folder of one interval from its bounds only, so a re-run
of the interval (a cleared task, a backfill) writes to the same folder and replaces what was there.

No Airflow here: the operator passes the data interval in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "DEFAULT_INCREMENTAL_FIELD",
    "IncrementalQueryError",
    "IntervalQuery",
    "bound_soql",
    "compose_interval_soql",
    "soql_datetime",
]

#: The timestamp field filtered by default: set on every change, system ones included, and indexed.
DEFAULT_INCREMENTAL_FIELD = "SystemModstamp"

_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*\Z")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Clauses after ``WHERE``, in SOQL order; the interval filter goes before the first one present.
_AFTER_WHERE = ("WITH", "GROUP", "ORDER", "LIMIT", "OFFSET", "FOR", "UPDATE")
#: Words that start those clauses only when this word follows (``Order`` and ``Group`` are objects too).
_NEEDS_NEXT = {
    "GROUP": ("BY",),
    "ORDER": ("BY",),
    "FOR": ("VIEW", "REFERENCE", "UPDATE"),
    "UPDATE": ("TRACKING", "VIEWSTAT"),
}
_REFUSED = {
    "LIMIT": "LIMIT would cut an interval short; filter the query instead",
    "OFFSET": "OFFSET would skip records of an interval",
    "GROUP": "GROUP BY (aggregates) cannot be extracted incrementally",
    "HAVING": "HAVING (aggregates) cannot be extracted incrementally",
}


class IncrementalQueryError(ValueError):
    """The query or the interval cannot be turned into an interval extract safely."""


@dataclass(frozen=True)
class _Token:
    kind: str  # word, string, open, close, other
    text: str
    start: int
    depth: int  # parentheses around the token (a parenthesis itself counts the outer level)


@dataclass(frozen=True)
class IntervalQuery:
    """The SOQL of one interval and what it was made of (for the log and the manifest)."""

    soql: str
    object_name: str
    field: str
    start: str
    end: str

    @property
    def folder_name(self) -> str:
        """The results folder name of this interval: ``20240101T000000Z_20240102T000000Z``."""
        return f"{_compact(self.start)}_{_compact(self.end)}"

    def describe(self) -> dict[str, str]:
        """The interval as the manifest and the asset event show it."""
        return {"field": self.field, "start": self.start, "end": self.end, "soql": self.soql}


def soql_datetime(value: datetime) -> str:
    """``value`` as a SOQL ``dateTime`` literal in UTC: ``2024-01-31T10:00:00Z``.

    :raises IncrementalQueryError: ``value`` has no time zone, or a fraction of a second.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise IncrementalQueryError(f"the interval bound {value.isoformat()} has no time zone")
    if value.microsecond:
        raise IncrementalQueryError(
            f"the interval bound {value.isoformat()} has a fraction of a second; SOQL datetime literals "
            "are whole seconds (YYYY-MM-DDThh:mm:ssZ)"
        )
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(literal: str) -> str:
    return literal.replace("-", "").replace(":", "")


def _check_interval(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    if start is None or end is None:
        raise IncrementalQueryError(
            "an incremental extract needs a run with a data interval (a scheduled or backfilled run, or "
            "dag.test(logical_date=...)); this run has none"
        )
    soql_datetime(start)
    soql_datetime(end)
    if not start < end:
        raise IncrementalQueryError(
            f"the data interval [{start.isoformat()}, {end.isoformat()}) is empty; an incremental extract "
            "needs data_interval_start < data_interval_end (a manual run of an unscheduled DAG has none)"
        )
    return start, end


def _string_end(soql: str, start: int) -> int:
    index = start + 1
    while index < len(soql):
        if soql[index] == "\\":
            index += 2
            continue
        if soql[index] == "'":
            return index + 1
        index += 1
    raise IncrementalQueryError(f"the query has an unterminated string literal at character {start + 1}")


def _tokens(soql: str) -> list[_Token]:
    """SOQL as tokens with their parenthesis depth; strings are skipped whole, escapes included."""
    tokens: list[_Token] = []
    depth, index = 0, 0
    while index < len(soql):
        char = soql[index]
        if char.isspace():
            index += 1
        elif char == "'":
            end = _string_end(soql, index)
            tokens.append(_Token("string", soql[index:end], index, depth))
            index = end
        elif char == "(":
            tokens.append(_Token("open", char, index, depth))
            depth += 1
            index += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise IncrementalQueryError(f"the query has an unmatched ')' at character {index + 1}")
            tokens.append(_Token("close", char, index, depth))
            index += 1
        elif match := _WORD.match(soql, index):
            tokens.append(_Token("word", match.group(), index, depth))
            index = match.end()
        else:
            tokens.append(_Token("other", char, index, depth))
            index += 1
    if depth:
        raise IncrementalQueryError("the query has an unmatched '('")
    return tokens


def _clause(tokens: list[_Token], position: int) -> str | None:
    """The top-level clause keyword starting at ``tokens[position]``, if it is one."""
    token = tokens[position]
    if token.kind != "word" or token.depth:
        return None
    word = token.text.upper()
    if word in _NEEDS_NEXT:
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        if following is None or following.kind != "word" or following.text.upper() not in _NEEDS_NEXT[word]:
            return None
    if word in ("LIMIT", "OFFSET"):  # a number or a bind variable follows; a field of that name does not
        following = tokens[position + 1] if position + 1 < len(tokens) else None
        if (
            following is None
            or following.kind not in ("word", "other")
            or not (following.text.isdigit() or following.text == ":")
        ):
            return None
    return word if word in (*_AFTER_WHERE, "WHERE", "HAVING", "FROM", "USING") else None


def _object_after_from(soql: str, tokens: list[_Token]) -> tuple[str, int]:
    """The queried object and the index of the first token after ``FROM Object [alias]``."""
    if not tokens or tokens[0].kind != "word" or tokens[0].text.upper() != "SELECT":
        raise IncrementalQueryError("an incremental query must start with SELECT")
    found = next((i for i in range(1, len(tokens)) if _clause(tokens, i) == "FROM"), None)
    if found is None or found + 1 >= len(tokens) or tokens[found + 1].kind != "word":
        raise IncrementalQueryError("the query has no top-level 'FROM Object'")
    position = found + 2
    if position < len(tokens) and tokens[position].kind == "other" and tokens[position].text in ".:":
        raise IncrementalQueryError(f"cannot read the object after FROM in {soql!r}")
    if position < len(tokens) and tokens[position].kind == "word" and _clause(tokens, position) is None:
        position += 1  # an alias
    return tokens[found + 1].text, position


@dataclass(frozen=True)
class _Parsed:
    """A query cut where a filter goes: ``text[:where or tail]``, its condition, and the tail clauses."""

    text: str
    tokens: list[_Token]
    object_name: str
    from_index: int  # the FROM token
    where: int | None  # the top-level WHERE token
    tail: int | None  # the first clause after WHERE (ORDER BY, ...)

    @property
    def cut(self) -> int:
        """Where the tail clauses start (the end of the text without one)."""
        return self.tokens[self.tail].start if self.tail is not None else len(self.text)

    def condition(self) -> str | None:
        """The query's own top-level ``WHERE`` condition, or ``None``."""
        if self.where is None:
            return None
        token = self.tokens[self.where]
        condition = self.text[token.start + len(token.text) : self.cut].strip()
        if not condition:
            raise IncrementalQueryError(f"the WHERE of {self.text!r} has no condition")
        return condition


def _parse(soql: str) -> _Parsed:
    text = soql.strip()
    tokens = _tokens(text)
    object_name, position = _object_after_from(text, tokens)
    where: int | None = None
    tail: int | None = None
    for index in range(position, len(tokens)):
        clause = _clause(tokens, index)
        if clause in _REFUSED:
            raise IncrementalQueryError(f"{_REFUSED[clause]} (in {text!r})")
        if clause == "WHERE" and where is None and tail is None:
            where = index
        elif clause in _AFTER_WHERE and tail is None:
            tail = index
        elif clause in ("USING",) and where is None:
            continue
        elif clause in ("WHERE", "FROM"):
            raise IncrementalQueryError(f"cannot place the interval filter in {text!r}: a second {clause}")
    from_index = next(i for i in range(1, len(tokens)) if _clause(tokens, i) == "FROM")
    return _Parsed(text, tokens, object_name, from_index, where, tail)


def _check_field(field: str) -> None:
    if not isinstance(field, str) or not _FIELD.match(field):
        raise IncrementalQueryError(
            f"incremental_field must be a field name such as SystemModstamp, not {field!r}"
        )


def compose_interval_soql(
    soql: str, field: str, start: datetime | None, end: datetime | None
) -> IntervalQuery:
    """``soql`` restricted to records whose ``field`` lies in ``[start, end)`` (see the module documentation).

    :param soql: the query without a time filter; its own ``WHERE`` is kept, in parentheses.
    :param field: a ``dateTime`` field (or relationship path) of the queried object.
    :raises IncrementalQueryError: the query or the interval cannot be composed safely.
    """
    _check_field(field)
    start, end = _check_interval(start, end)
    parsed = _parse(soql)
    text = parsed.text
    lower, upper = soql_datetime(start), soql_datetime(end)
    interval = f"{field} >= {lower} AND {field} < {upper}"
    rest = text[parsed.cut :].strip()
    if parsed.where is not None:
        head = text[: parsed.tokens[parsed.where].start].rstrip()
        body = f"{head} WHERE ({parsed.condition()}) AND {interval}"
    else:
        body = f"{text[: parsed.cut].rstrip()} WHERE {interval}"
    composed = f"{body} {rest}" if rest else body
    return IntervalQuery(soql=composed, object_name=parsed.object_name, field=field, start=lower, end=upper)


def bound_soql(soql: str, field: str, *, last: bool) -> str:
    """The query that reads the first (or, ``last``, the latest) value of ``field`` among ``soql``'s records.

    Bulk API 2.0 refuses aggregates such as ``MIN()``; ``ORDER BY`` with ``LIMIT 1`` is allowed. The
    query's own condition is kept; records without a value are left out::

        SELECT Id FROM Account WHERE Type = 'Customer'
        -> SELECT CreatedDate FROM Account WHERE (Type = 'Customer') AND CreatedDate != null
           ORDER BY CreatedDate ASC NULLS LAST LIMIT 1

    :raises IncrementalQueryError: the query cannot be sliced (as for :func:`compose_interval_soql`).
    """
    _check_field(field)
    parsed = _parse(soql)
    text, tokens = parsed.text, parsed.tokens
    source_end = tokens[parsed.where].start if parsed.where is not None else parsed.cut
    source = text[tokens[parsed.from_index].start : source_end].strip()  # FROM Object [alias] [USING ...]
    condition = parsed.condition()
    not_null = f"{field} != null"
    where = f"({condition}) AND {not_null}" if condition is not None else not_null
    order = "DESC" if last else "ASC"
    return f"SELECT {field} {source} WHERE {where} ORDER BY {field} {order} NULLS LAST LIMIT 1"
