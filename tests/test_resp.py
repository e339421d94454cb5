"""The Redis protocol front door, through redis-py 8 (RESP3 and RESP2) and raw sockets."""
import asyncio
import socket
import time

import pytest
import redis
import redis.asyncio

from conftest import command, exchange, request

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
def client(request, server):
    """redis-py with default settings (it sends HELLO 3 first) or with protocol=2."""
    options = {} if request.param == 3 else {"protocol": 2}
    connection = redis.Redis(host=server.host, port=server.port, **options)
    yield connection
    connection.close()


def raw(sock, data: bytes, expect_bytes: int = None, timeout=5.0) -> bytes:
    """Send raw bytes; read until ``expect_bytes`` arrived (or the server closes)."""
    sock.sendall(data)
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while (expect_bytes is None or len(received) < expect_bytes) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def send_until(sock, data: bytes, suffix: bytes, timeout=5.0) -> bytes:
    """Send ``data``; read until what arrived ends with ``suffix``; return it."""
    sock.sendall(data)
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while not received.endswith(suffix):
        assert time.monotonic() < deadline, f"no {suffix!r} in {received!r}"
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


# ---- redis-py, both protocol versions ------------------------------------------------

def test_default_redis_py_handshake_is_hello_3(server):
    client = redis.Redis(host=server.host, port=server.port)
    try:
        assert client.ping() is True
        connection = client.connection_pool.get_connection()
        try:
            metadata = connection.handshake_metadata
            assert metadata[b"proto"] == 3 and metadata[b"mode"] == b"standalone"
        finally:
            client.connection_pool.release(connection)
    finally:
        client.close()


def test_get_set_and_flags(client):
    assert client.get(1) is None
    assert client.set(1, 10) is True
    assert client.get(1) == b"10"
    assert client.set(1, 11) is True                      # SET overwrites
    assert client.get("0001") == b"11"                    # leading zeros: the same key
    assert client.set(1, 12, nx=True) is None             # NX on a present key: null, not an error
    assert client.get(1) == b"11"
    assert client.set(2, 20, nx=True) is True
    assert client.set(3, 30, xx=True) is None
    assert client.set(2, 21, xx=True) is True and client.get(2) == b"21"
    assert client.setnx(2, 5) is False and client.setnx(4, 40) is True
    assert client.set(INT64_MIN, INT64_MAX) and client.get(INT64_MIN) == str(INT64_MAX).encode()


def test_values_and_keys_must_be_integers(client):
    with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
        client.set(1, "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        client.set(1, 2**63)
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        client.set(1, "1.5")
    assert client.get(1) is None                          # nothing was stored
    with pytest.raises(redis.ResponseError, match="key is not an integer"):
        client.set("key:1", 5)
    with pytest.raises(redis.ResponseError, match="key is not an integer"):
        client.get("key:1")
    with pytest.raises(redis.ResponseError, match="key is not an integer"):
        client.delete(1, "x")
    assert client.dbsize() == 0


def test_del_exists_mget_dbsize_flushall(client):
    for key in (1, 2, 3):
        client.set(key, key)
    assert client.exists(1, 2, 9, 1) == 3                 # repeats count, as in Redis
    assert client.mget(1, 9, 3) == [b"1", None, b"3"]
    assert client.dbsize() == 3
    assert client.delete(1, 2, 9, 2) == 2
    assert client.dbsize() == 1
    assert client.flushall() is True
    assert client.dbsize() == 0 and client.get(3) is None


def test_increments(client):
    assert client.incr(7) == 1
    assert client.incr(7) == 2
    assert client.decr(7) == 1
    assert client.incrby(7, 100) == 101
    assert client.decrby(7, 1000) == -899
    assert client.decr(8) == -1
    client.set(9, INT64_MAX)
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        client.incr(9)
    assert client.get(9) == str(INT64_MAX).encode()       # unchanged
    client.set(10, INT64_MIN)
    with pytest.raises(redis.ResponseError, match="overflow"):
        client.decrby(10, 1)
    with pytest.raises(redis.ResponseError, match="overflow"):
        client.decrby(11, INT64_MIN)
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        client.incrby(7, "x")


def test_seed_commands_put_and_bye(client):
    assert client.execute_command("PUT", 5, 50) in (b"OK", True, "OK")
    with pytest.raises(redis.ResponseError, match="^Key already exists$"):
        client.execute_command("PUT", 5, 51)
    assert client.get(5) == b"50"


def test_ping_echo_select_info_config_command(client):
    assert client.ping() is True
    assert client.echo("hello") == b"hello"
    assert client.execute_command("SELECT", 0) in (b"OK", True, "OK")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        client.execute_command("SELECT", 1)
    client.set(1, 1)
    info = client.info()
    assert info["redis_version"] and info["connected_clients"] >= 1
    assert info["db0"]["keys"] == 1
    for field in ("used_memory", "total_commands_processed", "keyspace_hits", "keyspace_misses"):
        assert isinstance(info[field], int)
    assert set(client.info("keyspace")) == {"db0"}
    assert client.config_get("save") == {"save": ""} or client.config_get("save") == {b"save": b""}
    appendonly = client.config_get("appendonly")
    assert list(appendonly.values()) in ([b"no"], ["no"])
    assert client.execute_command("COMMAND COUNT") == len(client.execute_command("COMMAND"))
    assert client.client_id() >= 1
    assert client.client_setname("me") is True
    assert client.execute_command("CLIENT", "SETINFO", "LIB-NAME", "x") in (b"OK", True, "OK")


def test_wrong_arity_and_unknown_commands(client):
    with pytest.raises(redis.ResponseError, match="^wrong number of arguments for 'get' command$"):
        client.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="^wrong number of arguments for 'set' command$"):
        client.execute_command("SET", 1)
    with pytest.raises(redis.ResponseError,
                       match="^unknown command 'FOO', with args beginning with: 'a' 'b' $"):
        client.execute_command("FOO", "a", "b")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        client.execute_command("SET", 1, 2, "EX", 10, "KEEPTTL")
    assert client.ping() is True


def test_pipeline_of_ten_thousand(client):
    pipe = client.pipeline(transaction=False)
    for key in range(10_000):
        pipe.set(key, key * 2)
    for key in range(10_000):
        pipe.incr(key)
    for key in range(0, 10_000, 7):
        pipe.get(key)
    results = pipe.execute()
    assert results[:10_000] == [True] * 10_000
    assert results[10_000:20_000] == [key * 2 + 1 for key in range(10_000)]
    assert results[20_000:] == [str(key * 2 + 1).encode() for key in range(0, 10_000, 7)]
    assert client.dbsize() == 10_000


@pytest.mark.parametrize("protocol", [3, 2])
def test_asyncio_with_a_hundred_tasks(server, protocol):
    async def scenario():
        client = redis.asyncio.Redis(host=server.host, port=server.port, protocol=protocol,
                                     max_connections=100)

        async def task(index):
            for step in range(20):
                key = index * 100 + step
                assert await client.set(key, step) is True
                assert await client.incr(key) == step + 1
                assert await client.get(key) == str(step + 1).encode()
            return index

        try:
            done = await asyncio.wait_for(asyncio.gather(*(task(i) for i in range(100))), 60)
            assert sorted(done) == list(range(100))
            assert await client.dbsize() == 2000
        finally:
            await client.aclose()

    asyncio.run(scenario())


# ---- exact bytes ----------------------------------------------------------------------

def test_exact_reply_shapes_resp2_then_resp3(server):
    with server.connect() as sock:
        exchange(sock, command("GET", 1), b"$-1\r\n")
        exchange(sock, command("PING", "x y"), b"$3\r\nx y\r\n")
        exchange(sock, command("ping"), b"+PONG\r\n")
        exchange(sock, command("SET", 1, "-0042"), b"+OK\r\n")
        exchange(sock, command("GET", 1), b"$3\r\n-42\r\n")
        exchange(sock, command("MGET", 1, 2), b"*2\r\n$3\r\n-42\r\n$-1\r\n")
        exchange(sock, command("SET", 1, 5, "NX"), b"$-1\r\n")
        exchange(sock, command("DEL", 1, 1), b":1\r\n")
        hello = send_until(sock, command("HELLO", 3), b"$7\r\nmodules\r\n*0\r\n")
        assert hello.startswith(b"%7\r\n$6\r\nserver\r\n")
        assert b"$5\r\nproto\r\n:3\r\n" in hello and hello.endswith(b"$7\r\nmodules\r\n*0\r\n")
        exchange(sock, command("GET", 1), b"_\r\n")
        exchange(sock, command("HELLO", 4), b"-NOPROTO unsupported protocol version\r\n")
        exchange(sock, command("GET", 1), b"_\r\n")                     # still RESP3
        exchange(sock, command("HELLO", "x"), b"-ERR Protocol version is not an integer or out of range\r\n")
        hello2 = send_until(sock, command("HELLO", 2), b"$7\r\nmodules\r\n*0\r\n")
        assert hello2.startswith(b"*14\r\n$6\r\nserver\r\n") and b"$5\r\nproto\r\n:2\r\n" in hello2
        exchange(sock, command("GET", 1), b"$-1\r\n")
        exchange(sock, command("QUIT"), b"+OK\r\n")
        assert raw(sock, b"", None) == b""                            # closed


def test_native_and_resp_mix_on_one_connection(server):
    with server.connect() as sock:
        sock.sendall(b"put 1 2\r\n" + command("GET", 1) + b"get 1\n" + command("INCR", 1) + b"get 1\n")
        exchange(sock, b"", b"OK\n$1\r\n2\r\n2\n:3\r\n3\n")
        sock.sendall(command("BYE"))
        assert raw(sock, b"", None) == b"+Goodbye\r\n"


def test_native_set_incr_stats(server):
    with server.connect() as sock:
        assert request(sock, b"set 1 5") == b"OK"
        assert request(sock, b"set 1 6") == b"OK"
        assert request(sock, b"incr 1") == b"7"
        assert request(sock, b"incr 1 -10") == b"-3"
        assert request(sock, b"incr 2") == b"1"
        assert request(sock, b"set 3 9223372036854775807") == b"OK"
        assert request(sock, b"incr 3") == b"Invalid request: increment would overflow"
        assert request(sock, b"get 3") == b"9223372036854775807"
        assert request(sock, b"incr 1 x") == b"Invalid request: delta is not an integer"
        assert request(sock, b"set 1") == b"Invalid request: usage: set <key> <value> [ex <seconds>]"
        stats = dict(pair.split(b"=") for pair in request(sock, b"stats").split(b" "))
        assert stats[b"keys"] == b"3" and int(stats[b"connected_clients"]) >= 1
        assert int(stats[b"total_commands_processed"]) >= 10


# ---- hostile RESP ----------------------------------------------------------------------

PROTOCOL_ERRORS = [
    (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*2147483648\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),     # Redis 7: over INT_MAX
    (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$600000000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    (b"*1\r\nPING\r\n", b"-ERR Protocol error: expected '$', got 'P'\r\n"),
    (b"*1\r\n$4\r\nPINGPONG\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),   # length lies
    (b"*" + b"1" * 40 + b"\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$" + b"9" * 40, b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1x", b"-ERR Protocol error: invalid multibulk length\r\n"),       # refused before more bytes
    (b"*1\r\n$-0\r\n\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),   # a sign is never valid
    (b"*2\r\n$4\r\nECHO\r\n$-0\r\n\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (command("PING") * 5 + b"*2\r\n$4\r\nECHO\r\n$-0\r\n\r\n",
     b"+PONG\r\n" * 5 + b"-ERR Protocol error: invalid bulk length\r\n"),
]


@pytest.mark.parametrize("data,reply", PROTOCOL_ERRORS, ids=[repr(d[:16]) for d, _ in PROTOCOL_ERRORS])
def test_protocol_errors_reply_then_close_and_others_are_served(server, data, reply):
    with server.connect() as bystander, server.connect() as hostile:
        exchange(bystander, command("SET", 1, 2), b"+OK\r\n")
        exchange(hostile, command("GET", 1), b"$1\r\n2\r\n")
        assert raw(hostile, data, None) == reply              # the reply, then the close
        exchange(bystander, command("GET", 1), b"$1\r\n2\r\n")
    assert server.proc.poll() is None


def test_hello_with_many_options(server):
    with server.connect() as sock:
        request_bytes = command("HELLO", 3, *[word for _ in range(5000) for word in ("SETNAME", "x")])
        reply = send_until(sock, request_bytes, b"$7\r\nmodules\r\n*0\r\n")
        assert reply.startswith(b"%7\r\n") and b"$5\r\nproto\r\n:3\r\n" in reply


def test_empty_multibulk_is_ignored(server):
    with server.connect() as sock:
        exchange(sock, b"*0\r\n*-1\r\n" + command("PING"), b"+PONG\r\n")


def test_request_split_at_every_byte(server):
    stream = command("SET", 1, 100) + command("INCRBY", 1, -1) + command("MGET", 1, 2) + command("QUIT")
    expected = b"+OK\r\n:99\r\n*2\r\n$2\r\n99\r\n$-1\r\n+OK\r\n"
    for split in range(1, len(stream)):
        with server.connect() as sock:
            sock.sendall(stream[:split])
            time.sleep(0.002)            # paces the pieces so the server reads them apart: part of the test
            assert raw(sock, stream[split:], None) == expected, f"split at {split}"
    with server.connect() as sock:
        for index in range(len(stream)):
            sock.sendall(stream[index:index + 1])
            time.sleep(0.0005)           # paces the bytes so the server reads them apart: part of the test
        assert raw(sock, b"", None) == expected


def test_bulk_length_that_promises_more_waits_without_hurting_others(server):
    with server.connect() as liar, server.connect() as other:
        liar.sendall(b"*1\r\n$100\r\nPING\r\n")                  # 94 bytes short
        exchange(other, command("PING"), b"+PONG\r\n")
        liar.settimeout(0.3)
        with pytest.raises(socket.timeout):
            liar.recv(100)
    assert server.proc.poll() is None


def test_many_arguments_within_limits(server):
    keys = list(range(50_000))
    with server.connect() as sock:
        reply = raw(sock, command("DEL", *keys), 4)
        assert reply == b":0\r\n"
        reply = raw(sock, command("EXISTS", *keys), 4)
        assert reply == b":0\r\n"


def test_oversized_argument_list_is_refused_before_buffering(start_server):
    """A multibulk whose total grows past the request limit (here 1 MiB),
    argument by argument, is refused and closed; the server's memory does not
    grow with it."""
    server = start_server("--client-query-buffer-limit", str(1024 * 1024))
    with server.connect() as sock:
        header = b"*1000000\r\n"
        body = b"$1\r\n1\r\n" * 200_000                           # 1.4 MB of arguments
        try:
            sock.sendall(header + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(5)
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        assert received == b"-ERR Protocol error: request too large\r\n"
    with server.connect() as sock:
        assert request(sock, b"get 1") == b"Key not found"
