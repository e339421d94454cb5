"""Python-side bulk speed: kvfast.Client's bulk calls vs redis-py, side by side in one run.

    python -m bench.python_client [--rounds 5] [--keys 1000000] [--json FILE]

One kvfast-server (TCP and a unix socket) and one redis-server are started.
Each round, in this order, from one Python thread:

* bulk get of ``--keys`` random keys (a keyspace of ``--keys`` keys, all present):
  ``Client.get_many`` with a NumPy array and with an ``array('q')``, over TCP and
  the unix socket; redis-py + hiredis ``mget`` in chunks of 10,000, values parsed
  to int (kvfast over TCP and unix); redis-py pipelined ``get`` in chunks of
  10,000 (``--pipelined-keys`` of them, a fraction: they are slow);
* bulk load of ``--keys`` keys: ``Client.set_many`` (TCP, unix); redis-py
  ``mset`` in chunks of 10,000 against redis-server (kvfast has no MSET yet);
  redis-py pipelined ``set`` (kvfast);
* single ``get`` latency: ``Client.get`` vs redis-py (hiredis) ``get``, over TCP
  and the unix socket, ``--calls`` calls each.

Figures are medians over the rounds; ratios are medians of per-round ratios
(both runs of a ratio measured in the same round). Prints a Markdown report
with a targets table (the issue's goals).
"""
import argparse
import array
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy
import redis

import kvfast
from bench.harness import ServerProcess, fmt_ratio, install_sigterm_handler, paired_ratio, targets_table

CHUNK = 10_000


def keys_per_second(count, run):
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def seconds_per_call(calls, call):
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


def redis_mget(client, keys):
    values = []
    for start in range(0, len(keys), CHUNK):
        values.extend(int(value) for value in client.mget(keys[start:start + CHUNK]))
    return values


def redis_pipelined_get(client, keys):
    values = []
    for start in range(0, len(keys), CHUNK):
        pipe = client.pipeline(transaction=False)
        for key in keys[start:start + CHUNK]:
            pipe.get(key)
        values.extend(int(value) for value in pipe.execute())
    return values


def redis_mset(client, keys, values):
    for start in range(0, len(keys), CHUNK):
        client.mset(dict(zip(keys[start:start + CHUNK], values[start:start + CHUNK])))


def redis_pipelined_set(client, keys, values):
    for start in range(0, len(keys), CHUNK):
        pipe = client.pipeline(transaction=False)
        for key, value in zip(keys[start:start + CHUNK], values[start:start + CHUNK]):
            pipe.set(key, value)
        pipe.execute()


def connect_unix(path, deadline=10.0):
    """A Client of the unix socket at ``path``, once the server listens there."""
    end = time.monotonic() + deadline
    while True:
        try:
            return kvfast.Client(unix_socket_path=path)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


def one_round(k, r, args, rng):
    """One round of every measurement; returns {name: figure}."""
    n = args.keys
    figures = {}
    all_keys = numpy.arange(n, dtype=numpy.int64)
    k["tcp"].set_many(all_keys, all_keys * 3)
    wanted = rng.integers(0, n, n, dtype=numpy.int64)
    wanted_array = array.array("q", wanted.tobytes())
    wanted_list = wanted.tolist()
    expected = wanted * 3
    for transport in ("tcp", "unix"):
        client = k[transport]
        figures[f"get_many numpy {transport}"] = keys_per_second(n, lambda: client.get_many(wanted))
        figures[f"get_many array {transport}"] = keys_per_second(n, lambda: client.get_many(wanted_array))
        values, found = client.get_many(wanted)
        assert found.all() and (values == expected).all()
        figures[f"redis-py mget {transport}"] = keys_per_second(n, lambda: redis_mget(r[transport], wanted_list))
    few = wanted_list[:args.pipelined_keys]
    figures["redis-py pipelined get tcp"] = keys_per_second(len(few), lambda: redis_pipelined_get(r["tcp"], few))

    load_keys = rng.permutation(n).astype(numpy.int64)
    load_values = load_keys * 7
    load_list, load_value_list = load_keys.tolist(), load_values.tolist()
    for transport in ("tcp", "unix"):
        k[transport].request("bye")                           # reconnects at the next call
        figures[f"set_many numpy {transport}"] = keys_per_second(
            n, lambda: k[transport].set_many(load_keys, load_values))
    r["redis"].flushall()
    figures["redis-py mset (redis-server) tcp"] = keys_per_second(
        n, lambda: redis_mset(r["redis"], load_list, load_value_list))
    few_values = load_value_list[:args.pipelined_keys]
    figures["redis-py pipelined set tcp"] = keys_per_second(
        len(few_values), lambda: redis_pipelined_set(r["tcp"], load_list[:args.pipelined_keys], few_values))

    for transport in ("tcp", "unix"):
        client, other = k[transport], r[transport]
        figures[f"Client.get us {transport}"] = 1e6 * seconds_per_call(args.calls, lambda: client.get(5))
        figures[f"redis-py get us {transport}"] = 1e6 * seconds_per_call(args.calls, lambda: other.get(5))
    return figures


def report(rounds, args):
    names = list(rounds[0])
    series = {name: [figures[name] for figures in rounds] for name in names}
    lines = [f"# Python client: {args.keys:,} keys, {len(rounds)} rounds (medians)", "",
             "| measurement | median | min | max |", "|---|---:|---:|---:|"]
    for name in names:
        unit = "us/call" if " us " in f"{name} " else "keys/s"
        low, mid, high = min(series[name]), statistics.median(series[name]), max(series[name])
        if unit == "keys/s":
            lines.append(f"| {name} | {mid / 1e6:.2f}M keys/s | {low / 1e6:.2f}M | {high / 1e6:.2f}M |")
        else:
            lines.append(f"| {name} | {mid:.1f} us/call | {low:.1f} | {high:.1f} |")
    targets = []

    def ratio(comparison, top, bottom, goal, at_most=False):
        value, low, high = paired_ratio(series[top], series[bottom])
        targets.append({"comparison": comparison, "text": fmt_ratio(value, low, high),
                        "target": f"{'<=' if at_most else '>='} {goal}x", "met": value <= goal if at_most
                        else value >= goal})

    for transport in ("tcp", "unix"):
        ratio(f"get_many(numpy) / redis-py+hiredis mget, {transport}", f"get_many numpy {transport}",
              f"redis-py mget {transport}", 5)
    ratio("get_many(numpy) / redis-py pipelined get, tcp", "get_many numpy tcp", "redis-py pipelined get tcp", 20)
    ratio("set_many(numpy) / redis-py mset on redis-server, tcp", "set_many numpy tcp",
          "redis-py mset (redis-server) tcp", 5)
    ratio("set_many(numpy) / redis-py pipelined set, tcp", "set_many numpy tcp", "redis-py pipelined set tcp", 20)
    for transport in ("tcp", "unix"):
        ratio(f"Client.get / redis-py get time per call, {transport}", f"Client.get us {transport}",
              f"redis-py get us {transport}", 0.6, at_most=True)
    for name in ("get_many numpy unix", "set_many numpy unix"):
        mid = statistics.median(series[name])
        targets.append({"comparison": f"{name} (keys/s)", "text": f"{mid / 1e6:.2f}M", "target": ">= 3M",
                        "met": mid >= 3e6})
    return lines + [""] + targets_table(targets), series, targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--pipelined-keys", type=int, default=100_000,
                        help="keys of the redis-py pipelined get/set runs (default 100000)")
    parser.add_argument("--calls", type=int, default=20_000, help="single get calls per client (default 20000)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    folder = tempfile.mkdtemp(prefix="kvfast-pyc-")
    path = os.path.join(folder, "kvfast.sock")
    rng = numpy.random.default_rng(15)
    try:
        with ServerProcess("kvfast", args=["--unixsocket", path]) as server, ServerProcess("redis") as redis_server:
            k = {"tcp": kvfast.Client(*server.address), "unix": connect_unix(path)}
            r = {"tcp": redis.Redis(*server.address, protocol=2),
                 "unix": redis.Redis(unix_socket_path=path, protocol=2),
                 "redis": redis.Redis(*redis_server.address, protocol=2)}
            assert redis.utils.HIREDIS_AVAILABLE, "hiredis is not installed"
            rounds = []
            for number in range(args.rounds):
                rounds.append(one_round(k, r, args, rng))
                print(f"round {number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            for client in k.values():
                client.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines, series, targets = report(rounds, args)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"series": series, "targets": targets, "args": vars(args)}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
