"""Redis's own tools against a real kvfast-server: redis-cli (one-shot and
interactive through a pseudo-terminal) and redis-benchmark.

redis-cli formats replies for a person only when its stdout is a terminal
(``(integer) 3``, ``"50"``, ``(nil)``, ``(error) ERR ...``); into a pipe it
prints them raw (``3``, ``50``, an empty line, ``ERR ...``). ``--no-raw``
forces the terminal format without a terminal.
"""
import os
import random
import re
import select
import socket
import subprocess
import threading
import time

import pytest
import redis

from conftest import require_tool, stop_process

TOOL_TIMEOUT = 120.0              # generous: each benchmark run takes ~1 s
KEYSPACE = 1_000_000              # redis-benchmark -r 1000000: keys 000000000000 .. 000000999999
BENCHMARK_REQUESTS = 200_000
BENCHMARK = ["-r", str(KEYSPACE), "-n", str(BENCHMARK_REQUESTS), "-c", "50", "-P", "16", "-q"]

VALUE_ERROR = "ERR value is not an integer or out of range"
KEY_ERROR = "ERR key is not an integer or out of range"


def tool_env(home):
    """A clean environment for redis-cli: no ~/.redisclirc, no history file,
    no REDISCLI_AUTH or other settings from whoever runs the tests."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REDISCLI_")}
    env.update(HOME=str(home), REDISCLI_HISTFILE=os.devnull, REDISCLI_RCFILE=os.devnull, TERM="dumb")
    return env


def error_replies(server):
    """The server's ``total_error_replies`` counter (INFO stats).

    Read over RESP2 without CLIENT SETINFO: redis-py's default RESP3 handshake
    also sends ``CLIENT MAINT_NOTIFICATIONS ON ...``, which kvfast (like Redis
    before 8.2) answers with an error that redis-py ignores, and which would
    count here.
    """
    with redis.Redis(host=server.host, port=server.port, protocol=2, driver_info=None,
                     socket_timeout=10) as client:
        return client.info("stats")["total_error_replies"]


# ---- redis-cli, one command per run ------------------------------------------------

# (arguments, what redis-cli prints on stdout when it is not a terminal), in order,
# against one fresh server. A null reply prints as an empty line.
ONE_SHOT = [
    ("set 1 2", "OK\n"),
    ("get 1", "2\n"),
    ("incr 1", "3\n"),
    ("incrby 1 10", "13\n"),
    ("decr 000001", "12\n"),                   # leading zeros: the same key
    ("get 1", "12\n"),
    ("set 2 -5 nx", "OK\n"),
    ("set 2 7 nx", "\n"),                      # null: NX and the key exists
    ("setnx 2 7", "0\n"),
    ("mget 1 2 3", "12\n-5\n\n"),
    ("exists 1 2 3", "2\n"),
    ("dbsize", "2\n"),
    ("ping", "PONG\n"),
    ("ping hello", "hello\n"),
    ("echo 42", "42\n"),
    ("select 0", "OK\n"),
    ("info keyspace", "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n"),
    ("config get appendonly", "appendonly\nno\n"),
    ("del 1 3", "1\n"),
    ("get 1", "\n"),
    ("put 7 70", "OK\n"),
    ("--no-raw incr 7", "(integer) 71\n"),     # the terminal format, without a terminal
    ("--no-raw get 7", '"71"\n'),
    ("--no-raw get 1", "(nil)\n"),
    ("--no-raw mget 7 1", '1) "71"\n2) (nil)\n'),
    ("-3 --no-raw mget 7 1", '1) "71"\n2) (nil)\n'),   # -3: HELLO 3 first, RESP3 replies
    ("-3 --no-raw config get save", '1# "save" => ""\n'),
    ("-3 get 7", "71\n"),
    ("flushall", "OK\n"),
    ("dbsize", "0\n"),
]

# Error replies: redis-cli prints ``ERR ...`` (``(error) ERR ...`` with --no-raw).
# Its exit status for an error reply differs between redis-cli versions (7.0
# exits 0), and newer versions may print it on stderr, so only the text is held.
ONE_SHOT_ERRORS = [
    ("set 1 x", VALUE_ERROR),
    ("get nosuch", KEY_ERROR),
    ("incrby 1 1.5", VALUE_ERROR),
    ("put 5 1", "ERR Key already exists"),     # PUT is insert-only
    ("--no-raw set 1 x", "(error) " + VALUE_ERROR),
    ("select 1", "ERR DB index is out of range"),
]


def redis_cli(server, home, *arguments):
    """Run redis-cli once; stdout and stderr as str, line ends untranslated."""
    result = subprocess.run(
        [require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(server.port), *arguments],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT, env=tool_env(home),
    )
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def test_redis_cli_one_shot_commands(server, tmp_path):
    for line, expected in ONE_SHOT:
        result = redis_cli(server, tmp_path, *line.split())
        assert (line, result.stdout, result.stderr, result.returncode) == (line, expected, "", 0)


def test_redis_cli_one_shot_errors(server, tmp_path):
    assert redis_cli(server, tmp_path, "put", "5", "50").stdout == "OK\n"
    before = error_replies(server)
    for line, expected in ONE_SHOT_ERRORS:
        result = redis_cli(server, tmp_path, *line.split())
        shown = (result.stdout + result.stderr).strip("\n")
        assert (line, shown) == (line, expected)
        assert result.returncode in (0, 1), result
    assert error_replies(server) == before + len(ONE_SHOT_ERRORS)
    assert redis_cli(server, tmp_path, "get", "5").stdout == "50\n"      # nothing was changed


def test_redis_cli_command_count_matches_command(server, tmp_path):
    with redis.Redis(host=server.host, port=server.port, protocol=2) as client:
        names = set(client.command())
    assert {"get", "set", "incr", "mget", "command", "info"} <= names
    result = redis_cli(server, tmp_path, "command", "count")
    assert (result.stdout, result.returncode) == (f"{len(names)}\n", 0)


# ---- redis-cli, interactive, through a pseudo-terminal -----------------------------

class Terminal:
    """A program whose stdin/stdout/stderr are a pseudo-terminal (what a person
    gets in a terminal window): ``send_line`` types a line, ``expect`` reads the
    screen output up to a marker.

    TERM=dumb makes redis-cli's line editor (linenoise) print the prompt and
    read a cooked line instead of redrawing the line with escape sequences
    (and asking the terminal where its cursor is), so the output is exactly
    what appears on screen; redis-cli still formats replies for a terminal.
    The server sees the same commands either way.
    """

    def __init__(self, argv, env):
        self.master, slave = os.openpty()
        try:
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                         start_new_session=True)
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        self.output = bytearray()
        self.position = 0
        self.closed = False

    def _read(self, timeout):
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:                    # EIO: every process holding the terminal has gone
            data = b""
        if not data:
            self.closed = True
        self.output += data

    def expect(self, marker: bytes, timeout=10.0) -> bytes:
        """Wait for ``marker``; return what came before it (since the last
        expect) and move past it. Line ends are shown as the terminal sends
        them (``\\r\\n``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.output.find(marker, self.position)
            if found >= 0:
                before = bytes(self.output[self.position:found])
                self.position = found + len(marker)
                return before
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                raise AssertionError(f"no {marker!r} on the terminal; after the last match it shows "
                                     f"{bytes(self.output[self.position:])!r}")
            self._read(min(remaining, 0.2))

    def send_line(self, line: bytes):
        os.write(self.master, line + b"\n")

    def wait(self, timeout=10.0):
        """Exit status, reading (and keeping) the output until then."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(max(0.0, deadline - time.monotonic()))

    def close(self):
        stop_process(self.proc)
        os.close(self.master)


@pytest.fixture
def terminal():
    """Factory: ``terminal(argv, env)`` -> Terminal; each is stopped at teardown."""
    opened = []

    def open_terminal(argv, env):
        session = Terminal(argv, env)
        opened.append(session)
        return session

    yield open_terminal
    for session in opened:
        session.close()


# (typed line, what the terminal shows before the next prompt, with its \r\n
# turned into \n). Replies the server sends with \r\n in them (INFO) keep a \r.
INTERACTIVE = [
    (b"set 5 50", b"OK"),
    (b"get 5", b'"50"'),
    (b"incr 5", b"(integer) 51"),
    (b"get 999", b"(nil)"),
    (b"get nosuch", b"(error) " + KEY_ERROR.encode()),
    (b"set 5 x", b"(error) " + VALUE_ERROR.encode()),
    (b"put 5 1", b"(error) ERR Key already exists"),
    (b"set 6 -7 nx", b"OK"),
    (b"mget 5 999 6", b'1) "51"\n2) (nil)\n3) "-7"'),
    (b"exists 5 6 7", b"(integer) 2"),
    (b"del 6", b"(integer) 1"),
    (b"dbsize", b"(integer) 1"),
    (b"ping", b"PONG"),
    (b"info keyspace", b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r"),
]
INTERACTIVE_ERRORS = 3

# After HELLO 3 redis-cli shows RESP3 maps and nulls in their own way.
INTERACTIVE_RESP3 = [
    (b"mget 5 999", b'1) "51"\n2) (nil)'),
    (b"get 999", b"(nil)"),
    (b"config get save", b'1# "save" => ""'),
    (b"incrby 5 -1", b"(integer) 50"),
]


def test_redis_cli_interactive_session(server, terminal, tmp_path):
    prompt = f"127.0.0.1:{server.port}> ".encode()
    errors_before = error_replies(server)
    cli = terminal([require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(server.port)],
                   tool_env(tmp_path))
    # At start redis-cli connects and asks COMMAND DOCS; kvfast refuses it on purpose
    # (redis-cli then uses its built-in help). Nothing may appear before the prompt.
    assert cli.expect(prompt) == b""

    def run(line):
        cli.send_line(line)
        assert cli.expect(line + b"\r\n") == b""           # the terminal echoes what is typed
        return cli.expect(prompt).replace(b"\r\n", b"\n").removesuffix(b"\n")

    for line, shown in INTERACTIVE:
        assert (line, run(line)) == (line, shown)

    hello = run(b"hello 3")
    assert hello.startswith(b'1# "server" => "redis"\n2# "version" => '), hello
    assert b'3# "proto" => (integer) 3\n' in hello
    for line, shown in INTERACTIVE_RESP3:
        assert (line, run(line)) == (line, shown)

    cli.send_line(b"quit")
    assert cli.expect(b"quit\r\n") == b""
    assert cli.wait() == 0
    assert bytes(cli.output[cli.position:]).strip() == b""
    # The errors typed on purpose, plus the start-up COMMAND DOCS refusal.
    assert error_replies(server) == errors_before + INTERACTIVE_ERRORS + 1


def test_redis_cli_interactive_help(server, terminal, tmp_path):
    prompt = f"127.0.0.1:{server.port}> ".encode()
    cli = terminal([require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(server.port)],
                   tool_env(tmp_path))
    cli.expect(prompt)
    cli.send_line(b"help set")
    cli.expect(b"help set\r\n")
    shown = cli.expect(prompt)
    cli.send_line(b"quit")
    assert cli.wait() == 0
    assert b"SET" in shown and b"key value" in shown, shown


# ---- redis-benchmark ---------------------------------------------------------------

_snapshot_request = None


def snapshot(server, timeout=60.0):
    """Every key of redis-benchmark's keyspace (0..999,999) with its value, as a dict.

    Read with the native protocol (one ``get`` line per key, all pipelined on
    one connection, replies read while the requests are still being sent), which
    takes a fraction of a second where a million-key MGET through redis-py takes
    seconds.
    """
    global _snapshot_request
    if _snapshot_request is None:
        _snapshot_request = b"".join(b"get %d\n" % key for key in range(KEYSPACE))
    deadline = time.monotonic() + timeout
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sender = threading.Thread(target=sock.sendall, args=(_snapshot_request,), daemon=True)
        sender.start()
        chunks, lines = [], 0
        while lines < KEYSPACE:
            assert time.monotonic() < deadline, f"snapshot: {lines} of {KEYSPACE} replies"
            chunk = sock.recv(1 << 20)
            assert chunk, f"snapshot: connection closed after {lines} replies"
            chunks.append(chunk)
            lines += chunk.count(b"\n")
        sender.join(timeout)
    replies = b"".join(chunks).split(b"\n")
    assert len(replies) == KEYSPACE + 1 and replies[-1] == b"", "more replies than requests"
    return {key: int(reply) for key, reply in enumerate(replies[:-1]) if reply != b"Key not found"}


def run_benchmark(port, *arguments):
    """redis-benchmark's exit status and everything it printed (stdout and
    stderr together, the \\r-separated progress updates included)."""
    result = subprocess.run(
        [require_tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), *arguments],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=TOOL_TIMEOUT, text=True,
    )
    return result.returncode, result.stdout


def benchmark_lines(output):
    """The output split at \\r and \\n: progress updates and result lines."""
    return [line.strip() for line in re.split(r"[\r\n]", output) if line.strip()]


def assert_final_line(output, title):
    lines = benchmark_lines(output)
    assert lines, "redis-benchmark printed nothing"
    assert re.fullmatch(re.escape(title) + r": \d+(\.\d+)? requests per second, p50=\d+(\.\d+)? msec",
                        lines[-1]), output


def seed(server, count=20_000):
    """Some of the benchmark's keys set beforehand, so GET and SET NX meet both cases."""
    generator = random.Random(20240601)
    with redis.Redis(host=server.host, port=server.port, socket_timeout=30) as client:
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.set(f"{generator.randrange(KEYSPACE):012d}", generator.randrange(KEYSPACE))
        assert all(reply is True for reply in pipe.execute())


BENCHMARK_COMMANDS = {
    "set-nx": ["set", "__rand_int__", "__rand_int__", "nx"],
    "get": ["get", "__rand_int__"],
    "incr": ["incr", "__rand_int__"],
}


@pytest.mark.parametrize("name", list(BENCHMARK_COMMANDS))
def test_redis_benchmark(server, name):
    words = BENCHMARK_COMMANDS[name]
    seed(server)
    before = snapshot(server)
    with redis.Redis(host=server.host, port=server.port, socket_timeout=30) as client:
        stats_before = client.info("stats")

        status, output = run_benchmark(server.port, *BENCHMARK, *words)

        assert status == 0, output
        assert_final_line(output, " ".join(words))
        assert not re.search(r"err|warn", output, re.IGNORECASE), output
        # redis-benchmark does not print error replies unless told to (-e): the
        # server's own counter says there were none.
        stats = client.info("stats")
        assert stats["total_error_replies"] == stats_before["total_error_replies"]
        assert stats["protocol_errors"] == stats_before["protocol_errors"]
        assert stats["total_commands_processed"] - stats_before["total_commands_processed"] \
            >= BENCHMARK_REQUESTS
        size = client.dbsize()
        sample = client.mget(range(10_000))
        assert all(value is None or re.fullmatch(rb"-?\d+", value) for value in sample)

    after = snapshot(server)
    assert size == len(after) > 0
    assert all(int(sample[key]) == after[key] for key in range(10_000) if key in after)
    if name == "get":
        assert after == before
    elif name == "set-nx":
        # NX: what was there stays; new keys got a random value from the keyspace.
        assert all(after[key] == value for key, value in before.items())
        assert all(0 <= value < KEYSPACE for key, value in after.items() if key not in before)
        assert len(after) > len(before)
    else:
        # Every INCR added one to one key (a missing key counts as 0).
        assert sum(after.values()) - sum(before.values()) == BENCHMARK_REQUESTS
        assert all(after[key] >= value for key, value in before.items())
        assert all(value >= 1 for key, value in after.items() if key not in before)
