"""Checks against the org before any job of a load exists: the daily batch allowance and the describe."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from airflow_provider_sfbulk.common.logs import Log
from airflow_provider_sfbulk.csvio.split import CsvPart
from airflow_provider_sfbulk.exceptions import SalesforceBulkNotFoundError
from airflow_provider_sfbulk.ingest.errors import IngestInputError
from airflow_provider_sfbulk.ingest.spec import LoadSpec
from airflow_provider_sfbulk.protocol.describe import ObjectDescribe
from airflow_provider_sfbulk.protocol.states import IngestOperation

if TYPE_CHECKING:
    from airflow_provider_sfbulk.hooks.bulk import SalesforceBulkHook

__all__ = ["RECORDS_PER_BATCH", "batches_needed", "check_columns", "check_daily_batches"]

#: Records per internal Salesforce batch; each counts against ``DailyBulkApiBatches``.
RECORDS_PER_BATCH = 10_000


def batches_needed(parts: Sequence[CsvPart]) -> int:
    """Internal batches Salesforce will count for these parts (one per started 10,000 records per job)."""
    return sum(math.ceil(part.record_count / RECORDS_PER_BATCH) for part in parts)


def check_daily_batches(
    spec: LoadSpec, parts: Sequence[CsvPart], hook: SalesforceBulkHook, log: Log
) -> bool:
    """Compare the batches the load needs with the org's remaining ``DailyBulkApiBatches``.

    ``limits_check="fail"`` refuses a load that does not fit (:class:`IngestInputError`), ``"warn"``
    logs and goes on, ``"off"`` does not ask. Returns True when the load fits but leaves less than
    ``limits_warn_share`` of the daily maximum (logged as a warning, so alerts fire before the cap).
    """
    if spec.limits_check == "off":
        return False
    needed = batches_needed(parts)
    limits = hook.get_limits()
    remaining = limits.remaining("DailyBulkApiBatches")
    maximum = limits.maximum("DailyBulkApiBatches")
    if remaining is None or needed <= remaining:
        log.info("Preflight: %d batch(es) needed, %s left today", needed, remaining)
        if remaining is not None and maximum and remaining - needed < spec.limits_warn_share * maximum:
            log.warning(
                "Preflight: after this load about %d of the org's %d DailyBulkApiBatches are left (less than "
                "limits_warn_share=%s of them)",
                remaining - needed,
                maximum,
                spec.limits_warn_share,
            )
            return True
        return False
    message = (
        f"the load needs about {needed} Bulk API batch(es) of {RECORDS_PER_BATCH} rows but the org has "
        f"{remaining} of its DailyBulkApiBatches left"
    )
    if spec.limits_check == "fail":
        raise IngestInputError(message + " (limits_check='warn' only warns)")
    log.warning("Preflight: %s; loading anyway (limits_check='warn')", message)
    return True


def check_columns(
    spec: LoadSpec, columns: Sequence[str], describe: Callable[[str], ObjectDescribe]
) -> None:
    """Check the CSV header against the object's describe; refuse naming every problem.

    Catches before any job exists what Salesforce would otherwise answer with a failed job (``InvalidBatch
    : Field name not found``) or a failed row per record: an unknown object, unknown columns (including
    ``Relationship.Field`` references whose relationship or field does not exist, or whose field is not
    an external id or id lookup), fields that are not createable (insert, upsert) or not updateable
    (update, upsert), required fields missing on insert, and an ``external_id_field`` that cannot match.

    :param describe: the describe of an object by name (cached by the caller).
    :raises IngestInputError: naming each problem.
    """
    try:
        target = describe(spec.object_name)
    except SalesforceBulkNotFoundError as err:
        raise IngestInputError(
            f"the object {spec.object_name!r} does not exist in this org (or this user cannot see it)"
        ) from err
    problems: list[str] = []
    operation = IngestOperation(spec.operation)
    if operation in (IngestOperation.DELETE, IngestOperation.HARD_DELETE):
        if not target.deletable:
            problems.append(f"{target.name} records cannot be deleted by this user")
    else:
        for column in columns:
            problems.extend(_column_problems(spec, operation, target, column, describe))
        if operation is IngestOperation.INSERT:
            given = {column.casefold() for column in columns}
            missing = [
                field.name
                for field in target.fields
                if field.required_on_create and field.name.casefold() not in given
            ]
            if missing:
                problems.append(f"required field(s) missing for insert: {', '.join(missing)}")
        if operation is IngestOperation.UPSERT and spec.external_id_field:
            problems.extend(_external_id_problems(target, spec.external_id_field))
    if problems:
        raise IngestInputError(
            f"the CSV does not fit {target.name} ({operation.value}); no job was created: "
            + "; ".join(problems)
        )


def _column_problems(
    spec: LoadSpec,
    operation: IngestOperation,
    target: ObjectDescribe,
    column: str,
    describe: Callable[[str], ObjectDescribe],
) -> list[str]:
    if "." in column:
        return _reference_problems(target, column, describe)
    found = target.field(column)
    if found is None:
        return [f"column {column!r}: {target.name} has no such field"]
    if found.name == "Id" and operation in (IngestOperation.UPDATE, IngestOperation.UPSERT):
        return []
    is_key = spec.external_id_field is not None and found.name.casefold() == spec.external_id_field.casefold()
    if operation is IngestOperation.INSERT and not found.createable:
        return [f"column {column!r}: {found.name} cannot be set on insert (not createable)"]
    if operation is IngestOperation.UPDATE and not found.updateable:
        return [f"column {column!r}: {found.name} cannot be changed (not updateable)"]
    if operation is IngestOperation.UPSERT and not found.createable:
        return [f"column {column!r}: {found.name} cannot be set on insert (not createable)"]
    if operation is IngestOperation.UPSERT and not found.updateable and not is_key:
        return [f"column {column!r}: {found.name} cannot be changed on update (not updateable)"]
    return []


def _reference_problems(
    target: ObjectDescribe, column: str, describe: Callable[[str], ObjectDescribe]
) -> list[str]:
    """``Relationship.Field`` (or ``Type:Relationship.Field`` for a polymorphic one) in a header."""
    path, _, key = column.rpartition(".")
    object_type, _, relationship_name = path.rpartition(":")
    relationship = target.relationship(relationship_name)
    if relationship is None or "." in relationship_name:
        return [f"column {column!r}: {target.name} has no relationship {relationship_name!r}"]
    parents = [object_type] if object_type else list(relationship.reference_to)
    if len(parents) != 1:
        return [
            f"column {column!r}: {relationship.name} can point to {', '.join(parents)}; name the object "
            f"as ObjectType:{relationship_name}.{key}"
        ]
    try:
        parent = describe(parents[0])
    except SalesforceBulkNotFoundError:
        return [f"column {column!r}: the parent object {parents[0]!r} does not exist"]
    field = parent.field(key)
    if field is None:
        return [f"column {column!r}: {parent.name} has no field {key!r}"]
    if not (field.external_id or field.id_lookup):
        return [f"column {column!r}: {parent.name}.{field.name} is not an external id or id lookup field"]
    return []


def _external_id_problems(target: ObjectDescribe, external_id_field: str) -> list[str]:
    found = target.field(external_id_field)
    if found is None:
        return [f"external_id_field {external_id_field!r}: {target.name} has no such field"]
    if not (found.external_id or found.id_lookup):
        return [
            f"external_id_field {external_id_field!r}: {target.name}.{found.name} is not an external id or "
            "id lookup field, so upsert cannot match on it"
        ]
    return []
