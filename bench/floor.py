"""How close kvfast comes to the floor: kvfast, redis-server and a bare epoll
server (bench/floor_server.c: the system calls alone, a constant reply, no
parsing, no store) under the same redis-benchmark loads, side by side.

    python -m bench.floor [--rounds 5] [--requests 400000] [--pipeline 1] [--quick]

The issue's targets put kvfast's server CPU per request at most 0.85x Redis's at
pipeline 1; the floor server shows how much of that ratio is the kernel's work
that every such server pays (one recv and one send per request, the epoll
wake-ups) and so cannot be bought back in user space. For each round and load
(SET NX on an emptied store, then GET of what it wrote; 50 clients, random keys
in 1M) each server runs the load in turn; ratios to Redis are taken within the
round, and the medians and ranges are printed as a Markdown table.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench.harness import (BenchError, HOST, die_with_parent, find_program, free_port,
                           install_sigterm_handler, redis_benchmark, start_servers, with_server_cpu)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_server.c")
COMMANDS = {"SET NX": ["set", "__rand_int__", "__rand_int__", "nx"], "GET": ["get", "__rand_int__"]}


class FloorServer:
    """bench/floor_server.c, compiled into a scratch folder and run on a free port."""

    def __init__(self, workdir):
        compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if compiler is None:
            raise BenchError("no C compiler (cc or gcc) to build bench/floor_server.c")
        binary = os.path.join(workdir, "floor_server")
        subprocess.run([compiler, "-O2", "-o", binary, SOURCE], check=True, timeout=120)
        self.port = free_port()
        self.proc = subprocess.Popen([binary, str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, preexec_fn=die_with_parent)
        if self.proc.stdout.readline().strip() != b"ready":
            self.close()
            raise BenchError(f"floor_server did not start on {HOST}:{self.port}")
        self.pid = self.proc.pid

    def flush(self):
        """Nothing is stored."""

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def measure(rounds, requests, pipeline):
    """{(load, server): [CPU us/request per round]} for floor, kvfast and redis."""
    workdir = tempfile.mkdtemp(prefix="kvfast-floor-")
    servers = start_servers(["kvfast", "redis"], workdir)
    try:
        servers["floor"] = FloorServer(workdir)
        runs = {}
        for repeat in range(rounds):
            for label, command in COMMANDS.items():
                for kind in ("floor", "kvfast", "redis"):
                    server = servers[kind]
                    if command[0] == "set":
                        server.flush()
                    result = with_server_cpu(server.pid, lambda: redis_benchmark(
                        server.port, command, requests=requests, pipeline=pipeline))
                    runs.setdefault((label, kind), []).append(result["server_cpu_us_per_request"])
                    print(f"  round {repeat + 1}/{rounds} {label:<6} P{pipeline} {kind:<7}"
                          f"{result['server_cpu_us_per_request']:8.2f} us/req", file=sys.stderr, flush=True)
        return runs
    finally:
        for server in servers.values():
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def table(runs, pipeline):
    lines = [f"| load | floor µs/req | kvfast µs/req | Redis µs/req | floor ÷ Redis | kvfast ÷ Redis | "
             f"kvfast ÷ floor |", "|---|---:|---:|---:|---:|---:|---:|"]

    def paired(label, top, bottom):
        ratios = [a / b for a, b in zip(runs[(label, top)], runs[(label, bottom)])]
        return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"

    for label in COMMANDS:
        medians = [statistics.median(runs[(label, kind)]) for kind in ("floor", "kvfast", "redis")]
        lines.append(f"| {label} P{pipeline} | " + " | ".join(f"{value:.2f}" for value in medians)
                     + f" | {paired(label, 'floor', 'redis')} | {paired(label, 'kvfast', 'redis')}"
                     f" | {paired(label, 'kvfast', 'floor')} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400_000)
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one round of 5,000 requests (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 1, 5_000
    install_sigterm_handler()
    for program in ("redis-server", "redis-benchmark"):
        find_program(program)       # a clear error now rather than after the floor server is built
    runs = measure(args.rounds, args.requests, args.pipeline)
    print("\n".join(table(runs, args.pipeline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
