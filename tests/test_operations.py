"""Operating commands (issue #16 points 1, 2, 3, 5): CLIENT, SLOWLOG, INFO commandstats/latencystats/
errorstats/cpu, CONFIG RESETSTAT, LATENCY HISTOGRAM, MONITOR, SHUTDOWN, DEBUG, MEMORY STATS, through
redis-py (both parsers), redis-cli and raw sockets."""
import socket
import subprocess

import pytest

from conftest import ServerProcess, command, redis_py_client, require_tool
from differential import RawClient
from helpers import wait_for


def info_section(client, section):
    return client.info(section)


# ---- CLIENT -----------------------------------------------------------------------

def test_client_list_parses_with_redis_py(redis_py, server):
    redis_py.client_setname("worker-1")
    other = redis_py_client(server, "python")
    other.ping()
    clients = redis_py.client_list()
    assert len(clients) == 2
    mine = [c for c in clients if c["name"] == "worker-1"]
    assert len(mine) == 1
    me = mine[0]
    assert int(me["id"]) == redis_py.client_id()
    assert me["laddr"] == f"127.0.0.1:{server.port}"
    assert me["addr"].startswith("127.0.0.1:")
    assert me["cmd"] == "client|list" and me["flags"] == "N" and me["db"] == "0" and me["multi"] == "-1"
    assert me["resp"] in ("2", "3") and me["user"] == "default"
    for field in ("fd", "age", "idle", "sub", "psub", "ssub", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs",
                  "rbp", "obl", "oll", "omem", "tot-mem", "events", "redir"):
        assert field in me
    assert redis_py.client_getname() == "worker-1"
    info = redis_py.client_info()
    assert info["name"] == "worker-1" and info["cmd"] == "client|info"
    assert [c["id"] for c in redis_py.client_list(client_id=[redis_py.client_id()])] == [str(redis_py.client_id())]
    assert len(redis_py.client_list(_type="normal")) == 2
    assert redis_py.client_list(_type="pubsub") == []
    other.close()


def test_client_setname_rules_and_getname(server):
    with RawClient(server.address) as client:
        assert client.call("CLIENT", "GETNAME") == b"$-1\r\n"
        assert client.call("CLIENT", "SETNAME", "a b") == \
            b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
        assert client.call("CLIENT", "SETNAME", "abc") == b"+OK\r\n"
        assert client.call("CLIENT", "GETNAME") == b"$3\r\nabc\r\n"
        assert client.call("CLIENT", "SETNAME", "") == b"+OK\r\n"
        assert client.call("CLIENT", "GETNAME") == b"$-1\r\n"
        client.call("HELLO", "2", "SETNAME", "hi")
        assert client.call("CLIENT", "GETNAME") == b"$2\r\nhi\r\n"
        assert client.call("CLIENT", "NO-EVICT", "on") == b"+OK\r\n"
        assert client.call("CLIENT", "NO-TOUCH", "off") == b"+OK\r\n"
        assert client.call("CLIENT", "NO-TOUCH", "maybe") == b"-ERR syntax error\r\n"
        client.call("MULTI")
        client.call("SET", "1", "2")
        line = client.call("CLIENT", "INFO")
        assert line == b"+QUEUED\r\n"
        client.call("DISCARD")


def test_client_kill_closes_the_right_connection(server):
    with RawClient(server.address) as killer, RawClient(server.address) as victim, \
            RawClient(server.address) as bystander:
        victim_id = int(victim.call("CLIENT", "ID")[1:-2])
        bystander.call("PING")
        assert killer.call("CLIENT", "KILL", "ID", str(victim_id)) == b":1\r\n"
        victim.sock.settimeout(5)
        assert victim.sock.recv(100) == b""                      # closed by the server
        assert bystander.call("PING") == b"+PONG\r\n"
        assert killer.call("CLIENT", "KILL", "ID", str(victim_id)) == b":0\r\n"
        # ADDR, the old form, LADDR, SKIPME
        address = bystander.sock.getsockname()
        assert killer.call("CLIENT", "KILL", f"{address[0]}:{address[1]}") == b"+OK\r\n"
        bystander.sock.settimeout(5)
        assert bystander.sock.recv(100) == b""
        assert killer.call("CLIENT", "KILL", "1.2.3.4:5") == b"-ERR No such client\r\n"
        assert killer.call("CLIENT", "KILL", "LADDR", f"127.0.0.1:{server.port}") == b":0\r\n"     # SKIPME yes
        assert killer.call("CLIENT", "KILL", "ID", "0") == b"-ERR client-id should be greater than 0\r\n"
        assert killer.call("CLIENT", "KILL", "ID", "1", "ADDR") == b"-ERR syntax error\r\n"
        assert killer.call("CLIENT", "KILL", "TYPE", "bogus") == b"-ERR Unknown client type 'bogus'\r\n"
        assert killer.call("CLIENT", "KILL", "USER", "bob") == b"-ERR No such user 'bob'\r\n"
        assert killer.call("CLIENT", "KILL", "SKIPME", "no", "LADDR", f"127.0.0.1:{server.port}") == b":1\r\n"
        killer.sock.settimeout(5)
        assert killer.sock.recv(100) == b""
    with RawClient(server.address) as client:
        assert client.call("PING") == b"+PONG\r\n"


def test_client_kill_addr_through_redis_py(redis_py, server):
    other = redis_py_client(server, "python")
    other.client_setname("doomed")
    target = [c for c in redis_py.client_list() if c["name"] == "doomed"][0]
    assert redis_py.client_kill_filter(_id=target["id"]) == 1
    wait_for(lambda: all(c["name"] != "doomed" for c in redis_py.client_list()), message="the killed client to go")
    assert redis_py.client_kill_filter(addr=target["addr"]) == 0
    other.close()


# ---- statistics ----------------------------------------------------------------------

def test_commandstats_errorstats_and_resetstat(redis_py):
    redis_py.config_resetstat()
    pipe = redis_py.pipeline(transaction=False)
    for i in range(50):
        pipe.set(i, i)
        pipe.get(i)
    pipe.execute()
    with pytest.raises(Exception):
        redis_py.execute_command("GET", "x")            # failed_calls
    with pytest.raises(Exception):
        redis_py.execute_command("GET", "1", "2")       # rejected_calls
    with pytest.raises(Exception):
        redis_py.execute_command("NOSUCH")
    stats = redis_py.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 50
    assert stats["cmdstat_get"]["calls"] == 50 + 1
    assert stats["cmdstat_get"]["failed_calls"] == 1 and stats["cmdstat_get"]["rejected_calls"] == 1
    assert set(stats["cmdstat_get"]) == {"calls", "usec", "usec_per_call", "rejected_calls", "failed_calls"}
    errors = redis_py.info("errorstats")
    assert errors["errorstat_ERR"]["count"] == 3
    latency = redis_py.info("latencystats")
    assert set(latency["latency_percentiles_usec_get"]) == {"p50", "p99", "p99.9"}
    cpu = redis_py.info("cpu")
    assert {"used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"} <= set(cpu)
    default = redis_py.info()
    assert "cmdstat_get" not in default and "errorstat_ERR" in default and "used_cpu_sys" in default
    everything = redis_py.info("everything")
    assert "cmdstat_get" in everything and "latency_percentiles_usec_get" in everything
    assert redis_py.config_resetstat() is True
    stats = redis_py.info("commandstats")
    assert list(stats) == ["cmdstat_config"] or "cmdstat_get" not in stats
    assert redis_py.info("errorstats") == {}


def test_exec_queued_commands_are_counted(redis_py):
    redis_py.config_resetstat()
    pipe = redis_py.pipeline(transaction=True)
    pipe.set(1, 1).incr(1).get(1)
    assert pipe.execute() == [True, 2, b"2"]
    stats = redis_py.info("commandstats")
    assert stats["cmdstat_multi"]["calls"] == 1 and stats["cmdstat_exec"]["calls"] == 1
    assert stats["cmdstat_set"]["calls"] == 1 and stats["cmdstat_incrby"]["calls"] == 1
    assert stats["cmdstat_get"]["calls"] == 1


def test_latency_histogram_shape(server):
    with RawClient(server.address) as client:
        client.call("CONFIG", "RESETSTAT")
        client.call("SET", "1", "1")
        reply = client.call("LATENCY", "HISTOGRAM", "set", "nosuch")
        assert reply.startswith(b"*2\r\n$3\r\nset\r\n*4\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n*2\r\n:")
        assert client.call("LATENCY", "HISTOGRAM", "nosuch") == b"*0\r\n"
        client.call("HELLO", "3")
        reply = client.call("LATENCY", "HISTOGRAM", "set")
        assert reply.startswith(b"%1\r\n$3\r\nset\r\n%2\r\n$5\r\ncalls\r\n:1\r\n$14\r\nhistogram_usec\r\n%1\r\n:")


def test_latency_histogram_through_redis_py(redis_py):
    redis_py.set(1, 1)
    histogram = redis_py.execute_command("LATENCY", "HISTOGRAM", "set")
    assert histogram  # a (nested) map, whichever the parser


# ---- SLOWLOG ---------------------------------------------------------------------------

def test_slowlog_records_trimmed_arguments(start_server):
    server = start_server("--slowlog-log-slower-than", "0", "--slowlog-max-len", "3")
    client = redis_py_client(server, "python", protocol=2)
    client.slowlog_reset()
    client.client_setname("slowpoke")
    client.execute_command("MGET", *range(40))
    client.execute_command("ECHO", "x" * 200)
    entries = client.slowlog_get(10)
    assert len(entries) == 3 and client.slowlog_len() == 3      # the SLOWLOG GET... itself, max-len 3
    echo, mget = entries[0], entries[1]
    assert echo["command"].startswith(b"ECHO " + b"x" * 128 + b"... (72 more bytes)")
    arguments = mget["command"].split(b" ")
    assert arguments[:31] == [b"MGET", *(str(i).encode() for i in range(30))]
    assert mget["command"].endswith(b" ... (10 more arguments)")
    assert echo["client_name"] == b"slowpoke" and echo["client_address"].startswith(b"127.0.0.1:")
    assert echo["id"] > mget["id"] and echo["duration"] >= 0 and echo["start_time"] > 1_600_000_000
    assert client.slowlog_reset() is True
    assert client.slowlog_len() == 1        # SLOWLOG LEN itself once the reset is logged... as Redis: reset then len
    client.close()


def test_slowlog_default_threshold_logs_only_slow_commands(server):
    with RawClient(server.address) as client:
        client.call("SET", "1", "1")
        client.call("DEBUG", "SLEEP", "0.02")
        assert client.call("SLOWLOG", "LEN") == b":1\r\n"
        entry = client.call("SLOWLOG", "GET")
        assert b"$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$4\r\n0.02\r\n" in entry
        assert client.call("SLOWLOG", "GET", "-2") == b"-ERR count should be greater than or equal to -1\r\n"
        assert client.call("SLOWLOG", "GET", "0") == b"*0\r\n"


def test_slowlog_off(start_server):
    server = start_server("--slowlog-log-slower-than", "-1")
    with RawClient(server.address) as client:
        client.call("DEBUG", "SLEEP", "0.02")
        assert client.call("SLOWLOG", "LEN") == b":0\r\n"


def test_redis_cli_operating_commands(server):
    cli = require_tool("redis-cli")

    def run(*words):
        return subprocess.run([cli, "-p", str(server.port), *words], capture_output=True, text=True,
                              timeout=10).stdout

    assert run("CLIENT", "SETNAME", "cli") == "OK\n"
    assert "cmd=client|list" in run("CLIENT", "LIST")
    assert run("CLIENT", "INFO").startswith("id=")
    assert run("SLOWLOG", "LEN").strip().isdigit()
    assert "SLOWLOG <subcommand>" in run("SLOWLOG", "HELP")
    assert "# Commandstats" in run("INFO", "commandstats")
    assert "calls" in run("LATENCY", "HISTOGRAM")
    assert "keys.count" in run("MEMORY", "STATS")
    run("SET", "5", "6")
    assert "encoding:int" in run("DEBUG", "OBJECT", "5")
    assert run("CONFIG", "RESETSTAT") == "OK\n"


# ---- MONITOR -----------------------------------------------------------------------------

def test_monitor_sees_every_pipelined_request_once_in_order(server):
    with RawClient(server.address) as monitor, RawClient(server.address) as loader:
        assert monitor.call("MONITOR") == b"+OK\r\n"
        count = 3000
        loader.send_raw(b"".join(command("SET", i, i * 2) for i in range(count)) + command("GET", 'a"b\n'))
        for _ in range(count + 1):
            loader.read_reply()
        lines = []
        while len(lines) < count + 1:
            lines.append(monitor.read_reply())
        port = loader.sock.getsockname()[1]
        for i, line in enumerate(lines[:count]):
            stamp, rest = line.split(b" ", 1)
            assert stamp.startswith(b"+") and float(stamp[1:]) > 1_600_000_000
            assert rest == f'[0 127.0.0.1:{port}] "SET" "{i}" "{i * 2}"\r\n'.encode()
        assert lines[-1].endswith(b'"GET" "a\\"b\\n"\r\n')
        loader.call("CONFIG", "RESETSTAT")          # admin: not shown
        loader.call("PING")
        assert monitor.read_reply().endswith(b'"PING"\r\n')


def test_monitor_with_redis_py(server):
    client = redis_py_client(server, "python")
    with client.monitor() as monitor:
        client.set(7, 8)
        event = monitor.next_command()
        while event["command"].startswith("HELLO"):         # the client's new connection's handshake
            event = monitor.next_command()
        assert event["command"] == "SET 7 8" and event["db"] == 0
    client.close()


# ---- SHUTDOWN, DEBUG, MEMORY STATS ---------------------------------------------------------

def test_shutdown_flushes_the_log_and_exits(tmp_path):
    path = tmp_path / "shutdown.aof"
    server = ServerProcess("--appendonly", str(path), "--fsync", "no")
    try:
        with RawClient(server.address) as client:
            client.call("SET", "1", "42")
            client.send_raw(command("SHUTDOWN", "NOSAVE"))
            client.sock.settimeout(10)
            assert client.sock.recv(100) == b""
        assert server.proc.wait(timeout=10) == 0
    finally:
        server.close()
    again = ServerProcess("--appendonly", str(path))
    try:
        with RawClient(again.address) as client:
            assert client.call("GET", "1") == b"$2\r\n42\r\n"
            assert client.call("SHUTDOWN", "bogus") == b"-ERR syntax error\r\n"
            assert client.call("SHUTDOWN", "ABORT") == b"-ERR No shutdown in progress.\r\n"
    finally:
        again.close()


def test_shutdown_refused_before_auth(start_server):
    import os
    env = dict(os.environ, KVFAST_PASSWORD="secret")
    server = ServerProcess(env=env)
    try:
        with RawClient(server.address) as client:
            assert client.call("SHUTDOWN") == b"-NOAUTH Authentication required.\r\n"
            assert client.call("PING").startswith(b"-NOAUTH")
    finally:
        server.close()


def test_debug_and_memory_stats(redis_py):
    redis_py.set(5, 6)
    assert "encoding:int" in str(redis_py.debug_object(5)) or redis_py.debug_object(5)["encoding"] == "int"
    assert redis_py.execute_command("DEBUG", "SLEEP", "0") in (True, b"OK", "OK")
    stats = redis_py.memory_stats()
    assert stats["keys.count"] == 1 and stats["clients.count"] >= 1 and stats["dataset.bytes"] > 0


def test_client_over_unix_socket(tmp_path):
    path = str(tmp_path / "ops.sock")
    server = ServerProcess("--unixsocket", path)
    try:
        client = redis_py_client(server, "python", unix=True)
        me = client.client_info()
        assert me["addr"] == f"{path}:0" and me["laddr"] == f"{path}:0"
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        sock.sendall(command("MONITOR"))
        assert sock.recv(100) == b"+OK\r\n"
        client.ping()
        sock.settimeout(10)
        assert f'[0 unix:{path}] "PING"'.encode() in sock.recv(1000)
        sock.close()
        client.close()
    finally:
        server.close()
