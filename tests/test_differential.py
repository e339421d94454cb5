"""Differential tests: random command sequences sent to kvfast and to redis-server, replies compared
byte for byte (see tests/differential.py). One test per command family; each family's generator
draws only what kvfast and Redis must answer alike."""
import random

import pytest

from differential import assert_same_replies, random_key, random_value

SEEDS = range(3)


def core_commands(rng, count):
    """The commands of the first release: GET, SET [NX|XX], SETNX, DEL, EXISTS, INCR/DECR(BY), MGET, DBSIZE."""
    for _ in range(count):
        key = random_key(rng)
        yield rng.choice((
            ("GET", key),
            ("SET", key, random_value(rng)),
            ("SET", key, random_value(rng), rng.choice(("NX", "XX", "nx"))),
            ("SETNX", key, random_value(rng)),
            ("DEL", key, random_key(rng)),
            ("EXISTS", key, key, random_key(rng)),
            ("INCR", key), ("DECR", key),
            ("INCRBY", key, random_value(rng)), ("DECRBY", key, random_value(rng)),
            ("MGET", key, random_key(rng), random_key(rng)),
            ("DBSIZE",),
            ("INCR",), ("SET", key),
        ))


@pytest.mark.parametrize("seed", SEEDS)
def test_core_commands_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, core_commands(rng, 2000), seed=seed)


def test_redis_py_parsers_are_the_ones_asked_for(redis_py, request):
    """The fixture really switches parsers (hiredis present, or the Python one)."""
    from redis._parsers import _HiredisParser
    connection = redis_py.connection_pool.get_connection()
    try:
        assert isinstance(connection._parser, _HiredisParser) == (request.node.callspec.params["redis_py"] == "hiredis")
        assert redis_py.set(1, 2) and redis_py.get(1) == b"2"
    finally:
        redis_py.connection_pool.release(connection)
