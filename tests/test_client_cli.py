"""Tests of kvfast.Client and the ``kvfast-client`` command against a real server.

The command is run as a subprocess: through a pseudo-terminal to check the
interactive session byte for byte as a user sees it, and with pipes for
scripted use. Every wait is bounded and every process is stopped at the end.
"""
import errno
import os
import select
import signal
import socket
import subprocess
import termios
import threading
import time

import pytest

import kvfast
from conftest import script_path
from kvfast.client import Client
from kvfast.errors import (
    AuthenticationError, ConnectionLostError, InvalidRequestError, KeyExistsError, KeyNotFoundError, KvfastError,
)
from kvfast.protocol_model import INT64_MAX, INT64_MIN

PROMPT = b"Enter request: "
WAIT_SECONDS = 10.0  # upper bound for any single wait on the client or the server

# The reference session, as seen on a terminal: what the program prints
# and what the terminal echoes of the typed lines.
TRANSCRIPT = """\
Connected to server
Enter request: put 1 2
Server replied: OK
Enter request: put 1 3
Server replied: Key already exists
Enter request: put 2 3
Server replied: OK
Enter request: get 1
Server replied: 2
Enter request: del 1
Server replied: OK
Enter request: get 1
Server replied: Key not found
Enter request: del 5
Server replied: Key not found
Enter request: Bye
Server replied: Goodbye
"""


def client_command(*args):
    """argv that runs the installed kvfast-client with ``args``."""
    return [script_path("kvfast-client"), *map(str, args)]


def run_client(*args, stdin=b"", env=None):
    """Run kvfast-client to completion with ``stdin`` piped in; return the CompletedProcess.

    ``env``: variables to set, over the current environment less KVFAST_PASSWORD.
    """
    environ = {name: value for name, value in os.environ.items() if name != "KVFAST_PASSWORD"}
    environ.update(env or {})
    return subprocess.run(client_command(*args), input=stdin, capture_output=True,
                          timeout=WAIT_SECONDS, env=environ)


def assert_one_error_line(result, message=None):
    """``result`` failed with status 1 and exactly one ``kvfast-client: error:`` line."""
    assert result.returncode == 1, result
    assert b"Traceback" not in result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kvfast-client: error: "), result.stderr
    if message is not None:
        assert lines[0] == f"kvfast-client: error: {message}"


class Terminal:
    """kvfast-client running on a pseudo-terminal, driven as a user would.

    stdin, stdout and stderr are all the terminal, as in a shell: everything
    the program writes and everything the terminal echoes lands in ``output``.
    """

    def __init__(self, argv):
        master, slave = os.openpty()
        # Pin the settings of an ordinary terminal instead of trusting the
        # defaults: line editing with echo, Enter read as "\n", and "\n"
        # written as "\r\n".
        attrs = termios.tcgetattr(slave)
        attrs[0] |= termios.ICRNL
        attrs[1] |= termios.OPOST | termios.ONLCR
        attrs[3] |= termios.ICANON | termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        try:
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                         start_new_session=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.output = bytearray()
        self.closed = False

    def type(self, keys: bytes):
        """Send keystrokes; Enter is ``\\r`` as a real keyboard sends it."""
        os.write(self.master, keys)

    def wait_for_prompt(self, number: int):
        """Read output until the ``number``-th prompt has been shown."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self.output.count(PROMPT) < number:
            if not self._read(deadline):
                raise AssertionError(f"prompt {number} never came; output so far {bytes(self.output)!r}")

    def wait_for_exit(self) -> int:
        """Read output until the program has exited and closed the terminal; return its status."""
        deadline = time.monotonic() + WAIT_SECONDS
        while self._read(deadline):
            pass
        return self.proc.wait(max(0.0, deadline - time.monotonic()))

    def _read(self, deadline) -> bool:
        """Append what arrives before ``deadline`` to ``output``; False at end of output."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no output within {WAIT_SECONDS}s; so far {bytes(self.output)!r}")
        try:
            data = os.read(self.master, 4096)
        except OSError as error:
            if error.errno != errno.EIO:  # Linux: every slave descriptor is closed
                raise
            data = b""
        self.closed = not data
        self.output += data
        return bool(data)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_SECONDS)
        os.close(self.master)


@pytest.fixture
def terminal():
    """Factory: ``terminal(*args)`` starts kvfast-client on a new pseudo-terminal."""
    started = []

    def start(*args):
        started.append(Terminal(client_command(*args)))
        return started[-1]

    yield start
    for term in started:
        term.close()


def read_stdout_until(proc, marker: bytes, collected: bytearray):
    """Read ``proc``'s stdout pipe into ``collected`` until it contains ``marker``."""
    deadline = time.monotonic() + WAIT_SECONDS
    fd = proc.stdout.fileno()
    while marker not in collected:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{marker!r} not seen; stdout so far {bytes(collected)!r}")
        data = os.read(fd, 4096)
        if not data:
            raise AssertionError(f"stdout ended before {marker!r}: {bytes(collected)!r}")
        collected += data


@pytest.fixture
def piped_client():
    """Factory: ``piped_client(*args)`` starts kvfast-client with pipes; killed at teardown."""
    started = []

    def start(*args):
        proc = subprocess.Popen(client_command(*args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT_SECONDS)


# --- interactive sessions -------------------------------------------------------


def test_terminal_session_matches_the_transcript_byte_for_byte(server, terminal):
    term = terminal(server.host, server.port)
    typed = [line.split(PROMPT.decode(), 1)[1]
             for line in TRANSCRIPT.splitlines() if line.startswith(PROMPT.decode())]
    for number, line in enumerate(typed, start=1):
        term.wait_for_prompt(number)
        term.type(line.encode() + b"\r")
    assert term.wait_for_exit() == 0
    # On the terminal, the program's "\n" and the echoed Enter both appear as "\r\n".
    assert bytes(term.output) == TRANSCRIPT.replace("\n", "\r\n").encode()


def test_terminal_end_of_input_sends_bye_on_a_new_line(server, terminal):
    term = terminal(server.host, server.port)
    term.wait_for_prompt(1)
    term.type(b"put 1 2\r")
    term.wait_for_prompt(2)
    term.type(b"\x04")  # Ctrl-D at the start of a line: end of input
    assert term.wait_for_exit() == 0
    assert bytes(term.output) == (b"Connected to server\r\n"
                                  b"Enter request: put 1 2\r\n"
                                  b"Server replied: OK\r\n"
                                  b"Enter request: \r\n"
                                  b"Server replied: Goodbye\r\n")


def test_piped_session(server):
    result = run_client(server.host, server.port, stdin=(
        b"put 1 2\nput 1 3\r\nget 1\ndel 1\nget 1\nfoo\nbye\nput 9 9\n"))
    assert result.returncode == 0
    assert result.stderr == b""
    assert result.stdout == (b"Connected to server\n"
                             b"Enter request: Server replied: OK\n"
                             b"Enter request: Server replied: Key already exists\n"
                             b"Enter request: Server replied: 2\n"
                             b"Enter request: Server replied: OK\n"
                             b"Enter request: Server replied: Key not found\n"
                             b"Enter request: Server replied: Invalid request: unknown command 'foo'\n"
                             b"Enter request: Server replied: Goodbye\n")
    with Client(server.host, server.port) as client:  # nothing after bye was sent
        with pytest.raises(KeyNotFoundError):
            client.get(9)


def test_end_of_piped_input_sends_bye(server):
    result = run_client(server.host, server.port, stdin=b"put 1 2\n")
    assert result.returncode == 0
    assert result.stderr == b""
    # "Goodbye" comes from the server, so Bye was really sent.
    assert result.stdout == (b"Connected to server\n"
                             b"Enter request: Server replied: OK\n"
                             b"Enter request: Server replied: Goodbye\n")


def test_blank_lines_are_not_sent(server):
    # The server does not answer blank lines: a client that sent one would wait
    # for a reply and print the next replies against the wrong prompts.
    result = run_client(server.host, server.port, stdin=b"\n   \n\t\nget 1\n \r\nbye\n")
    assert result.returncode == 0
    assert result.stderr == b""
    assert result.stdout == (b"Connected to server\n"
                             + PROMPT * 4 + b"Server replied: Key not found\n"
                             + PROMPT * 2 + b"Server replied: Goodbye\n")


# --- one-shot mode --------------------------------------------------------------


def test_one_shot_request_prints_the_bare_reply(server):
    with Client(server.host, server.port) as client:
        client.put(1, 2)
    result = run_client(server.host, server.port, "get", "1")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"2\n", b"")


def test_one_shot_error_replies_still_exit_zero(server):
    assert run_client(server.host, server.port, "get", "1").stdout == b"Key not found\n"
    result = run_client(server.host, server.port, "frob", "1")
    assert (result.returncode, result.stdout) == (0, b"Invalid request: unknown command 'frob'\n")


def test_one_shot_negative_numbers_are_request_words_not_options(server):
    assert run_client(server.host, server.port, "PUT", "-5", "-3").stdout == b"OK\n"
    with Client(server.host, server.port) as client:
        assert client.get(-5) == -3


def test_one_shot_blank_request_is_a_usage_error(server):
    assert_one_error_line(run_client(server.host, server.port, " "))


# --- failures -------------------------------------------------------------------


def test_connection_refused():
    # A socket bound but not listening keeps the port ours and refuses connections.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        for args in ((), ("get", "1")):
            result = run_client("127.0.0.1", port, *args)
            assert_one_error_line(
                result, f"cannot connect to 127.0.0.1:{port}: Connection refused")
            assert result.stdout == b""


def test_server_going_away_mid_session(server, piped_client):
    proc = piped_client(server.host, server.port)
    stdout = bytearray()
    proc.stdin.write(b"put 1 2\n")
    proc.stdin.flush()
    read_stdout_until(proc, b"Server replied: OK\n", stdout)
    server.kill()
    _, stderr = proc.communicate(b"get 1\n", timeout=WAIT_SECONDS)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, bytes(stdout), stderr)
    assert_one_error_line(result, "connection to server lost")


def test_ctrl_c_exits_130_quietly(server, piped_client):
    proc = piped_client(server.host, server.port)
    read_stdout_until(proc, PROMPT, bytearray())
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=WAIT_SECONDS)
    assert proc.returncode == 130
    assert stderr == b""


@pytest.mark.parametrize("args", [
    (),
    ("127.0.0.1",),
    ("127.0.0.1", "http"),
    ("127.0.0.1", "0"),
    ("127.0.0.1", "65536"),
    ("127.0.0.1", "-1"),
    ("127.0.0.1", "5000", "--timeout", "0"),
    ("--bogus", "127.0.0.1", "5000"),
])
def test_bad_arguments(args):
    result = run_client(*args)
    assert_one_error_line(result)
    assert result.stdout == b""


def test_help_documents_the_protocol():
    result = run_client("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for phrase in ("put K V", "get K", "del K", "Bye", "OK", "Key already exists",
                   "Key not found", "Goodbye", "Invalid request"):
        assert phrase in text


# --- kvfast.Client ----------------------------------------------------------------


def test_client_is_exported_by_the_package():
    assert kvfast.Client is Client


def test_client_put_get_delete(server):
    with Client(server.host, server.port) as client:
        assert client.put(1, 2) is None
        assert client.get(1) == 2
        with pytest.raises(KeyExistsError):
            client.put(1, 3)
        assert client.get(1) == 2
        assert client.delete(1) is None
        with pytest.raises(KeyNotFoundError):
            client.get(1)
        with pytest.raises(KeyNotFoundError):
            client.delete(1)
        client.put(INT64_MIN, INT64_MAX)
        assert client.get(INT64_MIN) == INT64_MAX


def test_client_errors_are_key_errors():
    assert issubclass(KeyExistsError, KeyError) and issubclass(KeyNotFoundError, KeyError)


@pytest.mark.parametrize("bad, error", [
    (True, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError),
    (INT64_MAX + 1, ValueError), (INT64_MIN - 1, ValueError),
])
def test_client_checks_keys_and_values_before_sending(server, bad, error):
    with Client(server.host, server.port) as client:
        with pytest.raises(error):
            client.put(bad, 1)
        with pytest.raises(error):
            client.put(1, bad)
        with pytest.raises(error):
            client.get(bad)
        with pytest.raises(error):
            client.delete(bad)
        # Nothing was sent, so the connection is still in step and the store untouched.
        with pytest.raises(KeyNotFoundError):
            client.get(1)


def test_client_raw_request(server):
    with Client(server.host, server.port) as client:
        assert client.request("put 1 2") == "OK"
        assert client.request("GET 1") == "2"
        assert client.request("get x") == "Invalid request: key is not an integer"
        for line in ("", " \t", "\r", "get 1\nget 2"):
            with pytest.raises(ValueError):
                client.request(line)
        assert client.request("bye") == "Goodbye"


def test_client_close_is_idempotent_and_final(server):
    client = Client(server.host, server.port)
    client.close()
    client.close()
    with pytest.raises(ValueError):
        client.get(1)


class ScriptedServer:
    """A one-connection fake server on 127.0.0.1 that answers each request line
    with the next of ``replies`` (raw bytes), then closes; ``received`` holds
    the request bytes it read. For replies a real server never sends."""

    def __init__(self, replies):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT_SECONDS)
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, args=(replies,), daemon=True)
        self.thread.start()

    def _serve(self, replies):
        connection, _ = self.listener.accept()
        with connection, connection.makefile("rb") as requests:
            connection.settimeout(WAIT_SECONDS)
            for reply in replies:
                line = requests.readline()
                if not line:
                    return
                self.received += line
                connection.sendall(reply)

    def close(self):
        self.thread.join(WAIT_SECONDS)
        self.listener.close()


@pytest.fixture
def scripted_server():
    """Factory: ``scripted_server(replies)`` -> ScriptedServer, closed at teardown."""
    started = []

    def start(replies):
        started.append(ScriptedServer(replies))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def test_client_maps_invalid_request_replies(scripted_server):
    fake = scripted_server([b"Invalid request: something odd\n"])
    with Client("127.0.0.1", fake.port) as client:
        with pytest.raises(InvalidRequestError) as raised:
            client.put(1, 2)
    assert raised.value.reason == "something odd"


def test_client_rejects_unexpected_replies(scripted_server):
    fake = scripted_server([b"banana\n"])
    with Client("127.0.0.1", fake.port) as client:
        with pytest.raises(KvfastError):
            client.get(1)


def test_client_reports_a_reply_cut_short(scripted_server):
    fake = scripted_server([b"O"])
    with Client("127.0.0.1", fake.port) as client:
        with pytest.raises(ConnectionLostError):
            client.put(1, 2)


def test_client_says_bye_on_close(scripted_server):
    fake = scripted_server([b"OK\n", b"Goodbye\n"])
    with Client("127.0.0.1", fake.port) as client:
        client.put(1, 2)
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"put 1 2\nbye\n"


def test_client_does_not_say_bye_twice(scripted_server):
    fake = scripted_server([b"Goodbye\n", b"Goodbye\n"])
    with Client("127.0.0.1", fake.port) as client:
        assert client.request("Bye") == "Goodbye"
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"Bye\n"


# --- passwords (against a scripted server: see the end-to-end tests for the real one)


def test_authentication_error_is_exported():
    assert kvfast.AuthenticationError is AuthenticationError
    assert issubclass(AuthenticationError, KvfastError)


def test_client_sends_auth_first(scripted_server):
    fake = scripted_server([b"OK\n", b"OK\n", b"Goodbye\n"])
    with Client("127.0.0.1", fake.port, password="s3cret pass") as client:
        client.put(1, 2)
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth s3cret pass\nput 1 2\nbye\n"


def test_client_without_password_sends_no_auth(scripted_server):
    fake = scripted_server([b"OK\n", b"Goodbye\n"])
    with Client("127.0.0.1", fake.port) as client:
        client.put(1, 2)
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"put 1 2\nbye\n"


@pytest.mark.parametrize("reply", [b"Invalid password", b"Invalid request: unknown command 'auth'"])
def test_client_wrong_password(scripted_server, reply):
    fake = scripted_server([reply + b"\n"])
    with pytest.raises(AuthenticationError) as raised:
        Client("127.0.0.1", fake.port, password="wrong")
    assert raised.value.reply == str(raised.value) == reply.decode()
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth wrong\n"      # closed without a bye


def test_client_connection_lost_during_auth(scripted_server):
    fake = scripted_server([b""])
    with pytest.raises(ConnectionLostError):
        Client("127.0.0.1", fake.port, password="pw")


@pytest.mark.parametrize("password, error", [("", ValueError), ("a\nb", ValueError),
                                             ("a\rb", ValueError), (b"pw", TypeError)])
def test_client_checks_the_password_before_connecting(password, error):
    with pytest.raises(error):
        Client("127.0.0.1", 1, password=password)     # nothing listens on port 1


def test_cli_password_flag(scripted_server):
    fake = scripted_server([b"OK\n", b"2\n", b"Goodbye\n"])
    result = run_client("--password", "pw", "127.0.0.1", fake.port, "get", "1",
                        env={"KVFAST_PASSWORD": "from env"})
    assert (result.returncode, result.stdout, result.stderr) == (0, b"2\n", b"")
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth pw\nget 1\nbye\n"


def test_cli_password_from_environment(scripted_server):
    fake = scripted_server([b"OK\n", b"2\n", b"Goodbye\n"])
    result = run_client("127.0.0.1", fake.port, "get", "1", env={"KVFAST_PASSWORD": "from env"})
    assert (result.returncode, result.stdout, result.stderr) == (0, b"2\n", b"")
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth from env\nget 1\nbye\n"


def test_cli_wrong_password(scripted_server):
    for args, env in ((["--password", "wrong"], None), ([], {"KVFAST_PASSWORD": "wrong"})):
        fake = scripted_server([b"Invalid password\n"])
        result = run_client("127.0.0.1", fake.port, *args, env=env)
        assert_one_error_line(result, "authentication failed: Invalid password")
        assert result.stdout == b""


@pytest.mark.parametrize("args, env, message", [
    (["--password", ""], None, "--password: the password must be one non-empty line"),
    ([], {"KVFAST_PASSWORD": ""}, "KVFAST_PASSWORD: the password must be one non-empty line"),
    ([], {"KVFAST_PASSWORD": "a\nb"}, "KVFAST_PASSWORD: the password must be one non-empty line"),
])
def test_cli_unusable_password(args, env, message):
    result = run_client("127.0.0.1", "5000", *args, env=env)
    assert_one_error_line(result, message)


def test_cli_session_with_password_looks_the_same(scripted_server):
    fake = scripted_server([b"OK\n", b"OK\n", b"Goodbye\n"])
    result = run_client("127.0.0.1", fake.port, stdin=b"put 1 2\nbye\n", env={"KVFAST_PASSWORD": "pw"})
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == (b"Connected to server\n"
                             b"Enter request: Server replied: OK\n"
                             b"Enter request: Server replied: Goodbye\n")
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth pw\nput 1 2\nbye\n"


def test_cli_typed_auth_is_sent_as_a_request(scripted_server):
    fake = scripted_server([b"Invalid password\n", b"OK\n", b"Authentication required\n",
                            b"Goodbye\n"])
    result = run_client("127.0.0.1", fake.port, stdin=b"auth nope\nauth pw\nget 1\n")
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == (b"Connected to server\n"
                             b"Enter request: Server replied: Invalid password\n"
                             b"Enter request: Server replied: OK\n"
                             b"Enter request: Server replied: Authentication required\n"
                             b"Enter request: Server replied: Goodbye\n")
    fake.thread.join(WAIT_SECONDS)
    assert bytes(fake.received) == b"auth nope\nauth pw\nget 1\nBye\n"


def test_cli_help_documents_passwords():
    text = run_client("--help").stdout.decode()
    for phrase in ("--password", "KVFAST_PASSWORD", "auth P", "Invalid password"):
        assert phrase in text
