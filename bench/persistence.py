"""What the append-only log costs: throughput and CPU, replay speed, compaction pause.

    python -m bench.persistence [--keys N] [--quick] [--json OUT] [--dir DIR]

Three measurements, printed as one Markdown report (progress goes to stderr):

1. **Throughput and server CPU per request** with the log off, ``--fsync no``,
   ``everysec`` and ``always``: four kvfast-servers side by side (each log
   configuration with a fresh log file in its own temporary folder), driven by
   ``kvfast-bench -c 50 -r 1000000 -P 1|16 -t set`` and ``-t mixed`` (80% get,
   20% set; native protocol, random keys), interleaved load by load and server
   after server, and repeated (3 rounds; medians). Server CPU is utime+stime of
   the server process, all its threads (the everysec sync thread too), from
   /proc/PID/stat, divided by the requests. Automatic compaction is switched off
   here (``--aof-rewrite-min-bytes`` 2^60) so that no run pays for a rewrite:
   that cost is measured by part 3.
2. **Replay speed**: ``kvfast-bench -t put --sequential -P 16`` loads N distinct
   keys (default 10M) into a server with ``--appendonly``; SIGTERM; the server
   is restarted and its ``loaded N keys from FILE in S s`` line gives records
   per second: from the page cache (median of 3 restarts), then once with the
   file's pages dropped from the cache (``posix_fadvise(DONTNEED)``).
3. **Compaction pause**: on that server (N keys), a steady ``kvfast-bench -t
   mixed -P 1 -c 50`` load over the loaded keys while RESP ``BGREWRITEAOF``
   runs (INFO polled every 10 ms until ``aof_rewrite_in_progress:0``), and the
   same load without a rewrite. The load starts 1 s before the rewrite and is
   sized (from an idle rewrite and the load's rate) to outlast it; a probe
   process also sends one ``get`` every millisecond on its own connection and
   timestamps each reply, so the worst stall inside the exact rewrite window is
   known too. Afterwards the server is restarted from the rewritten log and
   DBSIZE and 10,000 sampled values are compared with what it served before.

``--quick`` (200K keys, small runs, one round) is a smoke test of under a
minute. ``--json OUT`` also writes every figure to OUT. Logs live in a
temporary folder under ``--dir`` (default: the system's temporary folder; its
file system is reported, since it decides what an fsync costs); it is removed
at the end, and every server is stopped, whatever happens.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

from bench.harness import (HOST, REPO, BenchError, ServerProcess, find_program, info_fields,
                           install_sigterm_handler, kvfast_bench, kvfast_bench_argv, kvfast_bench_result,
                           resp_call, targets_table, with_server_cpu)

CONFIGS = ("off", "no", "everysec", "always")
CLIENTS = 50
KEYSPACE = 1_000_000
PIPELINES = (1, 16)
OPERATIONS = ("set", "mixed")
NO_AUTO_REWRITE = 2**60          # --aof-rewrite-min-bytes for part 1: never compact by itself

FULL = {"repeats": 5, "requests": {1: 400_000, 16: 1_000_000}, "keys": 10_000_000,
        "replay_repeats": 3, "calibration_requests": 200_000}
QUICK = {"repeats": 1, "requests": {1: 20_000, 16: 100_000}, "keys": 200_000,
         "replay_repeats": 1, "calibration_requests": 20_000}

TARGETS = {"everysec_vs_off": 0.90, "replay_records_per_second": 5e6, "pause_ms": 50.0}

LOADED = re.compile(r"loaded (\d+) keys from (.+?) in ([0-9.]+) s")
HEADER_BYTES = 16                # the log's header (magic, version, CRC)
SET_RECORD_BYTES = 21            # type + key + value + CRC
LEAD_SECONDS = 1.0               # the load runs this long before BGREWRITEAOF...
TAIL_SECONDS = 1.0               # ...and should run about this long after it ends
POLL_SECONDS = 0.01              # INFO polling while a rewrite runs (and in the window without one)
PROBE_INTERVAL = 0.001
SAMPLED_KEYS = 10_000
OTHER_CPU_WARNING = 0.25         # cores used by other processes during a run: worth a warning


def log(message):
    print(message, file=sys.stderr, flush=True)


def fmt_int(value):
    return f"{value:,.0f}"


# ---- programs and environment ---------------------------------------------------------

def check_programs():
    """kvfast-server must have --appendonly. If the installed console scripts
    cannot import kvfast (a stale editable install pointing elsewhere), fall back
    to this checkout's kvfast/ through PYTHONPATH, and say so."""
    def server_help():
        return subprocess.run([find_program("kvfast-server"), "--help"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)

    result = server_help()
    if result.returncode != 0 and "No module named 'kvfast'" in result.stderr:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
        log(f"warning: the installed kvfast-server cannot import kvfast; using {REPO} (PYTHONPATH)")
        result = server_help()
    if result.returncode != 0:
        raise BenchError(f"kvfast-server --help failed: {(result.stderr or result.stdout).strip()[-300:]}")
    if "--appendonly" not in result.stdout:
        raise BenchError("kvfast-server has no --appendonly option: build kvfast with the append-only log")


def build_stamp():
    """Modification times of the kvfast extension modules the servers load: if they
    change during a run, the figures mix two builds."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("kvfast")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    stamp = {}
    for folder in spec.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".so"):
                stamp[name] = os.stat(os.path.join(folder, name)).st_mtime_ns
    return stamp


def mount_of(path):
    """(mount point, file system type) holding ``path``, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("/", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1].replace("\\040", " ")
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                    best = (point, fields[2])
    except OSError:
        pass
    return best


def environment(root):
    def run(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                       None)
    except OSError:
        pass
    point, fs_type = mount_of(root)
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "kvfast_commit": run(["git", "-C", REPO, "describe", "--always", "--dirty"]),
            "log_dir": root, "log_fs": fs_type, "log_mount": point}


# ---- the rest of the machine --------------------------------------------------------------

def machine_busy_seconds():
    """CPU seconds all cores spent in user, nice and system mode since boot (/proc/stat;
    interrupt and softirq time left out, since the kernel does not charge it to processes)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return sum(int(value) for value in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    """utime + stime of the load generators this process has run and waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def with_other_cpu(server_pid, run):
    """:func:`with_server_cpu`, plus ``other_cpu_cores``: the CPU the rest of the machine
    used during the run (everything but the server and the load generator), averaged over
    its wall time. Other work on a 2-core machine skews every figure."""
    busy, children, started = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    result = with_server_cpu(server_pid, run)
    wall = time.monotonic() - started
    other = (machine_busy_seconds() - busy) - result["server_cpu_seconds"] - (children_cpu_seconds() - children)
    result["other_cpu_cores"] = max(other, 0.0) / wall if wall > 0 else 0.0
    return result


# ---- talking to a server ----------------------------------------------------------------

def persistence_info(address):
    """INFO's persistence fields (the whole INFO if the section cannot be asked for alone)."""
    fields = info_fields(address, "persistence")
    if "aof_enabled" not in fields:
        fields = info_fields(address)
    return fields


def dbsize(address):
    return resp_call(address, "DBSIZE")


def native_values(address, keys):
    """``get`` every key over one native connection (pipelined); {key: value or None}."""
    values = {}
    with socket.create_connection(address, timeout=60) as sock:
        reader = sock.makefile("rb")
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            sock.sendall(b"".join(b"get %d\n" % key for key in chunk))
            for key in chunk:
                line = reader.readline()
                if not line.endswith(b"\n"):
                    raise BenchError(f"get {key}: connection closed")
                line = line.strip()
                values[key] = int(line) if line.lstrip(b"-").isdigit() else None
    return values


def loaded_line(server):
    """(keys, seconds) from the server's ``loaded N keys from FILE in S s`` line, since its latest start."""
    match = LOADED.search(server.log(since_start=True))
    if not match:
        raise BenchError(f"no 'loaded N keys from FILE in S s' line in the server's output: "
                         f"{server.log(since_start=True)[-300:]!r}")
    return int(match.group(1)), float(match.group(3))


def drop_from_page_cache(path):
    """Ask the kernel to forget the file's cached pages (they are clean: the server synced at exit)."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def log_records(path):
    """Records in the log per ``kvfast-aof check`` (None if the tool is missing or says otherwise)."""
    try:
        program = find_program("kvfast-aof")
    except BenchError:
        return None, None
    result = subprocess.run([program, "check", path], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=600)
    text = (result.stdout + result.stderr).strip()
    match = re.search(r"ok, (\d+) records", text)
    return (int(match.group(1)) if match and result.returncode == 0 else None), text


# ---- the latency probe -------------------------------------------------------------------

def _probe_main(port, stop, sender, interval):
    """In a child process: ``get 1`` on one connection every ``interval`` s until
    ``stop`` is set; sends back (start times, latencies) as two arrays of doubles."""
    times, latencies = array("d"), array("d")
    try:
        with socket.create_connection((HOST, port), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            next_at = time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                sock.sendall(b"get 1\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = sock.recv(256)
                    if not chunk:
                        raise ConnectionError("server closed the probe's connection")
                    reply += chunk
                times.append(started)
                latencies.append(time.monotonic() - started)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_at = time.monotonic()
        sender.send((None, times.tobytes(), latencies.tobytes()))
    except BaseException as error:               # noqa: BLE001 - reported by the parent
        sender.send((f"{type(error).__name__}: {error}", times.tobytes(), latencies.tobytes()))


class Probe:
    """A child process timing one request per millisecond on its own connection."""

    def __init__(self, port):
        context = multiprocessing.get_context("fork")
        self.stop_event = context.Event()
        self.receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(target=_probe_main, args=(port, self.stop_event, sender, PROBE_INTERVAL),
                                       daemon=True)
        self.process.start()
        sender.close()
        self.samples = None

    def stop(self):
        """Stop it; returns a list of (start time, latency seconds)."""
        if self.samples is None:
            self.stop_event.set()
            error, times, latencies = None, b"", b""
            if self.receiver.poll(30):
                error, times, latencies = self.receiver.recv()
            else:
                error = "the probe did not answer"
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            if error:
                raise BenchError(f"latency probe: {error}")
            self.samples = list(zip(array("d", times), array("d", latencies)))
        return self.samples

    def close(self):
        if self.process.is_alive():
            self.stop_event.set()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def probe_window(samples, begin, end):
    """The probe's requests that overlapped [begin, end]: count and the slowest (ms, at s after begin)."""
    inside = [(start, latency) for start, latency in samples if start <= end and start + latency >= begin]
    if not inside:
        return {"requests": 0, "max_ms": None, "max_at_s": None}
    start, latency = max(inside, key=lambda sample: sample[1])
    return {"requests": len(inside), "max_ms": latency * 1e3, "max_at_s": start - begin}


# ---- 1. throughput and CPU ----------------------------------------------------------------

def server_args(config, directory):
    if config == "off":
        return []
    return ["--appendonly", os.path.join(directory, f"{config}.aof"), "--fsync", config,
            "--aof-rewrite-min-bytes", str(NO_AUTO_REWRITE)]


def measure_throughput(settings, root):
    """Every load x configuration x round; returns (runs {load: {config: [run]}}, per-config log facts)."""
    loads = [(operation, pipeline) for pipeline in PIPELINES for operation in OPERATIONS]
    runs = {load_key(*load): {config: [] for config in CONFIGS} for load in loads}
    servers, logs = {}, {}
    try:
        for config in CONFIGS:
            directory = os.path.join(root, f"throughput-{config}")
            os.makedirs(directory)
            servers[config] = ServerProcess("kvfast", directory, args=server_args(config, directory),
                                            name=f"server-{config}")
        for repeat in range(settings["repeats"]):
            for operation, pipeline in loads:
                for config in CONFIGS:
                    server = servers[config]
                    requests = settings["requests"][pipeline]
                    result = with_other_cpu(server.pid, lambda: kvfast_bench(
                        server.port, operation, requests=requests, clients=CLIENTS, pipeline=pipeline,
                        keyspace=KEYSPACE))
                    result.pop("raw", None)
                    result["repeat"] = repeat
                    runs[load_key(operation, pipeline)][config].append(result)
                    other = result["other_cpu_cores"]
                    log(f"  round {repeat + 1}/{settings['repeats']} {operation:<5} P{pipeline:<2} "
                        f"log {config:<8}{result['requests_per_second']:>12,.0f} req/s "
                        f"{result['server_cpu_us_per_request']:>7.2f} us/req p99 {result['p99_ms']:.3f} ms"
                        + (f" (other processes: {other:.2f} cores)" if other >= OTHER_CPU_WARNING else ""))
        for config, server in servers.items():
            facts = {}
            if config != "off":
                fields = persistence_info(server.address)
                facts = {name: fields.get(name) for name in
                         ("aof_enabled", "aof_fsync", "aof_rewrites", "aof_last_write_status", "aof_current_size")}
                path = os.path.join(server.log_dir, f"{config}.aof")
                facts["file_bytes"] = os.path.getsize(path) if os.path.exists(path) else None
                if facts["aof_fsync"] not in (None, config) or facts["aof_enabled"] not in (None, "1"):
                    raise BenchError(f"log {config}: INFO says aof_enabled:{facts['aof_enabled']} "
                                     f"aof_fsync:{facts['aof_fsync']}")
            logs[config] = facts
    finally:
        for config, server in servers.items():
            status = server.stop()
            logs.setdefault(config, {})["exit_status"] = status
    for config, facts in logs.items():
        if facts.get("exit_status") not in (0, None):
            log(f"  warning: the {config} server exited with status {facts['exit_status']} on SIGTERM")
    return runs, logs


def load_key(operation, pipeline):
    return f"{operation}-P{pipeline}"


def median_summary(runs):
    keys = ("requests_per_second", "server_cpu_us_per_request", "server_cpu_us_per_request_schedstat",
            "p50_ms", "p99_ms", "p999_ms", "max_ms")
    return {key: statistics.median(run[key] for run in runs) for key in keys
            if all(run.get(key) is not None for run in runs)} | {"requests": runs[0]["requests"],
                                                                  "repeats": len(runs)}


# ---- 2. replay --------------------------------------------------------------------------

def start_logged_server(directory, aof, name):
    return ServerProcess("kvfast", directory, args=["--appendonly", aof], name=name, start_timeout=900.0)


def build_log(keys, root):
    """A fresh server with ``--appendonly`` (everysec) loaded with ``keys`` distinct keys; returns
    (server, aof path, facts about the load)."""
    directory = os.path.join(root, "replay")
    os.makedirs(directory)
    aof = os.path.join(directory, "replay.aof")
    server = start_logged_server(directory, aof, "server-replay")
    try:
        log(f"  loading {keys:,} distinct keys (kvfast-bench -t put --sequential -P 16 -c {CLIENTS})")
        load = with_server_cpu(server.pid, lambda: kvfast_bench(
            server.port, "put", requests=keys, clients=CLIENTS, pipeline=16, keyspace=keys, sequential=True,
            timeout=3600.0))
        stored = dbsize(server.address)
        if stored != keys:
            raise BenchError(f"after loading {keys:,} distinct keys the server holds {stored:,}")
        fields = persistence_info(server.address)
        log(f"  loaded at {load['requests_per_second']:,.0f} puts/s, "
            f"{load['server_cpu_us_per_request']:.2f} server CPU us/put")
        return server, aof, {"keys": keys, "load_requests_per_second": load["requests_per_second"],
                             "load_server_cpu_us_per_request": load["server_cpu_us_per_request"],
                             "aof_current_size_before_stop": int(fields.get("aof_current_size", 0) or 0)}
    except BaseException:
        server.close()
        raise


def timed_start(server, keys):
    """Restart a stopped server; returns its own replay figures and the wall time to listening."""
    started = time.monotonic()
    server.start()
    wall = time.monotonic() - started
    loaded, seconds = loaded_line(server)
    stored = dbsize(server.address)
    if loaded != keys or stored != keys:
        raise BenchError(f"after replay: 'loaded {loaded:,} keys', DBSIZE {stored:,}; expected {keys:,}")
    return {"seconds": seconds, "records_per_second": keys / seconds if seconds > 0 else float("inf"),
            "start_to_listening_seconds": wall}


def measure_replay(settings, keys, root):
    """Build the log, then restart from it (page cache warm, then cold). Returns (result, the server
    left running after the cold restart, its log path)."""
    server, aof, facts = build_log(keys, root)
    try:
        status = server.stop()
        facts["exit_status_on_sigterm"] = status
        if status != 0:
            log(f"  warning: the server exited with status {status} on SIGTERM")
        facts["file_bytes"] = os.path.getsize(aof)
        records, check_text = log_records(aof)
        facts["records_by_kvfast_aof_check"] = records
        facts["kvfast_aof_check"] = check_text
        facts["records"] = records if records is not None else keys
        facts["bytes_per_record"] = (facts["file_bytes"] - HEADER_BYTES) / facts["records"]
        if facts["file_bytes"] != HEADER_BYTES + SET_RECORD_BYTES * keys:
            log(f"  note: log is {facts['file_bytes']:,} bytes, not {HEADER_BYTES} + {SET_RECORD_BYTES} x keys")
        warm = []
        for repeat in range(settings["replay_repeats"]):
            replay = timed_start(server, keys)
            warm.append(replay)
            log(f"  replay {repeat + 1}/{settings['replay_repeats']} (page cache): {replay['seconds']:.3f} s, "
                f"{replay['records_per_second']:,.0f} records/s")
            server.stop()
        drop_from_page_cache(aof)
        cold = timed_start(server, keys)
        log(f"  replay (pages dropped): {cold['seconds']:.3f} s, {cold['records_per_second']:,.0f} records/s")
        facts["warm"] = warm
        facts["warm_median_seconds"] = statistics.median(run["seconds"] for run in warm)
        facts["warm_records_per_second"] = facts["records"] / facts["warm_median_seconds"]
        facts["cold"] = cold
        return facts, server, aof
    except BaseException:
        server.close()
        raise


# ---- 3. compaction pause ---------------------------------------------------------------

def start_load(port, requests, keys):
    argv = kvfast_bench_argv(port, "mixed", requests=requests, clients=CLIENTS, pipeline=1, keyspace=keys,
                             timeout=3600.0)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_load(proc, requests):
    try:
        out, err = proc.communicate(timeout=3700)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("kvfast-bench did not finish") from None
    if proc.returncode != 0:
        raise BenchError(f"kvfast-bench exited with {proc.returncode}: {(err or out).strip()[-300:]}")
    result = kvfast_bench_result(out, "mixed", requests)
    result.pop("raw", None)
    return result


def stop_load(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def rewrite(address, timeout=1800.0):
    """BGREWRITEAOF, then poll INFO every POLL_SECONDS until it is over. Returns its timings and
    the log's sizes."""
    before = persistence_info(address)
    rewrites_before = int(before.get("aof_rewrites", 0) or 0)
    sent = time.monotonic()
    reply = resp_call(address, "BGREWRITEAOF")
    replied = time.monotonic()
    polls = 0
    deadline = sent + timeout
    while True:
        fields = persistence_info(address)
        polls += 1
        now = time.monotonic()
        if fields.get("aof_rewrite_in_progress") == "0" and int(fields.get("aof_rewrites", 0) or 0) > rewrites_before:
            break
        if fields.get("aof_rewrite_in_progress") == "0" and fields.get("aof_last_bgrewrite_status") == "err":
            break
        if now > deadline:
            raise BenchError(f"the rewrite was still running after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)
    return {"reply": reply, "sent": sent, "done": now, "seconds": now - sent, "reply_ms": (replied - sent) * 1e3,
            "polls": polls, "status": fields.get("aof_last_bgrewrite_status"),
            "rewrites_completed": int(fields.get("aof_rewrites", 0) or 0) - rewrites_before,
            "size_before": int(before.get("aof_current_size", 0) or 0),
            "size_after": int(fields.get("aof_current_size", 0) or 0),
            "base_size_after": int(fields.get("aof_base_size", 0) or 0),
            "fork_us": _int_or_none(fields.get("latest_fork_usec")),
            "server_pause_us": _int_or_none(fields.get("kvfast_aof_last_rewrite_pause_us")),
            "server_max_pause_us": _int_or_none(fields.get("kvfast_aof_max_rewrite_pause_us"))}


def _int_or_none(text):
    return int(text) if text is not None and text.strip().lstrip("-").isdigit() else None


def window_with_rewrite(server, requests, keys):
    proc = start_load(server.port, requests, keys)
    load_started = time.monotonic()
    try:
        time.sleep(LEAD_SECONDS)
        if proc.poll() is not None:
            return None                   # the load was over before the rewrite began
        run = rewrite(server.address)
        covered = proc.poll() is None
        result = finish_load(proc, requests)
    finally:
        stop_load(proc)
    result.update(window_begin=run["sent"], window_end=run["done"], load_begin=load_started,
                  load_end=time.monotonic(), covered=covered, rewrite=run)
    return result


def window_without_rewrite(server, requests, keys):
    """The same load, with INFO polled as often, and no rewrite."""
    proc = start_load(server.port, requests, keys)
    load_started = time.monotonic()
    polls = 0
    try:
        while proc.poll() is None:
            persistence_info(server.address)
            polls += 1
            time.sleep(POLL_SECONDS)
        result = finish_load(proc, requests)
    finally:
        stop_load(proc)
    result.update(load_begin=load_started, load_end=time.monotonic(), polls=polls)
    return result


def measure_compaction(settings, keys, server, aof):
    """Calibrate, rewrite once idle, then the load with and without a rewrite; then restart from the
    rewritten log and check it."""
    log(f"  calibration: kvfast-bench -t mixed -P 1 -c {CLIENTS} -r {keys}")
    calibration = kvfast_bench(server.port, "mixed", requests=settings["calibration_requests"], clients=CLIENTS,
                               pipeline=1, keyspace=keys)
    rate = calibration["requests_per_second"]
    idle = rewrite(server.address)
    idle_summary = {key: value for key, value in idle.items() if key not in ("sent", "done")}
    log(f"  rewrite with no load: {idle['seconds']:.3f} s, log {idle['size_before']:,} -> {idle['size_after']:,} "
        f"bytes, status {idle['status']}")
    if idle["status"] != "ok" or idle["rewrites_completed"] != 1:
        raise BenchError(f"BGREWRITEAOF with no load: status {idle['status']}, "
                         f"{idle['rewrites_completed']} rewrites completed: {server.log(since_start=True)[-300:]!r}")
    requests = int(rate * (LEAD_SECONDS + max(3 * idle["seconds"], 1.0) + TAIL_SECONDS))
    with Probe(server.port) as probe:
        during = None
        for attempt in range(4):
            log(f"  rewrite under load: {requests:,} requests (~{requests / rate:.1f} s at {rate:,.0f} req/s)")
            during = window_with_rewrite(server, requests, keys)
            if during is not None and during["covered"]:
                break
            requests *= 2
        if during is None or not during["covered"]:
            raise BenchError("the load kept ending before the rewrite did")
        log(f"  rewrite under load: {during['rewrite']['seconds']:.3f} s; load max {during['max_ms']:.2f} ms, "
            f"p99.9 {during['p999_ms']:.2f} ms")
        without = window_without_rewrite(server, requests, keys)
        log(f"  same load, no rewrite: max {without['max_ms']:.2f} ms, p99.9 {without['p999_ms']:.2f} ms")
        samples = probe.stop()
    during["probe"] = probe_window(samples, during["window_begin"], during["window_end"])
    during["probe_load"] = probe_window(samples, during["load_begin"], during["load_end"])
    without["probe"] = probe_window(samples, without["load_begin"], without["load_end"])
    if during["rewrite"]["status"] != "ok":
        log(f"  warning: rewrite under load ended with status {during['rewrite']['status']}")

    # Restart from the rewritten log (plus what was appended after it): same keys, same values?
    sample = random.Random(5).sample(range(keys), min(SAMPLED_KEYS, keys))
    stored_before, values_before = dbsize(server.address), native_values(server.address, sample)
    size_at_stop = persistence_info(server.address).get("aof_current_size")
    status = server.stop()
    restart = timed_start_any(server)
    stored_after, values_after = dbsize(server.address), native_values(server.address, sample)
    mismatched = sum(values_before[key] != values_after[key] for key in sample)
    restart.update(exit_status_on_sigterm=status, dbsize_before=stored_before, dbsize_after=stored_after,
                   sampled=len(sample), mismatched=mismatched, file_bytes=os.path.getsize(aof),
                   aof_current_size_at_stop=int(size_at_stop or 0))
    log(f"  restart from the rewritten log: {restart['loaded_keys']:,} keys in {restart['seconds']:.3f} s; "
        f"DBSIZE {stored_before:,} -> {stored_after:,}; {mismatched} of {len(sample):,} sampled values differ")
    for window in (during, without):
        for key in ("window_begin", "window_end", "load_begin", "load_end"):
            window.pop(key, None)
    during["rewrite"] = {key: value for key, value in during["rewrite"].items() if key not in ("sent", "done")}
    return {"keys": keys, "calibration_requests_per_second": rate, "requests_per_window": requests,
            "idle_rewrite": idle_summary, "during": during, "without": without, "restart": restart}


def timed_start_any(server):
    started = time.monotonic()
    server.start()
    wall = time.monotonic() - started
    loaded, seconds = loaded_line(server)
    return {"loaded_keys": loaded, "seconds": seconds, "start_to_listening_seconds": wall}


# ---- the report ---------------------------------------------------------------------------

def target_rows(report):
    rows = []
    summary = report.get("throughput", {}).get("summary")
    if summary:
        for key, label in load_labels():
            off = summary[key]["off"]["requests_per_second"]
            everysec = summary[key]["everysec"]["requests_per_second"]
            ratio = everysec / off
            rows.append({"comparison": f"throughput, everysec ÷ off, {label}", "value": ratio,
                         "text": f"{ratio:.2f}×", "target": f"≥ {TARGETS['everysec_vs_off']:.2f}×",
                         "met": ratio >= TARGETS["everysec_vs_off"]})
    replay = report.get("replay")
    if replay:
        rate = replay["warm_records_per_second"]
        rows.append({"comparison": f"replay of {replay['records']:,} records (page cache)", "value": rate,
                     "text": f"{rate / 1e6:.2f}M records/s", "target": "> 5M records/s",
                     "met": rate > TARGETS["replay_records_per_second"]})
    compaction = report.get("compaction")
    if compaction:
        during = compaction["during"]
        pause = max(value for value in (during["max_ms"], during["probe"]["max_ms"]) if value is not None)
        rows.append({"comparison": f"longest wait during a rewrite of {compaction['keys']:,} keys "
                                   "(kvfast-bench max, probe max)", "value": pause,
                     "text": f"{pause:.2f} ms", "target": f"≤ {TARGETS['pause_ms']:g} ms",
                     "met": pause <= TARGETS["pause_ms"]})
        restart = compaction["restart"]
        ok = restart["mismatched"] == 0 and restart["dbsize_after"] == restart["dbsize_before"]
        rows.append({"comparison": "restart from the rewritten log: DBSIZE and sampled values unchanged",
                     "value": ok, "text": "yes" if ok else f"**no** ({restart['mismatched']} values differ)",
                     "target": "yes", "met": ok})
    return rows


def load_labels():
    return [(load_key(operation, pipeline), f"{operation} P{pipeline}")
            for pipeline in PIPELINES for operation in OPERATIONS]


def markdown(report):
    env, settings = report["environment"], report["settings"]
    rows = report["targets"]
    met = sum(row["met"] for row in rows)
    command = "python -m bench.persistence" + (" --quick" if settings["quick"] else "") + \
        (f" --keys {settings['keys']}" if settings["keys"] != (QUICK if settings["quick"] else FULL)["keys"] else "")
    lines = [
        "# kvfast append-only log benchmarks",
        "",
        f"Measured by `{command}` on {env['date']}: {env['cpu']}, {env['cores']} cores, Linux {env['kernel']}, "
        f"Python {env['python']}, kvfast {env['kvfast_commit']}. Logs on {env['log_fs']} ({env['log_mount']}). "
        f"Servers and load generators share the machine over 127.0.0.1. **{met} of {len(rows)} targets met.**",
        "",
        *targets_table(rows),
    ]
    throughput = report.get("throughput")
    if throughput:
        summary = throughput["summary"]
        lines += [
            "",
            "## 1. Throughput and server CPU per request",
            "",
            f"`kvfast-bench -c {CLIENTS} -r {KEYSPACE} -P N -t set|mixed` (native protocol, random keys; mixed is "
            f"80% get, 20% set), {fmt_int(settings['requests'][1])} requests per run at P1 and "
            f"{fmt_int(settings['requests'][16])} at P16; median of {settings['repeats']} round"
            f"{'s' if settings['repeats'] != 1 else ''}, the four servers side by side, each log in a fresh file. "
            "Server CPU: utime+stime of the whole server process (all threads; /proc/PID/stat, 10 ms ticks) "
            "over the run ÷ requests; the cross-check is the threads' on-CPU time from /proc/PID/task/*/schedstat. "
            "Automatic compaction off.",
            "",
            "| load | figure | log off | `--fsync no` | `everysec` | `always` | everysec ÷ off |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for key, label in load_labels():
            row = summary[key]
            figures = (("requests/s", "requests_per_second", fmt_int),
                       ("server CPU µs/request", "server_cpu_us_per_request", lambda v: f"{v:.2f}"),
                       ("(schedstat cross-check)", "server_cpu_us_per_request_schedstat", lambda v: f"{v:.2f}"),
                       ("p99 ms", "p99_ms", lambda v: f"{v:.3f}"))
            for name, field, fmt in figures:
                if any(field not in row[config] for config in CONFIGS):
                    continue
                ratio = row["everysec"][field] / row["off"][field] if row["off"][field] else float("nan")
                lines.append(f"| {label} | {name} | " + " | ".join(fmt(row[config][field]) for config in CONFIGS)
                             + f" | {ratio:.2f}× |")
        others = [run["other_cpu_cores"] for load in throughput["runs"].values() for config_runs in load.values()
                  for run in config_runs if "other_cpu_cores" in run]
        if others:
            lines += ["", f"Other processes on the machine used {statistics.median(others):.2f} cores (median over "
                          f"the runs; most {max(others):.2f}) while these loads ran: CPU time of the whole machine "
                          "(/proc/stat user+nice+system) less the server's and kvfast-bench's."]
        sizes = throughput["logs"]
        lines += ["", "Log files at the end: " + ", ".join(
            f"{config} {sizes[config].get('file_bytes') or 0:,} bytes" for config in CONFIGS if config != "off")
            + "; automatic rewrites: " + ", ".join(
            f"{config} {sizes[config].get('aof_rewrites')}" for config in CONFIGS if config != "off") + "."]
    replay = report.get("replay")
    if replay:
        warm, cold = replay["warm"], replay["cold"]
        lines += [
            "",
            "## 2. Replay",
            "",
            f"{replay['keys']:,} distinct keys loaded with `kvfast-bench -t put --sequential -P 16 -c {CLIENTS}` "
            f"({fmt_int(replay['load_requests_per_second'])} puts/s with `--fsync everysec`), SIGTERM "
            f"(exit status {replay['exit_status_on_sigterm']}), then restarts. Time and rate from the server's "
            "`loaded N keys from FILE in S s` line; start to listening includes Python's start-up.",
            "",
            "| log | records | file bytes | bytes/record | replay s | records/s | start to listening s |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| page cache (median of {len(warm)}) | {replay['records']:,} | {replay['file_bytes']:,} | "
            f"{replay['bytes_per_record']:.1f} | {replay['warm_median_seconds']:.3f} | "
            f"{fmt_int(replay['warm_records_per_second'])} | "
            f"{statistics.median(run['start_to_listening_seconds'] for run in warm):.2f} |",
            f"| pages dropped (posix_fadvise) | {replay['records']:,} | {replay['file_bytes']:,} | "
            f"{replay['bytes_per_record']:.1f} | {cold['seconds']:.3f} | {fmt_int(cold['records_per_second'])} | "
            f"{cold['start_to_listening_seconds']:.2f} |",
        ]
        if replay.get("kvfast_aof_check"):
            lines += ["", f"`kvfast-aof check`: {replay['kvfast_aof_check']}"]
    compaction = report.get("compaction")
    if compaction:
        during, without, idle, restart = (compaction["during"], compaction["without"], compaction["idle_rewrite"],
                                          compaction["restart"])
        run = during["rewrite"]

        def probe_text(probe):
            if probe["max_ms"] is None:
                return "—"
            return f"{probe['max_ms']:.2f} ({probe['requests']:,} requests)"

        lines += [
            "",
            "## 3. Compaction pause",
            "",
            f"{compaction['keys']:,} keys. Load: `kvfast-bench -t mixed -P 1 -c {CLIENTS} -r {compaction['keys']}` "
            f"({fmt_int(compaction['requests_per_window'])} requests per window); in the rewrite window "
            f"`BGREWRITEAOF` is sent {LEAD_SECONDS:g} s after the load starts and INFO is polled every "
            f"{POLL_SECONDS * 1e3:g} ms until `aof_rewrite_in_progress:0` (the load outlasts it: "
            f"{'yes' if during['covered'] else 'NO'}). The probe sends one `get` per ms on its own connection; "
            "its column is its slowest reply inside the rewrite itself (or the whole load, for the window "
            "without a rewrite).",
            "",
            "| window | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | probe max ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| no rewrite | {fmt_int(without['requests_per_second'])} | {without['p50_ms']:.3f} | "
            f"{without['p99_ms']:.3f} | {without['p999_ms']:.3f} | {without['max_ms']:.2f} | "
            f"{probe_text(without['probe'])} |",
            f"| with a rewrite ({run['seconds']:.2f} s) | {fmt_int(during['requests_per_second'])} | "
            f"{during['p50_ms']:.3f} | {during['p99_ms']:.3f} | {during['p999_ms']:.3f} | {during['max_ms']:.2f} | "
            f"{probe_text(during['probe'])} |",
            "",
            f"Rewrite under load: {run['seconds']:.3f} s (BGREWRITEAOF answered in {run['reply_ms']:.2f} ms; "
            f"status {run['status']}), log {run['size_before']:,} → {run['size_after']:,} bytes"
            + (f"; the server's own figures: fork {run['fork_us'] / 1e3:.2f} ms (`latest_fork_usec`)"
               if run.get("fork_us") is not None else "")
            + (f", longest pause {run['server_pause_us'] / 1e3:.2f} ms (`kvfast_aof_last_rewrite_pause_us`)"
               if run.get("server_pause_us") is not None else "")
            + (f", slowest probe reply {during['probe']['max_at_s']:.3f} s after BGREWRITEAOF"
               if during["probe"]["max_at_s"] is not None else "")
            + f". Rewrite with no load: {idle['seconds']:.3f} s, {idle['size_before']:,} → {idle['size_after']:,} "
            f"bytes. Restart from the rewritten log: {restart['loaded_keys']:,} keys in {restart['seconds']:.3f} s, "
            f"DBSIZE {restart['dbsize_before']:,} → {restart['dbsize_after']:,}, {restart['mismatched']} of "
            f"{restart['sampled']:,} sampled values differ.",
        ]
    if report.get("problems"):
        lines += ["", "## Problems seen", ""] + [f"- {problem}" for problem in report["problems"]]
    lines.append("")
    return "\n".join(lines)


def problems(report):
    """Things the implementation did that it should not have (listed under the tables)."""
    found = []
    for config, facts in report.get("throughput", {}).get("logs", {}).items():
        if facts.get("exit_status") not in (0, None):
            found.append(f"the {config} server exited with status {facts['exit_status']} on SIGTERM")
        if config != "off" and facts.get("aof_last_write_status") not in (None, "ok"):
            found.append(f"the {config} server reports aof_last_write_status:{facts['aof_last_write_status']}")
        if config != "off" and (facts.get("file_bytes") or 0) <= HEADER_BYTES:
            found.append(f"the {config} server's log file holds no records after the set loads")
    others = [run["other_cpu_cores"] for load in report.get("throughput", {}).get("runs", {}).values()
              for config_runs in load.values() for run in config_runs if "other_cpu_cores" in run]
    if others and statistics.median(others) >= OTHER_CPU_WARNING:
        found.append(f"other processes used {statistics.median(others):.2f} cores (median) during the throughput "
                     "runs: the machine was not quiet, so those figures are skewed")
    replay = report.get("replay")
    if replay and replay.get("exit_status_on_sigterm") != 0:
        found.append(f"the replay server exited with status {replay['exit_status_on_sigterm']} on SIGTERM")
    compaction = report.get("compaction")
    if compaction:
        if compaction["during"]["rewrite"]["status"] != "ok":
            found.append(f"the rewrite under load ended with status {compaction['during']['rewrite']['status']}")
        if compaction["restart"]["exit_status_on_sigterm"] != 0:
            found.append(f"the compaction server exited with status "
                         f"{compaction['restart']['exit_status_on_sigterm']} on SIGTERM")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.persistence", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, help="keys for replay and compaction (default 10,000,000; "
                                                 "200,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small runs, one round: a smoke test of under a minute")
    parser.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    parser.add_argument("--dir", help="where the temporary log folder goes (default: the system's temp folder)")
    parser.add_argument("--only", action="append", choices=("throughput", "replay", "compaction"),
                        help="run only this part (repeatable; compaction needs the replay's server, so it "
                             "loads the keys itself when run without replay)")
    args = parser.parse_args(argv)
    install_sigterm_handler()
    settings = dict(QUICK if args.quick else FULL, quick=args.quick)
    if args.keys is not None:
        if args.keys < 1:
            parser.error("--keys must be at least 1")
        settings["keys"] = args.keys
    parts = set(args.only or ("throughput", "replay", "compaction"))
    started = time.monotonic()
    root = tempfile.mkdtemp(prefix="kvfast-persistence-", dir=args.dir)
    report = {"settings": {**settings, "clients": CLIENTS, "keyspace": KEYSPACE, "parts": sorted(parts)},
              "targets_set": TARGETS}
    server = None
    try:
        check_programs()
        report["environment"] = environment(root)
        stamp = build_stamp()
        if "throughput" in parts:
            log(f"1. throughput: {settings['repeats']} round(s) x {len(PIPELINES) * len(OPERATIONS)} loads "
                f"x {len(CONFIGS)} log configurations")
            runs, logs = measure_throughput(settings, root)
            report["throughput"] = {"runs": runs, "logs": logs,
                                    "summary": {key: {config: median_summary(runs[key][config]) for config in CONFIGS}
                                                for key in runs}}
        if "replay" in parts:
            log(f"2. replay of {settings['keys']:,} records")
            report["replay"], server, aof = measure_replay(settings, settings["keys"], root)
        if "compaction" in parts:
            log(f"3. compaction of {settings['keys']:,} keys")
            if server is None:
                server, aof, _ = build_log(settings["keys"], root)
            report["compaction"] = measure_compaction(settings, settings["keys"], server, aof)
    except BenchError as error:
        print(f"bench.persistence: error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(root, ignore_errors=True)
    report["problems"] = problems(report)
    if build_stamp() != stamp:
        report["problems"].insert(0, "kvfast's extension modules were rebuilt during this run: "
                                     "the figures mix two builds; run it again")
    report["targets"] = target_rows(report)
    report["seconds"] = time.monotonic() - started
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)
        log(f"wrote {args.json}")
    log(f"done in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
