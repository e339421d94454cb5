"""Unix domain socket vs loopback TCP: kvfast and redis-server, side by side in one run.

    python -m bench.transport [--quick] [--rounds N] [--out DIR] [--publish]

One kvfast-server and one redis-server, each listening on a free loopback TCP
port and on a unix socket of its own (``--unixsocket``, mode 700). Every load is
a kvfast-bench run with 50 clients and random keys in 0..999,999, at pipeline 1
and 16, set then get; kvfast is loaded over RESP (as Redis is) and over its
native protocol. Within a round every load runs on every (server, protocol,
transport) one right after the other, and the rounds repeat (5 by default;
once with --quick), so a drift in machine speed hits all of them alike.

The figure is the server's CPU time per request (utime+stime from
/proc/PID/stat over the run, divided by the requests), which does not depend
on how fast the load generator is. Ratios are taken round by round and their
median reported, with the range of the per-round ratios (as bench.compare
does): unix ÷ TCP for each server, and kvfast ÷ Redis over the unix socket.

Writes transport.md and transport.json into --out (default bench/results/),
prints the Markdown, and with --publish also writes docs/transport.md.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

from bench.compare import TARGETS as COMPARE_TARGETS, environment
from bench.harness import (REPO, BenchError, ServerProcess, install_sigterm_handler, kvfast_bench, paired_ratio,
                           targets_table, with_server_cpu)

CLIENTS = 50
KEYSPACE = 1_000_000
PIPELINES = (1, 16)
OPERATIONS = ("set", "get")
TRANSPORTS = ("tcp", "unix")
# (server, protocol): kvfast over RESP is the like-for-like comparison with Redis.
TARGETS_SERVED = (("kvfast", "resp"), ("kvfast", "native"), ("redis", "resp"))
LABELS = {"kvfast": "kvfast", "redis": "redis-server"}

FULL = {"repeats": 5, "requests": {1: 400_000, 16: 1_000_000}}
QUICK = {"repeats": 1, "requests": {1: 20_000, 16: 50_000}}

TARGETS = {
    "unix_vs_tcp_p1": 0.6,                              # issue #15
    "cpu_vs_redis_p1": COMPARE_TARGETS["cpu_vs_redis_p1"],
    "cpu_vs_redis_p16": COMPARE_TARGETS["cpu_vs_redis_p16"],
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def key(server, protocol, operation, pipeline, transport):
    return f"{server}-{protocol}-{operation}-P{pipeline}-{transport}"


def start(log_dir):
    """kvfast and redis-server, each on TCP and on a unix socket in ``log_dir``."""
    servers, sockets = {}, {}
    try:
        for kind in LABELS:
            sockets[kind] = os.path.join(log_dir, f"{kind}.sock")
            servers[kind] = ServerProcess(kind, log_dir, args=["--unixsocket", sockets[kind],
                                                               "--unixsocketperm", "700"])
    except BaseException:
        for server in servers.values():
            server.close()
        raise
    return servers, sockets


def measure(settings, log_dir):
    """Every load on every (server, protocol, transport), ``repeats`` rounds;
    returns {key: [run, ...]}."""
    runs = {}
    servers, sockets = start(log_dir)
    try:
        for repeat in range(settings["repeats"]):
            for pipeline in PIPELINES:
                requests = settings["requests"][pipeline]
                for operation in OPERATIONS:
                    for kind, protocol in TARGETS_SERVED:
                        for transport in TRANSPORTS:
                            server = servers[kind]
                            if operation == "set":
                                server.flush()
                            path = sockets[kind] if transport == "unix" else None

                            def run():
                                return kvfast_bench(server.port, operation, protocol=protocol, requests=requests,
                                                    clients=CLIENTS, pipeline=pipeline, keyspace=KEYSPACE,
                                                    unix_socket_path=path)

                            result = with_server_cpu(server.pid, run)
                            result["repeat"] = repeat
                            runs.setdefault(key(kind, protocol, operation, pipeline, transport), []).append(result)
                            log(f"  round {repeat + 1}/{settings['repeats']} {kind:<6} {protocol:<6} "
                                f"{operation} P{pipeline:<2} {transport:<4} "
                                f"{result['requests_per_second']:>12,.0f} req/s "
                                f"{result['server_cpu_us_per_request']:>7.3f} us/req p99 {result['p99_ms']:.3f} ms")
    finally:
        for server in servers.values():
            server.close()
    return runs


def summary(runs):
    figures = ("requests_per_second", "server_cpu_us_per_request", "server_cpu_us_per_request_schedstat", "p99_ms")
    return {name: {figure: statistics.median(run[figure] for run in entries) for figure in figures
                   if all(run.get(figure) is not None for run in entries)}
            for name, entries in runs.items()}


def ratio_rows(runs):
    """The paired ratios of server CPU per request, each with its target if it has one."""
    rows = []

    def add(comparison, top, bottom, target=None, figure="server_cpu_us_per_request"):
        ratio, low, high = paired_ratio([run[figure] for run in runs[top]], [run[figure] for run in runs[bottom]])
        rows.append({"comparison": comparison, "value": ratio, "range": [low, high],
                     "text": f"{ratio:.2f}×" + (f" ({low:.2f}–{high:.2f})" if high > low else ""),
                     "target": f"≤ {target}×" if target is not None else "—",
                     "met": ratio <= target if target is not None else None})

    for kind, protocol in TARGETS_SERVED:
        for pipeline in PIPELINES:
            for operation in OPERATIONS:
                add(f"server CPU/request, unix ÷ TCP, {LABELS[kind]} {protocol} {operation} P{pipeline}",
                    key(kind, protocol, operation, pipeline, "unix"), key(kind, protocol, operation, pipeline, "tcp"),
                    TARGETS["unix_vs_tcp_p1"] if kind == "kvfast" and pipeline == 1 else None)
    for transport in TRANSPORTS:
        for pipeline in PIPELINES:
            for operation in OPERATIONS:
                add(f"server CPU/request, kvfast ÷ Redis (RESP), {transport}, {operation} P{pipeline}",
                    key("kvfast", "resp", operation, pipeline, transport),
                    key("redis", "resp", operation, pipeline, transport),
                    TARGETS[f"cpu_vs_redis_p{pipeline}"])
    return rows


def markdown(report):
    env, settings, figures, rows = report["environment"], report["settings"], report["summary"], report["ratios"]
    met = sum(row["met"] for row in rows if row["target"] != "—")
    targeted = sum(row["target"] != "—" for row in rows)
    lines = [
        "# Unix domain socket vs TCP",
        "",
        f"Measured by `python -m bench.transport{' --quick' if settings['quick'] else ''}` on {env['date']}: "
        f"{env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, "
        f"{(env['redis_server'] or 'redis-server').split(' sha=')[0]}"
        f"{', kvfast ' + env['kvfast_commit'] if env['kvfast_commit'] else ''}. kvfast-bench, {CLIENTS} clients, "
        f"random keys in 0..{KEYSPACE - 1:,}, {settings['requests'][1]:,} requests per run at P1 and "
        f"{settings['requests'][16]:,} at P16; each server serves both transports from one process. Each ratio "
        f"is the median of {settings['repeats']} per-round ratios (lowest–highest in brackets). "
        f"**{met} of {targeted} targets met.**",
        "",
        "Server CPU per request: the server process's utime+stime (/proc/PID/stat) over the run divided by the "
        "requests.",
        "",
        *targets_table(rows),
        "",
        "## Figures (medians)",
        "",
        "| server | protocol | load | transport | requests/s | server CPU µs/request | p99 ms |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for kind, protocol in TARGETS_SERVED:
        for pipeline in PIPELINES:
            for operation in OPERATIONS:
                for transport in TRANSPORTS:
                    entry = figures[key(kind, protocol, operation, pipeline, transport)]
                    lines.append(f"| {LABELS[kind]} | {protocol} | {operation} P{pipeline} | {transport} | "
                                 f"{entry['requests_per_second']:,.0f} | {entry['server_cpu_us_per_request']:.3f} | "
                                 f"{entry['p99_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small request counts, one round (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"),
                        help="directory for transport.md/.json (default bench/results/)")
    parser.add_argument("--publish", action="store_true", help="also write docs/transport.md")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.rounds is not None:
        settings["repeats"] = max(1, args.rounds)
    started = time.monotonic()
    # The sockets live here too: a short path (sun_path holds 107 bytes) that is ours alone.
    log_dir = os.path.join(os.path.abspath(args.out), "transport-logs")
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    try:
        env = environment()
        runs = measure(settings, log_dir)
    except BenchError as error:
        print(f"bench.transport: error: {error}", file=sys.stderr)
        return 1
    report = {"environment": env, "settings": {**settings, "clients": CLIENTS, "keyspace": KEYSPACE},
              "runs": runs, "summary": summary(runs), "targets": TARGETS}
    report["ratios"] = ratio_rows(runs)
    report["seconds"] = time.monotonic() - started
    text = markdown(report)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "transport.json"), "w") as file:
        json.dump(report, file, indent=2)
    with open(os.path.join(args.out, "transport.md"), "w") as file:
        file.write(text)
    if args.publish:
        with open(os.path.join(REPO, "docs", "transport.md"), "w") as file:
            file.write(text)
    print(text)
    log(f"done in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
