"""How close kvfast comes to the floor: kvfast, redis-server and a bare epoll
server (bench/floor_server.c: the system calls alone, a constant reply, no
parsing, no store) under the same redis-benchmark loads, side by side; then
the native protocol: kvfast, the asyncio reference and the floor server under
the same kvfast-bench loads.

    python -m bench.floor [--rounds 5] [--requests 400000] [--pipeline 1] [--quick]

The issue's targets put kvfast's server CPU per request at most 0.85x Redis's,
and the asyncio reference's at least 3x kvfast's, at pipeline 1. The floor
server shows how much of each ratio is the kernel's work that every such server
pays (one recv and one send per request, the epoll wake-ups) and so cannot be
bought back in user space: no server of this design can do better than the
floor's ratio. For each round and load (a set on an emptied store, then a get
of what it wrote; 50 clients, random keys in 1M) each server runs the load in
turn; ratios are taken within the round, and the medians and ranges are
printed as Markdown tables.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench.harness import (BenchError, HOST, die_with_parent, find_program, free_port,
                           install_sigterm_handler, kvfast_bench, redis_benchmark, start_servers,
                           with_server_cpu)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor_server.c")
COMMANDS = {"SET NX": ["set", "__rand_int__", "__rand_int__", "nx"], "GET": ["get", "__rand_int__"]}
NATIVE_TESTS = {"native set": "set", "native get": "get"}     # kvfast-bench -t, as in bench.compare


def build_floor_server(workdir):
    """Compile bench/floor_server.c into ``workdir``; returns the binary's path."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise BenchError("no C compiler (cc or gcc) to build bench/floor_server.c")
    binary = os.path.join(workdir, "floor_server")
    subprocess.run([compiler, "-O2", "-o", binary, SOURCE], check=True, timeout=120)
    return binary


class FloorServer:
    """The floor server (built by build_floor_server) on a free port, answering
    RESP requests or, with ``native``, native request lines."""

    def __init__(self, binary, native=False):
        self.port = free_port()
        self.proc = subprocess.Popen([binary, str(self.port), *(["native"] if native else [])],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     preexec_fn=die_with_parent)
        if self.proc.stdout.readline().strip() != b"ready":
            self.close()
            raise BenchError(f"floor_server did not start on {HOST}:{self.port}")
        self.pid = self.proc.pid

    def flush(self):
        """Nothing is stored."""

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def run_rounds(servers, loads, rounds, pipeline, run_load):
    """Each load on each server in turn, ``rounds`` times; a set load first
    empties the store. Returns {(load, kind): [CPU us/request per round]}."""
    runs = {}
    for repeat in range(rounds):
        for load in loads:
            for kind, server in servers.items():
                if load in ("SET NX", "native set"):
                    server.flush()
                result = with_server_cpu(server.pid, lambda: run_load(server, load))
                runs.setdefault((load, kind), []).append(result["server_cpu_us_per_request"])
                print(f"  round {repeat + 1}/{rounds} {load + f' P{pipeline}':<14} {kind:<8}"
                      f"{result['server_cpu_us_per_request']:8.2f} us/req", file=sys.stderr, flush=True)
    return runs


def measure(rounds, requests, pipeline):
    """{(load, server): [CPU us/request per round]}: RESP loads (redis-benchmark)
    on floor, kvfast and redis, then native loads (kvfast-bench) on floor,
    kvfast and the asyncio reference."""
    workdir = tempfile.mkdtemp(prefix="kvfast-floor-")
    servers = {}
    try:
        binary = build_floor_server(workdir)
        servers["floor"] = FloorServer(binary)
        servers.update(start_servers(["kvfast", "redis"], workdir))
        runs = run_rounds(servers, COMMANDS, rounds, pipeline,
                          lambda server, load: redis_benchmark(server.port, COMMANDS[load],
                                                               requests=requests, pipeline=pipeline))
        for kind in ("floor", "redis"):
            servers.pop(kind).close()
        servers["floor"] = FloorServer(binary, native=True)
        servers.update(start_servers(["asyncio"], workdir))
        runs.update(run_rounds(servers, NATIVE_TESTS, rounds, pipeline,
                               lambda server, load: kvfast_bench(server.port, NATIVE_TESTS[load],
                                                                 requests=requests, pipeline=pipeline)))
        return runs
    finally:
        for server in servers.values():
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def paired(runs, load, top, bottom):
    """Median and range of the per-round ratios top ÷ bottom, as table text.
    A round whose bottom figure is 0 (under one clock tick of CPU, as short
    --quick runs can be) has no ratio; "n/a" when no round has one."""
    ratios = [a / b for a, b in zip(runs[(load, top)], runs[(load, bottom)]) if b > 0]
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def table_lines(runs, loads, pipeline, reference, label, ratios):
    """One Markdown table: per load, the median µs/request of the floor, kvfast
    and ``reference``, then the median (and range) of each (top, bottom) ratio."""
    names = {"floor": "floor", "kvfast": "kvfast", reference: label}
    lines = [f"| load | floor µs/req | kvfast µs/req | {label} µs/req | "
             + " | ".join(f"{names[top]} ÷ {names[bottom]}" for top, bottom in ratios) + " |",
             "|---|" + "---:|" * (3 + len(ratios))]
    for load in loads:
        medians = [statistics.median(runs[(load, kind)]) for kind in ("floor", "kvfast", reference)]
        lines.append(f"| {load} P{pipeline} | " + " | ".join(f"{value:.2f}" for value in medians) + " | "
                     + " | ".join(paired(runs, load, top, bottom) for top, bottom in ratios) + " |")
    return lines


def table(runs, pipeline):
    """Markdown: the RESP table (ratios to Redis), then the native one (the
    asyncio reference's CPU over each server's, the target's direction)."""
    return (table_lines(runs, COMMANDS, pipeline, "redis", "Redis",
                        [("floor", "redis"), ("kvfast", "redis"), ("kvfast", "floor")])
            + [""]
            + table_lines(runs, NATIVE_TESTS, pipeline, "asyncio", "asyncio",
                          [("asyncio", "floor"), ("asyncio", "kvfast"), ("kvfast", "floor")]))


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
    for program in ("redis-server", "redis-benchmark", "kvfast-bench"):
        find_program(program)       # a clear error now rather than after the floor server is built
    runs = measure(args.rounds, args.requests, args.pipeline)
    print("\n".join(table(runs, args.pipeline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
