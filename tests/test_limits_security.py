"""Limits and security through real sockets: max clients, idle timeout,
passwords (native and RESP, redis-py and kvfast.Client), protected mode."""
import os
import select
import socket
import time

import pytest
import redis

import kvfast
from conftest import command, exchange, read_until_closed, request
from helpers import wait_for

PASSWORD = "s3cret-pass"


def info(address, password=None):
    client = redis.Redis(*address, protocol=2, password=password, driver_info=None)
    try:
        return client.info()
    finally:
        client.close()


def read_available(stream, collected: bytearray) -> bytearray:
    """Append to ``collected`` what a child's pipe holds now, without blocking; return it."""
    while select.select([stream], [], [], 0)[0]:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        collected += chunk
    return collected


def with_password(start_server, *args):
    return start_server(*args, env={**os.environ, "KVFAST_PASSWORD": PASSWORD})


# ---- max clients ---------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["native", "resp"])
def test_one_client_over_the_limit_is_refused_in_its_protocol(start_server, protocol):
    server = start_server("--max-clients", "3")
    held = [server.connect() for _ in range(3)]
    try:
        for sock in held:
            assert request(sock, b"get 1") == b"Key not found"
        with server.connect() as extra:
            if protocol == "native":
                extra.sendall(b"get 1\n")
                assert read_until_closed(extra) == b"Error: max number of clients reached\n"
            else:
                extra.sendall(command("GET", 1))
                assert read_until_closed(extra) == b"-ERR max number of clients reached\r\n"
        held.pop().close()                                   # room again
        replies = []

        def slot_free():
            with server.connect() as again:
                replies.append(request(again, b"get 1"))
            return replies[-1] == b"Key not found"

        wait_for(slot_free, 5, message=lambda: f"a slot to be free again (last reply {replies[-1]!r})")
        reply = replies[-1]
        assert reply == b"Key not found"
        assert info(server.address)["rejected_connections"] >= 1
    finally:
        for sock in held:
            sock.close()


def test_refused_client_that_never_speaks_is_closed(start_server):
    server = start_server("--max-clients", "1")
    with server.connect() as first, server.connect() as silent:
        assert request(first, b"get 1") == b"Key not found"
        assert read_until_closed(silent, timeout=5) == b""       # closed after the grace period


# ---- idle timeout --------------------------------------------------------------------

def test_idle_clients_are_closed_after_the_timeout(start_server):
    server = start_server("--timeout", "1")
    with server.connect() as idle, server.connect() as busy:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:     # 2 s of idleness for ``idle`` is what is tested
            assert request(busy, b"get 1") == b"Key not found"    # keeps busy active
            time.sleep(0.2)                         # paces busy's requests (well within its 1 s timeout)
        assert read_until_closed(idle, timeout=5) == b""
        assert request(busy, b"get 1") == b"Key not found"
    assert info(server.address)["timed_out_clients"] >= 1
    with server.connect() as sock:
        stats = dict(pair.split(b"=") for pair in request(sock, b"stats").split(b" "))
        assert int(stats[b"timed_out_clients"]) >= 1


def test_no_timeout_by_default(server):
    with server.connect() as sock:
        time.sleep(1.5)                        # idle for 1.5 s is what is tested: no timeout closes it
        assert request(sock, b"get 1") == b"Key not found"


# ---- passwords, native protocol ---------------------------------------------------------

def test_native_auth(start_server):
    server = with_password(start_server)
    with server.connect() as sock:
        assert request(sock, b"get 1") == b"Authentication required"
        assert request(sock, b"put 1 2") == b"Authentication required"
        assert request(sock, b"stats") == b"Authentication required"
        assert request(sock, b"auth wrong") == b"Invalid password"
        assert request(sock, b"auth") == b"Invalid request: usage: auth <password>"
        assert request(sock, b"auth " + PASSWORD.encode()) == b"OK"
        assert request(sock, b"put 1 2") == b"OK"
        assert request(sock, b"get 1") == b"2"
    with server.connect() as sock:
        assert request(sock, b"bye") == b"Goodbye"               # bye needs no password
    assert info(server.address, PASSWORD)["auth_failures"] >= 1


def test_native_lines_are_small_until_authenticated(start_server):
    server = with_password(start_server)
    with server.connect() as sock:
        sock.sendall(b"get " + b"1" * 2000 + b"\n")
        assert read_until_closed(sock) == b"Invalid request: line too long\n"
    with server.connect() as sock:
        assert request(sock, b"auth " + PASSWORD.encode()) == b"OK"
        assert request(sock, b"get " + b"0" * 2000 + b"1") == b"Key not found"


def test_auth_without_a_password_set(server):
    with server.connect() as sock:
        assert request(sock, b"auth x") == b"Invalid request: no password is set"
        exchange(sock, command("AUTH", "x"),
                 b"-ERR AUTH <password> called without any password configured for the default user. "
                 b"Are you sure your configuration is correct?\r\n")


def test_kvfast_client_password(start_server):
    server = with_password(start_server)
    with kvfast.Client(*server.address, password=PASSWORD) as client:
        client.put(5, 6)
        assert client.get(5) == 6
    with pytest.raises(kvfast.AuthenticationError):
        kvfast.Client(*server.address, password="nope")


# ---- passwords, RESP -----------------------------------------------------------------------

def test_resp_auth_rules(start_server):
    server = with_password(start_server)
    with server.connect() as sock:
        exchange(sock, command("GET", 1), b"-NOAUTH Authentication required.\r\n")
        exchange(sock, command("PING"), b"-NOAUTH Authentication required.\r\n")
        exchange(sock, command("HELLO", 3), b"-NOAUTH HELLO must be called with the client already "
                 b"authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                 b"authenticate the client and select the RESP protocol version at the same time\r\n")
        exchange(sock, command("AUTH", "wrong"),
                 b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        exchange(sock, command("AUTH", "someone", PASSWORD),
                 b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        exchange(sock, command("AUTH", "default", PASSWORD), b"+OK\r\n")
        exchange(sock, command("SET", 1, 2), b"+OK\r\n")
    with server.connect() as sock:
        exchange(sock, command("AUTH", PASSWORD), b"+OK\r\n")
        exchange(sock, command("GET", 1), b"$1\r\n2\r\n")
    with server.connect() as sock:
        exchange(sock, command("QUIT"), b"+OK\r\n")               # QUIT needs no password


def test_resp_requests_are_small_until_authenticated(start_server):
    server = with_password(start_server)
    with server.connect() as sock:
        sock.sendall(b"*11\r\n")
        assert read_until_closed(sock) == b"-ERR Protocol error: invalid multibulk length\r\n"
    with server.connect() as sock:
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$20000\r\n")
        assert read_until_closed(sock) == b"-ERR Protocol error: invalid bulk length\r\n"


@pytest.mark.parametrize("protocol", [3, 2])
def test_redis_py_password(start_server, protocol):
    server = with_password(start_server)
    client = redis.Redis(*server.address, protocol=protocol, password=PASSWORD)
    try:
        assert client.set(1, 10) is True and client.incr(1) == 11
    finally:
        client.close()
    wrong = redis.Redis(*server.address, protocol=protocol, password="nope")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    anonymous = redis.Redis(*server.address, protocol=2, driver_info=None)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get(1)
    anonymous.close()


# ---- protected mode --------------------------------------------------------------------

def connect_from(source_ip, address):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.connect(address)
    return sock


@pytest.mark.parametrize("protocol", ["native", "resp"])
def test_protected_mode_refuses_other_peers(start_server, protocol):
    """Listening on 127.0.0.2 (not 127.0.0.1) with no password: protected mode.
    A peer from 127.0.0.3 is refused with an explanation; 127.0.0.1 is served.
    All of it stays on loopback."""
    server = start_server("--host", "127.0.0.2")
    assert server.host == "127.0.0.2"
    assert "protected mode" in server.proc.stderr.readline().decode()
    with connect_from("127.0.0.3", server.address) as stranger:
        if protocol == "native":
            stranger.sendall(b"get 1\n")
            reply = read_until_closed(stranger)
            assert reply.startswith(b"Error: kvfast is running in protected mode") and reply.endswith(b"\n")
        else:
            stranger.sendall(command("GET", 1))
            reply = read_until_closed(stranger)
            assert reply.startswith(b"-DENIED kvfast is running in protected mode") and reply.endswith(b"\r\n")
        assert b"--protected-mode no" in reply
    with connect_from("127.0.0.1", server.address) as local:
        assert request(local, b"get 1") == b"Key not found"


def test_protected_mode_off_or_with_password(start_server):
    open_server = start_server("--host", "127.0.0.2", "--protected-mode", "no")
    with connect_from("127.0.0.3", open_server.address) as peer:
        assert request(peer, b"get 1") == b"Key not found"
    guarded = with_password(start_server, "--host", "127.0.0.2")
    with connect_from("127.0.0.3", guarded.address) as peer:
        assert request(peer, b"get 1") == b"Authentication required"
        assert request(peer, b"auth " + PASSWORD.encode()) == b"OK"
        assert request(peer, b"get 1") == b"Key not found"


def test_refusals_are_logged_once_per_interval_not_per_client(start_server):
    server = start_server("--max-clients", "1")
    with server.connect() as first:
        assert request(first, b"get 1") == b"Key not found"
        for _ in range(20):
            with server.connect() as extra:
                extra.sendall(b"get 1\n")
                assert read_until_closed(extra) == b"Error: max number of clients reached\n"
        # A sweep (at most every 250 ms, when an event wakes the loop) writes the log line.
        logged = bytearray()

        def refusals_logged():
            assert request(first, b"get 1") == b"Key not found"     # wakes the loop
            return b"clients refused" in read_available(server.proc.stderr, logged)

        wait_for(refusals_logged, 10, interval=0.1,
                 message=lambda: f"the refusals' log line; stderr so far {bytes(logged)!r}")
        assert request(first, b"get 1") == b"Key not found"
    assert server.stop() == 0
    log = (bytes(logged) + server.proc.stderr.read()).decode()
    lines = [line for line in log.splitlines() if "max number of clients reached" in line]
    assert len(lines) == 1, log
    assert "clients refused" in lines[0]
