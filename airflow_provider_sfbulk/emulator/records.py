r"""Per-record processing of ingest jobs: what a real org does with every row of an uploaded CSV.

:func:`process_ingest` streams ``upload.csv`` from disk, checks the header against the schema, processes
internal batches of ``batch_size`` rows (one SQLite transaction each), and writes the three result files
as it goes, so memory stays flat however large the upload is. :func:`seed_records` (re-exported from
:mod:`.seed`) fills an object with synthetic records directly.

Reading the upload
    UTF-8, a leading BOM is dropped. When the header line does not end with the job's ``lineEnding``
    the job fails as Salesforce fails it (``ClientInputError : LineEnding is invalid on user data.
    Current LineEnding setting is LF``, quoted from real job failures in public client code), every row
    unprocessed. Past the header, records end only at the job's line ending: in an ``LF`` job a later
    CRLF row keeps the ``\r`` in its last value, and in a ``CRLF`` job a bare LF is part of the value.
    Quoting follows RFC 4180 (values are never trimmed). Header names are matched case-insensitively
    after trimming surrounding whitespace. Invalid UTF-8 or unparseable CSV fails the job before any
    row is processed (``InvalidBatch : ...``); the rows that could be read go to ``unprocessedrecords``.

Header rules (job-level failures, every row unprocessed)
    an unknown field or relationship (``InvalidBatch : Field name not found : Foo``); a relationship
    column ``Rel.Field`` whose ``Field`` is not an External ID / idLookup field of the parent; the same
    field twice. Read-only fields (``Id`` on insert, system fields) are row errors
    (``INVALID_FIELD_FOR_INSERT_UPDATE``) when a row gives them a value, as the SOAP/REST save path
    reports them; empty values in such columns are ignored.

Result files (decided from Salesforce's documentation examples and real downloads quoted in public
client code; byte equality with a live org is not verifiable offline)
    * ``successfulResults.csv``: ``"sf__Id","sf__Created",`` followed by the uploaded header line exactly
      as uploaded (quoted or not), then one line per row with every value double-quoted;
    * ``failedResults.csv``: the same with ``"sf__Id","sf__Error"``;
    * ``unprocessedrecords.csv``: the uploaded header line, then the rows' values, every value quoted.

    Values echo the parsed upload text (inner quotes doubled, embedded newlines kept). The job's column
    delimiter and line ending are used in all three files. An empty set is the header line alone. Rows
    appear in upload order (Salesforce does not promise any order). A row whose column count differs
    from the header fails with ``INVALID_FIELD:Number of fields in header is different from the row.
    header = H row = R:--`` and, as Salesforce prints it, empty values.

Row semantics are documented on :func:`process_ingest`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from airflow_provider_sfbulk.emulator import cascade, identity
from airflow_provider_sfbulk.emulator.schema import ASCII_LOWER, FieldDef, ObjectDef, Schema
from airflow_provider_sfbulk.emulator.seed import seed_records
from airflow_provider_sfbulk.emulator.values import NULL_MARKER, RowError, format_datetime, make_parser
from airflow_provider_sfbulk.protocol.ids import is_valid_id, to_18
from airflow_provider_sfbulk.protocol.states import COLUMN_DELIMITERS, LINE_ENDINGS, JobState

__all__ = [
    "BATCH_RETRIES",
    "IngestFaults",
    "IngestOutcome",
    "IngestSpec",
    "process_ingest",
    "seed_records",
    "validate_upload_header",
]

#: How often Salesforce retries an internal batch before failing the job (10 in the Bulk API 2.0
#: "Understanding Bulk API 2.0 Ingest" page of API 56-62; later pages say 20).
BATCH_RETRIES = 10
#: Largest number of SQL variables used in one ``IN (...)`` lookup.
_SQL_CHUNK = 900
#: Private-use character used to carry line-ending characters through :mod:`csv` untouched.
_ESC = "\ue000"
_UNESCAPE = {"r": "\r", "n": "\n", _ESC: _ESC}
_ESC_RE = re.compile(_ESC + "(.)", re.DOTALL)
_SELF_RO_MESSAGE = (
    "Unable to create/update fields: {name}. Please check the security settings of this field and verify "
    "that it is read/write for your profile or permission set."
)


@dataclass(frozen=True)
class IngestSpec:
    """What an ingest job asks for, as given at job creation."""

    job_id: str
    object_name: str
    operation: str
    external_id_field: str | None
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"
    assignment_rule_id: str | None = None
    user_id: str = identity.USER_ID


@dataclass(frozen=True)
class IngestFaults:
    """Failures to inject while processing (deterministic for a given seed, job and row)."""

    lock_row_rate: float = 0.0
    failing_batch: int | None = None
    seed: int = 0
    #: Successful rows left out of ``successfulResults`` (the first ones; they still count as processed).
    drop_result_rows: int = 0


@dataclass(frozen=True)
class IngestOutcome:
    """How processing ended and the counters Salesforce reports in JobInfo."""

    state: JobState
    error_message: str | None
    records_processed: int
    records_failed: int
    records_unprocessed: int
    retries: int
    processing_ms: int


class _CsvProblem(Exception):
    """The upload cannot be read as UTF-8 CSV; the message is the job's ``errorMessage``."""


#: The clock that stamps record changes (``CreatedDate``, ``LastModifiedDate``, ``SystemModstamp``);
#: ``None`` is the real time. Tests set it to place changes inside or on the bounds of a data interval.
clock: Callable[[], datetime] | None = None


def _utcnow() -> datetime:
    return clock() if clock is not None else datetime.now(timezone.utc)


def _unescape(value: str) -> str:
    return _ESC_RE.sub(lambda match: _UNESCAPE[match.group(1)], value)


class _UploadReader:
    """Streams the records of an upload; keeps the header line's raw text."""

    def __init__(self, stream: IO[bytes], delimiter: str, line_ending: str) -> None:
        self._stream = stream
        self._crlf = line_ending == "CRLF"
        self._escaped = False
        self._capture: list[str] | None = []
        self._line_no = 0
        self._reader = csv.reader(self._lines(), delimiter=delimiter, quotechar='"', doublequote=True,
                                  strict=True, skipinitialspace=False)
        self.header: list[str] | None = None
        self.raw_header = ""
        #: The header line does not end with the job's line ending (Salesforce fails such jobs).
        self.line_ending_mismatch = False

    def _lines(self) -> Iterator[str]:
        pending = ""
        first = True
        for raw in self._stream:
            self._line_no += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _CsvProblem(
                    f"InvalidBatch : Failed to parse CSV: invalid UTF-8 byte sequence on line {self._line_no}"
                ) from err
            if first:
                first = False
                if text.startswith("\ufeff"):
                    text = text[1:]
                if self._crlf:
                    self.line_ending_mismatch = text.endswith("\n") and not text.endswith("\r\n")
                else:
                    self.line_ending_mismatch = text.endswith("\r\n")
            if _ESC in text:
                text = text.replace(_ESC, _ESC + _ESC)
                self._escaped = True
            if self._crlf:
                if text.endswith("\r\n"):
                    body, terminator = text[:-2], "\r\n"
                elif text.endswith("\n"):
                    body, terminator = text[:-1], None
                else:
                    body, terminator = text, ""
                if "\r" in body:
                    body = body.replace("\r", _ESC + "r")
                    self._escaped = True
                if terminator is None:  # a bare LF inside a CRLF file is data
                    pending += body + _ESC + "n"
                    self._escaped = True
                    continue
                text = pending + body + terminator
                pending = ""
            elif "\r" in text:
                text = text.replace("\r", _ESC + "r")
                self._escaped = True
            if self._capture is not None:
                self._capture.append(text)
            yield text
        if pending:
            if self._capture is not None:
                self._capture.append(pending)
            yield pending

    def _next_record(self) -> list[str] | None:
        while True:
            try:
                row = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as err:
                raise _CsvProblem(
                    f"InvalidBatch : Failed to parse CSV: {err} (line {self._line_no})") from err
            if not row:  # blank line
                continue
            if self._escaped:
                row = [_unescape(value) if _ESC in value else value for value in row]
            return row

    def read_header(self) -> list[str] | None:
        """Read the header record; None for an empty upload."""
        self.header = self._next_record()
        captured = "".join(self._capture or [])
        self._capture = None
        for terminator in ("\r\n", "\n"):
            if captured.endswith(terminator) and not (self._crlf and terminator == "\n"):
                captured = captured[: -len(terminator)]
                break
        self.raw_header = _unescape(captured) if self._escaped else captured
        return self.header

    def __iter__(self) -> Iterator[list[str]]:
        while True:
            row = self._next_record()
            if row is None:
                return
            yield row


# --------------------------------------------------------------------------------------------- header


@dataclass
class _Column:
    """One uploaded column and how it maps onto the object."""

    index: int
    name: str
    kind: str  # "field" | "ref_ext"
    field: FieldDef
    parser: Callable[[str], Any] | None = None
    parent: ObjectDef | None = None
    parent_field: FieldDef | None = None

    def parent_pair(self) -> tuple[ObjectDef, FieldDef]:
        """Parent object and matching field of a relationship column."""
        if self.parent is None or self.parent_field is None:
            raise TypeError(f"{self.name} is not a relationship column")
        return self.parent, self.parent_field


@dataclass
class _Plan:
    """Everything the row loop needs to know about the job, computed once from the header."""

    obj: ObjectDef
    operation: str
    columns: list[_Column]
    width: int
    id_index: int | None
    key_field: FieldDef | None
    key_index: int | None
    insert_columns: list[str] = field(default_factory=list)


class _HeaderError(Exception):
    pass


def _resolve_key_field(obj: ObjectDef, spec: IngestSpec) -> FieldDef | None:
    if spec.operation != "upsert":
        return None
    name = spec.external_id_field or ""
    key = obj.get_field(name)
    if key is None or not key.indexed:
        raise _HeaderError(
            f"InvalidJob : Field name provided, {name} does not match an External ID, Salesforce Id, "
            f"or indexed field for {obj.name}"
        )
    return key


def _plan(schema: Schema, spec: IngestSpec, header: Sequence[str]) -> _Plan:
    obj = schema.get_object(spec.object_name)
    if obj is None:
        raise _HeaderError(f"InvalidJob : Unable to find object: {spec.object_name}")
    key_field = _resolve_key_field(obj, spec)
    columns: list[_Column] = []
    seen: set[str] = set()
    id_index = key_index = None
    for index, raw_name in enumerate(header):
        name = raw_name.strip()
        if "." in name:
            rel_name, _, parent_field_name = name.partition(".")
            ref = obj.relationship(rel_name)
            parent = schema.get_object(ref.reference_to or "") if ref and not ref.system else None
            parent_field = parent.get_field(parent_field_name) if parent else None
            if ref is None or parent is None or parent_field is None:
                raise _HeaderError(f"InvalidBatch : Field name not found : {name}")
            if not parent_field.indexed:
                raise _HeaderError(
                    f"InvalidBatch : Field name provided, {parent_field.name} does not match an External ID, "
                    f"Salesforce Id, or indexed field for {parent.name}"
                )
            column = _Column(index, name, "ref_ext", ref, parent=parent, parent_field=parent_field)
            target = ref.name
        else:
            fdef = obj.get_field(name)
            if fdef is None:
                raise _HeaderError(f"InvalidBatch : Field name not found : {name}")
            column = _Column(index, name, "field", fdef, parser=make_parser(fdef, schema))
            target = fdef.name
            if fdef.name == "Id":
                id_index = index
            if key_field is not None and fdef.name == key_field.name:
                key_index = index
        if target.lower() in seen:
            raise _HeaderError(f"InvalidBatch : Duplicate field name: {name}")
        seen.add(target.lower())
        columns.append(column)
    insert_columns = [f.name for f in obj.fields.values()]
    return _Plan(obj, spec.operation, columns, len(header), id_index, key_field, key_index, insert_columns)


def validate_upload_header(schema: Schema, spec: IngestSpec, data_path: Path) -> str | None:
    """Check only the header line of an upload; returns the job's ``errorMessage`` or None when fine."""
    try:
        with open(data_path, "rb") as stream:
            reader = _UploadReader(stream, COLUMN_DELIMITERS[spec.column_delimiter], spec.line_ending)
            header = reader.read_header()
            if header is None:
                return "InvalidBatch : The CSV file is empty"
            if reader.line_ending_mismatch:
                return _line_ending_message(spec.line_ending)
            _plan(schema, spec, header)
    except (_CsvProblem, _HeaderError) as err:
        return str(err)
    return None


# ------------------------------------------------------------------------------------------ row state


class _Row:
    """One uploaded row while its batch is processed (a plain slotted class: one per record, made fast)."""

    __slots__ = ("number", "values", "error", "sets", "ext_refs", "id_refs", "target_raw", "target_id", "key",
                 "created", "result_id")

    def __init__(self, number: int, values: list[str]) -> None:
        self.number = number
        self.values = values
        self.error: str | None = None
        self.sets: dict[str, Any] = {}
        self.ext_refs: list[tuple[_Column, str]] = []
        self.id_refs: list[tuple[FieldDef, str]] = []
        self.target_raw = ""
        self.target_id: str | None = None
        self.key: str | None = None
        self.created = False
        self.result_id = ""


def _parse_row(plan: _Plan, row: _Row) -> None:
    """Turn the row's text into field assignments; sets ``row.error`` on the first bad value."""
    values = row.values
    if len(values) != plan.width:
        row.error = (f"INVALID_FIELD:Number of fields in header is different from the row. "
                     f"header = {plan.width} row = {len(values)}:--")
        row.values = [""] * plan.width
        return
    operation = plan.operation
    is_delete = operation in ("delete", "hardDelete")
    if plan.id_index is not None:
        row.target_raw = values[plan.id_index]
    if plan.key_index is not None:
        row.key = values[plan.key_index]
    if is_delete:
        return
    sets = row.sets
    try:
        for column in plan.columns:
            text = values[column.index]
            if text == "":
                continue  # ignored on update; null (the default) on insert
            fdef = column.field
            if fdef.name == "Id":
                if operation == "insert":
                    raise RowError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call",
                                   ["Id"])
                continue  # the record key of update / upsert
            if fdef.system or (operation == "insert" and not fdef.createable) or (
                operation == "update" and not fdef.updateable
            ):
                raise RowError("INVALID_FIELD_FOR_INSERT_UPDATE", _SELF_RO_MESSAGE.format(name=fdef.name),
                               [fdef.name])
            if text == NULL_MARKER:
                sets[fdef.name] = None
                continue
            if column.kind == "ref_ext":
                row.ext_refs.append((column, text))
                continue
            assert column.parser is not None
            stored = column.parser(text)
            sets[fdef.name] = stored
            if fdef.type == "reference":
                row.id_refs.append((fdef, stored))
    except RowError as err:
        row.error = err.render()


# ------------------------------------------------------------------------------------------- lookups


def _chunks(items: Sequence[Any], size: int = _SQL_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lookup(conn: sqlite3.Connection, obj: ObjectDef, column: str, keys: Iterable[Any],
            extra: str = "", *, fold: bool = False) -> list[tuple[Any, ...]]:
    """Rows ``(column value, Id, IsDeleted)`` of ``obj`` whose ``column`` is one of ``keys``.

    ``fold``: compare ASCII letters case-insensitively (SQLite's NOCASE, served by the ``_nocase`` index
    of :func:`schema.create_tables`); the values returned are the stored ones.
    """
    wanted = list(dict.fromkeys(keys))
    found: list[tuple[Any, ...]] = []
    collate = " COLLATE NOCASE" if fold else ""
    for chunk in _chunks(wanted):
        marks = ",".join("?" * len(chunk))
        found.extend(conn.execute(
            f'SELECT "{column}", "Id", "IsDeleted" FROM {obj.table} '
            f'WHERE "{column}"{collate} IN ({marks}){extra}',
            tuple(chunk),
        ))
    return found


def _match_key(fdef: FieldDef, value: Any) -> Any:
    """The form in which ``value`` is compared: ASCII-lowercased text unless the field is case-sensitive.

    Salesforce matches unique, external id and idLookup text case-insensitively unless the field says
    "Treat ABC and abc as different values" (``caseSensitive``). Only ASCII letters fold, like SQLite's
    NOCASE; other letters compare exactly (a limitation of the emulator).
    """
    if fdef.folds_case and isinstance(value, str):
        return value.translate(ASCII_LOWER)
    return value


def _lock_hit(faults: IngestFaults, job_id: str, row_number: int) -> bool:
    if faults.lock_row_rate <= 0:
        return False
    digest = hashlib.blake2b(f"{faults.seed}:{job_id}:{row_number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < faults.lock_row_rate


def _duplicate_error(fdef: FieldDef, other_id: str | None) -> str:
    if other_id is None:
        return RowError("DUPLICATE_VALUE",
                        "duplicate value found: <unknown> duplicates value on record with id: "
                        "<unknown>").render()
    return RowError("DUPLICATE_VALUE",
                    f"duplicate value found: {fdef.name} duplicates value on record with id: {other_id[:15]}"
                    ).render()


class _Batch:
    """Resolves, validates and writes one internal batch inside one transaction."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema, plan: _Plan, spec: IngestSpec,
                 faults: IngestFaults, rows: list[_Row], timestamp: str) -> None:
        self.conn = conn
        self.schema = schema
        self.plan = plan
        self.spec = spec
        self.faults = faults
        self.rows = rows
        self.timestamp = timestamp
        self.obj = plan.obj
        self.delete_plan: cascade.DeletePlan | None = None

    # -- resolution --------------------------------------------------------------------------------

    def _resolve_targets(self) -> None:
        plan, operation = self.plan, self.plan.operation
        live = [row for row in self.rows if row.error is None]
        if operation in ("update", "delete", "hardDelete"):
            verb = "an update" if operation == "update" else "a delete"
            ids: list[str] = []
            for row in live:
                raw = row.target_raw
                if raw == "":
                    row.error = RowError("MISSING_ARGUMENT", f"Id not specified in {verb} call").render()
                elif not is_valid_id(raw) or raw[:3] != self.obj.key_prefix:
                    row.error = RowError("MALFORMED_ID",
                                         f"{self.obj.name} ID: id value of incorrect type: {raw}",
                                         ["Id"]).render()
                else:
                    row.target_id = to_18(raw)
                    ids.append(row.target_id)
            existing = {rec_id: deleted for rec_id, _, deleted in _lookup(self.conn, self.obj, "Id", ids)}
            self._check_targets(live, existing, allow_deleted=operation == "hardDelete")
            return
        if operation == "upsert":
            assert plan.key_field is not None
            key_field = plan.key_field
            by_key: dict[str, list[str]] = defaultdict(list)
            if key_field.name == "Id":
                keyed = []
                for row in live:
                    raw = row.key or ""
                    if raw == "":
                        row.created = True
                    elif not is_valid_id(raw) or raw[:3] != self.obj.key_prefix:
                        row.error = RowError("MALFORMED_ID",
                                             f"{self.obj.name} ID: id value of incorrect type: {raw}",
                                             ["Id"]).render()
                    else:
                        row.target_id = to_18(raw)
                        keyed.append(row)
                existing = {rec_id: deleted for rec_id, _, deleted in
                            _lookup(self.conn, self.obj, "Id", [r.target_id for r in keyed])}
                self._check_targets(keyed, existing, allow_deleted=False)
                return
            keyed = []
            for row in live:
                if not row.key:
                    row.error = RowError("MISSING_ARGUMENT", f"{key_field.name} not specified").render()
                else:
                    keyed.append(row)
            parser = make_parser(key_field, self.schema)
            for row in keyed:
                try:
                    row.key = parser(row.key or "")
                except RowError as err:
                    row.error = err.render()
            keyed = [row for row in keyed if row.error is None]
            for key_value, rec_id, _ in _lookup(self.conn, self.obj, key_field.name,
                                                [row.key for row in keyed],
                                                ' AND "IsDeleted" = 0', fold=key_field.folds_case):
                by_key[_match_key(key_field, key_value)].append(rec_id)
            counts: dict[Any, int] = defaultdict(int)
            for row in keyed:
                counts[_match_key(key_field, row.key)] += 1
            for row in keyed:
                matches = by_key.get(_match_key(key_field, row.key), [])
                if counts[_match_key(key_field, row.key)] > 1:
                    row.error = RowError("DUPLICATE_VALUE", f"Duplicate external id specified: {row.key}",
                                         [key_field.name]).render()
                elif len(matches) > 1:
                    row.error = RowError(
                        "DUPLICATE_EXTERNAL_ID",
                        f"{key_field.name}: more than one record found for external id field: "
                        f"[{', '.join(sorted(matches))}]",
                    ).render()
                elif matches:
                    row.target_id = row.result_id = matches[0]
                else:
                    row.created = True
                    row.sets[key_field.name] = row.key
            return
        for row in live:
            row.created = True

    def _check_targets(self, rows: list[_Row], existing: dict[str, int], *, allow_deleted: bool) -> None:
        counts: dict[str, int] = defaultdict(int)
        for row in rows:
            if row.target_id is not None:
                counts[row.target_id] += 1
        for row in rows:
            if row.error is not None or row.target_id is None:
                continue
            deleted = existing.get(row.target_id)
            if deleted is None:
                row.error = RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").render()
            elif deleted and not allow_deleted:
                row.error = RowError("ENTITY_IS_DELETED", "entity is deleted").render()
            elif counts[row.target_id] > 1:
                row.error = RowError("DUPLICATE_VALUE", f"Duplicate id specified: {row.target_id}").render()
            else:
                row.result_id = row.target_id

    def _resolve_references(self) -> None:
        live = [row for row in self.rows if row.error is None and (row.ext_refs or row.id_refs)]
        if not live:
            return
        # reference fields given as ids: the parent must exist and not be deleted
        wanted: dict[str, set[str]] = defaultdict(set)
        for row in live:
            for fdef, ref_id in row.id_refs:
                wanted[fdef.reference_to or ""].add(ref_id)
        id_state: dict[str, int] = {}
        for parent_name, ids in wanted.items():
            parent = self.schema.get_object(parent_name)
            if parent is not None:
                id_state.update({rec_id: deleted
                                 for rec_id, _, deleted in _lookup(self.conn, parent, "Id", ids)})
        # relationship columns: parent found by external id (deleted parents are not matched)
        ext_wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
        columns: dict[tuple[str, str], _Column] = {}
        for row in live:
            for column, key in row.ext_refs:
                parent, parent_field = column.parent_pair()
                group = (parent.name, parent_field.name)
                ext_wanted[group].add(key)
                columns[group] = column
        ext_found: dict[tuple[str, str], dict[Any, list[str]]] = {}
        for group, keys in ext_wanted.items():
            parent, parent_field = columns[group].parent_pair()
            parser = make_parser(parent_field, self.schema)
            converted: dict[str, Any] = {}
            for key in keys:
                try:
                    converted[key] = parser(key)
                except RowError:
                    continue
            found: dict[Any, list[str]] = defaultdict(list)
            for value, rec_id, _ in _lookup(self.conn, parent, parent_field.name, converted.values(),
                                            ' AND "IsDeleted" = 0', fold=parent_field.folds_case):
                found[_match_key(parent_field, value)].append(rec_id)
            ext_found[group] = {key: found.get(_match_key(parent_field, value), [])
                                for key, value in converted.items()}
        for row in live:
            for _, ref_id in row.id_refs:
                state = id_state.get(ref_id)
                if state is None:
                    row.error = RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").render()
                    break
                if state:
                    row.error = RowError("ENTITY_IS_DELETED", "entity is deleted").render()
                    break
            if row.error is not None:
                continue
            for column, key in row.ext_refs:
                parent, parent_field = column.parent_pair()
                matches = ext_found[(parent.name, parent_field.name)].get(key, [])
                if not matches:
                    row.error = RowError(
                        "INVALID_FIELD",
                        f"Foreign key external ID: {key} not found for field {parent_field.name} "
                        f"in entity {parent.name}",
                    ).render()
                    break
                if len(matches) > 1:
                    row.error = RowError(
                        "DUPLICATE_EXTERNAL_ID",
                        f"{parent_field.name}: more than one record found for external id field: "
                        f"[{', '.join(sorted(matches))}]",
                    ).render()
                    break
                row.sets[column.field.name] = matches[0]

    def _check_required(self) -> None:
        required = [f for f in self.obj.user_fields() if f.required]
        if not required:
            return
        for row in self.rows:
            if row.error is not None or self.plan.operation in ("delete", "hardDelete"):
                continue
            if row.created:
                missing = [f.name for f in required if row.sets.get(f.name) is None]
            else:
                missing = [f.name for f in required if f.name in row.sets and row.sets[f.name] is None]
            if missing:
                row.error = RowError("REQUIRED_FIELD_MISSING",
                                     f"Required fields are missing: [{', '.join(missing)}]", missing).render()

    def _check_unique(self) -> None:
        unique = [f for f in self.obj.user_fields() if f.unique]
        if not unique or self.plan.operation in ("delete", "hardDelete"):
            return
        for fdef in unique:
            rows = [row for row in self.rows if row.error is None and row.sets.get(fdef.name) is not None]
            if not rows:
                continue
            holders: dict[Any, list[str]] = defaultdict(list)
            for value, rec_id, _ in _lookup(self.conn, self.obj, fdef.name, [r.sets[fdef.name] for r in rows],
                                            ' AND "IsDeleted" = 0', fold=fdef.folds_case):
                holders[_match_key(fdef, value)].append(rec_id)
            claimed: set[Any] = set()
            for row in rows:
                value = _match_key(fdef, row.sets[fdef.name])
                others = [rec_id for rec_id in holders.get(value, []) if rec_id != row.target_id]
                holder = others[0] if others else None
                if holder is not None:
                    row.error = _duplicate_error(fdef, holder)
                elif value in claimed:
                    row.error = _duplicate_error(fdef, None)
                else:
                    claimed.add(value)

    def _plan_deletes(self) -> None:
        """Relationship effects of a delete (:mod:`.cascade`); rows a ``Restrict`` blocks fail here."""
        if self.plan.operation not in ("delete", "hardDelete") or not self.schema.children_of(self.obj.name):
            return
        targets = [row.target_id for row in self.rows if row.error is None and row.target_id]
        self.delete_plan = cascade.plan_deletes(self.conn, self.schema, self.obj, targets,
                                                hard=self.plan.operation == "hardDelete")
        for row in self.rows:
            if row.error is None and row.target_id in self.delete_plan.errors:
                row.error = self.delete_plan.errors[row.target_id]

    def _apply_lock_faults(self) -> None:
        for row in self.rows:
            if row.error is None and _lock_hit(self.faults, self.spec.job_id, row.number):
                parents = [value for name, value in row.sets.items()
                           if value is not None and self.obj.fields[name].type == "reference"]
                locked = row.target_id or (parents[0] if parents else self.spec.user_id)
                row.error = RowError("UNABLE_TO_LOCK_ROW",
                                     "unable to obtain exclusive access to this record or 1 records: "
                                     f"{locked}").render()

    # -- writing -----------------------------------------------------------------------------------

    def _write(self) -> None:
        conn, obj, ts, user = self.conn, self.obj, self.timestamp, self.spec.user_id
        good = [row for row in self.rows if row.error is None]
        operation = self.plan.operation
        if operation in ("delete", "hardDelete"):
            ids = [(row.target_id,) for row in good]
            if operation == "delete":
                conn.executemany(
                    f'UPDATE {obj.table} SET "IsDeleted" = 1, "LastModifiedDate" = ?, "SystemModstamp" = ?, '
                    f'"LastModifiedById" = ? WHERE "Id" = ?', [(ts, ts, user, rec_id) for (rec_id,) in ids])
            else:
                conn.executemany(f'DELETE FROM {obj.table} WHERE "Id" = ?', ids)
            if self.delete_plan is not None:
                cascade.apply_plan(conn, self.schema, self.delete_plan, hard=operation == "hardDelete",
                                   timestamp=ts, user=user,
                                   roots_done=[rec_id for (rec_id,) in ids if rec_id])
            for row in good:
                row.result_id = row.target_id or ""
            return
        inserts = [row for row in good if row.created]
        updates = [row for row in good if not row.created]
        if inserts:
            new_ids = identity.allocate_ids(conn, obj.key_prefix, len(inserts))
            names = self.plan.insert_columns
            position = {name: index for index, name in enumerate(names)}
            system = {"IsDeleted": 0, "CreatedDate": ts, "LastModifiedDate": ts, "SystemModstamp": ts,
                      "CreatedById": user, "LastModifiedById": user}
            blank: list[Any] = [None] * len(names)
            for name, value in system.items():  # _parse_row refuses system fields: rows never set them
                blank[position[name]] = value
            id_at = position["Id"]
            params = []
            for row, new_id in zip(inserts, new_ids, strict=True):
                row.result_id = new_id
                values = blank.copy()
                for name, value in row.sets.items():
                    values[position[name]] = value
                values[id_at] = new_id
                params.append(values)
            columns = ", ".join(f'"{name}"' for name in names)
            marks = ", ".join("?" * len(names))
            conn.executemany(f"INSERT INTO {obj.table} ({columns}) VALUES ({marks})", params)
        groups: dict[tuple[str, ...], list[_Row]] = defaultdict(list)
        for row in updates:
            row.result_id = row.target_id or ""
            groups[tuple(row.sets)].append(row)
        for set_names, rows in groups.items():
            assignments = "".join(f'"{name}" = ?, ' for name in set_names)
            conn.executemany(
                f'UPDATE {obj.table} SET {assignments}"LastModifiedDate" = ?, "SystemModstamp" = ?, '
                f'"LastModifiedById" = ? WHERE "Id" = ?',
                [(*(row.sets[name] for name in set_names), ts, ts, user, row.target_id) for row in rows],
            )

    def run(self) -> None:
        for row in self.rows:
            _parse_row(self.plan, row)
        self._resolve_targets()
        self._resolve_references()
        self._check_required()
        self._check_unique()
        self._apply_lock_faults()
        self._plan_deletes()
        self._write()


# ------------------------------------------------------------------------------------------- results


class _ResultWriter:
    """The three result files, written row by row."""

    def __init__(self, results_dir: Path, spec: IngestSpec, *, drop_successes: int = 0) -> None:
        results_dir.mkdir(parents=True, exist_ok=True)
        self._drop_successes = drop_successes
        self.delimiter = COLUMN_DELIMITERS[spec.column_delimiter]
        self.terminator = LINE_ENDINGS[spec.line_ending]
        self._files = {
            name: open(results_dir / f"{name}.csv", "w", encoding="utf-8", newline="")  # noqa: SIM115
            for name in ("successfulResults", "failedResults", "unprocessedrecords")
        }
        self._writers = {
            name: csv.writer(handle, delimiter=self.delimiter, quotechar='"', quoting=csv.QUOTE_ALL,
                             doublequote=True, lineterminator=self.terminator)
            for name, handle in self._files.items()
        }
        self.successes = self.failures = self.unprocessed = 0

    def write_headers(self, raw_header: str) -> None:
        d = self.delimiter
        suffix = (d + raw_header) if raw_header else ""
        self._files["successfulResults"].write(f'"sf__Id"{d}"sf__Created"{suffix}{self.terminator}')
        self._files["failedResults"].write(f'"sf__Id"{d}"sf__Error"{suffix}{self.terminator}')
        if raw_header:
            self._files["unprocessedrecords"].write(f"{raw_header}{self.terminator}")

    def result(self, row: _Row) -> None:
        if row.error is None:
            self.successes += 1
            if self._drop_successes > 0:  # injected fault: the row was processed but its line goes missing
                self._drop_successes -= 1
                return
            self._writers["successfulResults"].writerow(
                [row.result_id, "true" if row.created else "false", *row.values])
        else:
            self._writers["failedResults"].writerow([row.result_id, row.error, *row.values])
            self.failures += 1

    def unprocessed_row(self, values: Sequence[str]) -> None:
        self._writers["unprocessedrecords"].writerow(values)
        self.unprocessed += 1

    def flush(self) -> None:
        """Make every line written so far durable (after each batch: a crash keeps the finished batches)."""
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


# ------------------------------------------------------------------------------------------ the loop


def _begin(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")


def _sleep(seconds: float, should_abort: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or should_abort():
            return
        time.sleep(min(left, 0.05))


def _batches(reader: _UploadReader, size: int) -> Iterator[list[list[str]]]:
    batch: list[list[str]] = []
    for values in reader:
        batch.append(values)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _line_ending_message(line_ending: str) -> str:
    return ("ClientInputError : LineEnding is invalid on user data. "
            f"Current LineEnding setting is {line_ending}")


def _scan(data_path: Path, spec: IngestSpec) -> tuple[str | None, str]:
    """Read the whole upload once, before any row is processed.

    Returns the ``errorMessage`` of the first line-ending, encoding or CSV problem (None when the file
    is fine) and the line ending the file really uses, with which its rows can be read.
    """
    with open(data_path, "rb") as stream:
        reader = _UploadReader(stream, COLUMN_DELIMITERS[spec.column_delimiter], spec.line_ending)
        try:
            reader.read_header()
            if reader.line_ending_mismatch:
                actual = "LF" if spec.line_ending == "CRLF" else "CRLF"
                return _line_ending_message(spec.line_ending), actual
            for _ in reader:
                pass
        except _CsvProblem as err:
            return str(err), spec.line_ending
    return None, spec.line_ending


def process_ingest(
    conn: sqlite3.Connection,
    schema: Schema,
    spec: IngestSpec,
    data_path: Path,
    results_dir: Path,
    *,
    batch_size: int = 10_000,
    batch_delay: float = 0.0,
    batch_seconds: float = 0.0,
    faults: IngestFaults = IngestFaults(),
    should_abort: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, int], None] = lambda processed, failed: None,
    now: Callable[[], datetime] = _utcnow,
) -> IngestOutcome:
    """Process an uploaded ingest job row by row, as Salesforce does; runs in a worker thread.

    Row rules (``sf__Error`` texts follow Salesforce's):

    * insert: empty values are null, ``Id`` must be empty, required fields must be present; upsert
      inserts when the key matches nothing (``sf__Created`` ``true``), updates on one match, fails
      ``DUPLICATE_EXTERNAL_ID`` on several, ``MISSING_ARGUMENT`` on a blank key (blank ``Id`` with
      ``externalIdFieldName=Id`` inserts) and ``DUPLICATE_VALUE`` when two rows of one batch carry
      the same key;
    * update / upsert-update: empty values are ignored, ``#N/A`` nulls (a required field then fails
      ``REQUIRED_FIELD_MISSING``); the ``Id`` must be well formed (``MALFORMED_ID``), exist
      (``INVALID_CROSS_REFERENCE_KEY``) and not be deleted (``ENTITY_IS_DELETED``);
    * delete sets ``IsDeleted`` (still visible to queryAll); hardDelete removes the row (also from the
      recycle bin); records pointing at a deleted one are deleted too, cleared or make the delete fail
      ``DELETE_FAILED`` as their field's ``deleteConstraint`` says (:mod:`.cascade`);
    * values are parsed per field type (:mod:`.values`); unique fields fail ``DUPLICATE_VALUE`` against
      live records and against earlier rows of the same batch; lookups given as ids must exist and not be
      deleted, lookups given as ``Rel.ExtField`` must match exactly one live parent
      (``INVALID_FIELD:Foreign key external ID: X not found for field F in entity O``);
    * text values of upsert keys, unique fields and ``Rel.ExtField`` parents match case-insensitively
      (ASCII letters) unless the schema field is ``caseSensitive``;

    Each internal batch of ``batch_size`` rows is one transaction, committed before its result lines are
    written; ``should_abort`` is checked before every batch and during ``batch_delay``. ``batch_seconds``
    pads every internal batch to at least that wall time (a "Salesforce-like" speed profile);
    ``batch_delay`` is added after every batch.
    """
    started = time.monotonic()
    delimiter = COLUMN_DELIMITERS[spec.column_delimiter]
    writer = _ResultWriter(results_dir, spec, drop_successes=faults.drop_result_rows)
    retries = 0
    state = JobState.JOB_COMPLETE
    error_message: str | None = None
    problem, line_ending = _scan(data_path, spec)
    try:
        with open(data_path, "rb") as stream:
            reader = _UploadReader(stream, delimiter, line_ending)
            header: list[str] | None = None
            try:
                header = reader.read_header()
            except _CsvProblem as err:
                problem = problem or str(err)
            writer.write_headers(reader.raw_header)
            plan: _Plan | None = None
            if problem is None:
                if header is None:
                    problem = "InvalidBatch : The CSV file is empty"
                else:
                    try:
                        plan = _plan(schema, spec, header)
                    except _HeaderError as err:
                        problem = str(err)
            if plan is None:
                state, error_message = JobState.FAILED, problem
                _drain(reader, writer)
            else:
                state, error_message, retries = _run_batches(
                    conn, schema, spec, plan, reader, writer, batch_size=batch_size, batch_delay=batch_delay,
                    batch_seconds=batch_seconds,
                    faults=faults, should_abort=should_abort, on_progress=on_progress, now=now,
                )
    finally:
        writer.close()
    return IngestOutcome(
        state=state,
        error_message=error_message,
        records_processed=writer.successes + writer.failures,
        records_failed=writer.failures,
        records_unprocessed=writer.unprocessed,
        retries=retries,
        processing_ms=int((time.monotonic() - started) * 1000),
    )


def recover_interrupted_ingest(spec: IngestSpec, data_path: Path,
                               results_dir: Path) -> tuple[int, int, int]:
    """After a crash in the middle of a job: result files that agree with the batches that finished.

    Every finished batch was committed, then its result lines were written and flushed (rows in upload
    order), so the rows in ``successfulResults`` and ``failedResults`` are the first rows of the upload.
    A line torn by the crash is dropped; ``unprocessedrecords`` gets every later row of the upload.
    Returns ``(processed, failed, unprocessed)``, the job's counters to match the files.
    """
    problem, line_ending = _scan(data_path, spec)
    with open(data_path, "rb") as stream:
        reader = _UploadReader(stream, COLUMN_DELIMITERS[spec.column_delimiter], line_ending)
        reader.read_header()
        kept = {name: _complete_rows(results_dir / f"{name}.csv", spec)
                for name in ("successfulResults", "failedResults")}
        writer = _ResultWriter(results_dir, spec)
        try:
            writer.write_headers(reader.raw_header)
            for name, rows in kept.items():
                for values in rows:
                    writer._writers[name].writerow(values)
            processed = sum(len(rows) for rows in kept.values())
            if problem is None:
                for number, values in enumerate(reader):
                    if number >= processed:
                        writer.unprocessed_row(values)
            writer.flush()
        finally:
            writer.close()
    return processed, len(kept["failedResults"]), writer.unprocessed


def _complete_rows(path: Path, spec: IngestSpec) -> list[list[str]]:
    """The data rows of a result file cut short by a crash: the header and a torn last line dropped."""
    if not path.exists():
        return []
    terminator = LINE_ENDINGS[spec.line_ending]
    text = path.read_text(encoding="utf-8", errors="replace")
    text = text[: text.rfind(terminator) + len(terminator)] if terminator in text else ""
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=COLUMN_DELIMITERS[spec.column_delimiter],
                           quotechar='"', doublequote=True))
    return rows[1:]


def _drain(reader: _UploadReader | Iterator[list[str]], writer: _ResultWriter,
           first: Iterable[Sequence[str]] = ()) -> None:
    """Send ``first`` and every row still to be read to ``unprocessedrecords`` (stop at a CSV problem)."""
    for values in first:
        writer.unprocessed_row(values)
    try:
        for values in reader:
            writer.unprocessed_row(values)
    except _CsvProblem:
        return


def _run_batches(
    conn: sqlite3.Connection, schema: Schema, spec: IngestSpec, plan: _Plan, reader: _UploadReader,
    writer: _ResultWriter, *, batch_size: int, batch_delay: float, faults: IngestFaults, batch_seconds: float,
    should_abort: Callable[[], bool], on_progress: Callable[[int, int], None], now: Callable[[], datetime],
) -> tuple[JobState, str | None, int]:
    batches = _batches(reader, max(1, batch_size))
    row_number = 0
    for batch_no, raw_rows in enumerate(batches, start=1):
        if should_abort():
            _drain(_rest_rows(batches), writer, raw_rows)
            return JobState.ABORTED, None, 0
        if faults.failing_batch is not None and batch_no == faults.failing_batch:
            _drain(_rest_rows(batches), writer, raw_rows)
            message = (f"InternalServerError : Failed to process batch {batch_no} after {BATCH_RETRIES} "
                       f"retries")
            return JobState.FAILED, message, BATCH_RETRIES
        batch_started = time.monotonic()
        rows = []
        for values in raw_rows:
            row_number += 1
            rows.append(_Row(row_number, values))
        _begin(conn)
        try:
            _Batch(conn, schema, plan, spec, faults, rows, format_datetime(now())).run()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        for row in rows:
            writer.result(row)
        writer.flush()  # the published count never runs ahead of the result files
        on_progress(writer.successes + writer.failures, writer.failures)
        if batch_seconds > 0:
            _sleep(batch_seconds - (time.monotonic() - batch_started), should_abort)
        if batch_delay > 0:
            _sleep(batch_delay, should_abort)
    return JobState.JOB_COMPLETE, None, 0


def _rest_rows(batches: Iterator[list[list[str]]]) -> Iterator[list[str]]:
    """The rows of the batches not yet taken."""
    for batch in batches:
        yield from batch
