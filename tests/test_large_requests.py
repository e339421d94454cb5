"""Requests as large as Redis allows (client-query-buffer-limit, 1 GB, and
proto-max-bulk-len, 512 MB, by default): a 1M-key MGET, EXISTS and DEL work;
memory is never set aside for a request before its bytes arrive; and a refused
request's error reaches a client that writes the whole request before reading
(the server drains the rest instead of resetting the connection).
"""
import socket

import pytest

from conftest import command, read_until_closed

KEYS = 1_000_000
LIMIT = 1_000_000                   # the query buffer limit of the refusal tests


def read_reply_bytes(sock, expected_end: bytes, timeout=30.0) -> bytes:
    """Everything up to and including ``expected_end`` at the end of the data read."""
    sock.settimeout(timeout)
    data = bytearray()
    while not data.endswith(expected_end):
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(data)} bytes"
        data += chunk
    return bytes(data)


def resident_kib(pid) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_million_key_mget_exists_del_with_redis_py(redis_py):
    keys = range(KEYS)
    for key, value in ((0, 10), (500_000, 30), (999_999, 20)):
        redis_py.set(key, value)
    values = redis_py.mget(keys)
    assert len(values) == KEYS
    assert (values[0], values[500_000], values[999_999], values[1]) == (b"10", b"30", b"20", None)
    assert sum(value is not None for value in values) == 3
    assert redis_py.exists(*keys) == 3
    assert redis_py.delete(*keys) == 3
    assert redis_py.dbsize() == 0


def test_million_key_requests_over_raw_sockets(server):
    with server.connect() as sock:
        sock.sendall(command("SET", 7, 70) + command("SET", 999_999, 99))
        assert read_reply_bytes(sock, b"+OK\r\n+OK\r\n") == b"+OK\r\n+OK\r\n"
        mget = command("MGET", *range(KEYS))
        assert len(mget) > 11_000_000
        sock.sendall(mget)
        reply = read_reply_bytes(sock, b"$2\r\n99\r\n")
        assert reply.startswith(b"*%d\r\n" % KEYS)
        assert reply.count(b"$-1\r\n") == KEYS - 2 and b"$2\r\n70\r\n" in reply
        sock.sendall(command("EXISTS", *range(KEYS)) + command("DEL", *range(KEYS)) + command("DBSIZE"))
        assert read_reply_bytes(sock, b":0\r\n") == b":2\r\n:2\r\n:0\r\n"


def test_declared_sizes_reserve_no_memory(server):
    """Connections that each declare a 500 MB argument and send a little of it:
    the server's memory grows with what arrived, not with what was declared."""
    with server.connect() as probe:
        probe.sendall(command("PING"))
        assert read_reply_bytes(probe, b"+PONG\r\n") == b"+PONG\r\n"
    before = resident_kib(server.proc.pid)
    senders = [server.connect() for _ in range(10)]
    try:
        for sock in senders:
            sock.sendall(b"*2\r\n$4\r\nECHO\r\n$500000000\r\n" + b"x" * 100_000)
        with server.connect() as probe:         # every sender's bytes were read before this is answered
            probe.sendall(command("PING"))
            assert read_reply_bytes(probe, b"+PONG\r\n") == b"+PONG\r\n"
        assert resident_kib(server.proc.pid) - before < 50 * 1024        # 10 x 500 MB declared
    finally:
        for sock in senders:
            sock.close()


def send_everything_then_read(address, data: bytes) -> bytes:
    """A client that writes the whole request before reading a byte (as a
    blocking client does): it must read the error, then the end, not a reset."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout=30)


SMALL_LIMITS = ("--client-query-buffer-limit", str(LIMIT))
SMALL_BULKS = ("--proto-max-bulk-len", "1000")


@pytest.mark.parametrize("settings, data, error", [
    (SMALL_LIMITS, command("DEL", *range(300_000)), b"-ERR Protocol error: request too large\r\n"),
    (SMALL_LIMITS, command("ECHO", b"x" * 5_000_000), b"-ERR Protocol error: request too large\r\n"),
    (SMALL_BULKS, command("ECHO", b"x" * 5_000_000), b"-ERR Protocol error: invalid bulk length\r\n"),
    ((), b"*2\r\n$4\r\nECHO\r\n!" + b"x" * 5_000_000, b"-ERR Protocol error: expected '$', got '!'\r\n"),
    ((), b"get " + b"1" * 5_000_000 + b"\n", b"Invalid request: line too long\n"),     # the native line limit stays
    ((), b"ECHO \"unbalanced " + b"x" * 60_000 + b"\r\n" + b"y" * 5_000_000,
     b"-ERR Protocol error: unbalanced quotes in request\r\n"),
], ids=["too-many-arguments", "too-large-argument", "over-bulk-limit", "malformed", "native-line",
        "inline-quotes"])
def test_refused_request_error_reaches_a_client_still_writing(start_server, settings, data, error):
    server = start_server(*settings)
    assert len(data) > 1_000_000
    assert send_everything_then_read(server.address, data) == error
    with server.connect() as sock:                                      # and the server serves on
        sock.sendall(command("PING"))
        assert read_reply_bytes(sock, b"+PONG\r\n") == b"+PONG\r\n"


def test_query_buffer_limit_is_a_setting(start_server):
    server = start_server("--client-query-buffer-limit", str(LIMIT))
    within = command("EXISTS", *range(60_000))                          # ~0.6 MB: served
    with server.connect() as sock:
        sock.sendall(within)
        assert read_reply_bytes(sock, b":0\r\n") == b":0\r\n"
