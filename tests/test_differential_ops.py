"""Differential tests of the operating commands (kvfast/_clients.pyx, kvfast/_commandstats.pyx) against
redis-server, byte for byte: SLOWLOG with the slow log off on both (-1: every reply deterministic), its
and LATENCY's, CLIENT's, DEBUG's and SHUTDOWN's error replies, CLIENT SETNAME/GETNAME, mixed with SET/GET/
DEL/INCR. Left out (documented differences): CLIENT ID/LIST/INFO (ids, ports, buffer sizes), LATENCY
HISTOGRAM and INFO's statistics (timings), SLOWLOG entries (timings), MEMORY STATS (fields), DEBUG OBJECT
(addresses), LATENCY DOCTOR/GRAPH (unknown in kvfast), CLIENT NO-TOUCH (Redis 7.2's, unknown to 7.0)."""
import random

import pytest

from differential import assert_same_replies, random_key, random_value, start_redis

FIXED = [
    ("SLOWLOG",), ("SLOWLOG", "foo"), ("SLOWLOG", "GET"), ("SLOWLOG", "GET", "5"), ("SLOWLOG", "get", "-1"),
    ("SLOWLOG", "GET", "-2"), ("SLOWLOG", "GET", "x"), ("SLOWLOG", "LEN"), ("SLOWLOG", "len", "x"),
    ("SLOWLOG", "RESET"), ("SLOWLOG", "reset", "1"), ("SLOWLOG", "HELP"), ("SLOWLOG", "help", "x"),
    ("SLOWLOG", "GET", "1", "2"),
    ("LATENCY",), ("LATENCY", "foo"), ("LATENCY", "LATEST"), ("LATENCY", "HISTORY", "command"), ("LATENCY", "RESET"),
    ("LATENCY", "HISTOGRAM", "nosuch"), ("LATENCY", "HELP"),
    ("CLIENT",), ("CLIENT", "foo"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "a b"),
    ("CLIENT", "SETNAME", "name1"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", ""), ("CLIENT", "GETNAME"),
    ("CLIENT", "SETNAME"), ("CLIENT", "GETNAME", "x"), ("CLIENT", "ID", "x"), ("CLIENT", "INFO", "x"),
    ("CLIENT", "KILL"), ("CLIENT", "KILL", "1.2.3.4:5"), ("CLIENT", "KILL", "ID", "0"),
    ("CLIENT", "KILL", "ID", "x"), ("CLIENT", "KILL", "ID", "999999"), ("CLIENT", "KILL", "ID", "1", "ADDR"),
    ("CLIENT", "KILL", "ADDR", "1.2.3.4:5"), ("CLIENT", "KILL", "LADDR", "1.2.3.4:5"),
    ("CLIENT", "KILL", "SKIPME", "maybe"), ("CLIENT", "KILL", "TYPE", "bogus"), ("CLIENT", "KILL", "TYPE", "pubsub"),
    ("CLIENT", "KILL", "USER", "nobody"), ("CLIENT", "KILL", "foo", "bar"),
    ("CLIENT", "LIST", "TYPE", "bogus"), ("CLIENT", "LIST", "TYPE", "pubsub"), ("CLIENT", "LIST", "foo"),
    ("CLIENT", "LIST", "ID", "x"), ("CLIENT", "LIST", "ID", "0"), ("CLIENT", "LIST", "ID", "999999"),
    ("CLIENT", "NO-EVICT", "on"), ("CLIENT", "NO-EVICT", "off"), ("CLIENT", "NO-EVICT", "x"),
    ("DEBUG", "OBJECT", "12345"), ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "ABORT"), ("SHUTDOWN", "bogus"),
    ("MONITOR", "x"), ("CONFIG", "RESETSTAT", "x"), ("CONFIG", "RESETSTAT"),
]


def ops_commands(rng, count):
    for _ in range(count):
        key = random_key(rng)
        yield rng.choice((
            ("SET", key, random_value(rng)), ("GET", key), ("DEL", key), ("INCR", key),
            ("SLOWLOG", "LEN"), ("SLOWLOG", "GET"), ("SLOWLOG", "RESET"),
            ("CLIENT", "SETNAME", f"n{rng.randrange(3)}"), ("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", ""),
            ("CONFIG", "RESETSTAT"), ("LATENCY", "LATEST"),
        ))


@pytest.fixture
def redis_slowlog_off():
    reference = start_redis("--slowlog-log-slower-than", "-1", "--enable-debug-command", "yes")
    yield reference
    reference.close()


@pytest.mark.parametrize("seed", range(2))
def test_operating_commands_match_redis(start_server, redis_slowlog_off, seed):
    server = start_server("--slowlog-log-slower-than", "-1")
    rng = random.Random(seed)
    sequence = FIXED + list(ops_commands(rng, 600))
    assert_same_replies(server.address, redis_slowlog_off.address, sequence, seed=seed)
