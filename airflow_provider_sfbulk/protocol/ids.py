"""Salesforce record ids: 15-character case-sensitive ids and their 18-character checksummed form."""

from __future__ import annotations

import re

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")


def id_checksum(id15: str) -> str:
    """Return the three checksum characters Salesforce appends to a 15-character id."""
    if len(id15) != 15:
        raise ValueError(f"a Salesforce id checksum needs 15 characters, got {len(id15)}")
    suffix = []
    for chunk_start in range(0, 15, 5):
        bits = 0
        for position, char in enumerate(id15[chunk_start : chunk_start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix.append(_CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def to_18(record_id: str) -> str:
    """Return the 18-character form of a 15- or 18-character id."""
    if len(record_id) == 18:
        return record_id[:15] + id_checksum(record_id[:15])
    return record_id + id_checksum(record_id)


def is_valid_id(value: str) -> bool:
    """True when ``value`` has the shape of a 15- or 18-character id with a correct checksum."""
    if not _ID_RE.match(value):
        return False
    return len(value) == 15 or value[15:] == id_checksum(value[:15])


def make_id(key_prefix: str, pod: str, sequence: int) -> str:
    """Build an 18-character id: 3-char key prefix, 3-char pod/instance part, 9-char base62 sequence."""
    if len(key_prefix) != 3 or len(pod) != 3:
        raise ValueError("key prefix and pod must be 3 characters each")
    if sequence < 0:
        raise ValueError("sequence must not be negative")
    digits = []
    for _ in range(9):
        sequence, rest = divmod(sequence, 62)
        digits.append(_BASE62[rest])
    if sequence:
        raise ValueError("sequence does not fit in 9 base62 digits")
    id15 = key_prefix + pod + "".join(reversed(digits))
    return id15 + id_checksum(id15)
