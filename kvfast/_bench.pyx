# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The load generator behind ``kvfast-bench``: many non-blocking connections in
one thread, one epoll loop, no GIL, like redis-benchmark.

Each connection keeps one batch of ``pipeline`` requests in flight: it writes
the batch, waits for every reply, records each reply's latency (from the moment
the batch was written, as redis-benchmark does), then writes the next batch,
until ``requests`` replies have arrived in all. Requests are formatted straight
into each connection's buffer and replies are counted, not copied, so the
generator spends far less CPU per request than the server it measures.
"""
import os

from libc.errno cimport errno, EAGAIN, EINTR, EINPROGRESS
from libc.stdint cimport int64_t, uint64_t, uint32_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memchr, memcmp, memcpy, memmove
from posix.unistd cimport close, write, isatty

from kvfast._system cimport (
    epoll_event, epoll_create1, epoll_ctl, epoll_wait, EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP,
    EPOLL_CTL_ADD, EPOLL_CTL_MOD, EPOLL_CLOEXEC, recv, send, MSG_NOSIGNAL, setsockopt,
    IPPROTO_TCP, TCP_NODELAY, SOCK_NONBLOCK, SOCK_CLOEXEC, socket, connect, getsockopt,
    AF_INET, AF_UNIX, SOCK_STREAM, SOL_SOCKET, SO_ERROR, sockaddr, sockaddr_in, sockaddr_un, htons, inet_pton,
    socklen_t, timespec, clock_gettime, CLOCK_MONOTONIC, set_errno,
)
from kvfast._text cimport format_int64

cdef extern from *:
    int count_leading_zeros "__builtin_clzll" (unsigned long long value) nogil


cdef enum:
    MAX_EVENTS = 512
    INPUT_BYTES = 65536          # per-connection reply buffer
    REQUEST_BYTES = 96           # room for the longest formatted request
    LINEAR_BUCKETS = 512         # latency histogram: 1 us buckets below 512 us...
    SUB_BUCKETS = 256            # ...then 256 buckets per power of two (0.4% wide)
    HISTOGRAM_BUCKETS = 512 + 40 * 256
    PROGRESS_NS = 250000000      # progress line every 250 ms on a terminal

cdef enum Operation:
    OP_PUT, OP_GET, OP_DEL, OP_SET, OP_INCR, OP_MIXED

OPERATIONS = {"put": OP_PUT, "get": OP_GET, "del": OP_DEL, "set": OP_SET, "incr": OP_INCR,
              "mixed": OP_MIXED}


cdef struct Connection:
    int fd
    bint connected
    uint32_t interest            # epoll events registered now
    size_t awaiting              # replies still due for the batch in flight
    int64_t batch_started        # ns, when the batch was handed to the socket
    char *output
    size_t output_len
    size_t output_sent
    char *input
    size_t input_len


cdef struct Histogram:
    uint64_t counts[HISTOGRAM_BUCKETS]
    uint64_t total
    uint64_t max_us


cdef struct Load:
    Operation operation
    bint resp
    size_t clients
    size_t pipeline
    uint64_t keyspace
    uint64_t requests
    uint64_t issued
    uint64_t completed
    uint64_t errors
    uint64_t random_state
    bint sequential              # keys 0, 1, 2, ... instead of random ones
    uint64_t next_key
    int64_t started
    int64_t finished
    int64_t deadline
    bint show_progress
    const char *label


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline size_t bucket_of(uint64_t microseconds) noexcept nogil:
    cdef int msb
    if microseconds < LINEAR_BUCKETS:
        return <size_t>microseconds
    msb = 63 - count_leading_zeros(microseconds)
    if msb > 48:
        return HISTOGRAM_BUCKETS - 1
    return LINEAR_BUCKETS + (msb - 9) * SUB_BUCKETS + ((microseconds >> (msb - 8)) & (SUB_BUCKETS - 1))


cdef inline double bucket_value(size_t bucket) noexcept nogil:
    """A representative latency (us) of a bucket: its midpoint."""
    cdef size_t k, msb, sub
    if bucket < LINEAR_BUCKETS:
        return <double>bucket
    k = bucket - LINEAR_BUCKETS
    msb = 9 + k // SUB_BUCKETS
    sub = k % SUB_BUCKETS
    return (<double>((<unsigned long long>(SUB_BUCKETS + sub)) << (msb - 8))) + (<double>(1ULL << (msb - 8))) / 2


cdef inline uint64_t next_random(Load *load) noexcept nogil:
    """xorshift64*: fast, good enough to spread keys over the keyspace."""
    cdef uint64_t x = load.random_state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    load.random_state = x
    return x * 2685821657736338717ULL


cdef size_t put_decimal(char *at, int64_t value) noexcept nogil:
    cdef char digits[24]
    cdef size_t length = format_int64(value, digits + 24)
    memcpy(at, digits + 24 - length, length)
    return length


cdef size_t put_bulk_int(char *at, int64_t value) noexcept nogil:
    """``$<len>\\r\\n<digits>\\r\\n``."""
    cdef char digits[24]
    cdef size_t length = format_int64(value, digits + 24)
    cdef size_t used = 0
    at[0] = c'$'
    used = 1 + put_decimal(at + 1, <int64_t>length)
    at[used] = c'\r'
    at[used + 1] = c'\n'
    used += 2
    memcpy(at + used, digits + 24 - length, length)
    used += length
    at[used] = c'\r'
    at[used + 1] = c'\n'
    return used + 2


cdef size_t format_request(Load *load, char *at) noexcept nogil:
    """Write one request of the load's operation with random key (and value)."""
    cdef Operation operation = load.operation
    cdef int64_t key, value = <int64_t>(next_random(load) % load.keyspace)
    if load.sequential:
        key = <int64_t>(load.next_key % load.keyspace)
        load.next_key += 1
    else:
        key = <int64_t>(next_random(load) % load.keyspace)
    cdef size_t used = 0
    cdef const char *name
    cdef size_t name_length
    cdef bint has_value
    if operation == OP_MIXED:
        operation = OP_SET if next_random(load) % 5 == 0 else OP_GET     # 80% get, 20% set
    has_value = operation == OP_PUT or operation == OP_SET
    if operation == OP_PUT:
        name, name_length = b"put", 3
    elif operation == OP_GET:
        name, name_length = b"get", 3
    elif operation == OP_DEL:
        name, name_length = b"del", 3
    elif operation == OP_SET:
        name, name_length = b"set", 3
    else:
        name, name_length = b"incr", 4
    if load.resp:
        memcpy(at, b"*3\r\n" if has_value else b"*2\r\n", 4)
        at[4] = c'$'
        at[5] = <char>(c'0' + name_length)
        at[6] = c'\r'
        at[7] = c'\n'
        memcpy(at + 8, name, name_length)
        used = 8 + name_length
        at[used] = c'\r'
        at[used + 1] = c'\n'
        used += 2
        used += put_bulk_int(at + used, key)
        if has_value:
            used += put_bulk_int(at + used, value)
        return used
    memcpy(at, name, name_length)
    used = name_length
    at[used] = c' '
    used += 1 + put_decimal(at + used + 1, key)
    if has_value:
        at[used] = c' '
        used += 1 + put_decimal(at + used + 1, value)
    at[used] = c'\n'
    return used + 1


cdef bint is_error_reply(Load *load, const char *reply, size_t length) noexcept nogil:
    """Error replies, not counting PUT's "Key already exists" (an answer, as in
    the native protocol, not a failure)."""
    if load.resp:
        return reply[0] == c'-' and not (length >= 22 and memcmp(reply, b"-ERR Key already exists", 22) == 0)
    return (length >= 7 and memchr(reply, c'I', 1) != NULL and reply[1] == c'n' and reply[2] == c'v') \
        or (length >= 6 and reply[0] == c'E' and reply[1] == c'r' and reply[2] == c'r')


cdef class LoadGenerator:
    """One benchmark run: ``run()`` returns a dict of counts and latencies."""
    cdef Load load
    cdef Connection *connections
    cdef Histogram *histogram
    cdef int epoll_fd
    cdef sockaddr_in address
    cdef sockaddr_un unix_address       # used when unix_socket_path was given
    cdef bint over_unix

    def __cinit__(self, str host, int port, str operation, bint resp, size_t clients,
                  size_t pipeline, uint64_t requests, uint64_t keyspace, double timeout,
                  bint progress, bint sequential=False, uint64_t seed=0x9E3779B97F4A7C15,
                  str unix_socket_path=None):
        if operation not in OPERATIONS:
            raise ValueError(f"unknown test {operation!r}; choose from {', '.join(OPERATIONS)}")
        if clients < 1 or pipeline < 1 or requests < 1 or keyspace < 1:
            raise ValueError("clients, pipeline, requests and keyspace must be positive")
        self.epoll_fd = -1
        self.load.operation = OPERATIONS[operation]
        self.load.resp = resp
        self.load.clients = clients
        self.load.pipeline = pipeline
        self.load.keyspace = keyspace
        self.load.requests = requests
        self.load.random_state = (seed ^ (<uint64_t>self.load.operation * 0x632BE59BD9B4E019ULL)) or 1
        self.load.sequential = sequential
        self.load.show_progress = progress and isatty(1)
        self.load.deadline = <int64_t>(timeout * 1e9)
        self._label = operation.encode()
        self.load.label = self._label
        if unix_socket_path is not None:
            path = os.fsencode(unix_socket_path)
            if not 0 < len(path) < sizeof(self.unix_address.sun_path):
                raise ValueError(f"not a usable unix socket path: {unix_socket_path!r}")
            memcpy(self.unix_address.sun_path, <const char *>path, len(path) + 1)
            self.unix_address.sun_family = AF_UNIX
            self.over_unix = True
        else:
            if inet_pton(AF_INET, host.encode(), &self.address.sin_addr) != 1:
                raise ValueError(f"not an IPv4 address: {host!r}")
            self.address.sin_family = AF_INET
            self.address.sin_port = htons(port)
        self.connections = <Connection *>calloc(clients, sizeof(Connection))
        self.histogram = <Histogram *>calloc(1, sizeof(Histogram))
        if self.connections == NULL or self.histogram == NULL:
            raise MemoryError()
        for i in range(clients):
            self.connections[i].fd = -1
        for i in range(clients):
            self.connections[i].output = <char *>malloc(pipeline * REQUEST_BYTES)
            self.connections[i].input = <char *>malloc(INPUT_BYTES)
            if self.connections[i].output == NULL or self.connections[i].input == NULL:
                raise MemoryError()

    cdef bytes _label

    def __dealloc__(self):
        cdef size_t i
        if self.connections != NULL:
            for i in range(self.load.clients):
                if self.connections[i].fd >= 0:
                    close(self.connections[i].fd)
                free(self.connections[i].output)
                free(self.connections[i].input)
            free(self.connections)
        free(self.histogram)
        if self.epoll_fd >= 0:
            close(self.epoll_fd)

    def run(self):
        """Connect every client, drive the load to completion, return the results."""
        cdef int result
        with nogil:
            result = self.drive()
        if result == -1:
            raise OSError(errno, f"benchmark failed: {__import__('os').strerror(errno)}")
        if result == -2:
            raise TimeoutError(f"{self.load.completed} of {self.load.requests} replies before the timeout")
        if result == -3:
            raise ConnectionError("the server closed a connection during the benchmark")
        seconds = (self.load.finished - self.load.started) / 1e9
        return {
            "test": self._label.decode(),
            "protocol": "resp" if self.load.resp else "native",
            "clients": self.load.clients,
            "pipeline": self.load.pipeline,
            "keyspace": self.load.keyspace,
            "requests": self.load.completed,
            "errors": self.load.errors,
            "seconds": seconds,
            "requests_per_second": self.load.completed / seconds if seconds > 0 else 0.0,
            "latency_ms": {
                "p50": self.percentile(50.0) / 1000,
                "p99": self.percentile(99.0) / 1000,
                "p99.9": self.percentile(99.9) / 1000,
                "max": self.histogram.max_us / 1000.0,
            },
        }

    def percentile(self, double percent):
        """Latency (us) below which ``percent`` of the replies arrived."""
        cdef uint64_t wanted = <uint64_t>(self.histogram.total * percent / 100.0 + 0.5)
        cdef uint64_t seen = 0
        cdef size_t bucket
        if self.histogram.total == 0:
            return 0.0
        if wanted < 1:
            wanted = 1
        for bucket in range(HISTOGRAM_BUCKETS):
            seen += self.histogram.counts[bucket]
            if seen >= wanted:
                return min(bucket_value(bucket), <double>self.histogram.max_us)
        return <double>self.histogram.max_us

    # ---- the loop (no GIL) --------------------------------------------------------

    cdef int drive(self) noexcept nogil:
        """Returns 0 when every reply arrived; -1 (errno), -2 (timeout) or -3
        (a connection closed by the server) otherwise."""
        cdef epoll_event events[MAX_EVENTS]
        cdef epoll_event event
        cdef size_t i
        cdef int ready, j, error = 0
        cdef socklen_t error_length
        cdef Connection *connection
        cdef int64_t last_progress, now
        cdef uint64_t last_completed = 0
        self.epoll_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.epoll_fd < 0:
            return -1
        self.load.started = now_ns()
        self.load.deadline += self.load.started
        for i in range(self.load.clients):
            connection = &self.connections[i]
            if self.connect_one(connection) < 0:
                return -1
            event.events = EPOLLOUT
            connection.interest = EPOLLOUT
            event.data.u64 = i
            if epoll_ctl(self.epoll_fd, EPOLL_CTL_ADD, connection.fd, &event) < 0:
                return -1
        last_progress = self.load.started
        while self.load.completed < self.load.requests:
            ready = epoll_wait(self.epoll_fd, events, MAX_EVENTS, 100)
            if ready < 0:
                if errno == EINTR:
                    continue
                return -1
            for j in range(ready):
                connection = &self.connections[events[j].data.u64]
                if not connection.connected:
                    error_length = sizeof(error)
                    getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &error, &error_length)
                    if error != 0:
                        set_errno(error)
                        return -1
                    connection.connected = True
                    if self.start_batch(connection, events[j].data.u64) < 0:
                        return -1
                    continue
                if events[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    error = self.read_replies(connection, events[j].data.u64)
                    if error < 0:
                        return error
                if events[j].events & EPOLLOUT and connection.output_sent < connection.output_len:
                    if self.send_output(connection, events[j].data.u64) < 0:
                        return -1
            now = now_ns()
            if now > self.load.deadline:
                return -2
            if self.load.show_progress and now - last_progress >= PROGRESS_NS:
                self.print_progress(now, last_progress, last_completed)
                last_progress = now
                last_completed = self.load.completed
        self.load.finished = now_ns()
        if self.load.show_progress:
            write(1, b"\r\x1b[K", 4)
        return 0

    cdef int connect_one(self, Connection *connection) noexcept nogil:
        """Open a non-blocking connection to the server (TCP with TCP_NODELAY, or
        the unix socket); the connect completes, or fails, through EPOLLOUT.
        Returns 0, or -1 (errno). A unix socket whose backlog is full answers
        EAGAIN instead of EINPROGRESS: that connection is then reported as a
        failure, as the kernel refused it."""
        cdef int one = 1
        cdef int result
        if self.over_unix:
            connection.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
            if connection.fd < 0:
                return -1
            result = connect(connection.fd, <sockaddr *>&self.unix_address, sizeof(self.unix_address))
        else:
            connection.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
            if connection.fd < 0:
                return -1
            setsockopt(connection.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            result = connect(connection.fd, <sockaddr *>&self.address, sizeof(self.address))
        if result < 0 and errno != EINPROGRESS:
            return -1
        return 0

    cdef int start_batch(self, Connection *connection, uint64_t index) noexcept nogil:
        """Format and send the next batch (up to ``pipeline`` requests, fewer at the
        end of the run); a connection with nothing left to send stays idle."""
        cdef size_t count = self.load.pipeline, _k
        if self.load.issued >= self.load.requests:
            return self.set_interest(connection, index, EPOLLIN)
        if count > self.load.requests - self.load.issued:
            count = <size_t>(self.load.requests - self.load.issued)
        self.load.issued += count
        connection.output_len = 0
        connection.output_sent = 0
        for _k in range(count):
            connection.output_len += format_request(&self.load, connection.output + connection.output_len)
        connection.awaiting = count
        connection.batch_started = now_ns()
        return self.send_output(connection, index)

    cdef int send_output(self, Connection *connection, uint64_t index) noexcept nogil:
        cdef ssize_t sent
        while connection.output_sent < connection.output_len:
            sent = send(connection.fd, connection.output + connection.output_sent,
                        connection.output_len - connection.output_sent, MSG_NOSIGNAL)
            if sent < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN:
                    return self.set_interest(connection, index, EPOLLIN | EPOLLOUT)
                return -1
            connection.output_sent += <size_t>sent
        return self.set_interest(connection, index, EPOLLIN)

    cdef int set_interest(self, Connection *connection, uint64_t index, uint32_t events) noexcept nogil:
        """Register ``events`` for the connection, skipping the system call when
        they are already registered (the usual case: one batch after another)."""
        cdef epoll_event event
        if connection.interest == events:
            return 0
        connection.interest = events
        event.events = events
        event.data.u64 = index
        return epoll_ctl(self.epoll_fd, EPOLL_CTL_MOD, connection.fd, &event)

    cdef int read_replies(self, Connection *connection, uint64_t index) noexcept nogil:
        """Read and count complete replies; start the next batch once all of the
        current one are in. Returns 0, -1 (errno) or -3 (closed by the server)."""
        cdef ssize_t received = recv(connection.fd, connection.input + connection.input_len,
                                     INPUT_BYTES - connection.input_len, 0)
        cdef size_t used, consumed = 0
        cdef int64_t now
        cdef uint64_t microseconds
        if received == 0:
            return -3
        if received < 0:
            return 0 if errno == EAGAIN or errno == EINTR else -1
        connection.input_len += <size_t>received
        now = now_ns()
        microseconds = <uint64_t>(now - connection.batch_started) // 1000
        while connection.awaiting > 0:
            used = self.reply_length(connection.input + consumed, connection.input_len - consumed)
            if used == 0:
                break
            if is_error_reply(&self.load, connection.input + consumed, used):
                self.load.errors += 1
            consumed += used
            connection.awaiting -= 1
            self.load.completed += 1
            self.histogram.counts[bucket_of(microseconds)] += 1
            self.histogram.total += 1
            if microseconds > self.histogram.max_us:
                self.histogram.max_us = microseconds
        memmove(connection.input, connection.input + consumed, connection.input_len - consumed)
        connection.input_len -= consumed
        if connection.awaiting == 0:
            return self.start_batch(connection, index)
        return 0

    cdef size_t reply_length(self, const char *data, size_t length) noexcept nogil:
        """Bytes of the complete reply at ``data``, or 0 if it is incomplete.
        Native replies are lines; RESP replies are lines, or a bulk header line
        followed by its data."""
        cdef const char *newline = <const char *>memchr(data, c'\n', length)
        cdef size_t line, size = 0, i
        if newline == NULL:
            return 0
        line = newline - data + 1
        if not self.load.resp or data[0] != c'$' or data[1] == c'-':
            return line
        for i in range(1, line - 2):
            size = size * 10 + <size_t>(data[i] - c'0')
        return line + size + 2 if line + size + 2 <= length else 0

    cdef void print_progress(self, int64_t now, int64_t last, uint64_t last_completed) noexcept nogil:
        cdef char line[160]
        cdef double recent = (self.load.completed - last_completed) * 1e9 / (now - last)
        cdef double overall = self.load.completed * 1e9 / (now - self.load.started)
        cdef int length = snprintf(line, sizeof(line),
                                   b"\r\x1b[K%s: rps=%.0f (overall: %.0f) %llu/%llu",
                                   self.load.label, recent, overall,
                                   <unsigned long long>self.load.completed,
                                   <unsigned long long>self.load.requests)
        if length > 0:
            write(1, line, <size_t>length)
