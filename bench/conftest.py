"""pytest options and reporting for ``python -m pytest bench/test_load.py``.

``--quick`` (or ``KVFAST_BENCH_QUICK=1``) shrinks every run to a smoke test of
a few seconds. At the end, a table of the load runs (requests/s, p99, server CPU
per request) and of the store micro-benchmarks (ns per operation) is printed:
pytest-benchmark's own table shows each run's wall time, which includes
starting kvfast-bench, so the figures that matter are these (also saved in
each benchmark's ``extra_info`` by ``--benchmark-json`` / ``--benchmark-autosave``).
"""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="kvfast load benchmarks: tiny runs (same as KVFAST_BENCH_QUICK=1)")


def is_quick(config):
    return config.getoption("--quick") or os.environ.get("KVFAST_BENCH_QUICK", "") not in ("", "0")


def pytest_configure(config):
    config.kvfast_bench_rows = []


@pytest.fixture(scope="session")
def quick(request):
    return is_quick(request.config)


@pytest.fixture(scope="session")
def report_rows(request):
    """Rows for the summary table: append dicts with a ``kind`` of load or store."""
    return request.config.kvfast_bench_rows


def pytest_terminal_summary(terminalreporter, config):
    rows = getattr(config, "kvfast_bench_rows", [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("kvfast load and store figures" + (" (quick)" if is_quick(config) else ""))
    loads = [row for row in rows if row["kind"] == "load"]
    if loads:
        write(f"{'protocol':<8} {'op':<5} {'clients':>7} {'P':>3} {'requests':>9} {'req/s':>12} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}")
        for row in loads:
            write(f"{row['protocol']:<8} {row['operation']:<5} {row['clients']:>7} {row['pipeline']:>3} "
                  f"{row['requests']:>9} {row['requests_per_second']:>12,.0f} {row['p50_ms']:>8.3f} "
                  f"{row['p99_ms']:>8.3f} {row['server_cpu_us_per_request']:>18.3f}")
    stores = [row for row in rows if row["kind"] == "store"]
    if stores:
        write("")
        write(f"{'store':<8} {'operation':<13} {'keys':>11} {'pattern':<11} {'ns/op (best)':>13} "
              f"{'ns/op (median)':>15}")
        for row in stores:
            write(f"{row['store']:<8} {row['operation']:<13} {row['keys']:>11,} {row['key_pattern']:<11} "
                  f"{row['ns_per_op']:>13.1f} {row['ns_per_op_median']:>15.1f}")
