"""Redis's inline protocol: a text line whose first word is a RESP command the
native protocol does not have (PING, ECHO, INFO, ...) is split as Redis's
sdssplitargs splits it and answered with RESP replies; a line starting with a
native command word (get, set, del, incr, put, stats, auth, bye, in any case)
keeps its native reply. redis-benchmark's PING_INLINE depends on it.
"""
import re
import socket

import pytest

from conftest import command, read_until_closed, request
from test_redis_tools import assert_final_line, benchmark_lines, run_benchmark

# Inline lines whose replies kvfast and redis-server agree on byte for byte
# (integer keys, no native command word first).
SAME_AS_REDIS = [
    b"PING", b"ping", b"PiNg hello", b"  PING   \t", b"PING a b",
    b'ECHO "a b"', b"ECHO 'it\\'s'", b'ECHO "\\x41\\x4a\\n\\r\\t\\b\\a\\q\\\\"', b'ECHO "\\xZZ"',
    b"ECHO a\"b c\"d", b"ECHO 'x'", b"ECHO \"\"", b"ECHO ''", b"ECHO \x0bvt",
    b"SETNX 5 6", b"SETNX 5 7", b"EXISTS 5 6 5", b"MGET 5 6", b"INCRBY 5 10", b"DECRBY 5 1", b"DECR 5",
    b"DBSIZE", b"ECHO", b"PING 1 2 3", b"SELECT 0", b"FLUSHALL", b"EXISTS 5",
    b"", b"   ",
]
# Deliberate difference: Redis looks for an inline line's end with strchr, so a
# NUL byte hides it and the connection hangs; kvfast ends the line's words at
# the NUL (as sdssplitargs does) and answers: ECHO a\0b is "a".
# Lines after which Redis (and kvfast) reply with a protocol error and close.
UNBALANCED = [b'ECHO "abc', b"ECHO 'abc", b'ECHO "a"b', b"ECHO 'a'b", b'ECHO "a\\"']


def replies(address, lines, ending=b"\r\n") -> bytes:
    """Everything a server replies to ``lines`` (then QUIT, inline too) on one connection."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"".join(line + ending for line in lines) + b"QUIT" + ending)
        return read_until_closed(sock)


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_inline_replies_match_redis(server, redis_server, ending):
    with socket.create_connection(redis_server.address) as flush:
        flush.sendall(command("FLUSHALL"))
        assert flush.recv(100) == b"+OK\r\n"
    for line in SAME_AS_REDIS:          # each alone, so a difference names its line
        assert replies(server.address, [line], ending) == replies(redis_server.address, [line], ending), line
    assert replies(server.address, SAME_AS_REDIS, ending) == replies(redis_server.address, SAME_AS_REDIS, ending)


@pytest.mark.parametrize("line", UNBALANCED)
def test_unbalanced_quotes_are_a_protocol_error_as_in_redis(server, redis_server, line):
    ours, theirs = replies(server.address, [line, b"PING"]), replies(redis_server.address, [line, b"PING"])
    assert ours == theirs == b"-ERR Protocol error: unbalanced quotes in request\r\n"


def test_nul_ends_an_inline_line(server):
    assert replies(server.address, [b"ECHO a\x00b c"]) == b"$1\r\na\r\n+OK\r\n"


def test_inline_info_and_hello(server):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"INFO replication\r\n")
        header = b""
        while not header.endswith(b"\r\n"):
            header += sock.recv(1)
        assert re.fullmatch(rb"\$\d+\r\n", header)
        body = b""
        while len(body) < int(header[1:]) + 2:
            body += sock.recv(65536)
        assert body.startswith(b"# Replication\r\nrole:master\r\n")
        sock.sendall(b"HELLO 3\r\nINFO replication\r\n")
        data = b""
        while b"=" not in data or not data.endswith(b"\r\n\r\n"):
            data += sock.recv(65536)
        assert data.startswith(b"%7\r\n") and b"=" in data and b"txt:# Replication" in data


def test_native_commands_keep_native_replies_in_any_case(server):
    """The native words win, whatever their case: GET 1 is the native get (the
    native protocol reads command words without regard to case)."""
    with server.connect() as sock:
        assert request(sock, b"GET 1") == b"Key not found"
        assert request(sock, b"Set 1 2") == b"OK"
        assert request(sock, b"get 1") == b"2"
        assert request(sock, b"INCR 1 5") == b"7"
        assert request(sock, b"PUT 1 2") == b"Key already exists"
        assert request(sock, b"DEL 1") == b"OK"
        assert request(sock, b"foo 1") == b"Invalid request: unknown command 'foo'"
        assert request(sock, b"STATS").startswith(b"keys=0 ")
        sock.sendall(b"PING\r\n")                  # inline RESP in the same connection
        assert sock.recv(100) == b"+PONG\r\n"
        assert request(sock, b"BYE") == b"Goodbye"


def test_inline_native_and_resp_pipelined_on_one_connection(server):
    stream = (b"SETNX 3 4\r\n" + b"get 3\n" + command("GET", 3) + b"PING hi\n" + b"incr 3\n"
              + command("INCRBY", 3, 2) + b"ECHO 'done'\r\nbye\n")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(stream)
        assert read_until_closed(sock) == (b":1\r\n" + b"4\n" + b"$1\r\n4\r\n" + b"$2\r\nhi\r\n" + b"5\n"
                                           + b":7\r\n" + b"$4\r\ndone\r\n" + b"Goodbye\n")


def test_inline_commands_need_authentication_as_resp_does(start_server):
    server = start_server(env={"KVFAST_PASSWORD": "secret"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"-NOAUTH Authentication required.\r\n"
        sock.sendall(b"AUTH secret\r\n")               # the native auth: a native word
        assert sock.recv(100) == b"OK\n"
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"


@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_redis_benchmark_ping_completes(server, pipeline):
    status, output = run_benchmark(server.port, "-q", "-n", "2000", "-t", "ping", "-P", pipeline)
    assert status == 0, output
    lines = benchmark_lines(output)
    finals = [line for line in lines if "requests per second" in line and "rps=" not in line]
    assert [line.split(":")[0] for line in finals] == ["PING_INLINE", "PING_MBULK"], output
    assert_final_line("\n".join(finals[:1]), "PING_INLINE")
    assert_final_line(output, "PING_MBULK")


def test_redis_benchmark_default_suite_runs_until_its_string_keys(server):
    """With no -t, redis-benchmark 7 runs PING_INLINE and PING_MBULK, then SET
    with its string key ``key:__rand_int__``: the integer-key error, on which
    redis-benchmark stops (it exits at the first error reply)."""
    status, output = run_benchmark(server.port, "-q", "-n", "2000")
    lines = benchmark_lines(output)
    finals = [line.split(":")[0] for line in lines if "requests per second" in line and "rps=" not in line]
    assert finals == ["PING_INLINE", "PING_MBULK"], output
    assert "Error from server: ERR key is not an integer or out of range" in lines, output
    assert "unknown command" not in output and "Invalid request" not in output, output
    assert status != 0
