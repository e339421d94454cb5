"""The integer parser both protocols use (``_text.parse_int64``, eight digits at
a time), held to Python's own reading of ``[+-]?[0-9]+`` within int64."""
import random
import re

import pytest

from kvfast._text import parse_integer

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_INTEGER = re.compile(rb"[+-]?[0-9]+")


def expected(text: bytes):
    if _INTEGER.fullmatch(text) is None:
        return "not an integer"
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else "out of range"


@pytest.mark.parametrize("text", [
    b"", b"+", b"-", b"0", b"-0", b"+7", b"00000000", b"12345678", b"123456789", b"000000123456",
    b"999999999999999999", b"-999999999999999999", b"1000000000000000000",
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808", b"-9223372036854775809",
    b"99999999999999999999999", b"0000000000000000000000001", b"1 ", b" 1", b"12345678 ", b"1e5",
])
def test_edge_cases(text):
    assert parse_integer(text) == expected(text)


def test_every_byte_at_every_position_of_every_length():
    """Each length from 1 to 20 digits (the 8-at-a-time path starts at 8, its
    partial last word covers 9 to 15 and 17 to 18), with each of the 256 byte
    values put at each position: only digits parse, and to the right value."""
    rng = random.Random(2026)
    for length in range(1, 21):
        digits = bytes(rng.choice(b"0123456789") for _ in range(length))
        assert parse_integer(digits) == expected(digits)
        for position in range(length):
            for byte in range(256):
                text = digits[:position] + bytes([byte]) + digits[position + 1:]
                assert parse_integer(text) == expected(text), text


def test_random_numbers_round_trip():
    rng = random.Random(7)
    for _ in range(20_000):
        value = rng.randint(INT64_MIN, INT64_MAX) >> rng.randrange(64)
        for text in (b"%d" % value, b"%+d" % value, b"%020d" % value):
            assert parse_integer(text) == expected(text)

