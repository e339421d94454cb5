"""kvfast vs redis-server vs the asyncio reference, side by side in one run.

    python -m bench.compare [--quick] [--out DIR] [--publish]

Starts the three servers (each in its own process on a free loopback port),
then runs every load against every server that speaks its protocol,
interleaved (load by load, server after server) so drifts in machine speed hit
all servers alike, and repeats the whole round (5 times; once with --quick):

* RESP loads (kvfast, redis-server) with redis-benchmark:
  ``-c 50 -r 1000000 -P 1|16 set __rand_int__ __rand_int__ nx`` and ``get __rand_int__``
* native loads (kvfast, bench/reference_asyncio.py) with kvfast-bench:
  ``-c 50 -r 1000000 -P 1|16 -t set`` and ``-t get``

Each store is emptied before every set load (FLUSHALL; the asyncio reference
is restarted), so each get load reads what the set load just before it wrote.
For every run it records requests per second, p99 latency, and the server
process's CPU time per request (utime+stime from /proc/PID/stat, delta over the
run, divided by the requests): the figure that does not depend on how fast the
load generator is. Then it measures memory: RSS bytes per key in fresh servers
after loading 1M and 10M random keys (100k with --quick).

Writes compare.md, compare.json and compare.png into --out (default
bench/results/), prints the Markdown, and with --publish also writes
docs/benchmarks.md and docs/benchmarks.png.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from bench.harness import (REPO, BenchError, ServerProcess, find_program, info_field,
                           install_sigterm_handler, kvfast_bench, redis_benchmark, rss_bytes,
                           start_servers, targets_table, wait_for_stable_rss, with_server_cpu)

SERVERS = ("kvfast", "redis", "asyncio")
CLIENTS = 50
KEYSPACE = 1_000_000
MEMORY_KEYSPACE = 2**62          # random keys for the memory test: practically all distinct
PIPELINES = (1, 16)

# Requests per run. The asyncio reference serves 40-90k requests/s, so it gets
# fewer requests per run (requests/s and CPU per request do not depend on the
# count); kvfast and redis-server always get the same count.
FULL = {"repeats": 5, "requests": {1: 400_000, 16: 1_000_000}, "asyncio_requests": 150_000,
        "memory_keys": (1_000_000, 10_000_000)}
QUICK = {"repeats": 1, "requests": {1: 5_000, 16: 20_000}, "asyncio_requests": 5_000,
         "memory_keys": (100_000,)}

TARGETS = {
    "cpu_vs_redis_p1": 0.85,
    "cpu_vs_redis_p16": 0.45,
    "rps_vs_redis_p16": 1.5,
    "bytes_per_key": 24.0,
    "rps_vs_asyncio_p16": 5.0,
    "cpu_vs_asyncio_p1": 3.0,
}

LABELS = {"kvfast": "kvfast", "redis": "redis-server", "asyncio": "asyncio reference"}


class Load:
    """One load shape: protocol, operation, pipeline depth."""

    def __init__(self, protocol, operation, pipeline):
        self.protocol, self.operation, self.pipeline = protocol, operation, pipeline

    @property
    def key(self):
        return f"{self.protocol}-{self.operation}-P{self.pipeline}"

    @property
    def label(self):
        name = {"setnx": "SET NX", "get": "GET"}[self.operation] if self.protocol == "resp" \
            else self.operation
        return f"{'RESP' if self.protocol == 'resp' else 'native'} {name} P{self.pipeline}"

    @property
    def servers(self):
        return ("kvfast", "redis") if self.protocol == "resp" else ("kvfast", "asyncio")

    @property
    def tool(self):
        return "redis-benchmark" if self.protocol == "resp" else "kvfast-bench"

    @property
    def writes(self):
        return self.operation in ("set", "setnx")

    def run(self, server, requests):
        if self.protocol == "resp":
            command = (["set", "__rand_int__", "__rand_int__", "nx"] if self.operation == "setnx"
                       else ["get", "__rand_int__"])
            return redis_benchmark(server.port, command, requests=requests, clients=CLIENTS,
                                   pipeline=self.pipeline, keyspace=KEYSPACE)
        return kvfast_bench(server.port, self.operation, requests=requests, clients=CLIENTS,
                            pipeline=self.pipeline, keyspace=KEYSPACE)


# Order within a round: per pipeline depth and protocol, the set load then the
# get load that reads what it wrote.
LOADS = [Load(protocol, operation, pipeline)
         for pipeline in PIPELINES
         for protocol, operations in (("resp", ("setnx", "get")), ("native", ("set", "get")))
         for operation in operations]


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---- measuring ------------------------------------------------------------------------

def measure_loads(settings, log_dir):
    """All loads × servers × repeats; returns {load key: {server: [run, ...]}}."""
    runs = {load.key: {kind: [] for kind in load.servers} for load in LOADS}
    servers = start_servers(SERVERS, log_dir)
    try:
        for repeat in range(settings["repeats"]):
            for load in LOADS:
                for kind in load.servers:
                    server = servers[kind]
                    requests = (settings["asyncio_requests"] if kind == "asyncio"
                                else settings["requests"][load.pipeline])
                    if load.writes:
                        server.flush()
                    result = with_server_cpu(server.pid, lambda: load.run(server, requests))
                    result["repeat"] = repeat
                    runs[load.key][kind].append(result)
                    log(f"  round {repeat + 1}/{settings['repeats']} {load.label:<18} {kind:<8}"
                        f"{result['requests_per_second']:>12,.0f} req/s "
                        f"{result['server_cpu_us_per_request']:>8.2f} us/req "
                        f"p99 {result['p99_ms']:.3f} ms")
    finally:
        for server in servers.values():
            server.close()
    return runs


def measure_memory(kind, sizes, log_dir):
    """Fresh server; load random keys up to each size in turn (kvfast-bench
    draws the same key sequence every run, so a run of 10M re-sends the first
    1M keys and adds 9M new ones); RSS growth divided by the key count."""
    results = []
    with ServerProcess(kind, log_dir) as server:
        time.sleep(0.3)
        before = rss_bytes(server.pid)
        for size in sizes:
            if kind == "redis":
                run = kvfast_bench(server.port, "set", protocol="resp", requests=size,
                                   pipeline=16, keyspace=MEMORY_KEYSPACE)
            else:
                run = kvfast_bench(server.port, "put", requests=size, pipeline=16,
                                   keyspace=MEMORY_KEYSPACE)
            after = wait_for_stable_rss(server.pid, timeout=3.0 if size <= 100_000 else 10.0)
            count = server.count()
            counted = count is not None
            count = count if counted else size
            used = info_field(server.address, "memory", "used_memory") if kind != "asyncio" else None
            results.append({"server": kind, "keys": count, "keys_counted_by_server": counted,
                            "rss_before": before, "rss_after": after,
                            "rss_bytes_per_key": (after - before) / count,
                            "used_memory": used,
                            "used_memory_bytes_per_key": used / count if used else None,
                            "load_requests_per_second": run["requests_per_second"]})
            log(f"  memory {kind:<8} {count:>11,} keys: {(after - before) / count:6.1f} RSS bytes/key")
    return results


def median_summary(runs):
    """Median of each figure over the repeats of one server × load."""
    keys = ("requests_per_second", "server_cpu_us_per_request", "server_cpu_us_per_request_schedstat",
            "p50_ms", "p99_ms")
    return {key: statistics.median(run[key] for run in runs) for key in keys
            if all(run.get(key) is not None for run in runs)} | {"requests": runs[0]["requests"],
                                                                  "repeats": len(runs)}


# ---- ratios and targets ---------------------------------------------------------------

def ratio_rows(runs, memory):
    """(comparison, measured, target text, met) for every target.

    A ratio between two servers is taken round by round (the two runs of a round
    are measured one right after the other, under the same machine conditions)
    and the median of those per-round ratios is the figure; the range of the
    per-round ratios is shown beside it. On a shared machine whose speed drifts
    by 10-20% over minutes, pairing cancels most of the drift that a ratio of
    two separate medians would keep.
    """
    rows = []

    def paired(load_key, numerator, denominator, name):
        # A round whose denominator is 0 (under one clock tick of server CPU, as short
        # --quick runs can be) has no ratio; NaN (a target not met) when no round has one.
        ratios = [top[name] / bottom[name]
                  for top, bottom in zip(runs[load_key][numerator], runs[load_key][denominator])
                  if bottom[name] > 0]
        if not ratios:
            return float("nan"), float("nan"), float("nan")
        return statistics.median(ratios), min(ratios), max(ratios)

    def spread(low, high, suffix=""):
        return f" ({low:.2f}–{high:.2f}{suffix})" if high > low else ""

    for pipeline, limit in ((1, TARGETS["cpu_vs_redis_p1"]), (16, TARGETS["cpu_vs_redis_p16"])):
        for operation, name in (("setnx", "SET NX"), ("get", "GET")):
            ratio, low, high = paired(f"resp-{operation}-P{pipeline}", "kvfast", "redis",
                                      "server_cpu_us_per_request")
            rows.append({"comparison": f"server CPU/request, kvfast ÷ Redis, {name} P{pipeline}",
                         "value": ratio, "range": [low, high], "text": f"{ratio:.2f}×{spread(low, high)}",
                         "target": f"≤ {limit}×", "met": ratio <= limit})
    for operation, name in (("setnx", "SET NX"), ("get", "GET")):
        ratio, low, high = paired(f"resp-{operation}-P16", "kvfast", "redis", "requests_per_second")
        limit = TARGETS["rps_vs_redis_p16"]
        rows.append({"comparison": f"throughput, kvfast ÷ Redis, {name} P16", "value": ratio,
                     "range": [low, high], "text": f"{ratio:.2f}×{spread(low, high)}",
                     "target": f"≥ {limit}×", "met": ratio >= limit})
    for entry in memory:
        if entry["server"] != "kvfast":
            continue
        redis = next((other for other in memory
                      if other["server"] == "redis" and other["keys"] >= 0.99 * entry["keys"]
                      and other["keys"] <= 1.01 * entry["keys"]), None)
        value = entry["rss_bytes_per_key"]
        text = f"{value:.1f} B/key" + (f" (Redis {redis['rss_bytes_per_key']:.1f})" if redis else "")
        rows.append({"comparison": f"kvfast RSS bytes per key, {entry['keys'] / 1e6:g}M keys",
                     "value": value, "text": text, "target": f"≤ {TARGETS['bytes_per_key']:g}",
                     "met": value <= TARGETS["bytes_per_key"]})
    for operation in ("set", "get"):
        ratio, low, high = paired(f"native-{operation}-P16", "kvfast", "asyncio", "requests_per_second")
        limit = TARGETS["rps_vs_asyncio_p16"]
        rows.append({"comparison": f"throughput, kvfast ÷ asyncio, native {operation} P16", "value": ratio,
                     "range": [low, high], "text": f"{ratio:.2f}×{spread(low, high)}",
                     "target": f"≥ {limit:g}×", "met": ratio >= limit})
    for operation in ("set", "get"):
        ratio, low, high = paired(f"native-{operation}-P1", "asyncio", "kvfast", "server_cpu_us_per_request")
        limit = TARGETS["cpu_vs_asyncio_p1"]
        rows.append({"comparison": f"server CPU/request, asyncio ÷ kvfast, native {operation} P1",
                     "value": ratio, "range": [low, high], "text": f"{ratio:.2f}× lower{spread(low, high)}",
                     "target": f"≥ {limit:g}× lower", "met": ratio >= limit})
    return rows


# ---- reporting ------------------------------------------------------------------------

def environment():
    def version(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        pass
    commit = version(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "redis_server": version([find_program("redis-server"), "--version"]),
            "redis_benchmark": version([find_program("redis-benchmark"), "--version"]),
            "kvfast_commit": commit}


def fmt_int(value):
    return f"{value:,.0f}"


def markdown(report, image_name):
    env, settings = report["environment"], report["settings"]
    summary, memory, rows = report["summary"], report["memory"], report["ratios"]
    met = sum(row["met"] for row in rows)
    lines = [
        "# kvfast benchmarks",
        "",
        f"Measured by `python -m bench.compare{' --quick' if settings['quick'] else ''}` on "
        f"{env['date']}: {env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, Python {env['python']}, "
        f"{(env['redis_server'] or 'redis-server').split(' sha=')[0]}"
        f"{', kvfast ' + env['kvfast_commit'] if env['kvfast_commit'] else ''}. "
        f"Servers and load generators share the machine over 127.0.0.1; each figure is the median of "
        f"{settings['repeats']} run{'s' if settings['repeats'] != 1 else ''}, all servers measured side by "
        f"side in one run. **{met} of {len(rows)} targets met.**",
        "",
        "A ratio between two servers is the median of its per-round ratios (in each round the servers "
        "run the same load one right after the other), with the lowest and highest per-round ratio "
        "in brackets.",
        "",
        "Server CPU per request is the server process's utime+stime (/proc/PID/stat) over the run "
        "divided by the requests: unlike requests/s it does not depend on how fast the load generator is.",
        "",
        *targets_table(rows),
    ]
    lines += [
        "",
        "## Throughput, CPU and latency",
        "",
        f"50 clients, random keys in 0..999,999. RESP loads: `redis-benchmark -c 50 -r 1000000 -P N "
        f"set __rand_int__ __rand_int__ nx` / `get __rand_int__`; native loads: `kvfast-bench -c 50 "
        f"-r 1000000 -P N -t set` / `-t get`. Requests per run: "
        f"{fmt_int(settings['requests'][1])} at P1 and {fmt_int(settings['requests'][16])} at P16 "
        f"({fmt_int(settings['asyncio_requests'])} for the asyncio reference). The store is emptied "
        "before each set load; each get load reads what the set load before it wrote.",
        "",
        "| load | server | requests/s | server CPU µs/request | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for load in LOADS:
        for kind in load.servers:
            figures = summary[load.key][kind]
            lines.append(f"| {load.label} | {LABELS[kind]} | {fmt_int(figures['requests_per_second'])} | "
                         f"{figures['server_cpu_us_per_request']:.2f} | {figures['p99_ms']:.3f} |")
    lines += [
        "",
        "## Memory",
        "",
        "RSS growth of a fresh server after loading random int64 keys with pipelined writes "
        "(kvfast and the reference: native `put`; Redis: `SET`), divided by the keys stored "
        "(DBSIZE; the reference's count is the requests sent). `used_memory` is what the server's "
        "INFO reports.",
        "",
        "| server | keys | RSS before MB | RSS after MB | RSS bytes/key | used_memory bytes/key |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in memory:
        used = entry["used_memory_bytes_per_key"]
        lines.append(f"| {LABELS[entry['server']]} | {fmt_int(entry['keys'])} | "
                     f"{entry['rss_before'] / 1e6:.1f} | {entry['rss_after'] / 1e6:.1f} | "
                     f"{entry['rss_bytes_per_key']:.1f} | {f'{used:.1f}' if used else '—'} |")
    lines += ["", f"![CPU per request, requests per second and memory per key]({image_name})", ""]
    return "\n".join(lines)


def chart(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, memory = report["summary"], report["memory"]
    colors = {"kvfast": "#1f77b4", "redis": "#d62728", "asyncio": "#7f7f7f"}
    figure, (cpu_axes, rps_axes, memory_axes) = plt.subplots(
        3, 1, figsize=(11, 12), gridspec_kw={"height_ratios": [3, 3, 2]})
    width = 0.38
    positions = range(len(LOADS))
    for axes, name, title in ((cpu_axes, "server_cpu_us_per_request", "server CPU µs per request (lower is better)"),
                              (rps_axes, "requests_per_second", "requests per second (higher is better)")):
        labelled = set()
        for index, load in enumerate(LOADS):
            for slot, kind in enumerate(load.servers):
                value = summary[load.key][kind][name]
                x = index + (slot - 0.5) * width
                axes.bar(x, value, width, color=colors[kind], label=None if kind in labelled else LABELS[kind])
                labelled.add(kind)
                axes.annotate(f"{value:.2f}" if name.startswith("server") else f"{value / 1000:,.0f}k",
                              (x, value), ha="center", va="bottom", fontsize=7)
        axes.set_yscale("log")
        axes.margins(y=0.12)
        axes.set_title(title)
        axes.set_xticks(list(positions))
        axes.set_xticklabels([load.label for load in LOADS], fontsize=8)
        axes.legend(fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    sizes = sorted({entry["keys"] for entry in memory if entry["server"] == "kvfast"})
    kinds = [kind for kind in SERVERS if any(entry["server"] == kind for entry in memory)]
    bar = 0.8 / len(kinds)
    labelled = set()
    for slot, kind in enumerate(kinds):
        for index, size in enumerate(sizes):
            entry = next((e for e in memory if e["server"] == kind and 0.99 * size <= e["keys"] <= 1.01 * size), None)
            if entry is None:
                continue
            x = index + (slot - (len(kinds) - 1) / 2) * bar
            memory_axes.bar(x, entry["rss_bytes_per_key"], bar, color=colors[kind],
                            label=None if kind in labelled else LABELS[kind])
            labelled.add(kind)
            memory_axes.annotate(f"{entry['rss_bytes_per_key']:.1f}", (x, entry["rss_bytes_per_key"]),
                                 ha="center", va="bottom", fontsize=8)
    memory_axes.axhline(TARGETS["bytes_per_key"], color="black", linestyle="--", linewidth=0.8,
                        label=f"target ≤ {TARGETS['bytes_per_key']:g}")
    memory_axes.margins(y=0.15)
    memory_axes.set_xticks(range(len(sizes)))
    memory_axes.set_xticklabels([f"{size / 1e6:g}M random keys" for size in sizes])
    memory_axes.set_title("RSS bytes per key (lower is better)")
    memory_axes.legend(fontsize=8)
    memory_axes.grid(axis="y", alpha=0.3)
    env = report["environment"]
    figure.suptitle(f"kvfast vs redis-server vs asyncio — {env['cores']} cores, {env['date']}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report, out_dir, publish):
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "compare.json"), "md": os.path.join(out_dir, "compare.md"),
             "png": os.path.join(out_dir, "compare.png")}
    with open(paths["json"], "w") as file:
        json.dump(report, file, indent=2)
    text = markdown(report, "compare.png")
    with open(paths["md"], "w") as file:
        file.write(text)
    chart(report, paths["png"])
    if publish:
        docs = os.path.join(REPO, "docs")
        os.makedirs(docs, exist_ok=True)
        with open(os.path.join(docs, "benchmarks.md"), "w") as file:
            file.write(markdown(report, "benchmarks.png"))
        shutil.copyfile(paths["png"], os.path.join(docs, "benchmarks.png"))
        paths["published"] = [os.path.join(docs, "benchmarks.md"), os.path.join(docs, "benchmarks.png")]
    return text, paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small request counts, one round (a smoke test)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"),
                        help="directory for compare.md/.json/.png (default bench/results/)")
    parser.add_argument("--publish", action="store_true",
                        help="also write docs/benchmarks.md and docs/benchmarks.png")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    started = time.monotonic()
    log_dir = os.path.join(os.path.abspath(args.out), "logs")      # the servers' output, for errors
    shutil.rmtree(log_dir, ignore_errors=True)
    os.makedirs(log_dir)
    try:
        env = environment()
        log(f"loads: {settings['repeats']} round(s) of {len(LOADS)} loads")
        runs = measure_loads(settings, log_dir)
        log("memory:")
        memory = []
        for kind in SERVERS:
            sizes = settings["memory_keys"] if kind != "asyncio" else settings["memory_keys"][:1]
            memory += measure_memory(kind, sizes, log_dir)
    except BenchError as error:
        print(f"bench.compare: error: {error}", file=sys.stderr)
        return 1
    summary = {load.key: {kind: median_summary(runs[load.key][kind]) for kind in load.servers} for load in LOADS}
    report = {"environment": env, "settings": {**settings, "clients": CLIENTS, "keyspace": KEYSPACE},
              "loads": [{"key": load.key, "label": load.label, "protocol": load.protocol,
                         "operation": load.operation, "pipeline": load.pipeline, "tool": load.tool,
                         "servers": list(load.servers)} for load in LOADS],
              "runs": runs, "summary": summary, "memory": memory, "targets": TARGETS}
    report["ratios"] = ratio_rows(runs, memory)
    report["seconds"] = time.monotonic() - started
    text, paths = write_report(report, args.out, args.publish)
    print(text)
    log(f"wrote {paths['md']}, {paths['json']}, {paths['png']}"
        + (f"; published {', '.join(paths['published'])}" if args.publish else "")
        + f" ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
