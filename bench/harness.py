"""Shared helpers for the benchmarks: server processes, /proc readings, load runs.

Every server runs in its own process on a free loopback port and is stopped
with SIGTERM (then SIGKILL) by :meth:`ServerProcess.stop`; use it as a context
manager or in ``try``/``finally``. Load generators run as subprocesses with a
timeout, so nothing outlives a failed run.
"""
import csv
import ctypes
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

from bench.memory_per_key import rss_bytes

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class BenchError(RuntimeError):
    """A server or load generator did not behave: the message says which and why."""


def find_program(name):
    """Path of an installed console script or system program, or BenchError."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise BenchError(f"{name} is not installed")
    return path


# ---- /proc readings ----------------------------------------------------------------

def cpu_ticks(pid):
    """utime + stime of a whole process (all threads), in clock ticks (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])        # fields 14 and 15 of proc(5)


def cpu_ns(pid):
    """On-CPU nanoseconds of all the process's threads (/proc/PID/task/*/schedstat):
    the scheduler's exact figure, a cross-check of the tick-based one."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass            # a thread that just ended
    return total


def wait_for_stable_rss(pid, settle=0.3, timeout=10.0, tolerance=0.002):
    """RSS once it stops moving (within ``tolerance``) for ``settle`` seconds, so an
    incremental rehash finishing in the background is counted; gives up after
    ``timeout`` seconds and returns the last reading."""
    deadline = time.monotonic() + timeout
    previous = rss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(settle)
        current = rss_bytes(pid)
        if abs(current - previous) <= tolerance * max(previous, 1):
            return current
        previous = current
    return previous


# ---- talking to a server -------------------------------------------------------------

def resp_call(address, *args, timeout=30.0):
    """Send one RESP command, return the decoded reply (int, bytes, str or None)."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in (str(a).encode() for a in args))
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        line = reader.readline()
        if not line.endswith(b"\r\n"):
            raise BenchError(f"{args[0]}: connection closed after {line!r}")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b":":
            return int(body)
        if kind == b"$":
            length = int(body)
            return None if length < 0 else reader.read(length + 2)[:-2]
        if kind == b"-":
            raise BenchError(f"{args[0]}: error reply {body.decode()!r}")
        raise BenchError(f"{args[0]}: unexpected reply {line!r}")


def info_field(address, section, field):
    """One numeric field of INFO ``section``, or None if the server does not report it."""
    text = resp_call(address, "INFO", section).decode()
    match = re.search(rf"^{re.escape(field)}:(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def info_fields(address, section=None, timeout=30.0):
    """INFO (or one section of it) as a dict of field -> text."""
    text = resp_call(address, "INFO", *([section] if section else []), timeout=timeout).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def die_with_parent():
    """In the child before exec: get SIGTERM if the benchmark process dies, even
    by SIGKILL, so no server outlives it."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ---- server processes ------------------------------------------------------------------

class ServerProcess:
    """One server in its own process. ``kind`` is kvfast, redis or asyncio.

    Output goes to a log file (quoted in errors) rather than a pipe, so a chatty
    server can never block on a full pipe. ``args`` are extra command-line
    arguments (e.g. kvfast's ``--appendonly FILE``); ``name`` names the log file
    (default: the kind), so several servers of one kind can share ``log_dir``;
    ``start_timeout`` allows for a slow start (replaying a large log).
    ``command`` replaces the program (a list of words; kvfast only, e.g.
    ``[python, "-m", "kvfast.server_cli"]`` to run another tree's build) and
    ``env`` the environment it runs in.
    """

    LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")

    def __init__(self, kind, log_dir=None, *, args=(), name=None, start_timeout=START_TIMEOUT,
                 command=None, env=None):
        self.kind = kind
        self.args = list(args)
        self.command, self.env = command, env
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self._own_dir = log_dir is None
        self.log_dir = log_dir or tempfile.mkdtemp(prefix=f"kvfast-bench-{kind}-")
        self.log_path = os.path.join(self.log_dir, f"{name or kind}.log")
        self.start()

    # The command lines. kvfast and the reference pick a free port themselves
    # (port 0) and print it; redis-server needs one chosen for it.
    def _argv(self, port):
        if self.kind == "kvfast":
            server = self.command or [find_program("kvfast-server")]
            return [*server, "0", "--host", HOST, "--log-level", "warning", *self.args]
        if self.kind == "asyncio":
            return [sys.executable, os.path.join(REPO, "bench", "reference_asyncio.py"), "0", "--host", HOST,
                    *self.args]
        if self.kind == "redis":
            return [find_program("redis-server"), "--port", str(port), "--bind", HOST,
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", self.log_dir, "--logfile", "", "--loglevel", "warning", *self.args]
        raise ValueError(f"unknown server kind {self.kind!r}")

    def start(self):
        attempts = 5 if self.kind == "redis" else 1
        for attempt in range(attempts):
            port = free_port() if self.kind == "redis" else 0
            with open(self.log_path, "ab") as log:
                self._log_start = log.tell()          # a restart appends: read only what it writes
                self.proc = subprocess.Popen(self._argv(port), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.log_dir, env=self.env,
                                             start_new_session=True, preexec_fn=die_with_parent)
            try:
                self.port = self._wait_until_ready(port)
                return self
            except BaseException as error:
                self._terminate()
                retry = (isinstance(error, BenchError) and attempt < attempts - 1
                         and "in use" in self.log(since_start=True))
                if not retry:
                    if self._own_dir:
                        shutil.rmtree(self.log_dir, ignore_errors=True)
                    raise
        return self

    def _wait_until_ready(self, port):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} server exited with status {self.proc.returncode}: "
                                 f"{self.log(since_start=True)[-500:]!r}")
            if self.kind == "redis":
                # Ready when it answers, and it is this redis-server answering
                # (not another process that took the port first).
                try:
                    if info_field((HOST, port), "server", "process_id") == self.proc.pid:
                        return port
                except (OSError, BenchError):
                    pass
            else:
                match = self.LISTENING.search(self.log(since_start=True))
                if match:
                    return int(match.group(2))
            time.sleep(0.02)
        raise BenchError(f"{self.kind} server not ready after {self.start_timeout} s: "
                         f"{self.log(since_start=True)[-500:]!r}")

    def log(self, since_start=False):
        """The server's output (since its latest start, or all of it)."""
        try:
            with open(self.log_path, "rb") as log:
                if since_start:
                    log.seek(self._log_start)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    @property
    def address(self):
        return (HOST, self.port)

    def flush(self):
        """Empty the store: FLUSHALL where the server has it; the asyncio
        reference (a dict with no such command) is restarted instead."""
        if self.kind == "asyncio":
            self.stop()
            self.start()
        else:
            resp_call(self.address, "FLUSHALL")

    def count(self):
        """Keys stored (DBSIZE), or None for the asyncio reference."""
        return None if self.kind == "asyncio" else resp_call(self.address, "DBSIZE")

    def _terminate(self):
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.wait()
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
            raise

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds; returns the exit status."""
        self._terminate()
        return self.proc.returncode if self.proc else None

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start_servers(kinds, log_dir=None):
    """Start one server per kind; if any fails, stop those already started."""
    servers = {}
    try:
        for kind in kinds:
            servers[kind] = ServerProcess(kind, log_dir)
    except BaseException:
        for server in servers.values():
            server.close()
        raise
    return servers


# ---- load generators ----------------------------------------------------------------------

def run_tool(argv, timeout):
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{os.path.basename(argv[0])} took over {timeout} s: {' '.join(argv)}") from None
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with {result.returncode}: "
                         f"{(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout


def kvfast_bench_argv(port, test, *, protocol="native", requests, clients=50, pipeline=1,
                      keyspace=1_000_000, sequential=False, timeout=600.0, unix_socket_path=None):
    """The command line of one kvfast-bench test with ``--json`` output (over
    ``unix_socket_path`` instead of TCP when given)."""
    return [find_program("kvfast-bench"), "-h", HOST, "-p", str(port), "-c", str(clients),
            "-n", str(requests), "-P", str(pipeline), "-r", str(keyspace), "-t", test,
            "--protocol", protocol, "--json", "-q", "--timeout", str(timeout),
            *(["--sequential"] if sequential else []),
            *(["-s", unix_socket_path] if unix_socket_path else [])]


def kvfast_bench_result(output, test, requests):
    """kvfast-bench's JSON line for one test, checked (every reply, no errors) and
    summarised as :func:`kvfast_bench` returns it."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if len(lines) != 1:
        raise BenchError(f"kvfast-bench printed {len(lines)} JSON lines for one test")
    result = json.loads(lines[0])
    if result["requests"] != requests or result["errors"]:
        raise BenchError(f"kvfast-bench {test}: {result['requests']} of {requests} replies, "
                         f"{result['errors']} errors")
    return {"tool": "kvfast-bench", "requests": result["requests"], "errors": result["errors"],
            "seconds": result["seconds"], "requests_per_second": result["requests_per_second"],
            "p50_ms": result["latency_ms"]["p50"], "p99_ms": result["latency_ms"]["p99"],
            "p999_ms": result["latency_ms"]["p99.9"], "max_ms": result["latency_ms"]["max"],
            "raw": result}


def kvfast_bench(port, test, *, protocol="native", requests, clients=50, pipeline=1,
                 keyspace=1_000_000, sequential=False, timeout=600.0, unix_socket_path=None):
    """One kvfast-bench test; returns its JSON object (test, requests, errors,
    requests_per_second, latency_ms{p50,p99,p99.9,max}, ...)."""
    argv = kvfast_bench_argv(port, test, protocol=protocol, requests=requests, clients=clients,
                             pipeline=pipeline, keyspace=keyspace, sequential=sequential, timeout=timeout,
                             unix_socket_path=unix_socket_path)
    return kvfast_bench_result(run_tool(argv, timeout + 30), test, requests)


def redis_benchmark(port, command, *, requests, clients=50, pipeline=1, keyspace=1_000_000,
                    timeout=600.0):
    """One redis-benchmark run of ``command`` (a list of words) with ``--csv``;
    returns requests per second and latencies (redis-benchmark 7's CSV has
    p50 and p99 columns)."""
    argv = [find_program("redis-benchmark"), "-h", HOST, "-p", str(port), "-r", str(keyspace),
            "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "--csv", *command]
    output = run_tool(argv, timeout)
    rows = list(csv.DictReader(io.StringIO(output[output.index('"test"'):]))) if '"test"' in output else []
    if len(rows) != 1:
        raise BenchError(f"redis-benchmark output has no result row: {output[-500:]!r}")
    row = rows[0]
    return {"tool": "redis-benchmark", "requests": requests, "errors": 0,
            "requests_per_second": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]), "max_ms": float(row["max_latency_ms"]),
            "raw": row}


def with_server_cpu(server_pid, run):
    """Call ``run()`` (which returns a dict with ``requests``) and add the server
    process's CPU time over the call: seconds, and microseconds per request from
    /proc/PID/stat ticks (the reported figure) and from schedstat (exact)."""
    ticks_before, ns_before = cpu_ticks(server_pid), cpu_ns(server_pid)
    result = run()
    ticks_after, ns_after = cpu_ticks(server_pid), cpu_ns(server_pid)
    seconds = (ticks_after - ticks_before) / CLOCK_TICKS
    result["server_cpu_seconds"] = seconds
    result["server_cpu_us_per_request"] = seconds * 1e6 / result["requests"]
    if ns_before is not None and ns_after is not None:
        result["server_cpu_us_per_request_schedstat"] = (ns_after - ns_before) / 1e3 / result["requests"]
    return result


def paired_ratio(tops, bottoms):
    """Median, lowest and highest of the per-round ratios top ÷ bottom (the two
    runs of a round measured one right after the other, so a drift in machine
    speed cancels); rounds with a zero bottom are left out, and (nan, nan, nan)
    if that leaves none."""
    ratios = [top / bottom for top, bottom in zip(tops, bottoms) if bottom]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(ratios), min(ratios), max(ratios)


def fmt_ratio(ratio, low, high):
    """A ratio and its range as table text: ``0.98× (0.95–1.02)``."""
    if ratio != ratio:
        return "n/a"
    return f"{ratio:.2f}× ({low:.2f}–{high:.2f})"


def install_sigterm_handler():
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the servers."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def targets_table(rows) -> list:
    """Markdown lines of a "## Targets" table: each row a dict with
    ``comparison``, ``text`` (the measured figure), ``target`` and ``met``
    (None: a figure shown without a target)."""
    lines = ["## Targets", "", "| comparison | measured | target | |", "|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['comparison']} | {row['text']} | {row['target']} | "
                     f"{'' if row['met'] is None else 'met' if row['met'] else '**missed**'} |")
    return lines
