"""maxmemory and the eviction policies (kvfast/_evict.pyx).

The floods are redis-benchmark's (8 clients, pipelined SETs of random 9-digit
keys, so nearly all distinct), against ``--maxmemory 64mb``. The margin
checked: INFO's ``used_memory_peak`` (noted before every write that may add
memory) never passes maxmemory by more than MARGIN_BYTES, which covers what
the connections' buffers may add after a write was admitted.
"""
import subprocess

import pytest

from conftest import require_tool
from differential import RawClient, start_redis

LIMIT = 64 * 1024 * 1024
MARGIN_BYTES = 1024 * 1024          # connection buffers grown after an admission
FLOOD_REQUESTS = 2_200_000          # more distinct keys than 64 MB holds (at most 2.1M)
OUTSIDE = 5_000_000_000             # keys from here on: never among the flood's (0 to 999,999,999)
OOM = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
ALLKEYS = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
VOLATILE = ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")


def info(client, section="memory"):
    """INFO ``section`` as a dict of str -> str."""
    reply = client.call("INFO", section).decode()
    body = reply.split("\r\n", 1)[1]
    return dict(line.split(":", 1) for line in body.split("\r\n") if ":" in line)


def native_line(client):
    """One native reply line from a RawClient's connection."""
    while b"\n" not in client.buffer:
        chunk = client.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        client.buffer += chunk
    end = client.buffer.index(b"\n") + 1
    line = bytes(client.buffer[:end])
    del client.buffer[:end]
    return line


def flood(server, requests=FLOOD_REQUESTS, *, until_refused=False, ttl=None):
    """redis-benchmark: 8 clients, 64-deep pipelines, SET of random keys (with
    ``EX ttl`` if given; it stops at its first error reply: ``until_refused``)."""
    subprocess.run(
        [require_tool("redis-benchmark"), "-h", server.host, "-p", str(server.port), "-c", "8", "-P", "64",
         "-n", str(requests), "-r", "1000000000", "-q", "SET", "__rand_int__", "1",
         *(("EX", str(ttl)) if ttl else ())],
        check=not until_refused, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def check_within_limit(client):
    memory = info(client)
    assert int(memory["maxmemory"]) == LIMIT
    assert int(memory["used_memory"]) <= LIMIT + MARGIN_BYTES
    assert int(memory["used_memory_peak"]) <= LIMIT + MARGIN_BYTES
    return memory


@pytest.mark.parametrize("policy", ALLKEYS)
def test_flood_evicts_and_stays_under_the_limit(start_server, policy):
    server = start_server("--maxmemory", "64mb", "--maxmemory-policy", policy)
    flood(server)
    with RawClient(server.address) as client:
        assert client.call("PING") == b"+PONG\r\n"
        check_within_limit(client)
        assert int(info(client, "stats")["evicted_keys"]) > 0
        keys = int(client.call("DBSIZE")[1:-2])
        # At the limit the table holds 0.4 to 0.5 keys per slot's worth of maxmemory (_evict.pyx):
        # a slot is 16 bytes, 17 with the LRU/LFU byte.
        slot = 16 if policy == "allkeys-random" else 17
        assert LIMIT * 2 // (5 * slot) <= keys <= LIMIT // (2 * slot)
        assert client.call("SET", "1", "2") == b"+OK\r\n"         # writes go on, evicting
        assert client.call("GET", "1") == b"$1\r\n2\r\n"


@pytest.mark.parametrize("policy", ("noeviction", *VOLATILE))
def test_flood_refuses_when_nothing_is_evictable(start_server, policy):
    """noeviction, and the volatile policies while no key has a TTL: writes
    are refused with Redis's error once full; every acknowledged write is
    still there, reads and deletes keep working."""
    server = start_server("--maxmemory", "64mb", "--maxmemory-policy", policy)
    flood(server, until_refused=True)
    with RawClient(server.address) as client:
        check_within_limit(client)
        assert int(info(client, "stats")["evicted_keys"]) == 0
        before = int(client.call("DBSIZE")[1:-2])
        acknowledged, refused = [], 0
        for key in range(OUTSIDE, OUTSIDE + 2000):
            reply = client.call("SET", str(key), str(key * 3))
            if reply == b"+OK\r\n":
                acknowledged.append(key)
            else:
                assert reply == OOM
                refused += 1
        assert refused > 0
        assert int(client.call("DBSIZE")[1:-2]) == before + len(acknowledged)
        for key in acknowledged:
            assert client.call("GET", str(key)) == b"$%d\r\n%d\r\n" % (len(str(key * 3)), key * 3)
        assert client.call("INCR", str(OUTSIDE + 2001)) == OOM
        assert client.call("GET", str(OUTSIDE + 2001)) == b"$-1\r\n"              # reads work
        assert client.call("DEL", str(OUTSIDE + 2002)) == b":0\r\n"              # deletes work
        if acknowledged:
            assert client.call("DEL", str(acknowledged[0])) == b":1\r\n"
        assert client.call("MULTI") == b"+OK\r\n"
        client.call("SET", str(OUTSIDE + 2003), "1")
        assert client.call("EXEC").startswith(b"-EXECABORT")
        # Native protocol: the same refusal in its words.
        client.sock.sendall(b"set %d 1\nget %d\n" % (OUTSIDE + 2004, OUTSIDE + 2004))
        assert native_line(client) == b"Error: out of memory limit\n"
        assert native_line(client) == b"Key not found\n"
        assert client.call("CONFIG", "SET", "maxmemory", "0") == b"+OK\r\n"     # lifted at run time
        assert client.call("SET", str(OUTSIDE + 2005), "1") == b"+OK\r\n"


@pytest.mark.parametrize("policy", VOLATILE)
def test_volatile_policies_evict_only_keys_with_a_ttl(start_server, policy):
    server = start_server("--maxmemory", "64mb", "--maxmemory-policy", policy)
    persistent = 50_000
    with RawClient(server.address) as client:
        keys = range(OUTSIDE, OUTSIDE + persistent)
        client.sock.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$10\r\n%d\r\n$1\r\n7\r\n" % k for k in keys))
        for _ in range(persistent):
            assert client.read_reply() == b"+OK\r\n"
        flood(server, ttl=100_000)
        check_within_limit(client)
        assert int(info(client, "stats")["evicted_keys"]) > 0
        client.sock.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$10\r\n%d\r\n" % k for k in keys))
        assert all(client.read_reply() == b"$1\r\n7\r\n" for _ in range(persistent))


def test_lowering_the_limit_at_run_time_evicts_in_bounded_steps(start_server):
    server = start_server()
    with RawClient(server.address) as client:
        pipeline = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%d\r\n$1\r\n1\r\n" % (len(str(k)), k)
                            for k in range(1, 100_001))
        client.sock.sendall(pipeline)
        for _ in range(100_000):
            assert client.read_reply() == b"+OK\r\n"
        assert client.call("CONFIG", "SET", "maxmemory", "1mb", "maxmemory-policy", "allkeys-random") == b"+OK\r\n"
        evicted = 0
        for key in range(200_001, 200_101):
            assert client.call("SET", str(key), "1") == b"+OK\r\n"
            now = int(info(client, "stats")["evicted_keys"])
            assert now - evicted <= 16                  # EVICT_BUDGET: no request pays for a mass eviction
            evicted = now
        assert evicted > 0
        # Writes go on evicting until the table, under 30% full, has shrunk under the limit.
        client.sock.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$6\r\n%d\r\n$1\r\n1\r\n" % k
                                     for k in range(300_000, 320_000)))
        for _ in range(20_000):
            assert client.read_reply() == b"+OK\r\n"
        assert int(info(client)["used_memory"]) <= 1024 * 1024


def test_lru_keeps_the_keys_in_use(start_server):
    """allkeys-lru: keys read all along survive a flood of new ones."""
    server = start_server("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    with RawClient(server.address) as client:
        hot = [str(k) for k in range(1, 201)]
        for key in hot:
            assert client.call("SET", key, "7") == b"+OK\r\n"
        for round_ in range(40):
            base = 1_000_000 + round_ * 5000
            client.sock.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$7\r\n%d\r\n$1\r\n1\r\n" % k
                                         for k in range(base, base + 5000)))
            for _ in range(5000):
                client.read_reply()
            client.sock.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in hot))
            replies = [client.read_reply() for _ in hot]
        assert int(info(client, "stats")["evicted_keys"]) > 100_000
        assert sum(reply == b"$1\r\n7\r\n" for reply in replies) >= 195


def test_settings_and_info_fields(start_server):
    server = start_server("--maxmemory", "100mb")
    with RawClient(server.address) as client:
        assert client.call("CONFIG", "GET", "maxmemory") == b"*2\r\n$9\r\nmaxmemory\r\n$9\r\n104857600\r\n"
        memory = info(client)
        assert memory["maxmemory_human"] == "100.00M"
        assert memory["maxmemory_policy"] == "noeviction"
        assert client.call("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu") == b"+OK\r\n"
        assert info(client)["maxmemory_policy"] == "allkeys-lfu"


# Differential: the replies that are deterministic (CONFIG GET/SET forms, the OOM error).
CONFIG_SEQUENCE = [
    ("CONFIG", "GET", "maxmemory"), ("CONFIG", "GET", "maxmemory-policy"),
    ("CONFIG", "SET", "maxmemory", "100mb"), ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1GB"), ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1k"), ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "12kb"), ("CONFIG", "GET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "1.5gb"), ("CONFIG", "SET", "maxmemory", "-1"),
    ("CONFIG", "SET", "maxmemory", "12x"),     # "" (Redis: 0) is refused by kvfast.runtime: a difference
    ("CONFIG", "SET", "maxmemory-policy", "nope"), ("CONFIG", "SET", "maxmemory-policy", "ALLKEYS-LRU"),
    ("CONFIG", "GET", "maxmemory-policy"), ("CONFIG", "SET", "maxmemory-policy", "volatile-ttl"),
    ("CONFIG", "GET", "maxmemory-policy"), ("CONFIG", "SET", "maxmemory"),
    ("CONFIG", "SET", "maxmemory", "0", "maxmemory-policy", "noeviction"), ("CONFIG", "GET", "maxmemory"),
    ("SET", "1", "2"), ("CONFIG", "SET", "maxmemory", "1"), ("SET", "1", "3"), ("SETNX", "5", "1"),
    ("INCR", "1"), ("MSET", "7", "1", "8", "2"), ("APPEND", "1", "4"), ("GETSET", "1", "9"), ("GET", "1"),
    ("EXISTS", "1"), ("DEL", "1"), ("DEL", "1"), ("MULTI",), ("SET", "1", "2"), ("GET", "1"), ("EXEC",),
    ("CONFIG", "SET", "maxmemory", "0"), ("SET", "1", "5"), ("GET", "1"),
]


def test_config_and_oom_replies_match_redis(server):
    require_tool("redis-server")
    redis = start_redis()
    try:
        with RawClient(server.address) as ours, RawClient(redis.address) as theirs:
            for request in CONFIG_SEQUENCE:
                assert ours.call(*request) == theirs.call(*request), request
    finally:
        redis.close()
