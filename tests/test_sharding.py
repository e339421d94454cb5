"""Scaling out: three kvfast servers behind twemproxy (nutcracker), which shards
the keys over them by a hash of the key's text (fnv1a_64, ketama).

examples/sharding/ holds the same setup for a person to try; the first test
checks that its configuration is the one tested here.

Through nutcracker, redis-py must use ``protocol=2`` and ``driver_info=None``:
redis-py 8 otherwise opens every connection with ``HELLO 3`` and then
``CLIENT SETINFO LIB-NAME ...``/``LIB-VER ...``, and nutcracker supports neither
HELLO nor CLIENT: it closes the connection on both, so every command fails
with "Connection closed by server". Talking to a kvfast server directly, the
defaults are fine.
"""
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import redis

from conftest import require_tool, stop_process
from helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sharding"
START_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0
KEYS = 10_000


def nutcracker_config(listen_port, backend_ports):
    """One pool, as in examples/sharding/nutcracker.yml. The servers are named
    (``kvfast-N``): ketama places keys by these names, not by the addresses, so
    the placement is the same whatever ports the servers get."""
    servers = "".join(f"   - 127.0.0.1:{port}:1 kvfast-{number}\n"
                      for number, port in enumerate(backend_ports, 1))
    return ("kvfast:\n"
            f"  listen: 127.0.0.1:{listen_port}\n"
            "  hash: fnv1a_64\n"
            "  distribution: ketama\n"
            "  redis: true\n"
            "  auto_eject_hosts: false\n"
            "  servers:\n" + servers)


def check_config(path):
    result = subprocess.run([require_tool("nutcracker"), "--test-conf", "-c", str(path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "syntax is ok" in result.stdout + result.stderr, result


class Nutcracker:
    """A running nutcracker. It prints no ready line, so readiness is its
    listening port accepting a connection (polled, with a deadline)."""

    def __init__(self, config, listen_port, folder):
        self.port = listen_port
        self.log = folder / "nutcracker.log"
        self.output = folder / "nutcracker.out"
        with open(self.output, "wb") as output:
            self.proc = subprocess.Popen(
                [require_tool("nutcracker"), "-c", str(config),
                 "-s", str(free_port()), "-a", "127.0.0.1",     # stats: loopback only (default 0.0.0.0)
                 "-o", str(self.log), "-p", str(folder / "nutcracker.pid")],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        try:
            self._wait_for_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_for_ready(self):
        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nutcracker exited with status {self.proc.returncode}: "
                                   f"{self.logged()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return True
            except OSError:
                return False

        try:
            wait_for(listening, START_TIMEOUT, message=lambda: f"nutcracker to listen on {self.port}: {self.logged()}")
        except AssertionError as error:     # the shards fixture retries on RuntimeError (another port)
            raise RuntimeError(str(error)) from None

    def logged(self):
        return "".join(path.read_text(errors="replace")[-4000:]
                       for path in (self.output, self.log) if path.exists())

    def stop(self):
        return stop_process(self.proc)


class Shards:
    """Three kvfast servers, nutcracker in front, and redis-py clients for both."""

    def __init__(self, servers, nutcracker):
        self.servers = servers
        self.nutcracker = nutcracker
        self.proxy_port = nutcracker.port
        # See the module docstring: no HELLO, no CLIENT SETINFO through nutcracker.
        self.proxy = redis.Redis(host="127.0.0.1", port=self.proxy_port, protocol=2, driver_info=None,
                                 socket_timeout=30)
        self.backends = [redis.Redis(host=server.host, port=server.port, socket_timeout=30)
                         for server in servers]

    def close(self):
        for client in [self.proxy, *self.backends]:
            client.close()


@pytest.fixture
def shards(start_server, tmp_path):
    servers = [start_server() for _ in range(3)]
    config = tmp_path / "nutcracker.yml"
    nutcracker = None
    for attempt in range(3):          # a free port can be taken before nutcracker binds it
        listen_port = free_port()
        config.write_text(nutcracker_config(listen_port, [server.port for server in servers]))
        check_config(config)
        folder = tmp_path / f"run{attempt}"
        folder.mkdir()
        try:
            nutcracker = Nutcracker(config, listen_port, folder)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    cluster = Shards(servers, nutcracker)
    try:
        assert cluster.proxy.ping() is True
        yield cluster
    finally:
        cluster.close()
        nutcracker.stop()


def write_keys(shards, count=KEYS):
    """SET key -> key * 7 + 1 for keys 0..count-1 through the proxy, pipelined
    (non-transactional: nutcracker has no MULTI/EXEC)."""
    pipe = shards.proxy.pipeline(transaction=False)
    for key in range(count):
        pipe.set(key, key * 7 + 1)
    assert pipe.execute() == [True] * count


def where(shards, keys):
    """For each key, the indexes of the backends that hold it (asked directly)."""
    keys = list(keys)
    holders = [[] for _ in keys]
    for index, backend in enumerate(shards.backends):
        for position, value in enumerate(backend.mget(keys)):
            if value is not None:
                holders[position].append(index)
    return holders


def error_replies(client):
    return client.info("stats")["total_error_replies"]


# ---- the example ---------------------------------------------------------------------

def test_example_config_is_the_tested_one():
    text = (EXAMPLE / "nutcracker.yml").read_text()
    meaningful = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert meaningful == nutcracker_config(22121, [7001, 7002, 7003]).splitlines()
    check_config(EXAMPLE / "nutcracker.yml")


def test_example_script_is_valid_shell():
    script = EXAMPLE / "run.sh"
    assert os.access(script, os.X_OK), "run.sh should be executable"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


# ---- redis-py through the proxy -----------------------------------------------------------

def test_keys_are_spread_over_the_shards(shards):
    write_keys(shards)
    values = shards.proxy.mget(range(KEYS))                     # one MGET, split over the shards
    assert values == [b"%d" % (key * 7 + 1) for key in range(KEYS)]
    assert [shards.proxy.get(key) for key in (0, 1, 4999, 9999)] == [b"1", b"8", b"34994", b"69994"]

    sizes = [backend.dbsize() for backend in shards.backends]
    assert sum(sizes) == KEYS
    for size in sizes:
        assert 0.20 * KEYS <= size <= 0.47 * KEYS, sizes
    assert all(len(holders) == 1 for holders in where(shards, range(KEYS)))


def test_multi_key_del_counts_over_all_shards(shards):
    write_keys(shards)
    present = list(range(0, 2000))
    missing = list(range(10**9, 10**9 + 50))
    assert shards.proxy.delete(*present, *missing) == len(present)   # one DEL, split over the shards
    assert shards.proxy.delete(*present[:10]) == 0

    assert sum(backend.dbsize() for backend in shards.backends) == KEYS - len(present)
    for backend in shards.backends:
        assert backend.exists(*present) == 0
    assert where(shards, present) == [[] for _ in present]
    assert shards.proxy.mget(present[-5:] + [2000, 2001]) == [None] * 5 + [b"14001", b"14008"]


def test_mget_incr_and_errors_through_the_proxy(shards):
    write_keys(shards, 100)
    keys = [5, 10**12, 17, -3, 99, 100]
    assert shards.proxy.mget(keys) == [b"36", None, b"120", None, b"694", None]

    assert shards.proxy.incr(10**12) == 1
    assert shards.proxy.incrby(10**12, 41) == 42
    assert shards.proxy.decr(-3) == -1
    assert shards.proxy.decrby(5, 6) == 30
    assert shards.proxy.set(17, 0, nx=True) is None
    assert shards.proxy.setnx(18, 0) is False
    assert shards.proxy.set(-4, -40, nx=True) is True
    assert shards.proxy.mget([10**12, -3, 5, 17, -4]) == [b"42", b"-1", b"30", b"120", b"-40"]
    [[holder]] = where(shards, [10**12])
    assert shards.backends[holder].get(10**12) == b"42"

    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        shards.proxy.set(5, "abc")
    with pytest.raises(redis.ResponseError, match="key is not an integer or out of range"):
        shards.proxy.get("abc")
    assert shards.proxy.get(5) == b"30"           # the connection is still good


def test_key_spelling_decides_the_shard(shards):
    """The proxy hashes the key's text: ``000042`` and ``42`` are one key to
    kvfast but may be sent to different servers. Clients must spell keys one way."""
    for key in range(200):
        shards.proxy.set(f"{key:012d}", key)       # redis-benchmark's spelling
    found = [shards.proxy.get(key) for key in range(200)]
    assert 0 < sum(value is not None for value in found) < 200
    assert [shards.proxy.get(f"{key:012d}") for key in range(200)] == [b"%d" % key for key in range(200)]
    assert all(len(holders) == 1 for holders in where(shards, range(200)))


# ---- redis-cli and redis-benchmark through the proxy ----------------------------------------

def test_redis_cli_through_the_proxy(shards, tmp_path):
    def cli(*arguments):
        env = {name: value for name, value in os.environ.items() if not name.startswith("REDISCLI_")}
        env.update(HOME=str(tmp_path), REDISCLI_HISTFILE=os.devnull)
        result = subprocess.run(
            [require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(shards.proxy_port), *arguments],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env)
        return result.stdout, result.returncode

    assert cli("set", "1", "2") == ("OK\n", 0)
    assert cli("incr", "1") == ("3\n", 0)
    assert cli("set", "2", "20") == ("OK\n", 0)
    assert cli("mget", "1", "2", "3") == ("3\n20\n\n", 0)
    assert cli("--no-raw", "get", "2") == ('"20"\n', 0)
    assert cli("del", "1", "2", "3") == ("2\n", 0)
    assert cli("get", "1") == ("\n", 0)
    assert cli("ping") == ("PONG\n", 0)


def run_benchmark(port, *arguments):
    result = subprocess.run(
        [require_tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), *arguments],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=TOOL_TIMEOUT, text=True,
    )
    return result.returncode, result.stdout


@pytest.mark.parametrize("words", [["set", "__rand_int__", "__rand_int__", "nx"], ["get", "__rand_int__"]],
                         ids=["set-nx", "get"])
def test_redis_benchmark_through_the_proxy(shards, words):
    write_keys(shards, 1000)
    errors_before = [error_replies(backend) for backend in shards.backends]
    status, output = run_benchmark(shards.proxy_port, "-r", "100000", "-n", "20000", "-c", "20",
                                   "-P", "4", "-q", *words)
    assert status == 0, output
    lines = [line.strip() for line in re.split(r"[\r\n]", output) if line.strip()]
    title = " ".join(words)
    assert re.fullmatch(re.escape(title) + r": \d+(\.\d+)? requests per second, p50=\d+(\.\d+)? msec",
                        lines[-1]), output
    assert not re.search(r"err", output, re.IGNORECASE), output
    # redis-benchmark starts by asking CONFIG GET save / appendonly; nutcracker
    # does not proxy CONFIG (it closes that connection), so this one warning is
    # expected here, and nothing else.
    assert [line for line in lines if re.search("warn", line, re.IGNORECASE)] \
        == ["WARNING: Could not fetch server CONFIG"], output

    assert [error_replies(backend) for backend in shards.backends] == errors_before
    sizes = [backend.dbsize() for backend in shards.backends]
    assert all(size > 0 for size in sizes)
    if words[0] == "set":
        assert sum(sizes) > 1000
    else:
        assert sum(sizes) == 1000
    for backend in shards.backends:                    # chunks: a RESP request is at most 1 MiB
        values = [value for start in range(0, 100_000, 20_000)
                  for value in backend.mget(range(start, start + 20_000)) if value is not None]
        assert len(values) == backend.dbsize()
        assert all(re.fullmatch(rb"-?\d+", value) for value in values)
