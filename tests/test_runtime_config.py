"""CONFIG GET, CONFIG SET and CONFIG REWRITE (kvfast/runtime.py, kvfast/_config_command.pyx).

Each run-time setting is shown to take effect for a connection that existed before the CONFIG SET
and for a new one; a bad value is refused naming the setting, with nothing changed; CONFIG REWRITE
writes the running values into the TOML file the server started with, keeping its comments. (The
replies' shapes and error texts are compared with redis-server in test_differential_config.py.)
"""
import socket
import subprocess

import pytest
import redis

from conftest import command, read_until_closed, redis_py_client, require_tool
from kvfast.config import read_config_file


def config_get(client, name):
    return client.config_get(name)[name]


def test_config_get_every_setting_by_its_config_name(redis_py):
    settings = redis_py.config_get("*")
    for name in ("bind", "port", "maxclients", "timeout", "requirepass", "protected-mode", "appendonly",
                 "appendfsync", "appendfilename", "unixsocket", "unixsocketperm", "client-query-buffer-limit",
                 "proto-max-bulk-len", "tcp-backlog", "loglevel", "save", "max-line-bytes",
                 "output-high-water-bytes", "auto-aof-rewrite-min-size", "metrics-port"):
        assert name in settings
    assert settings["save"] == "" and settings["appendonly"] == "no" and settings["requirepass"] == ""
    assert int(settings["port"]) == redis_py.connection_pool.connection_kwargs["port"]    # the bound port
    assert redis_py.config_get("max*") == {"max-line-bytes": "65536", "maxclients": "10000", "maxmemory": "0",
                                           "maxmemory-policy": "noeviction"}
    assert redis_py.config_get("nosuch") == {}


def test_config_get_is_a_map_in_resp3(server):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(command("HELLO", "3"))
        read_reply_prefix(sock, b"%")
        sock.sendall(command("CONFIG", "GET", "timeout"))
        assert read_reply_prefix(sock, b"%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n") is None


def read_reply_prefix(sock, expected):
    """Read until ``expected`` has arrived in full (the start of the reply); None when it has."""
    data = b""
    while len(data) < len(expected):
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    assert data.startswith(expected), data
    return None


def test_timeout_applies_to_existing_and_new_connections(server, redis_py):
    with server.connect() as existing:
        existing.sendall(command("PING"))
        assert existing.recv(100) == b"+PONG\r\n"
        assert redis_py.config_set("timeout", 1)
        redis_py.connection_pool.disconnect()       # the controlling client must not time out either
        with server.connect() as new:
            assert read_until_closed(existing) == b""       # closed by the server, idle over 1 s
            assert read_until_closed(new) == b""
    client = redis_py_client(server, "python")
    assert client.config_set("timeout", 0) and config_get(client, "timeout") == "0"
    assert int(client.info("stats")["timed_out_clients"]) >= 2


def test_maxclients_refuses_new_connections_and_keeps_existing_ones(server, redis_py):
    redis_py.ping()
    with server.connect() as existing:
        existing.sendall(command("PING"))
        assert existing.recv(100) == b"+PONG\r\n"
        assert redis_py.config_set("maxclients", 2)
        with server.connect() as refused:
            refused.sendall(command("PING"))
            assert read_until_closed(refused) == b"-ERR max number of clients reached\r\n"
        existing.sendall(command("PING"))
        assert existing.recv(100) == b"+PONG\r\n"
        assert redis_py.config_set("maxclients", 10)
        with server.connect() as admitted:
            admitted.sendall(command("PING"))
            assert admitted.recv(100) == b"+PONG\r\n"


def test_requirepass_set_and_removed_at_run_time(server):
    admin = redis_py_client(server, "hiredis")
    with server.connect() as existing:
        assert admin.config_set("requirepass", "s3cret")
        existing.sendall(command("SET", "1", "2"))
        assert existing.recv(100) == b"+OK\r\n"         # authenticated before: stays so, as in Redis
        assert admin.get(1) == b"2"
        anonymous = redis_py_client(server, "python")
        with pytest.raises(redis.AuthenticationError):
            anonymous.get(1)
        with server.connect() as new:
            new.sendall(command("GET", "1"))
            assert new.recv(100) == b"-NOAUTH Authentication required.\r\n"
            assert config_get(redis_py_client(server, "python", password="s3cret"), "requirepass") == "s3cret"
            admin.config_set("requirepass", "")     # no password: every connection may run commands
            new.sendall(command("GET", "1"))
            assert new.recv(100) == b"$1\r\n2\r\n"
    assert config_get(admin, "requirepass") == ""


def test_limits_apply_to_existing_connections(server, redis_py):
    with server.connect() as existing:
        assert redis_py.config_set("proto-max-bulk-len", "1kb")
        assert config_get(redis_py, "proto-max-bulk-len") == "1024"
        existing.sendall(b"*2\r\n$4\r\nECHO\r\n$2000\r\n" + b"1" * 2000 + b"\r\n")
        assert read_until_closed(existing) == b"-ERR Protocol error: invalid bulk length\r\n"
    assert redis_py.config_set("proto-max-bulk-len", "512mb")
    assert redis_py.echo(b"1" * 2000) == b"1" * 2000


def test_bad_value_is_refused_naming_the_setting_and_nothing_changes(redis_py):
    with pytest.raises(redis.ResponseError, match=r"argument 'maxclients'\) - argument couldn't be parsed"):
        redis_py.execute_command("CONFIG", "SET", "timeout", "5", "maxclients", "many")
    with pytest.raises(redis.ResponseError, match="argument 'port'.*can't set immutable config"):
        redis_py.execute_command("CONFIG", "SET", "timeout", "5", "port", "1")
    assert config_get(redis_py, "timeout") == "0" and config_get(redis_py, "maxclients") == "10000"


def test_appendfsync_changes_the_running_log(start_server, tmp_path):
    server = start_server("--appendonly", str(tmp_path / "log.aof"))
    client = redis_py_client(server, "hiredis")
    for policy in ("always", "no", "everysec", "always"):
        assert client.config_set("appendfsync", policy)
        assert client.info("persistence")["aof_fsync"] == policy
        assert client.incr(1)
    assert config_get(client, "appendonly") == "yes"
    assert config_get(client, "appendfilename") == str(tmp_path / "log.aof")
    server.close()
    assert redis_py_client(start_server("--appendonly", str(tmp_path / "log.aof")), "python").get(1) == b"4"


def test_config_rewrite_keeps_comments_and_writes_running_values(start_server, tmp_path):
    path = tmp_path / "kvfast.toml"
    path.write_text("# kvfast settings\n"
                    "timeout = 100   # seconds\n"
                    "\n"
                    "# the log\n"
                    "fsync = \"everysec\"\n"
                    "max-clients = 50 # from the file\n")
    server = start_server("--config", str(path))
    client = redis_py_client(server, "hiredis")
    assert config_get(client, "maxclients") == "50"
    client.execute_command("CONFIG", "SET", "timeout", "200", "maxclients", "60", "loglevel", "warning")
    assert client.execute_command("CONFIG", "REWRITE")
    assert path.read_text() == ("# kvfast settings\n"
                                "timeout = 200   # seconds\n"
                                "\n"
                                "# the log\n"
                                "fsync = \"everysec\"\n"
                                "max-clients = 60 # from the file\n"
                                "\n"
                                "# Set with CONFIG SET, written by CONFIG REWRITE\n"
                                "log-level = \"warning\"\n")
    assert read_config_file(path) == {"timeout": 200, "fsync": "everysec", "max_clients": 60, "log_level": "warning"}
    server.close()
    assert config_get(redis_py_client(start_server("--config", str(path)), "python"), "timeout") == "200"


def test_config_rewrite_without_a_file(redis_py):
    with pytest.raises(redis.ResponseError, match="^The server is running without a config file$"):
        redis_py.execute_command("CONFIG", "REWRITE")


def test_redis_cli_config_get_set(server):
    cli = require_tool("redis-cli")
    base = [cli, "-h", server.host, "-p", str(server.port)]

    def run(*words):
        return subprocess.run([*base, *words], capture_output=True, text=True, timeout=10, check=True).stdout

    assert run("CONFIG", "SET", "timeout", "300") == "OK\n"
    assert run("CONFIG", "GET", "timeout") == "timeout\n300\n"
    assert run("CONFIG", "SET", "protected-mode", "maybe").startswith(
        "ERR CONFIG SET failed (possibly related to argument 'protected-mode') - argument must be 'yes' or 'no'")
    assert run("CONFIG", "GET", "protected-mode") == "protected-mode\nyes\n"
