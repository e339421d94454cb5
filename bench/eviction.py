"""maxmemory benchmarks: memory per key with the eviction metadata, and cache
hit ratios against redis-server.

``memory``: loads N distinct keys into kvfast (no policy; allkeys-lru and
allkeys-lfu with a limit far above need, so the metadata byte is kept and
nothing is evicted) and into redis-server, and prints INFO used_memory and the
RSS growth per key.

``hitratio``: replays a Zipf (s = 0.99) trace over ``--keys`` distinct keys as
a cache would (GET; on a miss, SET), in pipelined batches of ``--batch``
(the SETs of a batch's misses follow its GETs), against each server under
allkeys-lru and allkeys-lfu, (a) with each server's maxmemory found so that it
holds about ``--cache-keys`` keys (kvfast's table grows in steps: redis is
sized to hold as many keys as kvfast ends up with), and (b) with redis's maxmemory of (a)
given to both. The hit ratio is counted over the second half of the trace
(the first half warms the cache).

    python -m bench.eviction memory --keys 1000000 10000000
    python -m bench.eviction hitratio --keys 10000000 --requests 20000000 --cache-keys 1000000
"""
import argparse
import socket
import time

import numpy

from bench.harness import ServerProcess, info_fields, resp_call, wait_for_stable_rss

POLICIES = ("allkeys-lru", "allkeys-lfu")


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class Pipe:
    """Inline requests (``GET 5\\r\\n``, understood by both servers) in batches."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def _send(self, verb, keys):
        if verb == "SET":
            text = "".join(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n$1\r\n1\r\n" for key in map(str, keys))
        else:
            text = "".join(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n" for key in map(str, keys))
        self.sock.sendall(text.encode())

    def set_all(self, keys):
        """SET every key to 1; the number of +OK replies (the others are errors)."""
        if len(keys) == 0:
            return 0
        self._send("SET", keys)
        data = bytearray()
        replies = 0
        while replies < len(keys):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
            replies = data.count(b"\r\n")
        return data.count(b"+OK\r\n")

    def get_all(self, keys):
        """GET every key: a bool array, True where it was a miss (values are all 1)."""
        self._send("GET", keys)
        data = bytearray()
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
            if data.endswith(b"\r\n"):
                coded = bytes(data).replace(b"$1\r\n1\r\n", b"H").replace(b"$-1\r\n", b"M")
                if len(coded) == len(keys):
                    return numpy.frombuffer(coded, dtype=numpy.uint8) == ord("M")


def load(address, count, batch=20_000):
    pipe = Pipe(address)
    try:
        for start in range(1, count + 1, batch):
            pipe.set_all(range(start, min(start + batch, count + 1)))
    finally:
        pipe.close()


def memory(counts):
    configurations = [("kvfast", "kvfast, no policy", ()),
                      ("kvfast", "kvfast, allkeys-lru", ("--maxmemory", "100gb", "--maxmemory-policy", "allkeys-lru")),
                      ("kvfast", "kvfast, allkeys-lfu", ("--maxmemory", "100gb", "--maxmemory-policy", "allkeys-lfu")),
                      ("redis", "redis-server", ())]
    print("| server | keys | used_memory bytes/key | RSS growth bytes/key |")
    print("|---|---:|---:|---:|")
    for count in counts:
        for kind, name, args in configurations:
            with ServerProcess(kind, args=args) as server:
                before = wait_for_stable_rss(server.pid)
                used_before = int(info_fields(server.address, "memory")["used_memory"])
                load(server.address, count)
                after = wait_for_stable_rss(server.pid)
                used = int(info_fields(server.address, "memory")["used_memory"]) - used_before
                print(f"| {name} | {count:,} | {used / count:.1f} | {(after - before) / count:.1f} |", flush=True)


def zipf_trace(keys, requests, seed, s=0.99):
    """``requests`` keys drawn from ranks 1..keys with P(rank k) ~ 1/k^s, each
    rank mapped to a fixed random key in 1..keys."""
    rng = numpy.random.default_rng(seed)
    weights = 1.0 / numpy.arange(1, keys + 1, dtype=numpy.float64) ** s
    cdf = numpy.cumsum(weights)
    cdf /= cdf[-1]
    ranks = numpy.searchsorted(cdf, rng.random(requests))
    return (rng.permutation(keys) + 1)[ranks]


def replay(address, trace, batch):
    """Cache-aside replay; the hit ratio over the trace's second half."""
    pipe = Pipe(address)
    hits = counted = 0
    half = len(trace) // 2
    try:
        for start in range(0, len(trace), batch):
            keys = trace[start:start + batch]
            misses = pipe.get_all(keys.tolist())
            pipe.set_all(keys[misses].tolist())
            if start >= half:
                counted += len(keys)
                hits += int(len(keys) - misses.sum())
    finally:
        pipe.close()
    return hits / counted


def keys_held(kind, policy, limit, fill):
    """Keys a server holds at ``limit`` bytes after ``fill`` distinct SETs."""
    with ServerProcess(kind, args=("--maxmemory", str(limit), "--maxmemory-policy", policy)) as server:
        load(server.address, fill)
        return resp_call(server.address, "DBSIZE")


def limit_for(kind, policy, cache_keys):
    """maxmemory (bytes) at which a server holds about ``cache_keys`` keys:
    proportional steps from a first guess (kvfast's table grows in steps, so
    its count is matched to within a step)."""
    limit = cache_keys * (40 if kind == "kvfast" else 80)
    best = None
    for _ in range(4):
        held = keys_held(kind, policy, limit, cache_keys * 3)
        if best is None or abs(held - cache_keys) < abs(best[1] - cache_keys):
            best = (limit, held)
        if abs(held - cache_keys) < cache_keys * 0.02:
            break
        limit = int(limit * cache_keys / held)
    return best


def hitratio(keys, requests, cache_keys, batch, seed, policies=POLICIES):
    started = time.monotonic()
    trace = zipf_trace(keys, requests, seed)
    print(f"trace: {requests:,} requests, Zipf s=0.99 over {keys:,} keys, {len(numpy.unique(trace)):,} distinct "
          f"({time.monotonic() - started:.1f} s to draw)", flush=True)
    rows = []
    for policy in policies:
        # (a): kvfast's table grows in steps, so redis is sized to hold what kvfast holds.
        kvfast_limit, kvfast_keys = limit_for("kvfast", policy, cache_keys)
        redis_limit, _ = limit_for("redis", policy, kvfast_keys)
        for label, kind, limit in (("a", "kvfast", kvfast_limit), ("a", "redis", redis_limit),
                                   ("b", "kvfast", redis_limit)):
            with ServerProcess(kind, args=("--maxmemory", str(limit), "--maxmemory-policy", policy)) as server:
                ratio = replay(server.address, trace, batch)
                held = resp_call(server.address, "DBSIZE")
            rows.append((policy, label, kind, limit, held, ratio))
            print(f"| {policy} | ({label}) | {kind} | {limit / 2**20:.1f} MiB | {held:,} | {ratio * 100:.2f}% |",
                  flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    memory_parser = sub.add_parser("memory")
    memory_parser.add_argument("--keys", type=int, nargs="+", default=[1_000_000])
    ratio_parser = sub.add_parser("hitratio")
    ratio_parser.add_argument("--keys", type=int, default=10_000_000)
    ratio_parser.add_argument("--requests", type=int, default=20_000_000)
    ratio_parser.add_argument("--cache-keys", type=int, default=1_000_000)
    ratio_parser.add_argument("--batch", type=int, default=1000)
    ratio_parser.add_argument("--seed", type=int, default=14)
    ratio_parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    args = parser.parse_args(argv)
    if args.mode == "memory":
        memory(args.keys)
    else:
        print("| policy | case | server | maxmemory | keys held | hit ratio (2nd half) |")
        print("|---|---|---|---:|---:|---:|")
        hitratio(args.keys, args.requests, args.cache_keys, args.batch, args.seed, args.policies)


if __name__ == "__main__":
    main()
