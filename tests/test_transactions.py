"""Transactions with real clients and raw sockets: redis-py's default pipeline (a MULTI/EXEC
transaction) and its WATCH retry loop under contention, sync and asyncio, with each parser;
the queue's end with its connection, its memory bound, RESET, and the null array of RESP3."""
import asyncio
import os
import socket
import threading

import pytest
import redis

from conftest import REDIS_PY_PARSERS, command, exchange, redis_py_client
from helpers import wait_for
from differential import RawClient


def call(sock, *words, expected):
    exchange(sock, command(*words), expected)


def test_default_pipeline_is_a_transaction(redis_py):
    pipe = redis_py.pipeline()                  # transaction=True: MULTI ... EXEC
    pipe.set(1, 10).incr(1).incrby(2, 5).get(1).mget(1, 2, 3)
    assert pipe.execute() == [True, 11, 5, b"11", [b"11", b"5", None]]


def test_pipeline_runtime_error_is_one_reply_the_rest_runs(redis_py):
    redis_py.set(1, 2**63 - 1)
    pipe = redis_py.pipeline()
    pipe.incr(1).set(2, 7)
    with pytest.raises(redis.ResponseError, match="overflow"):
        pipe.execute()
    assert redis_py.get(2) == b"7"
    pipe = redis_py.pipeline()
    pipe.incr(1).set(3, 8)
    assert [type(x) for x in pipe.execute(raise_on_error=False)] == [redis.ResponseError, bool]


def test_queueing_error_aborts_the_whole_transaction(redis_py):
    pipe = redis_py.pipeline()
    pipe.set(1, 1).execute_command("NOSUCHCOMMAND", 2)
    with pytest.raises(redis.ResponseError):
        pipe.execute()
    assert redis_py.get(1) is None


def test_watch_retry_loop_under_contention(server, redis_py):
    """20 threads each add 1 to one counter 50 times through WATCH/GET/MULTI/SET/EXEC
    (redis-py's transaction()): optimistic locking makes the total exact."""
    threads, rounds, key = 20, 50, 77
    clients = [redis_py_client(server, "hiredis" if i % 2 else "python") for i in range(threads)]
    errors = []

    def add_one(index):
        client = clients[index]

        def step(pipe):
            value = int(pipe.get(key) or 0)
            pipe.multi()
            pipe.set(key, value + 1)

        try:
            for _ in range(rounds):
                client.transaction(step, key)
        except Exception as error:      # reported in the main thread
            errors.append(error)

    workers = [threading.Thread(target=add_one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    for client in clients:
        client.close()
    assert not errors
    assert redis_py.get(key) == str(threads * rounds).encode()


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
def test_asyncio_pipeline_and_watch(server, parser):
    async def main():
        client = redis_py_client(server, parser, asyncio=True)
        try:
            async with client.pipeline() as pipe:           # transaction=True
                pipe.set(5, 1).incr(5).get(5)
                assert await pipe.execute() == [True, 2, b"2"]

            async def add(times):
                async with client.pipeline() as pipe:
                    for _ in range(times):
                        while True:
                            try:
                                await pipe.watch(6)
                                value = int(await pipe.get(6) or 0)
                                pipe.multi()
                                pipe.set(6, value + 1)
                                await pipe.execute()
                                break
                            except redis.WatchError:
                                continue

            await asyncio.gather(*(add(20) for _ in range(10)))
            assert await client.get(6) == b"200"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_whole_transaction_in_one_write(server):
    """MULTI...EXEC pipelined in one send: replies in order, the array last."""
    with server.connect() as sock:
        requests = command("MULTI") + command("SET", 1, 1) + command("INCR", 1) + command("EXEC") + command("GET", 1)
        exchange(sock, requests, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n$1\r\n2\r\n")


def test_closing_discards_the_queue_and_the_watches(server):
    with server.connect() as first:
        call(first, "WATCH", 1, 2, expected=b"+OK\r\n")
        call(first, "MULTI", expected=b"+OK\r\n")
        call(first, "SET", 1, 100, expected=b"+QUEUED\r\n")
    with RawClient(server.address) as second:
        wait_for(lambda: b"connected_clients:1\r\n" in second.call("INFO", "clients"),
                 message="the first client to be gone")
        assert second.call("GET", 1) == b"$-1\r\n"
        assert second.call("SET", 1, 5) == b"+OK\r\n"          # a write to a key the closed one watched
        assert second.call("WATCH", 1) == b"+OK\r\n"
        assert second.call("MULTI") == b"+OK\r\n"
        assert second.call("EXEC") == b"*0\r\n"


def test_the_queue_is_bounded_by_the_query_buffer_limit(start_server):
    server = start_server("--client-query-buffer-limit", "4096")
    with RawClient(server.address) as client:
        assert client.call("MULTI") == b"+OK\r\n"
        replies = [client.call("SET", i, i) for i in range(200)]    # each queued SET takes about 60 bytes
        refused = next(i for i, reply in enumerate(replies) if reply != b"+QUEUED\r\n")
        assert 30 < refused < 100
        assert replies[refused].startswith(b"-ERR Transaction queue too large")
        assert set(replies[refused + 1:]) == {b"+QUEUED\r\n"}              # doomed: answered, not kept
        assert client.call("EXEC") == b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        assert client.call("DBSIZE") == b":0\r\n"


def test_resp3_null_array_when_a_watched_key_changed(server):
    with server.connect() as first, server.connect() as second:
        first.sendall(command("HELLO", 3))
        first.recv(4096)
        call(first, "WATCH", 3, expected=b"+OK\r\n")
        call(second, "INCR", 3, expected=b":1\r\n")
        call(first, "MULTI", expected=b"+OK\r\n")
        call(first, "INCR", 3, expected=b"+QUEUED\r\n")
        call(first, "EXEC", expected=b"_\r\n")
        call(first, "RESET", expected=b"+RESET\r\n")        # back to RESP2
        call(first, "GET", 4, expected=b"$-1\r\n")


def test_reset_deauthenticates_when_a_password_is_set(start_server):
    server = start_server(env={**os.environ, "KVFAST_PASSWORD": "sesame"})
    with server.connect() as sock:
        call(sock, "AUTH", "sesame", expected=b"+OK\r\n")
        call(sock, "MULTI", expected=b"+OK\r\n")
        call(sock, "SET", 1, 1, expected=b"+QUEUED\r\n")
        call(sock, "RESET", expected=b"+RESET\r\n")
        call(sock, "GET", 1, expected=b"-NOAUTH Authentication required.\r\n")
        call(sock, "EXEC", expected=b"-EXECABORT Transaction discarded because of: NOAUTH Authentication "
                                    b"required.\r\n")
        call(sock, "RESET", expected=b"+RESET\r\n")       # allowed before AUTH
        call(sock, "AUTH", "sesame", expected=b"+OK\r\n")
        call(sock, "GET", 1, expected=b"$-1\r\n")


def test_not_allowed_inside_a_transaction(start_server, tmp_path):
    server = start_server("--appendonly", str(tmp_path / "log.aof"))
    with server.connect() as sock:
        call(sock, "MULTI", expected=b"+OK\r\n")
        call(sock, "BGREWRITEAOF", expected=b"-ERR Command not allowed inside a transaction\r\n")
        call(sock, "SET", 1, 1, expected=b"+QUEUED\r\n")
        call(sock, "EXEC", expected=b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        call(sock, "WATCH", "notakey", expected=b"-ERR key is not an integer or out of range\r\n")


def test_many_watchers_of_one_key_all_break(server):
    socks = [socket.create_connection(server.address, timeout=10) for _ in range(5)]
    try:
        for sock in socks:
            call(sock, "WATCH", 9, 10, expected=b"+OK\r\n")
        call(socks[0], "UNWATCH", expected=b"+OK\r\n")
        with server.connect() as writer:
            call(writer, "SET", 10, 1, expected=b"+OK\r\n")
        for index, sock in enumerate(socks):
            call(sock, "MULTI", expected=b"+OK\r\n")
            call(sock, "EXEC", expected=b"*0\r\n" if index == 0 else b"*-1\r\n")
    finally:
        for sock in socks:
            sock.close()
