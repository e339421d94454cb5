"""Fuzz both protocols' parsers and dispatchers against one real kvfast-server.

Each example is a byte stream sent on one fresh connection, cut into pieces at
random points (sometimes with a pause between pieces, so the server really reads
them separately): raw bytes, a soup of protocol tokens, or a mix of native lines
and RESP multibulk requests (valid ones, and ones with broken headers, lying
lengths or cut short). Everything the server replies must equal, byte for byte,
what the models say (``tests/resp_model.py``, which uses
``kvfast.protocol_model`` for native lines), including whether the server
closes the connection. After every example the server must still be running
and answer FLUSHALL and PING (which also resets the store for the next one).

CI runs a few hundred examples (well under 30 s); for a long run:

    KVFAST_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz.py -q
"""
import os
import select
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ServerProcess
from resp_model import Unmodelled, answer_stream

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
EXAMPLES = int(os.environ.get("KVFAST_FUZZ_EXAMPLES", "0"))
REPLY_TIMEOUT = 10.0
RESET = b"*1\r\n$8\r\nFLUSHALL\r\n*1\r\n$4\r\nPING\r\n"
RESET_REPLY = b"+OK\r\n+PONG\r\n"
HELLO3 = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n"


def fuzz_settings(default_examples):
    return settings(
        max_examples=EXAMPLES or default_examples, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )


# ---- the server ---------------------------------------------------------------------

class FuzzTarget:
    """One kvfast-server for the module, and a control connection that resets
    its store and checks it is alive between examples."""

    def __init__(self):
        self.server = ServerProcess()
        self.control = self.server.connect()

    def reset(self):
        assert self.server.proc.poll() is None, f"kvfast-server died: status {self.server.proc.returncode}"
        self.control.sendall(RESET)
        assert read_exactly(self.control, len(RESET_REPLY)) == RESET_REPLY, "server does not answer PING"

    def close(self):
        self.control.close()
        self.server.close()


@pytest.fixture(scope="module")
def target():
    target = FuzzTarget()
    yield target
    alive = target.server.proc.poll() is None
    target.close()
    assert alive, "kvfast-server died during the fuzz run"


def read_exactly(sock, count, timeout=REPLY_TIMEOUT):
    """Up to ``count`` bytes: fewer only if the peer closes (or resets) first."""
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < count:
        try:
            chunk = sock.recv(max(count - len(data), 65536))
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_to_eof(sock, timeout=REPLY_TIMEOUT):
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError("the server did not close the connection")
    return bytes(data)


def check_stream(target, data, cuts, pause, resp3):
    """Send ``data`` in pieces and hold every reply byte to the model."""
    target.reset()
    try:
        expected, closes, pending = answer_stream({}, data, resp3)
        modelled = True
    except Unmodelled:               # e.g. native "stats": check only that nothing breaks
        modelled = False
    with socket.create_connection(target.server.address, timeout=REPLY_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if resp3:
            sock.sendall(HELLO3)
            hello = bytearray()
            while not hello.endswith(b"+PONG\r\n"):
                chunk = read_exactly(sock, 1)
                assert chunk, f"closed during HELLO 3: {bytes(hello)!r}"
                hello += chunk
            assert hello.startswith(b"%7\r\n")
        previous = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            if cut <= previous:
                continue
            try:
                sock.sendall(data[previous:cut])
            except (BrokenPipeError, ConnectionResetError):
                assert not modelled or closes, f"server closed the connection early on {data!r}"
                break
            previous = cut
            if pause and cut < len(data):
                time.sleep(0.001)        # paces the pieces so the server reads them apart: part of the test
        if not modelled:
            return
        received = read_exactly(sock, len(expected))
        assert received == expected, f"stream {data!r} (resp3={resp3}, cuts {cuts})"
        if closes:
            rest = read_to_eof(sock)
            assert rest == b"", f"bytes after the last reply {rest!r} on stream {data!r}"
            return
        # Nothing more may come. A complete stream can prove it with one more request.
        if not pending:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            rest = read_exactly(sock, len(b"+PONG\r\n"))
            assert rest == b"+PONG\r\n", f"extra bytes {rest!r} after replies to {data!r}"
        else:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                extra = sock.recv(65536)
                raise AssertionError(f"extra bytes {extra!r} while a request is incomplete, on {data!r}")


# ---- strategies ---------------------------------------------------------------------

keys = st.one_of(st.integers(-3, 3), st.sampled_from([0, INT64_MIN, INT64_MAX]))
integers = st.one_of(
    st.integers(-5, 5), st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1]),
    st.integers(INT64_MIN, INT64_MAX),
)


def spell(number, style):
    sign = "-" if number < 0 else "+" if style == "+" else ""
    zeros = style if style != "+" else ""
    return (sign + zeros + str(abs(number))).encode()


def spelled(numbers):
    """Decimal spellings of integers, sometimes with a + or leading zeros."""
    return st.builds(spell, numbers, st.sampled_from(["", "", "+", "0", "000000000000000000000"]))


not_integers = st.sampled_from([
    b"", b"x", b"1.5", b"+", b"-", b"+-1", b" 1", b"1 ", b"0x10", b"1e3", b"\x00", b"\xff", b"\r\n",
    b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999999", b"nx", b"XX",
    b"sync", b"ASYNC", b"1\n",
])
key_words = st.one_of(spelled(keys), spelled(keys), not_integers)
value_words = st.one_of(spelled(integers), not_integers)

RESP_COMMANDS = [b"GET", b"SET", b"SETNX", b"PUT", b"DEL", b"EXISTS", b"INCR", b"DECR", b"INCRBY",
                 b"DECRBY", b"MGET", b"DBSIZE", b"PING", b"ECHO", b"FLUSHALL", b"QUIT", b"BYE"]
command_names = st.one_of(
    st.sampled_from(RESP_COMMANDS),
    st.sampled_from(RESP_COMMANDS).map(bytes.lower),
    st.sampled_from(RESP_COMMANDS).map(lambda name: name[:1] + name[1:].lower()),
    st.sampled_from([b"foo", b"", b"GETT", b"g\x00t", b"g\r\nt", b"x" * 200, b"sets", b"stats", b"bye "]),
)


@st.composite
def resp_arguments(draw):
    """A command and arguments shaped for it (usually the right number)."""
    name = draw(command_names)
    lower = name.lower()
    if lower in (b"get", b"incr", b"decr"):
        args = [draw(key_words)]
    elif lower in (b"set", b"setnx", b"put", b"incrby", b"decrby"):
        args = [draw(key_words), draw(value_words)]
        if lower == b"set":
            args += draw(st.lists(st.sampled_from([b"NX", b"xx", b"Nx", b"EX", b"10", b"GET"]), max_size=2))
    elif lower in (b"del", b"exists", b"mget"):
        args = draw(st.lists(key_words, min_size=1, max_size=4))
    elif lower in (b"ping", b"echo"):
        args = draw(st.lists(st.binary(max_size=20), max_size=1 if lower == b"echo" else 2))
    elif lower == b"flushall":
        args = draw(st.lists(st.sampled_from([b"sync", b"ASYNC", b"now"]), max_size=1))
    else:
        args = draw(st.lists(st.one_of(key_words, st.binary(max_size=150)), max_size=5))
    if draw(st.integers(0, 9)) == 0:                 # the wrong number of arguments
        args = args[:-1] if args and draw(st.booleans()) else args + [draw(value_words)]
    return [name] + args


def encode(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


BAD_COUNT_HEADERS = [b"*x\r\n", b"*\r\n", b"*1\n", b"*1\r", b"* 1\r\n", b"*1x\r\n", b"*+1\r\n",
                     b"*1234567890123456789\r\n", b"*2000000\r\n", b"*-\r\n", b"*--1\r\n"]
EMPTY_REQUESTS = [b"*0\r\n", b"*-1\r\n", b"*-0\r\n", b"*000\r\n", b"*-999999999999999999\r\n"]
BAD_BULK_HEADERS = [b"$x\r\n", b"$-1\r\n", b"$\r\n", b"$600000000\r\n", b"$2000000\r\n", b"$1048570\r\n",
                    b"$1234567890123456789\r\n", b":1\r\n", b"+OK\r\n", b"\r\n", b"\n", b"$1\n",
                    b"*1\r\n", b"$-0\r\n", b"$03\r\n"]


@st.composite
def resp_requests(draw, broken=True):
    """A RESP request: well-formed, or (if ``broken``) sometimes broken in one of a few known ways."""
    args = draw(resp_arguments())
    shape = draw(st.integers(0, 49) if broken else st.just(49))     # 0-5: broken (about one in eight)
    if shape == 0:
        return draw(st.sampled_from(BAD_COUNT_HEADERS))
    if shape == 1:
        return draw(st.sampled_from(EMPTY_REQUESTS))
    request = encode(args)
    if shape == 2:                                   # one bulk header replaced
        index = draw(st.integers(0, len(args) - 1))
        head = encode(args[:index])[len(b"*%d\r\n" % index):]
        tail = encode(args[index + 1:])[len(b"*%d\r\n" % (len(args) - index - 1)):]
        return (b"*%d\r\n" % len(args) + head + draw(st.sampled_from(BAD_BULK_HEADERS))
                + args[index] + b"\r\n" + tail)
    if shape == 3:                                   # a bulk length that lies
        index = draw(st.integers(0, len(args) - 1))
        delta = draw(st.sampled_from([-2, -1, 1, 2]))
        head = encode(args[:index])[len(b"*%d\r\n" % index):]
        tail = encode(args[index + 1:])[len(b"*%d\r\n" % (len(args) - index - 1)):]
        return (b"*%d\r\n" % len(args) + head + b"$%d\r\n" % max(0, len(args[index]) + delta)
                + args[index] + b"\r\n" + tail)
    if shape == 4:                                   # the count lies
        return b"*%d\r\n" % (len(args) + draw(st.sampled_from([-1, 1, 2]))) + request.split(b"\r\n", 1)[1]
    if shape == 5:                                   # one byte flipped, dropped or inserted
        at = draw(st.integers(0, len(request) - 1))
        byte = bytes([draw(st.sampled_from(b"*$\r\n-0129x "))])
        return draw(st.sampled_from([request[:at] + byte + request[at + 1:], request[:at] + request[at + 1:],
                                     request[:at] + byte + request[at:]]))
    return request


native_commands = st.sampled_from([b"put", b"PUT", b"get", b"Get", b"del", b"set", b"incr", b"INCR",
                                   b"bye", b"foo", b"auth", b"g\x00t", b"\xff"])
blanks = st.sampled_from([b" ", b"\t", b"  \t "])


@st.composite
def native_lines(draw):
    """A native request line with its ending (never starting with "*")."""
    if draw(st.integers(0, 9)) == 0:
        line = draw(st.binary(max_size=40)).replace(b"\n", b"")
    else:
        words = [draw(native_commands)] + draw(st.lists(st.one_of(key_words, value_words), max_size=3))
        words = [word.replace(b"\n", b"") for word in words]
        line = b""
        for word in words:
            line += draw(blanks) + word if line or draw(st.booleans()) else word
    return line.lstrip(b"*") + draw(st.sampled_from([b"\n", b"\r\n", b" \n", b"\n"]))


@st.composite
def request_streams(draw):
    items = draw(st.lists(st.one_of(resp_requests(), resp_requests(), native_lines()), min_size=1, max_size=15))
    stream = b"".join(items)
    if draw(st.integers(0, 5)) == 0:                 # cut short: the last request incomplete
        stream = stream[:draw(st.integers(0, len(stream)))]
    return stream


big_echo = st.tuples(st.sampled_from([b"ECHO", b"echo", b"PING"]), st.integers(1000, 40000), st.binary(
    min_size=1, max_size=3)).map(lambda t: encode([t[0], (t[2] * t[1])[:t[1]]]))


def keeps_open(request):
    """Whether the server keeps the connection open after this request alone
    (not bye, QUIT, BYE: a large stream should not end early)."""
    try:
        return not answer_stream({}, request)[1]
    except Unmodelled:
        return False


@st.composite
def large_streams(draw):
    """Tens of KiB of well-formed requests (some of them long), so that requests
    straddle the server's 16 KiB reads even when sent in one piece."""
    items = draw(st.lists(st.one_of(resp_requests(broken=False), native_lines(), big_echo).filter(keeps_open),
                          min_size=20, max_size=300))
    stream = b"".join(items)
    if draw(st.booleans()):
        stream = stream[:draw(st.integers(0, len(stream)))]
    return stream


TOKENS = [b"*", b"$", b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"3", b"4", b"-", b"9" * 19, b" ", b"\t",
          b"GET", b"set", b"PING", b"Echo", b"del", b"incr", b"put", b"bye", b"quit", b"1048577", b"\x00"]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)
raw_bytes = st.one_of(st.binary(max_size=300), token_soup,
                      st.tuples(st.sampled_from([b"*", b"*1\r\n", b"*2\r\n$3\r\n"]), st.binary(max_size=100))
                      .map(b"".join))


def cut_points(data):
    return st.lists(st.integers(0, max(len(data) - 1, 0)), max_size=6)


# ---- the tests ----------------------------------------------------------------------

@fuzz_settings(300)
@given(stream=request_streams(), data=st.data(), pause=st.booleans(), resp3=st.booleans())
def test_request_streams_match_the_models(target, stream, data, pause, resp3):
    check_stream(target, stream, data.draw(cut_points(stream)), pause, resp3)


@fuzz_settings(300)
@given(stream=raw_bytes, data=st.data(), pause=st.booleans(), resp3=st.booleans())
def test_random_bytes_match_the_models(target, stream, data, pause, resp3):
    check_stream(target, stream, data.draw(cut_points(stream)), pause, resp3)


@fuzz_settings(30)
@given(stream=large_streams(), data=st.data(), pause=st.booleans(), resp3=st.booleans())
def test_large_streams_match_the_models(target, stream, data, pause, resp3):
    check_stream(target, stream, data.draw(cut_points(stream)), pause, resp3)


def test_known_streams(target):
    """Shapes worth pinning whatever hypothesis draws (each checked as above)."""
    for stream in [
        b"*2\r\n$3\r\nSET\r\n$1\r\n1\r\n",                     # SET with too few arguments
        b"*3\r\n$3\r\nSET\r\n$1\r\n1\r\n$1\r\n2\r\nget 1\r\n*2\r\n$3\r\nGET\r\n$1\r\n1\r\n",
        b"*1\r\n$4\r\nPING\r\n*x\r\nget 1\n",                  # protocol error, then ignored
        b"*2\r\n$4\r\nECHO\r\n:1\r\n",                         # expected '$'
        b"*2\r\n$4\r\nECHO\r\n\r\n\r\n",                       # expected '$', got ' '
        b"*1\r\n$600000000\r\n",                                # over proto-max-bulk-len: refused at the header
        b"*1\r\n$2000000\r\n",                                  # large: waits for its bytes
        b"PING\r\nping hello\nECHO \"a\\x41\\n\" 'b c'\r\nGET 1\r\nget 1\n",   # inline RESP and native lines
        b"ECHO \"unbalanced\r\nget 1\n",                       # inline protocol error, then close
        b"*1\r\n$-0\r\n\r\n",                                   # a bulk length has no sign
        b"*0\r\n*-1\r\nput 1 2\nget 1\n",
        b"*3\r\n$4\r\nINCR\r\n$1\r\n1\r\n$1\r\n2\r\n",          # wrong arity
        b"*3\r\n$6\r\nDECRBY\r\n$1\r\n1\r\n$20\r\n-9223372036854775808\r\n",
        b"*2\r\n$3\r\nfoo\r\n$3\r\na\r\nb\r\n",                  # CR LF in an echoed argument
        b"put 1 2\nbye\nget 1\n",
        b"*1\r\n$4\r\nQUIT\r\nget 1\n",
    ]:
        for resp3 in (False, True):
            check_stream(target, stream, [], False, resp3)
            check_stream(target, stream, list(range(len(stream))), True, resp3)
