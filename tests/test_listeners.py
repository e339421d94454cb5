"""The loop serves any number of listeners, TCP and unix-domain alike, through
one dispatch: a second listener needs no change to the loop (the unix socket
option of kvfast-server builds on this)."""
import os
import socket
import threading

import pytest

from kvfast._loop import EventLoop
from kvfast._version import __version__
from kvfast import config
from conftest import request


def make_loop(listeners, **overrides):
    """An EventLoop over ``listeners`` with the default limits of kvfast.config."""
    settings = dict(
        port=0, max_line_bytes=config.MAX_LINE_BYTES,
        client_query_buffer_limit=config.CLIENT_QUERY_BUFFER_LIMIT, max_arguments=config.MAX_ARGUMENTS,
        proto_max_bulk_len=config.PROTO_MAX_BULK_LEN,
        unauthenticated_max_line_bytes=config.UNAUTHENTICATED_MAX_LINE_BYTES,
        unauthenticated_max_arguments=config.UNAUTHENTICATED_MAX_ARGUMENTS,
        unauthenticated_max_bulk_bytes=config.UNAUTHENTICATED_MAX_BULK_BYTES,
        read_chunk_bytes=config.READ_CHUNK_BYTES, output_high_water_bytes=config.OUTPUT_HIGH_WATER_BYTES,
        max_clients=config.MAX_CLIENTS, timeout=0, version=__version__,
    )
    settings.update(overrides)
    return EventLoop(listeners, **settings)


@pytest.fixture
def listening(tmp_path):
    """A TCP socket on a free loopback port and a unix socket in a temp dir, both listening."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = str(tmp_path / "kvfast.sock")
    unix.bind(path)
    for sock in (tcp, unix):
        sock.listen(16)
        sock.setblocking(False)
    yield tcp, unix, path
    tcp.close()
    unix.close()
    os.unlink(path)


class Running:
    """Run a loop in a background thread for the duration of a with block."""

    def __init__(self, loop):
        self.loop = loop
        self.thread = threading.Thread(target=loop.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.loop

    def __exit__(self, *exc_info):
        self.loop.wake()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the loop did not stop"
        self.loop.close()


def test_one_store_served_over_tcp_and_a_unix_socket(listening):
    tcp, unix, path = listening
    with Running(make_loop([(tcp.fileno(), "tcp"), (unix.fileno(), "unix")])) as loop:
        with socket.create_connection(tcp.getsockname(), timeout=10) as over_tcp, \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as over_unix:
            over_unix.settimeout(10)
            over_unix.connect(path)
            assert request(over_tcp, b"put 1 10") == b"OK"
            assert request(over_unix, b"get 1") == b"10"
            assert request(over_unix, b"put 2 20") == b"OK"
            assert request(over_tcp, b"get 2") == b"20"
            over_unix.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\n1\r\n")
            assert over_unix.recv(100) == b"$2\r\n10\r\n"
        assert loop.stats()["connections_accepted"] == 2


def test_protected_mode_counts_unix_peers_as_local(listening):
    tcp, unix, path = listening
    with Running(make_loop([(unix.fileno(), "unix")], protected_mode=True)) as loop:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(path)
            assert request(client, b"put 1 1") == b"OK"
        assert loop.stats()["protected_mode_refusals"] == 0


def test_an_unknown_transport_is_refused(listening):
    tcp, unix, path = listening
    with pytest.raises(KeyError):
        make_loop([(tcp.fileno(), "udp")])
