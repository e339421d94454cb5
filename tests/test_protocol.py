"""The native protocol over real sockets against a real kvfast-server process."""
import os
import select
import socket
import threading
import time

import pytest

from conftest import read_until_closed, read_line, request
from helpers import wait_for

MAX_LINE = 64 * 1024
NEWLINE = b"\n"

SESSION = [
    (b"put 1 2", b"OK"),
    (b"put 1 3", b"Key already exists"),
    (b"put 2 3", b"OK"),
    (b"get 1", b"2"),
    (b"del 1", b"OK"),
    (b"get 1", b"Key not found"),
    (b"del 5", b"Key not found"),
]


def recv_exactly_lines(sock, count, timeout=20.0):
    """Read ``count`` reply lines (however the bytes arrive); returns them."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        assert time.monotonic() < deadline, "timed out waiting for replies"
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {bytes(data).count(NEWLINE)} of {count} replies"
        data += chunk
    lines = bytes(data).split(b"\n")
    assert lines[count] == b"", "more replies than requests"
    return lines[:count]


def test_specification_session(server):
    with server.connect() as sock:
        for line, reply in SESSION:
            assert request(sock, line) == reply
        assert request(sock, b"Bye") == b"Goodbye"
        assert read_until_closed(sock) == b""


def test_store_is_shared_between_connections(server):
    with server.connect() as writer, server.connect() as reader:
        assert request(writer, b"put 10 100") == b"OK"
        assert request(reader, b"get 10") == b"100"
        assert request(reader, b"put 10 7") == b"Key already exists"
        assert request(reader, b"del 10") == b"OK"
        assert request(writer, b"get 10") == b"Key not found"


@pytest.mark.parametrize("key", [0, -1, 1, -2**63, 2**63 - 1])
def test_extreme_keys_and_values(server, key):
    with server.connect() as sock:
        value = -key - 1
        assert request(sock, b"put %d %d" % (key, value)) == b"OK"
        assert request(sock, b"get %d" % key) == b"%d" % value
        assert request(sock, b"del %d" % key) == b"OK"
        assert request(sock, b"get %d" % key) == b"Key not found"


def test_integer_syntax(server):
    with server.connect() as sock:
        assert request(sock, b"put +007 -0042") == b"OK"
        assert request(sock, b"get 7") == b"-42"
        assert request(sock, b"get 0000000000000000000000000007") == b"-42"
        assert request(sock, b"put -0 5") == b"OK"
        assert request(sock, b"get 0") == b"5"
        assert request(sock, b"put 9223372036854775807 -9223372036854775808") == b"OK"
        assert request(sock, b"get 9223372036854775807") == b"-9223372036854775808"


def test_case_blanks_and_crlf(server):
    with server.connect() as sock:
        assert request(sock, b"PUT 1 2\r") == b"OK"
        assert request(sock, b"\t  Get \t 1  \t") == b"2"
        assert request(sock, b"gEt 1\r") == b"2"
        assert request(sock, b"DEL 1") == b"OK"
        sock.sendall(b"\n   \n\t\r\nget 1\n")          # blank lines get no reply
        assert read_line(sock) == b"Key not found"
        assert request(sock, b"bYE") == b"Goodbye"


def test_every_split_point_of_a_request_stream(server):
    """Each request stream sent in two pieces, split at every byte; replies are
    the same as when sent whole."""
    stream = b"put 5 55\r\nGET 5\nput 5 6\n\ndel 5\nget 5\nbye\n"
    expected = b"OK\n55\nKey already exists\nOK\nKey not found\nGoodbye\n"
    for split in range(1, len(stream)):
        with server.connect() as sock:
            sock.sendall(stream[:split])
            time.sleep(0.005)                # paces the pieces so the server reads them apart: part of the test
            sock.sendall(stream[split:])
            assert read_until_closed(sock) == expected, f"split at {split}"


def test_one_byte_at_a_time(server):
    stream = b"put -9223372036854775808 9223372036854775807\r\nget -9223372036854775808\nbye\n"
    with server.connect() as sock:
        for index in range(len(stream)):
            sock.sendall(stream[index:index + 1])
            time.sleep(0.001)                # paces the bytes so the server reads them apart: part of the test
        assert read_until_closed(sock) == b"OK\n9223372036854775807\nGoodbye\n"


def test_pipelined_requests_in_one_write(server):
    count = 20_000
    puts = b"".join(b"put %d %d\n" % (key, key * 3) for key in range(count))
    gets = b"".join(b"get %d\n" % key for key in range(count))
    with server.connect() as sock:
        sock.sendall(puts + gets)
        replies = recv_exactly_lines(sock, 2 * count)
    assert replies[:count] == [b"OK"] * count
    assert replies[count:] == [b"%d" % (key * 3) for key in range(count)]


def test_requests_after_bye_are_ignored(server):
    with server.connect() as sock:
        sock.sendall(b"put 1 1\nbye\nput 2 2\n")
        assert read_until_closed(sock) == b"OK\nGoodbye\n"
    with server.connect() as sock:
        assert request(sock, b"get 2") == b"Key not found"


ERRORS = [
    (b"foo", b"Invalid request: unknown command 'foo'"),
    (b"foo 1 2 3", b"Invalid request: unknown command 'foo'"),
    (b"putt 1 2", b"Invalid request: unknown command 'putt'"),
    (b"put", b"Invalid request: usage: put <key> <value> [ex <seconds>]"),
    (b"put 1", b"Invalid request: usage: put <key> <value> [ex <seconds>]"),
    (b"put 1 2 3", b"Invalid request: usage: put <key> <value> [ex <seconds>]"),
    (b"get", b"Invalid request: usage: get <key>"),
    (b"get 1 2", b"Invalid request: usage: get <key>"),
    (b"del", b"Invalid request: usage: del <key>"),
    (b"del 1 2", b"Invalid request: usage: del <key>"),
    (b"bye now", b"Invalid request: usage: bye"),
    (b"get x", b"Invalid request: key is not an integer"),
    (b"get 1.5", b"Invalid request: key is not an integer"),
    (b"get 0x10", b"Invalid request: key is not an integer"),
    (b"get -", b"Invalid request: key is not an integer"),
    (b"get +", b"Invalid request: key is not an integer"),
    (b"get --1", b"Invalid request: key is not an integer"),
    (b"get 1e3", b"Invalid request: key is not an integer"),
    (b"put x 1", b"Invalid request: key is not an integer"),
    (b"put 1 x", b"Invalid request: value is not an integer"),
    (b"put 1 99999999999999999999x", b"Invalid request: value is not an integer"),
    (b"get 9223372036854775808", b"Invalid request: integer out of range"),
    (b"get -9223372036854775809", b"Invalid request: integer out of range"),
    (b"put 1 9223372036854775808", b"Invalid request: integer out of range"),
    (b"put 1 -99999999999999999999999", b"Invalid request: integer out of range"),
    (b"del 18446744073709551616", b"Invalid request: integer out of range"),
    (b"get \x00", b"Invalid request: key is not an integer"),
    (b"\x00", b"Invalid request: unknown command '\\x00'"),
    (b"g\x00et 1", b"Invalid request: unknown command 'g\\x00et'"),
    (b"\xff\xfe\x80garbage\x7f", b"Invalid request: unknown command '\\xff\\xfe\\x80garbage\\x7f'"),
    (b"x" * 40, b"Invalid request: unknown command '" + b"x" * 32 + b"...'"),
    (b"put\x0b1 2", b"Invalid request: unknown command 'put\\x0b1'"),
]


@pytest.mark.parametrize("line,reply", ERRORS, ids=[repr(line[:20]) for line, _ in ERRORS])
def test_error_replies_leave_the_store_and_connection_intact(server, line, reply):
    with server.connect() as sock:
        assert request(sock, b"put 1 100") == b"OK"
        assert request(sock, line) == reply
        assert request(sock, b"get 1") == b"100"
        assert request(sock, b"put 2 200") == b"OK"
        assert request(sock, b"get 2") == b"200"


def test_random_binary_garbage_never_breaks_the_server(server):
    rng = os.urandom
    with server.connect() as sock, server.connect() as bystander:
        assert request(bystander, b"put 7 77") == b"OK"
        for _ in range(50):
            garbage = rng(200).replace(b"\n", b"").lstrip(b"*")    # "*" would start a RESP request
            reply = request(sock, garbage)
            assert reply.startswith(b"Invalid request: ") or reply in (b"Key not found", b"OK") \
                or reply.lstrip(b"-").isdigit() or reply == b"Key already exists"
            assert b"\n" not in reply and b"\r" not in reply
        assert request(bystander, b"get 7") == b"77"
        assert request(sock, b"get 7") == b"77"


def test_longest_allowed_line_is_answered(server):
    with server.connect() as sock:
        line = b"get " + b"0" * (MAX_LINE - 5) + b"7"
        assert len(line) == MAX_LINE
        assert request(sock, line) == b"Key not found"
        assert request(sock, line + b"\r") == b"Key not found"     # \r\n ending not counted
        assert request(sock, b"put 7 8") == b"OK"
        assert request(sock, line) == b"8"


@pytest.mark.parametrize("terminated", [True, False])
def test_over_long_line_is_refused_and_closed(server, terminated):
    with server.connect() as sock, server.connect() as bystander:
        assert request(bystander, b"put 3 33") == b"OK"
        payload = b"get " + b"1" * MAX_LINE + (b"\n" if terminated else b"")
        try:
            sock.sendall(b"get 3\n" + payload + (b"" if terminated else b"2" * 200_000))
        except (BrokenPipeError, ConnectionResetError):
            pass                        # the server may close before all of it is sent
        received = bytearray()
        sock.settimeout(10)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass                        # unread input discarded by close: a reset may follow
        assert bytes(received) == b"33\nInvalid request: line too long\n"
        assert request(bystander, b"get 3") == b"33"
    assert server.proc.poll() is None


def test_peer_that_half_closes_still_gets_its_replies(server):
    with server.connect() as sock:
        sock.sendall(b"put 8 80\nget 8\n")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b"OK\n80\n"


def test_client_that_does_not_read_is_bounded(server):
    """A client pipelining far more than it reads: the server stops reading it
    (backpressure) instead of buffering replies without bound, keeps serving
    others, and delivers every reply in order once the client reads.

    48 MB of requests asking for 168 MB of replies: more than the kernel's
    socket buffers on both sides can absorb (tcp_rmem/tcp_wmem maxima are
    32 MB and 4 MB here), so the client's sends must block.
    """
    count = 8_000_000
    reply = b"-9223372036854775808\n"
    pipeline = b"get 1\n" * count
    with server.connect() as other:
        assert request(other, b"put 1 -9223372036854775808") == b"OK"
        baseline = resident_kib(server.proc.pid)
        greedy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # no receive autotuning
        greedy.connect(server.address)
        with greedy:
            greedy.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 30
            while sent < len(pipeline) and time.monotonic() < deadline:
                try:
                    sent += greedy.send(pipeline[sent:sent + (1 << 20)])
                except BlockingIOError:
                    # Stalled: the server stopped reading if no room opens within 1 s.
                    if not select.select([], [greedy], [], 1.0)[1]:
                        break
            assert sent < len(pipeline), "server should have stopped reading (backpressure)"
            growth = resident_kib(server.proc.pid) - baseline
            print(f"sent {sent} bytes before the server stopped reading; RSS growth {growth} KiB")
            assert growth < 20_000, f"server RSS grew by {growth} KiB"
            assert request(other, b"get 1") == b"-9223372036854775808"

            greedy.setblocking(True)
            greedy.settimeout(30)
            writer = threading.Thread(target=greedy.sendall, args=(pipeline[sent:],), daemon=True)
            writer.start()
            received, pending = 0, b""
            while received < count:
                chunk = greedy.recv(1 << 20)
                assert chunk, f"closed after {received} replies"
                pending += chunk
                whole = len(pending) // len(reply)
                assert pending[:whole * len(reply)] == reply * whole
                received += whole
                pending = pending[whole * len(reply):]
            writer.join(30)
            assert received == count and pending == b""


def test_replies_much_larger_than_requests_stay_bounded(server):
    """COMMAND turns 17 bytes of request into about 1.5 KB of reply. Clients that
    pipeline thousands and read nothing must still be held near the high-water
    mark each (backpressure is checked request by request, not per read)."""
    clients = 20
    command_request = b"*1\r\n$7\r\nCOMMAND\r\n" * 5000        # ~7.5 MB of replies each
    baseline = resident_kib(server.proc.pid)
    sockets = []
    try:
        for _ in range(clients):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(server.address)
            sock.sendall(command_request)
            sockets.append(sock)
        wait_for(server_idle(server.proc.pid), 20, interval=0.2,
                 message="the server to stop working on the non-reading clients")
        growth = resident_kib(server.proc.pid) - baseline
        assert growth < 60_000, f"server RSS grew by {growth} KiB for {clients} non-reading clients"
        with server.connect() as other:
            assert request(other, b"put 1 1") == b"OK"
        # Every reply still arrives, in order, once a client reads.
        sockets[0].settimeout(20)
        received = b""
        while received.count(b"*") < 1 or len(received) < 100_000:
            chunk = sockets[0].recv(1 << 20)
            assert chunk
            received += chunk
        assert received.startswith(b"*")
    finally:
        for sock in sockets:
            sock.close()


def server_idle(pid):
    """A wait_for condition: true once the process ``pid`` has used no CPU time
    between its last three calls (it has done all it will until a peer acts)."""
    ticks = []

    def idle():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks.append(int(fields[11]) + int(fields[12]))         # utime + stime
        return len(ticks) >= 3 and ticks[-1] == ticks[-2] == ticks[-3]
    return idle


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
