"""Soak test: thousands of connections churning against one fresh kvfast-server.

    python -m bench.soak --seconds 60 --connections 5000
    python -m bench.soak --quick                  # ~5 s, 500 connections (the smoke test)

For the whole run, ``--connections`` slots each loop: connect, send a few
random requests (native and RESP, sometimes pipelined) and check every reply
byte for byte, then close in one of three ways:

* ``clean``: ``close()`` (FIN); half the time with a read-only request still
  unanswered, so the server writes to a socket the client has closed;
* ``reset``: read-only requests sent and not read, then ``SO_LINGER`` on with a
  0 timeout and ``close()``: the server gets an RST;
* ``half``: one more request, ``shutdown(SHUT_WR)``, then read the reply and
  the server's own close (EOF).

A handful of slow clients (``--slow``) do the same sending every request one
byte at a time. Keys are partitioned by slot (each slot runs its connections
one after another), so the expected value of every key is known; all of them
are checked at the end with MGET and DBSIZE.

Afterwards: the server's open descriptors (``/proc/PID/fd``) must be back to
the count taken before the soak within ``--settle`` seconds, its RSS must have
stayed under the baseline plus ``--rss-bound-mib`` throughout (sampled every
0.25 s), every stored value must be right, it must still answer PING, and it
must exit with status 0 on SIGTERM. A summary is printed (``--json``: one JSON
line); the exit status is 0 only if every check passed.
"""
import argparse
import asyncio
import json
import os
import random
import resource
import socket
import struct
import sys
import threading
import time

from bench.harness import ServerProcess
from bench.memory_per_key import rss_bytes

KEYS_PER_SLOT = 4
SLOW_BYTE_DELAY = 0.002          # seconds between the bytes of a slow client's request
OP_TIMEOUT = 30.0                # any one connect, send or reply
MAX_FAILURES_SHOWN = 20
MIB = 1024 * 1024


class Failure(Exception):
    """A check failed: a wrong reply, an unexpected close, a timeout."""


class Stats:
    def __init__(self):
        self.connections = 0
        self.requests = 0
        self.unread_requests = 0           # sent before a reset or close, never read
        self.closes = {"clean": 0, "reset": 0, "half": 0}
        self.protocols = {"native": 0, "resp": 0}
        self.slow_requests = 0
        self.open = 0
        self.peak_open = 0
        self.failures = []

    def fail(self, message):
        self.failures.append(message)

    def merge(self, other):
        """Add the counts of another Stats (the slow clients' loop)."""
        for name in ("connections", "requests", "unread_requests", "slow_requests", "peak_open"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind in self.closes:
            self.closes[kind] += other.closes[kind]
        for protocol in self.protocols:
            self.protocols[protocol] += other.protocols[protocol]
        self.failures += other.failures


# ---- one connection ---------------------------------------------------------------------

class Connection:
    """A non-blocking client socket driven by the event loop's sock_* calls."""

    def __init__(self, sock):
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()

    @classmethod
    async def open(cls, address):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), OP_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data, slow=False):
        if not slow:
            await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), OP_TIMEOUT)
            return
        for i in range(len(data)):
            await asyncio.wait_for(self.loop.sock_sendall(self.sock, data[i:i + 1]), OP_TIMEOUT)
            await asyncio.sleep(SLOW_BYTE_DELAY)

    async def read(self, count):
        """Exactly ``count`` bytes (fewer only if the server closes first)."""
        while len(self.buffer) < count:
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), OP_TIMEOUT)
            if not chunk:
                break
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def read_to_eof(self):
        data = bytes(self.buffer)
        self.buffer.clear()
        deadline = time.monotonic() + OP_TIMEOUT
        while True:
            if time.monotonic() > deadline:
                raise Failure("server did not close after a half-close")
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), OP_TIMEOUT)
            if not chunk:
                return data
            data += chunk

    def close(self):
        self.sock.close()

    def reset(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# ---- requests and the replies they must get ------------------------------------------------

def resp(*args):
    args = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def bulk(value):
    return b"$-1\r\n" if value is None else b"$%d\r\n%d\r\n" % (len(str(value)), value)


def make_request(rng, keys, expected, read_only=False):
    """One random request on ``keys``: ``(protocol, request bytes, expected reply)``;
    applies it to ``expected`` (the model of this slot's keys)."""
    key = rng.choice(keys)
    value = rng.randint(-10**12, 10**12)
    current = expected.get(key)
    if rng.random() < 0.5:
        operation = "get" if read_only else rng.choice(["get", "set", "put", "del", "incr", "get"])
        if operation == "get":
            reply = b"Key not found\n" if current is None else b"%d\n" % current
            return "native", b"get %d\n" % key, reply
        if operation == "set":
            expected[key] = value
            return "native", b"set %d %d\r\n" % (key, value), b"OK\n"
        if operation == "put":
            if current is not None:
                return "native", b"PUT %d %d\n" % (key, value), b"Key already exists\n"
            expected[key] = value
            return "native", b"put\t%d  %d\n" % (key, value), b"OK\n"
        if operation == "del":
            if current is None:
                return "native", b"del %d\n" % key, b"Key not found\n"
            del expected[key]
            return "native", b"del %d\n" % key, b"OK\n"
        delta = rng.randint(-1000, 1000)
        expected[key] = (current or 0) + delta
        return "native", b"incr %d %d\n" % (key, delta), b"%d\n" % expected[key]
    operation = rng.choice(["GET", "MGET", "PING"] if read_only
                           else ["GET", "SET", "SETNX", "DEL", "INCRBY", "MGET", "PING", "GET"])
    if operation == "GET":
        return "resp", resp("GET", key), bulk(current)
    if operation == "MGET":
        chosen = [rng.choice(keys) for _ in range(rng.randint(1, 3))]
        return "resp", resp("MGET", *chosen), b"*%d\r\n" % len(chosen) + b"".join(
            bulk(expected.get(k)) for k in chosen)
    if operation == "PING":
        return "resp", resp("PING"), b"+PONG\r\n"
    if operation == "SET":
        expected[key] = value
        return "resp", resp("SET", key, value), b"+OK\r\n"
    if operation == "SETNX":
        if current is not None:
            return "resp", resp("SETNX", key, value), b":0\r\n"
        expected[key] = value
        return "resp", resp("SETNX", key, value), b":1\r\n"
    if operation == "DEL":
        expected.pop(key, None)
        return "resp", resp("DEL", key), b":%d\r\n" % (current is not None)
    delta = rng.randint(-1000, 1000)
    expected[key] = (current or 0) + delta
    return "resp", resp("INCRBY", key, delta), b":%d\r\n" % expected[key]


async def one_connection(address, rng, keys, expected, stats, slow):
    """Connect, a few checked requests, then one of the three closes."""
    connection = await Connection.open(address)
    stats.connections += 1
    stats.open += 1
    stats.peak_open = max(stats.peak_open, stats.open)
    try:
        for _ in range(rng.randint(1, 6)):
            batch = [make_request(rng, keys, expected) for _ in range(1 if slow else rng.choice([1, 1, 1, 2, 3]))]
            await connection.send(b"".join(request for _, request, _ in batch), slow)
            for protocol, request, reply in batch:
                got = await connection.read(len(reply))
                if got != reply:
                    raise Failure(f"{request!r}: expected {reply!r}, got {got!r}")
                stats.requests += 1
                stats.slow_requests += slow
                stats.protocols[protocol] += 1
        kind = rng.choice(["clean", "reset", "half"])
        stats.closes[kind] += 1
        if kind == "half":
            protocol, request, reply = make_request(rng, keys, expected)
            await connection.send(request, slow)
            connection.sock.shutdown(socket.SHUT_WR)
            got = await connection.read_to_eof()
            if got != reply:
                raise Failure(f"half-close after {request!r}: expected {reply!r} then EOF, got {got!r}")
            stats.requests += 1
            stats.protocols[protocol] += 1
            connection.close()
        elif kind == "reset" or rng.random() < 0.5:
            unread = [make_request(rng, keys, expected, read_only=True)[1] for _ in range(rng.randint(1, 3))]
            await connection.send(b"".join(unread))
            stats.unread_requests += len(unread)
            connection.reset() if kind == "reset" else connection.close()
        else:
            connection.close()
    except BaseException:
        connection.reset()
        raise
    finally:
        stats.open -= 1


async def slot(index, address, deadline, expected, stats, slow, ramp):
    rng = random.Random(index * 7919 + 1)
    keys = [1_000_000 + index * KEYS_PER_SLOT + i for i in range(KEYS_PER_SLOT)]
    await asyncio.sleep(rng.uniform(0, ramp))
    while time.monotonic() < deadline:
        try:
            await one_connection(address, rng, keys, expected, stats, slow)
        except Failure as failure:
            stats.fail(f"slot {index}: {failure}")
            return
        except (OSError, asyncio.TimeoutError, EOFError) as error:
            stats.fail(f"slot {index}: {type(error).__name__}: {error}")
            return


# ---- the server's side --------------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def monitor(pid, stop, samples):
    while not stop.is_set():
        try:
            samples["rss_peak"] = max(samples["rss_peak"], rss_bytes(pid))
            samples["fd_peak"] = max(samples["fd_peak"], fd_count(pid))
        except (FileNotFoundError, ProcessLookupError):
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass


def call(address, payload, reply_length=None, timeout=30.0):
    """Send ``payload`` on a fresh blocking connection; return the reply bytes
    (``reply_length`` of them, or up to the end of the first line)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while (len(data) < reply_length) if reply_length is not None else not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def verify_store(address, expected, slots):
    """Every key of every slot: MGET in batches, compared with the model; and DBSIZE."""
    problems = []
    keys = [1_000_000 + i for i in range(slots * KEYS_PER_SLOT)]
    with socket.create_connection(address, timeout=60) as sock:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            reply = b"*%d\r\n" % len(batch) + b"".join(bulk(expected.get(key)) for key in batch)
            sock.sendall(resp("MGET", *batch))
            data = b""
            while len(data) < len(reply):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data != reply:
                problems.append(f"MGET of keys {batch[0]}..{batch[-1]}: stored values differ from the model")
        sock.sendall(resp("DBSIZE"))
        dbsize = sock.recv(100)
        if dbsize != b":%d\r\n" % len(expected):
            problems.append(f"DBSIZE {dbsize!r}, expected {len(expected)}")
    return problems


# ---- the run ---------------------------------------------------------------------------------

def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < needed:
        raise SystemExit(f"open-file limit {soft} is too low for {needed} connections (hard limit {hard})")


async def run_slots(first, count, address, deadline, expected, stats, slow, ramp):
    await asyncio.gather(*(slot(first + i, address, deadline, expected, stats, slow, ramp) for i in range(count)))


async def drive(address, pid, seconds, connections, slow, samples):
    """Run the slots until the deadline. The slow clients get an event loop of
    their own in a thread, so their byte-by-byte pacing is not held up by the
    thousands of sockets of the main loop."""
    stats, slow_stats = Stats(), Stats()
    expected, slow_expected = {}, {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(monitor(pid, stop, samples))
    deadline = time.monotonic() + seconds
    ramp = min(1.0, seconds / 10)
    slow_thread = threading.Thread(target=asyncio.run, daemon=True, args=(
        run_slots(connections, slow, address, deadline, slow_expected, slow_stats, True, ramp),))
    slow_thread.start()
    await run_slots(0, connections, address, deadline, expected, stats, False, ramp)
    await asyncio.get_running_loop().run_in_executor(None, slow_thread.join)
    stop.set()
    await watcher
    stats.merge(slow_stats)
    expected.update(slow_expected)
    return stats, expected


def run(seconds, connections, slow, rss_bound_mib, settle):
    raise_fd_limit(connections + slow + 100)
    summary = {"seconds": seconds, "connections": connections, "slow_clients": slow}
    problems = []
    with ServerProcess("kvfast") as server:
        pid = server.pid
        time.sleep(0.2)
        fd_baseline, rss_baseline = fd_count(pid), rss_bytes(pid)
        samples = {"rss_peak": rss_baseline, "fd_peak": fd_baseline}
        started = time.monotonic()
        stats, expected = asyncio.run(drive(server.address, pid, seconds, connections, slow, samples))
        elapsed = time.monotonic() - started
        problems += stats.failures[:MAX_FAILURES_SHOWN]
        if len(stats.failures) > MAX_FAILURES_SHOWN:
            problems.append(f"... and {len(stats.failures) - MAX_FAILURES_SHOWN} more failures")

        # Descriptors back to the baseline once the closes are processed.
        settle_started = time.monotonic()
        fd_after = fd_count(pid)
        while fd_after > fd_baseline and time.monotonic() - settle_started < settle:
            time.sleep(0.05)
            fd_after = fd_count(pid)
        fd_settle = time.monotonic() - settle_started
        if fd_after > fd_baseline:
            problems.append(f"server holds {fd_after} descriptors {settle} s after the soak, {fd_baseline} before")
        rss_after = rss_bytes(pid)
        samples["rss_peak"] = max(samples["rss_peak"], rss_after)
        rss_bound = rss_baseline + rss_bound_mib * MIB
        if samples["rss_peak"] > rss_bound:
            problems.append(f"RSS peaked at {samples['rss_peak'] / MIB:.1f} MiB, over the bound "
                            f"{rss_bound / MIB:.1f} MiB (baseline + {rss_bound_mib} MiB)")

        problems += verify_store(server.address, expected, connections + slow)
        pong = call(server.address, resp("PING"))
        if pong != b"+PONG\r\n":
            problems.append(f"PING after the soak: {pong!r}")
        clients = call(server.address, b"stats\n", reply_length=None)
        status = server.stop()
        if status != 0:
            problems.append(f"server exit status {status} on SIGTERM; log: {server.log()[-2000:]!r}")

    summary.update(
        elapsed_s=round(elapsed, 1),
        connections_made=stats.connections,
        connections_per_s=round(stats.connections / elapsed),
        requests=stats.requests,
        requests_per_s=round(stats.requests / elapsed),
        slow_requests=stats.slow_requests,
        unread_requests=stats.unread_requests,
        protocols=stats.protocols,
        closes=stats.closes,
        peak_open_connections=stats.peak_open,
        keys_verified=len(expected),
        fd_baseline=fd_baseline,
        fd_peak=samples["fd_peak"],
        fd_after=fd_after,
        fd_settle_s=round(fd_settle, 2),
        rss_baseline_mib=round(rss_baseline / MIB, 1),
        rss_peak_mib=round(samples["rss_peak"] / MIB, 1),
        rss_after_mib=round(rss_after / MIB, 1),
        rss_bound_mib=round(rss_bound / MIB, 1),
        server_stats_after=clients.decode(errors="replace").strip(),
        failures=len(stats.failures),
        problems=problems,
        ok=not problems,
    )
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=5000, help="connection slots churning at once")
    parser.add_argument("--slow", type=int, default=8, help="slow clients (one byte at a time)")
    parser.add_argument("--rss-bound-mib", type=int, default=64, help="allowed RSS growth over the baseline")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds the server gets to close everything after the soak")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s, 500 connections, 4 slow clients")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.connections, args.slow = 5.0, 500, 4
    summary = run(args.seconds, args.connections, args.slow, args.rss_bound_mib, args.settle)
    if args.json:
        print(json.dumps(summary))
    else:
        for name, value in summary.items():
            if name != "problems":
                print(f"{name:24} {value}")
        for problem in summary["problems"]:
            print("FAIL:", problem)
        print("soak", "passed" if summary["ok"] else "FAILED")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
