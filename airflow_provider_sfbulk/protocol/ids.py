"""Salesforce record ids: 15-character case-sensitive ids and their 18-character checksummed form."""

from __future__ import annotations

import re

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UPPER_FLAGS = str.maketrans({chr(code): "1" if "A" <= chr(code) <= "Z" else "0" for code in range(128)})
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")


def id_checksum(id15: str) -> str:
    """Return the three checksum characters Salesforce appends to a 15-character id."""
    if len(id15) != 15:
        raise ValueError(f"a Salesforce id checksum needs 15 characters, got {len(id15)}")
    if not id15.isascii():  # only A-Z count, and no other character is one of them
        id15 = "".join(char if char.isascii() else "0" for char in id15)
    return _checksum(id15)


def _checksum(id15: str) -> str:
    """:func:`id_checksum` of 15 ASCII characters (the ids :func:`make_ids` builds go straight here)."""
    # Each 5-character chunk gives a 5-bit number, bit i set when its character i is an upper-case letter.
    # The translation writes those bits as "0"/"1" text; reversed, it is the number in base 2.
    flags = id15.translate(_UPPER_FLAGS)
    return (_CHECKSUM_ALPHABET[int(flags[4::-1], 2)] + _CHECKSUM_ALPHABET[int(flags[9:4:-1], 2)]
            + _CHECKSUM_ALPHABET[int(flags[14:9:-1], 2)])


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
    return make_ids(key_prefix, pod, sequence, 1)[0]


def make_ids(key_prefix: str, pod: str, first: int, count: int) -> list[str]:
    """The 18-character ids of ``count`` consecutive sequence numbers from ``first`` (see :func:`make_id`)."""
    if len(key_prefix) != 3 or len(pod) != 3:
        raise ValueError("key prefix and pod must be 3 characters each")
    if not (key_prefix + pod).isascii() or not (key_prefix + pod).isalnum():
        raise ValueError("key prefix and pod must be ASCII letters and digits")
    if first < 0:
        raise ValueError("sequence must not be negative")
    if first + count > _SEQUENCE_LIMIT:
        raise ValueError("sequence does not fit in 9 base62 digits")
    ids = []
    high_of, head = -1, ""
    for sequence in range(first, first + count):
        high, low = divmod(sequence, _PAIRS_4)
        if high != high_of:  # the first five digits change once every 62**4 numbers
            high_of, head = high, key_prefix + pod + _base62(high, 5)
        left, right = divmod(low, 3844)
        id15 = head + _PAIRS[left] + _PAIRS[right]
        ids.append(id15 + _checksum(id15))
    return ids


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits))


_PAIRS = [a + b for a in _BASE62 for b in _BASE62]  # every two-digit base62 string, in order
_PAIRS_4 = 62**4
_SEQUENCE_LIMIT = 62**9
