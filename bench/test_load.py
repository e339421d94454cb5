"""Load and store benchmarks with pytest-benchmark.

    python -m pytest bench/test_load.py                      # about 1-2 minutes
    python -m pytest bench/test_load.py --quick              # a few seconds (or KVFAST_BENCH_QUICK=1)
    python -m pytest bench/test_load.py --benchmark-json out.json

Load runs: one kvfast-server in its own process for the module; kvfast-bench
drives it with 1, 50 and 1,000 concurrent clients, pipeline 1 and 16, for set,
get and incr, over the native protocol and RESP. Each run is one
``benchmark.pedantic`` round; its kvfast-bench figures (requests/s, latency
percentiles) and the server's CPU time per request (utime+stime from
/proc/PID/stat over the run) go into ``benchmark.extra_info``.

Store runs: ``IntStore.put_range`` / ``get_range`` / ``delete_range`` (C loops without the GIL)
at 1M and 10M keys, sequential and spread out (see STEPS), ns per operation =
time / count; and, for scale, a Python dict doing the same from a Python loop
(1M keys). With --quick: 100k keys, 2,000 requests per load run.
"""
import statistics
import time

import pytest

from bench.conftest import is_quick
from bench.harness import ServerProcess, kvfast_bench, with_server_cpu
from kvfast._store import IntStore

CLIENTS = (1, 50, 1000)
PIPELINES = (1, 16)
OPERATIONS = ("set", "get", "incr")
PROTOCOLS = ("native", "resp")
KEYSPACE = 1_000_000

# Requests per load run, by (clients, pipeline): about a second each here.
REQUESTS = {(1, 1): 30_000, (1, 16): 200_000, (50, 1): 150_000, (50, 16): 600_000,
            (1000, 1): 150_000, (1000, 16): 600_000}
QUICK_REQUESTS = 2_000
QUICK_KEYSPACE = 10_000

# Key patterns for the store runs: start 1, step 1 (sequential keys: a dict
# keeps them in consecutive slots, since hash(k) == k) or a large odd step
# (keys scattered over the dict's slots as well as over IntStore's).
STEPS = {"sequential": 1, "spread": 0x9E3779B97}
STORE_SIZES = (1_000_000, 10_000_000)
DICT_SIZES = (1_000_000,)
QUICK_STORE_SIZES = (100_000,)


@pytest.fixture(scope="module")
def kvfast_server(quick):
    """One kvfast-server for the module, with about 63% of the keyspace set
    (one random set per key of the keyspace), so gets mostly hit."""
    server = ServerProcess("kvfast")
    try:
        keyspace = QUICK_KEYSPACE if quick else KEYSPACE
        kvfast_bench(server.port, "set", requests=keyspace, clients=50, pipeline=16, keyspace=keyspace)
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: f"P{p}")
@pytest.mark.parametrize("clients", CLIENTS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load(benchmark, kvfast_server, quick, report_rows, protocol, operation, clients, pipeline):
    requests = QUICK_REQUESTS if quick else REQUESTS[clients, pipeline]
    keyspace = QUICK_KEYSPACE if quick else KEYSPACE
    benchmark.group = f"load {protocol} {operation}"

    def run():
        return with_server_cpu(kvfast_server.pid, lambda: kvfast_bench(
            kvfast_server.port, operation, protocol=protocol, requests=requests, clients=clients,
            pipeline=pipeline, keyspace=keyspace))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    latency = result["raw"]["latency_ms"]
    info = {"protocol": protocol, "operation": operation, "clients": clients, "pipeline": pipeline,
            "requests": result["requests"], "errors": result["errors"], "keyspace": keyspace,
            "requests_per_second": result["requests_per_second"], "seconds": result["seconds"],
            "p50_ms": latency["p50"], "p99_ms": latency["p99"], "p99.9_ms": latency["p99.9"],
            "max_ms": latency["max"], "server_cpu_seconds": result["server_cpu_seconds"],
            "server_cpu_us_per_request": result["server_cpu_us_per_request"],
            "server_cpu_us_per_request_schedstat": result.get("server_cpu_us_per_request_schedstat")}
    benchmark.extra_info.update(info)
    report_rows.append({"kind": "load", **info})
    assert result["requests"] == requests and result["errors"] == 0
    assert result["requests_per_second"] > 0


# ---- the store on its own ----------------------------------------------------------------

def pytest_generate_tests(metafunc):
    """``store_size`` / ``dict_size``: the key counts, fewer with --quick."""
    quick = is_quick(metafunc.config)
    for name, sizes in (("store_size", STORE_SIZES), ("dict_size", DICT_SIZES)):
        if name in metafunc.fixturenames:
            sizes = QUICK_STORE_SIZES if quick else sizes
            metafunc.parametrize(name, sizes, ids=[f"{size / 1e6:g}M" for size in sizes])
    if "step" in metafunc.fixturenames:
        metafunc.parametrize("step", list(STEPS.values()), ids=list(STEPS))


def timed(target, seconds):
    """``target`` that also appends each call's duration to ``seconds`` (kept
    here rather than read from benchmark.stats, which --benchmark-disable leaves
    empty)."""
    def run(*args):
        started = time.perf_counter()
        result = target(*args)
        seconds.append(time.perf_counter() - started)
        return result
    return run


def store_benchmark(benchmark, report_rows, store, operation, count, step, target, setup):
    """Run ``target`` over fresh ``setup()`` arguments for a few rounds; record ns
    per operation (best and median round) in extra_info and the summary."""
    seconds = []
    pattern = next(name for name, value in STEPS.items() if value == step)
    benchmark.group = f"store {count:,} {pattern} keys"
    result = benchmark.pedantic(timed(target, seconds), setup=lambda: (setup(), {}),
                                rounds=2 if count >= 10_000_000 else 5, iterations=1)
    info = {"store": store, "operation": operation, "keys": count, "key_pattern": pattern, "step": step,
            "ns_per_op": min(seconds) * 1e9 / count,
            "ns_per_op_median": statistics.median(seconds) * 1e9 / count}
    benchmark.extra_info.update(info)
    report_rows.append({"kind": "store", **info})
    return result


def test_intstore_put_range(benchmark, report_rows, store_size, step):
    inserted = store_benchmark(benchmark, report_rows, "IntStore", "put_range", store_size, step,
                               lambda store: store.put_range(1, store_size, step), lambda: (IntStore(),))
    assert inserted == store_size


def loaded_store(count, step):
    store = IntStore()
    store.put_range(1, count, step)
    while store.migrate_idle():          # finish the last resize, as an idle server would
        pass
    return store


def test_intstore_get_range(benchmark, report_rows, store_size, step):
    found = store_benchmark(benchmark, report_rows, "IntStore", "get_range", store_size, step,
                            lambda store: store.get_range(1, store_size, step),
                            lambda: (loaded_store(store_size, step),))
    assert found == store_size


def test_intstore_delete_range(benchmark, report_rows, store_size, step):
    deleted = store_benchmark(benchmark, report_rows, "IntStore", "delete_range", store_size, step,
                              lambda store: store.delete_range(1, store_size, step),
                              lambda: (loaded_store(store_size, step),))
    assert deleted == store_size


def dict_put_range(store, start, count, step=1):
    """What IntStore.put_range does (insert if absent, value = key), in Python."""
    for key in range(start, start + count * step, step):
        store.setdefault(key, key)


def dict_get_range(store, start, count, step=1):
    """What IntStore.get_range does, in Python."""
    found = 0
    for key in range(start, start + count * step, step):
        found += key in store
    return found


def dict_delete_range(store, start, count, step=1):
    """What IntStore.delete_range does, in Python."""
    for key in range(start, start + count * step, step):
        store.pop(key, None)


def test_dict_put_range(benchmark, report_rows, dict_size, step):
    store_benchmark(benchmark, report_rows, "dict", "put_range", dict_size, step,
                    lambda store: dict_put_range(store, 1, dict_size, step), lambda: ({},))


def loaded_dict(count, step):
    store = {}
    dict_put_range(store, 1, count, step)
    return store


def test_dict_get_range(benchmark, report_rows, dict_size, step):
    found = store_benchmark(benchmark, report_rows, "dict", "get_range", dict_size, step,
                            lambda store: dict_get_range(store, 1, dict_size, step),
                            lambda: (loaded_dict(dict_size, step),))
    assert found == dict_size


def test_dict_delete_range(benchmark, report_rows, dict_size, step):
    store_benchmark(benchmark, report_rows, "dict", "delete_range", dict_size, step,
                    lambda store: dict_delete_range(store, 1, dict_size, step),
                    lambda: (loaded_dict(dict_size, step),))
