"""Differential tests of the expiry commands (kvfast/_expire.pyx, SET's options in kvfast/_strings.pyx)
against redis-server (see tests/differential.py): random seeded sequences mixing EXPIRE, PEXPIRE,
EXPIREAT, PEXPIREAT (NX/XX/GT/LT, bad combinations, unsupported options, overflowing times), TTL,
PTTL, EXPIRETIME, PEXPIRETIME, PERSIST, SET EX/PX/EXAT/PXAT/KEEPTTL (with NX/XX/GET), SETEX, PSETEX,
GETEX with GET/DEL/INCR/EXISTS/GETDEL/RENAME/COPY/TYPE/MGET, replies compared byte for byte.

Time is frozen by the deadlines chosen, not by sleeping: absolute deadlines lie far in the future
(2100 onwards) or in the past (deleting at once), relative ones are 100 s or more. The generator
keeps a model of each key (absent, no TTL, an exact deadline, or a relative one only known to a few
milliseconds) only to stay out of what cannot match between two servers with their own clocks:
- TTL and PTTL only of keys without a deadline or absent (-1, -2): the time left of a key with a
  deadline depends on each server's clock; EXPIRETIME and PEXPIRETIME only of exact deadlines;
- GT and LT only where the two deadlines compared lie seconds apart;
- DBSIZE never: Redis 7.0 stores a SET ... EXAT in the past as an already expired key that DBSIZE
  counts until it is removed, kvfast deletes it at once (the documented difference).
"""
import random
import time

import pytest

from differential import INT64_MAX, assert_same_replies, random_key, random_value

SEEDS = range(3)
FUTURE_S = 4102444800                   # 2100-01-01
PAST_S = (1, 1000, 1600000000)
RELATIVE_S = (100, 1000, 100000)
CONDITIONS = ("NX", "XX", "GT", "LT", "nx", "gt")


def now_ms():
    return int(time.time() * 1000)


def option_deadline(kind, text):
    """The deadline (ms) SET/GETEX take from ``kind text`` (Redis's getExpireMillisecondsOrReply), or None
    when they refuse it; ("fuzzy", ms) for the relative kinds."""
    try:
        number = int(text)
    except ValueError:
        return None
    if number <= 0 or (kind in ("EX", "EXAT") and number > INT64_MAX // 1000):
        return None
    ms = number * 1000 if kind in ("EX", "EXAT") else number
    if kind in ("EX", "PX"):
        return None if ms > INT64_MAX - now_ms() - 1000 else ("fuzzy", now_ms() + ms)
    return ("exact", ms)


def expire_deadline(command, text):
    """The deadline (ms) EXPIRE and its siblings take from ``text``, or None when they refuse it."""
    try:
        number = int(text)
    except ValueError:
        return None
    unit = 1000 if command in ("EXPIRE", "EXPIREAT") else 1
    if unit == 1000 and not -(INT64_MAX // 1000) <= number <= INT64_MAX // 1000:
        return None
    if command in ("EXPIRE", "PEXPIRE"):
        return None if number * unit > INT64_MAX - now_ms() - 1000 else ("fuzzy", now_ms() + number * unit)
    return ("exact", number * unit)


def expiry_commands(rng, count):
    state = {}      # key -> None (no TTL) | ("exact", ms) | ("fuzzy", approximate ms); absent keys missing

    def deadline_of(key):
        entry = state.get(key)
        return None if entry is None else entry[1]

    def ambiguous(key, new):
        """Whether comparing ``new`` (kind, ms) with the key's deadline could differ between servers."""
        entry = state.get(key)
        if entry is None or new is None:
            return False
        return (entry[0] == "fuzzy" or new[0] == "fuzzy") and abs(entry[1] - new[1]) < 10_000

    def apply(key, new):
        """The key gets deadline ``new`` (None: no TTL); a past one deletes it."""
        if new is not None and new[1] <= now_ms():
            state.pop(key, None)
        else:
            state[key] = new

    def random_time(unit_ms, absolute):
        roll = rng.randrange(10)
        if roll == 0:
            return rng.choice(("0", "-1", "x", "1.5", "")), None
        if roll == 1:
            return str(INT64_MAX), None     # overflows by unit or by adding the clock (or a far deadline)
        if absolute:
            seconds = rng.choice(PAST_S) if roll < 4 else FUTURE_S + rng.randrange(1000) * 100
            return str(seconds * 1000 // unit_ms), ("exact", seconds * 1000)
        seconds = rng.choice(RELATIVE_S)
        return str(seconds * 1000 // unit_ms), ("fuzzy", now_ms() + seconds * 1000)

    for _ in range(count):
        key, other = random_key(rng), random_key(rng)
        roll = rng.randrange(16)
        if roll <= 2:
            command, unit, absolute = rng.choice((("EXPIRE", 1000, False), ("PEXPIRE", 1, False),
                                                  ("EXPIREAT", 1000, True), ("PEXPIREAT", 1, True)))
            text, _ = random_time(unit, absolute)
            new = expire_deadline(command, text)
            options = [rng.choice(CONDITIONS) for _ in range(rng.choice((0, 0, 1, 1, 2)))]
            if rng.randrange(30) == 0:
                options.append("FOO")
            flags = {option.upper() for option in options}
            valid = "FOO" not in flags and not ("NX" in flags and flags & {"XX", "GT", "LT"}) \
                and not {"GT", "LT"} <= flags and new is not None
            if valid and key in state and flags & {"GT", "LT"} and ambiguous(key, new):
                continue
            yield (command, key, text, *options)
            if not valid or key not in state or new is None:
                continue
            current = deadline_of(key)
            if "NX" in flags and current is not None:
                continue
            if "XX" in flags and current is None:
                continue
            if "GT" in flags and (current is None or new[1] <= current):
                continue
            if "LT" in flags and current is not None and new[1] >= current:
                continue
            apply(key, new)
        elif roll == 3:
            query = rng.choice(("TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"))
            entry = state.get(key, "absent")
            if entry in ("absent", None) or (query.endswith("EXPIRETIME") and entry[0] == "exact"):
                yield (query, key)
            else:
                yield ("EXISTS", key)
        elif roll == 4:
            yield ("PERSIST", key)
            if key in state:
                state[key] = None
        elif roll <= 6:
            value = random_value(rng)
            words = ["SET", key, value]
            kind = rng.choice((None, "EX", "PX", "EXAT", "PXAT", "KEEPTTL"))
            new = None
            if kind in ("EX", "PX", "EXAT", "PXAT"):
                text, _ = random_time(1000 if kind in ("EX", "EXAT") else 1, kind.endswith("AT"))
                new = option_deadline(kind, text) or "error"
                words += [kind, text]
            elif kind == "KEEPTTL":
                words.append(rng.choice(("KEEPTTL", "keepttl")))
            condition = rng.choice((None, None, "NX", "XX"))
            if condition:
                words.insert(rng.randrange(3, len(words) + 1) if kind not in ("EX", "PX", "EXAT", "PXAT")
                             else 3, condition)
            if rng.randrange(4) == 0:
                words.append("GET")
            if rng.randrange(25) == 0:
                words += rng.choice((["EX", "10"], ["KEEPTTL"], ["PX"]))       # conflicting or incomplete
                yield tuple(words)
                continue
            yield tuple(words)
            if new == "error":
                continue
            if (condition == "NX" and key in state) or (condition == "XX" and key not in state):
                continue
            if kind == "KEEPTTL":
                state[key] = state.get(key)
            else:
                apply(key, new)
        elif roll == 7:
            command, unit = rng.choice((("SETEX", 1000), ("PSETEX", 1)))
            text, _ = random_time(unit, False)
            new = option_deadline("EX" if unit == 1000 else "PX", text)
            yield (command, key, text, random_value(rng))
            if new is not None:
                apply(key, new)
        elif roll == 8:
            kind = rng.choice((None, "EX", "PX", "EXAT", "PXAT", "PERSIST", "KEEPTTL", "NX"))
            words = ["GETEX", key]
            new, valid = None, True
            if kind in ("EX", "PX", "EXAT", "PXAT"):
                text, _ = random_time(1000 if kind in ("EX", "EXAT") else 1, kind.endswith("AT"))
                new = option_deadline(kind, text)
                valid = new is not None
                words += [kind, text]
            elif kind is not None:
                words.append(kind)
            yield tuple(words)
            if key not in state or kind in ("KEEPTTL", "NX") or not valid:
                continue
            if kind == "PERSIST":
                state[key] = None
            elif new is not None:
                apply(key, new)
        elif roll == 9:
            yield ("GET", key)
        elif roll == 10:
            yield ("DEL", key, other)
            state.pop(key, None)
            state.pop(other, None)
        elif roll == 11:
            yield ("INCR", key)
            state.setdefault(key, None)
        elif roll == 12:
            yield ("GETDEL", key)
            state.pop(key, None)
        elif roll == 13:
            if key == other:
                continue
            yield ("RENAME", key, other)
            if key in state:
                state[other] = state.pop(key)
        elif roll == 14:
            if key == other:
                continue
            replace = rng.randrange(2) == 0
            yield ("COPY", key, other, *(("REPLACE",) if replace else ()))
            if key in state and (replace or other not in state):
                state[other] = state[key]
        else:
            yield rng.choice((("EXISTS", key, other), ("MGET", key, other), ("TYPE", key), ("EXPIRE", key),
                              ("TTL",), ("TTL", key, other), ("PERSIST",), ("SETEX", key, "10"),
                              ("GETEX",), ("EXPIRE", key, "10", "NX", "XX"), ("EXPIRE", key, "10", "GT", "LT")))


@pytest.mark.parametrize("seed", SEEDS)
def test_expiry_commands_match_redis(server, redis_server, seed):
    rng = random.Random(seed)
    assert_same_replies(server.address, redis_server.address, expiry_commands(rng, 2500), seed=seed)


def test_expiry_edges_match_redis(server, redis_server):
    """Fixed sequences at the edges: past deadlines delete, options and errors in Redis's order."""
    far = str(FUTURE_S)
    sequence = [
        ("SET", "1", "5"), ("EXPIREAT", "1", far), ("EXPIRETIME", "1"), ("PEXPIRETIME", "1"),
        ("EXPIREAT", "1", far, "GT"), ("EXPIREAT", "1", str(FUTURE_S + 1), "GT"), ("EXPIRETIME", "1"),
        ("EXPIREAT", "1", far, "LT"), ("EXPIRETIME", "1"), ("EXPIREAT", "1", far, "NX"),
        ("EXPIREAT", "1", far, "XX", "GT"), ("PERSIST", "1"), ("PERSIST", "1"), ("TTL", "1"),
        ("EXPIREAT", "1", far, "XX"), ("EXPIREAT", "1", far, "GT"), ("EXPIREAT", "1", far, "LT"),
        ("EXPIRETIME", "1"), ("INCR", "1"), ("EXPIRETIME", "1"), ("SET", "1", "7", "KEEPTTL"),
        ("EXPIRETIME", "1"), ("SET", "1", "8"), ("TTL", "1"), ("PEXPIREAT", "1", "1"), ("EXISTS", "1"),
        ("GET", "1"), ("TTL", "1"), ("PTTL", "1"), ("EXPIRETIME", "1"), ("PERSIST", "1"),
        ("SET", "2", "1", "EXAT", far), ("RENAME", "2", "3"), ("EXPIRETIME", "3"), ("COPY", "3", "4"),
        ("PEXPIRETIME", "4"), ("SET", "2", "9", "PXAT", "5"), ("GET", "2"), ("EXISTS", "2"),
        ("SET", "5", "1", "EX", "0"), ("SET", "5", "1", "PX", "-1"), ("SET", "5", "1", "EX", str(INT64_MAX)),
        ("SET", "5", "1", "EX", "x"), ("SET", "5", "1", "EX", "10", "PX", "10"),
        ("SET", "5", "1", "EX", "10", "KEEPTTL"), ("SET", "5", "1", "EX", "10", "EX", "20"), ("TTL", "5"),
        ("SETEX", "6", "0", "1"), ("PSETEX", "6", "-5", "1"), ("SETEX", "6", "x", "1"), ("GETEX", "6"),
        ("GETEX", "5", "PERSIST"), ("TTL", "5"), ("GETEX", "5", "EXAT", "1"), ("GET", "5"),
        ("GETEX", "7", "EX", "0"), ("SET", "7", "1"), ("GETEX", "7", "EX", "0"), ("GETEX", "7", "EX", "1", "PX", "1"),
        ("EXPIRE", "7", str(INT64_MAX)), ("PEXPIRE", "7", str(INT64_MAX)), ("EXPIREAT", "7", str(INT64_MAX)),
        ("PEXPIREAT", "7", str(INT64_MAX)), ("PEXPIRETIME", "7"), ("EXPIRE", "7", "-10"), ("EXISTS", "7"),
        ("EXPIRE", "8", "10", "bogus"), ("EXPIRE", "8", "x"), ("EXPIRE", "8", "10", "nx", "gt"),
        ("EXPIRE", "8", "10", "gt", "lt"), ("EXPIRE", "8", "10"), ("TTL", "8"),
    ]
    assert_same_replies(server.address, redis_server.address, sequence)
