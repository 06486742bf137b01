"""Record ids: checksum, 18-character form and the emulator's id maker."""

from __future__ import annotations

import random

import pytest

from airflow_provider_sfbulk.protocol.ids import id_checksum, is_valid_id, make_id, make_ids, to_18

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _reference_checksum(id15: str) -> str:
    """The checksum as Salesforce documents it, written out bit by bit."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    out = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        out += alphabet[sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")]
    return out


def _reference_id(prefix: str, pod: str, sequence: int) -> str:
    digits = ""
    for _ in range(9):
        sequence, rest = divmod(sequence, 62)
        digits = _BASE62[rest] + digits
    id15 = prefix + pod + digits
    return id15 + _reference_checksum(id15)


def test_known_ids() -> None:
    # A documented pair: 15-character 001A0000006Vm9r is 001A0000006Vm9rIAC in 18 characters.
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert id_checksum("001A0000006Vm9r") == "IAC"
    assert make_id("001", "5fE", 1) == "0015fE000000001ABA"


@pytest.mark.parametrize("first", [0, 1, 61, 3843, 3844, 62**4 - 3, 62**4 * 7 - 1, 62**9 - 4])
def test_consecutive_ids_equal_the_reference_across_digit_carries(first: int) -> None:
    made = make_ids("a0X", "5fE", first, 4)
    assert made == [_reference_id("a0X", "5fE", first + n) for n in range(4)]
    assert made == [make_id("a0X", "5fE", first + n) for n in range(4)]
    assert all(is_valid_id(record_id) for record_id in made)


def test_random_sequences_equal_the_reference() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        sequence = rng.randrange(62**9)
        assert make_id("003", "xY9", sequence) == _reference_id("003", "xY9", sequence)


@pytest.mark.parametrize(
    ("prefix", "pod", "first", "count", "message"),
    [
        ("01", "5fE", 1, 1, "3 characters each"),
        ("001", "5f-", 1, 1, "ASCII letters and digits"),
        ("001", "5fé", 1, 1, "ASCII letters and digits"),
        ("001", "5fE", -1, 1, "must not be negative"),
        ("001", "5fE", 62**9, 1, "does not fit"),
        ("001", "5fE", 62**9 - 1, 2, "does not fit"),
    ],
)
def test_refusals(prefix: str, pod: str, first: int, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_ids(prefix, pod, first, count)


def test_last_id_that_fits() -> None:
    assert make_ids("001", "5fE", 62**9 - 1, 1) == ["0015fEzzzzzzzzzABA"]


def test_checksum_of_any_fifteen_characters_equals_the_reference() -> None:
    # is_valid_id and to_18 take whatever a CSV holds: punctuation, lower case, non-ASCII letters
    # (only A-Z set a bit; an accented capital does not).
    rng = random.Random(11)
    alphabet = _BASE62 + "-_ .éÉÄßΩ€😀"
    for _ in range(3000):
        id15 = "".join(rng.choice(alphabet) for _ in range(15))
        assert id_checksum(id15) == _reference_checksum(id15), id15
    with pytest.raises(ValueError, match="15 characters"):
        id_checksum("001A0000006Vm9")
