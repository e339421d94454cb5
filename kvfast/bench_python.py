"""``kvfast-bench --client python``: the same load driven through :class:`kvfast.Client`.

Each of the ``clients`` connections is one Python thread with its own Client
(the GIL is released during socket I/O, so they overlap). A batch of
``pipeline`` requests is one call: a single-key method (``get``, ``set`` ...)
when ``pipeline`` is 1, else the bulk method (``get_many``, ``set_many`` ...)
on an ``array('q')`` of ``pipeline`` keys. Keys are drawn before the clock
starts. Latency is per call; ``client_cpu_us_per_request`` is this process's
CPU time per request: the Python side's cost, next to the server's.
"""
import array
import random
import threading
import time

from kvfast.client import Client
from kvfast.errors import KvfastError

SINGLE = {"get": "get", "put": "put", "del": "delete", "set": "set", "incr": "incr"}
BULK = {"get": "get_many", "put": "put_many", "del": "delete_many", "set": "set_many", "incr": "incr_many"}
WITH_VALUE = {"put", "set"}


def _call(client, operation, keys, single):
    """One batch; returns the error replies it met (put/del refusals are answers, not errors)."""
    if single:
        key = keys[0]
        try:
            if operation in WITH_VALUE:
                getattr(client, SINGLE[operation])(key, key)
            else:
                getattr(client, SINGLE[operation])(key)
        except KeyError:
            pass
        except KvfastError:
            return 1
        return 0
    try:
        if operation in WITH_VALUE:
            getattr(client, BULK[operation])(keys, keys)
        elif operation == "get":
            client.get_many(keys, default=0)
        else:
            getattr(client, BULK[operation])(keys)
    except KvfastError:
        return 1
    return 0


def run_python_load(host, port, unix_socket_path, test, clients, pipeline, requests, keyspace, timeout,
                    sequential=False, seed=15):
    """Run one test; returns kvfast-bench's result dict (plus the client's CPU cost)."""
    batches = -(-requests // pipeline)
    per_client = [batches // clients + (1 if i < batches % clients else 0) for i in range(clients)]
    generator = random.Random(seed)
    counter = iter(range(10 ** 18))
    plans = []
    for count in per_client:
        plan = []
        for _ in range(count):
            keys = array.array("q", (next(counter) % keyspace if sequential else generator.randrange(keyspace)
                                     for _ in range(pipeline)))
            operation = test if test != "mixed" else ("get" if generator.random() < 0.8 else "set")
            plan.append((operation, keys))
        plans.append(plan)
    connections = [Client(host, port, timeout=timeout, unix_socket_path=unix_socket_path) for _ in range(clients)]
    latencies, errors, failures = [], [0], []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def work(client, plan):
        mine, my_errors = [], 0
        start.wait()
        try:
            for operation, keys in plan:
                began = time.perf_counter()
                my_errors += _call(client, operation, keys, pipeline == 1)
                mine.append(time.perf_counter() - began)
        except BaseException as error:      # reported by the main thread
            failures.append(error)
        with lock:
            latencies.extend(mine)
            errors[0] += my_errors

    threads = [threading.Thread(target=work, args=(client, plan)) for client, plan in zip(connections, plans)]
    for thread in threads:
        thread.start()
    cpu_before = time.process_time()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    for client in connections:
        client.close()
    if failures:
        raise failures[0]
    latencies.sort()
    completed = sum(len(keys) for plan in plans for _, keys in plan)

    def percentile(percent):
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, max(0, round(len(latencies) * percent / 100) - 1))] * 1000

    return {
        "test": test, "protocol": "native", "client": "python", "clients": clients, "pipeline": pipeline,
        "keyspace": keyspace, "requests": completed, "errors": errors[0], "seconds": seconds,
        "requests_per_second": completed / seconds if seconds > 0 else 0.0,
        "client_cpu_us_per_request": 1e6 * cpu / completed if completed else 0.0,
        "latency_ms": {"p50": percentile(50), "p99": percentile(99), "p99.9": percentile(99.9),
                       "max": latencies[-1] * 1000 if latencies else 0.0},
    }
