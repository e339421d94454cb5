"""``kvfast.Server``: listening sockets plus the compiled event loop.

The sockets (one per TCP address, and the unix socket) are created, bound and
set listening here in Python (clear errors, any address family getaddrinfo
gives); the compiled :class:`~kvfast._loop.EventLoop` then serves them all
without the GIL.
"""
import errno
import logging
import os
import signal
import socket
import stat
import threading
import time

from kvfast._aof import AppendOnlyFile
from kvfast._replay import LogError
from kvfast._loop import EventLoop
from kvfast._version import __version__
from kvfast.config import (
    DEFAULT_HOST, DEFAULT_PORT, MAX_ARGUMENTS, PASSWORD_ENV, UNAUTHENTICATED_MAX_ARGUMENTS,
    UNAUTHENTICATED_MAX_BULK_BYTES, UNAUTHENTICATED_MAX_LINE_BYTES, ServerConfig, protected_mode_applies,
)
from kvfast.runtime import RuntimeSettings

log = logging.getLogger("kvfast.server")
aof_log = logging.getLogger("kvfast.aof")


class Server:
    """A kvfast server bound at construction time.

    ``Server(host, port)`` binds and listens at once (port 0 picks a free port;
    ``address`` is the bound ``(host, port)``, the first of ``addresses`` when
    ``config.host`` names several, None with ``port=None``: no TCP). With
    ``config.unixsocket`` it also listens on that unix socket
    (``unix_socket_path``), removed again by ``close()``. With
    ``config.metrics_port`` it also serves ``GET /metrics`` (Prometheus) on that
    port of every bind address (``metrics_addresses``). Serve with ``serve_forever()`` in
    the current thread, or ``start()`` in a background thread; ``stop()`` makes
    either return. As a context manager the server is started on entry and
    stopped and closed on exit.

    With ``config.appendonly`` set, the append-only file is opened and replayed
    before the constructor returns (``loaded`` is then ``(keys, seconds)``; else
    None). A damaged or unreadable log raises :class:`LogError` (one line naming
    the file and offset); the socket is closed again.

    CONFIG GET/SET/REWRITE (kvfast/runtime.py) read and change the running
    settings: ``config`` is replaced by the new ServerConfig after each CONFIG
    SET; ``config_file`` is the TOML file CONFIG REWRITE writes them back to
    (None: the server was started without one).
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 config: ServerConfig | None = None, config_file=None):
        self.config = config if config is not None else ServerConfig(host=host, port=port)
        self.config_file = None if config_file is None else os.fspath(config_file)
        self.protected_mode = protected_mode_applies(self.config)
        self._sockets = []          # (socket, transport), TCP first
        self._unix_socket_identity = None
        self._append_only_file = None
        self._loop = None
        self.loaded = None
        try:
            self._listen_all()
            if self.protected_mode:
                log.warning("protected mode: listening on %s with no password, so only clients on 127.0.0.1 "
                            "and ::1 (and the unix socket) will be served; set requirepass (or %s), or use "
                            "--protected-mode no", self.config.host, PASSWORD_ENV)
            if self.config.appendonly is not None:
                self._append_only_file = _open_log(self.config)
            self._loop = EventLoop(
                [(sock.fileno(), transport) for sock, transport in self._sockets],
                port=self.addresses[0][1] if self.addresses else 0,
                # The fixed protocol limits and the version INFO reports: kvfast.config
                # and kvfast._version are their one source, the loop only enforces them.
                max_line_bytes=self.config.max_line_bytes,
                client_query_buffer_limit=self.config.client_query_buffer_limit,
                max_arguments=MAX_ARGUMENTS,
                proto_max_bulk_len=self.config.proto_max_bulk_len,
                unauthenticated_max_line_bytes=UNAUTHENTICATED_MAX_LINE_BYTES,
                unauthenticated_max_arguments=UNAUTHENTICATED_MAX_ARGUMENTS,
                unauthenticated_max_bulk_bytes=UNAUTHENTICATED_MAX_BULK_BYTES,
                read_chunk_bytes=self.config.read_chunk_bytes,
                output_high_water_bytes=self.config.output_high_water_bytes,
                max_clients=self.config.max_clients,
                timeout=self.config.timeout,
                version=__version__,
                password=None if self.config.requirepass is None else self.config.requirepass.encode(),
                protected_mode=self.protected_mode,
                logger=log,
                append_only_file=self._append_only_file,
                slowlog_log_slower_than=self.config.slowlog_log_slower_than,
                slowlog_max_len=self.config.slowlog_max_len,
                maxmemory=self.config.maxmemory,
                maxmemory_policy=self.config.maxmemory_policy,
                clock_offset_ms=self.config.debug_clock_offset_ms,
            )
            self._loop.settings = RuntimeSettings(self)
            if self._append_only_file is not None:
                self.loaded = _replay(self._loop, self.config.appendonly)
                self._append_only_file.start()
        except BaseException:
            self._release()
            raise
        self._thread = None

    def _listen_all(self) -> None:
        """Bind every TCP address of ``config.host`` (each on the same port: with
        port 0, the one the first bind picked), then the unix socket; sets
        ``addresses``, ``address`` and ``unix_socket_path``. Raises ListenError
        naming the address that failed (the caller closes what was bound)."""
        self.addresses = []
        if self.config.port is not None:
            port = self.config.port
            for host in self.config.host.split():
                try:
                    sock = _listen(host, port, self.config.backlog)
                except OSError as error:
                    raise ListenError(f"{host}:{port}", error) from None
                self._sockets.append((sock, "tcp"))
                self.addresses.append(sock.getsockname()[:2])
                port = self.addresses[-1][1]
        self.address = self.addresses[0] if self.addresses else None
        self.metrics_addresses = []
        if self.config.metrics_port is not None:
            port = self.config.metrics_port
            for host in self.config.host.split():
                try:
                    sock = _listen(host, port, self.config.backlog)
                except OSError as error:
                    raise ListenError(f"{host}:{port} (metrics)", error) from None
                self._sockets.append((sock, "metrics"))
                self.metrics_addresses.append(sock.getsockname()[:2])
                port = self.metrics_addresses[-1][1]
        self.unix_socket_path = self.config.unixsocket
        if self.unix_socket_path is not None:
            mode = None if self.config.unixsocketperm is None else int(self.config.unixsocketperm, 8)
            try:
                sock = _listen_unix(self.unix_socket_path, mode, self.config.backlog)
            except OSError as error:
                raise ListenError(f"unix socket {self.unix_socket_path}", error) from None
            self._sockets.append((sock, "unix"))
            status = os.stat(self.unix_socket_path)
            self._unix_socket_identity = (status.st_dev, status.st_ino)

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop()`` (from another thread or a signal handler).

        In the main thread, Python's signal wake-up fd is pointed at the loop for
        the duration, so a signal handler runs promptly however busy the loop is.
        """
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            previous_wakeup_fd = signal.set_wakeup_fd(self._loop.signal_wakeup_fd, warn_on_full_buffer=False)
        log.info("serving on %s", self.describe())
        try:
            self._loop.run()
        finally:
            if in_main_thread:
                signal.set_wakeup_fd(previous_wakeup_fd)
        log.info("stopped serving on %s", self.describe())

    def describe(self) -> str:
        """Where the server listens, for log lines: ``127.0.0.1:5000, unix socket /run/kvfast.sock``."""
        places = [format_address(host, port) for host, port in self.addresses]
        places += [f"metrics http://{format_address(host, port)}/metrics" for host, port in self.metrics_addresses]
        if self.unix_socket_path is not None:
            places.append(f"unix socket {self.unix_socket_path}")
        return ", ".join(places)

    def start(self) -> "Server":
        """Serve from a daemon background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._thread = threading.Thread(target=self.serve_forever, name="kvfast-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Make ``serve_forever()`` return, and wait for a ``start()``ed thread to end.

        Safe to call from a signal handler running in the serving thread: it only
        writes to the loop's eventfd there.
        """
        self._loop.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None

    def close(self) -> None:
        """Stop if needed; write, sync and close the append-only file; close every
        connection and the listening socket. Raises OSError if the log's last
        write or sync failed (everything is closed anyway)."""
        self.stop()
        self._release()

    def _release(self) -> None:
        """Close the log (see EventLoop.close_log), the loop and the socket, each
        even if an earlier step raised; the first error is raised at the end."""
        try:
            if self._loop is not None:
                self._loop.close_log()
            elif self._append_only_file is not None:
                self._append_only_file.close()
        finally:
            try:
                if self._loop is not None:
                    self._loop.close()
            finally:
                self._close_sockets()

    def _close_sockets(self) -> None:
        """Close every listening socket, and remove the unix socket's file if it is
        still the one this server made (not a file another server put there since)."""
        for sock, _ in self._sockets:
            sock.close()
        self._sockets = []
        identity, self._unix_socket_identity = self._unix_socket_identity, None
        if identity is not None:
            try:
                status = os.stat(self.unix_socket_path)
                if (status.st_dev, status.st_ino) == identity:
                    os.unlink(self.unix_socket_path)
            except OSError:
                pass            # already gone: nothing to clean up

    def stats(self) -> dict:
        """Counters of the loop and the store (see ``EventLoop.stats``)."""
        return self._loop.stats()

    def __enter__(self) -> "Server":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _open_log(config: ServerConfig) -> AppendOnlyFile:
    """The append-only file of ``config``, opened (created if missing)."""
    try:
        return AppendOnlyFile(config.appendonly, config.fsync, config.aof_rewrite_min_bytes, logger=aof_log)
    except OSError as error:
        raise LogError(config.appendonly, f"cannot open: {error.strerror or error}") from None


#: Logs this large get a "loading" line before their replay starts (and one a
#: second while it runs, as every log does).
LARGE_LOG_BYTES = 64 * 1024 * 1024


def _replay(loop: EventLoop, path) -> tuple[int, float]:
    """Replay the log into the loop's store; returns (keys, seconds). Logs a
    progress line about once a second (and, for a large file, one as it starts)."""
    started = time.monotonic()
    size = os.path.getsize(path)
    if size >= LARGE_LOG_BYTES:
        aof_log.info("loading %s: %.0f MB", path, size / 1e6)

    def progress(done_bytes, total_bytes, records):
        aof_log.info("loading %s: %d%% (%d records, %.1f s)", path, 100 * done_bytes // total_bytes, records,
                     time.monotonic() - started)

    try:
        loop.replay(progress)
    except OSError as error:
        raise LogError(path, f"cannot read: {error.strerror or error}") from None
    except MemoryError:
        raise LogError(path, "out of memory while loading") from None
    keys, seconds = loop.stats()["keys"], time.monotonic() - started
    aof_log.info("loaded %d keys from %s in %.3f s", keys, path, seconds)
    return keys, seconds


class ListenError(OSError):
    """An address the server could not listen on: ``str()`` is one line,
    ``cannot listen on 127.0.0.1:5000: Address already in use``. ``where`` names
    the address (``HOST:PORT`` or ``unix socket PATH``); ``errno`` and
    ``strerror`` are the failure's."""

    def __init__(self, where: str, error: OSError):
        reason = error.strerror or str(error)
        super().__init__(error.errno, reason)
        self.where = where

    def __str__(self):
        return f"cannot listen on {self.where}: {self.strerror}"


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 address in brackets: ``[::1]:5000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking socket listening on ``host:port``.

    Raises OSError (e.g. EADDRINUSE, or socket.gaierror for an unknown host).
    SO_REUSEADDR lets a restarted server bind while old connections linger in
    TIME_WAIT, as Redis and memcached do. An IPv6 socket is IPv6 only, so that
    ``"0.0.0.0 ::"`` can bind both.
    """
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen_unix(path: str, mode: int | None, backlog: int) -> socket.socket:
    """A non-blocking unix domain socket listening at ``path``.

    A socket file left by a server that is gone (connecting to it is refused)
    is replaced; a live one raises OSError(EADDRINUSE, "another server is
    listening there"), and a path that is not a socket is left alone
    (EADDRINUSE too: the file is not ours to remove). ``mode`` (e.g. 0o700) is
    applied between bind and listen, so no one can connect before it holds
    (connecting to a socket that does not listen yet is refused).
    """
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        try:
            if mode is not None:
                os.chmod(path, mode)
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            os.unlink(path)
            raise
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a unix socket no server listens on (ECONNREFUSED);
    raise OSError(EADDRINUSE) if one does, or if ``path`` is some other kind of file."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(status.st_mode):
        raise OSError(errno.EADDRINUSE, "the path exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)         # a server that crashed left it behind
            log.info("replaced the stale unix socket %s", path)
            return
        except OSError:
            return                  # e.g. no permission to connect: bind will say what is wrong
    raise OSError(errno.EADDRINUSE, "another server is listening there")
