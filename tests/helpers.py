"""Waiting for an effect the tests cannot be told about directly.

A server's side effects (a background rewrite ending, a log line written by a
periodic sweep, a listening port opening, a slot freed after a close) happen
on its own schedule. Tests poll for them with :func:`wait_for` instead of
sleeping a fixed time that is too short on a loaded machine and too long on an
idle one.
"""
import socket
import time


def wait_for(condition, timeout=10.0, interval=0.05, message="condition"):
    """Call ``condition()`` until it returns a truthy value and return that value.

    It is called at once, then every ``interval`` seconds, and one last time
    when ``timeout`` seconds have passed; if it is still falsy then,
    AssertionError("timed out after TIMEOUT s waiting for MESSAGE") is raised.
    ``message`` may be a callable, called only then (for details such as the
    last state seen). An exception raised by ``condition`` (a failed assertion
    on an intermediate state, say) propagates at once. The wait is bounded by
    ``timeout`` plus the duration of the last call of ``condition``, which
    should itself be bounded (socket timeouts, not blocking reads).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    description = message() if callable(message) else message
    raise AssertionError(f"timed out after {timeout:g} s waiting for {description}")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (for tools
    that need a port given up front: redis-server, nutcracker, exporters)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
