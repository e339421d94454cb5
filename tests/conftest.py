"""Shared fixtures: real ``kvfast-server`` processes on free loopback ports.

Each server is started as a subprocess with port 0, the test waits for its
``kvfast listening on HOST:PORT`` line to learn the real port, and the server is
stopped with SIGTERM (then SIGKILL if it does not exit) when the test ends.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time

import pytest

LISTENING = re.compile(rb"kvfast listening on ([0-9.]+):(\d+)")
LISTENING_UNIX = re.compile(rb"kvfast listening on unix socket (.+?)\r?\n?$")
START_TIMEOUT = 15.0


def script_path(name):
    """Path of an installed console script (pip puts them beside the interpreter)."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    raise RuntimeError(f"{name} is not installed: run `make test` (pip install -e .[test])")


def stop_process(proc, sig=signal.SIGTERM, timeout=5.0):
    """Send ``sig`` to a child process if it still runs, wait up to ``timeout``
    seconds, kill it if it has not exited; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class ServerProcess:
    """A running ``kvfast-server``; ``host``/``port`` are where it listens.

    ``startup_lines`` holds the stdout lines printed up to and including the
    ready line (``loaded N keys ...`` comes before it when the log is on);
    ``preexec_fn`` runs in the child before exec (resource limits, signals).
    With ``--unixsocket PATH`` among the arguments, the ready line of the unix
    socket is awaited too and ``unix_socket_path`` is the path (else None);
    ``port="none"`` serves the unix socket alone (``host``/``port`` are None).
    """

    def __init__(self, *args, env=None, preexec_fn=None, port="0"):
        self.startup_lines = []
        self.proc = subprocess.Popen(
            [script_path("kvfast-server"), port, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, preexec_fn=preexec_fn,
        )
        self.host, self.port = self._wait_for_ready(tcp=port != "none", unix="--unixsocket" in args)

    def _wait_for_ready(self, tcp=True, unix=False):
        """Read start-up lines until the ready lines asked for have come; returns
        (host, port) of the first TCP line (None, None without TCP) and sets
        ``unix_socket_path``."""
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        address, self.unix_socket_path = None, None
        # readline() blocks: a server that hangs before its ready line is killed
        # by the watchdog, which ends the readline with EOF.
        watchdog = threading.Timer(START_TIMEOUT, self.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.startup_lines.append(line)
                match = LISTENING.search(line)
                if match and address is None:
                    address = match.group(1).decode(), int(match.group(2))
                match = LISTENING_UNIX.search(line)
                if match:
                    self.unix_socket_path = match.group(1).decode()
                if (address is not None or not tcp) and (self.unix_socket_path is not None or not unix):
                    return address or (None, None)
        finally:
            watchdog.cancel()
        self.kill()
        raise RuntimeError(f"kvfast-server did not report ready; last line {line!r}, "
                           f"stderr {self.proc.stderr.read()!r}")

    @property
    def address(self):
        return (self.host, self.port)

    def connect(self, timeout=10.0):
        sock = socket.create_connection(self.address, timeout=timeout)
        return sock

    def connect_unix(self, timeout=10.0):
        """A connection to the server's unix socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.unix_socket_path)
        except BaseException:
            sock.close()
            raise
        return sock

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Send ``sig``, wait for exit, and return the exit status."""
        return stop_process(self.proc, sig, timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self):
        self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def start_server():
    """Factory fixture: ``start_server(*extra_args)`` -> ServerProcess, stopped at teardown."""
    started = []

    def start(*args, **kwargs):
        server = ServerProcess(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start_server):
    """One fresh ``kvfast-server`` per test."""
    return start_server()


def request(sock, line: bytes, timeout=10.0) -> bytes:
    """Send one request line and return the one reply line (without its newline)."""
    sock.sendall(line + b"\n")
    return read_line(sock, timeout)


def read_line(sock, timeout=10.0) -> bytes:
    """Read bytes up to and including one ``\\n``; returns the line without it."""
    sock.settimeout(timeout)
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"server closed the connection after {bytes(data)!r}")
        data += chunk
    return bytes(data[:-1])


def require_tool(name):
    """Path of an external program the tests need (redis-cli, nutcracker, ...).

    Missing tools fail the test rather than skip it: CI installs them
    (see .ci/run), so a missing one is a broken setup, not an optional feature.
    """
    import shutil
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.fail(f"{name} is not installed (see .ci/run: apt-get install redis-tools redis-server nutcracker "
                    "prometheus-redis-exporter systemd)", pytrace=False)
    return path


def command(*words) -> bytes:
    """One RESP multibulk request of ``words`` (bytes, or anything str() spells)."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        word = word if isinstance(word, bytes) else str(word).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


def read_until_closed(sock, timeout=10.0, limit=10_000_000) -> bytes:
    """Everything the server sends until it closes the connection (a reset
    after unread input counts as the close)."""
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("server sent too much")


def exchange(sock, data: bytes, expected: bytes, timeout=5.0):
    """Send ``data`` and assert that exactly ``expected`` comes back."""
    sock.sendall(data)
    sock.settimeout(timeout)
    received = b""
    while len(received) < len(expected):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}, expected {expected!r}"
        received += chunk
    assert received == expected


@pytest.fixture
def redis_server():
    """A real ``redis-server`` on a free loopback port (the reference of the differential tests)."""
    from differential import start_redis
    reference = start_redis()
    yield reference
    reference.close()


# redis-py with each of its reply parsers: hiredis (the C parser, used by default
# when installed) and its pure-Python parsers (RESP3: redis-py 8's default protocol).
REDIS_PY_PARSERS = ("hiredis", "python")


def redis_py_client(server, parser, *, asyncio=False, unix=False, **kwargs):
    """A redis-py client of ``server`` (anything with ``host``/``port``, or with
    ``unix_socket_path`` when ``unix``) using ``parser`` ("hiredis" or "python");
    sync, or redis.asyncio's when ``asyncio``."""
    import redis
    import redis.asyncio
    from redis import _parsers
    module = redis.asyncio if asyncio else redis
    if unix:
        kwargs.update(connection_class=module.UnixDomainSocketConnection, path=server.unix_socket_path)
    else:
        kwargs.update(host=server.host, port=server.port)
    if asyncio:
        parser_class = _parsers._AsyncHiredisParser if parser == "hiredis" else _parsers._AsyncRESP3Parser
    else:
        parser_class = _parsers._HiredisParser if parser == "hiredis" else _parsers._RESP3Parser
    pool = module.ConnectionPool(parser_class=parser_class, **kwargs)
    return module.Redis(connection_pool=pool)


@pytest.fixture(params=REDIS_PY_PARSERS)
def redis_py(request, server):
    """A sync redis-py client of the ``server`` fixture, once per parser."""
    client = redis_py_client(server, request.param)
    yield client
    client.close()
