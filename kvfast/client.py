"""Synchronous client of the kvfast native protocol, over one TCP or unix socket connection.

>>> with Client("127.0.0.1", 5000) as client:       # doctest: +SKIP
...     client.put(1, 2)
...     client.get(1)
2

Each call sends one request line and waits for its one reply line, so a Client
is meant for one thread at a time.
"""
import os
import socket

from kvfast.config import DEFAULT_HOST, DEFAULT_PORT
from kvfast.errors import (
    AuthenticationError, ConnectionLostError, InvalidRequestError, KeyExistsError, KeyNotFoundError, KvfastError,
)
from kvfast.protocol_model import (
    GOODBYE, INT64_MAX, INT64_MIN, INVALID_PREFIX, KEY_EXISTS, KEY_NOT_FOUND, OK,
)

# Request text is sent as UTF-8. "surrogateescape" lets a str that was decoded
# with that handler (as kvfast-client does with stdin) carry arbitrary bytes
# through unchanged, and lets any reply bytes be returned as a str.
_ENCODING = "utf-8"
_ENCODING_ERRORS = "surrogateescape"


class Client:
    """One connection to a kvfast server.

    ``timeout`` (seconds, or None to wait forever) bounds connecting and each
    socket operation; when it expires the call raises TimeoutError and the
    connection should be closed, since a late reply would be read as the answer
    to the next request.

    With ``unix_socket_path`` the client connects to the server's unix domain
    socket (``kvfast-server --unixsocket PATH``) instead of ``host``/``port``.

    With a ``password``, ``auth PASSWORD`` is sent as soon as the connection is
    made; unless the server answers ``OK`` the connection is closed and
    AuthenticationError raised (``Invalid password``: a wrong password). The
    password is not kept.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 10.0,
                 password: str | None = None, *, unix_socket_path: str | None = None):
        if password is not None:
            _check_password(password)
        if unix_socket_path is not None:
            self._sock = _connect_unix(unix_socket_path, timeout)
        else:
            self._sock = socket.create_connection((host, port), timeout=timeout)
            # Each request is one small write followed by waiting for the reply:
            # Nagle's algorithm would only add delay.
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._replies = self._sock.makefile("rb")
        self._server_said_goodbye = False
        if password is not None:
            self._authenticate(password)

    def _authenticate(self, password: str) -> None:
        try:
            reply = self._exchange(b"auth " + password.encode(_ENCODING, _ENCODING_ERRORS))
        except BaseException:
            self._abandon()
            raise
        if reply != OK:
            self._abandon()
            raise AuthenticationError(reply.decode(_ENCODING, _ENCODING_ERRORS))

    def _abandon(self) -> None:
        """Close the connection without saying goodbye (it never got going)."""
        sock, replies = self._sock, self._replies
        self._sock = self._replies = None
        replies.close()
        sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def put(self, key: int, value: int) -> None:
        """Store ``value`` under ``key``.

        Raises KeyExistsError when the key is already stored (its value is left
        unchanged: ``put`` never overwrites). Arguments are checked before
        anything is sent, see :func:`_check_int64`.
        """
        _check_int64("key", key)
        _check_int64("value", value)
        reply = self._exchange(b"put %d %d" % (key, value))
        if reply == KEY_EXISTS:
            raise KeyExistsError(key)
        if reply != OK:
            raise _unexpected(reply)

    def get(self, key: int) -> int:
        """Return the value stored under ``key``; KeyNotFoundError if there is none."""
        _check_int64("key", key)
        reply = self._exchange(b"get %d" % key)
        if reply == KEY_NOT_FOUND:
            raise KeyNotFoundError(key)
        if not reply.removeprefix(b"-").isdigit():
            raise _unexpected(reply)
        return int(reply)

    def delete(self, key: int) -> None:
        """Remove ``key`` and its value; KeyNotFoundError if it is not stored."""
        _check_int64("key", key)
        reply = self._exchange(b"del %d" % key)
        if reply == KEY_NOT_FOUND:
            raise KeyNotFoundError(key)
        if reply != OK:
            raise _unexpected(reply)

    def request(self, line: str) -> str:
        """Send ``line`` as one raw request and return the reply line, without its newline.

        Error replies (``Key not found``, ``Invalid request: ...``) are returned,
        not raised: this is the pass-through used by ``kvfast-client``. The line
        must hold exactly one request that the server answers, so a line
        containing a newline, or a blank one (which gets no reply, so waiting
        for one would hang), raises ValueError. After the server answers
        ``Goodbye`` it closes the connection, and :meth:`close` sends nothing.
        """
        if "\n" in line:
            raise ValueError("a request line must not contain a newline")
        # Blank as the server sees it: its "\r" ending dropped, only spaces and tabs left.
        if not line.removesuffix("\r").strip(" \t"):
            raise ValueError("a blank request line gets no reply")
        reply = self._exchange(line.encode(_ENCODING, _ENCODING_ERRORS))
        if reply == GOODBYE:
            self._server_said_goodbye = True
        return reply.decode(_ENCODING, _ENCODING_ERRORS)

    def close(self) -> None:
        """Say ``bye`` to the server, then close the connection; safe to call again.

        The goodbye is best-effort: if the server has already gone, or does not
        answer within the timeout, the socket is closed anyway and no error is
        raised, because there is nothing left for the caller to do about it.
        """
        if self._sock is None:
            return
        sock, replies = self._sock, self._replies
        self._sock = self._replies = None
        try:
            if not self._server_said_goodbye:
                sock.sendall(b"bye\n")
                replies.readline()
        except OSError:
            pass
        finally:
            replies.close()
            sock.close()

    def _exchange(self, request: bytes) -> bytes:
        """Send one request line (``request`` without its newline); return the reply line without its newline.

        Raises ConnectionLostError when the server closes or resets the
        connection before a complete reply line has arrived, and TimeoutError
        when the reply takes longer than the timeout.
        """
        if self._sock is None:
            raise ValueError("request on a closed Client")
        try:
            self._sock.sendall(request + b"\n")
            reply = self._replies.readline()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as error:
            raise ConnectionLostError(f"connection to server lost: {error.strerror}") from error
        if not reply.endswith(b"\n"):
            raise ConnectionLostError("server closed the connection before it replied")
        return reply[:-1]


def _connect_unix(path, timeout: float | None) -> socket.socket:
    """A connection to the unix domain socket at ``path`` (OSError if none listens there)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _check_password(password) -> None:
    """Refuse, before connecting, a password that ``auth PASSWORD`` cannot carry."""
    if not isinstance(password, str):
        raise TypeError(f"password must be a str, not {type(password).__name__}")
    if not password:
        raise ValueError("password must not be empty")
    if "\n" in password or "\r" in password:
        raise ValueError("password must not contain a line break")


def _check_int64(name: str, number) -> None:
    """Refuse, before anything is sent, a key or value the protocol cannot carry.

    Raises TypeError unless ``number`` is an int (bool, although an int
    subclass, is refused: ``put(True, 1)`` is far more likely a bug than a
    key), and ValueError when it is outside the signed 64-bit range. Checking
    here gives a Python error naming the argument instead of a server reply.
    """
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"{name} must be an int, not {type(number).__name__}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"{name} {number} is outside the signed 64-bit range")


def _unexpected(reply: bytes) -> KvfastError:
    """Return the exception for a reply the calling method does not expect.

    ``Invalid request: <reason>`` becomes InvalidRequestError(reason); anything
    else means client and server disagree about the protocol.
    """
    if reply.startswith(INVALID_PREFIX):
        reason = reply[len(INVALID_PREFIX):].decode(_ENCODING, _ENCODING_ERRORS)
        return InvalidRequestError(reason)
    return KvfastError(f"unexpected reply from server: {reply!r}")
