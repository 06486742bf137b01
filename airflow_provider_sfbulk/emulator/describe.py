"""REST sObject describe (``GET /services/data/vXX.X/sobjects[/{Object}[/describe]]``) from the schema file.

Field and object properties follow Salesforce's ``DescribeSObjectResult`` / ``Field`` (REST API
Developer Guide, "sObject Describe"; SOAP API "describeSObjects()"): only the properties a data loader
needs are emitted, with the values a real org gives standard fields:

* ``Id``: type ``id``, label "<Object> ID", ``idLookup`` true, not createable, updateable or nillable,
  ``defaultedOnCreate`` true;
* ``IsDeleted``, ``CreatedDate``, ``CreatedById``, ``LastModifiedDate``, ``LastModifiedById``,
  ``SystemModstamp``: read-only, not nillable, ``defaultedOnCreate`` true; the two user references
  have ``referenceTo`` ``["User"]`` and relationship names ``CreatedBy`` / ``LastModifiedBy``;
* checkboxes are not nillable and ``defaultedOnCreate`` (they default to false), required fields are
  not nillable, external id fields are ``idLookup``; ``length`` is the text length for text-like
  types and 0 for others (as Salesforce reports it), ``byteLength`` three bytes per character;
* reference fields carry ``cascadeDelete`` / ``restrictedDelete`` from their ``deleteConstraint``;
  the parent lists them in ``childRelationships``.

Best guesses (not checked against a live org): the exact labels of derived names, ``soapType`` of
text-like types (``xsd:string``) and the ``childRelationships`` name derived when the schema gives none.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_sfbulk.emulator.schema import FieldDef, ObjectDef, Schema, label_from_name, plural

_SOAP_TYPES = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean", "int": "xsd:int",
               "double": "xsd:double", "currency": "xsd:double", "percent": "xsd:double", "date": "xsd:date",
               "datetime": "xsd:dateTime"}
_TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "id", "reference"})


def _object_urls(obj: ObjectDef, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}


def object_summary(obj: ObjectDef, version: str) -> dict[str, Any]:
    """One entry of ``GET /sobjects`` (describeGlobal) and the ``objectDescribe`` of ``GET /sobjects/X``."""
    return {
        "name": obj.name, "label": obj.label, "labelPlural": obj.label_plural, "keyPrefix": obj.key_prefix,
        "custom": obj.custom, "createable": obj.createable, "updateable": obj.updateable,
        "deletable": obj.deletable, "queryable": obj.queryable, "retrieveable": obj.queryable,
        "searchable": obj.queryable, "undeletable": obj.deletable, "replicateable": obj.queryable,
        "urls": _object_urls(obj, version),
    }


def describe_global(schema: Schema, version: str) -> dict[str, Any]:
    """``GET /services/data/vXX.X/sobjects``."""
    return {"encoding": "UTF-8", "maxBatchSize": 200,
            "sobjects": [object_summary(obj, version) for obj in schema.objects.values()]}


def describe_object(schema: Schema, obj: ObjectDef, version: str) -> dict[str, Any]:
    """``GET /services/data/vXX.X/sobjects/{Object}/describe``."""
    return {
        **object_summary(obj, version),
        "childRelationships": _child_relationships(schema, obj),
        "fields": [describe_field(obj, f) for f in obj.fields.values()],
    }


def child_relationship_name(child: ObjectDef, fdef: FieldDef) -> str:
    """The parent's name for the list of ``child`` records pointing at it through ``fdef``."""
    if fdef.child_relationship_name:
        return fdef.child_relationship_name
    name = plural(label_from_name(child.name)).replace(" ", "")
    return f"{name}__r" if child.custom or fdef.name.endswith("__c") else name


def _child_relationships(schema: Schema, obj: ObjectDef) -> list[dict[str, Any]]:
    return [
        {"cascadeDelete": fdef.delete_constraint == "Cascade", "childSObject": child.name,
         "deprecatedAndHidden": False, "field": fdef.name, "junctionIdListNames": [],
         "junctionReferenceTo": [], "relationshipName": child_relationship_name(child, fdef),
         "restrictedDelete": fdef.delete_constraint == "Restrict"}
        for child, fdef in schema.children_of(obj.name)
    ]


def _nillable(fdef: FieldDef) -> bool:
    return not (fdef.system or fdef.required or fdef.type == "boolean")


def _label(obj: ObjectDef, fdef: FieldDef) -> str:
    if fdef.name == "Id":
        return f"{obj.label} ID"
    return fdef.label or label_from_name(fdef.name)


def describe_field(obj: ObjectDef, fdef: FieldDef) -> dict[str, Any]:
    """One element of ``fields``."""
    text = fdef.type in _TEXT_TYPES
    length = (fdef.length or 0) if text else 0
    is_id = fdef.name == "Id"
    numeric = fdef.type in ("double", "currency", "percent")
    reference_to = [fdef.reference_to] if fdef.type == "reference" and fdef.reference_to else []
    return {
        "name": fdef.name,
        "label": _label(obj, fdef),
        "type": fdef.type,
        "soapType": _SOAP_TYPES.get(fdef.type, "xsd:string"),
        "length": length,
        "byteLength": length * 3,
        "digits": (fdef.precision or 0) if fdef.type == "int" else 0,
        "precision": (fdef.precision or 0) if numeric else 0,
        "scale": (fdef.scale or 0) if numeric else 0,
        "custom": fdef.name.endswith("__c"),
        "nameField": fdef.name == "Name",
        "createable": fdef.createable and not fdef.system,
        "updateable": fdef.updateable and not fdef.system,
        "nillable": _nillable(fdef),
        "defaultedOnCreate": fdef.system or fdef.type == "boolean",
        "unique": fdef.unique and not is_id,
        "caseSensitive": fdef.case_sensitive and fdef.type not in ("id", "reference"),
        "externalId": fdef.external_id,
        "idLookup": is_id or fdef.id_lookup or fdef.external_id,
        "filterable": fdef.type != "textarea",
        "sortable": fdef.type != "textarea",
        "calculated": False,
        "autoNumber": False,
        "referenceTo": reference_to,
        "relationshipName": fdef.relationship_name if reference_to else None,
        "relationshipOrder": 0 if fdef.master_detail else None,
        "cascadeDelete": fdef.delete_constraint == "Cascade",
        "restrictedDelete": fdef.delete_constraint == "Restrict",
        "picklistValues": [{"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                           for v in fdef.picklist_values],
        "restrictedPicklist": fdef.restricted_picklist,
    }
