# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server's event loop: one thread, level-triggered epoll, no GIL.

Everything between ``epoll_wait`` and the replies leaving the socket (reads,
request framing, parsing, store access, writes) is C code running inside
``with nogil:``. The GIL is taken only at the edges: construction, ``run()``
returning to Python for a signal or a stop, ``close()``, ``stats()`` and the
rare warning log line.

The loop only moves bytes, as Redis's ae/networking do: it knows descriptors
and what kind each is (a listener, a client, the wake-up eventfd, the signal
pipe, the rewrite child's pipe: ``descriptors``), and hands what a client
sent to the protocol router (_protocol.pyx), which frames and answers it and
says how many bytes it used. One iteration:
  1. ``epoll_wait`` returns ready descriptors.
  2. Each listener accepts a bounded number of clients (over ``max_clients``,
     or not local in protected mode, they are refused in the protocol of their
     first bytes); each client with input gets one bounded read
     (``read_chunk_bytes``); its complete requests are answered in order into
     its output buffer, until that buffer reaches the high-water mark
     (backpressure: the rest waits, reading pauses), and the connection is
     queued for writing. A client's requests are answered just after the next
     client's read, so that its first key is loaded from memory while that
     recv runs (see receive()).
  3. After the batch the append-only log's side runs (_rewrite's
     aof_persist_batch: the records are written, and under ``--fsync
     always`` synced, in one go); the loop withholds the replies of writes
     that did not reach the log. Then queued output is written directly. Only
     a connection whose output did not all fit in the socket gets EPOLLOUT
     armed, and it is disarmed once the output has drained.
  4. Every 250 ms at most, idle clients past the timeout are closed and client
     trouble (refusals, protocol errors, wrong passwords) is logged, once per
     kind per 10 s.
Requests that arrive in one piece are answered straight from a buffer shared
by the whole loop; a connection owns an input buffer only while it holds an
incomplete request. The shared buffer has two halves, because one client's
read is held, unanswered, while the next client's read lands in the other half.
Listeners are TCP or unix-domain sockets; the transports differ only in
TCP_NODELAY and in which peers count as local (is_local_peer). A "metrics"
listener (--metrics-port) is TCP whose connections are not clients: their
bytes go to _metrics.metrics_answer (one HTTP GET /metrics each) instead of the
protocol router, and the sweep closes them after METRICS_IDLE_MS idle.
"""
import os

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.time cimport time
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memmove
from posix.unistd cimport close, read

from kvfast._system cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP,
    EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL, EPOLL_CLOEXEC,
    accept4, setsockopt, recv, send, shutdown, SHUT_WR, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL,
    IPPROTO_TCP, TCP_NODELAY, O_NONBLOCK, O_CLOEXEC, pipe2, eventfd, sockaddr, sockaddr_storage,
    sockaddr_in, sockaddr_in6, socklen_t, AF_INET, AF_INET6, INADDR_LOOPBACK, htonl,
    eventfd_t, eventfd_read, eventfd_write, EFD_NONBLOCK, EFD_CLOEXEC,
    monotonic_ms, monotonic_us, raise_os_error, debug_assert, set_errno,
)
from kvfast._aof cimport AppendOnlyFile, AppendLog
from kvfast._rewrite cimport aof_persist_batch, aof_retry_failed, aof_save_snapshot_now
from kvfast._command cimport RespCommand
from kvfast._context cimport (
    ServerContext, Session, Transaction, ADDRESS_BYTES, COUNTER_CONNECTIONS_RECEIVED, COUNTER_CONNECTED_CLIENTS,
    COUNTER_PROTOCOL_ERRORS, COUNTER_ACCEPT_PAUSES, COUNTER_REJECTED_CONNECTIONS, COUNTER_PROTECTED_REFUSALS,
    COUNTER_TIMED_OUT_CLIENTS, COUNTER_AUTH_FAILURES,
)
from kvfast._evict cimport memory_configure, policy_from_name, policy_name
from kvfast._metrics cimport metrics_answer
from kvfast._clients cimport session_link, session_unlink
from kvfast._commandstats cimport stats_init, stats_free, stats_batch_begin, stats_batch_end
from kvfast._multi cimport multi_release
from kvfast._resp cimport resp_commands
from kvfast._output cimport Output, output_pending, output_free
from kvfast._protocol cimport Refusal, REFUSE_NONE, REFUSE_MAX_CLIENTS, REFUSE_PROTECTED, protocol_answer, \
    protocol_prefetch, protocol_refuse
from kvfast._stats cimport stats_as_dict
from kvfast._store cimport store_init, store_free, store_migrate_idle, store_is_resizing
from kvfast._expire cimport expire_init, expire_slice, expire_timeout_ms, expire_after_load


cdef enum:
    MAX_EVENTS = 256            # descriptors taken from one epoll_wait
    ACCEPTS_PER_EVENT = 1000    # new clients accepted per readable event of a listener (as Redis)
    SPARE_OUTPUT_BYTES = 16384  # an emptied output buffer larger than this is freed
    MAX_REFUSING = 1024         # connections being refused at once; beyond, closed without a word
    REFUSAL_GRACE_MS = 1000     # a refused client that sends nothing is closed after this
    SWEEP_INTERVAL_MS = 250     # how often idle and refused connections are looked for
    EVENT_LOG_INTERVAL_MS = 10000     # each kind of client trouble is logged at most this often
    EVENT_KINDS = 4
    MAX_LISTENERS = 16          # sockets one loop can listen on
    DRAIN_TIMEOUT_MS = 3000     # a refused request's rest is read and discarded this long at most...
    DRAIN_MAX_BYTES = 1 << 30   # ...and up to this many bytes
    PEAK_WINDOW_MS = 8000       # INFO's client_recent_max_*_buffer: the largest within this window
    METRICS_IDLE_MS = 5000      # a metrics connection that has not sent its request by then is closed


cdef enum RunResult:
    RUN_FAILED = -1             # a system call failed; errno says why
    RUN_STOPPED = 0             # wake() was called
    RUN_INTERRUPTED = 1         # a signal arrived; Python handlers must run

cdef enum DescriptorKind:
    # What a descriptor in the epoll set is, and so who handles its events.
    DESCRIPTOR_FREE = 0
    DESCRIPTOR_CLIENT           # a connection (descriptors[fd].connection)
    DESCRIPTOR_LISTENER         # a listening socket (listeners[descriptors[fd].listener])
    DESCRIPTOR_WAKE             # the eventfd wake() writes to
    DESCRIPTOR_SIGNAL           # the pipe Python's signal wake-up writes to
    DESCRIPTOR_REWRITE          # the rewrite child's pipe: it hangs up when the child exits

cdef enum Transport:
    TRANSPORT_TCP = 0
    TRANSPORT_UNIX = 1
    TRANSPORT_METRICS = 2       # the metrics port: HTTP GET /metrics (_metrics.pyx), not a client

TRANSPORTS = {"tcp": TRANSPORT_TCP, "unix": TRANSPORT_UNIX, "metrics": TRANSPORT_METRICS}


cdef struct Listener:
    int fd
    Transport transport


cdef struct Connection:
    int fd
    Transport transport         # the listener's it came through
    uint32_t interest           # epoll events currently registered
    bint reading_paused         # too much unsent output: stop reading (backpressure)
    bint write_blocked          # the socket refused part of the output: EPOLLOUT armed
    bint queued                 # in the loop's write queue for this iteration
    char *input                 # unanswered requests (usually one incomplete one), or NULL
    size_t input_len
    size_t input_cap
    int64_t last_active_ms      # last read or write, for the idle timeout
    Refusal refusal             # why the connection is being turned away, if it is
    bint draining               # a refused request was answered: reading and discarding until EOF
    int64_t drain_deadline_ms   # ...until this time at the latest
    size_t drained_bytes        # ...and this many bytes at most (DRAIN_MAX_BYTES)
    Session session             # protocol state and the output buffer
    size_t counted_bytes        # what context.memory.client_bytes counts for it (see account)


cdef struct Descriptor:
    DescriptorKind kind
    int listener                # DESCRIPTOR_LISTENER: index in EventLoop.listeners
    Connection *connection      # DESCRIPTOR_CLIENT


cdef class EventLoop:
    """The compiled server loop over already listening, non-blocking sockets.

    ``listeners`` is a sequence of ``(fd, transport)`` pairs, ``transport``
    being ``"tcp"`` or ``"unix"``. ``run()`` serves until ``wake()`` is called
    (from any thread, or a signal handler). The listening sockets stay owned
    by the caller; the loop owns its epoll, eventfd and signal-pipe
    descriptors, every client connection and the store (inside ``context``).
    Every limit is a keyword argument, from kvfast.config (no copies here).
    """
    cdef int epoll_fd
    cdef int wake_fd
    cdef int signal_pipe[2]             # Python's signal.set_wakeup_fd writes to [1]
    cdef Listener listeners[MAX_LISTENERS]
    cdef int listener_count
    cdef bint accept_paused
    cdef size_t read_chunk_bytes
    cdef char *shared_input
    cdef Descriptor *descriptors        # indexed by file descriptor
    cdef size_t descriptors_cap
    cdef int *write_queue               # descriptors with output to write this iteration
    cdef size_t write_queue_len
    cdef size_t write_queue_cap
    cdef uint64_t next_client_id
    cdef int64_t idle_timeout_ms        # 0: never
    cdef bint local_peers_only          # only local peers may connect
    cdef size_t refusing                # connections being turned away (not clients)
    cdef int64_t now_ms                 # monotonic clock, read after each epoll_wait
    cdef int64_t next_sweep_ms
    cdef bytes password_bytes               # kept alive: context.password points into it
    cdef bytes version                  # kept alive: context.version points into it
    cdef bytes replication_id           # kept alive: context.replication_id points into it
    cdef size_t draining                # connections draining a refused request (see start_drain)
    cdef size_t metrics_connections     # open connections of the metrics port (not clients)
    cdef uint64_t events_logged[EVENT_KINDS]    # counter values already reported in the log
    cdef int64_t events_logged_at[EVENT_KINDS]
    cdef ServerContext context          # the store, counters and limits, shared with the protocols
    cdef AppendOnlyFile append_only_file    # kept alive: context.aof points into it (None: no log)
    cdef bint rewrite_watched           # the rewrite child's pipe is registered with epoll
    cdef object logger
    cdef object runtime_settings        # kept alive: context.settings points to it (None: none)

    def __cinit__(self, listeners, *, int port, size_t max_line_bytes, size_t client_query_buffer_limit,
                  size_t max_arguments, size_t proto_max_bulk_len, size_t unauthenticated_max_line_bytes,
                  size_t unauthenticated_max_arguments, size_t unauthenticated_max_bulk_bytes,
                  size_t read_chunk_bytes, size_t output_high_water_bytes, size_t max_clients,
                  double timeout, str version, bytes password=None, bint protected_mode=False, logger=None,
                  AppendOnlyFile append_only_file=None, long long slowlog_log_slower_than=10000,
                  size_t slowlog_max_len=128, int64_t clock_offset_ms=0, size_t maxmemory=0,
                  str maxmemory_policy="noeviction"):
        cdef const RespCommand *commands
        cdef size_t command_count
        self.epoll_fd = -1
        self.wake_fd = -1
        self.signal_pipe[0] = self.signal_pipe[1] = -1
        self.read_chunk_bytes = read_chunk_bytes
        self.logger = logger
        store_init(&self.context.store)
        store_init(&self.context.expires)
        store_init(&self.context.watched)
        expire_init(&self.context)
        self.context.expiry.clock_offset_ms = clock_offset_ms
        self.context.port = port
        self.context.started_at = time(NULL)
        self.context.limits.max_line_bytes = max_line_bytes
        self.context.limits.query_buffer_limit = client_query_buffer_limit
        self.context.limits.max_arguments = max_arguments
        self.context.limits.max_bulk_bytes = proto_max_bulk_len
        self.context.limits.unauthenticated_max_line_bytes = unauthenticated_max_line_bytes
        self.context.limits.unauthenticated_max_arguments = unauthenticated_max_arguments
        self.context.limits.unauthenticated_max_bulk_bytes = unauthenticated_max_bulk_bytes
        self.context.limits.output_high_water_bytes = output_high_water_bytes
        self.version = version.encode()
        self.context.version = self.version
        self.replication_id = os.urandom(20).hex().encode()
        self.context.replication_id = self.replication_id
        self.context.limits.max_clients = max_clients
        self.context.limits.slowlog_log_slower_than = slowlog_log_slower_than
        self.context.limits.slowlog_max_len = slowlog_max_len
        commands = resp_commands(&command_count)
        if stats_init(&self.context, commands, command_count) < 0:
            raise MemoryError()
        self.idle_timeout_ms = <int64_t>(timeout * 1000)
        self.local_peers_only = protected_mode
        self.password_bytes = password
        self.append_only_file = append_only_file
        if append_only_file is not None:
            self.context.aof = &append_only_file.log
            append_only_file.log.expires = &self.context.expires
        if password is not None:
            self.context.password = self.password_bytes
            self.context.password_length = len(self.password_bytes)
        self.shared_input = <char *>malloc(2 * read_chunk_bytes)     # two halves: see receive()
        if self.shared_input == NULL:
            raise MemoryError()
        self.context.memory.fixed_bytes = 2 * read_chunk_bytes
        self.configure_memory(maxmemory, maxmemory_policy)
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.epoll_fd < 0:
            raise_os_error()
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            raise_os_error()
        if pipe2(self.signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0:
            raise_os_error()
        if self.register(self.wake_fd, DESCRIPTOR_WAKE) < 0 \
                or self.register(self.signal_pipe[0], DESCRIPTOR_SIGNAL) < 0:
            raise_os_error()
        for fd, transport in listeners:
            if self.listener_count == MAX_LISTENERS:
                raise ValueError(f"at most {MAX_LISTENERS} listening sockets")
            self.listeners[self.listener_count].fd = fd
            self.listeners[self.listener_count].transport = TRANSPORTS[transport]
            if self.register(fd, DESCRIPTOR_LISTENER, self.listener_count) < 0:
                raise_os_error()
            self.listener_count += 1

    def __dealloc__(self):
        self.release()

    @property
    def signal_wakeup_fd(self):
        """Descriptor to pass to ``signal.set_wakeup_fd`` while ``run()`` runs in
        the main thread. Python's C-level handler writes to it when a signal
        arrives, which wakes the loop even if the signal came while it was busy
        rather than waiting in epoll_wait (where EINTR alone would catch it)."""
        return self.signal_pipe[1]

    def run(self):
        """Serve until ``wake()``. A signal (through EINTR or the signal wake-up
        pipe) returns here to run its Python handlers, which may raise, ending
        the loop; otherwise serving resumes. A failing system call raises OSError."""
        cdef int result, error
        if self.epoll_fd < 0:
            raise RuntimeError("the loop is closed")
        while True:
            with nogil:
                result = self.run_until_stopped()
                error = errno
            if result == RUN_STOPPED:
                return
            if result == RUN_INTERRUPTED:
                PyErr_CheckSignals()
                continue
            raise OSError(error, os.strerror(error))

    def replay(self, progress=None):
        """Load the append-only file into the (empty) store before serving; see
        AppendOnlyFile.replay_into. Returns the number of records applied."""
        if self.append_only_file is None:
            return 0
        records = self.append_only_file.replay_into(&self.context.store, &self.context.expires, progress)
        with nogil:
            expire_after_load(&self.context)
        return records

    def close_log(self):
        """Before exit: a log that must be rewritten from memory (a sync failed)
        is rewritten here, synchronously; then the append-only file is written,
        synced and closed (AppendOnlyFile.close). Raises OSError when that
        fails: writes acknowledged under everysec may then be lost."""
        cdef AppendLog *aof = self.context.aof
        cdef int result = 0, error = 0
        if self.append_only_file is None:
            return
        if aof.needs_rewrite:
            if self.logger is not None:
                self.logger.warning("append-only file: a sync failed and no rewrite has recovered it yet: "
                                    "writing every key from memory before exit")
            self.append_only_file.stop_rewrite()
            with nogil:
                result = aof_save_snapshot_now(aof, &self.context.store)
                error = errno
            if result < 0:
                self.append_only_file.close()
                raise OSError(error, f"{self.append_only_file.path}: cannot save the keys after a failed sync: "
                                     f"{os.strerror(error)}")
        self.append_only_file.close()

    def wake(self):
        """Ask ``run()`` to return. Safe from any thread and from signal handlers."""
        if self.wake_fd >= 0:
            eventfd_write(self.wake_fd, 1)

    def close(self):
        """Close every client connection, release the store and the loop's
        descriptors. Call only when ``run()`` is not running."""
        self.release()

    def stats(self):
        """Counters of the loop, the store and the log, as a dict (the IN_API
        rows of _stats.pyx)."""
        return stats_as_dict(&self.context)

    def configure_memory(self, size_t maxmemory, str policy):
        """Apply maxmemory (bytes, 0: no limit) and maxmemory-policy (a name of
        kvfast._evict.POLICIES), as CONFIG SET does at run time. Call only
        when ``run()`` is not running. ValueError for an unknown policy."""
        cdef bytes name = policy.encode()
        cdef int number = policy_from_name(name, len(name))
        if number < 0:
            raise ValueError(f"unknown maxmemory policy {policy!r}")
        if memory_configure(&self.context, maxmemory, number) < 0:
            raise MemoryError()

    # ---- settings that change at run time (CONFIG SET: kvfast.config rows' apply hooks) ----
    # Each setter runs with the GIL in the loop's thread (from CONFIG SET, between two
    # requests) or before run(): the nogil code reads the same fields afterwards, so
    # existing connections see a new value at their next request, new ones at once.

    @property
    def settings(self):
        """The kvfast.runtime.RuntimeSettings object CONFIG GET/SET/REWRITE ask, or None."""
        return self.runtime_settings

    @settings.setter
    def settings(self, value):
        self.runtime_settings = value
        self.context.settings = NULL if value is None else <void *>value

    @property
    def timeout(self):
        """Seconds a client may stay idle before it is closed (0: never)."""
        return self.idle_timeout_ms / 1000

    @timeout.setter
    def timeout(self, double seconds):
        self.idle_timeout_ms = <int64_t>(seconds * 1000)
        self.next_sweep_ms = 0          # the next iteration sweeps, and epoll_wait's timeout follows

    @property
    def max_clients(self):
        return self.context.limits.max_clients

    @max_clients.setter
    def max_clients(self, size_t value):
        self.context.limits.max_clients = value     # connected clients over it stay; new ones are refused

    @property
    def max_line_bytes(self):
        return self.context.limits.max_line_bytes

    @max_line_bytes.setter
    def max_line_bytes(self, size_t value):
        self.context.limits.max_line_bytes = value

    @property
    def client_query_buffer_limit(self):
        return self.context.limits.query_buffer_limit

    @client_query_buffer_limit.setter
    def client_query_buffer_limit(self, size_t value):
        self.context.limits.query_buffer_limit = value

    @property
    def proto_max_bulk_len(self):
        return self.context.limits.max_bulk_bytes

    @proto_max_bulk_len.setter
    def proto_max_bulk_len(self, size_t value):
        self.context.limits.max_bulk_bytes = value

    @property
    def output_high_water_bytes(self):
        return self.context.limits.output_high_water_bytes

    @output_high_water_bytes.setter
    def output_high_water_bytes(self, size_t value):
        self.context.limits.output_high_water_bytes = value

    @property
    def protected_mode(self):
        """Whether only local peers may connect (refused at accept: connected clients stay)."""
        return self.local_peers_only

    @protected_mode.setter
    def protected_mode(self, bint value):
        self.local_peers_only = value

    @property
    def password(self):
        return self.password_bytes

    @password.setter
    def password(self, bytes value):
        """New connections must authenticate with ``value`` (None: no password, and
        every connection counts as authenticated, as Redis's nopass default user);
        connections already authenticated stay so, as in Redis."""
        cdef size_t fd
        self.password_bytes = value
        if value is None:
            self.context.password = NULL
            self.context.password_length = 0
            for fd in range(self.descriptors_cap):
                if self.descriptors[fd].kind == DESCRIPTOR_CLIENT:
                    self.descriptors[fd].connection.session.authenticated = True
        else:
            self.context.password = self.password_bytes
            self.context.password_length = len(self.password_bytes)

    @property
    def fsync(self):
        """The append-only file's fsync policy (None without a log)."""
        return None if self.append_only_file is None else self.append_only_file.policy

    @fsync.setter
    def fsync(self, str policy):
        if self.append_only_file is not None:
            self.append_only_file.policy = policy

    @property
    def aof_rewrite_min_bytes(self):
        return None if self.append_only_file is None else self.append_only_file.rewrite_min_bytes

    @aof_rewrite_min_bytes.setter
    def aof_rewrite_min_bytes(self, uint64_t value):
        if self.append_only_file is not None:
            self.append_only_file.rewrite_min_bytes = value

    @property
    def slowlog_log_slower_than(self):
        return self.context.limits.slowlog_log_slower_than

    @slowlog_log_slower_than.setter
    def slowlog_log_slower_than(self, int64_t value):
        self.context.limits.slowlog_log_slower_than = value

    @property
    def slowlog_max_len(self):
        return self.context.limits.slowlog_max_len

    @slowlog_max_len.setter
    def slowlog_max_len(self, size_t value):
        self.context.limits.slowlog_max_len = value      # a shorter log is trimmed at its next entry

    @property
    def maxmemory(self):
        """The memory limit in bytes (0: none); see kvfast/_evict.pyx."""
        return self.context.memory.maxmemory

    @maxmemory.setter
    def maxmemory(self, size_t value):
        if memory_configure(&self.context, value, self.context.memory.policy) < 0:
            raise MemoryError()

    @property
    def maxmemory_policy(self):
        return policy_name(self.context.memory.policy).decode()

    @maxmemory_policy.setter
    def maxmemory_policy(self, str policy):
        self.configure_memory(self.context.memory.maxmemory, policy)

    cdef void release(self) noexcept:
        cdef size_t fd
        cdef int i
        for fd in range(self.descriptors_cap):
            if self.descriptors[fd].kind == DESCRIPTOR_CLIENT:
                self.close_connection(self.descriptors[fd].connection)
        free(self.descriptors)
        self.descriptors = NULL
        self.descriptors_cap = 0
        free(self.write_queue)
        self.write_queue = NULL
        self.write_queue_cap = self.write_queue_len = 0
        free(self.shared_input)
        self.shared_input = NULL
        store_free(&self.context.store)
        store_free(&self.context.expires)
        store_free(&self.context.watched)
        stats_free(&self.context)
        if self.epoll_fd >= 0:
            close(self.epoll_fd)
            self.epoll_fd = -1
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        for i in range(2):
            if self.signal_pipe[i] >= 0:
                close(self.signal_pipe[i])
                self.signal_pipe[i] = -1

    # ---- the loop ---------------------------------------------------------------

    cdef int run_until_stopped(self) noexcept nogil:
        """Serve until woken (RUN_STOPPED), interrupted by a signal
        (RUN_INTERRUPTED) or failing (RUN_FAILED, errno set). The batch in
        progress is finished and its replies written before returning.

        While the store is resizing, epoll_wait does not block, and idle
        iterations advance the resize instead.
        """
        cdef epoll_event events[MAX_EVENTS]
        cdef int ready, i, fd
        cdef DescriptorKind kind
        cdef int timeout = -1
        cdef bint stop_requested = False, signalled = False
        cdef eventfd_t ignored
        cdef char drained[64]
        cdef Connection *connection
        cdef Connection *held = NULL        # read, answered after the next read (see receive)
        cdef char *held_data = NULL
        cdef size_t held_length = 0
        cdef char *data
        cdef ssize_t length
        # The half of shared_input the next read (or refusal) may use; held bytes
        # read into the shared buffer are always in the other half.
        cdef int free_half = 0
        while True:
            ready = epoll_wait(self.epoll_fd, events, MAX_EVENTS, timeout)
            if ready < 0:
                return RUN_INTERRUPTED if errno == EINTR else RUN_FAILED
            self.now_ms = monotonic_ms()
            self.context.now_ms = self.now_ms
            self.context.expiry.clock_ms = 0        # deadlines are compared with a clock read again
            if self.now_ms >= self.next_sweep_ms:
                self.sweep()
                self.log_client_trouble()
            if self.context.aof != NULL and self.context.aof.failure != 0:
                aof_retry_failed(self.context.aof, &self.context.store, self.now_ms)
                self.watch_rewrite()
            if ready == 0:
                store_migrate_idle(&self.context.store)
                if store_is_resizing(&self.context.expires):
                    store_migrate_idle(&self.context.expires)
                self.expire_keys()
                timeout = self.next_timeout()
                continue
            for i in range(ready):
                fd = events[i].data.fd
                kind = self.descriptors[fd].kind
                if kind == DESCRIPTOR_CLIENT:
                    connection = self.descriptors[fd].connection
                    if events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                        length = self.receive(connection, self.shared_input + free_half * self.read_chunk_bytes,
                                              &data)
                        if length < 0:
                            continue    # the connection was closed
                        if length > 0:
                            # Answer the previous read now, while this one's first key loads.
                            if (i + 1 < ready or held != NULL) and connection.transport != TRANSPORT_METRICS:
                                protocol_prefetch(&self.context, data, <size_t>length, 0, 1)
                            if held != NULL:
                                self.answer_received(held, held_data, held_length)
                            held, held_data, held_length = connection, data, <size_t>length
                            if data != connection.input:
                                free_half ^= 1      # the held bytes occupy that half now
                    if events[i].events & EPOLLOUT:
                        self.queue_write(connection)
                elif kind == DESCRIPTOR_LISTENER:
                    self.accept_clients(&self.listeners[self.descriptors[fd].listener])
                elif kind == DESCRIPTOR_WAKE:
                    eventfd_read(fd, &ignored)
                    stop_requested = True
                elif kind == DESCRIPTOR_SIGNAL:
                    while read(fd, drained, sizeof(drained)) > 0:
                        pass
                    signalled = True
                elif kind == DESCRIPTOR_REWRITE:
                    self.unregister(fd)
                    self.rewrite_watched = False
                    self.context.aof.rewrite_exited = True     # finished after the next flush
                # DESCRIPTOR_FREE: a client closed earlier in this batch
            if held != NULL:
                self.answer_received(held, held_data, held_length)
                held = NULL
            self.write_queued()
            if self.context.kills_pending > 0:
                self.close_killed()
            self.expire_keys()
            timeout = self.next_timeout()
            if stop_requested or self.context.shutdown_requested:
                return RUN_STOPPED
            if signalled:
                return RUN_INTERRUPTED

    cdef void close_killed(self) noexcept nogil:
        """Close the connections CLIENT KILL marked during the batch (after the
        batch, so that no connection is freed while the batch still uses it)."""
        cdef Session *session = self.context.sessions
        cdef Session *next_session
        cdef Connection *connection
        while session != NULL and self.context.kills_pending > 0:
            next_session = session.next_session
            if session.killed:
                connection = self.descriptors[session.fd].connection
                if connection != NULL and &connection.session == session:
                    self.close_connection(connection)
            session = next_session

    cdef void queue_monitors(self) noexcept nogil:
        """Queue the MONITOR clients that were sent lines (and whose socket takes more)."""
        cdef Session *session = self.context.sessions
        cdef Connection *connection
        while session != NULL:
            if session.monitoring and output_pending(&session.output) > 0:
                connection = self.descriptors[session.fd].connection
                if connection != NULL and not connection.write_blocked and not connection.queued:
                    self.queue_write(connection)
            session = session.next_session

    cdef void expire_keys(self) noexcept nogil:
        """A slice of active expiry, when one is due (kvfast/_expire.pyx), after
        the iteration's replies went out; the deletes it logged are written at
        once (under ``--fsync always``, synced), so an expiry is never held in
        memory while the loop sleeps."""
        if self.context.expiry.volatile_keys == 0:
            return
        if expire_slice(&self.context, monotonic_us()) and self.context.aof != NULL:
            self.persist()

    cdef int next_timeout(self) noexcept nogil:
        """epoll_wait's timeout: the sooner of the store's and expiry's."""
        cdef int timeout = self.store_timeout(), expiry
        if self.context.expiry.volatile_keys == 0:
            return timeout
        expiry = expire_timeout_ms(&self.context, monotonic_us())
        if timeout < 0 or (expiry >= 0 and expiry < timeout):
            return expiry
        return timeout

    cdef int store_timeout(self) noexcept nogil:
        """epoll_wait's timeout: 0 while a resize can use idle time; until the next
        sweep while idle clients may time out or refused ones wait; else forever."""
        if store_is_resizing(&self.context.store) or store_is_resizing(&self.context.expires):
            return 0
        if self.context.aof != NULL and self.context.aof.failure != 0:
            return <int>(self.context.aof.retry_at_ms - self.now_ms) if self.context.aof.retry_at_ms > self.now_ms \
                else 0
        if self.idle_timeout_ms > 0 or self.refusing > 0 or self.draining > 0 or self.metrics_connections > 0:
            return <int>(self.next_sweep_ms - self.now_ms) if self.next_sweep_ms > self.now_ms else 0
        return -1

    cdef void sweep(self) noexcept nogil:
        """Close connections idle longer than the timeout, refused ones that
        never sent anything within the grace period, and drains past their
        deadline. Runs every SWEEP_INTERVAL_MS at most, and only while any of
        them can exist."""
        cdef size_t fd
        cdef Connection *connection
        cdef int64_t idle
        self.next_sweep_ms = self.now_ms + SWEEP_INTERVAL_MS
        if self.idle_timeout_ms == 0 and self.refusing == 0 and self.draining == 0 and self.metrics_connections == 0:
            return
        for fd in range(self.descriptors_cap):
            if self.descriptors[fd].kind != DESCRIPTOR_CLIENT:
                continue
            connection = self.descriptors[fd].connection
            idle = self.now_ms - connection.last_active_ms
            if connection.draining:
                if self.now_ms >= connection.drain_deadline_ms:
                    self.close_connection(connection)
            elif connection.refusal != REFUSE_NONE:
                if idle > REFUSAL_GRACE_MS:
                    self.close_connection(connection)
            elif connection.transport == TRANSPORT_METRICS:
                if idle > METRICS_IDLE_MS:
                    self.close_connection(connection)
            elif self.idle_timeout_ms > 0 and idle > self.idle_timeout_ms:
                self.context.counters[<int>COUNTER_TIMED_OUT_CLIENTS] += 1
                self.close_connection(connection)

    cdef void log_client_trouble(self) noexcept nogil:
        """Log refused clients, protocol errors and wrong passwords: one line per
        kind at most every EVENT_LOG_INTERVAL_MS, with how many happened since
        the last line; never a line per event, so a flood cannot flood the log."""
        cdef uint64_t counts[EVENT_KINDS]
        cdef const char *what[EVENT_KINDS]
        cdef int kind
        counts[0] = self.context.counters[<int>COUNTER_REJECTED_CONNECTIONS]
        what[0] = b"clients refused: max number of clients reached"
        counts[1] = self.context.counters[<int>COUNTER_PROTECTED_REFUSALS]
        what[1] = b"clients refused by protected mode (not from 127.0.0.1 or ::1)"
        counts[2] = self.context.counters[<int>COUNTER_PROTOCOL_ERRORS]
        what[2] = b"connections closed for a protocol error or an oversized request"
        counts[3] = self.context.counters[<int>COUNTER_AUTH_FAILURES]
        what[3] = b"wrong passwords"
        for kind in range(EVENT_KINDS):
            if counts[kind] != self.events_logged[kind] \
                    and self.now_ms - self.events_logged_at[kind] >= EVENT_LOG_INTERVAL_MS:
                self.log_count(counts[kind] - self.events_logged[kind], what[kind])
                self.events_logged[kind] = counts[kind]
                self.events_logged_at[kind] = self.now_ms

    # ---- descriptors --------------------------------------------------------------

    cdef int register(self, int fd, DescriptorKind kind, int listener=0,
                      Connection *connection=NULL) noexcept nogil:
        """Record what ``fd`` is and add it to epoll for reading. Returns 0, or
        -1 with errno set (ENOMEM, or epoll_ctl's)."""
        if <size_t>fd >= self.descriptors_cap and self.grow_descriptor_table(fd) < 0:
            set_errno(ENOMEM)
            return -1
        if self.watch(fd, EPOLL_CTL_ADD, EPOLLIN) < 0:
            return -1
        self.descriptors[fd].kind = kind
        self.descriptors[fd].listener = listener
        self.descriptors[fd].connection = connection
        return 0

    cdef void unregister(self, int fd) noexcept nogil:
        """Take ``fd`` out of epoll and the table (the caller closes it, if it owns it)."""
        self.watch(fd, EPOLL_CTL_DEL, 0)
        self.descriptors[fd].kind = DESCRIPTOR_FREE
        self.descriptors[fd].connection = NULL

    cdef int grow_descriptor_table(self, int fd) noexcept nogil:
        """Make ``descriptors`` (and the write queue, twice its size, since a
        descriptor closed and reused in one iteration may be queued twice) hold
        index ``fd``. Returns 0 or -1 (out of memory)."""
        cdef size_t capacity = self.descriptors_cap * 2 if self.descriptors_cap else 1024
        cdef size_t i
        while capacity <= <size_t>fd:
            capacity *= 2
        cdef int *queue = <int *>realloc(self.write_queue, 2 * capacity * sizeof(int))
        if queue == NULL:
            return -1
        self.write_queue = queue
        self.write_queue_cap = 2 * capacity
        cdef Descriptor *descriptors = <Descriptor *>realloc(self.descriptors, capacity * sizeof(Descriptor))
        if descriptors == NULL:
            return -1
        for i in range(self.descriptors_cap, capacity):
            descriptors[i].kind = DESCRIPTOR_FREE
            descriptors[i].listener = 0
            descriptors[i].connection = NULL
        self.descriptors = descriptors
        self.descriptors_cap = capacity
        return 0

    cdef int watch(self, int fd, int operation, uint32_t events) noexcept nogil:
        """epoll_ctl with the descriptor itself as the event's data; 0 or -1 (errno)."""
        cdef epoll_event event
        event.events = events
        event.data.u64 = 0
        event.data.fd = fd
        return epoll_ctl(self.epoll_fd, operation, fd, &event)

    # ---- connections ------------------------------------------------------------

    cdef void accept_clients(self, const Listener *listener) noexcept nogil:
        """Accept up to ACCEPTS_PER_EVENT pending clients of one listener.

        When the process is out of descriptors (or memory), accepting pauses
        (the listeners leave the epoll set, so level-triggered readiness does not
        spin) until a connection closes; waiting clients stay in the backlog.
        """
        cdef int fd, _attempt
        cdef sockaddr_storage peer
        cdef socklen_t peer_length
        cdef Refusal refusal
        for _attempt in range(ACCEPTS_PER_EVENT):
            peer_length = sizeof(peer)
            fd = accept4(listener.fd, <sockaddr *>&peer, &peer_length, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    self.pause_accepting()
                return      # EAGAIN: backlog empty; ECONNABORTED and the like: try later
            refusal = REFUSE_NONE
            if listener.transport == TRANSPORT_METRICS:
                pass                # read-only counts, no keys: served to whoever reaches the port
            elif self.local_peers_only and not is_local_peer(listener.transport, &peer):
                refusal = REFUSE_PROTECTED
                self.context.counters[<int>COUNTER_PROTECTED_REFUSALS] += 1
            elif self.context.counters[<int>COUNTER_CONNECTED_CLIENTS] >= self.context.limits.max_clients:
                refusal = REFUSE_MAX_CLIENTS
                self.context.counters[<int>COUNTER_REJECTED_CONNECTIONS] += 1
            if (refusal != REFUSE_NONE and self.refusing >= MAX_REFUSING) \
                    or self.add_connection(fd, listener.transport, refusal, &peer) < 0:
                close(fd)
            if self.accept_paused:
                return

    cdef void pause_accepting(self) noexcept nogil:
        """Stop watching every listener (out of descriptors); a closing
        connection resumes it."""
        cdef int i
        if self.accept_paused:
            return
        for i in range(self.listener_count):
            self.watch(self.listeners[i].fd, EPOLL_CTL_DEL, 0)
        self.accept_paused = True
        self.context.counters[<int>COUNTER_ACCEPT_PAUSES] += 1
        self.log_warning(b"out of file descriptors: not accepting until a client leaves")

    cdef void resume_accepting(self) noexcept nogil:
        cdef int i
        if not self.accept_paused:
            return
        for i in range(self.listener_count):
            self.watch(self.listeners[i].fd, EPOLL_CTL_ADD, EPOLLIN)
        self.accept_paused = False

    cdef void describe_session(self, Connection *connection, const sockaddr_storage *peer) noexcept nogil:
        """What CLIENT LIST and MONITOR show of a client: its descriptor, addresses, age."""
        cdef Session *session = &connection.session
        cdef sockaddr_storage local
        cdef socklen_t local_length = sizeof(local)
        session.fd = connection.fd
        session.unix_socket = connection.transport == TRANSPORT_UNIX
        session.created_ms = self.now_ms
        session.last_active_ms = &connection.last_active_ms
        session.input_length = &connection.input_len
        session.input_capacity = &connection.input_cap
        session.last_command = b"NULL"
        if getsockname(connection.fd, <sockaddr *>&local, &local_length) < 0:
            local.ss_family = 0
        format_address(peer, session.unix_socket, &local, session.address, ADDRESS_BYTES)
        format_address(&local, session.unix_socket, &local, session.local_address, ADDRESS_BYTES)

    cdef int add_connection(self, int fd, Transport transport, Refusal refusal,
                            const sockaddr_storage *peer=NULL) noexcept nogil:
        """Register a freshly accepted socket; 0, or -1 if out of memory. A refused
        one is kept only until its first bytes say which protocol to refuse it in
        (see refuse), and is not counted as a client."""
        cdef int one = 1
        cdef Connection *connection = <Connection *>calloc(1, sizeof(Connection))
        if connection == NULL:
            return -1
        if transport != TRANSPORT_UNIX:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        connection.fd = fd
        connection.transport = transport
        connection.refusal = refusal
        connection.last_active_ms = self.now_ms
        connection.session.resp_version = 2
        connection.session.authenticated = self.context.password == NULL
        self.next_client_id += 1
        connection.session.id = self.next_client_id
        if self.register(fd, DESCRIPTOR_CLIENT, 0, connection) < 0:
            free(connection)
            return -1
        self.account(connection)
        connection.interest = EPOLLIN
        if refusal != REFUSE_NONE or transport == TRANSPORT_METRICS:
            if refusal != REFUSE_NONE:
                self.refusing += 1
            else:
                self.metrics_connections += 1
            self.next_sweep_ms = self.now_ms + SWEEP_INTERVAL_MS
            return 0
        self.describe_session(connection, peer)
        session_link(&self.context, &connection.session)
        self.context.counters[<int>COUNTER_CONNECTIONS_RECEIVED] += 1
        self.context.counters[<int>COUNTER_CONNECTED_CLIENTS] += 1
        return 0

    cdef void close_connection(self, Connection *connection) noexcept nogil:
        """Close the socket (which also removes it from epoll) and free everything
        the connection held."""
        self.descriptors[connection.fd].kind = DESCRIPTOR_FREE
        self.descriptors[connection.fd].connection = NULL
        close(connection.fd)
        if connection.draining:
            self.draining -= 1
        if connection.refusal != REFUSE_NONE:
            self.refusing -= 1
        elif connection.transport == TRANSPORT_METRICS:
            self.metrics_connections -= 1
        else:
            self.context.counters[<int>COUNTER_CONNECTED_CLIENTS] -= 1
            session_unlink(&self.context, &connection.session)
        free(connection.input)
        output_free(&connection.session.output)
        multi_release(&self.context, &connection.session)      # a pending queue is discarded, watches dropped
        self.context.memory.client_bytes -= connection.counted_bytes
        free(connection)
        self.resume_accepting()

    cdef void update_interest(self, Connection *connection) noexcept nogil:
        """Register exactly the events the connection's state calls for:
        EPOLLIN unless closing (but draining) or paused, EPOLLOUT only while a
        write was refused."""
        cdef uint32_t wanted = 0
        if connection.draining or (not connection.session.closing and not connection.reading_paused):
            wanted |= EPOLLIN
        if connection.write_blocked:
            wanted |= EPOLLOUT
        if wanted != connection.interest:
            if self.watch(connection.fd, EPOLL_CTL_MOD, wanted) == 0:
                connection.interest = wanted

    # ---- input ------------------------------------------------------------------

    cdef ssize_t receive(self, Connection *connection, char *scratch, char **data) noexcept nogil:
        """One read from the connection: into ``scratch`` (the free half of the
        shared buffer, ``read_chunk_bytes``) when it holds no incomplete
        request, else into the free room after that request in its own buffer
        (at least ``read_chunk_bytes``; more as a large request grows it, see
        reserve_input). A draining connection's bytes are discarded (drain).

        Returns the number of bytes now waiting at ``*data`` to be answered
        (answer_received), 0 when there is nothing to answer (nothing arrived, the
        connection waits for its output to drain, or it was refused), or -1 if
        the connection was closed (peer gone, read error, or out of memory).
        Reading and answering are split so the loop can answer one connection's
        requests after issuing the next connection's read: with many clients at
        pipeline 1, the table miss of one request then overlaps the next recv.
        """
        cdef ssize_t received
        if connection.draining:
            return self.drain(connection, scratch)
        if connection.session.closing or connection.reading_paused:
            self.queue_write(connection)         # woken by ERR/HUP: let the write decide
            return 0
        connection.last_active_ms = self.now_ms
        if connection.refusal != REFUSE_NONE:
            return self.refuse(connection, scratch)
        if connection.input_len == 0:
            data[0] = scratch
            received = recv(connection.fd, scratch, self.read_chunk_bytes, 0)
        else:
            if self.reserve_input(connection) < 0:
                self.close_connection(connection)
                return -1
            data[0] = connection.input
            received = recv(connection.fd, connection.input + connection.input_len,
                            connection.input_cap - connection.input_len, 0)
        if received <= 0:
            if received < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            return self.end_of_input(connection)
        return <ssize_t>connection.input_len + received

    cdef int answer_received(self, Connection *connection, char *data, size_t length) noexcept nogil:
        """Answer every complete request of what receive() returned, queue the
        replies for writing, and pause or resume reading. Returns 0, or -1 if the
        connection was closed. An incomplete request that can no longer fit its
        limit (a native line over ``max_line_bytes``, a RESP request over
        ``client_query_buffer_limit``) is refused and the connection closes after
        the reply (and a drain of the rest, see start_drain).
        """
        if self.consume(connection, data, length) < 0:
            return -1
        if output_pending(&connection.session.output) > 0:
            self.queue_write(connection)
        self.update_interest(connection)
        self.account(connection)
        return 0

    cdef void account(self, Connection *connection) noexcept nogil:
        """Bring context.memory.client_bytes (part of maxmemory's used memory)
        up to date with this connection's struct, buffers and transaction
        queue, after the loop may have changed them."""
        cdef size_t now = sizeof(Connection) + connection.input_cap + connection.session.output.capacity
        if connection.session.transaction != NULL:
            now += sizeof(Transaction) + connection.session.transaction.queue_capacity
        self.context.memory.client_bytes += now - connection.counted_bytes
        connection.counted_bytes = now

    cdef int consume(self, Connection *connection, char *data, size_t length) noexcept nogil:
        """Hand ``data[:length]`` (the shared buffer or the connection's own) to
        the protocol router and keep what it did not use in the connection's
        buffer.

        The router stops early when the connection starts closing, or when its
        unsent output reaches the high-water mark: the requests not answered
        yet then wait in its buffer and reading pauses (backpressure) until
        write_output has sent enough. (An incomplete request that can no longer
        fit its limit is refused by its protocol, and the connection closes
        after the reply.) Returns 0, or -1 if the connection was closed (out of
        memory).
        """
        cdef size_t consumed, leftover
        if connection.transport == TRANSPORT_METRICS:
            consumed = metrics_answer(&self.context, &connection.session, data, length)
        else:
            stats_batch_begin(&self.context)
            consumed = protocol_answer(&self.context, &connection.session, data, length)
            stats_batch_end(&self.context)
        if consumed == <size_t>-1:
            self.close_connection(connection)
            return -1
        leftover = 0 if connection.session.closing else length - consumed
        if self.keep_leftover(connection, data, consumed, leftover) < 0:
            self.close_connection(connection)
            return -1
        if output_pending(&connection.session.output) >= self.context.limits.output_high_water_bytes:
            connection.reading_paused = True
        return 0

    cdef int refuse(self, Connection *connection, char *scratch) noexcept nogil:
        """Turn a refused connection away in the protocol its first bytes speak
        (see protocol_refuse), then close it. Returns -1 if it was closed at
        once (nothing to read: the peer left, or out of memory)."""
        cdef ssize_t received = recv(connection.fd, scratch, self.read_chunk_bytes, 0)
        if received <= 0:
            if received < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            self.close_connection(connection)
            return -1
        if protocol_refuse(&connection.session, connection.refusal, scratch) < 0:
            self.close_connection(connection)
            return -1
        self.update_interest(connection)
        self.queue_write(connection)
        return 0

    cdef void start_drain(self, Connection *connection) noexcept nogil:
        """A refused request's reply has been sent: end our side (shutdown,
        so the client sees the reply and then EOF, not a reset) and read and
        discard what it still sends, until it closes, DRAIN_TIMEOUT_MS pass or
        DRAIN_MAX_BYTES arrive; then close. Closing at once with unread bytes
        would make the kernel send a reset, and a client still writing its
        request would get ECONNRESET instead of the error. Nothing is buffered:
        the bytes are read into the shared scratch buffer and dropped."""
        self.discard_input(connection)
        shutdown(connection.fd, SHUT_WR)
        connection.draining = True
        connection.drain_deadline_ms = self.now_ms + DRAIN_TIMEOUT_MS
        connection.drained_bytes = 0
        self.draining += 1
        if self.next_sweep_ms > self.now_ms + SWEEP_INTERVAL_MS:
            self.next_sweep_ms = self.now_ms + SWEEP_INTERVAL_MS
        self.update_interest(connection)

    cdef ssize_t drain(self, Connection *connection, char *scratch) noexcept nogil:
        """One read of a draining connection, discarded (see start_drain).
        Returns 0, or -1 if the connection was closed (EOF, error, too many bytes)."""
        cdef ssize_t received = recv(connection.fd, scratch, self.read_chunk_bytes, 0)
        if received < 0 and (errno == EAGAIN or errno == EINTR):
            return 0
        if received > 0:
            connection.drained_bytes += <size_t>received
            if connection.drained_bytes <= DRAIN_MAX_BYTES:
                return 0
        self.close_connection(connection)
        return -1

    cdef int end_of_input(self, Connection *connection) noexcept nogil:
        """The peer closed its side (or the read failed): close now, or after the
        replies already produced have been written. Returns -1 if closed now."""
        if output_pending(&connection.session.output) > 0:
            connection.session.closing = True
            self.discard_input(connection)
            self.update_interest(connection)
            self.queue_write(connection)
            return 0
        self.close_connection(connection)
        return -1

    cdef int reserve_input(self, Connection *connection) noexcept nogil:
        """Room for one more read (of at least ``read_chunk_bytes``) after the
        incomplete request already held. Returns 0, or -1 (ENOMEM).

        The buffer doubles, so a large request costs a logarithmic number of
        copies, and the free room (what receive() reads into at once, as
        Redis reads big arguments whole) grows with it. It grows only with
        bytes received, never with a size a header declares: at most twice
        what is held, and never beyond the query buffer limit plus one read
        (the protocol refuses an incomplete request over its limit)."""
        cdef size_t needed = connection.input_len + self.read_chunk_bytes
        cdef size_t capacity = connection.input_cap * 2
        cdef size_t ceiling = self.context.limits.query_buffer_limit + self.read_chunk_bytes
        cdef char *grown
        if needed <= connection.input_cap:
            return 0
        if capacity > ceiling:
            capacity = ceiling
        if capacity < needed:
            capacity = needed
        grown = <char *>realloc(connection.input, capacity)
        if grown == NULL:
            return -1
        connection.input = grown
        connection.input_cap = capacity
        self.note_peak(&self.context.peak_input_bytes, capacity)
        return 0

    cdef void note_peak(self, size_t *peak, size_t value) noexcept nogil:
        """Keep the largest input or output buffer of the recent window (INFO's
        client_recent_max_input_buffer and ..._output_buffer); a window older
        than PEAK_WINDOW_MS starts over."""
        if self.now_ms - self.context.peak_window_ms >= PEAK_WINDOW_MS:
            self.context.peak_window_ms = self.now_ms
            self.context.peak_input_bytes = self.context.peak_output_bytes = 0
        if value > peak[0]:
            peak[0] = value

    cdef int keep_leftover(self, Connection *connection, const char *data,
                           size_t consumed, size_t leftover) noexcept nogil:
        """Keep the unanswered tail (an incomplete request) in the connection's own
        buffer, or free that buffer when nothing is left. Returns 0 or -1 (ENOMEM)."""
        if leftover == 0:
            self.discard_input(connection)
            return 0
        # Bytes outside the connection's own buffer are in the shared one: copy the
        # tail out (a connection reads into the shared buffer only while it has no
        # input, and discard_input leaves input NULL then, so nothing leaks here).
        if data != connection.input:
            connection.input = <char *>malloc(leftover)
            if connection.input == NULL:
                return -1
            connection.input_cap = leftover
            memcpy(connection.input, data + consumed, leftover)
        elif consumed > 0:
            memmove(connection.input, connection.input + consumed, leftover)
        connection.input_len = leftover
        return 0

    cdef void discard_input(self, Connection *connection) noexcept nogil:
        free(connection.input)
        connection.input = NULL
        connection.input_len = connection.input_cap = 0
        connection.session.native_scanned = connection.session.scan_position = 0

    # ---- output -----------------------------------------------------------------

    cdef void queue_write(self, Connection *connection) noexcept nogil:
        """Remember to write this connection's output after the current batch."""
        if connection.queued:
            return
        debug_assert(self.write_queue_len < self.write_queue_cap)
        if self.write_queue_len == self.write_queue_cap:
            return      # cannot happen (twice the table); EPOLLOUT or the next read retries
        connection.queued = True
        self.write_queue[self.write_queue_len] = connection.fd
        self.write_queue_len += 1

    cdef void write_queued(self) noexcept nogil:
        """Write the output of every queued connection, after making the
        iteration's log records durable (persist). Writing may answer requests
        that backpressure held back (write_output); a connection whose new
        replies depend on new records is queued again, and the next round
        persists those before sending them. The queue is compacted each round,
        so it never holds a connection twice."""
        cdef size_t i, end
        cdef Connection *connection
        while True:
            if self.context.monitor_count > 0:
                self.queue_monitors()
            self.persist()
            end = self.write_queue_len
            if end == 0:
                break
            for i in range(end):
                connection = self.descriptors[self.write_queue[i]].connection
                if connection != NULL and connection.queued:
                    connection.queued = False
                    self.write_output(connection)
            # Keep only what was queued again during this round.
            memmove(self.write_queue, self.write_queue + end, (self.write_queue_len - end) * sizeof(int))
            self.write_queue_len -= end

    cdef void persist(self) noexcept nogil:
        """Before any reply of the batch is sent: the log's side
        (aof_persist_batch writes the batch's records, and rewrites are
        finished or started there). If the records could not be written, each
        queued connection's replies from its first unpersisted write on are
        withheld and the connection closes after the earlier ones: a write
        not in the log is never acknowledged.
        """
        cdef AppendLog *aof = self.context.aof
        cdef size_t i
        cdef bint persisted
        cdef Connection *connection
        cdef Session *session
        if aof == NULL:
            return
        persisted = aof_persist_batch(aof, &self.context.store, self.now_ms)
        for i in range(self.write_queue_len):
            connection = self.descriptors[self.write_queue[i]].connection
            if connection == NULL or not connection.session.unpersisted:
                continue
            session = &connection.session
            session.unpersisted = False
            if not persisted:
                debug_assert(session.unpersisted_from <= output_pending(&session.output))
                if session.unpersisted_from > output_pending(&session.output):
                    session.unpersisted_from = output_pending(&session.output)
                session.output.end = session.output.start + session.unpersisted_from
                session.closing = True
                self.discard_input(connection)
                connection.reading_paused = False
                self.update_interest(connection)
        self.watch_rewrite()

    cdef void watch_rewrite(self) noexcept nogil:
        """Register a running rewrite child's pipe with epoll (once): it hangs up
        when the child exits, and persist() then finishes the rewrite."""
        cdef AppendLog *aof = self.context.aof
        if aof.rewrite_pipe >= 0 and not self.rewrite_watched:
            if self.register(aof.rewrite_pipe, DESCRIPTOR_REWRITE) == 0:
                self.rewrite_watched = True

    cdef void write_output(self, Connection *connection) noexcept nogil:
        """Write as much pending output as the socket takes.

        All sent: the buffer is reset (freed if large) and a closing connection
        is closed. Otherwise EPOLLOUT stays armed. Once the backlog is under half
        the high-water mark, paused reading resumes, and requests that
        backpressure left unanswered in the connection's buffer are answered
        first (their replies are then sent in the same pass). A send error
        closes the connection.
        """
        cdef Output *output = &connection.session.output
        cdef ssize_t sent
        self.note_peak(&self.context.peak_output_bytes, output_pending(output))
        while True:
            # (On Linux EWOULDBLOCK is EAGAIN, so EAGAIN alone covers both here and in recv.)
            while output.start < output.end:
                sent = send(connection.fd, output.data + output.start, output.end - output.start, MSG_NOSIGNAL)
                if sent < 0:
                    if errno == EINTR:
                        continue
                    if errno == EAGAIN:
                        break
                    self.close_connection(connection)
                    return
                output.start += <size_t>sent
                connection.last_active_ms = self.now_ms
            connection.write_blocked = output.start < output.end
            if not connection.write_blocked:
                output.start = output.end = 0
                if output.capacity > SPARE_OUTPUT_BYTES:
                    output_free(output)
                if connection.session.closing:
                    if connection.session.refused and not connection.draining:
                        self.start_drain(connection)
                    elif not connection.draining:
                        self.close_connection(connection)
                    return
            if not connection.reading_paused \
                    or output_pending(output) * 2 >= self.context.limits.output_high_water_bytes:
                break
            connection.reading_paused = False
            if connection.input_len == 0:
                break                           # nothing waits: reading resumes
            if self.consume(connection, connection.input, connection.input_len) < 0:
                return
            if self.context.aof != NULL and self.context.aof.pending_len > 0:
                # Its new replies may acknowledge, or show, writes not in the log
                # yet (its own or another connection's from this round): they
                # go out after write_queued's next persist.
                self.queue_write(connection)
                break
            if connection.write_blocked or output_pending(output) == 0:
                break
        self.update_interest(connection)
        self.account(connection)

    # ---- logging ----------------------------------------------------------------

    cdef void log_warning(self, const char *message) noexcept nogil:
        """Log through Python's ``logging`` (takes the GIL: rare events only)."""
        with gil:
            if self.logger is not None:
                self.logger.warning(message.decode())

    cdef void log_count(self, uint64_t count, const char *what) noexcept nogil:
        with gil:
            if self.logger is not None:
                self.logger.warning("%d %s", count, what.decode())


cdef bint is_local_peer(Transport transport, const sockaddr_storage *peer) noexcept nogil:
    """Whether a peer counts as local, the clients protected mode still serves
    (as Redis does): anyone on a unix socket (the file's permissions decide
    who can connect), and 127.0.0.1 or ::1 (or ::ffff:127.0.0.1) over TCP."""
    cdef const unsigned char *address
    cdef int i
    if transport == TRANSPORT_UNIX:
        return True
    if peer.ss_family == AF_INET:
        return (<const sockaddr_in *>peer).sin_addr.s_addr == htonl(INADDR_LOOPBACK)
    if peer.ss_family != AF_INET6:
        return False
    address = (<const sockaddr_in6 *>peer).sin6_addr.s6_addr
    for i in range(10):
        if address[i] != 0:
            return False
    if address[10] == 0 and address[11] == 0:
        for i in range(12, 15):
            if address[i] != 0:
                return False
        return address[15] == 1
    return (address[10] == 0xff and address[11] == 0xff and address[12] == 127 and address[13] == 0
            and address[14] == 0 and address[15] == 1)


cdef extern from *:
    """
    #include <arpa/inet.h>
    #include <stdio.h>
    #include <sys/socket.h>
    #include <sys/un.h>
    /* "ip:port" (IPv6 without brackets, as Redis), or a unix socket's "path:0"
       (the path of local, the listening socket's name: a unix client has none). */
    static void kvfast_format_address(const struct sockaddr_storage *address, int unix_socket,
                                      const struct sockaddr_storage *local, char *text, size_t size) {
        char host[INET6_ADDRSTRLEN];
        if (unix_socket) {
            const char *path = local->ss_family == AF_UNIX ? ((const struct sockaddr_un *)local)->sun_path : "";
            snprintf(text, size, "%s:0", path);
        } else if (address->ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)address;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            snprintf(text, size, "%s:%d", host, ntohs(in->sin_port));
        } else if (address->ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            snprintf(text, size, "%s:%d", host, ntohs(in6->sin6_port));
        } else {
            snprintf(text, size, "?:0");
        }
    }
    """
    void format_address "kvfast_format_address" (const sockaddr_storage *address, bint unix_socket,
                                                 const sockaddr_storage *local, char *text, size_t size) nogil
    int getsockname(int fd, sockaddr *address, socklen_t *length) nogil
