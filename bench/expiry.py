"""Expiry's costs: memory per key with a TTL, how long N keys expiring at the same moment take to
leave while another client is served, and GET/SET server CPU with 1M keys with a TTL present.

    python -m bench.expiry [--keys 1000000] [--cpu-rounds 5] [--skip-cpu]

memory   N keys loaded without a TTL (INFO used_memory), then each given a deadline
         (PEXPIREAT): the growth per key is what a TTL costs.
expiry   the same N keys all expire at the same millisecond T; from T, DBSIZE is polled until 0,
         while another connection sends GETs one at a time (their latency: max, p99.9); the
         longest slice of active expiry comes from INFO (kvfast_expire_longest_slice_us).
cpu      two servers with the same 1M keys without a TTL; one also holds 1M keys with a far TTL
         (disjoint keys). kvfast-bench GET and SET at -P 1 and -P 16 run on each in turn; the
         per-round ratio of server CPU per request (volatile ÷ none) is printed, median and range.
"""
import argparse
import socket
import statistics
import sys
import threading
import time

from bench.harness import ServerProcess, cpu_ns, fmt_ratio, info_field, kvfast_bench, paired_ratio


def resp(*words):
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        word = str(word).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(out)


def pipeline(address, requests_of, count, chunk=50_000):
    """Send ``requests_of(i)`` for i in range(count), pipelined; wait for every one-line reply."""
    with socket.create_connection(address, timeout=120) as sock:
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            sock.sendall(b"".join(requests_of(i) for i in range(start, stop)))
            pending = 0
            while pending < stop - start:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("closed")
                pending += data.count(b"\n")


def call(sock, *words):
    sock.sendall(resp(*words))
    data = sock.recv(1 << 16)
    while not data.endswith(b"\r\n"):
        data += sock.recv(1 << 16)
    return data


def used_memory(address):
    return int(info_field(address, "memory", "used_memory"))


def memory_and_expiry(keys):
    with ServerProcess("kvfast") as server:
        pipeline(server.address, lambda i: b"set %d %d\n" % (i, i), keys)
        before = used_memory(server.address)
        load_s = max(5.0, keys / 150_000)
        deadline = int((time.time() + load_s + 2) * 1000)
        started = time.monotonic()
        pipeline(server.address, lambda i: resp("PEXPIREAT", i, deadline), keys)
        loaded_s = time.monotonic() - started
        after = used_memory(server.address)
        if time.time() * 1000 >= deadline:
            raise RuntimeError(f"loading took {loaded_s:.1f} s, past the deadline: raise load_s")
        latencies, stop = [], threading.Event()

        def other_client():
            with socket.create_connection(server.address, timeout=30) as sock:
                while not stop.is_set():
                    begin = time.perf_counter()
                    call(sock, "GET", -1)
                    latencies.append(time.perf_counter() - begin)

        thread = threading.Thread(target=other_client)
        thread.start()
        with socket.create_connection(server.address, timeout=30) as sock:
            while time.time() * 1000 < deadline:
                time.sleep(0.001)
            while call(sock, "DBSIZE") != b":0\r\n":
                time.sleep(0.005)
            gone_s = time.time() - deadline / 1000
        stop.set()
        thread.join()
        longest_us = int(info_field(server.address, "stats", "kvfast_expire_longest_slice_us"))
        latencies.sort()
    return {"bytes_per_ttl": (after - before) / keys, "gone_s": gone_s, "longest_slice_us": longest_us,
            "get_max_ms": latencies[-1] * 1000, "get_p999_ms": latencies[int(len(latencies) * 0.999)] * 1000}


def cpu(rounds, requests):
    with ServerProcess("kvfast") as plain, ServerProcess("kvfast") as volatile:
        for server in (plain, volatile):
            pipeline(server.address, lambda i: b"set %d %d\n" % (i, i), 1_000_000)
        pipeline(volatile.address, lambda i: b"set %d 1 ex 100000000\n" % (10_000_000 + i), 1_000_000)
        results = {}
        for test in ("get", "set"):
            for depth in (1, 16):
                tops, bottoms = [], []
                for round_ in range(rounds):
                    order = (plain, volatile) if round_ % 2 == 0 else (volatile, plain)
                    for server in order:
                        before = cpu_ns(server.pid)
                        kvfast_bench(server.port, test, requests=requests, clients=8, pipeline=depth,
                                     keyspace=1_000_000)
                        per_request = (cpu_ns(server.pid) - before) / requests
                        (tops if server is volatile else bottoms).append(per_request)
                results[(test, depth)] = (statistics.median(bottoms), statistics.median(tops),
                                          paired_ratio(tops, bottoms))
        return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.expiry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--cpu-rounds", type=int, default=5)
    parser.add_argument("--cpu-requests", type=int, default=400_000)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args(argv)
    for keys in args.keys:
        result = memory_and_expiry(keys)
        print(f"{keys} keys: a TTL costs {result['bytes_per_ttl']:.1f} B/key (INFO used_memory); all expiring "
              f"at one moment, gone {result['gone_s'] * 1000:.0f} ms after it; longest expiry slice "
              f"{result['longest_slice_us']} us; another client's GET meanwhile: p99.9 "
              f"{result['get_p999_ms']:.2f} ms, max {result['get_max_ms']:.2f} ms")
    if not args.skip_cpu:
        print(f"server CPU per request, 1M keys with a TTL present vs none ({args.cpu_rounds} rounds, 8 clients):")
        for (test, depth), (plain, volatile, ratio) in cpu(args.cpu_rounds, args.cpu_requests).items():
            print(f"  {test.upper():3} -P {depth:2}: {plain:6.0f} ns vs {volatile:6.0f} ns  ratio {fmt_ratio(*ratio)}"
                  f"  (target <= 1.15x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
