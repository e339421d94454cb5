# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server's event loop: one thread, level-triggered epoll, no GIL.

Everything between ``epoll_wait`` and the replies leaving the socket (reads,
request splitting, parsing, store access, writes) is C code running inside
``with nogil:``. The GIL is taken only at the edges: construction, ``run()``
returning to Python for a signal or a stop, ``close()``, ``stats()`` and the
rare warning log line.

One iteration, as in Redis's ae/networking:
  1. ``epoll_wait`` returns ready descriptors.
  2. The listening socket accepts a bounded number of clients; each client with
     input gets one bounded read (``read_chunk_bytes``); every complete line of
     it is answered in order, replies appended to that connection's output
     buffer, and the connection queued for writing.
  3. After the batch, queued output is written directly. Only a connection
     whose output did not all fit in the socket gets EPOLLOUT armed, and it is
     disarmed once the output has drained.
Requests that arrive in one piece are answered straight from a buffer shared by
the whole loop; a connection owns an input buffer only while it holds an
incomplete line.
"""
import os

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memchr, memcpy, memmove, strlen
from posix.unistd cimport close, read

from kvfast._system cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP,
    EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CTL_DEL, EPOLL_CLOEXEC,
    accept4, setsockopt, recv, send, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL,
    IPPROTO_TCP, TCP_NODELAY, O_NONBLOCK, O_CLOEXEC, pipe2, eventfd, eventfd_t, eventfd_read, eventfd_write, EFD_NONBLOCK, EFD_CLOEXEC,
)
from kvfast._store cimport (
    Store, store_init, store_free, store_insert, store_lookup, store_delete, store_count,
    store_memory_bytes, store_migrate_idle,
)


cdef enum:
    MAX_EVENTS = 256            # descriptors taken from one epoll_wait
    ACCEPTS_PER_EVENT = 64      # new clients accepted per readable event of the listener
    MAX_TOKENS = 4              # command + two arguments + one to notice extra words
    ECHO_LIMIT = 32             # bytes of an unknown command echoed back in the error
    SPARE_OUTPUT_BYTES = 16384  # an emptied output buffer larger than this is freed

cdef enum RunResult:
    RUN_FAILED = -1             # a system call failed; errno says why
    RUN_STOPPED = 0             # wake() was called
    RUN_INTERRUPTED = 1         # a signal arrived; Python handlers must run


cdef struct Connection:
    int fd
    uint32_t interest           # epoll events currently registered
    bint closing                # close once the output is flushed; read no more
    bint reading_paused         # too much unsent output: stop reading (backpressure)
    bint write_blocked          # the socket refused part of the output: EPOLLOUT armed
    bint queued                 # in the loop's write queue for this iteration
    char *input                 # an incomplete request line, or NULL
    size_t input_len
    size_t input_cap
    char *output                # replies not yet sent: output[output_start:output_end]
    size_t output_start
    size_t output_end
    size_t output_cap


cdef struct Token:
    const char *start
    size_t length


cdef struct LoopStats:
    uint64_t connections_accepted
    uint64_t connected_clients
    uint64_t commands_processed
    uint64_t invalid_requests
    uint64_t keyspace_hits
    uint64_t keyspace_misses
    uint64_t lines_too_long
    uint64_t accept_pauses


cdef enum IntParse:
    INT_OK = 0
    INT_NOT_INTEGER = 1
    INT_OUT_OF_RANGE = 2


cdef IntParse parse_int64(const char *text, size_t length, int64_t *out) noexcept nogil:
    """Parse an optionally signed decimal int64 (leading zeros allowed).

    Returns INT_OK and stores the value, INT_NOT_INTEGER for anything but
    ``[+-]?[0-9]+``, or INT_OUT_OF_RANGE when the digits do not fit in int64.
    """
    cdef size_t i = 0
    cdef bint negative = False
    cdef uint64_t magnitude = 0, digit
    cdef uint64_t limit
    if length > 0 and (text[0] == c'+' or text[0] == c'-'):
        negative = text[0] == c'-'
        i = 1
    if i == length:
        return INT_NOT_INTEGER
    limit = (<uint64_t>1 << 63) if negative else ((<uint64_t>1 << 63) - 1)
    cdef bint overflow = False
    while i < length:
        if text[i] < c'0' or text[i] > c'9':
            return INT_NOT_INTEGER
        digit = <uint64_t>(text[i] - c'0')
        if not overflow and (magnitude > (limit - digit) // 10):
            overflow = True      # keep scanning: a later non-digit is still "not an integer"
        magnitude = magnitude * 10 + digit
        i += 1
    if overflow:
        return INT_OUT_OF_RANGE
    out[0] = <int64_t>(0 - magnitude) if negative else <int64_t>magnitude
    return INT_OK


cdef inline bint is_blank(char byte) noexcept nogil:
    return byte == c' ' or byte == c'\t'


cdef size_t split_words(const char *line, size_t length, Token *tokens) noexcept nogil:
    """Split a line at runs of spaces and tabs. Fills at most MAX_TOKENS tokens
    and returns the number of words found (which may be larger)."""
    cdef size_t i = 0, count = 0, start
    while True:
        while i < length and is_blank(line[i]):
            i += 1
        if i == length:
            return count
        start = i
        while i < length and not is_blank(line[i]):
            i += 1
        if count < MAX_TOKENS:
            tokens[count].start = line + start
            tokens[count].length = i - start
        count += 1


cdef bint is_command(const Token *token, const char *lowercase) noexcept nogil:
    """Case-insensitive comparison of an ASCII command word (``x | 0x20`` turns an
    upper-case letter into its lower case, and no other byte into a letter)."""
    cdef size_t i
    if token.length != strlen(lowercase):
        return False
    for i in range(token.length):
        if (token.start[i] | 0x20) != lowercase[i]:
            return False
    return True


cdef const char *HEX_DIGITS = b"0123456789abcdef"


cdef class EventLoop:
    """The compiled server loop over an already listening, non-blocking socket.

    ``run()`` serves until ``wake()`` is called (from any thread, or a signal
    handler). The listening socket stays owned by the caller; the loop owns its
    epoll and eventfd descriptors, every client connection and the store.
    """
    cdef int epoll_fd
    cdef int wake_fd
    cdef int signal_pipe[2]             # Python's signal.set_wakeup_fd writes to [1]
    cdef int listen_fd
    cdef bint accept_paused
    cdef size_t max_line_bytes
    cdef size_t read_chunk_bytes
    cdef size_t output_high_water_bytes
    cdef char *shared_input
    cdef Connection **connections      # indexed by file descriptor
    cdef size_t connections_cap
    cdef int *write_queue               # descriptors with output to write this iteration
    cdef size_t write_queue_len
    cdef size_t write_queue_cap
    cdef Store store
    cdef LoopStats counters
    cdef object logger

    def __cinit__(self, int listen_fd, size_t max_line_bytes, size_t read_chunk_bytes,
                  size_t output_high_water_bytes, logger=None):
        self.epoll_fd = -1
        self.wake_fd = -1
        self.signal_pipe[0] = self.signal_pipe[1] = -1
        self.listen_fd = listen_fd
        self.max_line_bytes = max_line_bytes
        self.read_chunk_bytes = read_chunk_bytes
        self.output_high_water_bytes = output_high_water_bytes
        self.logger = logger
        store_init(&self.store)
        self.shared_input = <char *>malloc(read_chunk_bytes)
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
            "connected_clients": self.counters.connected_clients,
            "connections_accepted": self.counters.connections_accepted,
            "commands_processed": self.counters.commands_processed,
            "invalid_requests": self.counters.invalid_requests,
            "keyspace_hits": self.counters.keyspace_hits,
            "keyspace_misses": self.counters.keyspace_misses,
            "lines_too_long": self.counters.lines_too_long,
            "accept_pauses": self.counters.accept_pauses,
            "keys": store_count(&self.store),
            "store_bytes": store_memory_bytes(&self.store),
            "max_moved_per_step": self.store.stats.max_moved_per_step,
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
        store_free(&self.store)
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
        progress is finished and its replies written before returning."""
        cdef epoll_event events[MAX_EVENTS]
        cdef int ready, i, fd
        cdef bint stop_requested = False, signalled = False
        cdef eventfd_t ignored
        cdef char drained[64]
        cdef Connection *connection
        cdef int timeout = -1
        while True:
            ready = epoll_wait(self.epoll_fd, events, MAX_EVENTS, timeout)
            if ready < 0:
                return RUN_INTERRUPTED if errno == EINTR else RUN_FAILED
            if ready == 0:
                # Idle with a resize under way: finish it in small steps between polls.
                timeout = 0 if store_migrate_idle(&self.store) else -1
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
                else:
                    connection = self.connections[fd]
                    if connection == NULL:
                        continue        # closed earlier in this batch
                    if events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                        if self.read_requests(connection) < 0:
                            continue    # the connection was closed
                    if events[i].events & EPOLLOUT:
                        self.queue_write(connection)
            self.write_queued()
            timeout = 0 if self.store.draining.capacity != 0 else -1
            if stop_requested:
                return RUN_STOPPED
            if signalled:
                return RUN_INTERRUPTED

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
        for attempt in range(ACCEPTS_PER_EVENT):
            fd = accept4(self.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    self.pause_accepting()
                return      # EAGAIN: backlog empty; ECONNABORTED and the like: try later
            if self.add_connection(fd) < 0:
                close(fd)

    cdef void pause_accepting(self) noexcept nogil:
        if self.accept_paused:
            return
        if self.watch(self.listen_fd, EPOLL_CTL_DEL, 0) == 0:
            self.accept_paused = True
            self.counters.accept_pauses += 1
            self.log_warning(b"out of file descriptors: not accepting until a client leaves")

    cdef void resume_accepting(self) noexcept nogil:
        if self.accept_paused and self.watch(self.listen_fd, EPOLL_CTL_ADD, EPOLLIN) == 0:
            self.accept_paused = False

    cdef int add_connection(self, int fd) noexcept nogil:
        """Register a freshly accepted socket; 0, or -1 if out of memory."""
        cdef int one = 1
        cdef Connection *connection
        if <size_t>fd >= self.connections_cap and self.grow_connection_table(fd) < 0:
            return -1
        connection = <Connection *>calloc(1, sizeof(Connection))
        if connection == NULL:
            return -1
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        connection.fd = fd
        if self.watch(fd, EPOLL_CTL_ADD, EPOLLIN) < 0:
            free(connection)
            return -1
        connection.interest = EPOLLIN
        self.connections[fd] = connection
        self.counters.connections_accepted += 1
        self.counters.connected_clients += 1
        return 0

    cdef int grow_connection_table(self, int fd) noexcept nogil:
        """Make ``connections`` (and the write queue, twice its size, since a
        descriptor closed and reused in one iteration may be queued twice) hold
        index ``fd``. Returns 0 or -1 (ENOMEM)."""
        cdef size_t capacity = self.connections_cap * 2 if self.connections_cap else 1024
        cdef size_t i
        while capacity <= <size_t>fd:
            capacity *= 2
        cdef Connection **connections = <Connection **>realloc(
            self.connections, capacity * sizeof(Connection *))
        if connections == NULL:
            return -1
        for i in range(self.connections_cap, capacity):
            connections[i] = NULL
        self.connections = connections
        self.connections_cap = capacity
        cdef int *queue = <int *>realloc(self.write_queue, 2 * capacity * sizeof(int))
        if queue == NULL:
            return -1
        self.write_queue = queue
        self.write_queue_cap = 2 * capacity
        return 0

    cdef void close_connection(self, Connection *connection) noexcept nogil:
        """Close the socket (which also removes it from epoll) and free everything
        the connection held."""
        self.connections[connection.fd] = NULL
        close(connection.fd)
        free(connection.input)
        free(connection.output)
        free(connection)
        self.counters.connected_clients -= 1
        self.resume_accepting()

    cdef void update_interest(self, Connection *connection) noexcept nogil:
        """Register exactly the events the connection's state calls for:
        EPOLLIN unless closing or paused, EPOLLOUT only while a write was refused."""
        cdef uint32_t wanted = 0
        if not connection.closing and not connection.reading_paused:
            wanted |= EPOLLIN
        if connection.write_blocked:
            wanted |= EPOLLOUT
        if wanted != connection.interest:
            if self.watch(connection.fd, EPOLL_CTL_MOD, wanted) == 0:
                connection.interest = wanted

    # ---- input ------------------------------------------------------------------

    cdef int read_requests(self, Connection *connection) noexcept nogil:
        """One bounded read from the connection, then answer every complete line.

        Returns 0, or -1 if the connection was closed (peer gone, read error, or
        out of memory). A line longer than ``max_line_bytes`` is answered with
        ``Invalid request: line too long`` and the connection closes after it.
        """
        cdef char *data
        cdef ssize_t received
        cdef size_t length, consumed, leftover
        if connection.closing or connection.reading_paused:
            self.queue_write(connection)         # woken by ERR/HUP: let the write decide
            return 0
        if connection.input_len == 0:
            data = self.shared_input
            received = recv(connection.fd, data, self.read_chunk_bytes, 0)
        else:
            if self.reserve_input(connection) < 0:
                self.close_connection(connection)
                return -1
            data = connection.input
            received = recv(connection.fd, data + connection.input_len, self.read_chunk_bytes, 0)
        if received <= 0:
            if received < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            return self.end_of_input(connection)
        length = connection.input_len + <size_t>received

        consumed = self.answer_lines(connection, data, length)
        if consumed == <size_t>-1:
            self.close_connection(connection)
            return -1
        leftover = length - consumed
        if not connection.closing and leftover > self.max_line_bytes + 1:
            # No newline can make this line short enough ("+ 1": a "\r" may still end it).
            if self.refuse_long_line(connection) < 0:
                self.close_connection(connection)
                return -1
        if connection.closing:
            leftover = 0
        if self.keep_leftover(connection, data, consumed, leftover) < 0:
            self.close_connection(connection)
            return -1
        if connection.output_end > connection.output_start:
            self.queue_write(connection)
            if connection.output_end - connection.output_start >= self.output_high_water_bytes:
                connection.reading_paused = True
        self.update_interest(connection)
        return 0

    cdef int end_of_input(self, Connection *connection) noexcept nogil:
        """The peer closed its side (or the read failed): close now, or after the
        replies already produced have been written. Returns -1 if closed now."""
        if connection.output_end > connection.output_start:
            connection.closing = True
            self.discard_input(connection)
            self.update_interest(connection)
            self.queue_write(connection)
            return 0
        self.close_connection(connection)
        return -1

    cdef int reserve_input(self, Connection *connection) noexcept nogil:
        """Room for one more bounded read after the incomplete line already held.
        Returns 0, or -1 (ENOMEM)."""
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
        """Keep the unanswered tail (an incomplete line) in the connection's own
        buffer, or free that buffer when nothing is left. Returns 0 or -1 (ENOMEM)."""
        if leftover == 0:
            self.discard_input(connection)
            return 0
        if data == self.shared_input:
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

    cdef size_t answer_lines(self, Connection *connection, const char *data, size_t length) noexcept nogil:
        """Answer each complete line in ``data`` in order, stopping early if the
        connection starts closing. Returns the bytes consumed, or (size_t)-1 when
        a reply could not be buffered (out of memory)."""
        cdef size_t start = 0, end, line_length
        cdef const char *newline
        cdef int result
        while start < length and not connection.closing:
            newline = <const char *>memchr(data + start, c'\n', length - start)
            if newline == NULL:
                break
            end = newline - data
            line_length = end - start
            if line_length > 0 and data[end - 1] == c'\r':
                line_length -= 1
            if line_length > self.max_line_bytes:
                result = self.refuse_long_line(connection)
            else:
                result = self.answer(connection, data + start, line_length)
            if result < 0:
                return <size_t>-1
            start = end + 1
        return start

    cdef int refuse_long_line(self, Connection *connection) noexcept nogil:
        self.counters.lines_too_long += 1
        self.counters.invalid_requests += 1
        connection.closing = True
        return self.reply(connection, b"Invalid request: line too long\n")

    # ---- requests ---------------------------------------------------------------

    cdef int answer(self, Connection *connection, const char *line, size_t length) noexcept nogil:
        """Execute one request line (without its ending) and buffer its one-line
        reply. Blank lines get none. Returns 0, or -1 if out of memory."""
        cdef Token words[MAX_TOKENS]
        cdef size_t count = split_words(line, length, words)
        cdef int64_t key, value
        cdef int64_t *found
        cdef int inserted
        cdef IntParse parsed
        if count == 0:
            return 0
        self.counters.commands_processed += 1
        if is_command(&words[0], b"get"):
            if count != 2:
                return self.invalid(connection, b"usage: get <key>")
            parsed = parse_int64(words[1].start, words[1].length, &key)
            if parsed != INT_OK:
                return self.refuse_integer(connection, parsed, b"key is not an integer")
            found = store_lookup(&self.store, key)
            if found == NULL:
                self.counters.keyspace_misses += 1
                return self.reply(connection, b"Key not found\n")
            self.counters.keyspace_hits += 1
            return self.reply_integer(connection, found[0])
        if is_command(&words[0], b"put"):
            if count != 3:
                return self.invalid(connection, b"usage: put <key> <value>")
            parsed = parse_int64(words[1].start, words[1].length, &key)
            if parsed != INT_OK:
                return self.refuse_integer(connection, parsed, b"key is not an integer")
            parsed = parse_int64(words[2].start, words[2].length, &value)
            if parsed != INT_OK:
                return self.refuse_integer(connection, parsed, b"value is not an integer")
            inserted = store_insert(&self.store, key, value)
            if inserted < 0:
                return self.reply(connection, b"Error: out of memory\n")
            return self.reply(connection, b"OK\n" if inserted else b"Key already exists\n")
        if is_command(&words[0], b"del"):
            if count != 2:
                return self.invalid(connection, b"usage: del <key>")
            parsed = parse_int64(words[1].start, words[1].length, &key)
            if parsed != INT_OK:
                return self.refuse_integer(connection, parsed, b"key is not an integer")
            return self.reply(connection, b"OK\n" if store_delete(&self.store, key) else b"Key not found\n")
        if is_command(&words[0], b"bye"):
            if count != 1:
                return self.invalid(connection, b"usage: bye")
            connection.closing = True
            return self.reply(connection, b"Goodbye\n")
        return self.unknown_command(connection, &words[0])

    cdef int refuse_integer(self, Connection *connection, IntParse parsed,
                            const char *not_integer_reason) noexcept nogil:
        """Reply why an integer argument was refused; 0 or -1 (out of memory)."""
        if parsed == INT_OUT_OF_RANGE:
            return self.invalid(connection, b"integer out of range")
        return self.invalid(connection, not_integer_reason)

    cdef int invalid(self, Connection *connection, const char *reason) noexcept nogil:
        """Reply ``Invalid request: <reason>``; 0 or -1 (out of memory)."""
        self.counters.invalid_requests += 1
        if self.reply(connection, b"Invalid request: ") < 0 or self.reply(connection, reason) < 0:
            return -1
        return self.reply(connection, b"\n")

    cdef int unknown_command(self, Connection *connection, const Token *word) noexcept nogil:
        """Reply ``Invalid request: unknown command '<word>'``: at most ECHO_LIMIT
        bytes of the word, then ``...`` if it was longer; bytes outside printable
        ASCII are shown as ``\\xNN`` so the reply stays one clean line."""
        cdef char echo[ECHO_LIMIT * 4 + 8]
        cdef size_t i, length = 0
        cdef unsigned char byte
        for i in range(word.length if word.length < ECHO_LIMIT else ECHO_LIMIT):
            byte = <unsigned char>word.start[i]
            if 0x21 <= byte <= 0x7e:
                echo[length] = <char>byte
                length += 1
            else:
                echo[length] = c'\\'
                echo[length + 1] = c'x'
                echo[length + 2] = HEX_DIGITS[byte >> 4]
                echo[length + 3] = HEX_DIGITS[byte & 15]
                length += 4
        if word.length > ECHO_LIMIT:
            memcpy(echo + length, b"...", 3)
            length += 3
        echo[length] = c'\''
        echo[length + 1] = c'\n'
        self.counters.invalid_requests += 1
        if self.reply(connection, b"Invalid request: unknown command '") < 0:
            return -1
        return self.reply_bytes(connection, echo, length + 2)

    # ---- output -----------------------------------------------------------------

    cdef int reply(self, Connection *connection, const char *text) noexcept nogil:
        return self.reply_bytes(connection, text, strlen(text))

    cdef int reply_integer(self, Connection *connection, int64_t value) noexcept nogil:
        """Buffer ``value`` in decimal and a newline; 0 or -1 (out of memory)."""
        cdef char digits[24]
        cdef size_t position = 23
        cdef uint64_t magnitude = (0 - <uint64_t>value) if value < 0 else <uint64_t>value
        digits[position] = c'\n'
        while True:
            position -= 1
            digits[position] = <char>(c'0' + magnitude % 10)
            magnitude //= 10
            if magnitude == 0:
                break
        if value < 0:
            position -= 1
            digits[position] = c'-'
        return self.reply_bytes(connection, digits + position, 24 - position)

    cdef int reply_bytes(self, Connection *connection, const char *data, size_t length) noexcept nogil:
        """Append to the connection's output buffer, moving unsent bytes to its
        front or growing it as needed. Returns 0, or -1 (ENOMEM)."""
        cdef size_t pending, capacity
        cdef char *grown
        if connection.output_end + length > connection.output_cap:
            pending = connection.output_end - connection.output_start
            if connection.output_start > 0:
                memmove(connection.output, connection.output + connection.output_start, pending)
                connection.output_start = 0
                connection.output_end = pending
            if pending + length > connection.output_cap:
                capacity = connection.output_cap * 2 if connection.output_cap else 512
                while capacity < pending + length:
                    capacity *= 2
                grown = <char *>realloc(connection.output, capacity)
                if grown == NULL:
                    errno = ENOMEM
                    return -1
                connection.output = grown
                connection.output_cap = capacity
        memcpy(connection.output + connection.output_end, data, length)
        connection.output_end += length
        return 0

    cdef void queue_write(self, Connection *connection) noexcept nogil:
        """Remember to write this connection's output after the current batch."""
        if connection.queued:
            return
        if self.write_queue_len == self.write_queue_cap:
            self.write_output(connection)      # cannot happen with a queue twice the table
            return
        connection.queued = True
        self.write_queue[self.write_queue_len] = connection.fd
        self.write_queue_len += 1

    cdef void write_queued(self) noexcept nogil:
        cdef size_t i
        cdef Connection *connection
        for i in range(self.write_queue_len):
            connection = self.connections[self.write_queue[i]]
            if connection != NULL and connection.queued:
                connection.queued = False
                self.write_output(connection)
        self.write_queue_len = 0

    cdef void write_output(self, Connection *connection) noexcept nogil:
        """Write as much pending output as the socket takes.

        All sent: the buffer is reset (freed if large), a closing connection is
        closed, and paused reading resumes. Otherwise EPOLLOUT stays armed, and
        reading resumes once the backlog is under half the high-water mark.
        A send error closes the connection.
        """
        cdef ssize_t sent
        # (On Linux EWOULDBLOCK is EAGAIN, so EAGAIN alone covers both here and in recv.)
        while connection.output_start < connection.output_end:
            sent = send(connection.fd, connection.output + connection.output_start,
                        connection.output_end - connection.output_start, MSG_NOSIGNAL)
            if sent < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    break
                self.close_connection(connection)
                return
            connection.output_start += <size_t>sent
        if connection.output_start == connection.output_end:
            connection.output_start = connection.output_end = 0
            if connection.output_cap > SPARE_OUTPUT_BYTES:
                free(connection.output)
                connection.output = NULL
                connection.output_cap = 0
            if connection.closing:
                self.close_connection(connection)
                return
            connection.write_blocked = False
            connection.reading_paused = False
        else:
            connection.write_blocked = True
            if (connection.output_end - connection.output_start) * 2 < self.output_high_water_bytes:
                connection.reading_paused = False
        self.update_interest(connection)

    # ---- logging ----------------------------------------------------------------

    cdef void log_warning(self, const char *message) noexcept nogil:
        """Log through Python's ``logging`` (takes the GIL: rare events only)."""
        with gil:
            if self.logger is not None:
                self.logger.warning(message.decode())


cdef int raise_os_error() except -1:
    cdef int error = errno
    raise OSError(error, os.strerror(error))
