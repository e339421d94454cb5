"""Smoke check of an installed kvfast-server (.ci/run uses it on the sdist).

Usage: python scripts/ping_server.py PATH-TO-kvfast-server

Starts ``kvfast-server 0``, reads its ``kvfast listening on HOST:PORT`` line,
sends a RESP PING, expects ``+PONG``, stops it with SIGTERM and expects exit
status 0. Exits non-zero (with the reason) on any failure; bounded in time.
"""
import re
import signal
import socket
import subprocess
import sys
import threading

LISTENING = re.compile(rb"kvfast listening on ([0-9.]+):(\d+)")
TIMEOUT = 30.0


def main(server_program):
    proc = subprocess.Popen([server_program, "0"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(TIMEOUT, proc.kill)       # ends a readline() that would hang
    watchdog.daemon = True
    watchdog.start()
    try:
        lines = []
        for line in iter(proc.stdout.readline, b""):
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                break
        else:
            raise SystemExit(f"no ready line from {server_program}: stdout {lines!r}, "
                             f"stderr {proc.stderr.read()!r}")
        host, port = match.group(1).decode(), int(match.group(2))
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        if reply != b"+PONG\r\n":
            raise SystemExit(f"PING answered {reply!r}, expected b'+PONG\\r\\n'")
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(TIMEOUT)
        if status != 0:
            raise SystemExit(f"kvfast-server exited with status {status} after SIGTERM: {proc.stderr.read()!r}")
        print(f"kvfast-server on {host}:{port} answered +PONG and stopped cleanly")
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
