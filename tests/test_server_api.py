"""kvfast.Server used from Python: port 0, background thread, context manager."""
import socket
import threading

import pytest

import kvfast
from kvfast.config import ServerConfig
from conftest import request


def test_context_manager_serves_in_background_and_stops():
    with kvfast.Server(port=0) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port != 0
        with kvfast.Client(host, port) as client:
            client.put(1, 2)
            with pytest.raises(kvfast.KeyExistsError):
                client.put(1, 3)
            assert client.get(1) == 2
            client.delete(1)
            with pytest.raises(kvfast.KeyNotFoundError):
                client.get(1)
            with pytest.raises(kvfast.KeyNotFoundError):
                client.delete(1)
        assert server.stats()["keys"] == 0
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2)


def test_start_stop_and_serve_forever_in_own_thread():
    server = kvfast.Server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with socket.create_connection(server.address, timeout=5) as sock:
            assert request(sock, b"put 5 6") == b"OK"
        stats = server.stats()
        assert stats["keys"] == 1 and stats["connections_accepted"] == 1
    finally:
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
        server.close()


def test_stop_before_serving_returns_at_once():
    server = kvfast.Server(port=0)
    server.stop()
    server.serve_forever()          # the pending wake-up ends it immediately
    server.close()


def test_bind_errors_raise_oserror():
    with kvfast.Server(port=0) as first:
        with pytest.raises(OSError):
            kvfast.Server(port=first.address[1])


def test_config_is_validated():
    with pytest.raises(ValueError):
        ServerConfig(port=70000)
    with pytest.raises(ValueError):
        ServerConfig(log_level="loud")


def test_servers_are_independent():
    with kvfast.Server(port=0) as one, kvfast.Server(port=0) as two:
        with kvfast.Client(*one.address) as a, kvfast.Client(*two.address) as b:
            a.put(1, 1)
            with pytest.raises(kvfast.KeyNotFoundError):
                b.get(1)
