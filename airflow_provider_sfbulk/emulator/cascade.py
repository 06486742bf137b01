"""What deleting a record does to the records that point at it (ingest ``delete`` and ``hardDelete``).

Each user reference field has a ``deleteConstraint`` (:mod:`.schema`):

``Cascade`` (master-detail, and lookups marked so)
    the pointing records are deleted with their parent, recursively: moved to the recycle bin
    (``IsDeleted`` true, still seen by ``queryAll``) by ``delete``, removed for good by ``hardDelete``
    (which also removes children already in the recycle bin);
``SetNull`` (the default of an optional lookup)
    the field is cleared on live pointing records;
``Restrict``
    while a live record points at it, the parent is not deleted: its row fails with ``DELETE_FAILED``.
    A restriction anywhere in the cascade tree blocks the whole delete of that row.

Salesforce documents these three options for lookups ("Clear the value of this field", "Don't allow
deletion of the lookup record", "Delete this record also") and that soft-deleted children do not
block a delete. The ``DELETE_FAILED`` text follows the message Salesforce shows ("Your attempt to
delete X could not be completed because it is associated with the following ...") -- its exact API
wording is a best guess. Undelete does not exist in the emulator, so cleared lookups are not restored.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from airflow_provider_sfbulk.emulator.schema import FieldDef, ObjectDef, Schema
from airflow_provider_sfbulk.emulator.values import RowError

#: Deepest chain of cascading relationships followed (a schema is a few levels deep at most).
MAX_DEPTH = 16
_CHUNK = 900


@dataclass(frozen=True)
class _Restriction:
    """Why a root cannot be deleted: ``child_id`` of ``child`` points at ``parent_id`` of ``parent``."""

    parent: ObjectDef
    parent_id: str
    child: ObjectDef
    child_id: str


@dataclass
class DeletePlan:
    """Everything deleting ``roots`` would touch; built by :func:`plan_deletes`, run by :func:`apply_plan`."""

    roots: list[str]
    owner: dict[str, str] = field(default_factory=dict)  # record id -> the root whose delete reaches it
    cascade: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # object -> ids
    set_null: list[tuple[ObjectDef, FieldDef, str, str]] = field(default_factory=list)
    restricted: dict[str, _Restriction] = field(default_factory=dict)  # root id -> first restriction
    errors: dict[str, str] = field(default_factory=dict)  # root id -> sf__Error text


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _children(conn: sqlite3.Connection, child: ObjectDef, fdef: FieldDef, parent_ids: Sequence[str],
              *, with_deleted: bool) -> Iterable[tuple[str, str, int]]:
    """``(child Id, parent id, IsDeleted)`` of ``child`` records whose ``fdef`` is one of ``parent_ids``."""
    extra = "" if with_deleted else ' AND "IsDeleted" = 0'
    for chunk in _chunks(parent_ids):
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(
            f'SELECT "Id", {fdef.column}, "IsDeleted" FROM {child.table} '
            f'WHERE {fdef.column} IN ({marks}){extra}',
            tuple(chunk))


def plan_deletes(conn: sqlite3.Connection, schema: Schema, obj: ObjectDef, roots: Sequence[str], *,
                 hard: bool) -> DeletePlan:
    """Follow every relationship from ``roots`` (records of ``obj`` about to be deleted)."""
    plan = DeletePlan(list(roots), owner={rid: rid for rid in roots})
    frontier: dict[str, list[str]] = {obj.name: list(roots)}
    for _ in range(MAX_DEPTH):
        if not frontier or not any(schema.children_of(name) for name in frontier):
            break
        frontier = _step(conn, schema, plan, frontier, hard=hard)
    for root, why in plan.restricted.items():
        plan.errors[root] = _restricted_error(conn, why)
    return plan


def _step(conn: sqlite3.Connection, schema: Schema, plan: DeletePlan, frontier: dict[str, list[str]], *,
          hard: bool) -> dict[str, list[str]]:
    """One level of the relationship tree; returns the records the next level starts from."""
    following: dict[str, list[str]] = defaultdict(list)
    for parent_name, parent_ids in frontier.items():
        parent = schema.objects[parent_name]
        for child, fdef in schema.children_of(parent_name):
            cascade = fdef.delete_constraint == "Cascade"
            for child_id, parent_id, deleted in _children(conn, child, fdef, parent_ids,
                                                          with_deleted=hard and cascade):
                root = plan.owner[parent_id]
                if child_id in plan.owner:
                    continue  # deleted anyway (a root itself, or reached through another relationship)
                if cascade:
                    plan.owner[child_id] = root
                    plan.cascade[child.name].append(child_id)
                    following[child.name].append(child_id)
                elif deleted:
                    continue  # records in the recycle bin neither block nor get cleared
                elif fdef.delete_constraint == "Restrict":
                    plan.restricted.setdefault(root, _Restriction(parent, parent_id, child, child_id))
                else:
                    plan.set_null.append((child, fdef, child_id, parent_id))
    return following


def _display_name(conn: sqlite3.Connection, obj: ObjectDef, record_id: str) -> str:
    if obj.get_field("Name") is None:
        return record_id[:15]
    row = conn.execute(f'SELECT "Name" FROM {obj.table} WHERE "Id" = ?', (record_id,)).fetchone()
    return str(row[0]) if row and row[0] else record_id[:15]


def _restricted_error(conn: sqlite3.Connection, why: _Restriction) -> str:
    parent_name = _display_name(conn, why.parent, why.parent_id)
    child_name = _display_name(conn, why.child, why.child_id)
    return RowError("DELETE_FAILED",
                    f"Your attempt to delete {parent_name} could not be completed because it is associated "
                    f"with the following {why.child.label_plural.lower()}.: {child_name}").render()


def apply_plan(conn: sqlite3.Connection, schema: Schema, plan: DeletePlan, *, hard: bool, timestamp: str,
               user: str, roots_done: Iterable[str]) -> None:
    """Delete the cascaded records and clear the lookups of the roots in ``roots_done``.

    Runs inside the caller's transaction; the roots themselves are deleted by the caller.
    """
    done = set(roots_done)
    for object_name, ids in plan.cascade.items():
        child = schema.objects[object_name]
        chosen = [(rec_id,) for rec_id in ids if plan.owner[rec_id] in done]
        if hard:
            conn.executemany(f'DELETE FROM {child.table} WHERE "Id" = ?', chosen)
        else:
            conn.executemany(
                f'UPDATE {child.table} SET "IsDeleted" = 1, "LastModifiedDate" = ?, "SystemModstamp" = ?, '
                f'"LastModifiedById" = ? WHERE "Id" = ? AND "IsDeleted" = 0',
                [(timestamp, timestamp, user, rec_id) for (rec_id,) in chosen])
    for child, fdef, child_id, parent_id in plan.set_null:
        if plan.owner[parent_id] in done:
            conn.execute(f'UPDATE {child.table} SET {fdef.column} = NULL, "SystemModstamp" = ? '
                         f'WHERE "Id" = ? AND {fdef.column} = ?', (timestamp, child_id, parent_id))
