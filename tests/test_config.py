"""Settings from flags, KVFAST_* variables and a TOML file (kvfast.config.load_config),
and kvfast-server started from them."""
import argparse
import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10: tomli, which kvfast depends on there (same API)
    import tomli as tomllib

import pytest

from conftest import ServerProcess, request, script_path
from kvfast.config import (
    LOG_LEVELS, SETTINGS, ConfigError, MissingSettingError, ServerConfig, format_default,
    load_config, read_config_file,
)

REPOSITORY = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 10.0
BY_NAME = {setting.name: setting for setting in SETTINGS}


def write_toml(tmp_path, text, name="kvfast.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(**kwargs) -> str:
    """The one-line message of the ConfigError that load_config(**kwargs) raises."""
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as raised:
        load_config(**kwargs)
    return str(raised.value)


# --- defaults and precedence ----------------------------------------------------


def test_no_source_gives_the_dataclass_defaults():
    assert load_config(environ={}) == ServerConfig()
    assert load_config({}, {}, None) == ServerConfig()


def test_settings_cover_every_field_but_the_read_chunk():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert {setting.name for setting in SETTINGS} == fields - {"read_chunk_bytes"}


def test_names_of_each_setting():
    for setting in SETTINGS:
        assert setting.key == setting.name.replace("_", "-")
        assert setting.default == getattr(ServerConfig(), setting.name)
    assert BY_NAME["requirepass"].env == "KVFAST_PASSWORD"
    assert BY_NAME["requirepass"].flag is None
    assert BY_NAME["port"].flag == "PORT"
    assert BY_NAME["max_clients"].env == "KVFAST_MAX_CLIENTS"
    assert BY_NAME["max_clients"].flag == "--max-clients"


# For every setting, three different valid values: (in the file, in the
# environment, as a flag), each as TOML text, environment text and flag value.
VALUES = {
    "host": (('"10.0.0.1"', "10.0.0.2", "10.0.0.3"), ("10.0.0.1", "10.0.0.2", "10.0.0.3")),
    "port": (("7001", "7002", "7003"), (7001, 7002, 7003)),
    "metrics_port": (("9001", "9002", "9003"), (9001, 9002, 9003)),
    "unixsocket": (('"file.sock"', "env.sock", "flag.sock"), ("file.sock", "env.sock", "flag.sock")),
    "unixsocketperm": (("700", "0770", "755"), ("700", "0770", "755")),
    "log_level": (('"debug"', "warning", "error"), ("debug", "warning", "error")),
    "max_clients": (("10", "20", "30"), (10, 20, 30)),
    "timeout": (("0", "300", "60"), (0, 300, 60)),
    "requirepass": (('"from-file"', "from-env", None), ("from-file", "from-env", None)),
    "protected_mode": (("false", "yes", "no"), (False, True, False)),
    "max_line_bytes": (("100", "200", "300"), (100, 200, 300)),
    "client_query_buffer_limit": (("1000", "2000", "3000"), (1000, 2000, 3000)),
    "proto_max_bulk_len": (("10", "20", "30"), (10, 20, 30)),
    "output_high_water_bytes": (("11", "22", "33"), (11, 22, 33)),
    "backlog": (("1", "2", "3"), (1, 2, 3)),
    "appendonly": (('"file.aof"', "env.aof", "flag.aof"), ("file.aof", "env.aof", "flag.aof")),
    "fsync": (('"always"', "no", "EverySec"), ("always", "no", "everysec")),
    "aof_rewrite_min_bytes": (("1024", "2048", "0"), (1024, 2048, 0)),
    "slowlog_log_slower_than": (("0", "-1", "500"), (0, -1, 500)),
    "slowlog_max_len": (("1", "2", "0"), (1, 2, 0)),
    "maxmemory": (('"100mb"', "1GB", "4096"), (100 * 2**20, 2**30, 4096)),
    "maxmemory_policy": (('"allkeys-lru"', "Volatile-TTL", "allkeys-lfu"),
                         ("allkeys-lru", "volatile-ttl", "allkeys-lfu")),
    "debug_clock_offset_ms": (("1000", "-5", "0"), (1000, -5, 0)),
}


def test_every_setting_has_precedence_values():
    assert set(VALUES) == {setting.name for setting in SETTINGS}


@pytest.mark.parametrize("name", list(VALUES))
def test_precedence_flags_over_environment_over_file_over_default(tmp_path, name):
    setting = BY_NAME[name]
    (file_text, env_text, flag_text), (from_file, from_env, from_flag) = VALUES[name]
    path = write_toml(tmp_path, f"{setting.key} = {file_text}\n")
    env = {setting.env: env_text}
    flags = {name: flag_text}

    def value(**kwargs):
        return getattr(load_config(**kwargs), name)

    assert value(environ={}) == setting.default
    assert value(environ={}, config_path=path) == from_file
    assert value(environ=env, config_path=path) == from_env
    assert value(environ=env) == from_env
    if flag_text is None:       # requirepass: no flag, and a None flag is "not given"
        assert value(flags=flags, environ=env, config_path=path) == from_env
    else:
        assert value(flags=flags, environ=env, config_path=path) == from_flag
        assert value(flags=flags, environ={}, config_path=path) == from_flag
        assert value(flags=flags, environ={}) == from_flag


def test_sources_mix_setting_by_setting(tmp_path):
    path = write_toml(tmp_path, 'host = "0.0.0.0"\nport = 1\ntimeout = 5\nrequirepass = "pw"\n')
    config = load_config({"port": "3", "max_clients": None}, {"KVFAST_PORT": "2", "KVFAST_TIMEOUT": "6"},
                         path)
    assert (config.host, config.port, config.timeout, config.requirepass) == ("0.0.0.0", 3, 6, "pw")
    assert config.max_clients == ServerConfig().max_clients


def test_typed_flag_values_and_namespaces():
    assert load_config({"port": 7, "protected_mode": False}, {}).protected_mode is False
    namespace = argparse.Namespace(port="8", timeout=None, config="ignored.toml", request=[])
    config = load_config(namespace, {"KVFAST_TIMEOUT": "9"})
    assert (config.port, config.timeout) == (8, 9)


def test_unknown_flag_name_is_a_programming_error():
    with pytest.raises(TypeError, match="max_client"):
        load_config({"max_client": 5}, {})


def test_other_environment_variables_are_ignored():
    assert load_config(environ={"KVFAST_BOGUS": "x", "PORT": "x", "KVFAST_REQUIREPASS": "x"}) == ServerConfig()


def test_environ_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("KVFAST_MAX_CLIENTS", "77")
    assert load_config().max_clients == 77


def test_required_setting(tmp_path):
    with pytest.raises(MissingSettingError) as raised:
        load_config(environ={}, required=("port",))
    assert raised.value.source == "PORT"
    assert "KVFAST_PORT" in str(raised.value)
    assert load_config(environ={"KVFAST_PORT": "0"}, required=("port",)).port == 0
    assert load_config(environ={}, config_path=write_toml(tmp_path, "port = 0"), required=("port",)).port == 0


# --- value parsing ----------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("yes", True), ("YES", True), ("true", True), ("True", True), ("1", True), (" yes ", True),
    ("no", False), ("No", False), ("false", False), ("FALSE", False), ("0", False),
])
def test_boolean_words(text, expected):
    assert load_config(environ={"KVFAST_PROTECTED_MODE": text}).protected_mode is expected
    assert load_config({"protected_mode": text}, {}).protected_mode is expected


@pytest.mark.parametrize("text", ["", "maybe", "on", "off", "y", "2", "ja"])
def test_bad_boolean_words(text):
    assert error_of(environ={"KVFAST_PROTECTED_MODE": text}) == (
        f"KVFAST_PROTECTED_MODE: not yes or no: {text!r} (use yes/no, true/false or 1/0)")
    assert error_of(flags={"protected_mode": text}).startswith("--protected-mode: not yes or no: ")


def test_toml_booleans_only_in_the_file(tmp_path):
    assert load_config(environ={}, config_path=write_toml(tmp_path, "protected-mode = false")).protected_mode is False
    path = write_toml(tmp_path, 'protected-mode = "no"')
    assert error_of(config_path=path) == f"{path}: protected-mode: expected true or false, not a string: 'no'"


@pytest.mark.parametrize("text, expected", [("5", 5), (" 5 ", 5), ("+5", 5), ("007", 7)])
def test_whole_numbers_from_text(text, expected):
    assert load_config(environ={"KVFAST_TIMEOUT": text}).timeout == expected


def test_log_levels_are_case_insensitive():
    assert load_config({"log_level": "DEBUG"}, {}).log_level == "debug"
    assert load_config(environ={"KVFAST_LOG_LEVEL": "Warning"}).log_level == "warning"
    for level in LOG_LEVELS:
        assert load_config({"log_level": level}, {}).log_level == level


def test_limits_at_their_bounds():
    config = load_config({"port": "65535", "max_line_bytes": "16", "client_query_buffer_limit": "64",
                          "max_clients": "1", "timeout": "0", "backlog": "1",
                          "output_high_water_bytes": "1"}, {})
    assert (config.port, config.max_line_bytes, config.client_query_buffer_limit) == (65535, 16, 64)
    assert load_config(environ={"KVFAST_PASSWORD": "x" * 512}).requirepass == "x" * 512
    assert load_config(environ={"KVFAST_PASSWORD": "é" * 256}).requirepass == "é" * 256


# --- error messages ---------------------------------------------------------------


@pytest.mark.parametrize("variable, text, message", [
    ("KVFAST_TIMEOUT", "soon", "not a whole number: 'soon'"),
    ("KVFAST_TIMEOUT", "1.5", "not a whole number: '1.5'"),
    ("KVFAST_TIMEOUT", "", "not a whole number: ''"),
    ("KVFAST_TIMEOUT", "1_000", "not a whole number: '1_000'"),
    ("KVFAST_TIMEOUT", "-1", "out of range: -1 (must be at least 0)"),
    ("KVFAST_PORT", "65536", "out of range: 65536 (must be 0 to 65535)"),
    ("KVFAST_PORT", "http", "not a whole number: 'http'"),
    ("KVFAST_MAX_CLIENTS", "0", "out of range: 0 (must be at least 1)"),
    ("KVFAST_MAX_CLIENTS", str(2**31), f"out of range: {2**31} (must be at least 1)"),
    ("KVFAST_MAX_LINE_BYTES", "15", "out of range: 15 (must be at least 16)"),
    ("KVFAST_CLIENT_QUERY_BUFFER_LIMIT", "63", "out of range: 63 (must be at least 64)"),
    ("KVFAST_PROTO_MAX_BULK_LEN", "0", "out of range: 0 (must be at least 1)"),
    ("KVFAST_OUTPUT_HIGH_WATER_BYTES", "0", "out of range: 0 (must be at least 1)"),
    ("KVFAST_BACKLOG", "0", "out of range: 0 (must be at least 1)"),
    ("KVFAST_LOG_LEVEL", "loud", "not a log level: 'loud' (use debug, info, warning, error, critical)"),
    ("KVFAST_HOST", "", "must not be empty"),
    ("KVFAST_PASSWORD", "", "must be 1 to 512 bytes, not 0"),
    ("KVFAST_PASSWORD", "x" * 513, "must be 1 to 512 bytes, not 513"),
])
def test_environment_errors_name_the_variable(variable, text, message):
    error = error_of(environ={variable: text})
    assert error == f"{variable}: {message}"


@pytest.mark.parametrize("flags, message", [
    ({"timeout": "soon"}, "--timeout: not a whole number: 'soon'"),
    ({"max_clients": "0"}, "--max-clients: out of range: 0 (must be at least 1)"),
    ({"port": "70000"}, "PORT: out of range: 70000 (must be 0 to 65535)"),
    ({"port": 70000}, "PORT: out of range: 70000 (must be 0 to 65535)"),
    ({"port": True}, "PORT: expected a whole number, not a boolean: true"),
    ({"log_level": "loud"}, "--log-level: not a log level: 'loud' (use debug, info, warning, error, critical)"),
    ({"host": ""}, "--host: must not be empty"),
    ({"protected_mode": 1}, "--protected-mode: expected true or false, not a number: 1"),
])
def test_flag_errors_name_the_flag(flags, message):
    assert error_of(flags=flags) == message


@pytest.mark.parametrize("text, message", [
    ("max-client = 5", "unknown setting 'max-client'"),
    ("max_clients = 5", "unknown setting 'max_clients'"),
    ("[server]\nport = 5", "unknown setting 'server'"),
    ('port = "5000"', "port: expected a whole number, not a string: '5000'"),
    ("port = 5000.0", "port: not a whole number: 5000.0"),
    ("port = true", "port: expected a whole number, not a boolean: true"),
    ("port = [5000]", "port: expected a whole number, not an array"),
    ("port = { number = 5000 }", "port: expected a whole number, not a table"),
    ("timeout = 1979-05-27", "timeout: expected a whole number, not a date"),
    ("port = 65536", "port: out of range: 65536 (must be 0 to 65535)"),
    ("timeout = -1", "timeout: out of range: -1 (must be at least 0)"),
    ("max-clients = 99999999999999999999999",
     "max-clients: out of range: 99999999999999999999999 (must be at least 1)"),
    ("host = 127", "host: expected a string, not a number: 127"),
    ('host = ""', "host: must not be empty"),
    ('log-level = "loud"', "log-level: not a log level: 'loud' (use debug, info, warning, error, critical)"),
    ("protected-mode = 1", "protected-mode: expected true or false, not a number: 1"),
    ('requirepass = ""', "requirepass: must be 1 to 512 bytes, not 0"),
])
def test_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = write_toml(tmp_path, text + "\n")
    assert error_of(config_path=path) == f"{path}: {message}"


def test_file_error_attributes(tmp_path):
    path = write_toml(tmp_path, "timeout = -1\n")
    with pytest.raises(ConfigError) as raised:
        read_config_file(path)
    assert (raised.value.source, raised.value.key) == (str(path), "timeout")
    assert isinstance(raised.value, ValueError)


def test_passwords_are_never_echoed(tmp_path):
    secret = "12345678901234567890"
    for path in (write_toml(tmp_path, f"requirepass = {secret}\n"),
                 write_toml(tmp_path, f"requirepass = [\"{secret}\"]\n", "list.toml")):
        error = error_of(config_path=path)
        assert secret not in error and "requirepass: expected a string, not a" in error
    assert "x" * 513 not in error_of(environ={"KVFAST_PASSWORD": "x" * 513})
    assert "hunter2" not in repr(load_config(environ={"KVFAST_PASSWORD": "hunter2"}))


def test_unreadable_files(tmp_path):
    missing = tmp_path / "missing.toml"
    assert error_of(config_path=missing) == f"{missing}: cannot read: No such file or directory"
    assert error_of(config_path=tmp_path) == f"{tmp_path}: cannot read: Is a directory"


@pytest.mark.parametrize("text", ["port = ", "port = 1\nport = 2", "[port", "port = 'unterminated",
                                  "= 5"])
def test_invalid_toml(tmp_path, text):
    path = write_toml(tmp_path, text)
    with pytest.raises(tomllib.TOMLDecodeError) as toml_error:
        tomllib.loads(text)
    assert error_of(config_path=path) == f"{path}: invalid TOML: {toml_error.value}"
    assert "\n" not in error_of(config_path=path)


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'host = "caf\xe9"\n')
    assert error_of(config_path=path) == f"{path}: invalid TOML: not UTF-8 text"


def test_empty_file_is_all_defaults(tmp_path):
    assert load_config(environ={}, config_path=write_toml(tmp_path, "# nothing\n")) == ServerConfig()


def test_tomli_is_used_where_tomllib_is_missing(tmp_path, monkeypatch):
    # Python 3.10 has no tomllib; kvfast then needs the tomli package (same API).
    monkeypatch.setitem(sys.modules, "tomllib", None)      # "import tomllib" now fails
    monkeypatch.setitem(sys.modules, "tomli", tomllib)
    path = write_toml(tmp_path, "timeout = 5\n")
    assert read_config_file(path) == {"timeout": 5}
    assert error_of(config_path=write_toml(tmp_path, "timeout =", "bad.toml")).startswith(
        f"{tmp_path / 'bad.toml'}: invalid TOML: ")


def test_example_file_shows_every_setting_with_its_default():
    text = (REPOSITORY / "examples" / "kvfast.toml").read_text()
    assert tomllib.loads(text) == {}       # everything commented out
    lines = [match.group(1) for match in re.finditer(r"^# ([a-z-]+ = .*?)\s+#", text, re.MULTILINE)]
    example = tomllib.loads("\n".join(lines))
    assert set(example) == {setting.key for setting in SETTINGS}
    for setting in SETTINGS:
        if setting.name not in ("requirepass", "appendonly", "unixsocket", "unixsocketperm", "metrics_port"):
            assert example[setting.key] == setting.default, setting.key
        assert setting.env in text


# --- kvfast-server ----------------------------------------------------------------


def clean_environ(**variables):
    """os.environ without KVFAST_* variables, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KVFAST_")}
    env.update(variables)
    return env


class ConfiguredServer(ServerProcess):
    """kvfast-server with exactly ``args`` (no PORT unless given) and ``env``."""

    def __init__(self, *args, env):
        self.startup_lines = []
        self.proc = subprocess.Popen(
            [script_path("kvfast-server"), *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.host, self.port = self._wait_for_ready()


@pytest.fixture
def configured_server():
    started = []

    def start(*args, env):
        started.append(ConfiguredServer(*args, env=env))
        return started[-1]

    yield start
    for server in started:
        server.close()


def stop_and_read_stderr(server) -> str:
    assert server.stop() == 0
    return server.proc.stderr.read().decode()


def run_server(*args, env):
    return subprocess.run([script_path("kvfast-server"), *map(str, args)], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=WAIT_SECONDS, env=env)


def test_server_takes_port_and_limits_from_the_file(tmp_path, configured_server):
    path = write_toml(tmp_path, 'host = "127.0.0.1"\nport = 0\nmax-line-bytes = 16\n')
    server = configured_server("--config", path, env=clean_environ())
    assert server.host == "127.0.0.1" and server.port != 0
    with server.connect() as sock:
        assert request(sock, b"get 1") == b"Key not found"
        assert request(sock, b"get 12345678901234567") == b"Invalid request: line too long"


def test_server_takes_its_port_from_the_environment(configured_server):
    server = configured_server(env=clean_environ(KVFAST_PORT="0"))
    assert server.port != 0
    with server.connect() as sock:
        assert request(sock, b"put 1 2") == b"OK"


def test_server_environment_beats_file_and_flag_beats_both(tmp_path, configured_server):
    # The file asks for debug logging; debug lines ("open file limit") show on stderr.
    path = write_toml(tmp_path, 'port = 0\nlog-level = "debug"\n')
    assert "open file limit" in stop_and_read_stderr(
        configured_server("--config", path, env=clean_environ()))
    assert "open file limit" not in stop_and_read_stderr(
        configured_server("--config", path, env=clean_environ(KVFAST_LOG_LEVEL="warning")))
    assert "open file limit" in stop_and_read_stderr(
        configured_server("--config", path, "--log-level", "debug",
                          env=clean_environ(KVFAST_LOG_LEVEL="warning")))
    # A PORT argument beats KVFAST_PORT (here a port in use, that would fail).
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = str(taken.getsockname()[1])
        assert configured_server("0", env=clean_environ(KVFAST_PORT=busy)).port != int(busy)


def test_bad_values_are_errors_even_where_overridden():
    # Every source is checked, so a mistake never lies in wait for the day the
    # flag that hides it is dropped.
    assert error_of(flags={"port": "1"}, environ={"KVFAST_PORT": "70000"}).startswith("KVFAST_PORT: ")


def test_server_does_not_log_the_password(tmp_path, configured_server):
    server = configured_server("0", "--log-level", "debug", env=clean_environ(KVFAST_PASSWORD="hunter2"))
    errors = stop_and_read_stderr(server)
    assert "ServerConfig(" in errors and "hunter2" not in errors


@pytest.mark.parametrize("args, env, file_text, message", [
    (["--config", "{file}"], {}, "max-client = 5\n", "{file}: unknown setting 'max-client'"),
    (["--config", "{file}"], {}, "port = \n", "{file}: invalid TOML: "),
    (["--config", "{file}"], {}, 'port = "0"\n', "{file}: port: expected a whole number"),
    (["0"], {"KVFAST_TIMEOUT": "soon"}, None, "KVFAST_TIMEOUT: not a whole number: 'soon'"),
    (["0"], {"KVFAST_PROTECTED_MODE": "maybe"}, None, "KVFAST_PROTECTED_MODE: not yes or no: 'maybe'"),
    ([], {"KVFAST_PORT": "-1"}, None, "KVFAST_PORT: out of range: -1 (must be 0 to 65535)"),
    (["0", "--timeout", "soon"], {}, None, "--timeout: not a whole number: 'soon'"),
    (["0", "--max-clients", "0"], {}, None, "--max-clients: out of range: 0 (must be at least 1)"),
    (["0", "--protected-mode", "perhaps"], {}, None, "--protected-mode: not yes or no: 'perhaps'"),
    (["0", "--log-level", "loud"], {}, None, "--log-level: not a log level: 'loud'"),
    (["0", "--max-line-bytes", "8"], {}, None, "--max-line-bytes: out of range: 8 (must be at least 16)"),
    (["0", "--config", "{missing}"], {}, None, "{missing}: cannot read: No such file or directory"),
    (["0", "--requirepass", "x"], {}, None, "unrecognized arguments: --requirepass x"),
    (["--config", "{file}"], {}, "timeout = 5\n", "the following arguments are required: port"),
    ([], {}, None, "the following arguments are required: port"),
])
def test_server_config_errors_are_one_line(tmp_path, args, env, file_text, message):
    file = tmp_path / "kvfast.toml"
    if file_text is not None:
        file.write_text(file_text)
    names = {"file": file, "missing": tmp_path / "missing.toml"}
    result = run_server(*(arg.format(**names) for arg in args), env=clean_environ(**env))
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kvfast-server: error: " + message.format(**names)), lines


def test_server_help_documents_every_setting():
    result = run_server("--help", env=clean_environ())
    assert result.returncode == 0
    text = result.stdout.decode()
    for setting in SETTINGS:
        row = next((line for line in text.splitlines() if line.split()[:1] == [setting.key]), None)
        assert row is not None, setting.key
        assert setting.env in row and (setting.flag or "(none)") in row
        assert row.split()[-1] == ("required" if setting.name == "port" else format_default(setting))
    assert "precedence" in text.lower() or "wins over" in text
    assert "--config" in text and "KVFAST_PASSWORD" in text and "ps" in text
    assert "--requirepass" not in text and "--password" not in text


# --- the append-only file's settings -----------------------------------------------


def test_persistence_settings_default_to_off_and_everysec():
    config = load_config(environ={})
    assert (config.appendonly, config.fsync, config.aof_rewrite_min_bytes) == (None, "everysec", 64 * 1024 * 1024)


@pytest.mark.parametrize("text", ["sometimes", "", "1", "fsync"])
def test_bad_fsync_policy_is_a_one_line_error(text):
    assert error_of(flags={"fsync": text}) == (
        f"--fsync: not an fsync policy: {text!r} (use everysec, always, no)")


def test_appendonly_must_be_a_path(tmp_path):
    assert error_of(environ={"KVFAST_APPENDONLY": " "}) == "KVFAST_APPENDONLY: must not be empty (a file path)"
    assert error_of(config_path=write_toml(tmp_path, "appendonly = 5")).endswith(
        "appendonly: expected a string, not a number: 5")
