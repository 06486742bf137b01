"""Value parsing of uploaded CSV text into the emulator's stored form."""

from __future__ import annotations

import pytest

from airflow_provider_sfbulk.emulator.schema import load_schema
from airflow_provider_sfbulk.emulator.values import RowError, make_parser
from airflow_provider_sfbulk.protocol.ids import make_id

SCHEMA = load_schema()


def parse(object_name: str, field_name: str, text: str):
    obj = SCHEMA.get_object(object_name)
    assert obj is not None
    fdef = obj.get_field(field_name)
    assert fdef is not None
    return make_parser(fdef, SCHEMA)(text)


def error_of(object_name: str, field_name: str, text: str) -> str:
    with pytest.raises(RowError) as caught:
        parse(object_name, field_name, text)
    return caught.value.render()


def test_render_with_and_without_fields():
    assert RowError("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"]).render() == (
        "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --"
    )
    assert RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id").render() == (
        "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:--"
    )
    assert RowError("X", "m", ["A", "B"]).render() == "X:m:A,B --"


def test_string_length():
    assert parse("Account", "AccountNumber", "x" * 40) == "x" * 40
    assert error_of("Account", "AccountNumber", "x" * 41) == (
        f"STRING_TOO_LONG:AccountNumber: data value too large: {'x' * 41} (max length=40):AccountNumber --"
    )


def test_email():
    assert parse("Contact", "Email", "jane.doe+tag@example.co.uk") == "jane.doe+tag@example.co.uk"
    for bad in ("plainaddress", "a@b", "a b@example.com", "@example.com", "a@@example.com"):
        assert error_of("Contact", "Email", bad) == (
            f"INVALID_EMAIL_ADDRESS:Email: invalid email address: {bad}:Email --"
        )


def test_email_too_long_reports_length_first():
    value = "a" * 80 + "@example.com"
    assert error_of("Contact", "Email", value).startswith("STRING_TOO_LONG:")


def test_restricted_and_open_picklists():
    assert parse("Account", "Rating", "Hot") == "Hot"
    assert error_of("Account", "Rating", "hot") == (
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:Rating: bad value for restricted picklist field: "
        "hot:Rating --"
    )
    assert parse("Account", "Industry", "Space Mining") == "Space Mining"


@pytest.mark.parametrize(("text", "stored"), [("true", 1), ("TRUE", 1), ("False", 0), ("1", 1), ("0", 0)])
def test_boolean_values(text, stored):
    assert parse("Account", "Active__c", text) == stored


@pytest.mark.parametrize("text", ["yes", "t", "2", "truee"])
def test_boolean_rejects(text):
    assert error_of("Account", "Active__c", text) == (
        f"INVALID_TYPE_ON_FIELD_IN_RECORD:Active__c: value not of required type: {text}:Active__c --"
    )


def test_int_parse_type_and_range():
    assert parse("Account", "NumberOfEmployees", "-42") == -42
    assert parse("Account", "NumberOfEmployees", "99999999") == 99999999
    assert error_of("Account", "NumberOfEmployees", "12.5").startswith("INVALID_TYPE_ON_FIELD_IN_RECORD:")
    assert error_of("Account", "NumberOfEmployees", "1,000").startswith("INVALID_TYPE_ON_FIELD_IN_RECORD:")
    assert error_of("Account", "NumberOfEmployees", "100000000") == (
        "NUMBER_OUTSIDE_VALID_RANGE:NumberOfEmployees: value outside of valid range on numeric field: "
        "100000000:NumberOfEmployees --"
    )


def test_currency_rounds_to_scale_and_checks_integer_digits():
    assert parse("Account", "AnnualRevenue", "10.005") == 10.01
    assert parse("Account", "AnnualRevenue", "1.5e3") == 1500.0
    assert parse("Account", "AnnualRevenue", "-.5") == -0.5
    assert parse("Account", "AnnualRevenue", "9" * 16) == float("9" * 16)
    assert error_of("Account", "AnnualRevenue", "9" * 17).startswith("NUMBER_OUTSIDE_VALID_RANGE:")
    assert error_of("Account", "AnnualRevenue", "1e400").startswith("NUMBER_OUTSIDE_VALID_RANGE:")
    for bad in ("abc", "1.2.3", "NaN", "inf", "", " 5"):
        assert error_of("Account", "AnnualRevenue", bad).startswith("INVALID_TYPE_ON_FIELD_IN_RECORD:")


def test_percent_precision_three():
    assert parse("Opportunity", "Probability", "100") == 100.0
    assert error_of("Opportunity", "Probability", "1000").startswith("NUMBER_OUTSIDE_VALID_RANGE:")


def test_dates():
    assert parse("Account", "Customer_Since__c", "2024-02-29") == "2024-02-29"
    assert parse("Account", "Customer_Since__c", "2024-02-29Z") == "2024-02-29"
    for bad in ("2023-02-29", "2024-2-1", "02/01/2024", "2024-01-01T00:00:00Z", "2024-13-01"):
        assert error_of("Account", "Customer_Since__c", bad) == (
            f"INVALID_TYPE_ON_FIELD_IN_RECORD:Customer_Since__c: value not of required type: {bad}:"
            "Customer_Since__c --"
        )


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("2024-05-01T10:20:30Z", "2024-05-01T10:20:30.000Z"),
        ("2024-05-01T10:20:30.5Z", "2024-05-01T10:20:30.500Z"),
        ("2024-05-01T10:20:30.123Z", "2024-05-01T10:20:30.123Z"),
        ("2024-05-01T10:20:30.123+02:00", "2024-05-01T08:20:30.123Z"),
        ("2024-05-01T01:20:30-0530", "2024-05-01T06:50:30.000Z"),
        ("2024-01-01T00:30:00+01:00", "2023-12-31T23:30:00.000Z"),
    ],
)
def test_datetimes_are_stored_in_utc(text, stored):
    assert parse("Contact", "Last_Contacted__c", text) == stored


@pytest.mark.parametrize(
    "text", ["2024-05-01 10:20:30Z", "2024-05-01T10:20:30", "2024-05-01T25:00:00Z",
             "2024-05-01T10:20:30.1234Z", "2024-05-01T10:20:30+24:00", "2024-05-01"],
)
def test_datetime_rejects(text):
    assert error_of("Contact", "Last_Contacted__c", text).startswith("INVALID_TYPE_ON_FIELD_IN_RECORD:")


def test_reference_ids():
    account_id = make_id("001", "5fE", 7)
    assert parse("Contact", "AccountId", account_id) == account_id
    assert parse("Contact", "AccountId", account_id[:15]) == account_id
    assert error_of("Contact", "AccountId", "001nope") == (
        "MALFORMED_ID:AccountId: id value of incorrect type: 001nope:AccountId --"
    )
    broken_checksum = account_id[:15] + "AAA" if account_id[15:] != "AAA" else account_id[:15] + "BBB"
    assert error_of("Contact", "AccountId", broken_checksum).startswith("MALFORMED_ID:")
    contact_id = make_id("003", "5fE", 7)
    assert error_of("Contact", "AccountId", contact_id) == (
        f"FIELD_INTEGRITY_EXCEPTION:AccountId: id value of incorrect type: {contact_id}:AccountId --"
    )
