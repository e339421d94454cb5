"""The string and server commands of kvfast/_strings.pyx through redis-py (sync with hiredis and
with the Python parser, RESP3 by default, and redis.asyncio): SET ... GET, GETSET, GETDEL, MSET,
MSETNX, INCRBYFLOAT, STRLEN, APPEND, TIME, ROLE, WAIT, SWAPDB, LASTSAVE, SAVE and BGSAVE (with and
without the append-only file), and their COMMAND rows against redis-server's."""
import asyncio
import datetime
import time

import pytest
import redis

from aof_format import HEADER_SIZE, parse, replay
from conftest import REDIS_PY_PARSERS, redis_py_client
from helpers import wait_for

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
MY_COMMANDS = ("set", "getset", "getdel", "mset", "msetnx", "incrbyfloat", "strlen", "append", "time", "role",
               "wait", "swapdb", "lastsave", "save", "bgsave")


def test_set_get_option(redis_py):
    r = redis_py
    assert r.set(1, 10, get=True) is None
    assert r.set(1, 11, get=True) == b"10"
    assert r.set(1, 12, nx=True, get=True) == b"11"          # NX with GET (Redis 7): old value, not written
    assert r.get(1) == b"11"
    assert r.set(2, 5, xx=True, get=True) is None and r.exists(2) == 0
    assert r.set(1, 13, xx=True, get=True) == b"11" and r.get(1) == b"13"
    for options in (("NX", "XX"), ("EX", "10", "PX", "5"), ("KEEPTTL", "EX", "1"), ("PX",)):
        with pytest.raises(redis.ResponseError, match="syntax error"):
            r.execute_command("SET", 1, 2, *options)
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.set(1, "x", get=True)
    assert r.get(1) == b"13"


def test_getset_and_getdel(redis_py):
    r = redis_py
    assert r.getset(5, 1) is None
    assert r.getset(5, "007") == b"1" and r.get(5) == b"7"   # stored canonical
    assert r.getdel(5) == b"7" and r.getdel(5) is None and r.exists(5) == 0
    with pytest.raises(redis.ResponseError, match="key is not an integer"):
        r.getdel("k")
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.getset(5, 1.5)
    assert r.exists(5) == 0


def test_mset_and_msetnx_apply_to_all_or_none(redis_py):
    r = redis_py
    assert r.mset({1: 10, 2: 20, 3: 30}) is True
    assert r.mget(1, 2, 3) == [b"10", b"20", b"30"]
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.mset({1: 11, 2: "x"})
    with pytest.raises(redis.ResponseError, match="key is not an integer"):
        r.mset({1: 11, "k": 1})
    assert r.mget(1, 2) == [b"10", b"20"]                    # nothing of the refused commands applied
    assert r.msetnx({3: 1, 4: 1}) is False and r.exists(4) == 0
    assert r.msetnx({4: 40, 5: 50}) is True and r.mget(4, 5) == [b"40", b"50"]
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
        r.execute_command("MSET", 1, 2, 3)
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.msetnx({6: 1, 7: "x"})
    assert r.exists(6) == 0
    assert r.mset({8: 1, 9: 2}) and r.mset(dict.fromkeys(range(100, 1100), 7)) and r.dbsize() == 1007


def test_incrbyfloat_integral_only(redis_py):
    r = redis_py
    assert r.incrbyfloat(1, 2.0) == 2.0 and r.get(1) == b"2"
    assert r.execute_command("INCRBYFLOAT", 1, "1e3") == 1002.0       # (redis-py makes it a float)
    assert r.execute_command("INCRBYFLOAT", 1, "-0x10") == 986.0
    with pytest.raises(redis.ResponseError, match="increment is not an integer"):
        r.incrbyfloat(1, 0.5)
    with pytest.raises(redis.ResponseError, match="not a valid float"):
        r.incrbyfloat(1, "abc")
    with pytest.raises(redis.ResponseError, match="NaN or Infinity"):
        r.incrbyfloat(1, "inf")
    with pytest.raises(redis.ResponseError, match="would overflow"):
        r.incrbyfloat(1, "1e19")
    assert r.get(1) == b"986"
    r.set(2, INT64_MIN)
    assert r.execute_command("INCRBYFLOAT", 2, str(2**63)) == 0.0   # the increment itself need not be an int64


def test_strlen_and_append(redis_py):
    r = redis_py
    assert r.strlen(1) == 0
    r.set(1, -1234)
    assert r.strlen(1) == 5
    assert r.append(1, "56") == 7 and r.get(1) == b"-123456"
    assert r.append(2, "0042") == 2 and r.get(2) == b"42"    # canonical: the length of what GET returns
    r.set(3, 0)
    assert r.append(3, "7") == 1 and r.get(3) == b"7"
    assert r.append(1, "") == 7                              # nothing appended: an existing value is kept
    for text in ("x", "-1", "+1", "99999999999999999999"):
        with pytest.raises(redis.ResponseError, match="value is not an integer"):
            r.append(1, text)
    assert r.get(1) == b"-123456"
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.append(4, "")
    assert r.exists(4) == 0
    r.set(5, INT64_MAX // 10)
    assert r.append(5, "7") == 19 and int(r.get(5)) == INT64_MAX
    with pytest.raises(redis.ResponseError, match="value is not an integer"):
        r.append(5, "0")


def test_server_commands(redis_py):
    r = redis_py
    seconds, micros = r.time()
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    assert r.role() == [b"master", 0, []]
    assert r.wait(0, 0) == 0 and r.wait(3, 0) == 0          # no replicas: at once
    with pytest.raises(redis.ResponseError, match="timeout is negative"):
        r.wait(0, -1)
    assert r.swapdb(0, 0) is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.swapdb(0, 1)
    with pytest.raises(redis.ResponseError, match="invalid first DB index"):
        r.execute_command("SWAPDB", "x", 0)
    started = r.lastsave()
    assert isinstance(started, datetime.datetime)
    assert abs(started.timestamp() - time.time()) < 60      # the server's start: nothing was saved
    for call in (r.save, r.bgsave, lambda: r.execute_command("BGSAVE", "SCHEDULE")):
        with pytest.raises(redis.ResponseError, match="append-only file is off"):
            call()
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("BGSAVE", "now")


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
def test_save_and_bgsave_rewrite_the_log(start_server, tmp_path, parser):
    path = tmp_path / "kvfast.aof"
    server = start_server("--appendonly", str(path), "--fsync", "always")
    r = redis_py_client(server, parser)
    try:
        for round_ in range(3):
            r.mset({key: key * 10 + round_ for key in range(500)})
        r.getdel(0)
        r.incrbyfloat(1, "5.0")
        before = r.lastsave()
        assert r.save() is True
        assert path.stat().st_size == HEADER_SIZE + 21 * 499             # one record per key: compacted
        assert r.lastsave() >= before
        assert r.info("persistence")["aof_rewrites"] == 1
        r.set(1, 1)
        r.append(2, 9)
        assert r.bgsave() is True                                       # "Background saving started"
        wait_for(lambda: r.info("persistence")["aof_rewrites"] == 2
                 and r.info("persistence")["aof_rewrite_in_progress"] == 0, 30, message="the BGSAVE rewrite")
        expected = {key: key * 10 + 2 for key in range(1, 500)}
        expected[1], expected[2] = 1, 229
        assert replay(parse(path.read_bytes())) == expected
        with r.pipeline(transaction=False) as pipe:                     # a second save while one is asked for
            pipe.bgsave().bgsave()
            replies = pipe.execute(raise_on_error=False)
        assert replies[0] is True
        assert replies[1] is True or "already in progress" in str(replies[1])
        wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, 30, message="the rewrite")
    finally:
        r.close()
    server.stop()
    server = start_server("--appendonly", str(path))
    r = redis_py_client(server, parser)
    try:
        assert r.dbsize() == 499 and r.mget(1, 2, 3) == [b"1", b"229", b"32"]
    finally:
        r.close()


def test_asyncio_client(server):
    async def main():
        r = redis_py_client(server, "python", asyncio=True)
        try:
            assert await r.mset({1: 1, 2: 2}) is True
            assert await r.msetnx({2: 3, 3: 3}) is False
            assert await r.set(1, 5, get=True) == b"1"
            assert await r.getset(2, 7) == b"2"
            assert await r.getdel(2) == b"7"
            assert await r.incrbyfloat(1, 2) == 7.0
            assert await r.strlen(1) == 1
            assert await r.append(1, 1) == 2
            assert await r.role() == [b"master", 0, []]
            assert await r.wait(0, 100) == 0
            assert await r.swapdb(0, 0) is True
            assert len(await r.time()) == 2
            assert isinstance(await r.lastsave(), datetime.datetime)
        finally:
            await r.aclose()
    asyncio.run(main())


def test_command_rows_match_redis(server, redis_server):
    """Arity and key positions as redis-server's COMMAND INFO; every flag kvfast names is one of Redis's."""
    ours = redis.Redis(host=server.host, port=server.port, protocol=2)
    theirs = redis.Redis(*redis_server.address, protocol=2)
    try:
        mine_all, reference_all = ours.command(), theirs.command()
        for name in MY_COMMANDS:
            mine, reference = mine_all[name], reference_all[name]
            for field in ("arity", "first_key_pos", "last_key_pos", "step_count"):
                assert mine[field] == reference[field], (name, field)
            assert set(mine["flags"]) <= set(reference["flags"]), name
    finally:
        ours.close()
        theirs.close()
