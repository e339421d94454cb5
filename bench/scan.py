"""SCAN over a large keyspace: keys per second and the longest single call.

Starts a fresh kvfast-server, loads N keys (0..N-1) with ``kvfast-bench -t put
--sequential``, then runs one full SCAN iteration (``SCAN cursor COUNT c``,
one call at a time over one raw RESP connection) and reports the keys
returned per second of the whole iteration, the number of calls, and the
longest and the median single call as the client saw it (request sent to
reply read: network round trip on loopback included).

    python bench/scan.py --keys 10000000 --count 1000
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import sysconfig
import time


def script(name):
    return os.path.join(sysconfig.get_path("scripts"), name)


def scan_request(cursor: bytes, count: bytes) -> bytes:
    return b"*4\r\n$4\r\nSCAN\r\n$%d\r\n%s\r\n$5\r\nCOUNT\r\n$%d\r\n%s\r\n" % (len(cursor), cursor, len(count), count)


def read_scan_reply(reader):
    """(next cursor, number of keys) of one SCAN reply."""
    assert reader.readline() == b"*2\r\n"
    reader.readline()
    cursor = reader.readline()[:-2]
    count = int(reader.readline()[1:])
    for _ in range(count):
        reader.readline()
        reader.readline()
    return cursor, count


def full_scan(address, count):
    with socket.create_connection(address, timeout=60) as sock:
        reader = sock.makefile("rb", buffering=1 << 20)
        cursor, keys, durations = b"0", 0, []
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            sock.sendall(scan_request(cursor, b"%d" % count))
            cursor, returned = read_scan_reply(reader)
            durations.append(time.perf_counter() - before)
            keys += returned
            if cursor == b"0":
                break
        elapsed = time.perf_counter() - started
    return keys, elapsed, durations


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    server = subprocess.Popen([script("kvfast-server"), "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if not match:
            raise SystemExit(f"kvfast-server did not start: {line!r}")
        address = (match.group(1), int(match.group(2)))
        subprocess.run([script("kvfast-bench"), "-h", address[0], "-p", str(address[1]), "-t", "put", "--sequential",
                        "-r", str(options.keys), "-n", str(options.keys), "-c", "8", "-P", "64", "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        keys, elapsed, durations = full_scan(address, options.count)
        report = {
            "keys_loaded": options.keys, "count": options.count, "keys_returned": keys, "calls": len(durations),
            "seconds": round(elapsed, 3), "keys_per_second": round(keys / elapsed),
            "longest_call_ms": round(max(durations) * 1000, 3),
            "median_call_ms": round(statistics.median(durations) * 1000, 3),
        }
        if options.json:
            print(json.dumps(report))
        else:
            for name, value in report.items():
                print(f"{name:16} {value}")
        if keys != options.keys:
            print(f"warning: {keys} keys returned for {options.keys} stored", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
