"""Parsing of uploaded CSV values into the stored form of :mod:`airflow_provider_sfbulk.emulator.schema`.

One parser per field is built once per job (:func:`make_parser`) and then called for every non-empty,
non-``#N/A`` value of that column. A parser returns the stored value (see the table in the schema
module) or raises :class:`RowError` carrying Salesforce's status code, message and field list, which the
ingest code renders as ``sf__Error`` with :meth:`RowError.render`.

Salesforce prints field *labels* in these messages (``Account Name: data value too large: ...``); the
emulator's schema has no labels, so the API name stands in for the label.

Accepted formats (Salesforce's "Valid Date Format in Records" and "Prepare CSV Files" pages):

* boolean: ``true`` / ``false`` in any case, and ``1`` / ``0`` (the import tools document 1/0 for
  checkboxes; accepting them is the lenient choice);
* int: optional sign and digits, at most ``precision`` digits;
* double, currency, percent: decimal or scientific notation with ``.`` as separator, at most
  ``precision - scale`` integer digits, rounded half-up to ``scale`` decimals;
* date: ``yyyy-MM-dd`` or ``yyyy-MM-ddZ``;
* datetime: ``yyyy-MM-ddTHH:mm:ss[.SSS](Z|+HH:mm|+HHmm)``, stored in UTC;
* reference: a 15- or 18-character id with the key prefix of the referenced object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from airflow_provider_sfbulk.emulator.schema import FieldDef, Schema
from airflow_provider_sfbulk.protocol.ids import is_valid_id, to_18

#: Uploaded value that explicitly sets a field to null.
NULL_MARKER = "#N/A"

_INT_RE = re.compile(r"[+-]?\d+\Z")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})Z?\Z")
_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(?:(Z)|([+-])(\d{2}):?(\d{2}))\Z"
)
_EMAIL_RE = re.compile(
    r"[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+\Z")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class RowError(Exception):
    """A row-level failure as Salesforce reports it in ``failedResults``."""

    def __init__(self, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = tuple(fields)

    def render(self) -> str:
        """The ``sf__Error`` text: ``CODE:message:field1,field2 --`` (``CODE:message:--`` without fields)."""
        fields = ",".join(self.fields)
        return f"{self.code}:{self.message}:{fields + ' ' if fields else ''}--"


def format_datetime(moment: datetime) -> str:
    """Stored form of a datetime: ``YYYY-MM-DDTHH:MM:SS.sssZ`` in UTC."""
    utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _type_error(fdef: FieldDef, value: str) -> RowError:
    return RowError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{fdef.name}: value not of required type: {value}",
                    [fdef.name])


def _range_error(fdef: FieldDef, value: str) -> RowError:
    return RowError("NUMBER_OUTSIDE_VALID_RANGE",
                    f"{fdef.name}: value outside of valid range on numeric field: {value}", [fdef.name])


def _text_parser(fdef: FieldDef) -> Callable[[str], Any]:
    limit = fdef.length

    def parse(value: str) -> str:
        if limit is not None and len(value) > limit:
            raise RowError("STRING_TOO_LONG",
                           f"{fdef.name}: data value too large: {value} (max length={limit})",
                           [fdef.name])
        return value

    return parse


def _email_parser(fdef: FieldDef) -> Callable[[str], Any]:
    check_length = _text_parser(fdef)

    def parse(value: str) -> str:
        check_length(value)
        if not _EMAIL_RE.match(value):
            raise RowError("INVALID_EMAIL_ADDRESS", f"{fdef.name}: invalid email address: {value}",
                           [fdef.name])
        return value

    return parse


def _picklist_parser(fdef: FieldDef) -> Callable[[str], Any]:
    check_length = _text_parser(fdef)
    allowed = frozenset(fdef.picklist_values)

    def parse(value: str) -> str:
        if fdef.restricted_picklist and value not in allowed:
            raise RowError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                           f"{fdef.name}: bad value for restricted picklist field: {value}", [fdef.name])
        return check_length(value)

    return parse


def _boolean_parser(fdef: FieldDef) -> Callable[[str], Any]:
    def parse(value: str) -> int:
        lowered = value.lower()
        if lowered in _TRUE:
            return 1
        if lowered in _FALSE:
            return 0
        raise _type_error(fdef, value)

    return parse


def _int_parser(fdef: FieldDef) -> Callable[[str], Any]:
    digits = fdef.precision or 18

    def parse(value: str) -> int:
        if not _INT_RE.match(value):
            raise _type_error(fdef, value)
        number = int(value)
        if len(str(abs(number))) > digits:
            raise _range_error(fdef, value)
        return number

    return parse


def _decimal_parser(fdef: FieldDef) -> Callable[[str], Any]:
    precision = fdef.precision or 18
    scale = fdef.scale
    int_digits = precision - (scale or 0)
    quantum = Decimal(1).scaleb(-scale) if scale is not None else None

    def parse(value: str) -> float:
        if not _NUMBER_RE.match(value):
            raise _type_error(fdef, value)
        try:
            number = Decimal(value)
            if quantum is not None:
                number = number.quantize(quantum, rounding=ROUND_HALF_UP)
        except InvalidOperation as err:  # exponent far out of range
            raise _range_error(fdef, value) from err
        whole = abs(number.to_integral_value(rounding=ROUND_DOWN))
        if whole and len(str(whole)) > int_digits:
            raise _range_error(fdef, value)
        return float(number)

    return parse


def _date_parser(fdef: FieldDef) -> Callable[[str], Any]:
    def parse(value: str) -> str:
        match = _DATE_RE.match(value)
        if not match:
            raise _type_error(fdef, value)
        try:
            parsed = date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError as err:
            raise _type_error(fdef, value) from err
        return parsed.isoformat()

    return parse


def _datetime_parser(fdef: FieldDef) -> Callable[[str], Any]:
    def parse(value: str) -> str:
        match = _DATETIME_RE.match(value)
        if not match:
            raise _type_error(fdef, value)
        year, month, day, hour, minute, second, millis, zulu, sign, off_h, off_m = match.groups()
        try:
            offset = timedelta(0)
            if not zulu:
                offset = timedelta(hours=int(off_h), minutes=int(off_m))
                if offset >= timedelta(hours=24):
                    raise ValueError("offset out of range")
                if sign == "-":
                    offset = -offset
            millis = (millis or "0").ljust(3, "0")
            moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                              int(millis) * 1000, tzinfo=timezone(offset))
        except ValueError as err:
            raise _type_error(fdef, value) from err
        if zulu:  # already UTC: the stored text is the input, normalised
            return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{millis}Z"
        return format_datetime(moment)

    return parse


def _reference_parser(fdef: FieldDef, schema: Schema) -> Callable[[str], Any]:
    target = schema.get_object(fdef.reference_to or "")
    prefix = target.key_prefix if target else None

    def parse(value: str) -> str:
        if not is_valid_id(value):
            raise RowError("MALFORMED_ID", f"{fdef.name}: id value of incorrect type: {value}", [fdef.name])
        if prefix is not None and value[:3] != prefix:
            raise RowError("FIELD_INTEGRITY_EXCEPTION", f"{fdef.name}: id value of incorrect type: {value}",
                           [fdef.name])
        return to_18(value)

    return parse


def make_parser(fdef: FieldDef, schema: Schema) -> Callable[[str], Any]:
    """Build the parser turning a non-empty uploaded value of ``fdef`` into its stored form."""
    ftype = fdef.type
    if ftype == "email":
        return _email_parser(fdef)
    if ftype == "picklist":
        return _picklist_parser(fdef)
    if ftype == "boolean":
        return _boolean_parser(fdef)
    if ftype == "int":
        return _int_parser(fdef)
    if ftype in ("double", "currency", "percent"):
        return _decimal_parser(fdef)
    if ftype == "date":
        return _date_parser(fdef)
    if ftype == "datetime":
        return _datetime_parser(fdef)
    if ftype in ("reference", "id"):
        return _reference_parser(fdef, schema)
    return _text_parser(fdef)
