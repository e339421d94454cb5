"""Differential tests of transactions: random sequences of MULTI/EXEC/DISCARD/WATCH/UNWATCH/RESET,
queued commands (errors while queueing included) and plain writes, on two connections so that one
breaks the other's WATCH, sent to kvfast and to redis-server, replies compared byte for byte.

Left out on purpose (documented differences): non-integer keys and values (kvfast refuses them
with an error where Redis would store them), and HELLO (its map names the server's version)."""
import random

import pytest

from differential import assert_same_replies, random_key, random_value

SEEDS = range(4)


def data_command(rng):
    """A command both servers answer alike, queued or not: writes, reads, and the runtime errors
    that become elements of EXEC's array."""
    key = random_key(rng)
    return rng.choice((
        ("GET", key), ("SET", key, random_value(rng)), ("SET", key, random_value(rng), "NX"),
        ("SETNX", key, random_value(rng)), ("DEL", key, random_key(rng)), ("EXISTS", key),
        ("INCR", key), ("DECRBY", key, random_value(rng)), ("INCRBY", key, "notanumber"),
        ("MGET", key, random_key(rng)), ("DBSIZE",), ("PING",), ("ECHO", "hi"),
        ("FLUSHALL",) if rng.random() < 0.1 else ("INCR", key),
    ))


def queueing_error(rng):
    """A request refused while queueing: the transaction then ends in EXECABORT."""
    return rng.choice((("NOSUCHCOMMAND", "1"), ("GET",), ("SET", "1"), ("INCR", "1", "2"),
                       ("MULTI", "extra"), ("DISCARD", "extra"), ("WATCH",)))


def transaction_commands(rng, count):
    """Items for assert_same_replies with connections=2: each is (connection, words)."""
    for _ in range(count):
        who = 0 if rng.random() < 0.7 else 1
        roll = rng.random()
        if roll < 0.35:
            words = data_command(rng)
        elif roll < 0.45:
            words = ("MULTI",)
        elif roll < 0.55:
            words = ("EXEC",)
        elif roll < 0.6:
            words = ("DISCARD",)
        elif roll < 0.72:
            words = ("WATCH", *[random_key(rng) for _ in range(rng.randint(1, 3))])
        elif roll < 0.76:
            words = ("UNWATCH",)
        elif roll < 0.8:
            words = queueing_error(rng)
        elif roll < 0.82:
            words = ("RESET",)
        elif roll < 0.83:
            words = ("EXEC", "extra")
        else:
            words = data_command(rng)
        yield (who, words)


@pytest.mark.parametrize("seed", SEEDS)
def test_transactions_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, transaction_commands(rng, 1500),
                        connections=2, seed=seed)


def scripted(*steps):
    return [(who, tuple(words.split())) for who, words in steps]


SCRIPTS = {
    "nested multi goes on": scripted((0, "MULTI"), (0, "MULTI"), (0, "SET 1 1"), (0, "EXEC")),
    "watch inside multi": scripted((0, "MULTI"), (0, "WATCH 1"), (0, "INCR 1"), (0, "EXEC")),
    "exec with arguments aborts": scripted((0, "MULTI"), (0, "SET 1 2"), (0, "EXEC x"), (0, "GET 1"), (0, "EXEC")),
    "runtime errors are elements": scripted((0, "SET 1 9223372036854775807"), (0, "MULTI"), (0, "INCR 1"),
                                            (0, "INCRBY 1 x"), (0, "SET 2 5"), (0, "EXEC"), (0, "GET 2")),
    "own write breaks own watch": scripted((0, "WATCH 5"), (0, "SET 5 1"), (0, "MULTI"), (0, "GET 5"), (0, "EXEC")),
    "other write breaks watch": scripted((0, "WATCH 5 6"), (1, "INCR 6"), (0, "MULTI"), (0, "SET 5 1"), (0, "EXEC"),
                                         (0, "GET 5")),
    "same value still breaks": scripted((0, "SET 5 1"), (0, "WATCH 5"), (1, "SET 5 1"), (0, "MULTI"), (0, "EXEC")),
    "failed writes do not break": scripted((0, "SET 5 1"), (0, "WATCH 5 7"), (1, "SETNX 5 2"), (1, "DEL 7"),
                                           (1, "SET 5 3 XX"), (0, "MULTI"), (0, "EXEC")),
    "flushall breaks present keys only": scripted((0, "SET 5 1"), (0, "WATCH 9"), (1, "FLUSHALL"), (0, "MULTI"),
                                                  (0, "EXEC"), (0, "SET 5 1"), (0, "WATCH 5"), (1, "FLUSHALL"),
                                                  (0, "MULTI"), (0, "EXEC")),
    "unwatch forgets a broken watch": scripted((0, "WATCH 5"), (1, "SET 5 2"), (0, "UNWATCH"), (0, "MULTI"),
                                               (0, "EXEC")),
    "queued unwatch is too late": scripted((0, "WATCH 5"), (1, "SET 5 2"), (0, "MULTI"), (0, "UNWATCH"),
                                           (0, "EXEC")),
    "discard unwatches": scripted((0, "WATCH 5"), (0, "MULTI"), (0, "DISCARD"), (1, "SET 5 2"), (0, "MULTI"),
                                  (0, "EXEC")),
    "reset ends everything": scripted((0, "WATCH 5"), (0, "MULTI"), (0, "SET 9 9"), (0, "RESET"), (1, "SET 5 2"),
                                      (0, "EXEC"), (0, "MULTI"), (0, "EXEC"), (0, "GET 9")),
    "watch inside exec's transaction": scripted((0, "WATCH 1"), (0, "MULTI"), (0, "SET 1 1"), (0, "EXEC"),
                                                (1, "SET 1 2"), (0, "MULTI"), (0, "EXEC")),
    "errors abort": scripted((0, "MULTI"), (0, "SET 1 1"), (0, "FOO 1 2"), (0, "EXEC"), (0, "GET 1"),
                             (0, "MULTI"), (0, "DISCARD x"), (0, "EXEC")),
    "without multi": scripted((0, "EXEC"), (0, "DISCARD"), (0, "UNWATCH"), (0, "RESET")),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_transaction_scripts_match_redis(server, redis_server, name):
    assert_same_replies(server.address, redis_server.address, SCRIPTS[name], connections=2, seed=name)
