"""Unit tests of kvfast.protocol_model.answer, the protocol oracle."""
import pytest
from hypothesis import given, strategies as st

from kvfast.config import MAX_LINE_BYTES
from kvfast.protocol_model import INT64_MAX, INT64_MIN, answer


def replies(lines, store=None):
    """Answer each line in turn on one store; return the list of (reply, close)."""
    store = {} if store is None else store
    return [answer(store, line) for line in lines]


def test_transcript_session():
    assert replies([b"put 1 2", b"put 1 3", b"put 2 3", b"get 1", b"del 1", b"get 1",
                    b"del 5", b"Bye"]) == [
        (b"OK", False), (b"Key already exists", False), (b"OK", False), (b"2", False),
        (b"OK", False), (b"Key not found", False), (b"Key not found", False),
        (b"Goodbye", True),
    ]


def test_put_does_not_overwrite():
    store = {}
    replies([b"put 7 1", b"put 7 2"], store)
    assert store == {7: 1}


def test_words_case_and_line_endings():
    assert replies([b"  PuT\t\t-0 +0042 \t\r", b"GET 0", b"gEt 000"]) == [
        (b"OK", False), (b"42", False), (b"42", False),
    ]


@pytest.mark.parametrize("line", [b"", b"   ", b"\t \t", b"\r", b" \t\r"])
def test_blank_lines_get_no_reply(line):
    assert answer({}, line) == (None, False)


@pytest.mark.parametrize("line, reason", [
    (b"foo", b"unknown command 'foo'"),
    (b"Foo 1 2", b"unknown command 'Foo'"),
    (b"x" * 32, b"unknown command '" + b"x" * 32 + b"'"),
    (b"x" * 33, b"unknown command '" + b"x" * 32 + b"...'"),
    (b"a\x00\x7f\xff\x1b'\\", b"unknown command 'a\\x00\\x7f\\xff\\x1b'\\'"),
    (b"\r\r", b"unknown command '\\x0d'"),          # only one "\r" is a line ending
    (b"put", b"usage: put <key> <value> [ex <seconds>]"),
    (b"put 1", b"usage: put <key> <value> [ex <seconds>]"),
    (b"put 1 2 3", b"usage: put <key> <value> [ex <seconds>]"),
    (b"get", b"usage: get <key>"),
    (b"get x y", b"usage: get <key>"),              # arity is checked before integers
    (b"del 1 2", b"usage: del <key>"),
    (b"bye now", b"usage: bye"),
    (b"get x", b"key is not an integer"),
    (b"put x y", b"key is not an integer"),         # key is checked before value
    (b"put 1 y", b"value is not an integer"),
    (b"put 99999999999999999999 y", b"integer out of range"),
    (b"put 1 9223372036854775808", b"integer out of range"),
    (b"get -9223372036854775809", b"integer out of range"),
    (b"get 1_000", b"key is not an integer"),
    (b"get 0x10", b"key is not an integer"),
    (b"get +-1", b"key is not an integer"),
    (b"get -", b"key is not an integer"),
    (b"get \xd9\xa1", b"key is not an integer"),     # ARABIC-INDIC DIGIT ONE, which int() accepts
    (b"get 1\x0b", b"key is not an integer"),        # only spaces and tabs separate words
])
def test_invalid_requests(line, reason):
    assert answer({}, line) == (b"Invalid request: " + reason, False)


def test_integer_limits_and_leading_zeros():
    store = {}
    assert replies([b"put 9223372036854775807 -9223372036854775808",
                    b"get " + b"0" * 5000 + b"9223372036854775807"], store) == [
        (b"OK", False), (b"-9223372036854775808", False),
    ]
    assert store == {INT64_MAX: INT64_MIN}


def test_line_length_limit_excludes_the_line_ending():
    longest = b"x" * MAX_LINE_BYTES
    assert answer({}, longest)[0].startswith(b"Invalid request: unknown command")
    assert answer({}, longest + b"\r")[0].startswith(b"Invalid request: unknown command")
    assert answer({}, longest + b"x") == (b"Invalid request: line too long", True)
    assert answer({}, b" " * (MAX_LINE_BYTES + 1)) == (b"Invalid request: line too long", True)


def test_line_length_limit_is_a_parameter():
    assert answer({}, b"get 12345", max_line_bytes=8) == (b"Invalid request: line too long", True)


def test_a_line_must_not_contain_a_newline():
    with pytest.raises(ValueError):
        answer({}, b"get 1\nget 2")


@given(st.dictionaries(st.integers(INT64_MIN, INT64_MAX), st.integers(INT64_MIN, INT64_MAX),
                       max_size=20))
def test_store_behaves_like_a_dict_without_overwrite(items):
    store = {}
    for key, value in items.items():
        assert answer(store, b"put %d %d" % (key, value)) == (b"OK", False)
    for key, value in items.items():
        assert answer(store, b"get %d" % key) == (b"%d" % value, False)
        assert answer(store, b"put %d 0" % key) == (b"Key already exists", False)
    for key in items:
        assert answer(store, b"del %d" % key) == (b"OK", False)
        assert answer(store, b"del %d" % key) == (b"Key not found", False)
    assert store == {}
