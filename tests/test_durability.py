"""The append-only log (issue #5) through real kvfast-server processes: restart
round trips of every write command under each fsync policy, kill -9 under a
concurrent write load, torn and corrupt logs, write failures under a file-size
limit, compaction under load and kill -9 during a compaction, and the flush on
SIGTERM/SIGINT.

Crash checks are exact: each writer thread owns its keys and one connection,
so the recovered state of its keys must equal the state after some prefix of
the requests it sent; that prefix must cover every acknowledged request (with
``--fsync always``), and no state outside those prefixes (a value never sent)
is accepted.
"""
import glob
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

import kvfast
from kvfast.config import ServerConfig
from aof_format import HEADER_SIZE, log_bytes, parse, rec_clear, rec_del, rec_set, replay
from conftest import command, exchange, read_until_closed, request, require_tool, script_path
from helpers import wait_for

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
FSYNC_POLICIES = ["always", "everysec", "no"]
LOADED = re.compile(r"^loaded (\d+) keys from (.+) in (\d+\.\d+) s$")
REBUILD_STARTED = b"+Background append only file rewriting started\r\n"


# ---- helpers ----------------------------------------------------------------------------

def start_aof(start_server, path, fsync=None, *extra, **kwargs):
    """A kvfast-server logging to ``path`` (with ``--fsync fsync`` when given)."""
    args = ["--appendonly", str(path)]
    if fsync is not None:
        args += ["--fsync", fsync]
    return start_server(*args, *extra, **kwargs)


def loaded(server):
    """``(N, FILE)`` from the one ``loaded N keys from FILE in S s`` line printed
    before the ready line."""
    lines = [line.decode().rstrip("\n") for line in server.startup_lines]
    matches = [LOADED.match(line) for line in lines]
    found = [match for match in matches if match]
    assert len(found) == 1, f"expected one 'loaded N keys' line before the ready line, got {lines}"
    assert matches[-2] is not None, f"the 'loaded' line should come just before the ready line: {lines}"
    return int(found[0].group(1)), found[0].group(2)


def read_stream(stream, timeout=10.0) -> str:
    """Everything left in a child's pipe until EOF, waiting at most ``timeout`` s."""
    data = bytearray()
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def stop_clean(server, sig=signal.SIGTERM) -> str:
    """Stop with ``sig``, assert status 0, return its stderr."""
    status = server.stop(sig)
    errors = read_stream(server.proc.stderr)
    assert status == 0, f"exit status {status}, stderr {errors!r}"
    assert "Traceback" not in errors, errors
    return errors


def crash(server):
    """kill -9 and reap."""
    server.proc.kill()
    server.proc.wait(10)


class LineReader:
    """Lines from a socket, however the bytes arrive."""

    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.pending = bytearray()
        self.lines = []
        self.next = 0

    def readline(self) -> bytes:
        while self.next >= len(self.lines):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.pending += chunk
            cut = self.pending.rfind(b"\n")
            if cut >= 0:
                self.lines = bytes(self.pending[:cut]).split(b"\n")
                self.next = 0
                del self.pending[:cut + 1]
        line = self.lines[self.next]
        self.next += 1
        return line


def pipeline(address, lines, chunk=5000):
    """Send native request lines pipelined ``chunk`` at a time; return the replies."""
    replies = []
    with socket.create_connection(address, timeout=20) as sock:
        reader = LineReader(sock, timeout=20)
        for start in range(0, len(lines), chunk):
            part = lines[start:start + chunk]
            sock.sendall(b"".join(line + b"\n" for line in part))
            replies.extend(reader.readline() for _ in part)
    return replies


def fetch(address, keys) -> dict:
    """The present keys among ``keys`` with their values (native ``get``)."""
    keys = list(keys)
    result = {}
    for key, reply in zip(keys, pipeline(address, [b"get %d" % key for key in keys])):
        if reply != b"Key not found":
            result[key] = int(reply)
    return result


def resp_line(address, *words) -> bytes:
    """The first line of the RESP reply to one command."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(command(*words))
        return LineReader(sock).readline().rstrip(b"\r")


def dbsize(address) -> int:
    reply = resp_line(address, "DBSIZE")
    assert reply.startswith(b":"), reply
    return int(reply[1:])


def info(address) -> dict:
    client = redis.Redis(*address, protocol=2, driver_info=None)
    try:
        return client.info()
    finally:
        client.close()


def check_store(server, expected: dict):
    """Every key of ``expected`` has its value (None: absent), and nothing else is stored."""
    assert fetch(server.address, expected) == {k: v for k, v in expected.items() if v is not None}
    assert dbsize(server.address) == sum(v is not None for v in expected.values())


def aof_tool(*args, timeout=60):
    return subprocess.run([script_path("kvfast-aof"), *map(str, args)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def dump_offsets(path):
    result = aof_tool("dump", path)
    assert result.returncode == 0, result
    return [int(line.split()[0]) for line in result.stdout.decode().splitlines()]


def run_server_expecting_exit(*args, timeout=20):
    return subprocess.run([script_path("kvfast-server"), "0", *map(str, args)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def child_pids(pid):
    """Direct children of ``pid`` (scanning /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def running(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- concurrent writers with an exact model -------------------------------------------------

class Writer(threading.Thread):
    """One connection writing (native put/set/del/incr) only its own ``keys``,
    ``batch`` requests pipelined at a time, checking every reply against a model.

    ``effects[i]`` is ``(key, old, new)`` for the i-th request sent (None: absent);
    the first ``acked`` of them were acknowledged.
    """

    def __init__(self, address, keys, state, seed, seconds=10.0, batch=16, mix=(0.3, 0.2, 0.2, 0.3),
                 refusal=None):
        super().__init__(daemon=True)
        self.address = address
        self.keys = list(keys)
        self.start_state = {k: state[k] for k in self.keys if k in state}
        self.state = dict(self.start_state)
        self.rng = random.Random(seed)
        self.deadline = time.monotonic() + seconds
        self.batch = batch
        self.mix = mix
        self.effects = []
        self.acked = 0
        self.ack_times = []
        self.error = None
        self.disconnected = False
        self.refusal = refusal          # a reply that refuses the write: ends the writer, not acknowledged
        self.refused = False
        self.stopping = threading.Event()

    def next_request(self):
        rng, key = self.rng, self.rng.choice(self.keys)
        old = self.state.get(key)
        value = rng.randint(-10**12, 10**12)
        roll = rng.random()
        set_, put, delete, _ = self.mix
        if roll < set_:
            line, new, reply = b"set %d %d" % (key, value), value, b"OK"
        elif roll < set_ + put:
            line = b"put %d %d" % (key, value)
            new, reply = (value, b"OK") if old is None else (old, b"Key already exists")
        elif roll < set_ + put + delete:
            line, new, reply = b"del %d" % key, None, (b"Key not found" if old is None else b"OK")
        else:
            delta = rng.randint(-1000, 1000)
            new = (old or 0) + delta
            line, reply = b"incr %d %d" % (key, delta), b"%d" % new
        if new is None:
            self.state.pop(key, None)
        else:
            self.state[key] = new
        self.effects.append((key, old, new))
        return line, reply

    def run(self):
        try:
            sock = socket.create_connection(self.address, timeout=10)
        except OSError as error:
            self.error = f"connect: {error!r}"
            return
        try:
            reader = LineReader(sock)
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                batch = [self.next_request() for _ in range(self.batch)]
                sock.sendall(b"".join(line + b"\n" for line, _ in batch))
                for line, expected in batch:
                    reply = reader.readline()
                    if self.refusal is not None and reply == self.refusal:
                        self.refused = True
                        return
                    if reply != expected:
                        self.error = f"{line!r} -> {reply!r}, expected {expected!r}"
                        return
                    self.acked += 1
                    self.ack_times.append(time.monotonic())
        except OSError:                          # includes the reset/close after a kill -9
            self.disconnected = True
        finally:
            sock.close()

    def matching_prefix(self, recovered: dict):
        """The n such that the state after the first n requests equals ``recovered``
        (restricted to this writer's keys): the first n >= acked, else the largest
        n < acked; None when no prefix matches."""
        mine = {k: recovered[k] for k in self.keys if k in recovered}
        state = dict(self.start_state)
        for key, _, new in self.effects[:self.acked]:
            state.pop(key, None) if new is None else state.__setitem__(key, new)
        differing = {k for k in self.keys if state.get(k) != mine.get(k)}
        if not differing:
            return self.acked

        def walk(indexes, pick):
            current, wrong = dict(state), set(differing)
            for n in indexes:
                key = self.effects[n][0]
                value = pick(self.effects[n])
                current.pop(key, None) if value is None else current.__setitem__(key, value)
                (wrong.discard if current.get(key) == mine.get(key) else wrong.add)(key)
                if not wrong:
                    return n
            return None

        forward = walk(range(self.acked, len(self.effects)), lambda effect: effect[2])
        if forward is not None:
            return forward + 1
        return walk(range(self.acked - 1, -1, -1), lambda effect: effect[1])

    def explain(self, recovered: dict) -> str:
        """Why no prefix matched: keys whose value was never sent, and acknowledged values missing."""
        allowed = {key: {value} for key, value in self.start_state.items()}
        for key, _, new in self.effects:
            allowed.setdefault(key, set()).add(new)
        never_sent = {k: recovered[k] for k in self.keys
                      if k in recovered and recovered[k] not in allowed.get(k, set())}
        state = dict(self.start_state)
        for key, _, new in self.effects[:self.acked]:
            state.pop(key, None) if new is None else state.__setitem__(key, new)
        mine = {k: recovered[k] for k in self.keys if k in recovered}
        differing = {k: (state.get(k), mine.get(k)) for k in self.keys if state.get(k) != mine.get(k)}
        return (f"acked {self.acked} of {len(self.effects)} sent; values never sent: "
                f"{dict(list(never_sent.items())[:5])}; keys differing from the acknowledged state "
                f"(acked, recovered): {dict(list(differing.items())[:5])}")


def writer_keys(count, per_writer, base=1_000_000):
    return [range(base * (w + 1), base * (w + 1) + per_writer) for w in range(count)]


def run_writers(writers):
    for writer in writers:
        writer.start()


def stop_writers(writers, timeout=20.0):
    for writer in writers:
        writer.stopping.set()
    for writer in writers:
        writer.join(timeout)
        assert not writer.is_alive(), "a writer thread did not finish"
    errors = [writer.error for writer in writers if writer.error]
    assert not errors, errors


# ---- restart round trip of every write command --------------------------------------------

def native(server, steps):
    with server.connect() as sock:
        for line, reply in steps:
            assert request(sock, line) == reply, line


def scenario_native_put(server):
    native(server, [(b"put 1 10", b"OK"), (b"put 2 20", b"OK"), (b"put 1 11", b"Key already exists"),
                    (b"put %d %d" % (INT64_MIN, INT64_MAX), b"OK"), (b"put 0 -5", b"OK")])
    return {1: 10, 2: 20, INT64_MIN: INT64_MAX, 0: -5, 3: None}


def scenario_native_set(server):
    native(server, [(b"set 1 10", b"OK"), (b"set 1 11", b"OK"), (b"set 2 -20", b"OK"),
                    (b"set %d %d" % (INT64_MAX, INT64_MIN), b"OK")])
    return {1: 11, 2: -20, INT64_MAX: INT64_MIN}


def scenario_native_del(server):
    native(server, [(b"put 1 10", b"OK"), (b"put 2 20", b"OK"), (b"put 3 30", b"OK"),
                    (b"del 1", b"OK"), (b"del 9", b"Key not found"), (b"del 3", b"OK"),
                    (b"put 3 33", b"OK")])
    return {1: None, 2: 20, 3: 33, 9: None}


def scenario_native_incr(server):
    native(server, [(b"incr 1", b"1"), (b"incr 1 5", b"6"), (b"incr 2 -7", b"-7"),
                    (b"set 3 %d" % INT64_MAX, b"OK"),
                    (b"incr 3", b"Invalid request: increment would overflow"), (b"incr 1 -6", b"0")])
    return {1: 0, 2: -7, 3: INT64_MAX}


def redis_client(server):
    return redis.Redis(host=server.host, port=server.port)


def scenario_resp_set(server):
    with redis_client(server) as client:
        assert client.set(1, 10) is True
        assert client.set(1, 11) is True
        assert client.set(2, 20, nx=True) is True
        assert client.set(2, 21, nx=True) is None
        assert client.set(3, 30, xx=True) is None
        assert client.set(2, 22, xx=True) is True
    return {1: 11, 2: 22, 3: None}


def scenario_resp_setnx(server):
    with redis_client(server) as client:
        assert client.setnx(1, 10) is True
        assert client.setnx(1, 11) is False
        assert client.setnx(-5, 50) is True
    return {1: 10, -5: 50}


def scenario_resp_put(server):
    with redis_client(server) as client:
        assert client.execute_command("PUT", 1, 10) in (True, b"OK", "OK")
        with pytest.raises(redis.ResponseError, match="Key already exists"):
            client.execute_command("PUT", 1, 11)
        client.execute_command("PUT", 2, 20)
    return {1: 10, 2: 20}


def scenario_resp_del(server):
    with redis_client(server) as client:
        client.set(1, 10), client.set(2, 20), client.set(3, 30)
        assert client.delete(1, 2, 99) == 2
        assert client.delete(1) == 0
    return {1: None, 2: None, 3: 30, 99: None}


def scenario_resp_incr(server):
    with redis_client(server) as client:
        assert client.incr(1) == 1
        assert client.incr(1) == 2
        client.set(2, 40)
        assert client.incr(2) == 41
    return {1: 2, 2: 41}


def scenario_resp_decr(server):
    with redis_client(server) as client:
        assert client.decr(1) == -1
        assert client.decr(1) == -2
        client.set(2, INT64_MIN)
        with pytest.raises(redis.ResponseError, match="overflow"):
            client.decr(2)
    return {1: -2, 2: INT64_MIN}


def scenario_resp_incrby(server):
    with redis_client(server) as client:
        assert client.incrby(1, 100) == 100
        assert client.incrby(1, -3) == 97
        client.set(2, INT64_MAX - 1)
        with pytest.raises(redis.ResponseError, match="overflow"):
            client.incrby(2, 2)
    return {1: 97, 2: INT64_MAX - 1}


def scenario_resp_decrby(server):
    with redis_client(server) as client:
        assert client.decrby(1, 5) == -5
        assert client.decrby(1, -10) == 5
    return {1: 5}


def scenario_resp_flushall(server):
    with redis_client(server) as client:
        client.set(1, 10), client.set(2, 20), client.set(3, 30)
        assert client.flushall() is True
        client.set(4, 40)
    return {1: None, 2: None, 3: None, 4: 40}


def scenario_resp_flushdb(server):
    with redis_client(server) as client:
        client.set(1, 10), client.set(2, 20)
        assert client.flushdb() is True
        client.set(2, 22)
    return {1: None, 2: 22}


def scenario_random_mix(server):
    """2,000 random native writes on 100 keys, a RESP FLUSHDB in the middle, more writes."""
    rng = random.Random(5)
    model = {}
    for phase in range(2):
        lines, replies = [], []
        for _ in range(1000):
            key = rng.randint(-50, 50)
            old, op, value = model.get(key), rng.choice("psdi"), rng.randint(-10**6, 10**6)
            if op == "p":
                lines.append(b"put %d %d" % (key, value))
                replies.append(b"OK" if old is None else b"Key already exists")
                model.setdefault(key, value)
            elif op == "s":
                lines.append(b"set %d %d" % (key, value)), replies.append(b"OK")
                model[key] = value
            elif op == "d":
                lines.append(b"del %d" % key)
                replies.append(b"Key not found" if old is None else b"OK")
                model.pop(key, None)
            else:
                model[key] = (old or 0) + value
                lines.append(b"incr %d %d" % (key, value)), replies.append(b"%d" % model[key])
        assert pipeline(server.address, lines) == replies
        if phase == 0:
            assert resp_line(server.address, "FLUSHDB") == b"+OK"
            model.clear()
    return {key: model.get(key) for key in range(-50, 51)}


SCENARIOS = {
    "native-put": scenario_native_put, "native-set": scenario_native_set,
    "native-del": scenario_native_del, "native-incr": scenario_native_incr,
    "SET": scenario_resp_set, "SETNX": scenario_resp_setnx, "PUT": scenario_resp_put,
    "DEL": scenario_resp_del, "INCR": scenario_resp_incr, "DECR": scenario_resp_decr,
    "INCRBY": scenario_resp_incrby, "DECRBY": scenario_resp_decrby,
    "FLUSHALL": scenario_resp_flushall, "FLUSHDB": scenario_resp_flushdb,
    "random-mix": scenario_random_mix,
}


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_restart_round_trip(start_server, tmp_path, scenario, fsync):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, fsync)
    assert loaded(server) == (0, str(path))
    assert path.exists()
    expected = SCENARIOS[scenario](server)
    check_store(server, expected)
    stop_clean(server)
    present = sum(value is not None for value in expected.values())
    for _ in range(2):                                   # twice: a replayed log stays a good log
        server = start_aof(start_server, path, fsync)
        assert loaded(server) == (present, str(path))
        check_store(server, expected)
        stop_clean(server)


def test_writes_that_change_nothing_append_nothing(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    native(server, [(b"put 1 10", b"OK")])
    size = path.stat().st_size
    native(server, [(b"put 1 11", b"Key already exists"), (b"del 2", b"Key not found"), (b"get 1", b"10")])
    with redis_client(server) as client:
        assert client.delete(5, 6) == 0
        assert client.set(1, 3, nx=True) is None
        assert client.set(7, 3, xx=True) is None
        assert client.setnx(1, 4) is False
        assert client.get(1) == b"10" and client.mget(1, 2) == [b"10", None]
    assert path.stat().st_size == size
    stop_clean(server)
    assert parse(path.read_bytes()) == [(HEADER_SIZE, HEADER_SIZE + 21, "set", (1, 10))]


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_each_record_is_in_the_file_before_its_reply(start_server, tmp_path, fsync):
    """Under every policy the record is written (write(2)) before the reply leaves,
    so a reader of the file sees it as soon as the reply arrives."""
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, fsync)
    expected = [b"KVFASTAO"]
    with server.connect() as sock:
        for index, (line, reply, record) in enumerate([
                (b"set 1 10", b"OK", rec_set(1, 10)), (b"incr 1 5", b"15", rec_set(1, 15)),
                (b"put 2 20", b"OK", rec_set(2, 20)), (b"del 1", b"OK", rec_del(1))]):
            assert request(sock, line) == reply
            expected.append(record)
            data = path.read_bytes()
            assert data[:8] == expected[0] and data[HEADER_SIZE:] == b"".join(expected[1:]), index
        exchange(sock, command("FLUSHALL"), b"+OK\r\n")
        assert path.read_bytes().endswith(b"".join(expected[1:]) + rec_clear())


def test_persistence_info(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    native(server, [(b"set 1 1", b"OK"), (b"set 2 2", b"OK")])
    fields = info(server.address)
    assert fields["aof_enabled"] == 1
    assert fields["aof_fsync"] == "always"
    assert fields["aof_rewrite_in_progress"] == 0
    assert fields["aof_rewrites"] == 0
    assert fields["aof_last_write_status"] == "ok"
    assert fields["aof_current_size"] == path.stat().st_size == HEADER_SIZE + 2 * 21
    assert fields["aof_base_size"] == HEADER_SIZE
    stop_clean(server)
    server = start_aof(start_server, path, "everysec")
    native(server, [(b"set 3 3", b"OK")])
    fields = info(server.address)
    assert fields["aof_fsync"] == "everysec"
    assert fields["aof_base_size"] == HEADER_SIZE + 2 * 21                  # the size at start-up
    assert fields["aof_current_size"] == path.stat().st_size == HEADER_SIZE + 3 * 21


def test_log_off_by_default(server):
    assert not any(b"loaded" in line for line in server.startup_lines)
    fields = info(server.address)
    assert fields["aof_enabled"] == 0
    with server.connect() as sock:
        sock.sendall(command("BGREWRITEAOF"))
        assert LineReader(sock).readline().startswith(b"-ERR ")


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_settings_from_environment_and_file(start_server, tmp_path, fsync):
    path = tmp_path / "env.aof"
    server = start_server(env={**os.environ, "KVFAST_APPENDONLY": str(path), "KVFAST_FSYNC": fsync})
    assert loaded(server) == (0, str(path))
    assert info(server.address)["aof_fsync"] == fsync
    native(server, [(b"set 1 2", b"OK")])
    stop_clean(server)
    config = tmp_path / "kvfast.toml"
    config.write_text(f'appendonly = "{path}"\nfsync = "{fsync}"\naof-rewrite-min-bytes = 1048576\n')
    server = start_server("--config", str(config))
    assert loaded(server) == (1, str(path))
    assert info(server.address)["aof_fsync"] == fsync
    check_store(server, {1: 2})


def test_bad_fsync_policy_is_a_one_line_error(tmp_path):
    result = run_server_expecting_exit("--appendonly", tmp_path / "x.aof", "--fsync", "sometimes")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvfast-server: error:") and "fsync" in lines[0], lines


def test_python_server_api(tmp_path):
    path = tmp_path / "api.aof"
    config = ServerConfig(port=0, appendonly=str(path), fsync="always", aof_rewrite_min_bytes=1 << 20)
    with kvfast.Server(config=config) as server:
        with kvfast.Client(*server.address) as client:
            client.put(1, 2)
            client.put(3, 4)
            client.delete(3)
    with kvfast.Server(config=ServerConfig(port=0, appendonly=str(path))) as server:
        with kvfast.Client(*server.address) as client:
            assert client.get(1) == 2
            with pytest.raises(kvfast.KeyNotFoundError):
                client.get(3)


# ---- replay of logs with few live keys -------------------------------------------------------

def test_replay_of_few_keys_a_delete_then_new_keys_in_a_long_log(start_server, tmp_path):
    """A long log (50,000 overwrites of one key: a counter) whose first records
    are 17 keys, a delete, then 41 new keys. Replay sizes the table from the log's
    length; the delete then finds it nearly empty and shrinks it while the new
    keys arrive."""
    path = tmp_path / "kvfast.aof"
    path.write_bytes(log_bytes(*[rec_set(k, k) for k in range(1, 18)], rec_del(1),
                               *[rec_set(k, k) for k in range(100, 141)]) + rec_set(2, 7) * 50_000)
    server = start_aof(start_server, path)
    expected = {1: None, 2: 7, **{k: k for k in range(3, 18)}, **{k: k for k in range(100, 141)}}
    assert loaded(server) == (57, str(path))
    check_store(server, expected)


# Binds and replays (kvfast.Server's constructor), prints the address, then waits
# for a line on stdin before serving: requests sent meanwhile are the first thing
# the loop sees, before any idle-time work.
SERVE_AFTER_GO = """
import sys
import kvfast
from kvfast.config import ServerConfig
server = kvfast.Server(config=ServerConfig(port=0, appendonly=sys.argv[1]))
print("%s %d" % tuple(server.address), flush=True)
sys.stdin.readline()
server.serve_forever()
"""


def test_serving_new_keys_right_after_replaying_a_log_of_overwrites(tmp_path):
    """17 keys and 50,000 overwrites: replay sizes the table for 50,017 keys, then
    trims it (a shrink that drains incrementally); 2,000 new keys arrive at once."""
    path = tmp_path / "kvfast.aof"
    path.write_bytes(log_bytes(*[rec_set(k, k) for k in range(1, 18)]) + rec_set(2, 7) * 50_000)
    proc = subprocess.Popen([sys.executable, "-c", SERVE_AFTER_GO, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        host, port = proc.stdout.readline().split()
        new = range(1000, 3000)
        with socket.create_connection((host.decode(), int(port)), timeout=10) as sock:
            sock.sendall(b"".join(b"set %d 1\n" % key for key in new))
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            reader = LineReader(sock, timeout=10)
            assert [reader.readline() for _ in new] == [b"OK"] * len(new)
        expected = {**{k: k for k in range(1, 18)}, 2: 7, **{k: 1 for k in new}}
        assert fetch((host.decode(), int(port)), expected) == expected
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


# ---- SIGTERM / SIGINT flush ------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("fsync", ["no", "everysec"])
def test_signal_flushes_the_log(start_server, tmp_path, sig, fsync):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, fsync)
    model = {key: key * 3 for key in range(1, 5001)}
    assert pipeline(server.address, [b"set %d %d" % item for item in model.items()]) == [b"OK"] * 5000
    assert pipeline(server.address, [b"del %d" % key for key in range(1, 501)]) == [b"OK"] * 500
    assert pipeline(server.address, [b"incr %d 1" % key for key in range(501, 1001)]) == \
        [b"%d" % (key * 3 + 1) for key in range(501, 1001)]
    for key in range(1, 501):
        del model[key]
    for key in range(501, 1001):
        model[key] += 1
    stop_clean(server, sig)
    server = start_aof(start_server, path, fsync)
    assert loaded(server) == (len(model), str(path))
    assert fetch(server.address, range(1, 5001)) == model
    assert dbsize(server.address) == len(model)


# ---- kill -9 under a concurrent write load -------------------------------------------------

WRITERS, KEYS_PER_WRITER = 4, 200


def crash_rounds(start_server, path, fsync, rounds=3):
    """``rounds`` times: writers on their own keys, kill -9 at a random moment,
    restart on the same log, compare. Returns one dict of figures per round."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    key_ranges = writer_keys(WRITERS, KEYS_PER_WRITER)
    all_keys = [key for keys in key_ranges for key in keys]
    state = {}
    server = start_aof(start_server, path, fsync)
    results = []
    for round_ in range(rounds):
        writers = [Writer(server.address, keys, state, seed=rng.random(), seconds=8)
                   for keys in key_ranges]
        run_writers(writers)
        wait_for(lambda: all(writer.acked > 0 or not writer.is_alive() for writer in writers), 10,
                 message="every writer to get a reply")
        time.sleep(rng.uniform(0.1, 1.2))      # the random moment of the kill: part of the test, not a wait
        killed_at = time.monotonic()
        crash(server)
        for writer in writers:
            writer.join(15)
            assert not writer.is_alive()
        assert not [writer.error for writer in writers if writer.error], \
            [writer.error for writer in writers if writer.error]
        server = start_aof(start_server, path, fsync)
        recovered = fetch(server.address, all_keys)
        assert loaded(server) == (len(recovered), str(path))
        assert dbsize(server.address) == len(recovered), "keys that were never written appeared"
        figures = {"acked": 0, "sent": 0, "lost": 0, "allowed": 0}
        for writer in writers:
            prefix = writer.matching_prefix(recovered)
            assert prefix is not None, f"seed {seed} round {round_}: {writer.explain(recovered)}"
            figures["acked"] += writer.acked
            figures["sent"] += len(writer.effects)
            figures["lost"] += max(0, writer.acked - prefix)
            figures["allowed"] += sum(1 for t in writer.ack_times if t > killed_at - 1.5)
        results.append(figures)
        if fsync == "always":
            assert figures["lost"] == 0, f"seed {seed} round {round_}: {figures}"
        state = recovered
    stop_clean(server)
    return results


def test_kill_9_under_load_with_fsync_always(start_server, tmp_path):
    results = crash_rounds(start_server, tmp_path / "kvfast.aof", "always")
    print("fsync always, kill -9:", results)
    assert all(figures["acked"] > 0 for figures in results)


def test_kill_9_under_load_with_fsync_everysec(start_server, tmp_path):
    results = crash_rounds(start_server, tmp_path / "kvfast.aof", "everysec")
    for figures in results:
        print(f"fsync everysec, kill -9: lost {figures['lost']} of {figures['acked']} acknowledged writes "
              f"({figures['allowed']} were acknowledged in the last 1.5 s)")
        assert figures["lost"] <= figures["allowed"], figures


# ---- torn tail ------------------------------------------------------------------------------

def build_log(start_server, path, last):
    """set 1 10, set 2 20, set 3 30, then one last write (``set``: set 4 40, ``del``:
    del 2, ``flushall``: FLUSHALL); returns the file's bytes and parsed records."""
    server = start_aof(start_server, path, "always")
    native(server, [(b"set 1 10", b"OK"), (b"set 2 20", b"OK"), (b"set 3 30", b"OK")])
    if last == "set":
        native(server, [(b"set 4 40", b"OK")])
    elif last == "del":
        native(server, [(b"del 2", b"OK")])
    else:
        assert resp_line(server.address, "FLUSHALL") == b"+OK"
    stop_clean(server)
    data = path.read_bytes()
    records = parse(data)
    assert len(records) == 4 and records[-1][2] == last
    assert dump_offsets(path) == [record[0] for record in records]
    return data, records


def expect_torn_start(start_server, path, start, before):
    """The server starts on ``path`` (torn after ``start``), warns, serves ``before``,
    truncated the file before appending; all of it again after a restart."""
    server = start_aof(start_server, path, "always")
    assert loaded(server) == (len(before), str(path))
    check_store(server, {**{k: None for k in range(1, 5)}, **before})
    native(server, [(b"set 9 90", b"OK")])
    errors = stop_clean(server)
    warnings = [line for line in errors.splitlines() if "truncated" in line]
    assert any(re.search(rf"\b{start}\b", line) for line in warnings), \
        f"no warning with 'truncated' and offset {start}: {errors!r}"
    assert path.read_bytes()[start:] == rec_set(9, 90), "the torn bytes were not truncated before appending"
    server = start_aof(start_server, path, "always")
    check_store(server, {**{k: None for k in range(1, 5)}, **before, 9: 90})
    assert "truncated" not in stop_clean(server)


@pytest.mark.parametrize("last", ["set", "del", "flushall"])
def test_torn_tail_at_every_byte_of_the_last_record(start_server, tmp_path, last):
    data, records = build_log(start_server, tmp_path / "original.aof", last)
    start, end, _, _ = records[-1]
    assert end == len(data)
    before = replay(records[:-1])
    for cut in range(start + 1, end):
        path = tmp_path / f"cut-{cut}.aof"
        path.write_bytes(data[:cut])
        expect_torn_start(start_server, path, start, before)
        path.unlink()


@pytest.mark.parametrize("damage", ["flip-payload", "flip-checksum", "zeros-7", "zeros-4096"])
def test_damaged_tail_is_treated_as_torn(start_server, tmp_path, damage):
    data, records = build_log(start_server, tmp_path / "original.aof", "set")
    start, end, _, _ = records[-1]
    path = tmp_path / "damaged.aof"
    if damage.startswith("flip"):
        position = start + 5 if damage == "flip-payload" else end - 1
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        path.write_bytes(bytes(damaged))
        expect_torn_start(start_server, path, start, replay(records[:-1]))
    else:
        path.write_bytes(data + bytes(int(damage.split("-")[1])))
        expect_torn_start(start_server, path, end, replay(records))


# ---- corruption in the middle ----------------------------------------------------------------

DAMAGES = {                     # name: (offset within the record, new byte or None = flip, reason)
    "payload": (5, None, "bad checksum"),
    "checksum": (19, None, "bad checksum"),
    "type-unknown": (0, ord("Z"), "unknown record type"),
    "type-set-to-del": (0, ord("D"), "bad checksum"),
    "type-zero": (0, 0x00, "unknown record type"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_flipped_byte_in_the_middle(start_server, tmp_path, damage):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    native(server, [(b"set %d %d" % (k, 10 * k), b"OK") for k in range(1, 7)] +
           [(b"del 3", b"OK"), (b"incr 4 2", b"42"), (b"set 7 70", b"OK")])
    stop_clean(server)
    data = path.read_bytes()
    records = parse(data)
    offsets = dump_offsets(path)
    assert offsets == [record[0] for record in records]
    victim = 4                                          # "set 5 50", with records on both sides
    bad_offset = offsets[victim]
    assert records[victim][2] == "set"
    where, new_byte, reason = DAMAGES[damage]
    damaged = bytearray(data)
    damaged[bad_offset + where] = new_byte if new_byte is not None else damaged[bad_offset + where] ^ 0xFF
    damaged = bytes(damaged)
    path.write_bytes(damaged)

    result = run_server_expecting_exit("--appendonly", path)
    assert result.returncode == 1
    assert b"kvfast listening" not in result.stdout
    assert result.stderr.decode().splitlines() == [
        f"kvfast-server: error: {path}: corrupt record at offset {bad_offset} ({reason}); "
        f"run kvfast-aof check {path}"]
    assert path.read_bytes() == damaged, "the server changed a log it refused"

    check = aof_tool("check", path)
    assert check.returncode == 1
    output = (check.stdout + check.stderr).decode().splitlines()
    assert len(output) == 1 and f"corrupt record at offset {bad_offset} ({reason})" in output[0], output

    repair = aof_tool("repair", path)
    assert repair.returncode == 0, repair
    backup = tmp_path / "kvfast.aof.bak"
    assert backup.read_bytes() == damaged
    assert path.read_bytes() == data[:bad_offset]
    said = (repair.stdout + repair.stderr).decode()
    assert str(backup) in said and str(bad_offset) in said, said

    server = start_aof(start_server, path, "always")
    before = replay(records[:victim])
    assert loaded(server) == (len(before), str(path))
    check_store(server, {**{k: None for k in range(1, 8)}, **before})


def test_a_file_that_is_not_a_log_is_refused_and_kept(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a kvfast log\n" * 10)
    result = run_server_expecting_exit("--appendonly", path)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"kvfast-server: error: {path}: not a kvfast append-only file (bad header)"]
    assert path.read_bytes() == b"these are my notes, not a kvfast log\n" * 10


# ---- write failure (RLIMIT_FSIZE) ---------------------------------------------------------------

FILE_LIMIT = 16384                  # (16384 - 16) / 21 is not whole: the failing append is partial
REFUSED_NATIVE = b"Error: persistence failed: File too large"
REFUSED_RESP = b"-MISCONF Errors writing to the AOF file: File too large\r\n"


def limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    return preexec


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_write_failure_refuses_writes_keeps_reads_and_recovers(start_server, tmp_path, fsync):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, fsync, preexec_fn=limit_file_size(FILE_LIMIT))
    acked, unacknowledged = {}, set()
    sock = server.connect()
    try:
        for key in range(1, 5000):                      # 5,000 records would be 105 KB
            try:
                reply = request(sock, b"set %d %d" % (key, key * 7))
            except (ConnectionError, OSError):
                unacknowledged.add(key)                 # closed without the reply: not acknowledged
                break
            assert reply == b"OK", (key, reply)
            acked[key] = key * 7
        else:
            pytest.fail("the log grew past RLIMIT_FSIZE without an error")
    finally:
        sock.close()
    assert len(acked) > 100 and unacknowledged
    assert path.stat().st_size <= FILE_LIMIT

    refused = [100_001, 100_002, 100_003, 100_004]
    with server.connect() as sock:
        assert request(sock, b"set 100001 1") == REFUSED_NATIVE
        assert request(sock, b"put 100002 2") == REFUSED_NATIVE
        assert request(sock, b"incr 100003") == REFUSED_NATIVE
        assert request(sock, b"del 1") == REFUSED_NATIVE
        assert request(sock, b"incr 2 5") == REFUSED_NATIVE
        assert request(sock, b"get 1") == b"7"              # reads work; refused writes changed nothing
        assert request(sock, b"get 2") == b"14"
        assert request(sock, b"get 100001") == b"Key not found"
        exchange(sock, command("SET", 100004, 4), REFUSED_RESP)
        exchange(sock, command("SETNX", 100004, 4), REFUSED_RESP)
        exchange(sock, command("PUT", 100004, 4), REFUSED_RESP)
        exchange(sock, command("INCRBY", 3, 4), REFUSED_RESP)
        exchange(sock, command("DECR", 3), REFUSED_RESP)
        exchange(sock, command("DEL", 3), REFUSED_RESP)
        exchange(sock, command("FLUSHALL"), REFUSED_RESP)
        exchange(sock, command("FLUSHDB"), REFUSED_RESP)
        exchange(sock, command("GET", 3), b"$2\r\n21\r\n")
        exchange(sock, command("MGET", 1, 100004), b"*2\r\n$1\r\n7\r\n$-1\r\n")
    assert info(server.address)["aof_last_write_status"] == "err"
    assert fetch(server.address, acked) == acked

    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with server.connect() as sock:
        def write_accepted():                            # the server retries by itself
            reply = request(sock, b"set 200000 5")
            if reply == b"OK":
                return True
            assert reply == REFUSED_NATIVE, reply
            return False

        wait_for(write_accepted, 10, interval=0.1, message="writes to be accepted again after the limit was raised")
        exchange(sock, command("SET", 200001, 6), b"+OK\r\n")
        assert request(sock, b"set 200002 7") == b"OK"
    assert info(server.address)["aof_last_write_status"] == "ok"
    after = {200_000: 5, 200_001: 6, 200_002: 7}

    errors = stop_clean(server)
    causes = [line for line in errors.splitlines() if "File too large" in line]
    assert len(causes) == 1, f"the cause should be logged once: {errors!r}"

    server = start_aof(start_server, path, fsync)           # no limit now
    everything = fetch(server.address, [*acked, *unacknowledged, *refused, *after])
    maybe = {key: everything.pop(key) for key in unacknowledged if key in everything}
    assert maybe == {key: key * 7 for key in maybe}         # present with its value, or absent
    assert everything == {**acked, **after}
    assert dbsize(server.address) == len(acked) + len(after) + len(maybe)


def test_sigterm_while_writes_are_failing(start_server, tmp_path):
    """Stopping while the log cannot be written: a clean stop (status 0, no
    traceback) and every acknowledged write there after a restart."""
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "everysec", preexec_fn=limit_file_size(FILE_LIMIT))
    acked = {}
    with server.connect() as sock:
        for key in range(1, 5000):
            try:
                reply = request(sock, b"set %d %d" % (key, key))
            except (ConnectionError, OSError):
                break
            assert reply == b"OK"
            acked[key] = key
    with server.connect() as sock:
        assert request(sock, b"set 100000 1") == REFUSED_NATIVE
    status = server.stop()
    errors = read_stream(server.proc.stderr)
    assert "Traceback" not in errors, errors
    assert status == 0, errors
    server = start_aof(start_server, path, "everysec")
    recovered = fetch(server.address, range(1, 5001))
    assert {k: v for k, v in recovered.items() if k in acked} == acked
    assert len(recovered) <= len(acked) + 1


def test_write_failure_under_concurrent_writers(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always", preexec_fn=limit_file_size(65536))
    key_ranges = writer_keys(4, 200)
    writers = [Writer(server.address, keys, {}, seed=index, seconds=30, refusal=REFUSED_NATIVE)
               for index, keys in enumerate(key_ranges)]
    run_writers(writers)
    for writer in writers:
        writer.join(40)
        assert not writer.is_alive()
    assert not [writer.error for writer in writers if writer.error]
    assert all(writer.refused or writer.disconnected for writer in writers), \
        "a writer ran out of time without its writes failing"
    assert sum(writer.acked for writer in writers) > 1000
    with server.connect() as sock:                       # reads work
        assert request(sock, b"get 1") == b"Key not found"
        assert request(sock, b"set 1 1") == REFUSED_NATIVE
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_for(lambda: resp_line(server.address, "SET", 1, 1) == b"+OK", 10, interval=0.1,
             message="writes to be accepted again")
    stop_clean(server)
    server = start_aof(start_server, path, "always")
    all_keys = [key for keys in key_ranges for key in keys]
    recovered = fetch(server.address, all_keys)
    for writer in writers:
        prefix = writer.matching_prefix(recovered)
        assert prefix is not None and prefix >= writer.acked, writer.explain(recovered)
    assert dbsize(server.address) == len(recovered) + 1              # + key 1


def test_write_failure_cause_is_logged_once(start_server, tmp_path):
    """Clients keep trying to write for a while during the failure: the cause is
    still logged once, not once per retry."""
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always", preexec_fn=limit_file_size(FILE_LIMIT))
    with server.connect() as sock:
        with pytest.raises((ConnectionError, OSError)):
            for key in range(1, 5000):
                assert request(sock, b"set %d %d" % (key, key)) == b"OK"
    with server.connect() as sock:
        ended = time.monotonic() + 1.5
        for attempt in range(100_000):                          # 1.5 s of refused writes
            assert request(sock, b"set 100000 %d" % attempt) == REFUSED_NATIVE
            if time.monotonic() > ended:
                break
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_for(lambda: resp_line(server.address, "SET", 1, 1) == b"+OK", 10, interval=0.1,
             message="writes to be accepted again")
    errors = stop_clean(server)
    causes = [line for line in errors.splitlines() if "File too large" in line]
    assert len(causes) == 1, f"the cause was logged {len(causes)} times: {causes[:3]}"


# ---- compaction --------------------------------------------------------------------------------

def test_compaction_under_concurrent_load(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    min_bytes = 512 * 1024
    server = start_aof(start_server, path, "everysec", "--aof-rewrite-min-bytes", str(min_bytes))
    key_ranges = writer_keys(4, 250)
    writers = [Writer(server.address, keys, {}, seed=index, seconds=60, batch=32,
                      mix=(0.5, 0.1, 0.1, 0.3))
               for index, keys in enumerate(key_ranges)]
    fields = info(server.address)
    samples = [(fields["aof_rewrites"], fields["aof_current_size"], False)]   # (rewrites, size, loaded)
    run_writers(writers)
    def third_rewrite():
        fields = info(server.address)
        samples.append((fields["aof_rewrites"], fields["aof_current_size"],
                        all(writer.is_alive() for writer in writers)))
        return fields["aof_rewrites"] >= 3

    try:
        wait_for(third_rewrite, 40, message=lambda: f"3 rewrites under load: {samples[-5:]}")
    finally:
        stop_writers(writers)
    assert samples[-1][0] >= 3, f"fewer than 3 rewrites in 40 s of load: {samples[-5:]}"
    first = next(index for index, sample in enumerate(samples) if sample[0] > 0)
    assert samples[first][2], "the first rewrite finished after the load had stopped"
    largest_before = max(size for _, size, _ in samples[:first])
    assert min(size for _, size, _ in samples[first:]) < largest_before, "the log never shrank"

    wait_for(lambda: info(server.address)["aof_rewrite_in_progress"] == 0, 20, message="rewrite end")
    fields = info(server.address)
    assert fields["aof_last_bgrewrite_status"] == "ok"
    assert fields["aof_current_size"] == path.stat().st_size
    model = {}
    for writer in writers:
        model.update(writer.state)
    all_keys = [key for keys in key_ranges for key in keys]
    assert fetch(server.address, all_keys) == model
    stop_clean(server)
    assert glob.glob(f"{path}.rewrite-*.tmp") == [], "a finished rewrite left its temporary file"
    assert path.stat().st_size < min_bytes * 4
    server = start_aof(start_server, path, "everysec")
    assert loaded(server) == (len(model), str(path))
    assert fetch(server.address, all_keys) == model
    assert dbsize(server.address) == len(model)
    check = aof_tool("check", path)
    assert check.returncode == 0, check


BASE_KEYS = 400_000


def load_base(server, count):
    lines = [b"set %d %d" % (key, key * 3) for key in range(1, count + 1)]
    assert pipeline(server.address, lines, chunk=10_000) == [b"OK"] * count
    return {key: key * 3 for key in range(1, count + 1)}


def bgrewriteaof(address):
    with socket.create_connection(address, timeout=10) as sock:
        exchange(sock, command("BGREWRITEAOF"), REBUILD_STARTED)


def test_manual_rewrite_gives_a_compact_equivalent_log(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    model = {}
    lines = []
    for key in range(1, 2001):                      # every key written 3 times, every 4th deleted
        lines += [b"set %d 1" % key, b"incr %d 5" % key, b"set %d %d" % (key, key * 11)]
        model[key] = key * 11
        if key % 4 == 0:
            lines.append(b"del %d" % key)
            del model[key]
    pipeline(server.address, lines)
    before = path.stat().st_size
    bgrewriteaof(server.address)
    second = resp_line(server.address, "BGREWRITEAOF")     # refused while the first one runs
    assert second == REBUILD_STARTED.rstrip() or second.startswith(b"-ERR "), second
    wait_for(lambda: info(server.address)["aof_rewrites"] >= 1 and
             info(server.address)["aof_rewrite_in_progress"] == 0, 30, message="the rewrite")
    fields = info(server.address)
    assert fields["aof_last_bgrewrite_status"] == "ok"
    assert fields["aof_base_size"] == fields["aof_current_size"] == path.stat().st_size
    assert path.stat().st_size == HEADER_SIZE + 21 * len(model) < before
    assert replay(parse(path.read_bytes())) == model
    stop_clean(server)
    assert glob.glob(f"{path}.rewrite-*.tmp") == []


def test_kill_9_during_compaction(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    state = load_base(server, BASE_KEYS)
    poller = redis.Redis(*server.address, protocol=2, driver_info=None)
    try:                                            # one clean rewrite first, to time it
        started = time.monotonic()
        bgrewriteaof(server.address)
        wait_for(lambda: poller.info()["aof_rewrites"] >= 1, 60, interval=0.001, message="the first rewrite")
        duration = time.monotonic() - started
    finally:
        poller.close()
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    delays = [0.0] + [rng.uniform(0, 1.3 * duration) for _ in range(4)]
    key_ranges = [range(1, 301), range(1001, 1301), range(BASE_KEYS + 1, BASE_KEYS + 301)]
    all_keys = list(range(1, BASE_KEYS + 301))
    report = []
    for round_, delay in enumerate(delays):
        writers = [Writer(server.address, keys, state, seed=rng.random(), seconds=15)
                   for keys in key_ranges]
        run_writers(writers)
        wait_for(lambda: all(writer.acked > 0 or not writer.is_alive() for writer in writers), 10,
                 message="every writer to get a reply")
        bgrewriteaof(server.address)
        time.sleep(delay)                   # the random moment of the kill in the rewrite: part of the test
        children = child_pids(server.proc.pid)
        crash(server)
        for writer in writers:
            writer.join(15)
            assert not writer.is_alive()
        assert not [writer.error for writer in writers if writer.error]
        for child in children:                      # an orphaned rewrite child must end by itself
            try:
                wait_for(lambda: not running(child), 30, message=f"rewrite child {child} to exit")
            except AssertionError:
                os.kill(child, signal.SIGKILL)
                raise
        left = glob.glob(f"{path}.rewrite-*.tmp")
        server = start_aof(start_server, path, "always")
        assert glob.glob(f"{path}.rewrite-*.tmp") == [], f"{left} not removed at start-up"
        recovered = fetch(server.address, all_keys)
        assert loaded(server) == (len(recovered), str(path))
        assert dbsize(server.address) == len(recovered)
        untouched = set(all_keys).difference(*key_ranges)
        wrong = [k for k in untouched if recovered.get(k) != state.get(k)]
        assert not wrong, f"seed {seed} round {round_}: keys no writer touched changed: {wrong[:10]}"
        for writer in writers:
            prefix = writer.matching_prefix(recovered)
            assert prefix is not None and prefix >= writer.acked, \
                f"seed {seed} round {round_} delay {delay:.3f}: {writer.explain(recovered)}"
        report.append((round(delay, 3), len(children), len(left), sum(writer.acked for writer in writers)))
        state = recovered
    print(f"kill -9 during compaction (rewrite took {duration:.3f} s; per round: delay s, rewrite "
          f"children at the kill, temporary files left, acknowledged writes): {report}")
    assert report[0][1] >= 1, "BGREWRITEAOF answered but no rewrite child was running"
    stop_clean(server)
    check = aof_tool("check", path)
    assert check.returncode == 0, check


def test_sigterm_during_compaction(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "everysec")
    state = load_base(server, BASE_KEYS)
    bgrewriteaof(server.address)
    assert pipeline(server.address, [b"set %d 7" % key for key in range(1, 1001)]) == [b"OK"] * 1000
    state.update((key, 7) for key in range(1, 1001))
    children = child_pids(server.proc.pid)
    stop_clean(server)
    for child in children:
        wait_for(lambda: not running(child), 10, message=f"rewrite child {child} to exit")
    assert glob.glob(f"{path}.rewrite-*.tmp") == []
    server = start_aof(start_server, path, "everysec")
    assert loaded(server) == (len(state), str(path))
    assert fetch(server.address, range(1, 2001)) == {key: state[key] for key in range(1, 2001)}
    assert dbsize(server.address) == len(state)


def test_rewrite_starts_only_past_min_bytes_and_twice_the_snapshot(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "no", "--aof-rewrite-min-bytes", "65536")
    keys = range(1, 5001)                       # 105 KB of distinct keys: over min-bytes, not 2x
    assert pipeline(server.address, [b"set %d 1" % key for key in keys]) == [b"OK"] * 5000
    snapshot = HEADER_SIZE + 21 * len(keys)
    assert path.stat().st_size == snapshot
    # A negative: for 1 s, give an automatic rewrite the chance to start (it must not). The
    # observation window is what is tested, so it is a fixed time, not a wait_for.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        fields = info(server.address)
        assert fields["aof_rewrites"] == 0 and fields["aof_rewrite_in_progress"] == 0, fields
        time.sleep(0.1)
    for value in (2, 3):                        # now 315 KB for a 105 KB snapshot
        assert pipeline(server.address, [b"set %d %d" % (key, value) for key in keys]) == [b"OK"] * 5000
    wait_for(lambda: info(server.address)["aof_rewrites"] >= 1, 15, message="an automatic rewrite")
    wait_for(lambda: info(server.address)["aof_rewrite_in_progress"] == 0, 15, message="the rewrite's end")
    assert path.stat().st_size < 2 * snapshot          # 3 * snapshot without the rewrite
    assert fetch(server.address, keys) == {key: 3 for key in keys}
    stop_clean(server)
    assert replay(parse(path.read_bytes())) == {key: 3 for key in keys}


# ---- one server per log ----------------------------------------------------------------------


def test_a_second_server_cannot_take_a_log_in_use(start_server, tmp_path):
    """The log is locked while a server uses it (through rewrites too): a second
    server would overwrite acknowledged records. It is refused in one line, and
    kvfast-aof repair refuses a live log as well."""
    path = tmp_path / "kvfast.aof"
    first = start_aof(start_server, path, "always", "--aof-rewrite-min-bytes", "0")
    assert resp_line(first.address, "SET", 1, 111) == b"+OK"
    for _ in range(2):
        result = run_server_expecting_exit("--appendonly", path)
        assert result.returncode == 1
        assert result.stderr.decode().splitlines()[-1] == (
            f"kvfast-server: error: {path}: in use by another kvfast-server (the file is locked)")
        repaired = aof_tool("repair", path)
        assert repaired.returncode in (0, 2)        # a clean log needs no repair and takes no lock
        assert resp_line(first.address, "BGREWRITEAOF") == REBUILD_STARTED.rstrip()
        wait_for(lambda: info(first.address)["aof_rewrite_in_progress"] == 0, 20, message="rewrite")
    assert resp_line(first.address, "SET", 2, 222) == b"+OK"
    stop_clean(first)
    second = start_aof(start_server, path)
    check_store(second, {1: 111, 2: 222})


def test_repair_refuses_a_log_in_use(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always")
    assert resp_line(server.address, "SET", 1, 1) == b"+OK"
    with open(path, "ab") as file:
        file.write(b"S\x00")                    # a torn tail, as if a crash had left it
    result = aof_tool("repair", path)
    assert result.returncode == 2
    assert b"in use by a running kvfast-server" in result.stderr
    assert not os.path.exists(f"{path}.bak")


def test_a_relative_log_path_survives_a_chdir(tmp_path):
    """An application embedding kvfast.Server may chdir: the log stays where it was."""
    script = """
import os, sys, kvfast
from kvfast.config import ServerConfig
os.chdir(sys.argv[1])
server = kvfast.Server(config=ServerConfig(port=0, appendonly="kvfast.aof", fsync="always"))
os.chdir(sys.argv[2])
with server:
    server.stats()
    with kvfast.Client(*server.address) as client:
        client.put(5, 6)
"""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-c", script, str(home), str(elsewhere)], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, capture_output=True)
    assert not (elsewhere / "kvfast.aof").exists()
    assert [line.split()[1:] for line in aof_tool("dump", home / "kvfast.aof").stdout.decode().splitlines()] == [
        ["set", "5", "6"]]


# ---- tails never written, and clean-up of a refused start ------------------------------------


def test_part_of_a_record_then_megabytes_of_zeros_is_a_torn_tail(start_server, tmp_path):
    """A write torn at a page boundary, the rest of a large batch never written:
    part of one record, then zeros far past the 1 MiB search window."""
    path = tmp_path / "kvfast.aof"
    good = log_bytes(rec_set(1, 10), rec_set(2, 20))
    path.write_bytes(good + rec_set(3, 30)[:9] + bytes(2 << 20))
    server = start_aof(start_server, path)
    assert loaded(server) == (2, str(path))
    check_store(server, {1: 10, 2: 20, 3: None})
    assert path.stat().st_size == len(good)


def test_a_log_of_only_zeros_starts_afresh(start_server, tmp_path):
    """A file created but whose blocks were never written (a crash at creation)."""
    path = tmp_path / "kvfast.aof"
    path.write_bytes(bytes(4096))
    server = start_aof(start_server, path)
    assert loaded(server) == (0, str(path))
    assert resp_line(server.address, "SET", 1, 1) == b"+OK"
    stop_clean(server)
    assert replay(parse(path.read_bytes())) == {1: 1}


def test_a_refused_start_releases_everything(tmp_path):
    """kvfast.Server on a corrupt log raises LogError and leaves no descriptor open."""
    path = tmp_path / "kvfast.aof"
    path.write_bytes(log_bytes(rec_set(1, 1), rec_set(2, 2)))
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 3] ^= 0xFF                   # the first record: corrupt, with a good one after it
    path.write_bytes(bytes(data))
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(kvfast.LogError, match="corrupt record at offset 16"):
            kvfast.Server(config=ServerConfig(port=0, appendonly=str(path)))
    import gc
    gc.collect()
    assert set(os.listdir("/proc/self/fd")) <= before


# ---- a failed fdatasync (simulated with an LD_PRELOAD shim) ----------------------------------


@pytest.fixture
def fail_sync_shim(tmp_path):
    """(environment, flag path): with this environment, fdatasync fails with EIO
    in the server (and its rewrite child) while the flag file exists. Built from
    tests/native/fail_fdatasync.c with the C compiler that builds kvfast."""
    compiler = require_tool("cc")
    library = tmp_path / "fail_fdatasync.so"
    source = os.path.join(os.path.dirname(__file__), "native", "fail_fdatasync.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), source, "-ldl"], check=True,
                   capture_output=True, timeout=60)
    flag = tmp_path / "fail-sync"
    env = dict(os.environ, LD_PRELOAD=str(library), KVFAST_TEST_FAIL_SYNC=str(flag))
    return env, flag


def test_failed_sync_refuses_writes_until_a_rewrite_from_memory(start_server, tmp_path, fail_sync_shim):
    env, flag = fail_sync_shim
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "always", env=env)
    assert resp_line(server.address, "SET", 1, 1) == b"+OK"
    flag.touch()
    with socket.create_connection(server.address, timeout=10) as sock:     # not acknowledged
        sock.sendall(command("SET", 2, 2))
        assert read_until_closed(sock) == b""
    assert resp_line(server.address, "SET", 3, 3) == b"-MISCONF Errors writing to the AOF file: Input/output error"
    assert resp_line(server.address, "GET", 1) == b"$1"
    # Recovery rewrites fail while syncs fail: wait for one to have failed, then writes are still refused.
    wait_for(lambda: info(server.address)["aof_last_bgrewrite_status"] == "err", 10,
             message="a recovery rewrite to fail")
    assert resp_line(server.address, "SET", 3, 3).startswith(b"-MISCONF")
    flag.unlink()
    # The recovery rewrite backs off 10 s after a failure; then one from memory succeeds.
    wait_for(lambda: resp_line(server.address, "SET", 4, 4) == b"+OK", 20, interval=0.2,
             message="writes accepted again after the rewrite from memory")
    assert info(server.address)["aof_rewrites"] >= 1
    stop_clean(server)
    restarted = start_aof(start_server, path)
    check_store(restarted, {1: 1, 2: 2, 3: None, 4: 4})     # 2 was applied (never acknowledged), 3 refused


def test_stopping_after_a_failed_sync_writes_the_snapshot(start_server, tmp_path, fail_sync_shim):
    env, flag = fail_sync_shim
    path = tmp_path / "kvfast.aof"
    server = start_aof(start_server, path, "everysec", env=env)
    assert pipeline(server.address, [b"set %d %d" % (key, key) for key in range(1, 101)]) == [b"OK"] * 100
    flag.touch()
    wait_for(lambda: resp_line(server.address, "SET", 1000, 1).startswith(b"-MISCONF"), 10, interval=0.2,
             message="the everysec thread's failed sync")
    wait_for(lambda: info(server.address)["aof_last_bgrewrite_status"] == "err", 10,
             message="a recovery rewrite to fail (it then backs off 10 s)")
    flag.unlink()
    stderr = stop_clean(server)                     # within the back-off: the snapshot is written at exit
    assert "writing every key from memory before exit" in stderr
    restarted = start_aof(start_server, path)
    check_store(restarted, {**{key: key for key in range(1, 101)}, 1000: 1})    # 1000: acknowledged first
