"""The sObject describe: which fields an object has and what may be written to each (pure).

``GET /services/data/vXX.X/sobjects/{object}/describe`` answers with the object's properties and a
``fields`` list. Only what a load needs to check its CSV header is kept: the field's name and type,
whether it may be set on create and on update, whether it may be empty and is defaulted on create,
whether it is an external id or an id lookup (and so can match an upsert or a parent reference), and
for references the relationship name and the objects it points to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_sfbulk.exceptions import SalesforceBulkProtocolError

__all__ = ["FieldDescribe", "ObjectDescribe", "parse_describe"]


@dataclass(frozen=True)
class FieldDescribe:
    """One field of an object, as far as loading it is concerned."""

    name: str
    type: str
    createable: bool
    updateable: bool
    nillable: bool
    defaulted_on_create: bool
    external_id: bool
    id_lookup: bool
    relationship_name: str | None
    reference_to: tuple[str, ...]

    @property
    def required_on_create(self) -> bool:
        """True when an insert must give a value: createable, not nillable, not defaulted, not a checkbox."""
        return (
            self.createable
            and not self.nillable
            and not self.defaulted_on_create
            and self.type != "boolean"
        )


@dataclass(frozen=True)
class ObjectDescribe:
    """An object's name, whether rows may be created, updated and deleted, and its fields."""

    name: str
    createable: bool
    updateable: bool
    deletable: bool
    fields: tuple[FieldDescribe, ...]

    def field(self, name: str) -> FieldDescribe | None:
        """The field called ``name`` (API names are case-insensitive), or ``None``."""
        wanted = name.casefold()
        return next((field for field in self.fields if field.name.casefold() == wanted), None)

    def relationship(self, name: str) -> FieldDescribe | None:
        """The reference field whose relationship is called ``name`` (``Account`` of ``AccountId``)."""
        wanted = name.casefold()
        return next(
            (
                field
                for field in self.fields
                if field.relationship_name is not None and field.relationship_name.casefold() == wanted
            ),
            None,
        )


def _flag(document: Mapping[str, Any], key: str) -> bool:
    return bool(document.get(key, False))


def parse_describe(document: Any) -> ObjectDescribe:
    """Read a describe answer.

    :raises SalesforceBulkProtocolError: the answer is not an object with a ``fields`` list.
    """
    if not isinstance(document, dict) or not isinstance(document.get("fields"), list):
        raise SalesforceBulkProtocolError("the describe answer has no fields list")
    fields = []
    for item in document["fields"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise SalesforceBulkProtocolError("a field of the describe answer has no name")
        fields.append(
            FieldDescribe(
                name=item["name"],
                type=str(item.get("type", "")),
                createable=_flag(item, "createable"),
                updateable=_flag(item, "updateable"),
                nillable=_flag(item, "nillable"),
                defaulted_on_create=_flag(item, "defaultedOnCreate"),
                external_id=_flag(item, "externalId"),
                id_lookup=_flag(item, "idLookup"),
                relationship_name=item.get("relationshipName") or None,
                reference_to=tuple(item.get("referenceTo") or ()),
            )
        )
    return ObjectDescribe(
        name=str(document.get("name", "")),
        createable=_flag(document, "createable"),
        updateable=_flag(document, "updateable"),
        deletable=_flag(document, "deletable"),
        fields=tuple(fields),
    )
