"""Differential tests of the generic key commands and keyspace iteration (kvfast/_keys.pyx) against
redis-server (see tests/differential.py).

Byte for byte: TYPE, TOUCH, UNLINK, RENAME, RENAMENX, COPY, EXISTS, DEL, GET, SET, OBJECT ENCODING/FREQ,
and the error replies of SCAN, KEYS, OBJECT, MEMORY, COPY. Left out by the generators (documented
differences): non-integer keys; OBJECT REFCOUNT and IDLETIME and MEMORY USAGE of a present key (kvfast
answers 1, 0 and its slot size); RANDOMKEY (random on both).

KEYS and SCAN return keys in an order of their own on each server (Redis's dict order, kvfast's hash
order): their key lists are compared sorted, and that is the only normalisation of any reply here. A
full SCAN iteration is compared as a set with Redis's ``KEYS *`` (and with ``KEYS pattern`` under MATCH).
"""
import random

import pytest

from differential import RawClient, assert_same_replies, random_key, random_value

SEEDS = range(3)


def key_commands(rng, count):
    """Random generic-key commands mixed with the core's, on a few keys so that they collide."""
    for _ in range(count):
        key, other = random_key(rng), random_key(rng)
        yield rng.choice((
            ("SET", key, random_value(rng)), ("SET", key, random_value(rng)),
            ("GET", key), ("DEL", key), ("EXISTS", key, other), ("INCR", key),
            ("TYPE", key), ("TOUCH", key, other, key),
            ("UNLINK", key, other), ("UNLINK", key),
            ("RENAME", key, other), ("RENAME", key, key),
            ("RENAMENX", key, other), ("RENAMENX", key, key),
            ("COPY", key, other), ("COPY", key, other, "REPLACE"), ("COPY", key, other, "db", "0"),
            ("COPY", key, key), ("COPY", key, other, "replace", "DB", "0", "REPLACE"),
            ("OBJECT", "ENCODING", key), ("object", "freq", key),
            ("DBSIZE",),
        ))


@pytest.mark.parametrize("seed", SEEDS)
def test_key_commands_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, key_commands(rng, 2000), seed=seed)


ERROR_CASES = [
    ("SCAN",), ("SCAN", "x"), ("SCAN", "18446744073709551616"), ("SCAN", " 5"), ("SCAN", "-"), ("SCAN", "+"),
    ("SCAN", "5x"), ("SCAN", "0x10"), ("SCAN", "-18446744073709551616"), ("SCAN", "x", "COUNT", "0"),
    ("SCAN", "0", "COUNT", "0"), ("SCAN", "0", "COUNT", "-1"), ("SCAN", "0", "COUNT", "x"),
    ("SCAN", "0", "COUNT", "007"), ("SCAN", "0", "COUNT", "+5"), ("SCAN", "0", "COUNT", "99999999999999999999"),
    ("SCAN", "0", "COUNT"), ("SCAN", "0", "MATCH"), ("SCAN", "0", "TYPE"), ("SCAN", "0", "foo"),
    ("SCAN", "0", "foo", "bar"), ("SCAN", "0", "COUNT", "1", "COUNT", "0"), ("SCAN", "0", "COUNT", "5", "x"),
    ("KEYS",), ("KEYS", "*", "*"),
    ("OBJECT",), ("OBJECT", "foo"), ("OBJECT", "foo", "1"), ("OBJECT", "ENCODING"), ("OBJECT", "encoding", "1", "2"),
    ("OBJECT", "FREQ"), ("OBJECT", "IDLETIME"), ("OBJECT", "REFCOUNT", "1", "2"), ("OBJECT", "HELP", "x"),
    ("OBJECT", "help"), ("OBJECT", "Help"),
    ("MEMORY",), ("MEMORY", "foo"), ("MEMORY", "USAGE"), ("MEMORY", "usage", "1", "samples"),
    ("MEMORY", "USAGE", "1", "SAMPLES", "-1"), ("MEMORY", "USAGE", "1", "SAMPLES", "x"),
    ("MEMORY", "USAGE", "1", "foo"), ("MEMORY", "HELP", "x"), ("MEMORY", "USAGE", "1", "SAMPLES", "0"),
    ("COPY", "1", "2", "foo"), ("COPY", "1", "2", "DB"), ("COPY", "1", "2", "DB", "x"), ("COPY", "1", "2", "DB", "007"),
    ("COPY", "1", "1"), ("COPY", "1"), ("RENAME", "1", "2"), ("RENAME", "1", "1"), ("RENAMENX", "1", "2"),
    ("RENAME", "1"), ("TYPE",), ("TYPE", "1", "2"), ("TOUCH",), ("UNLINK",), ("RANDOMKEY", "x"),
    # On an empty keyspace SCAN's replies are the same bytes on both: cursor 0, no keys.
    ("SCAN", "0"), ("SCAN", ""), ("SCAN", "-1"), ("SCAN", "+5"), ("SCAN", "007"), ("SCAN", "18446744073709551615"),
    ("SCAN", "0", "count", "5", "MATCH", "*", "type", "STRING"), ("SCAN", "0", "TYPE", "hash"),
    ("SCAN", "0", "COUNT", "9223372036854775807"), ("KEYS", "*"), ("RANDOMKEY",),
    ("OBJECT", "ENCODING", "1"), ("OBJECT", "REFCOUNT", "1"), ("OBJECT", "IDLETIME", "1"), ("OBJECT", "FREQ", "1"),
    ("MEMORY", "USAGE", "1"), ("MEMORY", "USAGE", "1", "SAMPLES", "5"),
]


def test_error_replies_match_redis(server, redis_server):
    """Error replies (and the replies on an empty keyspace) are Redis's, byte for byte; then with
    keys present, those of OBJECT/MEMORY/COPY options that do not depend on the key."""
    assert_same_replies(server.address, redis_server.address, ERROR_CASES)
    present = [("SET", "1", "5"), ("OBJECT", "FREQ", "1"), ("OBJECT", "ENCODING", "1"), ("COPY", "1", "1"),
               ("COPY", "1", "2", "DB", "-1"), ("COPY", "1", "2", "db", "x"),
               ("RENAME", "1", "1"), ("RENAMENX", "1", "1"), ("MEMORY", "USAGE", "1", "SAMPLES", "-1")]
    assert_same_replies(server.address, redis_server.address, present)


def test_copy_to_another_database_is_refused(server):
    """DB 1 exists in Redis, not in kvfast (one database): DB 0 is the one, others are out of range."""
    with RawClient(server.address) as client:
        assert client.call("SET", "1", "5") == b"+OK\r\n"
        assert client.call("COPY", "1", "2", "DB", "1") == b"-ERR DB index is out of range\r\n"
        assert client.call("COPY", "1", "2", "DB", "0") == b":1\r\n"


# ---- KEYS patterns and SCAN iteration ------------------------------------------------

def parse_array(reply: bytes):
    """The elements of a flat RESP array of bulk strings (KEYS's reply), as bytes."""
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"*"), reply
    count = int(lines[0][1:])
    elements = lines[2:2 + 2 * count:2]
    assert len(elements) == count and all(line.startswith(b"$") for line in lines[1:1 + 2 * count:2]), reply
    return elements


def parse_scan(reply: bytes):
    """(next cursor, keys) of a SCAN reply."""
    assert reply.startswith(b"*2\r\n$"), reply
    header_end = reply.index(b"\r\n", 4)
    size = int(reply[5:header_end])
    cursor = reply[header_end + 2:header_end + 2 + size]
    return cursor, parse_array(reply[header_end + 2 + size + 2:])


FIXED_PATTERNS = [
    "*", "**", "1*", "*1", "*1*", "?", "??", "???", "-*", "-?", "1?3", "[12]*", "[^12]*", "[1-3]?", "[3-1]?",
    "[^1-3]*", "[!1]*", "[-]*", "[-1]*", "[1-]*", "[]*", "[", "[^", "[1", "[^1", "1[", "1[2", "\\1*", "1\\*",
    "\\", "1\\", "*\\", "[\\1]*", "[\\]*", "[\\-]*", "[a-z]*", "[0-9][0-9]", "*[0-9]", "*?*?*", "*0*0*",
    "[^-]*[05]", "1*2*3", "9223372036854775807", "-9223372036854775808", "*7", "*-", "[9-0]*", "[*]*",
    "[?]*", "*[", "*]", "]", "1]", "[]]", "[^]]*", "12\\3", "\\\\", "[1-1]", "[\\]-1]*",
]


def pattern_keys():
    """The keys both servers hold for the pattern tests: small and negative, and the int64 edges."""
    keys = list(range(-150, 1300)) + [2**63 - 1, -2**63, 2**62, -10**18, 10**18, 123456789012, 1000000]
    return [str(key) for key in keys]


def random_pattern(rng):
    return "".join(rng.choice("0123456789-*?[]^\\") for _ in range(rng.randrange(1, 7)))


def load(client, keys):
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        client.send_raw(b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(k), k.encode()) for k in chunk))
        for _ in chunk:
            assert client.read_reply() == b"+OK\r\n"


def test_keys_patterns_match_redis(server, redis_server):
    """KEYS with Redis's glob (``*``, ``?``, classes, ranges, negation, escapes, unclosed classes):
    the same key set as Redis for fixed and random patterns (compared sorted)."""
    rng = random.Random(13)
    patterns = FIXED_PATTERNS + [random_pattern(rng) for _ in range(400)]
    keys = pattern_keys()
    with RawClient(server.address) as ours, RawClient(redis_server.address) as theirs:
        for client in (ours, theirs):
            assert client.call("FLUSHALL") == b"+OK\r\n"
            load(client, keys)
        for pattern in patterns:
            got, expected = ours.call("KEYS", pattern), theirs.call("KEYS", pattern)
            assert sorted(parse_array(got)) == sorted(parse_array(expected)), pattern


def full_scan(client, *options):
    cursor, seen, calls = b"0", [], 0
    while True:
        cursor, keys = parse_scan(client.call("SCAN", cursor, *options))
        seen += keys
        calls += 1
        assert calls < 100_000
        if cursor == b"0":
            return seen


@pytest.mark.parametrize("options", [(), ("COUNT", "1"), ("COUNT", "7"), ("COUNT", "1000"), ("MATCH", "1*"),
                                     ("MATCH", "[^-]?[05]", "COUNT", "3"), ("TYPE", "string"), ("type", "list")])
def test_full_scan_equals_redis_keys(server, redis_server, options):
    """A full SCAN iteration (no changes meanwhile) returns each key once, as a set equal to Redis's
    KEYS for the same pattern; TYPE string keeps every key, another type none."""
    keys = pattern_keys()
    pattern = options[options.index("MATCH") + 1] if "MATCH" in options else "*"
    with RawClient(server.address) as ours, RawClient(redis_server.address) as theirs:
        for client in (ours, theirs):
            assert client.call("FLUSHALL") == b"+OK\r\n"
            load(client, keys)
        seen = full_scan(ours, *options)
        expected = [] if "list" in options else parse_array(theirs.call("KEYS", pattern))
        assert len(seen) == len(set(seen))
        assert set(seen) == set(expected)
        assert set(full_scan(theirs, *options)) == set(expected)
