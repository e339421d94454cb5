"""Clients of the kvfast native protocol: :class:`Client` (blocking, compiled)
and :class:`AsyncClient` (asyncio), over TCP or a unix domain socket.

>>> with Client("127.0.0.1", 5000) as client:       # doctest: +SKIP
...     client.put(1, 2)
...     client.get(1)
2

Single calls: ``put``, ``get``, ``delete``, ``set``, ``incr``, and
``request(line)`` (raw, as ``kvfast-client`` uses it). Bulk calls pipeline in C,
reading keys and values straight from any int64 buffer (``array('q')``, a NumPy
int64 array, a memoryview) or from any iterable of ints:

>>> values, found = client.get_many(keys)           # doctest: +SKIP
>>> values = client.get_many(keys, default=-1)      # doctest: +SKIP

``get_many(keys, default=None)``, ``put_many(keys, values)``,
``set_many(keys, values)``, ``delete_many(keys)``, ``incr_many(keys, deltas=1)``:
results are ``array('q')`` values and ``bytearray`` 0/1 masks, or NumPy int64 /
bool arrays when ``keys`` is a NumPy array (NumPy is never imported by kvfast).
Every input is checked before anything is sent: TypeError for a non-int (or a
buffer of another item type), :class:`~kvfast.errors.OutOfRangeError` (an
OverflowError and a ValueError) outside the signed 64-bit range.

``Client`` releases the GIL during all socket I/O. It is meant for one thread
(a call from a second thread while one runs raises RuntimeError); use one
Client per thread. ``AsyncClient`` serializes the calls of concurrent tasks
with a lock; use it from one event loop.
"""
import asyncio
import socket

from kvfast._client import (
    INT64_MAX, INT64_MIN, OPERATION_DEL, OPERATION_GET, OPERATION_INCR, OPERATION_PUT, OPERATION_SET,
    Bulk, Client, check_int64_argument, check_password, unexpected,
)
from kvfast.config import DEFAULT_HOST, DEFAULT_PORT
from kvfast.errors import (
    AuthenticationError, ConnectionLostError, KeyExistsError, KeyNotFoundError, OutOfRangeError,
)

__all__ = ["AsyncClient", "Client", "INT64_MAX", "INT64_MIN"]

_ENCODING = "utf-8"
_ENCODING_ERRORS = "surrogateescape"
_READ_BYTES = 262144


def _is_integer_reply(reply: bytes) -> bool:
    return reply.removeprefix(b"-").isdigit()


def _ttl_words(ttl) -> bytes:
    """`` ex S`` for a TTL of S seconds (1 to 10**12; None: no words), checked as Client checks it."""
    if ttl is None:
        return b""
    check_int64_argument("ttl", ttl)
    if not 1 <= ttl <= 10 ** 12:
        raise OutOfRangeError(f"ttl {ttl} is outside 1 to 10**12 seconds")
    return b" ex %d" % ttl


class AsyncClient:
    """asyncio client with the methods of :class:`Client`, each a coroutine.

        async with AsyncClient("127.0.0.1", 5000) as client:
            await client.set(1, 2)
            values, found = await client.get_many(keys)

    The connection opens at ``async with`` (or :meth:`connect`, or the first
    call). Bulk calls run the compiled encoder and decoder of :class:`Client`
    (kvfast._client.Bulk) on the asyncio stream: chunks of request lines are
    written while replies are parsed as they arrive, at most a window of
    requests unanswered, so no thread is involved and the event loop keeps
    serving other tasks between chunks. Timeouts, password, reconnect after a
    broken connection and the exceptions are those of :class:`Client`;
    concurrent tasks' calls are serialized by a lock.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float | None = 10.0,
                 password: str | None = None, *, unix_socket_path: str | None = None):
        if password is not None:
            check_password(password)
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        self.host, self.port, self.unix_socket_path, self.timeout = host, port, unix_socket_path, timeout
        self._password = password
        self._reader = self._writer = None
        self._closed = False
        self._lock = asyncio.Lock()

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    async def connect(self) -> "AsyncClient":
        """Open the connection now (and authenticate); returns the client."""
        async with self._lock:
            await self._ensure_open()
        return self

    async def _wait(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.timeout)
        except asyncio.TimeoutError:        # not the builtin TimeoutError before Python 3.11
            raise TimeoutError(f"no reply from server within {self.timeout:g} seconds") from None

    async def _ensure_open(self) -> None:
        if self._closed:
            raise ValueError("request on a closed AsyncClient")
        if self._writer is not None:
            return
        if self.unix_socket_path is not None:
            opening = asyncio.open_unix_connection(self.unix_socket_path, limit=_READ_BYTES)
        else:
            opening = asyncio.open_connection(self.host, self.port, limit=_READ_BYTES)
        self._reader, self._writer = await self._wait(opening)
        if self.unix_socket_path is None:
            self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._password is not None:
            reply = await self._exchange_open(b"auth " + self._password.encode(_ENCODING, _ENCODING_ERRORS))
            if reply != b"OK":
                self._drop()
                raise AuthenticationError(reply.decode(_ENCODING, _ENCODING_ERRORS))

    def _drop(self) -> None:
        """Close the stream without a goodbye; the next call reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _exchange_open(self, request: bytes) -> bytes:
        """One request line (no newline) on the open stream; its reply line without the newline.
        Any failure breaks the connection (ConnectionLostError, TimeoutError)."""
        try:
            self._writer.write(request + b"\n")
            reply = await self._wait(self._reader.readline())
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as error:
            self._drop()
            raise ConnectionLostError(f"connection to server lost: {error.strerror}") from error
        except BaseException:
            self._drop()
            raise
        if not reply.endswith(b"\n"):
            self._drop()
            raise ConnectionLostError("server closed the connection before it replied")
        return reply[:-1]

    async def _exchange(self, request: bytes) -> bytes:
        async with self._lock:
            await self._ensure_open()
            return await self._exchange_open(request)

    async def put(self, key: int, value: int, ttl: int | None = None) -> None:
        """See :meth:`Client.put`."""
        check_int64_argument("key", key)
        check_int64_argument("value", value)
        reply = await self._exchange(b"put %d %d" % (key, value) + _ttl_words(ttl))
        if reply == b"Key already exists":
            raise KeyExistsError(key)
        if reply != b"OK":
            raise unexpected(reply)

    async def get(self, key: int) -> int:
        """See :meth:`Client.get`."""
        check_int64_argument("key", key)
        reply = await self._exchange(b"get %d" % key)
        if _is_integer_reply(reply):
            return int(reply)
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        raise unexpected(reply)

    async def delete(self, key: int) -> None:
        """See :meth:`Client.delete`."""
        check_int64_argument("key", key)
        reply = await self._exchange(b"del %d" % key)
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply != b"OK":
            raise unexpected(reply)

    async def set(self, key: int, value: int, ttl: int | None = None) -> None:
        """See :meth:`Client.set`."""
        check_int64_argument("key", key)
        check_int64_argument("value", value)
        reply = await self._exchange(b"set %d %d" % (key, value) + _ttl_words(ttl))
        if reply != b"OK":
            raise unexpected(reply)

    async def expire(self, key: int, ttl: int) -> None:
        """See :meth:`Client.expire`."""
        check_int64_argument("key", key)
        reply = await self._exchange(b"expire %d" % key + _ttl_words(ttl)[3:])
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply != b"OK":
            raise unexpected(reply)

    async def ttl(self, key: int) -> int | None:
        """See :meth:`Client.ttl`."""
        check_int64_argument("key", key)
        reply = await self._exchange(b"ttl %d" % key)
        if reply == b"No expiry":
            return None
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply.isdigit():
            return int(reply)
        raise unexpected(reply)

    async def persist(self, key: int) -> bool:
        """See :meth:`Client.persist`."""
        check_int64_argument("key", key)
        reply = await self._exchange(b"persist %d" % key)
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply in (b"OK", b"No expiry"):
            return reply == b"OK"
        raise unexpected(reply)

    async def incr(self, key: int, delta: int = 1) -> int:
        """See :meth:`Client.incr`."""
        check_int64_argument("key", key)
        check_int64_argument("delta", delta)
        reply = await self._exchange(b"incr %d %d" % (key, delta))
        if _is_integer_reply(reply):
            return int(reply)
        raise unexpected(reply)

    async def request(self, line: str) -> str:
        """See :meth:`Client.request`."""
        if "\n" in line:
            raise ValueError("a request line must not contain a newline")
        if not line.removesuffix("\r").strip(" \t"):
            raise ValueError("a blank request line gets no reply")
        async with self._lock:
            await self._ensure_open()
            reply = await self._exchange_open(line.encode(_ENCODING, _ENCODING_ERRORS))
            if reply == b"Goodbye":
                self._drop()
        return reply.decode(_ENCODING, _ENCODING_ERRORS)

    async def get_many(self, keys, default=None):
        """See :meth:`Client.get_many`."""
        return await self._bulk(Bulk(OPERATION_GET, keys, None, default))

    async def put_many(self, keys, values):
        """See :meth:`Client.put_many`."""
        return await self._bulk(Bulk(OPERATION_PUT, keys, values, None, True))

    async def set_many(self, keys, values):
        """See :meth:`Client.set_many`."""
        return await self._bulk(Bulk(OPERATION_SET, keys, values, None, True))

    async def delete_many(self, keys):
        """See :meth:`Client.delete_many`."""
        return await self._bulk(Bulk(OPERATION_DEL, keys))

    async def incr_many(self, keys, deltas=1):
        """See :meth:`Client.incr_many`."""
        return await self._bulk(Bulk(OPERATION_INCR, keys, deltas, None, True))

    async def _bulk(self, bulk):
        """Write ``bulk``'s chunks while feeding it the replies (the window in
        Bulk.encode keeps the stream's buffer bounded, and writing never waits
        for the server to read: replies are always read, so neither side stalls)."""
        async with self._lock:
            await self._ensure_open()
            try:
                while not bulk.done:
                    chunk = bulk.encode()
                    while chunk:
                        self._writer.write(chunk)
                        chunk = bulk.encode()
                    data = await self._wait(self._reader.read(_READ_BYTES))
                    if not data:
                        sent, replied, count = bulk.progress
                        raise ConnectionLostError(f"server closed the connection before it replied "
                                                  f"(bulk request: {replied} of {count} replies in)")
                    bulk.feed(data)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as error:
                self._drop()
                sent, replied, count = bulk.progress
                raise ConnectionLostError(f"connection to server lost: {error.strerror} "
                                          f"(bulk request: {replied} of {count} replies in)") from error
            except BaseException:
                self._drop()
                raise
        return bulk.result()

    async def close(self) -> None:
        """Say ``bye`` (best-effort, as :meth:`Client.close`), then close; safe to call again."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        if writer is None:
            return
        try:
            writer.write(b"bye\n")
            await self._wait(self._reader.readline())
        except (OSError, TimeoutError):
            pass
        self._reader = self._writer = None
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
