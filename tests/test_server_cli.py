"""kvfast-server as a user runs it: ready line, clean stops, one-line errors."""
import signal
import socket
import subprocess
import time

import pytest

from conftest import request, script_path


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_within_a_second(start_server, sig):
    server = start_server()
    with server.connect() as sock:
        assert request(sock, b"put 1 2") == b"OK"
        started = time.monotonic()
        server.proc.send_signal(sig)
        status = server.proc.wait(5)
        elapsed = time.monotonic() - started
    assert status == 0
    assert elapsed < 1.0, f"took {elapsed:.2f}s to stop"
    errors = server.proc.stderr.read().decode()
    assert "Traceback" not in errors


def test_signal_while_clients_are_busy(start_server):
    server = start_server()
    sockets = [server.connect() for _ in range(50)]
    for sock in sockets:
        sock.sendall(b"put 1 1\n" * 100)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0
    assert "Traceback" not in server.proc.stderr.read().decode()
    for sock in sockets:
        sock.close()


def test_ready_line_names_the_real_port(server):
    assert server.port != 0
    with socket.create_connection(server.address, timeout=5) as sock:
        assert request(sock, b"get 1") == b"Key not found"


def run_server(*args, timeout=10):
    return subprocess.run([script_path("kvfast-server"), *args], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_port_in_use_is_a_one_line_error(server):
    result = run_server(str(server.port))
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "Address already in use" in lines[0] and str(server.port) in lines[0]
    assert result.stdout == b""


@pytest.mark.parametrize("args", [
    [], ["notaport"], ["70000"], ["-1"], ["5000", "--log-level", "loud"], ["5000", "--bogus"],
    ["5000", "extra"],
])
def test_bad_arguments_are_a_one_line_error(args):
    result = run_server(*args)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvfast-server: error:"), lines
    assert "Traceback" not in result.stderr.decode()


def test_unknown_host_is_a_one_line_error():
    result = run_server("0", "--host", "no-such-host.invalid")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "cannot listen on no-such-host.invalid" in lines[0]


def test_help_documents_the_protocol():
    result = run_server("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for word in ("put K V", "get K", "del K", "--host", "--log-level"):
        assert word in text


def test_log_level_debug_is_accepted(start_server):
    server = start_server("--log-level", "debug")
    with server.connect() as sock:
        assert request(sock, b"put 1 1") == b"OK"
