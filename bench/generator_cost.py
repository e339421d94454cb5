"""Is kvfast-bench cheaper per request than redis-benchmark?

Starts ``redis-server --save '' --appendonly no`` on a free port, runs the same
RESP GET load (50 clients, random keys in a 1M keyspace, pipeline 1 and 16)
with redis-benchmark and with ``kvfast-bench --protocol resp``, and compares the
CPU time each load generator itself used per request (utime + stime of the
child, from getrusage). Below 1.0 means kvfast-bench spends less per request,
so it is not the bottleneck of what it measures.

    python -m bench.generator_cost
"""
import resource
import subprocess
import sys
import time

from bench.harness import ServerProcess


def child_cpu_per_request(command, requests):
    """Run ``command``; return (CPU microseconds per request, requests per second)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / requests * 1e6, requests / wall


def main():
    with ServerProcess("redis") as redis:
        port = str(redis.port)
        for pipeline, requests in (("1", 400_000), ("16", 2_000_000)):
            shape = ["-c", "50", "-r", "1000000", "-n", str(requests), "-P", pipeline, "-q"]
            theirs = child_cpu_per_request(["redis-benchmark", "-h", "127.0.0.1", "-p", port, *shape,
                                            "get", "__rand_int__"], requests)
            ours = child_cpu_per_request(["kvfast-bench", "-h", "127.0.0.1", "-p", port, "--protocol", "resp",
                                          *shape, "-t", "get"], requests)
            print(f"pipeline {pipeline:>2}: redis-benchmark {theirs[0]:.2f} us/request ({theirs[1]:,.0f}/s), "
                  f"kvfast-bench {ours[0]:.2f} us/request ({ours[1]:,.0f}/s): ratio {ours[0] / theirs[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
