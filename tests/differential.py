"""Differential testing against the reference: the real ``redis-server``.

Redis is the reference for every RESP command kvfast has. A differential test
sends the same command sequence over raw sockets to a kvfast server and to a
redis-server, one command at a time, and compares the two replies byte for
byte (:func:`assert_same_replies`). Documented differences are left out by the
generators that build the sequences (see the README's table), never by
rewriting a reply.

* :func:`start_redis` (and the ``redis_server`` fixture of conftest) runs
  ``redis-server`` on a free loopback port, with no persistence, and stops it
  with SIGTERM.
* :class:`RawClient` sends a request and reads exactly one whole reply (RESP2
  or RESP3), as raw bytes.
* :func:`random_key`, :func:`random_value` draw the integers the sequences use:
  a few keys, so that commands collide on them; values near the int64 edges
  now and then, always in canonical decimal (``007`` is a documented
  difference: kvfast stores the integer 7).
"""
import random
import socket
import subprocess
import time

from conftest import command, require_tool, stop_process
from helpers import free_port, wait_for

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


class RedisProcess:
    """A ``redis-server`` on 127.0.0.1:``port``, no persistence, no protected mode."""

    def __init__(self, *extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [require_tool("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", "", "--loglevel", "warning", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        wait_for(self._answers_ping, timeout=15.0, message="redis-server to answer PING")

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def _answers_ping(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.proc.stderr.read()!r}")
        try:
            with RawClient(self.address, timeout=1.0) as client:
                return client.call("PING") == b"+PONG\r\n"
        except OSError:
            return False

    def close(self):
        stop_process(self.proc)
        self.proc.stderr.close()


def start_redis(*extra):
    return RedisProcess(*extra)


class RawClient:
    """One connection sending RESP requests and reading whole replies as bytes."""

    def __init__(self, address, timeout=10.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def call(self, *words):
        """Send one request (``words`` as bytes or anything str() spells); return its reply's bytes."""
        self.sock.sendall(command(*words))
        return self.read_reply()

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def read_reply(self) -> bytes:
        """Exactly one reply, whatever its type and nesting."""
        end = None
        while end is None:
            end = reply_end(self.buffer, 0)
            if end is None:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError(f"closed after {bytes(self.buffer)!r}")
                self.buffer += chunk
        reply = bytes(self.buffer[:end])
        del self.buffer[:end]
        return reply


AGGREGATES = b"*%~>"          # arrays, maps (2 per entry), sets, pushes
BLOBS = b"$=!"                # bulk, verbatim and blob-error strings


def reply_end(data, at):
    """Offset just past the whole reply starting at ``at``, or None if incomplete."""
    line_end = data.find(b"\r\n", at)
    if line_end < 0:
        return None
    kind, header = data[at], bytes(data[at + 1:line_end])
    after = line_end + 2
    if kind in BLOBS:
        size = int(header)
        if size < 0:
            return after
        return after + size + 2 if len(data) >= after + size + 2 else None
    if kind in AGGREGATES:
        count = int(header)
        count *= 2 if kind == ord("%") else 1
        for _ in range(max(count, 0)):
            after = reply_end(data, after)
            if after is None:
                return None
        return after
    return after           # + - : _ , # ( simple one-line types


def assert_same_replies(kvfast_address, redis_address, sequence, *, connections=1, seed=None):
    """Send each request of ``sequence`` to both servers and compare the replies byte for byte.

    ``sequence`` holds tuples of words; with ``connections`` > 1, a request may
    start with an int ``i`` in a 1-tuple prefix form ``(i, words)`` to pick the
    connection (transactions and WATCH need several). Both servers are flushed
    first. Raises AssertionError naming the first request whose replies differ,
    with the requests before it.
    """
    clients = [(RawClient(kvfast_address), RawClient(redis_address)) for _ in range(connections)]
    try:
        for ours, theirs in clients[:1]:
            assert ours.call("FLUSHALL") == theirs.call("FLUSHALL") == b"+OK\r\n"
        history = []
        for item in sequence:
            index, words = (item[0], item[1]) if isinstance(item[0], int) and not isinstance(item[0], bool) \
                and len(item) == 2 and isinstance(item[1], tuple) else (0, item)
            ours, theirs = clients[index]
            history.append((index, words))
            got, expected = ours.call(*words), theirs.call(*words)
            if got != expected:
                shown = "\n".join(f"  [{i}] {w!r}" for i, w in history[-30:])
                raise AssertionError(f"seed {seed}: replies differ for {words!r} on connection {index}\n"
                                     f"kvfast: {got!r}\nredis:  {expected!r}\nlast requests:\n{shown}")
    finally:
        for ours, theirs in clients:
            ours.close()
            theirs.close()


def random_key(rng: random.Random, keys=8):
    return str(rng.randrange(keys))


def random_value(rng: random.Random):
    roll = rng.random()
    if roll < 0.05:
        return str(rng.choice((INT64_MIN, INT64_MAX, INT64_MAX - 1, INT64_MIN + 1)))
    return str(rng.randrange(-1000, 1000))


def timed(seconds):
    """An iterator that yields until ``seconds`` pass (bounds a random run in time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield
