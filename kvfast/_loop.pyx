# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server's event loop: one thread, level-triggered epoll, no GIL.

Everything between ``epoll_wait`` and the replies leaving the socket (reads,
request splitting, parsing, store access, writes) is C code running inside
``with nogil:``. The GIL is taken only at the edges: construction, ``run()``
returning to Python for a signal or a stop, ``close()``, ``stats()`` and the
rare warning log line.

One iteration, as in Redis's ae/networking:
  1. ``epoll_wait`` returns ready descriptors.
  2. The listening socket accepts a bounded number of clients (over
     ``max_clients``, or not from loopback in protected mode, they are refused
     in the protocol of their first bytes); each client with input gets one
     bounded read (``read_chunk_bytes``); its complete requests are answered in
     order into its output buffer, until that buffer reaches the high-water
     mark (backpressure: the rest waits, reading pauses), and the connection
     is queued for writing. A client's requests are answered just after the
     next client's read, so that its first key is loaded from memory while
     that recv runs (see receive()).
  3. After the batch, the append-only log's new records (if the log is on)
     are written, and under ``--fsync always`` synced, in one go (persist);
     then queued output is written directly. Only a connection
     whose output did not all fit in the socket gets EPOLLOUT armed, and it is
     disarmed once the output has drained.
  4. Every 250 ms at most, idle clients past the timeout are closed and client
     trouble (refusals, protocol errors, wrong passwords) is logged, once per
     kind per 10 s.
Each request is routed by its first byte: ``*`` starts a RESP (Redis protocol)
request, answered by ``_resp``; anything else is a native text line, answered
by ``_native``. One connection may mix both. Requests that arrive in one piece
are answered straight from a buffer shared by the whole loop; a connection owns
an input buffer only while it holds an incomplete request. The shared buffer has
two halves, because one client's read is held, unanswered, while the next
client's read lands in the other half.
"""
import os

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.time cimport time
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memchr, memcpy, memmove
from posix.unistd cimport close, read

from kvfast._system cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP,
    EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL, EPOLL_CLOEXEC,
    accept4, setsockopt, recv, send, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL,
    IPPROTO_TCP, TCP_NODELAY, O_NONBLOCK, O_CLOEXEC, pipe2, eventfd, sockaddr, sockaddr_storage,
    sockaddr_in, sockaddr_in6, socklen_t, AF_INET, AF_INET6, INADDR_LOOPBACK, htonl,
    timespec, clock_gettime, CLOCK_MONOTONIC, eventfd_t, eventfd_read, eventfd_write, EFD_NONBLOCK, EFD_CLOEXEC,
)
from kvfast._aof cimport AppendOnlyFile, AppendLog, aof_flush, aof_poll_sync_thread, aof_retry
from kvfast._rewrite cimport (
    aof_rewrite_due, aof_start_rewrite, aof_finish_rewrite, aof_rewrite_to_recover, aof_save_snapshot_now,
)
from kvfast._context cimport ServerContext, Session
from kvfast._native cimport native_answer, native_refuse_long_line, native_prefetch_key
from kvfast._output cimport Output, output_pending, output_free, output_text
from kvfast._resp cimport resp_answer, resp_refuse_too_large, resp_prefetch_key
from kvfast._store cimport store_init, store_free, store_count, store_memory_bytes, store_migrate_idle


cdef enum:
    MAX_EVENTS = 256            # descriptors taken from one epoll_wait
    ACCEPTS_PER_EVENT = 1000    # new clients accepted per readable event of the listener (as Redis)
    SPARE_OUTPUT_BYTES = 16384  # an emptied output buffer larger than this is freed
    MAX_REFUSING = 1024         # connections being refused at once; beyond, closed without a word
    REFUSAL_GRACE_MS = 1000     # a refused client that sends nothing is closed after this
    SWEEP_INTERVAL_MS = 250     # how often idle and refused connections are looked for
    UNAUTHENTICATED_MAX_LINE = 1024   # native line limit until ``auth`` succeeds
    EVENT_LOG_INTERVAL_MS = 10000     # each kind of client trouble is logged at most this often
    EVENT_KINDS = 4
    PREFETCH_REQUESTS = 16      # pipelined requests whose keys are prefetched ahead of answering them

cdef enum Refusal:
    REFUSE_NONE = 0
    REFUSE_MAX_CLIENTS = 1      # max_clients already connected
    REFUSE_PROTECTED = 2        # protected mode and the peer is not 127.0.0.1 or ::1

cdef enum RunResult:
    RUN_FAILED = -1             # a system call failed; errno says why
    RUN_STOPPED = 0             # wake() was called
    RUN_INTERRUPTED = 1         # a signal arrived; Python handlers must run


cdef struct Connection:
    int fd
    uint32_t interest           # epoll events currently registered
    bint reading_paused         # too much unsent output: stop reading (backpressure)
    bint write_blocked          # the socket refused part of the output: EPOLLOUT armed
    bint queued                 # in the loop's write queue for this iteration
    char *input                 # unanswered requests (usually one incomplete one), or NULL
    size_t input_len
    size_t input_cap
    size_t input_scanned        # leading bytes of an incomplete native line known to hold no newline
    int64_t last_active_ms      # last read or write, for the idle timeout
    Refusal refusal             # why the connection is being turned away, if it is
    Session session             # protocol state and the output buffer


cdef class EventLoop:
    """The compiled server loop over an already listening, non-blocking socket.

    ``run()`` serves until ``wake()`` is called (from any thread, or a signal
    handler). The listening socket stays owned by the caller; the loop owns its
    epoll, eventfd and signal-pipe descriptors, every client connection and the
    store (inside ``context``).
    """
    cdef int epoll_fd
    cdef int wake_fd
    cdef int signal_pipe[2]             # Python's signal.set_wakeup_fd writes to [1]
    cdef int listen_fd
    cdef bint accept_paused
    cdef size_t read_chunk_bytes
    cdef size_t output_high_water_bytes
    cdef char *shared_input
    cdef Connection **connections       # indexed by file descriptor
    cdef size_t connections_cap
    cdef int *write_queue               # descriptors with output to write this iteration
    cdef size_t write_queue_len
    cdef size_t write_queue_cap
    cdef uint64_t next_client_id
    cdef size_t max_clients
    cdef int64_t idle_timeout_ms        # 0: never
    cdef bint protected_mode            # only 127.0.0.1 and ::1 may connect
    cdef size_t refusing                # connections being turned away (not clients)
    cdef int64_t now_ms                 # monotonic clock, read after each epoll_wait
    cdef int64_t next_sweep_ms
    cdef bytes password                 # kept alive: context.password points into it
    cdef uint64_t events_logged[EVENT_KINDS]    # counter values already reported in the log
    cdef int64_t events_logged_at[EVENT_KINDS]
    cdef ServerContext context          # the store and the counters, shared with the protocols
    cdef AppendOnlyFile append_only_file    # kept alive: context.aof points into it (None: no log)
    cdef bint rewrite_watched           # the rewrite child's pipe is registered with epoll
    cdef object logger

    def __cinit__(self, int listen_fd, int port, size_t max_line_bytes, size_t max_request_bytes,
                  size_t read_chunk_bytes, size_t output_high_water_bytes, size_t max_clients=10000,
                  double timeout=0, bytes password=None, bint protected_mode=False, logger=None,
                  AppendOnlyFile append_only_file=None,
                  # TEMP: accepted and ignored until the loop rewrite enforces them (see kvfast.server).
                  unauthenticated_max_line_bytes=None, unauthenticated_max_arguments=None,
                  unauthenticated_max_bulk_bytes=None, max_bulk_bytes=None, max_arguments=None, version=None):
        self.epoll_fd = -1
        self.wake_fd = -1
        self.signal_pipe[0] = self.signal_pipe[1] = -1
        self.listen_fd = listen_fd
        self.read_chunk_bytes = read_chunk_bytes
        self.output_high_water_bytes = output_high_water_bytes
        self.logger = logger
        store_init(&self.context.store)
        self.context.port = port
        self.context.started_at = time(NULL)
        self.context.max_line_bytes = max_line_bytes
        self.context.max_request_bytes = max_request_bytes
        self.max_clients = max_clients
        self.idle_timeout_ms = <int64_t>(timeout * 1000)
        self.protected_mode = protected_mode
        self.password = password
        self.append_only_file = append_only_file
        if append_only_file is not None:
            self.context.aof = &append_only_file.log
        if password is not None:
            self.context.password = self.password
            self.context.password_length = len(self.password)
        self.shared_input = <char *>malloc(2 * read_chunk_bytes)     # two halves: see receive()
        if self.shared_input == NULL:
            raise MemoryError()
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.epoll_fd < 0:
            raise_os_error()
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            raise_os_error()
        if pipe2(self.signal_pipe, O_NONBLOCK | O_CLOEXEC) < 0:
            raise_os_error()
        if self.watch(self.listen_fd, EPOLL_CTL_ADD, EPOLLIN) < 0 \
                or self.watch(self.wake_fd, EPOLL_CTL_ADD, EPOLLIN) < 0 \
                or self.watch(self.signal_pipe[0], EPOLL_CTL_ADD, EPOLLIN) < 0:
            raise_os_error()

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
        return self.append_only_file.replay_into(&self.context.store, progress)

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
        """Counters of the loop and the store, as a dict of ints."""
        return {
            "connected_clients": self.context.counters.connected_clients,
            "connections_accepted": self.context.counters.connections_accepted,
            "commands_processed": self.context.counters.commands_processed,
            "invalid_requests": self.context.counters.invalid_requests,
            "protocol_errors": self.context.counters.protocol_errors,
            "keyspace_hits": self.context.counters.keyspace_hits,
            "keyspace_misses": self.context.counters.keyspace_misses,
            "accept_pauses": self.context.counters.accept_pauses,
            "rejected_connections": self.context.counters.rejected_connections,
            "protected_mode_refusals": self.context.counters.protected_refusals,
            "timed_out_clients": self.context.counters.timed_out_clients,
            "auth_failures": self.context.counters.auth_failures,
            "keys": store_count(&self.context.store),
            "store_bytes": store_memory_bytes(&self.context.store),
            "max_moved_per_step": self.context.store.stats.max_moved_per_step,
            **(self.append_only_file.stats() if self.append_only_file is not None else {}),
        }

    cdef void release(self) noexcept:
        cdef size_t fd
        cdef int i
        for fd in range(self.connections_cap):
            if self.connections[fd] != NULL:
                self.close_connection(self.connections[fd])
        free(self.connections)
        self.connections = NULL
        self.connections_cap = 0
        free(self.write_queue)
        self.write_queue = NULL
        self.write_queue_cap = self.write_queue_len = 0
        free(self.shared_input)
        self.shared_input = NULL
        store_free(&self.context.store)
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
            if self.now_ms >= self.next_sweep_ms:
                self.sweep()
                self.log_client_trouble()
            if self.context.aof != NULL and self.context.aof.failure != 0:
                self.retry_log()
            if ready == 0:
                store_migrate_idle(&self.context.store)
                timeout = self.next_timeout()
                continue
            for i in range(ready):
                fd = events[i].data.fd
                if fd == self.listen_fd:
                    self.accept_clients()
                elif fd == self.wake_fd:
                    eventfd_read(self.wake_fd, &ignored)
                    stop_requested = True
                elif fd == self.signal_pipe[0]:
                    while read(fd, drained, sizeof(drained)) > 0:
                        pass
                    signalled = True
                elif self.context.aof != NULL and fd == self.context.aof.rewrite_pipe:
                    self.watch(fd, EPOLL_CTL_DEL, 0)
                    self.rewrite_watched = False
                    self.context.aof.rewrite_exited = True     # finished after the next flush
                else:
                    connection = self.connections[fd]
                    if connection == NULL:
                        continue        # closed earlier in this batch
                    if events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                        length = self.receive(connection, self.shared_input + free_half * self.read_chunk_bytes,
                                              &data)
                        if length < 0:
                            continue    # the connection was closed
                        if length > 0:
                            # Answer the previous read now, while this one's first key loads.
                            if i + 1 < ready or held != NULL:
                                self.prefetch_keys(data, <size_t>length, 0, 1)
                            if held != NULL:
                                self.answer_received(held, held_data, held_length)
                            held, held_data, held_length = connection, data, <size_t>length
                            if data != connection.input:
                                free_half ^= 1      # the held bytes occupy that half now
                    if events[i].events & EPOLLOUT:
                        self.queue_write(connection)
            if held != NULL:
                self.answer_received(held, held_data, held_length)
                held = NULL
            self.write_queued()
            timeout = self.next_timeout()
            if stop_requested:
                return RUN_STOPPED
            if signalled:
                return RUN_INTERRUPTED

    cdef int next_timeout(self) noexcept nogil:
        """epoll_wait's timeout: 0 while a resize can use idle time; until the next
        sweep while idle clients may time out or refused ones wait; else forever."""
        if self.context.store.draining.capacity != 0:
            return 0
        if self.context.aof != NULL and self.context.aof.failure != 0:
            return <int>(self.context.aof.retry_at_ms - self.now_ms) if self.context.aof.retry_at_ms > self.now_ms \
                else 0
        if self.idle_timeout_ms > 0 or self.refusing > 0:
            return <int>(self.next_sweep_ms - self.now_ms) if self.next_sweep_ms > self.now_ms else 0
        return -1

    cdef void sweep(self) noexcept nogil:
        """Close connections idle longer than the timeout, and refused ones that
        never sent anything within the grace period. Runs every
        SWEEP_INTERVAL_MS at most, and only while either can exist."""
        cdef size_t fd
        cdef Connection *connection
        cdef int64_t idle
        self.next_sweep_ms = self.now_ms + SWEEP_INTERVAL_MS
        if self.idle_timeout_ms == 0 and self.refusing == 0:
            return
        for fd in range(self.connections_cap):
            connection = self.connections[fd]
            if connection == NULL:
                continue
            idle = self.now_ms - connection.last_active_ms
            if connection.refusal != REFUSE_NONE:
                if idle > REFUSAL_GRACE_MS:
                    self.close_connection(connection)
            elif self.idle_timeout_ms > 0 and idle > self.idle_timeout_ms:
                self.context.counters.timed_out_clients += 1
                self.close_connection(connection)

    cdef void log_client_trouble(self) noexcept nogil:
        """Log refused clients, protocol errors and wrong passwords: one line per
        kind at most every EVENT_LOG_INTERVAL_MS, with how many happened since
        the last line; never a line per event, so a flood cannot flood the log."""
        cdef uint64_t counts[EVENT_KINDS]
        cdef const char *what[EVENT_KINDS]
        cdef int kind
        counts[0] = self.context.counters.rejected_connections
        what[0] = b"clients refused: max number of clients reached"
        counts[1] = self.context.counters.protected_refusals
        what[1] = b"clients refused by protected mode (not from 127.0.0.1 or ::1)"
        counts[2] = self.context.counters.protocol_errors
        what[2] = b"connections closed for a protocol error or an oversized request"
        counts[3] = self.context.counters.auth_failures
        what[3] = b"wrong passwords"
        for kind in range(EVENT_KINDS):
            if counts[kind] != self.events_logged[kind] \
                    and self.now_ms - self.events_logged_at[kind] >= EVENT_LOG_INTERVAL_MS:
                self.log_count(counts[kind] - self.events_logged[kind], what[kind])
                self.events_logged[kind] = counts[kind]
                self.events_logged_at[kind] = self.now_ms

    cdef int watch(self, int fd, int operation, uint32_t events) noexcept nogil:
        """epoll_ctl with the descriptor itself as the event's data; 0 or -1 (errno)."""
        cdef epoll_event event
        event.events = events
        event.data.u64 = 0
        event.data.fd = fd
        return epoll_ctl(self.epoll_fd, operation, fd, &event)

    # ---- connections ------------------------------------------------------------

    cdef void accept_clients(self) noexcept nogil:
        """Accept up to ACCEPTS_PER_EVENT pending clients.

        When the process is out of descriptors (or memory), accepting pauses
        (the listener leaves the epoll set, so level-triggered readiness does not
        spin) until a connection closes; waiting clients stay in the backlog.
        """
        cdef int fd, attempt
        cdef sockaddr_storage peer
        cdef socklen_t peer_length
        cdef Refusal refusal
        for attempt in range(ACCEPTS_PER_EVENT):
            peer_length = sizeof(peer)
            fd = accept4(self.listen_fd, <sockaddr *>&peer, &peer_length, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    self.pause_accepting()
                return      # EAGAIN: backlog empty; ECONNABORTED and the like: try later
            refusal = REFUSE_NONE
            if self.protected_mode and not is_loopback(&peer):
                refusal = REFUSE_PROTECTED
                self.context.counters.protected_refusals += 1
            elif self.context.counters.connected_clients >= self.max_clients:
                refusal = REFUSE_MAX_CLIENTS
                self.context.counters.rejected_connections += 1
            if (refusal != REFUSE_NONE and self.refusing >= MAX_REFUSING) \
                    or self.add_connection(fd, refusal) < 0:
                close(fd)

    cdef void pause_accepting(self) noexcept nogil:
        if self.accept_paused:
            return
        if self.watch(self.listen_fd, EPOLL_CTL_DEL, 0) == 0:
            self.accept_paused = True
            self.context.counters.accept_pauses += 1
            self.log_warning(b"out of file descriptors: not accepting until a client leaves")

    cdef void resume_accepting(self) noexcept nogil:
        if self.accept_paused and self.watch(self.listen_fd, EPOLL_CTL_ADD, EPOLLIN) == 0:
            self.accept_paused = False

    cdef int add_connection(self, int fd, Refusal refusal) noexcept nogil:
        """Register a freshly accepted socket; 0, or -1 if out of memory. A refused
        one is kept only until its first bytes say which protocol to refuse it in
        (see refuse), and is not counted as a client."""
        cdef int one = 1
        cdef Connection *connection
        if <size_t>fd >= self.connections_cap and self.grow_connection_table(fd) < 0:
            return -1
        connection = <Connection *>calloc(1, sizeof(Connection))
        if connection == NULL:
            return -1
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        connection.fd = fd
        connection.refusal = refusal
        connection.last_active_ms = self.now_ms
        connection.session.resp_version = 2
        connection.session.authenticated = self.context.password == NULL
        self.next_client_id += 1
        connection.session.id = self.next_client_id
        if self.watch(fd, EPOLL_CTL_ADD, EPOLLIN) < 0:
            free(connection)
            return -1
        connection.interest = EPOLLIN
        self.connections[fd] = connection
        if refusal != REFUSE_NONE:
            self.refusing += 1
            self.next_sweep_ms = self.now_ms + SWEEP_INTERVAL_MS
            return 0
        self.context.counters.connections_accepted += 1
        self.context.counters.connected_clients += 1
        return 0

    cdef int grow_connection_table(self, int fd) noexcept nogil:
        """Make ``connections`` (and the write queue, twice its size, since a
        descriptor closed and reused in one iteration may be queued twice) hold
        index ``fd``. Returns 0 or -1 (ENOMEM)."""
        cdef size_t capacity = self.connections_cap * 2 if self.connections_cap else 1024
        cdef size_t i
        while capacity <= <size_t>fd:
            capacity *= 2
        cdef int *queue = <int *>realloc(self.write_queue, 2 * capacity * sizeof(int))
        if queue == NULL:
            return -1
        self.write_queue = queue
        self.write_queue_cap = 2 * capacity
        cdef Connection **connections = <Connection **>realloc(
            self.connections, capacity * sizeof(Connection *))
        if connections == NULL:
            return -1
        for i in range(self.connections_cap, capacity):
            connections[i] = NULL
        self.connections = connections
        self.connections_cap = capacity
        return 0

    cdef void close_connection(self, Connection *connection) noexcept nogil:
        """Close the socket (which also removes it from epoll) and free everything
        the connection held."""
        self.connections[connection.fd] = NULL
        close(connection.fd)
        if connection.refusal != REFUSE_NONE:
            self.refusing -= 1
        else:
            self.context.counters.connected_clients -= 1
        free(connection.input)
        output_free(&connection.session.output)
        free(connection)
        self.resume_accepting()

    cdef void update_interest(self, Connection *connection) noexcept nogil:
        """Register exactly the events the connection's state calls for:
        EPOLLIN unless closing or paused, EPOLLOUT only while a write was refused."""
        cdef uint32_t wanted = 0
        if not connection.session.closing and not connection.reading_paused:
            wanted |= EPOLLIN
        if connection.write_blocked:
            wanted |= EPOLLOUT
        if wanted != connection.interest:
            if self.watch(connection.fd, EPOLL_CTL_MOD, wanted) == 0:
                connection.interest = wanted

    # ---- input ------------------------------------------------------------------

    cdef ssize_t receive(self, Connection *connection, char *scratch, char **data) noexcept nogil:
        """One bounded read from the connection: into ``scratch`` (the free half of
        the shared buffer) when it holds no incomplete request, else after that
        request in its own buffer.

        Returns the number of bytes now waiting at ``*data`` to be answered
        (answer_received), 0 when there is nothing to answer (nothing arrived, the
        connection waits for its output to drain, or it was refused), or -1 if
        the connection was closed (peer gone, read error, or out of memory).
        Reading and answering are split so the loop can answer one connection's
        requests after issuing the next connection's read: with many clients at
        pipeline 1, the table miss of one request then overlaps the next recv.
        """
        cdef ssize_t received
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
            received = recv(connection.fd, connection.input + connection.input_len, self.read_chunk_bytes, 0)
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
        ``max_request_bytes``) is refused and the connection closes after the reply.
        """
        if self.consume(connection, data, length) < 0:
            return -1
        if output_pending(&connection.session.output) > 0:
            self.queue_write(connection)
        self.update_interest(connection)
        return 0

    cdef int consume(self, Connection *connection, char *data, size_t length) noexcept nogil:
        """Answer the complete requests in ``data[:length]`` (the shared buffer or
        the connection's own) and keep what is left in the connection's buffer.

        Stops early when the connection starts closing, or when its unsent output
        reaches the high-water mark: the requests not answered yet then wait in
        its buffer and reading pauses (backpressure) until write_output has sent
        enough. An incomplete request that can no longer fit its limit (a native
        line over the line limit, a RESP request over ``max_request_bytes``) is
        refused and the connection closes after the reply. Returns 0, or -1 if
        the connection was closed (out of memory).
        """
        cdef size_t consumed, leftover
        cdef int refused = 0
        cdef bint stalled
        consumed = self.answer_requests(connection, data, length)
        if consumed == <size_t>-1:
            self.close_connection(connection)
            return -1
        leftover = length - consumed
        stalled = (leftover > 0 and not connection.session.closing
                   and output_pending(&connection.session.output) >= self.output_high_water_bytes)
        if not stalled and not connection.session.closing and leftover > 0:
            if data[consumed] == c'*':
                if leftover > self.context.max_request_bytes:
                    refused = resp_refuse_too_large(&self.context, &connection.session)
            elif leftover > self.line_limit(&connection.session) + 1:
                # No newline can make this line short enough ("+ 1": a "\r" may still end it).
                refused = native_refuse_long_line(&self.context, &connection.session)
        if refused < 0:
            self.close_connection(connection)
            return -1
        if connection.session.closing:
            leftover = 0
        if self.keep_leftover(connection, data, consumed, leftover) < 0:
            self.close_connection(connection)
            return -1
        # An incomplete native line was searched to its end; requests left by
        # backpressure (or a RESP request, tracked by its own scan state) were not.
        connection.input_scanned = leftover if (leftover > 0 and not stalled and data[consumed] != c'*') \
            else 0
        if output_pending(&connection.session.output) >= self.output_high_water_bytes:
            connection.reading_paused = True
        return 0

    cdef inline size_t line_limit(self, const Session *session) noexcept nogil:
        """Longest native line: tight until a password-protected session has
        authenticated, as Redis keeps unauthenticated requests small."""
        return self.context.max_line_bytes if session.authenticated else UNAUTHENTICATED_MAX_LINE

    cdef int refuse(self, Connection *connection, char *scratch) noexcept nogil:
        """Turn a refused connection away in the protocol its first bytes speak
        (``*``: RESP, anything else: native), then close it. Returns -1 if it was
        closed at once (nothing to read: the peer left)."""
        cdef ssize_t received = recv(connection.fd, scratch, self.read_chunk_bytes, 0)
        cdef bint resp
        cdef int result
        if received <= 0:
            if received < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            self.close_connection(connection)
            return -1
        resp = scratch[0] == c'*'
        if connection.refusal == REFUSE_MAX_CLIENTS:
            result = output_text(&connection.session.output, b"-ERR max number of clients reached\r\n" if resp
                                 else b"Error: max number of clients reached\n")
        else:
            result = output_text(&connection.session.output, b"-DENIED " if resp else b"Error: ")
            if result == 0:
                result = output_text(&connection.session.output, PROTECTED_MODE_MESSAGE)
            if result == 0:
                result = output_text(&connection.session.output, b"\r\n" if resp else b"\n")
        if result < 0:
            self.close_connection(connection)
            return -1
        connection.session.closing = True
        self.update_interest(connection)
        self.queue_write(connection)
        return 0

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
        """Room for one more bounded read after the incomplete request already
        held. Returns 0, or -1 (ENOMEM)."""
        cdef size_t needed = connection.input_len + self.read_chunk_bytes
        cdef char *grown
        if needed <= connection.input_cap:
            return 0
        grown = <char *>realloc(connection.input, needed)
        if grown == NULL:
            return -1
        connection.input = grown
        connection.input_cap = needed
        return 0

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
        connection.input_len = connection.input_cap = connection.input_scanned = 0
        connection.session.scan_position = 0

    cdef size_t answer_requests(self, Connection *connection, const char *data,
                                size_t length) noexcept nogil:
        """Answer each complete request in ``data`` in order, stopping early once
        the connection starts closing or its unsent output reaches the
        high-water mark. A request starting with ``*`` is RESP; anything else is
        a native line. Returns the bytes consumed, or (size_t)-1 when a reply
        could not be buffered (out of memory)."""
        cdef size_t start = 0, end, line_length, skip
        # Keys of the requests before this offset are prefetched. The first
        # request is answered at once, so prefetching its key would gain
        # nothing: the walk starts at the second (and never runs at pipeline 1).
        cdef size_t prefetched = 1
        cdef const char *newline
        cdef ssize_t used
        cdef int result
        cdef Session *session = &connection.session
        while (start < length and not session.closing
               and output_pending(&session.output) < self.output_high_water_bytes):
            if start >= prefetched:
                prefetched = self.prefetch_keys(data, length, start, PREFETCH_REQUESTS)
            if data[start] == c'*':
                used = resp_answer(&self.context, session, data + start, length - start)
                if used < 0:
                    return <size_t>-1
                if used == 0:
                    break                   # incomplete: wait for more bytes
                start += <size_t>used
                continue
            skip = connection.input_scanned if start == 0 and data == connection.input else 0
            newline = <const char *>memchr(data + start + skip, c'\n', length - start - skip)
            if newline == NULL:
                break
            end = newline - data
            line_length = end - start
            if line_length > 0 and data[end - 1] == c'\r':
                line_length -= 1
            if line_length > self.line_limit(session):
                result = native_refuse_long_line(&self.context, session)
            else:
                result = native_answer(&self.context, session, data + start, line_length)
            if result < 0:
                return <size_t>-1
            start = end + 1
        return start

    cdef size_t prefetch_keys(self, const char *data, size_t length, size_t start,
                              size_t requests) noexcept nogil:
        """Start loading the table slots of the keys of the next ``requests``
        requests in ``data`` from ``start`` on, without executing anything.

        With a random key per request the table lookup is a cache (and TLB)
        miss: done one request after another, a pipelined batch pays them in
        series; prefetched together they overlap. Walking the requests costs a
        second pass over their headers, small beside the misses it hides.
        Returns the offset after the last request walked, or ``length`` when the
        walk stopped at a request it cannot see whole, so it is not walked again.
        """
        cdef size_t walked, i
        for i in range(requests):
            if start >= length:
                return length
            if data[start] == c'*':
                walked = resp_prefetch_key(&self.context.store, data + start, length - start)
            else:
                walked = native_prefetch_key(&self.context.store, data + start, length - start)
            if walked == 0:
                return length
            start += walked
        return start

    # ---- output -----------------------------------------------------------------

    cdef void queue_write(self, Connection *connection) noexcept nogil:
        """Remember to write this connection's output after the current batch."""
        if connection.queued:
            return
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
            self.persist()
            end = self.write_queue_len
            if end == 0:
                break
            for i in range(end):
                connection = self.connections[self.write_queue[i]]
                if connection != NULL and connection.queued:
                    connection.queued = False
                    self.write_output(connection)
            # Keep only what was queued again during this round.
            memmove(self.write_queue, self.write_queue + end, (self.write_queue_len - end) * sizeof(int))
            self.write_queue_len -= end

    cdef void persist(self) noexcept nogil:
        """Write the log records of the requests answered since the last call
        (one pwrite, and under ``always`` one fdatasync: a group commit), before
        any of their replies is sent.

        If that fails, each queued connection's replies from its first
        unpersisted write on are withheld and the connection closes after the
        earlier ones: a write not in the log is never acknowledged. The log then
        refuses writes until retry_log (or, after a failed sync, a rewrite from
        memory) ends the failure. Afterwards a finished rewrite is swapped in,
        or a due or requested (BGREWRITEAOF) one started.
        """
        cdef AppendLog *aof = self.context.aof
        cdef size_t i
        cdef bint persisted, recovering
        cdef Connection *connection
        cdef Session *session
        if aof == NULL:
            return
        aof_poll_sync_thread(aof)
        persisted = aof_flush(aof) == 0
        for i in range(self.write_queue_len):
            connection = self.connections[self.write_queue[i]]
            if connection == NULL or not connection.session.unpersisted:
                continue
            session = &connection.session
            session.unpersisted = False
            if not persisted:
                if session.unpersisted_from > output_pending(&session.output):      # (cannot happen)
                    session.unpersisted_from = output_pending(&session.output)
                session.output.end = session.output.start + session.unpersisted_from
                session.closing = True
                self.discard_input(connection)
                connection.reading_paused = False
                self.update_interest(connection)
        if aof.failure != 0 and not aof.failure_reported:
            aof.failure_reported = True
            self.log_errno(b"append-only file: writing failed (%s); refusing writes until it works again",
                           aof.failure)
        if aof.rewrite_exited:
            recovering = aof.needs_rewrite
            if aof_finish_rewrite(aof) < 0:
                if not aof.rewrite_failure_reported:            # once per run of failures
                    aof.rewrite_failure_reported = True
                    self.log_errno(b"append-only file: rewrite failed (%s); the old log stays in use", errno)
            else:
                self.log_rewrite_done()
                if recovering and aof.failure == 0:
                    self.log_warning(b"append-only file: rewritten from memory after a failed sync; "
                                     b"accepting writes")
        elif persisted and (aof.rewrite_requested
                            or aof_rewrite_due(aof, store_count(&self.context.store), self.now_ms)):
            aof.rewrite_requested = False
            if aof_start_rewrite(aof, &self.context.store) < 0:
                self.log_errno(b"append-only file: cannot start a rewrite (%s)", errno)
        self.watch_rewrite()

    cdef void watch_rewrite(self) noexcept nogil:
        """Register a running rewrite child's pipe with epoll (once): it hangs up
        when the child exits, and persist() then finishes the rewrite."""
        cdef AppendLog *aof = self.context.aof
        if aof.rewrite_pipe >= 0 and not self.rewrite_watched:
            if self.watch(aof.rewrite_pipe, EPOLL_CTL_ADD, EPOLLIN) == 0:
                self.rewrite_watched = True

    cdef void retry_log(self) noexcept nogil:
        """While the log is failing: try again every RETRY_INTERVAL_MS (see
        aof_retry) and say so once it works again."""
        cdef AppendLog *aof = self.context.aof
        if self.now_ms < aof.retry_at_ms:
            return
        if aof.needs_rewrite:
            # After a failed sync only a rewrite from memory can be trusted:
            # persist() finishes it and leaves the failure state.
            if aof_rewrite_to_recover(aof, &self.context.store) == 0:
                self.watch_rewrite()
            return
        if aof_retry(aof) == 0:
            self.log_warning(b"append-only file: writing works again; accepting writes")

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
                    self.close_connection(connection)
                    return
            if not connection.reading_paused or output_pending(output) * 2 >= self.output_high_water_bytes:
                break
            connection.reading_paused = False
            if connection.input_len == 0 or connection.input_scanned == connection.input_len:
                break                           # nothing complete waits: reading resumes
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

    # ---- logging ----------------------------------------------------------------

    cdef void log_warning(self, const char *message) noexcept nogil:
        """Log through Python's ``logging`` (takes the GIL: rare events only)."""
        with gil:
            if self.logger is not None:
                self.logger.warning(message.decode())

    cdef void log_errno(self, const char *message, int error) noexcept nogil:
        """Log ``message`` with its ``%s`` replaced by the error's description."""
        with gil:
            if self.logger is not None:
                self.logger.warning(message.decode(), os.strerror(error))

    cdef void log_rewrite_done(self) noexcept nogil:
        with gil:
            if self.logger is not None:
                self.logger.info("append-only file rewritten: %d bytes, %d keys; the loop paused %.1f ms for "
                                 "the swap", self.context.aof.size, store_count(&self.context.store),
                                 self.context.aof.last_rewrite_pause_us / 1000.0)

    cdef void log_count(self, uint64_t count, const char *what) noexcept nogil:
        with gil:
            if self.logger is not None:
                self.logger.warning("%d %s", count, what.decode())


cdef const char *PROTECTED_MODE_MESSAGE = (
    b"kvfast is running in protected mode: it listens on a non-loopback address with no password, "
    b"so only clients on 127.0.0.1 and ::1 are served. Set a password (requirepass in the config file, "
    b"or KVFAST_PASSWORD), or start the server with --protected-mode no.")


cdef inline int64_t monotonic_ms() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000 + now.tv_nsec // 1000000


cdef bint is_loopback(const sockaddr_storage *peer) noexcept nogil:
    """Whether a peer is 127.0.0.1 or ::1 (or ::ffff:127.0.0.1): the clients
    protected mode still serves, as Redis does."""
    cdef const unsigned char *address
    cdef int i
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


cdef int raise_os_error() except -1:
    cdef int error = errno
    raise OSError(error, os.strerror(error))
