"""kvfast-server on a unix domain socket (--unixsocket, --unixsocketperm, PORT none),
several --host addresses, and the clients that speak it: kvfast.Client,
kvfast-client -s, kvfast-bench -s, redis-py (unix_socket_path), redis-cli -s,
redis-benchmark -s."""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile

import pytest
import redis

import kvfast.server
from conftest import (
    REDIS_PY_PARSERS, command, exchange, read_until_closed, redis_py_client, request, require_tool, script_path,
)
from kvfast import Client
from kvfast.config import ConfigError, ServerConfig, load_config, read_config_file
from kvfast.server import Server
from test_limits_security import connect_from
from test_client_cli import PROMPT, TRANSCRIPT, client_command, terminal  # noqa: F401 (terminal: a fixture)

TOOL_TIMEOUT = 60.0


@pytest.fixture
def socket_path():
    """A socket path in a fresh directory of its own, short enough for sun_path
    (pytest's tmp_path can pass its 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="kvfast-")
    yield os.path.join(folder, "kvfast.sock")
    shutil.rmtree(folder, ignore_errors=True)


def run_server(*args, timeout=TOOL_TIMEOUT):
    """Run kvfast-server expecting it to fail at start-up; the CompletedProcess."""
    return subprocess.run([script_path("kvfast-server"), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def assert_served(sock):
    """One native and one RESP exchange over an open connection."""
    assert request(sock, b"put 7 70") in (b"OK", b"Key already exists")
    exchange(sock, command("GET", 7), b"$2\r\n70\r\n")


# ---- serving ------------------------------------------------------------------------


def test_one_store_over_tcp_and_the_unix_socket(start_server, socket_path):
    server = start_server("--unixsocket", socket_path)
    assert server.unix_socket_path == socket_path and server.port > 0
    assert server.startup_lines[-1] == f"kvfast listening on unix socket {socket_path}\n".encode()
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    with server.connect() as over_tcp, server.connect_unix() as over_unix:
        assert request(over_tcp, b"put 1 10") == b"OK"
        assert request(over_unix, b"get 1") == b"10"
        exchange(over_unix, command("SET", 2, 20), b"+OK\r\n")
        assert request(over_tcp, b"get 2") == b"20"
    with Client(unix_socket_path=socket_path) as client:
        assert client.get(1) == 10
        client.put(3, 30)
    with Client(server.host, server.port) as client:
        assert client.get(3) == 30


def test_port_none_serves_the_unix_socket_alone(start_server, socket_path):
    server = start_server("--unixsocket", socket_path, port="none")
    assert server.port is None
    assert server.startup_lines == [f"kvfast listening on unix socket {socket_path}\n".encode()]
    with server.connect_unix() as sock:
        assert_served(sock)


def test_port_none_needs_a_unix_socket():
    result = run_server("none")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "kvfast-server: error: port: none (no TCP listener) needs unixsocket: there would be nothing to serve on"]


def test_unix_socket_settings_from_environment_and_file(tmp_path):
    config = load_config({}, {"KVFAST_PORT": "none", "KVFAST_UNIXSOCKET": "/run/a.sock",
                              "KVFAST_UNIXSOCKETPERM": "0770"})
    assert (config.port, config.unixsocket, config.unixsocketperm) == (None, "/run/a.sock", "0770")
    path = tmp_path / "kvfast.toml"
    path.write_text('port = "none"\nunixsocket = "/run/b.sock"\nunixsocketperm = 700\n')
    assert read_config_file(path) == {"port": None, "unixsocket": "/run/b.sock", "unixsocketperm": "700"}
    assert ServerConfig(port=None, unixsocket=tmp_path / "c.sock").unixsocket == str(tmp_path / "c.sock")


@pytest.mark.parametrize("flags, message", [
    ({"unixsocketperm": "800"}, "--unixsocketperm: not an octal file mode like 700 or 0770: '800'"),
    ({"unixsocketperm": "rwx"}, "--unixsocketperm: not an octal file mode like 700 or 0770: 'rwx'"),
    ({"unixsocket": "/" + "x" * 107}, "--unixsocket: must be 1 to 107 bytes, not 108"),
    ({"unixsocket": " "}, "--unixsocket: must not be empty (a socket path)"),
    ({"port": "nothing"}, "PORT: not a whole number: 'nothing'"),
])
def test_bad_unix_socket_settings(flags, message):
    with pytest.raises(ConfigError) as raised:
        load_config(flags, {})
    assert str(raised.value) == message


def test_clean_stop_removes_the_socket_file(start_server, socket_path):
    server = start_server("--unixsocket", socket_path)
    assert os.path.exists(socket_path)
    assert server.stop() == 0
    assert not os.path.exists(socket_path)


def test_a_crashed_servers_socket_file_is_replaced(start_server, socket_path):
    crashed = start_server("--unixsocket", socket_path, port="none")
    crashed.kill()                      # SIGKILL: the file stays behind, nobody listens on it
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(socket_path)
    server = start_server("--unixsocket", socket_path, port="none")
    with server.connect_unix() as sock:
        assert_served(sock)


def test_two_servers_on_one_path(start_server, socket_path):
    first = start_server("--unixsocket", socket_path)
    result = run_server("0", "--unixsocket", socket_path)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"kvfast-server: error: cannot listen on unix socket {socket_path}: another server is listening there"]
    assert b"listening" not in result.stdout
    with first.connect_unix() as sock:      # the first one is untouched
        assert_served(sock)


def test_a_path_that_is_not_a_socket_is_left_alone(socket_path):
    with open(socket_path, "w") as file:
        file.write("precious")
    result = run_server("0", "--unixsocket", socket_path)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"kvfast-server: error: cannot listen on unix socket {socket_path}: the path exists and is not a socket"]
    with open(socket_path) as file:
        assert file.read() == "precious"


def test_unixsocketperm_sets_the_mode_whatever_the_umask(start_server, socket_path):
    server = start_server("--unixsocket", socket_path, "--unixsocketperm", "700",
                          preexec_fn=lambda: os.umask(0))
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o700
    with server.connect_unix() as sock:
        assert_served(sock)


def test_without_unixsocketperm_the_umask_decides(start_server, socket_path):
    start_server("--unixsocket", socket_path, preexec_fn=lambda: os.umask(0o027))
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o750


def test_the_mode_is_applied_before_anyone_can_connect(socket_path, monkeypatch):
    """At the moment the mode is set, connecting is still refused (the socket
    does not listen yet), so no one gets in under the umask's permissions."""
    seen = []
    real_chmod = os.chmod

    def chmod(path, mode):
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                seen.append("connected")
            except ConnectionRefusedError:
                seen.append("refused")
        real_chmod(path, mode)

    monkeypatch.setattr(kvfast.server.os, "chmod", chmod)
    config = ServerConfig(port=None, unixsocket=socket_path, unixsocketperm="0770")
    with Server(config=config) as server:
        assert seen == ["refused"]
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o770
        assert server.address is None and server.addresses == []
        with Client(unix_socket_path=socket_path) as client:
            client.put(1, 2)
            assert client.get(1) == 2
    assert not os.path.exists(socket_path)


def test_protected_mode_counts_unix_peers_as_local(start_server, socket_path):
    """Listening on 127.0.0.2 with no password: protected mode refuses a TCP peer
    from 127.0.0.3, and serves the unix socket's peers."""
    server = start_server("--host", "127.0.0.2", "--unixsocket", socket_path)
    with connect_from("127.0.0.3", server.address) as stranger:
        stranger.sendall(b"get 1\n")
        assert read_until_closed(stranger).startswith(b"Error: kvfast is running in protected mode")
    with server.connect_unix() as sock:
        assert_served(sock)
    with redis.Redis(unix_socket_path=socket_path, protocol=2, driver_info=None, socket_timeout=10) as client:
        assert client.info("stats")["protected_mode_refusals"] == 1


# ---- several TCP addresses -----------------------------------------------------------


def ipv6_loopback_works():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_host_takes_several_addresses(start_server, socket_path):
    second = "::1" if ipv6_loopback_works() else "127.0.0.2"
    server = start_server("--host", f"127.0.0.1 {second}", "--unixsocket", socket_path)
    assert server.startup_lines == [f"kvfast listening on 127.0.0.1:{server.port}\n".encode(),
                                    f"kvfast listening on {second}:{server.port}\n".encode(),
                                    f"kvfast listening on unix socket {socket_path}\n".encode()]
    with socket.create_connection((second, server.port), timeout=10) as sock:
        assert request(sock, b"put 1 1") == b"OK"
    with server.connect() as sock:
        assert request(sock, b"get 1") == b"1"


def test_a_host_that_cannot_be_bound_is_named(start_server):
    first = start_server()
    result = run_server(str(first.port), "--host", "127.0.0.2 127.0.0.1")
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"kvfast-server: error: cannot listen on 127.0.0.1:{first.port}: Address already in use"]


# ---- clients ----------------------------------------------------------------------------


@pytest.fixture
def unix_server(start_server, socket_path):
    """A kvfast-server serving TCP and a unix socket."""
    return start_server("--unixsocket", socket_path)


def test_seed_transcript_through_kvfast_client_s(unix_server, terminal):  # noqa: F811 (the imported fixture)
    term = terminal("-s", unix_server.unix_socket_path)
    typed = [line.split(PROMPT.decode(), 1)[1]
             for line in TRANSCRIPT.splitlines() if line.startswith(PROMPT.decode())]
    for number, line in enumerate(typed, start=1):
        term.wait_for_prompt(number)
        term.type(line.encode() + b"\r")
    assert term.wait_for_exit() == 0
    assert bytes(term.output) == TRANSCRIPT.replace("\n", "\r\n").encode()


def test_kvfast_client_s_one_shot_and_errors(unix_server, socket_path):
    def run(*args):
        return subprocess.run(client_command(*args), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=TOOL_TIMEOUT)

    assert run("-s", socket_path, "put", "1", "-5").stdout == b"OK\n"
    assert run("-s", socket_path, "get", "1").stdout == b"-5\n"
    missing = run("-s", socket_path + ".missing", "get", "1")
    assert missing.returncode == 1
    assert missing.stderr == (f"kvfast-client: error: cannot connect to unix socket {socket_path}.missing: "
                              "No such file or directory\n").encode()
    no_port = run("127.0.0.1")
    assert no_port.stderr == b"kvfast-client: error: the following arguments are required: PORT\n"


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
def test_redis_py_unix_socket_path(unix_server, parser):
    client = redis_py_client(unix_server, parser, unix=True, socket_timeout=10)
    try:
        assert client.set(1, 2) is True
        assert client.incr(1) == 3
        assert client.mget(1, 2) == [b"3", None]
    finally:
        client.close()
    # redis-py's own keyword, as an application would write it.
    with redis.Redis(unix_socket_path=unix_server.unix_socket_path, socket_timeout=10) as plain:
        assert plain.get(1) == b"3"


@pytest.mark.parametrize("parser", REDIS_PY_PARSERS)
def test_redis_py_asyncio_unix_socket_path(unix_server, parser):
    async def session():
        client = redis_py_client(unix_server, parser, asyncio=True, unix=True, socket_timeout=10)
        try:
            assert await client.set(5, 6) is True
            assert await client.get(5) == b"6"
        finally:
            await client.aclose()

    asyncio.run(session())


def test_redis_cli_s(unix_server, tmp_path):
    from test_redis_tools import tool_env

    def cli(*words):
        result = subprocess.run([require_tool("redis-cli"), "-s", unix_server.unix_socket_path, *words],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT,
                                env=tool_env(tmp_path))
        return result.stdout.decode()

    assert cli("set", "1", "2") == "OK\n"
    assert cli("incr", "1") == "3\n"
    assert cli("get", "1") == "3\n"


def test_redis_benchmark_s(unix_server):
    with redis.Redis(unix_socket_path=unix_server.unix_socket_path, protocol=2, driver_info=None,
                     socket_timeout=10) as client:
        before = client.info("stats")
        result = subprocess.run(
            [require_tool("redis-benchmark"), "-s", unix_server.unix_socket_path, "-r", "1000000",
             "-n", "50000", "-c", "20", "-P", "16", "-q", "set", "__rand_int__", "__rand_int__"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TOOL_TIMEOUT,
            text=True)
        assert result.returncode == 0, result.stdout
        last = [line.strip() for line in re.split(r"[\r\n]", result.stdout) if line.strip()][-1]
        assert re.fullmatch(r"set __rand_int__ __rand_int__: [\d.]+ requests per second, p50=[\d.]+ msec", last)
        after = client.info("stats")
        assert after["total_error_replies"] == before["total_error_replies"]
        assert after["total_commands_processed"] - before["total_commands_processed"] >= 50000
        assert client.dbsize() > 0


@pytest.mark.parametrize("protocol", ["native", "resp"])
def test_kvfast_bench_s(unix_server, protocol):
    result = subprocess.run(
        [script_path("kvfast-bench"), "-s", unix_server.unix_socket_path, "-c", "8", "-n", "20000", "-P", "4",
         "--protocol", protocol, "-t", "set,get", "--json"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, result.stderr
    results = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["test"], r["requests"], r["errors"]) for r in results] == [("set", 20000, 0), ("get", 20000, 0)]


def test_kvfast_bench_s_without_a_server(socket_path):
    result = subprocess.run([script_path("kvfast-bench"), "-s", socket_path, "-n", "10", "-t", "get"],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("kvfast-bench: error: ")
    assert len(result.stderr.splitlines()) == 1


def test_sigterm_stops_a_unix_only_server_cleanly(start_server, socket_path):
    server = start_server("--unixsocket", socket_path, port="none")
    assert server.stop(signal.SIGTERM) == 0
    assert not os.path.exists(socket_path)
