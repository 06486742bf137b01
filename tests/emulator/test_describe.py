"""REST sObject describe served from the schema file, over loopback HTTP."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_provider_sfbulk.emulator.testing import ApiSession

NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def fields_by_name(body: dict) -> dict[str, dict]:
    return {f["name"]: f for f in body["fields"]}


def test_account_describe_object_properties(emulator):
    body = ApiSession(emulator).get("/sobjects/Account/describe").json()
    assert body["name"] == "Account"
    assert body["label"] == "Account"
    assert body["labelPlural"] == "Accounts"
    assert body["keyPrefix"] == "001"
    assert (body["createable"], body["updateable"], body["deletable"],
            body["queryable"]) == (True, True, True, True)
    assert body["custom"] is False
    assert body["urls"]["describe"] == "/services/data/v60.0/sobjects/Account/describe"
    names = [f["name"] for f in body["fields"]]
    assert names[:7] == ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp",
                         "CreatedById", "LastModifiedById"]
    assert "External_Id__c" in names


def test_standard_fields_look_like_salesforce(emulator):
    fields = fields_by_name(ApiSession(emulator).get("/sobjects/Account/describe").json())
    id_field = fields["Id"]
    assert {k: id_field[k] for k in ("type", "label", "length", "createable", "updateable", "nillable",
                                     "idLookup", "unique", "externalId", "defaultedOnCreate", "referenceTo",
                                     "relationshipName", "caseSensitive")} == {
        "type": "id", "label": "Account ID", "length": 18, "createable": False, "updateable": False,
        "nillable": False, "idLookup": True, "unique": False, "externalId": False, "defaultedOnCreate": True,
        "referenceTo": [], "relationshipName": None, "caseSensitive": False}
    for name, label, ftype in (("CreatedDate", "Created Date", "datetime"),
                               ("SystemModstamp", "System Modstamp", "datetime"),
                               ("IsDeleted", "Deleted", "boolean")):
        f = fields[name]
        assert (f["label"], f["type"], f["createable"], f["updateable"], f["nillable"],
                f["defaultedOnCreate"], f["length"]) == (label, ftype, False, False, False, True, 0)
    created_by = fields["CreatedById"]
    assert (created_by["type"], created_by["referenceTo"], created_by["relationshipName"],
            created_by["label"]) == ("reference", ["User"], "CreatedBy", "Created By ID")
    name = fields["Name"]
    assert (name["label"], name["type"], name["length"], name["nillable"], name["createable"],
            name["updateable"], name["defaultedOnCreate"],
            name["nameField"]) == ("Account Name", "string", 255, False, True, True, False, True)


def test_custom_and_reference_fields(emulator):
    fields = fields_by_name(ApiSession(emulator).get("/sobjects/Account/describe").json())
    ext = fields["External_Id__c"]
    assert (ext["externalId"], ext["idLookup"], ext["unique"], ext["caseSensitive"], ext["custom"],
            ext["length"], ext["nillable"]) == (True, True, True, False, True, 50, True)
    active = fields["Active__c"]
    assert (active["type"], active["nillable"], active["defaultedOnCreate"], active["length"]) == (
        "boolean", False, True, 0)
    parent = fields["ParentId"]
    assert (parent["referenceTo"], parent["relationshipName"], parent["label"], parent["cascadeDelete"],
            parent["restrictedDelete"]) == (["Account"], "Parent", "Parent Account ID", False, False)
    rating = fields["Rating"]
    assert [v["value"] for v in rating["picklistValues"]] == ["Hot", "Warm", "Cold"]
    assert rating["restrictedPicklist"] is True
    revenue = fields["AnnualRevenue"]
    assert (revenue["type"], revenue["precision"], revenue["scale"],
            revenue["length"]) == ("currency", 18, 2, 0)


def test_child_relationships(emulator):
    body = ApiSession(emulator).get("/sobjects/Account/describe").json()
    children = {(c["childSObject"], c["field"]): c for c in body["childRelationships"]}
    assert children[("Contact", "AccountId")] == {
        "cascadeDelete": True, "childSObject": "Contact", "deprecatedAndHidden": False, "field": "AccountId",
        "junctionIdListNames": [], "junctionReferenceTo": [], "relationshipName": "Contacts",
        "restrictedDelete": False}
    assert children[("Invoice__c", "Account__c")]["relationshipName"] == "Invoices__r"
    assert children[("Invoice__c", "Account__c")]["cascadeDelete"] is False
    assert children[("Account", "ParentId")]["relationshipName"] == "ChildAccounts"


def test_object_name_is_case_insensitive_and_custom_objects_work(emulator):
    api = ApiSession(emulator)
    body = api.get("/sobjects/invoice__C/describe").json()
    assert body["name"] == "Invoice__c"
    assert body["custom"] is True
    assert body["label"] == "Invoice"
    number = fields_by_name(body)["Invoice_Number__c"]
    assert (number["label"], number["nillable"], number["unique"]) == ("Invoice Number", False, True)


def test_unknown_object_and_paths(emulator):
    api = ApiSession(emulator)
    for path in ("/sobjects/Nope__c/describe", "/sobjects/Nope__c", "/sobjects/Account/layouts",
                 "/sobjects/Account/describe/extra"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND


def test_describe_needs_a_session(emulator):
    response = requests.get(f"{emulator.base_url}/services/data/v60.0/sobjects/Account/describe", timeout=10)
    assert response.status_code == 401
    assert response.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert ApiSession(emulator).post("/sobjects/Account/describe", json={}).status_code == 405


def test_global_and_basic_info(emulator):
    api = ApiSession(emulator)
    everything = api.get("/sobjects").json()
    assert [o["name"] for o in everything["sobjects"]] == ["Account", "Contact", "Opportunity", "Invoice__c"]
    assert everything["encoding"] == "UTF-8"
    basic = api.get("/sobjects/contact").json()
    assert basic["objectDescribe"]["name"] == "Contact"
    assert basic["objectDescribe"]["keyPrefix"] == "003"
    assert basic["recentItems"] == []


def test_conditional_requests(emulator):
    api = ApiSession(emulator)
    first = api.get("/sobjects/Account/describe")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag.startswith('"')
    assert api.get("/sobjects/Account/describe", headers={"If-None-Match": etag}).status_code == 304
    assert api.get("/sobjects/Account/describe", headers={"If-Modified-Since": modified}).status_code == 304
    assert api.get("/sobjects/Account/describe",
                   headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status_code == 200
    assert api.get("/sobjects/Account/describe", headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("spec", [
    {"caseSensitive": True, "createable": False, "label": "Code"},
])
def test_schema_keys_reach_describe(emulator_factory, tmp_path, spec):
    schema = {"objects": {
        "Thing__c": {"keyPrefix": "a05", "labelPlural": "Things Galore", "deletable": False, "fields": {
            "Code__c": {"type": "string", "length": 20, "externalId": True, "unique": True, **spec},
            "Owner__c": {"type": "reference", "referenceTo": "Thing__c", "relationshipName": "Owner__r",
                         "masterDetail": True},
            "Peer__c": {"type": "reference", "referenceTo": "Thing__c", "relationshipName": "Peer__r",
                        "deleteConstraint": "Restrict"}}}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    server = emulator_factory(schema_path=path)
    body = ApiSession(server).get("/sobjects/Thing__c/describe").json()
    assert (body["labelPlural"], body["deletable"]) == ("Things Galore", False)
    fields = fields_by_name(body)
    code = fields["Code__c"]
    assert (code["caseSensitive"], code["createable"], code["label"]) == (True, False, "Code")
    owner = fields["Owner__c"]
    assert (owner["nillable"], owner["updateable"], owner["cascadeDelete"], owner["relationshipOrder"]) == (
        False, False, True, 0)
    peer = fields["Peer__c"]
    assert (peer["nillable"], peer["restrictedDelete"], peer["cascadeDelete"], peer["relationshipOrder"]) == (
        True, True, False, None)
    relations = {c["field"]: c for c in body["childRelationships"]}
    assert relations["Owner__c"]["relationshipName"] == "Things__r"
    assert relations["Peer__c"]["restrictedDelete"] is True


@pytest.mark.parametrize(("field", "message"), [
    ({"type": "string", "deleteConstraint": "Cascade"}, "need a reference field"),
    ({"type": "reference", "referenceTo": "T__c", "deleteConstraint": "Explode"}, "deleteConstraint must be"),
    ({"type": "reference", "referenceTo": "T__c", "masterDetail": True, "deleteConstraint": "Restrict"},
     "always cascades"),
    ({"type": "reference", "referenceTo": "T__c", "required": True, "deleteConstraint": "SetNull"},
     "cannot be cleared"),
])
def test_bad_delete_rules_are_refused(field, message):
    from airflow_provider_sfbulk.emulator.schema import SchemaError, parse_schema

    with pytest.raises(SchemaError, match=message):
        parse_schema({"objects": {"T__c": {"keyPrefix": "a07", "fields": {"F__c": field}}}})


def test_delete_rule_defaults():
    from airflow_provider_sfbulk.emulator.schema import parse_schema

    schema = parse_schema({"objects": {"T__c": {"keyPrefix": "a07", "fields": {
        "Opt__c": {"type": "reference", "referenceTo": "T__c"},
        "Req__c": {"type": "reference", "referenceTo": "T__c", "required": True},
        "Md__c": {"type": "reference", "referenceTo": "T__c", "masterDetail": True, "reparentable": True},
        "Text__c": {"type": "string"}}}}})
    fields = schema.objects["T__c"].fields
    assert [fields[n].delete_constraint for n in ("Opt__c", "Req__c", "Md__c", "Text__c")] == [
        "SetNull", "Restrict", "Cascade", None]
    assert (fields["Md__c"].required, fields["Md__c"].updateable) == (True, True)
