"""The compiled server against the pure-Python protocol model (hypothesis).

Random request streams (valid requests, near-misses and raw garbage) are sent to
one real server in randomly split pieces; every reply must equal what
:func:`kvfast.protocol_model.answer` says, line for line.
"""
import socket
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from kvfast.protocol_model import answer

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

numbers = st.one_of(
    st.integers(-5, 5), st.sampled_from([INT64_MIN, INT64_MAX, 2**63, -2**63 - 1, 10**20]),
    st.integers(INT64_MIN, INT64_MAX),
).map(lambda n: str(n).encode())
number_words = st.one_of(
    numbers, numbers.map(lambda w: b"+" + w.lstrip(b"-")), numbers.map(lambda w: b"000" + w),
    st.sampled_from([b"x", b"1.0", b"-", b"+", b"", b"0x1", b"1e3", b"\x00", b"\xff"]),
)
commands = st.sampled_from([b"put", b"PUT", b"Get", b"get", b"del", b"DEL", b"set", b"Incr", b"incr",
                            b"bye", b"foo", b"g\x00t"])
blanks = st.sampled_from([b" ", b"\t", b"  \t "])


@st.composite
def request_lines(draw):
    if draw(st.integers(0, 9)) == 0:                        # raw garbage, never a newline
        return draw(st.binary(max_size=60)).replace(b"\n", b"").lstrip(b"*")   # "*": a RESP request
    words = [draw(commands)] + draw(st.lists(number_words, max_size=3))
    line = b""
    for word in words:
        line += draw(blanks) + word if line or draw(st.booleans()) else word
    return line + draw(st.sampled_from([b"", b"\r", b"  "]))


def expected_replies(lines, store):
    """Replies the model gives for ``lines`` and whether the server closes after them."""
    replies = []
    for line in lines:
        reply, close = answer(store, line)
        if reply is not None:
            replies.append(reply)
        if close:
            return replies, True
    return replies, False


def read_replies(sock, count, closes, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if closes:
        assert sock.recv(65536) == b"", "server should close after bye"
    return data.split(b"\n")[:-1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(request_lines(), min_size=1, max_size=25), data=st.data())
def test_replies_match_the_model(server, lines, data):
    # One store for the whole run, so the model starts from what the server holds:
    # clear the keys this example may touch first.
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    with socket.create_connection(server.address, timeout=10) as sock:
        model = snapshot(sock, lines)
        replies, closes = expected_replies(lines, model)
        previous = 0
        for cut in cuts + [len(stream)]:
            if cut > previous:
                try:
                    sock.sendall(stream[previous:cut])
                except (BrokenPipeError, ConnectionResetError):
                    assert closes
                    break
                time.sleep(0.001)    # paces the pieces so the server reads them apart: part of the test
            previous = cut
        assert read_replies(sock, len(replies), closes) == replies


def snapshot(sock, lines):
    """The server's current values of every integer key the lines mention."""
    keys = set()
    for line in lines:
        for word in line.split():
            try:
                key = int(word)
            except ValueError:
                continue
            if INT64_MIN <= key <= INT64_MAX:
                keys.add(key)
    if not keys:
        return {}
    sock.sendall(b"".join(b"get %d\n" % key for key in keys))
    values = read_replies(sock, len(keys), False)
    return {key: int(value) for key, value in zip(keys, values) if value != b"Key not found"}
