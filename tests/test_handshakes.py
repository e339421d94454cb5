"""What mainstream clients read when they connect: INFO replication and clients
(Redis 7's fields), INFO as a RESP3 verbatim string, and the clients themselves
(valkey-glide sync and async, redis-py asyncio with and without hiredis,
redis-cli --stat) connecting and working with their default settings.
"""
import asyncio
import os
import pty
import re
import select
import subprocess
import time

import pytest

from conftest import REDIS_PY_PARSERS, redis_py_client, require_tool
from differential import RawClient

STAT_SECONDS = 3.0                  # how long redis-cli --stat runs
INT64_MIN_TEXT = "-9223372036854775808"


def info_fields(text: str) -> dict:
    """``field:value`` lines of an INFO text, as a dict of str (in order)."""
    return dict(line.split(":", 1) for line in text.split("\r\n") if line and not line.startswith("#"))


def info_text(address, section, resp3=False) -> bytes:
    """The raw reply to ``INFO section`` (after ``HELLO 3`` when ``resp3``)."""
    with RawClient(address) as client:
        if resp3:
            client.call("HELLO", "3")
        return client.call("INFO", section)


def blob_body(reply: bytes) -> bytes:
    """The payload of a bulk (``$``) or verbatim (``=``) string reply."""
    header, _, rest = reply.partition(b"\r\n")
    assert rest.endswith(b"\r\n") and len(rest) - 2 == int(header[1:]), reply
    return rest[:-2]


# ---- INFO ---------------------------------------------------------------------------

@pytest.mark.parametrize("section", ["replication", "clients"])
def test_info_sections_have_redis_7_fields_in_redis_order(server, redis_server, section):
    ours = blob_body(info_text(server.address, section)).decode()
    theirs = blob_body(info_text(redis_server.address, section)).decode()
    assert list(info_fields(ours)) == list(info_fields(theirs))
    assert ours.splitlines()[0] == theirs.splitlines()[0] == f"# {section.capitalize()}"
    assert not ours.endswith("\r\n\r\n") and not theirs.endswith("\r\n\r\n")    # no blank line after the last


def test_info_replication_values(start_server):
    first, second = start_server(), start_server()
    fields = [info_fields(blob_body(info_text(server.address, "replication")).decode()) for server in (first, second)]
    for values in fields:
        assert values["role"] == "master" and values["connected_slaves"] == "0"
        assert values["master_failover_state"] == "no-failover"
        assert re.fullmatch(r"[0-9a-f]{40}", values["master_replid"])
        assert values["master_replid2"] == "0" * 40
        assert values["master_repl_offset"] == "0" and values["second_repl_offset"] == "-1"
        assert values["repl_backlog_active"] == "0"
    assert fields[0]["master_replid"] != fields[1]["master_replid"]         # random per start


def test_info_clients_values(start_server):
    server = start_server("--max-clients", "123")
    with RawClient(server.address) as other:
        other.call("PING")
        values = info_fields(blob_body(info_text(server.address, "clients")).decode())
    assert values["connected_clients"] == "2"
    assert values["maxclients"] == "123"
    assert values["blocked_clients"] == values["tracking_clients"] == values["cluster_connections"] == "0"
    assert int(values["client_recent_max_input_buffer"]) >= 0
    assert int(values["client_recent_max_output_buffer"]) > 0           # the first INFO's reply


def test_info_sections_are_separated_by_one_blank_line(server):
    text = blob_body(info_text(server.address, "everything")).decode()
    titles = [line for line in text.split("\r\n") if line.startswith("#")]
    assert titles == ["# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Replication",
                      "# CPU", "# Commandstats", "# Errorstats", "# Latencystats", "# Keyspace"]
    for title in titles[1:]:
        assert "\r\n\r\n" + title + "\r\n" in text
    assert "\r\n\r\n\r\n" not in text and not text.endswith("\r\n\r\n")


@pytest.mark.parametrize("section", ["replication", "clients", "default"])
def test_resp3_info_is_a_verbatim_string_as_redis_sends_it(server, redis_server, section):
    ours, theirs = info_text(server.address, section, True), info_text(redis_server.address, section, True)
    for reply in (ours, theirs):
        assert reply.startswith(b"=") and blob_body(reply).startswith(b"txt:# ")     # the length counts "txt:"
    assert blob_body(ours).split(b"\r\n")[0] == blob_body(theirs).split(b"\r\n")[0]
    if section != "default":
        assert list(info_fields(blob_body(ours)[4:].decode())) == list(info_fields(blob_body(theirs)[4:].decode()))
    # RESP2: the same text as a bulk string.
    assert info_text(server.address, section).startswith(b"$")


# ---- clients ------------------------------------------------------------------------

def test_valkey_glide_sync_connects_with_its_defaults(server):
    glide_sync = pytest.importorskip("glide_sync")
    config = glide_sync.GlideClientConfiguration([glide_sync.NodeAddress("127.0.0.1", server.port)],
                                                 request_timeout=5000)
    client = glide_sync.GlideClient.create(config)
    try:
        assert client.set("41", "42") == "OK"
        assert client.get("41") == b"42"
        assert client.get("43") is None
    finally:
        client.close()


def test_valkey_glide_async_connects_with_its_defaults(server):
    glide = pytest.importorskip("glide")

    async def session():
        config = glide.GlideClientConfiguration([glide.NodeAddress("127.0.0.1", server.port)],
                                                request_timeout=5000)
        client = await glide.GlideClient.create(config)
        try:
            assert await client.set("51", "52") == "OK"
            assert await client.get("51") == b"52"
            assert await client.incr("51") == 53
        finally:
            await client.close()

    asyncio.run(session())


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_asyncio_connects(server, parser, protocol):
    async def session():
        client = redis_py_client(server, parser, asyncio=True, protocol=protocol)
        try:
            assert await client.ping() is True
            assert await client.set(7, 8) is True
            assert await client.get(7) == b"8"
            replication = await client.info("replication")
            clients = await client.info("clients")
            assert replication["role"] == "master" and clients["blocked_clients"] == 0
        finally:
            await client.aclose()

    asyncio.run(session())


def test_redis_cli_stat_shows_sane_numbers(server):
    """redis-cli --stat for a few seconds, its output read through a
    pseudo-terminal (it is line-buffered there); every row's columns parse."""
    with RawClient(server.address) as client:
        for key in range(5):
            client.call("SET", key, key)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(server.port), "--stat",
                             "-i", "0.5"], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + STAT_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        proc.terminate()
        proc.wait(5)
        os.close(controller)
    text = output.decode(errors="replace")
    assert INT64_MIN_TEXT not in text, text
    rows = [line.split() for line in text.splitlines() if re.match(r"\s*\d", line)]
    assert len(rows) >= 2, text
    for row in rows:
        keys, memory, clients, blocked, requests = row[:5]
        assert keys == "5", text
        assert re.fullmatch(r"\d+(\.\d+)?[BKMG]", memory), text
        assert clients == "1" and blocked == "0", text
        assert int(requests) > 0, text
