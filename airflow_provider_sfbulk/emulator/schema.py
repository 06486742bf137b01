"""Object and field descriptions of the emulated org, and how records are laid out in SQLite.

A schema file is JSON::

    {"objects": {
        "Account": {
            "keyPrefix": "001",
            "fields": {
                "Name": {"type": "string", "length": 255, "required": true},
                "External_Id__c": {"type": "string", "length": 50, "externalId": true, "unique": true},
                "ParentId": {"type": "reference", "referenceTo": "Account", "relationshipName": "Parent"}
            }
        }
    }}

Field types: ``string``, ``textarea``, ``email``, ``phone``, ``url``, ``picklist`` (``values``, optional
``restricted``), ``boolean``, ``int``, ``double``, ``currency``, ``percent`` (``precision``/``scale``),
``date``, ``datetime`` and ``reference`` (``referenceTo``, ``relationshipName``). Every object also gets
the system fields ``Id``, ``IsDeleted``, ``CreatedDate``, ``LastModifiedDate``, ``SystemModstamp``,
``CreatedById`` and ``LastModifiedById``, which are read-only.

Optional keys, all with defaults that keep older schema files working:

* object: ``label`` / ``labelPlural`` (derived from the name), ``createable``, ``updateable``,
  ``deletable``, ``queryable`` (true);
* field: ``label`` (derived from the name), ``createable`` / ``updateable`` (true), ``caseSensitive``
  (false: text values of unique, external id and idLookup fields match case-insensitively, as
  Salesforce's default "Treat ABC and abc as duplicate values" does);
* reference field: ``masterDetail`` (false; a master-detail field is required, not updateable unless
  ``reparentable``, and its records are deleted with their master), ``deleteConstraint`` -- what
  deleting a referenced record does to this record: ``SetNull`` (clear the field; the default of an
  optional lookup), ``Restrict`` (refuse the delete with ``DELETE_FAILED``; the default of a required
  lookup) or ``Cascade`` (delete this record too; always so for master-detail), and
  ``childRelationshipName`` (the parent's name for the list of these records; derived when absent).

Storage: one table per object named ``rec_<Object>``, one column per field, named exactly as the field.
Values are stored in a canonical form so that SQL comparisons and ORDER BY behave like SOQL:

============================  ======================================================
type                          stored as
============================  ======================================================
string-like, picklist, ids    TEXT
boolean                       INTEGER 0 / 1
int                           INTEGER
double, currency, percent     REAL
date                          TEXT ``YYYY-MM-DD``
datetime                      TEXT ``YYYY-MM-DDTHH:MM:SS.sssZ`` in UTC (sorts as text)
null                          NULL
============================  ======================================================
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

STRING_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "id", "reference"})
#: Types whose values are text a person typed, compared case-insensitively unless ``caseSensitive``.
CASE_FOLDED_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist"})
DELETE_CONSTRAINTS = ("SetNull", "Restrict", "Cascade")
#: What SQLite's NOCASE collation folds (ASCII letters only); Python folds the same way with this table.
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
FIELD_TYPES = STRING_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime"}


class SchemaError(ValueError):
    """The schema file is not valid."""


@dataclass(frozen=True)
class FieldDef:
    """One field of an sObject."""

    name: str
    type: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    required: bool = False
    unique: bool = False
    external_id: bool = False
    id_lookup: bool = False
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None
    createable: bool = True
    updateable: bool = True
    system: bool = False
    label: str | None = None
    case_sensitive: bool = False
    master_detail: bool = False
    #: ``SetNull``, ``Restrict`` or ``Cascade`` for user reference fields; None otherwise.
    delete_constraint: str | None = None
    child_relationship_name: str | None = None

    @property
    def folds_case(self) -> bool:
        """True when values of this field match case-insensitively (text fields unless ``caseSensitive``)."""
        return self.type in CASE_FOLDED_TYPES and not self.case_sensitive and self.name != "Id"

    @property
    def column(self) -> str:
        """The quoted SQLite column name."""
        return f'"{self.name}"'

    @property
    def sqlite_type(self) -> str:
        """The SQLite column type holding this field's values (INTEGER, REAL or TEXT)."""
        if self.type in ("boolean", "int"):
            return "INTEGER"
        if self.type in ("double", "currency", "percent"):
            return "REAL"
        return "TEXT"

    @property
    def indexed(self) -> bool:
        """True when the field can be used to match records (Id, external id, idLookup)."""
        return self.name == "Id" or self.external_id or self.id_lookup


@dataclass
class ObjectDef:
    """One sObject: its API name, Id key prefix and fields (system fields included)."""

    name: str
    key_prefix: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    _by_lower: dict[str, FieldDef] = field(default_factory=dict, repr=False)
    label: str = ""
    label_plural: str = ""
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    queryable: bool = True

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): f for name, f in self.fields.items()}
        self.label = self.label or label_from_name(self.name)
        self.label_plural = self.label_plural or plural(self.label)

    @property
    def custom(self) -> bool:
        """True for a custom object (its API name ends in ``__c``)."""
        return self.name.endswith("__c")

    @property
    def table(self) -> str:
        """The quoted SQLite table name holding this object's records."""
        return f'"rec_{self.name}"'

    def get_field(self, name: str) -> FieldDef | None:
        """Field by API name, case-insensitively, as Salesforce matches names."""
        return self._by_lower.get(name.lower())

    def relationship(self, relationship_name: str) -> FieldDef | None:
        """The reference field whose relationship name is ``relationship_name`` (case-insensitive)."""
        wanted = relationship_name.lower()
        for f in self.fields.values():
            if f.relationship_name and f.relationship_name.lower() == wanted:
                return f
        return None

    def user_fields(self) -> list[FieldDef]:
        """The fields other than the system fields (Id, IsDeleted, CreatedDate, ...)."""
        return [f for f in self.fields.values() if not f.system]


@dataclass
class Schema:
    """All objects of the emulated org."""

    objects: dict[str, ObjectDef]

    def get_object(self, name: str) -> ObjectDef | None:
        """Object by API name, case-insensitively."""
        wanted = name.lower()
        for obj in self.objects.values():
            if obj.name.lower() == wanted:
                return obj
        return None

    def children_of(self, object_name: str) -> list[tuple[ObjectDef, FieldDef]]:
        """Every user reference field pointing at ``object_name``, with the object holding it."""
        return [(obj, f) for obj in self.objects.values() for f in obj.user_fields()
                if f.type == "reference" and f.reference_to == object_name]


def label_from_name(name: str) -> str:
    """A Salesforce-like label for an API name: ``Invoice_Number__c`` -> "Invoice Number"."""
    base = name.removesuffix("__c").replace("_", " ").strip()
    base = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base)
    if base.endswith(" Id") or (base.endswith("Id") and len(base) > 2 and base[-3].islower()):
        base = base[:-2].rstrip() + " ID"
    return base or name


def plural(label: str) -> str:
    """English plural of a label, good enough for object names."""
    if label.endswith("y") and label[-2:-1] not in ("a", "e", "i", "o", "u"):
        return label[:-1] + "ies"
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    return label + "s"


def _system_fields() -> list[FieldDef]:
    def read_only(name: str, ftype: str, label: str, **spec: Any) -> FieldDef:
        return FieldDef(name, ftype, createable=False, updateable=False, system=True, label=label, **spec)

    return [
        read_only("Id", "id", "ID", length=18, unique=True),  # describe prefixes the object label
        read_only("IsDeleted", "boolean", "Deleted"),
        read_only("CreatedDate", "datetime", "Created Date"),
        read_only("LastModifiedDate", "datetime", "Last Modified Date"),
        read_only("SystemModstamp", "datetime", "System Modstamp"),
        read_only("CreatedById", "reference", "Created By ID", length=18, reference_to="User",
                  relationship_name="CreatedBy"),
        read_only("LastModifiedById", "reference", "Last Modified By ID", length=18, reference_to="User",
                  relationship_name="LastModifiedBy"),
    ]


def _parse_field(object_name: str, name: str, spec: dict[str, Any]) -> FieldDef:
    ftype = spec.get("type")
    if ftype not in FIELD_TYPES or ftype == "id":
        raise SchemaError(f"{object_name}.{name}: unknown field type {ftype!r}")
    if ftype == "reference" and not spec.get("referenceTo"):
        raise SchemaError(f"{object_name}.{name}: a reference field needs referenceTo")
    if ftype == "picklist" and not spec.get("values"):
        raise SchemaError(f"{object_name}.{name}: a picklist field needs values")
    length = spec.get("length")
    if length is None and ftype in ("string", "email", "phone", "url", "picklist"):
        length = 255
    if length is None and ftype == "textarea":
        length = 32768
    if length is None and ftype == "reference":
        length = 18
    master_detail, constraint = _delete_rules(object_name, name, ftype, spec)
    return FieldDef(
        name=name,
        type=ftype,
        length=length,
        precision=spec.get("precision", 18 if ftype in ("int", "double", "currency", "percent") else None),
        scale=spec.get("scale", 0 if ftype == "int" else (2 if ftype in ("currency", "percent") else None)),
        required=bool(spec.get("required", False)) or master_detail,
        unique=bool(spec.get("unique", False)),
        external_id=bool(spec.get("externalId", False)),
        id_lookup=bool(spec.get("idLookup", False)),
        picklist_values=tuple(spec.get("values", ())),
        restricted_picklist=bool(spec.get("restricted", False)),
        reference_to=spec.get("referenceTo"),
        relationship_name=spec.get("relationshipName"),
        createable=bool(spec.get("createable", True)),
        updateable=bool(spec.get("updateable", spec.get("reparentable", False) if master_detail else True)),
        label=spec.get("label"),
        case_sensitive=bool(spec.get("caseSensitive", False)),
        master_detail=master_detail,
        delete_constraint=constraint,
        child_relationship_name=spec.get("childRelationshipName"),
    )


def _delete_rules(object_name: str, name: str, ftype: str, spec: dict[str, Any]) -> tuple[bool, str | None]:
    """``(masterDetail, deleteConstraint)`` of a field spec, checked and defaulted."""
    master_detail = bool(spec.get("masterDetail", False))
    constraint = spec.get("deleteConstraint")
    if ftype != "reference":
        if master_detail or constraint is not None:
            raise SchemaError(
                f"{object_name}.{name}: masterDetail and deleteConstraint need a reference field")
        return False, None
    if constraint is not None and constraint not in DELETE_CONSTRAINTS:
        raise SchemaError(
            f"{object_name}.{name}: deleteConstraint must be one of {', '.join(DELETE_CONSTRAINTS)}")
    if master_detail:
        if constraint not in (None, "Cascade"):
            raise SchemaError(f"{object_name}.{name}: a master-detail field always cascades deletes")
        return True, "Cascade"
    required = bool(spec.get("required", False))
    if constraint == "SetNull" and required:
        raise SchemaError(f"{object_name}.{name}: a required lookup cannot be cleared (SetNull)")
    return False, constraint or ("Restrict" if required else "SetNull")


def parse_schema(document: dict[str, Any]) -> Schema:
    """Build a :class:`Schema` from the JSON document described in this module's docstring."""
    objects_spec = document.get("objects")
    if not isinstance(objects_spec, dict) or not objects_spec:
        raise SchemaError("a schema needs a non-empty 'objects' mapping")
    objects: dict[str, ObjectDef] = {}
    prefixes: set[str] = set()
    for obj_name, obj_spec in objects_spec.items():
        prefix = obj_spec.get("keyPrefix", "")
        if len(prefix) != 3 or not prefix.isalnum():
            raise SchemaError(f"{obj_name}: keyPrefix must be 3 letters or digits")
        if prefix in prefixes or prefix in ("750", "751", "005", "00D"):
            raise SchemaError(f"{obj_name}: keyPrefix {prefix} is already used")
        prefixes.add(prefix)
        fields = {f.name: f for f in _system_fields()}
        for field_name, field_spec in obj_spec.get("fields", {}).items():
            if field_name.lower() in (name.lower() for name in fields):
                raise SchemaError(f"{obj_name}.{field_name}: duplicate or system field")
            fields[field_name] = _parse_field(obj_name, field_name, field_spec)
        objects[obj_name] = ObjectDef(
            obj_name, prefix, fields, label=str(obj_spec.get("label", "")),
            label_plural=str(obj_spec.get("labelPlural", "")),
            createable=bool(obj_spec.get("createable", True)),
            updateable=bool(obj_spec.get("updateable", True)),
            deletable=bool(obj_spec.get("deletable", True)), queryable=bool(obj_spec.get("queryable", True)),
        )
    for obj in objects.values():
        for f in obj.fields.values():
            if f.type == "reference" and not f.system and f.reference_to not in objects:
                raise SchemaError(f"{obj.name}.{f.name}: referenceTo {f.reference_to!r} is not in the schema")
    return Schema(objects)


def load_schema(path: str | Path | None = None) -> Schema:
    """Load a schema file; without a path, the default schema shipped with the emulator."""
    if path is None:
        text = resources.files("airflow_provider_sfbulk.emulator").joinpath("default_schema.json").read_text()
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise SchemaError(f"schema file is not valid JSON: {err}") from err
    return parse_schema(document)


def create_tables(conn: sqlite3.Connection, schema: Schema) -> None:
    """Create (if missing) one table per object, with lookup indexes on Id-like and reference fields."""
    for obj in schema.objects.values():
        columns = ", ".join(
            f"{f.column} {f.sqlite_type}" + (" PRIMARY KEY" if f.name == "Id" else "")
            for f in obj.fields.values()
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS {obj.table} ({columns})")
        for f in obj.fields.values():
            if f.name != "Id" and (f.unique or f.external_id or f.id_lookup or f.type == "reference"):
                conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "idx_{obj.name}_{f.name}" ON {obj.table} ({f.column})'
                )
                if f.folds_case:  # case-insensitive matching (records.py) looks values up through this
                    conn.execute(f'CREATE INDEX IF NOT EXISTS "idx_{obj.name}_{f.name}_nocase" '
                                 f'ON {obj.table} ({f.column} COLLATE NOCASE)')


def format_value(fdef: FieldDef, stored: Any) -> str:
    """Render a stored value as Salesforce writes it in query result CSV (before quoting)."""
    if stored is None:
        return ""
    if fdef.type == "boolean":
        return "true" if stored else "false"
    if fdef.type == "int":
        return str(int(stored))
    if fdef.type in ("double", "currency", "percent"):
        value = float(stored)
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return f"{int(value)}.0"
        return repr(value)
    return str(stored)
