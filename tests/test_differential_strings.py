"""Differential tests of the string and server commands of kvfast/_strings.pyx against redis-server
(see tests/differential.py): random seeded sequences mixing SET [NX|XX] [GET], MSET, MSETNX, GETSET,
GETDEL, INCRBYFLOAT, STRLEN, APPEND, ROLE, WAIT, SWAPDB with GET/DEL/INCR/MGET, wrong arity and
syntax errors, replies compared byte for byte.

The generator keeps a model of the values (one connection: the order is the sequence's), only to stay
out of the documented differences, never to predict a reply:
- values are canonical int64 (kvfast refuses other values, where Redis stores strings);
- INCRBYFLOAT only with integral increments whose sum stays an int64 (kvfast refuses the rest);
- APPEND only where the result is a canonical int64 (not after a 0, not past int64);
- SWAPDB never names databases 1-15 (Redis has 16, kvfast one); WAIT with replicas > 0 only with a
  timeout of 1 ms (Redis waits that long, kvfast answers at once); TIME, LASTSAVE, SAVE and BGSAVE
  only with wrong arguments (their values, or whether a log exists, differ by nature).
"""
import random

import pytest

from differential import INT64_MAX, INT64_MIN, assert_same_replies, random_key, random_value

SEEDS = range(3)
SET_OPTIONS = ("NX", "XX", "GET", "nx", "get", "Get")
BAD_FLOATS = ("abc", "", " 1", "1 ", "1.5x", "nan", "inf", "-inf", "1e5000", "1e-5000", "--1", "0x")


def integral_spelling(rng, number):
    """``number`` spelt as strtold reads it: plain, with a fraction of zeros, an exponent or in hex."""
    forms = [str(number), f"{number}.0", f"{number}.000", f"{number}e0", f"{number}E+0"]
    if number % 1000 == 0 and number:
        forms.append(f"{number // 1000}e3")
    forms.append(("-" if number < 0 else "") + hex(abs(number)))
    return rng.choice(forms)


def string_commands(rng, count):
    values = {}

    def set_value(key, value):
        values[key] = value

    for _ in range(count):
        key, other = random_key(rng), random_key(rng)
        roll = rng.randrange(18)
        if roll == 0:
            value = random_value(rng)
            options = [rng.choice(SET_OPTIONS) for _ in range(rng.randrange(4))]
            words = ("SET", key, value, *options)
            flags = set()
            for option in options:
                option = option.upper()
                if (option == "NX" and "XX" in flags) or (option == "XX" and "NX" in flags):
                    flags = None
                    break
                flags.add(option)
            if flags is not None and not ("NX" in flags and key in values) and not ("XX" in flags
                                                                                    and key not in values):
                set_value(key, int(value))
            yield words
        elif roll == 1:
            pairs = [(random_key(rng), random_value(rng)) for _ in range(rng.randrange(1, 5))]
            yield ("MSET", *[word for pair in pairs for word in pair])
            for k, v in pairs:
                set_value(k, int(v))
        elif roll == 2:
            pairs = [(random_key(rng), random_value(rng)) for _ in range(rng.randrange(1, 4))]
            yield ("MSETNX", *[word for pair in pairs for word in pair])
            if not any(k in values for k, _ in pairs):
                for k, v in pairs:
                    set_value(k, int(v))
        elif roll == 3:
            value = random_value(rng)
            yield ("GETSET", key, value)
            set_value(key, int(value))
        elif roll == 4:
            yield ("GETDEL", key)
            values.pop(key, None)
        elif roll == 5:
            current = values.get(key, 0)
            number = rng.choice((rng.randrange(-1000, 1000), int(random_value(rng)), 0, 1000, -3000))
            if not INT64_MIN <= current + number <= INT64_MAX or not INT64_MIN <= number <= INT64_MAX:
                number = 0
            yield ("INCRBYFLOAT", key, integral_spelling(rng, number))
            set_value(key, current + number)
        elif roll == 6:
            yield ("INCRBYFLOAT", key, rng.choice(BAD_FLOATS))
        elif roll == 7:
            yield ("STRLEN", key)
        elif roll == 8:
            suffix = str(rng.randrange(1, 1000))
            if key not in values:
                suffix = rng.choice((suffix, "-" + suffix, "0"))
                yield ("APPEND", key, suffix)
                set_value(key, int(suffix))
            elif values[key] != 0 and INT64_MIN <= int(str(values[key]) + suffix) <= INT64_MAX:
                yield ("APPEND", key, suffix)
                set_value(key, int(str(values[key]) + suffix))
            else:
                yield ("GET", key)
        elif roll == 9:
            yield ("GET", key)
        elif roll == 10:
            yield ("DEL", key, other)
            values.pop(key, None)
            values.pop(other, None)
        elif roll == 11:
            yield ("INCR", key)
            if values.get(key, 0) < INT64_MAX:
                set_value(key, values.get(key, 0) + 1)
        elif roll == 12:
            yield ("MGET", key, other, random_key(rng))
        elif roll == 13:
            yield rng.choice((
                ("WAIT", "0", "0"), ("WAIT", "-1", "10"), ("WAIT", "1", "1"), ("WAIT", "0", "-1"), ("WAIT", "x", "0"),
                ("WAIT", "0", "1.5"), ("WAIT", "0", str(INT64_MAX)), ("ROLE",),
            ))
        elif roll == 14:
            yield ("SWAPDB", *rng.choice((
                ("0", "0"), ("-1", "0"), ("0", "16"), ("x", "0"), ("0", "x"), ("4294967296", "0"),
                ("0", "-2147483649"), ("16", "x"),
            )))
        elif roll == 15:
            yield ("SET", key, random_value(rng), rng.choice(("EX", "GETX", "NXX", "PX", "KEEPTTL1")))
        elif roll == 16:
            yield rng.choice((
                ("MSET",), ("MSET", key), ("MSET", key, "1", other), ("MSETNX", key), ("MSETNX", key, "1", other),
                ("GETSET", key), ("GETSET", key, "1", "2"), ("GETDEL",), ("GETDEL", key, other),
                ("INCRBYFLOAT", key), ("INCRBYFLOAT", key, "1", "2"), ("STRLEN",), ("STRLEN", key, other),
                ("APPEND", key), ("APPEND", key, "1", "2"), ("WAIT", "0"), ("SWAPDB", "0"),
            ))
        else:
            yield rng.choice((
                ("ROLE", "x"), ("TIME", "x"), ("LASTSAVE", "x"), ("SAVE", "x"), ("BGSAVE", "a", "b"),
                ("BGSAVE", "nope"), ("SET", key, "1", "NX", "XX", "GET"), ("SET", key, "1", "GET", "XX", "NX"),
            ))


@pytest.mark.parametrize("seed", SEEDS)
def test_string_commands_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, string_commands(rng, 2500), seed=seed)


def test_incrbyfloat_edges_match_redis(server, redis_server):
    """Increments read as Redis reads a long double, at the int64 edges."""
    sequence = [("SET", "1", str(INT64_MAX - 1)), ("INCRBYFLOAT", "1", "1.0"), ("GET", "1"),
                ("SET", "2", str(INT64_MIN + 1)), ("INCRBYFLOAT", "2", "-1e0"), ("GET", "2"),
                ("INCRBYFLOAT", "3", "-0.0"), ("GET", "3"), ("INCRBYFLOAT", "3", "1e18"),
                ("INCRBYFLOAT", "3", "-0X1P3"), ("INCRBYFLOAT", "3", "1\0abc"), ("GET", "3"),
                ("SET", "4", "5"), ("INCRBYFLOAT", "4", "inf"), ("GET", "4"), ("SET", "4", str(INT64_MIN)),
                ("INCRBYFLOAT", "4", "9223372036854775808"), ("GET", "4")]
    assert_same_replies(server.address, redis_server.address, sequence)
