"""Key expiry beyond the differential tests (tests/test_differential_expire.py): redis-py, the native
protocol against its model, kvfast.Client, active expiry of keys nobody touches while another client
is served, INFO's fields, and the log: deadlines replayed, rewritten, dumped, dropped once passed
(a restart with the test clock moved on, so no test sleeps for a TTL), under each fsync policy and
after kill -9 under a write load with TTLs.
"""
import os
import random
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis

import kvfast
from kvfast import protocol_model
from aof_format import parse, replay
from conftest import command, script_path
from helpers import wait_for

FAR_MS = 4102444800000          # 2100-01-01 in Unix ms


def resp(sock, *words):
    """One RESP request on ``sock``; the reply's raw bytes (single-line and bulk replies)."""
    sock.sendall(command(*words))
    data = b""
    while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2
                                         and not data.startswith(b"$-1")):
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        data += chunk
    return data


def info(address) -> dict:
    client = redis.Redis(*address, protocol=2)
    try:
        return client.info()
    finally:
        client.close()


def send_pipelined(address, requests, chunk=10000):
    """Send RESP requests pipelined and read exactly one simple reply line each."""
    with socket.create_connection(address, timeout=30) as sock:
        for start in range(0, len(requests), chunk):
            part = requests[start:start + chunk]
            sock.sendall(b"".join(part))
            pending, lines = b"", 0
            while lines < len(part):
                data = sock.recv(1 << 20)
                assert data
                pending += data
                lines = pending.count(b"\r\n")


# ---- clients ---------------------------------------------------------------------------

def test_redis_py_ttls_and_a_rate_limiter(redis_py):
    r = redis_py
    assert r.set(1, 5, ex=100) is True and r.ttl(1) == 100 and 99_000 < r.pttl(1) <= 100_000
    assert r.set(2, 6) and r.ttl(2) == -1 and r.ttl(3) == -2
    assert r.expire(2, 50) and r.ttl(2) == 50 and r.persist(2) and r.ttl(2) == -1
    assert r.expireat(2, FAR_MS // 1000) and r.expiretime(2) == FAR_MS // 1000
    assert r.pexpireat(2, FAR_MS + 1) and r.pexpiretime(2) == FAR_MS + 1
    assert not r.expire(2, 10, gt=True) and r.expire(2, 10, lt=True) and r.ttl(2) == 10
    assert r.setex(4, 30, 7) and r.ttl(4) == 30 and r.psetex(5, 30_000, 8) and r.ttl(5) == 30
    assert r.getex(4, persist=True) == b"7" and r.ttl(4) == -1
    assert r.getex(4, exat=1) == b"7" and r.exists(4) == 0
    assert r.set(6, 1, px=1) and wait_for(lambda: r.get(6) is None, timeout=10)
    # A fixed-window rate limiter: INCR then EXPIRE NX in one pipeline, as applications write it.
    for hit in range(1, 6):
        with r.pipeline() as pipe:
            count, _ = pipe.incr(100).expire(100, 60, nx=True).execute()
        assert count == hit
    assert r.ttl(100) == 60
    assert r.incr(1) == 6 and r.ttl(1) == 100                   # INCR keeps the TTL
    assert r.set(1, 9, keepttl=True) and r.ttl(1) == 100
    assert r.set(1, 9) and r.ttl(1) == -1                        # SET clears it
    assert r.set(7, 1, ex=100) and r.rename(7, 8) and r.ttl(8) == 100
    assert r.copy(8, 9) and r.ttl(9) == 100
    keyspace = r.info("keyspace")["db0"]
    assert keyspace["expires"] == 5 and 0 < keyspace["avg_ttl"] <= 100_000


def test_native_expiry_matches_the_model(server):
    """Native put/set ex, expire, ttl, persist against kvfast/protocol_model.py (TTLs of 100 s or more:
    the rounded seconds left cannot move while the test runs)."""
    rng = random.Random(5)
    store, deadlines = {}, {}
    lines = [b"ttl 1", b"persist 1", b"expire 1 10", b"put 1 2 ex 100", b"ttl 1", b"put 1 3", b"set 1 3 ex",
             b"set 1 3 EX 0", b"set 1 3 ex 1000000000001", b"set 1 3 ex x", b"set 1 3 xx 5", b"expire 1 -1",
             b"expire 1", b"ttl", b"persist 1 2", b"set 1 4", b"ttl 1"]
    for _ in range(400):
        key = rng.randrange(5)
        lines.append(rng.choice((b"put %d %d ex %d" % (key, rng.randrange(100), rng.choice((100, 1000))),
                                 b"set %d %d ex %d" % (key, rng.randrange(100), rng.choice((100, 1000))),
                                 b"set %d 1" % key, b"put %d 2" % key, b"expire %d 500" % key, b"ttl %d" % key,
                                 b"persist %d" % key, b"get %d" % key, b"del %d" % key, b"incr %d" % key)))
    with server.connect() as sock:
        reader = sock.makefile("rb")
        for line in lines:
            expected, _ = protocol_model.answer(store, line, deadlines=deadlines)
            sock.sendall(line + b"\n")
            assert reader.readline().rstrip(b"\n") == expected, line


def test_client_ttl_arguments(server):
    with kvfast.Client(*server.address) as client:
        client.put(1, 2, ttl=100)
        assert client.ttl(1) == 100
        with pytest.raises(kvfast.KeyExistsError):
            client.put(1, 3, ttl=5)
        client.set(1, 4)
        assert client.ttl(1) is None and client.get(1) == 4
        client.set(2, 5, ttl=1000)
        assert client.ttl(2) == 1000 and client.persist(2) is True and client.persist(2) is False
        client.expire(2, 30)
        assert client.ttl(2) == 30
        with pytest.raises(kvfast.KeyNotFoundError):
            client.expire(3, 30)
        with pytest.raises(kvfast.KeyNotFoundError):
            client.ttl(3)
        for bad in (0, -1, 10 ** 12 + 1):
            with pytest.raises(ValueError):
                client.set(1, 1, ttl=bad)
        with pytest.raises(TypeError):
            client.set(1, 1, ttl=1.5)


def test_async_client_ttl_arguments(server):
    import asyncio

    async def main():
        async with kvfast.AsyncClient(*server.address) as client:
            await client.set(1, 2, ttl=100)
            assert await client.ttl(1) == 100
            await client.put(2, 3, ttl=50)
            assert await client.ttl(2) == 50 and await client.persist(2) is True and await client.ttl(2) is None
            await client.expire(2, 20)
            assert await client.ttl(2) == 20

    asyncio.run(main())


def test_client_help_lists_the_expiry_commands():
    result = subprocess.run([script_path("kvfast-client"), "--help"], capture_output=True, timeout=30, check=True)
    for synopsis in (b"put K V [ex S]", b"expire K S", b"ttl K", b"persist K"):
        assert synopsis in result.stdout


# ---- active expiry ---------------------------------------------------------------------

def test_untouched_keys_expire_while_another_client_is_served(server):
    """100,000 keys with a 1 s TTL leave DBSIZE and INFO by themselves within the stated bound
    (a deadline plus 100 ms plus one sweep: well under 10 s here), while another client's
    requests keep being answered throughout."""
    keys = 100_000
    send_pipelined(server.address, [command("SET", key, key, "PX", 1000) for key in range(keys)]
                   + [command("SET", -1, 1)])
    assert info(server.address)["db0"]["expires"] == keys
    stop, answered, failures = threading.Event(), [0], []

    def other_client():
        try:
            with server.connect() as sock:
                while not stop.is_set():
                    assert resp(sock, "GET", -1) == b"$1\r\n1\r\n"
                    answered[0] += 1
        except Exception as error:      # reported by the main thread
            failures.append(error)

    thread = threading.Thread(target=other_client)
    thread.start()
    try:
        wait_for(lambda: info(server.address)["db0"]["keys"] == 1, timeout=20,
                 message=lambda: f"DBSIZE to drop to 1, INFO says {info(server.address).get('db0')}")
        before = answered[0]
        wait_for(lambda: answered[0] > before, timeout=10, message="the other client to go on being answered")
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    stats = info(server.address)
    assert stats["expired_keys"] == keys and stats["db0"]["expires"] == 0
    assert stats["kvfast_expire_sweeps"] >= 1 and stats["expired_stale_perc"] >= 0


def test_a_key_read_after_its_deadline_is_gone_and_counted(server):
    with server.connect() as sock:
        assert resp(sock, "SET", 1, 1, "PX", 1) == b"+OK\r\n"
        wait_for(lambda: resp(sock, "EXISTS", 1) == b":0\r\n", timeout=10)
        assert resp(sock, "TTL", 1) == b":-2\r\n" and resp(sock, "SETNX", 1, 5) == b":1\r\n"
        assert resp(sock, "TTL", 1) == b":-1\r\n"
        assert resp(sock, "SET", 2, 1, "PX", 1) == b"+OK\r\n"
        wait_for(lambda: resp(sock, "INCR", 2) == b":1\r\n" or None, timeout=10)
        assert resp(sock, "TTL", 2) == b":-1\r\n"       # an expired key counts as absent: a fresh one
    assert info(server.address)["expired_keys"] >= 2


# ---- persistence -----------------------------------------------------------------------

def start_logged(start_server, path, *extra):
    return start_server("--appendonly", str(path), *extra)


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_restart_keeps_deadlines_and_drops_passed_ones(start_server, tmp_path, fsync):
    path = tmp_path / "ttl.aof"
    server = start_logged(start_server, path, "--fsync", fsync)
    with server.connect() as sock:
        for words in (("SET", 1, 10, "PXAT", FAR_MS), ("SET", 2, 20, "EX", 1000), ("SET", 3, 30),
                      ("SET", 4, 40, "EX", 100000), ("EXPIRE", 3, 2000), ("PERSIST", 4), ("SET", 5, 50, "EX", 10),
                      ("INCR", 5), ("SETEX", 6, 3000, 60), ("GETEX", 6, "PERSIST"), ("SET", 7, 70, "PX", 100000)):
            assert not resp(sock, *words).startswith(b"-")
    assert server.stop(signal.SIGTERM) == 0
    server = start_logged(start_server, path, "--fsync", fsync)
    with server.connect() as sock:
        assert resp(sock, "PEXPIRETIME", 1) == b":%d\r\n" % FAR_MS
        assert resp(sock, "TTL", 2) in (b":1000\r\n", b":999\r\n") and resp(sock, "TTL", 4) == b":-1\r\n"
        assert resp(sock, "GET", 5) == b"$2\r\n51\r\n" and resp(sock, "TTL", 6) == b":-1\r\n"
    assert server.stop(signal.SIGTERM) == 0
    # 1500 s later: keys 2 (1000 s) and 5 (10 s) have expired, 3 (2000 s) and 7 (100 s)... 7 too.
    server = start_logged(start_server, path, "--fsync", fsync, "--debug-clock-offset-ms", "1500000")
    with server.connect() as sock:
        present = [key for key in range(1, 8) if resp(sock, "EXISTS", key) == b":1\r\n"]
        assert present == [1, 3, 4, 6]
        assert resp(sock, "DBSIZE") == b":4\r\n"        # dropped at load, not merely hidden
        assert resp(sock, "BGREWRITEAOF").startswith(b"+")
    wait_for(lambda: info(server.address)["aof_rewrite_in_progress"] == 0 and info(server.address)["aof_rewrites"],
             timeout=20)
    assert server.stop(signal.SIGTERM) == 0
    deadlines = {}
    assert replay(parse(path.read_bytes()), deadlines) == {1: 10, 3: 30, 4: 40, 6: 60}
    assert deadlines[1] == FAR_MS and set(deadlines) == {1, 3}
    dump = subprocess.run([script_path("kvfast-aof"), "dump", str(path)], capture_output=True, timeout=30,
                          check=True).stdout.decode()
    assert f"set 1 10 pxat {FAR_MS}" in dump and "set 4 40\n" in dump


def test_expiry_is_logged_as_a_delete(start_server, tmp_path):
    path = tmp_path / "expired.aof"
    server = start_logged(start_server, path, "--fsync", "always")
    with server.connect() as sock:
        assert resp(sock, "SET", 1, 1, "PX", 1) == b"+OK\r\n" and resp(sock, "EXPIRE", 2, 5) == b":0\r\n"
        assert resp(sock, "SET", 2, 2) == b"+OK\r\n" and resp(sock, "EXPIRE", 2, 100) == b":1\r\n"
        assert resp(sock, "PERSIST", 2) == b":1\r\n" and resp(sock, "EXPIRE", 2, 0) == b":1\r\n"
    wait_for(lambda: info(server.address)["expired_keys"] == 1, timeout=10)
    kinds = [(kind, args[0]) for _, _, kind, args in parse(path.read_bytes())]
    # key 1's expiry (by the sweep or a lookup) comes whenever it comes after its set
    assert kinds.count(("del", 1)) == 1 and kinds.index(("del", 1)) > kinds.index(("setx", 1))
    assert [kind for kind in kinds if kind != ("del", 1)] == [("setx", 1), ("set", 2), ("pexpireat", 2),
                                                              ("persist", 2), ("del", 2)]
    assert server.stop(signal.SIGTERM) == 0


def test_kill_9_under_a_write_load_with_ttls(start_server, tmp_path):
    """Writers set keys with absolute deadlines (some already near, some far); after kill -9 every
    acknowledged write with a future deadline is back with its deadline, and no key whose deadline
    passed comes back."""
    path = tmp_path / "crash.aof"
    server = start_logged(start_server, path, "--fsync", "always")
    acknowledged = {}           # key -> (value, deadline ms)
    stop = threading.Event()
    now = int(time.time() * 1000)

    def writer(first):
        with server.connect() as sock:
            key = first
            while not stop.is_set():
                deadline = now + (50 if key % 3 == 0 else 10_000_000)
                try:
                    reply = resp(sock, "SET", key, key * 7, "PXAT", deadline)
                except (OSError, AssertionError):
                    return
                if reply == b"+OK\r\n":
                    acknowledged[key] = (key * 7, deadline)
                key += 4

    threads = [threading.Thread(target=writer, args=(first,)) for first in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) > 2000, timeout=30)
    server.proc.kill()
    server.proc.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    wait_for(lambda: int(time.time() * 1000) > now + 100, timeout=5)
    server = start_logged(start_server, path)
    with server.connect() as sock:
        for key, (value, deadline) in acknowledged.items():
            if deadline > now + 1000:
                assert resp(sock, "GET", key) == b"$%d\r\n%d\r\n" % (len(str(value)), value), key
                assert resp(sock, "PEXPIRETIME", key) == b":%d\r\n" % deadline
        near = [key for key, (_, deadline) in acknowledged.items() if deadline < now + 1000]
        assert near and all(resp(sock, "EXISTS", key) == b":0\r\n" for key in near)
        # at least every acknowledged live key (writes logged but not yet answered may be there too)
        assert int(resp(sock, "DBSIZE")[1:-2]) >= sum(deadline > now + 1000 for _, deadline in acknowledged.values())


def test_a_version_1_log_still_loads(start_server, tmp_path):
    from aof_format import header, rec_set
    path = tmp_path / "v1.aof"
    path.write_bytes(header(version=1) + rec_set(1, 2) + rec_set(3, 4))
    server = start_logged(start_server, path)
    with server.connect() as sock:
        assert resp(sock, "GET", 3) == b"$1\r\n4\r\n" and resp(sock, "SET", 5, 6, "EX", 100) == b"+OK\r\n"
    assert server.stop(signal.SIGTERM) == 0
    assert os.path.getsize(path) > 16
    server = start_logged(start_server, path)
    with server.connect() as sock:
        assert resp(sock, "TTL", 5) in (b":100\r\n", b":99\r\n")
