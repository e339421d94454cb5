"""Differential tests of CONFIG GET/SET against redis-server (see tests/differential.py): seeded random
sequences mixing CONFIG GET of the settings both servers share (exact names in any case, globs that
match one shared setting, repeats) and CONFIG SET of the run-time settings they share
(good values, values neither parses, out-of-range ones, unknown, immutable and repeated names, odd
argument counts, several at once where one is bad: nothing changes) with SET/GET/DEL/INCR; replies
compared byte for byte.

Left out, as documented differences: settings whose defaults or bounds differ (bind, port, tcp-backlog,
loglevel, appendfilename; maxclients above kvfast's 2147483647 and client-query-buffer-limit /
proto-max-bulk-len below Redis's 1mb); names only one server has; CONFIG SET of port, bind, appendonly
and save other than "" (Redis can change them at run time, kvfast cannot); requirepass (it would lock
the sequence out: test_runtime_config.py covers it); timeout values that would close the connections.
CONFIG GET of several names is compared as a mapping (test_config_get_of_several_names_matches_redis):
Redis orders its reply by its hash table, kvfast by its settings table.
"""
import random

import pytest

from differential import assert_same_replies, random_key, random_value

SEEDS = range(3)
SHARED = ("timeout", "maxclients", "save", "appendonly", "appendfsync", "protected-mode", "requirepass",
          "client-query-buffer-limit", "proto-max-bulk-len", "auto-aof-rewrite-min-size", "unixsocket",
          "unixsocketperm")
GLOBS = ("maxclie*", "time?ut", "appendfs[xy]nc", "protected-*", "*-max-bulk-len", "nosuch*")
GOOD = {
    "timeout": ("0", "300", "2147483647"),
    "maxclients": ("100", "10000", "5000"),     # (not huge: Redis then tries to raise its descriptor limit)
    "appendfsync": ("always", "everysec", "no", "EVERYSEC"),
    "protected-mode": ("yes", "no", "YES"),
    "client-query-buffer-limit": ("1mb", "2097152", "1GB", "1gb", "3000000"),
    "proto-max-bulk-len": ("1mb", "512mb", "1048576"),
    "auto-aof-rewrite-min-size": ("0", "64mb", "1k", "1kb"),
}
BAD = {
    "timeout": ("-1", "abc", "", " 5", "+5", "05", "1.5", "99999999999"),
    "maxclients": ("x", "1.5", "", "+5"),       # (the bounds differ: 0 and -1 left out)
    "appendfsync": ("sometimes", "", "1"),
    "protected-mode": ("maybe", "1", "", "true"),
    "client-query-buffer-limit": ("abc", "1.5mb", "-5", "1tb"),
    "proto-max-bulk-len": ("abc", "-1", "10x"),
    "auto-aof-rewrite-min-size": ("abc", "-1", "1.5k"),
}
IMMUTABLE = ("unixsocket", "unixsocketperm", "tcp-backlog", "appendfilename")


def config_requests(rng, count):
    for _ in range(count):
        roll = rng.randrange(12)
        if roll == 0:
            name = rng.choice(SHARED)
            yield ("CONFIG", "GET", rng.choice((name, name.upper(), name.capitalize())))
        elif roll == 1:
            name = rng.choice(SHARED)               # a name twice: answered once
            yield ("CONFIG", "GET", name, rng.choice((name, name.upper())))
        elif roll == 2:
            yield ("CONFIG", "GET", rng.choice(GLOBS))
        elif roll == 3:
            name = rng.choice(list(GOOD))
            yield ("CONFIG", "SET", rng.choice((name, name.upper())), rng.choice(GOOD[name]))
        elif roll == 4:
            name = rng.choice(list(BAD))
            yield ("CONFIG", "SET", name, rng.choice(BAD[name]))
        elif roll == 5:
            first, second = rng.sample(list(GOOD), 2)
            bad = rng.choice((first, second))
            words = []
            for name in (first, second):
                words += [name, rng.choice(BAD[name] if name == bad else GOOD[name])]
            yield ("CONFIG", "SET", *words)
            yield ("CONFIG", "GET", first)
            yield ("CONFIG", "GET", second)
        elif roll == 6:
            name = rng.choice(list(GOOD))
            yield ("CONFIG", "SET", name, rng.choice(GOOD[name]), rng.choice(IMMUTABLE), "1")
        elif roll == 7:
            name = rng.choice(list(GOOD))
            yield ("CONFIG", "SET", name, rng.choice(GOOD[name]), name, rng.choice(GOOD[name]))
        elif roll == 8:
            yield rng.choice((("CONFIG", "SET", "nosuch", "1"), ("CONFIG", "SET", "timeout"),
                              ("CONFIG", "SET", "timeout", "1", "maxclients"), ("CONFIG", "GET"),
                              ("CONFIG",), ("CONFIG", "nosuch"), ("CONFIG", "REWRITE"), ("CONFIG", "HELP"),
                              ("CONFIG", "SET", "save", "")))
        else:
            key = random_key(rng)
            yield rng.choice((("SET", key, random_value(rng)), ("GET", key), ("DEL", key), ("INCR", key)))


@pytest.mark.parametrize("seed", SEEDS)
def test_config_get_set_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, list(config_requests(rng, 300)), seed=seed)


def test_config_get_of_several_names_matches_redis(server, redis_server):
    import redis
    ours, theirs = (redis.Redis(*address, decode_responses=True) for address in (server.address,
                                                                                  redis_server.address))
    assert ours.config_get(*SHARED) == theirs.config_get(*SHARED)
    assert ours.config_get("time*", "maxc*", "appendfs*") == theirs.config_get("time*", "maxc*",
                                                                                     "appendfs*")
