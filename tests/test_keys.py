"""The generic key commands and keyspace iteration (kvfast/_keys.pyx) through real clients: redis-py
(sync with both parsers, and redis.asyncio's scan_iter while another client grows and shrinks the
keyspace) and redis-cli's --scan, --bigkeys and --memkeys."""
import asyncio
import re
import socket
import subprocess
import threading

import pytest

from conftest import REDIS_PY_PARSERS, redis_py_client, require_tool
from test_redis_tools import tool_env


def test_type_touch_unlink(redis_py):
    redis_py.set(1, 10)
    redis_py.set(2, 20)
    assert redis_py.type(1) == b"string" and redis_py.type(3) == b"none"
    assert redis_py.touch(1, 2, 3, 1) == 3
    assert redis_py.unlink(1, 3) == 1
    assert redis_py.exists(1) == 0 and redis_py.get(2) == b"20"


def test_rename_and_copy(redis_py):
    import redis
    redis_py.set(1, 10)
    assert redis_py.rename(1, 2) is True
    assert redis_py.get(1) is None and redis_py.get(2) == b"10"
    with pytest.raises(redis.ResponseError, match="no such key"):
        redis_py.rename(1, 3)
    redis_py.set(3, 30)
    assert redis_py.renamenx(2, 3) is False and redis_py.renamenx(2, 4) is True
    assert redis_py.copy(4, 3) is False and redis_py.copy(4, 3, replace=True) is True
    assert redis_py.get(3) == b"10" and redis_py.get(4) == b"10"
    assert redis_py.copy(4, 5) is True and redis_py.get(5) == b"10"
    with pytest.raises(redis.ResponseError, match="same"):
        redis_py.copy(4, 4)
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        redis_py.copy(4, 6, destination_db=1)


def test_object_and_memory(redis_py):
    import redis
    redis_py.set(7, -123)
    assert redis_py.object("encoding", 7) in ("int", b"int")
    assert redis_py.object("refcount", 7) == 1
    assert redis_py.object("idletime", 7) == 0
    assert redis_py.object("encoding", 8) is None
    with pytest.raises(redis.ResponseError, match="LFU"):
        redis_py.object("freq", 7)
    assert redis_py.memory_usage(7) == 16 and redis_py.memory_usage(8) is None
    assert redis_py.memory_usage(7, samples=0) == 16


def test_randomkey_finds_every_key(redis_py):
    """RANDOMKEY: null on an empty keyspace; over 10 keys, each one comes up (about uniform)."""
    assert redis_py.randomkey() is None
    for key in range(10):
        redis_py.set(key, key)
    counts = {}
    for _ in range(2000):
        key = int(redis_py.randomkey())
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == set(range(10))
    assert min(counts.values()) > 20


def test_randomkey_in_a_sparse_table(redis_py):
    """After most keys are deleted (the table not shrunk yet, or a near-empty one), the keys left are found."""
    pipe = redis_py.pipeline(transaction=False)
    for key in range(20_000):
        pipe.set(key, key)
    pipe.execute()
    for start in range(0, 20_000, 1000):
        redis_py.delete(*[key for key in range(start, start + 1000) if key not in (5, 17_000)])
    assert {int(redis_py.randomkey()) for _ in range(200)} == {5, 17_000}


def test_keys_and_scan(redis_py):
    for key in range(-5, 120):
        redis_py.set(key, 1)
    assert sorted(int(key) for key in redis_py.keys("1?")) == list(range(10, 20))
    assert sorted(int(key) for key in redis_py.keys("-*")) == list(range(-5, 0))
    assert sorted(int(key) for key in redis_py.scan_iter(match="*9", count=5)) == [9, 19, 29, 39, 49, 59, 69, 79,
                                                                                  89, 99, 109, 119]
    assert sorted(int(key) for key in redis_py.scan_iter(_type="string")) == list(range(-5, 120))
    assert list(redis_py.scan_iter(_type="hash")) == []
    cursor, keys = redis_py.scan(0, count=1)
    assert cursor != 0 and len(keys) < 10


def test_scan_call_is_bounded_on_a_sparse_table(redis_py):
    """Redis's bound: a call walks at most COUNT * 10 slots, so on a big, nearly empty table one
    SCAN returns few keys (or none) with a cursor to go on from, rather than walking everything.
    (How few depends on how far the table has shrunk meanwhile: not all of the 10, and not the end.)"""
    pipe = redis_py.pipeline(transaction=False)
    for key in range(50_000):
        pipe.set(key, key)
    pipe.execute()
    for start in range(0, 50_000, 1000):
        redis_py.delete(*[key for key in range(start, start + 1000) if key % 5000 != 0])
    cursor, keys = redis_py.scan(0, count=1)
    assert cursor != 0 and len(keys) < 10
    assert sorted(int(key) for key in redis_py.scan_iter(count=1)) == list(range(0, 50_000, 5000))


# ---- scan_iter while the keyspace grows from 200k to 2M keys and loses a tenth ----

PRELOADED = 200_000
FINAL = 2_000_000
CHUNKS = 100                      # the writer's steps; the scanner waits for one after each page


def set_request(key):
    text = b"%d" % key
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(text), text)


def del_request(key):
    text = b"%d" % key
    return b"*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n" % (len(text), text)


def pipelined(sock, requests, reply_bytes):
    """Send one batch of requests and read their replies (whose total size is known)."""
    sock.sendall(b"".join(requests))
    received = 0
    while received < reply_bytes:
        chunk = sock.recv(1 << 20)
        assert chunk, "server closed the connection"
        received += len(chunk)


class Writer(threading.Thread):
    """Grows the keyspace from PRELOADED to FINAL keys and deletes every key ending in 3 (a tenth of
    them, preloaded or not), in CHUNKS pipelined steps over its own connection."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.address = address
        self.done = 0
        self.error = None
        self.progress = threading.Condition()

    def run(self):
        try:
            with socket.create_connection(self.address, timeout=60) as sock:
                per_chunk = (FINAL - PRELOADED) // CHUNKS
                for chunk in range(CHUNKS):
                    new = range(PRELOADED + chunk * per_chunk, PRELOADED + (chunk + 1) * per_chunk)
                    old = range(chunk * PRELOADED // CHUNKS, (chunk + 1) * PRELOADED // CHUNKS)
                    doomed = [key for key in (*old, *new) if key % 10 == 3]
                    pipelined(sock, [set_request(key) for key in new], 5 * len(new))     # "+OK\r\n"
                    pipelined(sock, [del_request(key) for key in doomed], 4 * len(doomed))   # ":1\r\n"
                    with self.progress:
                        self.done = chunk + 1
                        self.progress.notify_all()
        except BaseException as error:   # reported by the test
            self.error = error
            with self.progress:
                self.done = CHUNKS
                self.progress.notify_all()

    def wait_for(self, chunks):
        with self.progress:
            self.progress.wait_for(lambda: self.done >= chunks, timeout=60)


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
def test_scan_iter_while_keyspace_grows_and_shrinks(server, parser):
    """Every key present from the start of a scan_iter to its end is returned (the preloaded keys
    not deleted), while another connection inserts 1.8M keys (the table grows through several
    resizes) and deletes a tenth of all keys. The scanner waits for one more writer step after
    each page for the first CHUNKS pages, so the growth really happens in the middle of the scan."""
    with socket.create_connection(server.address, timeout=60) as sock:
        for start in range(0, PRELOADED, 20_000):
            pipelined(sock, [set_request(key) for key in range(start, start + 20_000)], 5 * 20_000)
    writer = Writer(server.address)

    async def scan():
        client = redis_py_client(server, parser, asyncio=True)
        seen, pages = set(), 0
        try:
            async for key in client.scan_iter(count=1000):
                seen.add(int(key))
                if len(seen) // 1000 > pages and pages < CHUNKS:
                    pages += 1
                    if pages == 1:
                        writer.start()
                    await asyncio.to_thread(writer.wait_for, pages)
        finally:
            await client.aclose()
        return seen

    seen = asyncio.run(scan())
    writer.join(timeout=120)
    assert writer.error is None and writer.done == CHUNKS
    survivors = {key for key in range(PRELOADED) if key % 10 != 3}
    assert not survivors - seen
    assert all(0 <= key < FINAL for key in seen)


# ---- redis-cli --scan, --bigkeys, --memkeys ----

def redis_cli(server, home, *arguments, timeout=60):
    result = subprocess.run([require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(server.port), *arguments],
                            capture_output=True, text=True, timeout=timeout, env=tool_env(home))
    return result.stdout, result.stderr


@pytest.fixture
def thousand_keys(server):
    """Keys 0..999 with values of 1 or 2 digits (and key 42 holding the longest, -1000000)."""
    client = redis_py_client(server, "hiredis")
    pipe = client.pipeline(transaction=False)
    for key in range(1000):
        pipe.set(key, key % 97)
    pipe.set(42, -1000000)
    pipe.execute()
    yield client
    client.close()


def test_redis_cli_scan(server, thousand_keys, tmp_path):
    out, _ = redis_cli(server, tmp_path, "--scan")
    assert sorted(int(line) for line in out.split()) == list(range(1000))
    out, _ = redis_cli(server, tmp_path, "--scan", "--pattern", "9?")
    assert sorted(int(line) for line in out.split()) == list(range(90, 100))
    out, _ = redis_cli(server, tmp_path, "--scan", "--pattern", "*[05]")
    assert sorted(int(line) for line in out.split()) == [key for key in range(1000) if key % 5 == 0]


def has_strlen():
    """Whether STRLEN exists yet (another part of issue 13): --bigkeys sizes strings with it."""
    from kvfast._resp import command_names
    return "strlen" in command_names()


def test_redis_cli_bigkeys(server, thousand_keys, tmp_path):
    """--bigkeys samples every key through SCAN and TYPE, and sizes strings with STRLEN: with STRLEN,
    the biggest string is key 42 (8 bytes, "-1000000"); without it, redis-cli warns per key and
    reports sizes of 0, still finishing."""
    out, err = redis_cli(server, tmp_path, "--bigkeys")
    assert "Sampled 1000 keys in the keyspace!" in out
    assert re.search(r"1000 strings with \d+ bytes", out), out
    if has_strlen():
        assert "Biggest string found '\"42\"' has 8 bytes" in out, out
        assert not err.strip()
    else:
        assert "STRLEN on" in err


def test_redis_cli_memkeys(server, thousand_keys, tmp_path):
    """--memkeys: SCAN, TYPE and MEMORY USAGE ... SAMPLES; every key costs its slot, 16 bytes."""
    out, err = redis_cli(server, tmp_path, "--memkeys")
    assert "Sampled 1000 keys in the keyspace!" in out, out + err
    assert "1000 strings with 16000 bytes" in out, out
    assert re.search(r"Biggest string found '\"\d+\"' has 16 bytes", out), out
    assert not err.strip(), err
    out, err = redis_cli(server, tmp_path, "--memkeys-samples", "0", "--memkeys")
    assert "1000 strings with 16000 bytes" in out, out + err


# ---- the log ----

def test_rename_copy_unlink_survive_a_restart(start_server, tmp_path):
    """RENAME, RENAMENX, COPY and UNLINK are logged as their effects (sets and deletes): replayed
    after a kill -9, the store is what it was."""
    from differential import RawClient
    path = tmp_path / "keys.aof"
    first = start_server("--appendonly", str(path), "--fsync", "always")
    with RawClient(first.address) as client:
        for words in [("SET", 1, 10), ("SET", 2, 20), ("SET", 3, 30), ("RENAME", 1, 4), ("RENAMENX", 2, 5),
                      ("COPY", 3, 6), ("COPY", 4, 5, "REPLACE"), ("UNLINK", 3, 9)]:
            assert not client.call(*words).startswith(b"-")
    first.proc.kill()
    first.proc.wait(10)
    second = start_server("--appendonly", str(path))
    with RawClient(second.address) as client:
        assert client.call("KEYS", "*").count(b"$") == 3
        assert [client.call("GET", key) for key in (1, 2, 3, 4, 5, 6)] == \
            [b"$-1\r\n", b"$-1\r\n", b"$-1\r\n", b"$2\r\n10\r\n", b"$2\r\n10\r\n", b"$2\r\n30\r\n"]
