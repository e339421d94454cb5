"""Growth from 0 to N keys under load, without a stall.

Starts a fresh kvfast-server, then drives ``kvfast-bench -t put --sequential``
(every request adds a new key) until N keys are stored, and reports the
latency the clients saw during all those resizes (p50, p99, p99.9, max) next to
the server's own count of the most entries any single request had to migrate
(INFO's ``kvfast_max_migrated_per_request``) and its RSS bytes per key.

    python bench/growth.py --keys 50000000
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time


def script(name):
    return os.path.join(sysconfig.get_path("scripts"), name)


def info(address):
    """INFO as a dict of field -> text, over a raw RESP request."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(b"*1\r\n$4\r\nINFO\r\n")
        reader = sock.makefile("rb")
        size = int(reader.readline()[1:])
        text = reader.read(size + 2).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(keys, clients, pipeline):
    server = subprocess.Popen([script("kvfast-server"), "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        match = re.search(rb"listening on ([0-9.]+):(\d+)", server.stdout.readline())
        if not match:
            raise RuntimeError("kvfast-server did not start")
        address = (match.group(1).decode(), int(match.group(2)))
        before = rss_bytes(server.pid)
        load = subprocess.run(
            [script("kvfast-bench"), "-h", address[0], "-p", str(address[1]), "-t", "put", "--sequential",
             "-n", str(keys), "-r", str(keys), "-c", str(clients), "-P", str(pipeline), "--json",
             "--timeout", "3600"],
            capture_output=True, text=True, check=True)
        result = json.loads(load.stdout)
        fields = info(address)
        deadline = time.monotonic() + 60
        while fields["kvfast_resizing"] == "1" and time.monotonic() < deadline:
            time.sleep(0.05)                 # an idle server finishes the last resize quickly
            fields = info(address)
        stored = int(fields["db0"].split(",")[0].split("=")[1])
        return {
            "keys": stored,
            "requests_per_second": result["requests_per_second"],
            "latency_ms": result["latency_ms"],
            "max_migrated_per_request": int(fields["kvfast_max_migrated_per_request"]),
            "resizes": int(fields["kvfast_resizes"]),
            "forced_drains": int(fields["kvfast_forced_drains"]),
            "rss_bytes_per_key": (rss_bytes(server.pid) - before) / stored,
        }
    finally:
        server.terminate()
        server.wait(30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.keys, args.clients, args.pipeline)
    if args.json:
        print(json.dumps(result))
        return 0
    latency = result["latency_ms"]
    print(f"grew to {result['keys']:,} keys through {result['resizes']} resizes at "
          f"{result['requests_per_second']:,.0f} puts/s ({args.clients} clients, pipeline {args.pipeline})")
    print(f"latency during growth: p50={latency['p50']:.3f} p99={latency['p99']:.3f} "
          f"p99.9={latency['p99.9']:.3f} max={latency['max']:.3f} ms")
    print(f"most entries one request migrated: {result['max_migrated_per_request']} "
          f"(resizes finished in one go: {result['forced_drains']}); "
          f"RSS {result['rss_bytes_per_key']:.1f} bytes/key at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
