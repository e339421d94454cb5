"""Measure a kvfast server's memory per stored key.

Starts ``kvfast-server`` on a free loopback port, reads its RSS, loads N
distinct random int64 keys with pipelined native ``put`` requests, and reads the
RSS again. Prints RSS bytes per key (the figure a user sees in ``top``) and the
hash tables' own bytes per key, from an ``IntStore`` loaded in this process
with the same number of keys.

    python bench/memory_per_key.py --keys 1000000
"""
import argparse
import os
import random
import re
import socket
import subprocess
import sys
import sysconfig
import time

BATCH = 10_000


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def load_keys(address, keys):
    """Send ``put k k`` for every key, BATCH at a time, and check every reply."""
    with socket.create_connection(address, timeout=60) as sock:
        reader = sock.makefile("rb")
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            sock.sendall(b"".join(b"put %d %d\n" % (key, key) for key in chunk))
            for _ in chunk:
                reply = reader.readline()
                if reply != b"OK\n":
                    raise RuntimeError(f"unexpected reply {reply!r}")


def measure_server(count: int, seed: int) -> dict:
    script = os.path.join(sysconfig.get_path("scripts"), "kvfast-server")
    server = subprocess.Popen([script, "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = server.stdout.readline().decode()
        match = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if not match:
            raise RuntimeError(f"server did not start: {line!r}")
        address = (match.group(1), int(match.group(2)))
        rng = random.Random(seed)
        keys = list({rng.randint(-2**63, 2**63 - 1) for _ in range(count + count // 100)})[:count]
        time.sleep(0.2)
        before = rss_bytes(server.pid)
        load_keys(address, keys)
        after = rss_bytes(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    return {"keys": count, "rss_before": before, "rss_after": after,
            "rss_bytes_per_key": (after - before) / count}


def measure_in_process(count: int) -> dict:
    from kvfast._store import IntStore
    store = IntStore()
    store.put_range(1, count)
    during = store.stats()
    while store.migrate_idle():          # what the server does between polls when idle
        pass
    stats = store.stats()
    return {"keys": count, "table_bytes": stats["memory_bytes"],
            "table_bytes_per_key": stats["memory_bytes"] / count,
            "bytes_per_key_while_resizing": during["memory_bytes"] / count
            if during["draining_capacity"] else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    server = measure_server(args.keys, args.seed)
    print(f"kvfast-server: {server['keys']} keys, RSS {server['rss_before']} -> {server['rss_after']} bytes: "
          f"{server['rss_bytes_per_key']:.1f} bytes/key")
    table = measure_in_process(args.keys)
    print(f"IntStore tables: {table['table_bytes']} bytes for {table['keys']} keys: "
          f"{table['table_bytes_per_key']:.1f} bytes/key"
          + (f" ({table['bytes_per_key_while_resizing']:.1f} while the last resize was running)"
             if table["bytes_per_key_while_resizing"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
