# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled core of :class:`kvfast.Client` (see kvfast/client.py for the
public documentation): one connection, native protocol lines, the GIL released
during every socket operation, and bulk operations that pipeline in C.

Single calls (``get``, ``put``, ...) send one line and read one reply line on a
blocking socket whose ``SO_RCVTIMEO``/``SO_SNDTIMEO`` carry the timeout: two
system calls per request, no poll.

A bulk call (``get_many`` ...) is a Batch: its int64 keys (and values) are read
straight from the caller's buffer, formatted as native request lines chunk by
chunk into a send buffer, and written while the replies are read and parsed
into the result arrays, full duplex on one thread (non-blocking send/recv,
``poll`` only when neither can progress). At most WINDOW requests are
unanswered at a time, so the server's output buffer and ours stay bounded and
neither side can block the other (the server stops reading a connection whose
replies are not read: reading as we write is what keeps a batch of any size
moving). The wire form is one native line per key (``get K``), not RESP
MGET/MSET: it measured as fast on the server (both ~8M keys/s on one
connection here), covers all five operations (put/del/incr have no multi-key
RESP form with per-key answers) and no request is large, so no server request
limit can refuse a batch.

The :class:`Bulk` object (encoder + decoder of one batch, no I/O) is also what
:class:`kvfast.AsyncClient` drives over asyncio streams.
"""
import os
import socket
import struct
import sys

from cpython.array cimport array, clone
from cpython.buffer cimport PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, PyBUF_STRIDES, PyBUF_FORMAT
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_AsLongLong
from libc.errno cimport errno, EAGAIN, EINTR, EPIPE, ECONNRESET, ECONNABORTED
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memchr, memcpy, memmove, memcmp, strerror, strlen

from kvfast._system cimport recv, send, MSG_NOSIGNAL
from kvfast._text cimport parse_int64, format_int64, INT_OK

from kvfast.config import DEFAULT_HOST, DEFAULT_PORT
from kvfast.errors import (
    AuthenticationError, ConnectionLostError, InvalidRequestError, KeyExistsError, KeyNotFoundError, KvfastError,
    OutOfRangeError,
)


cdef extern from "sys/socket.h" nogil:
    enum:
        MSG_DONTWAIT


cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents

    enum:
        POLLIN
        POLLOUT

    int poll(pollfd *fds, unsigned long nfds, int timeout)


cdef extern from *:
    """
    #include <Python.h>
    static inline int kvfast_is_exact_bool(PyObject *o) { return PyBool_Check(o); }
    static inline int kvfast_is_int(PyObject *o) { return PyLong_Check(o); }
    """
    bint is_bool "kvfast_is_exact_bool" (object value)
    bint is_int "kvfast_is_int" (object value)


cdef enum:
    MAX_REQUEST_BYTES = 48          # "incr " + 20 + " " + 20 + "\n" = 47
    SEND_CHUNK_BYTES = 65536        # one encoded chunk of a batch
    SEND_BUFFER_BYTES = 1048576     # room for the largest chunk tune() allows
    READ_BYTES = 262144             # reply buffer (grows only for a longer line)
    MAX_REPLY_LINE = 1048576        # a reply line longer than this is not the server's
    WINDOW = 32768                  # unanswered requests of a batch, at most (see the module doc)
    ERROR_TEXT_BYTES = 200          # first error reply of a batch, kept for its exception

# Status of the I/O helpers (>0: an errno).
cdef enum:
    IO_OK = 0
    IO_CLOSED = -1                  # the server closed the connection
    IO_LINE_TOO_LONG = -2
    IO_TIMEOUT = -3
    IO_OUT_OF_MEMORY = -4
    IO_STRAY_REPLY = -5             # more replies than requests

cdef enum Operation:
    OP_GET, OP_PUT, OP_SET, OP_DEL, OP_INCR

cdef enum State:
    STATE_OPEN, STATE_BROKEN, STATE_CLOSED


cdef inline const char *request_word(Operation operation) noexcept nogil:
    """The command word of ``operation``'s native request line, with its space."""
    if operation == OP_GET:
        return b"get "
    if operation == OP_PUT:
        return b"put "
    if operation == OP_SET:
        return b"set "
    if operation == OP_DEL:
        return b"del "
    return b"incr "

OK = b"OK"
KEY_EXISTS = b"Key already exists"
KEY_NOT_FOUND = b"Key not found"
GOODBYE = b"Goodbye"
INVALID_PREFIX = b"Invalid request: "
INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

cdef Py_ssize_t bulk_window = WINDOW
cdef size_t send_chunk_bytes = SEND_CHUNK_BYTES


def tune(window=None, send_chunk=None):
    """Benchmarking aid: set the bulk window (requests) and send chunk (bytes, at most SEND_BUFFER_BYTES)."""
    global bulk_window, send_chunk_bytes
    if window is not None:
        bulk_window = window
    if send_chunk is not None:
        send_chunk_bytes = min(<size_t>send_chunk, <size_t>SEND_BUFFER_BYTES)


cdef array INT64_TEMPLATE = array("q")
# Buffer formats that are int64 on this (64-bit Linux) machine: 'q', and 'l'
# (NumPy's int64), with or without a native byte-order prefix.
INT64_FORMATS = frozenset({"q", "l", "@q", "@l", "=q", "=l", "<q", "<l"})
_ENCODING = "utf-8"
_ENCODING_ERRORS = "surrogateescape"


cdef inline bint line_is(const char *line, size_t length, const char *text, size_t text_length) noexcept nogil:
    return length == text_length and memcmp(line, text, length) == 0


# ---- arguments ------------------------------------------------------------------

cdef int64_t check_int64(str name, object number) except? -1:
    """The int64 value of ``number``; TypeError unless it is an int (bool, an
    int subclass, is refused: ``put(True, 1)`` is far more likely a bug than a
    key), OutOfRangeError (an OverflowError and a ValueError) outside int64.
    Checked before anything is sent, so the error names the argument."""
    if is_bool(number) or not is_int(number):
        raise TypeError(f"{name} must be an int, not {type(number).__name__}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise OutOfRangeError(f"{name} {number} is outside the signed 64-bit range")
    return PyLong_AsLongLong(number)


cdef int64_t check_ttl(object seconds) except? -1:
    """A native TTL: an int of 1 to 10**12 seconds (TypeError, OutOfRangeError)."""
    cdef int64_t value = check_int64("ttl", seconds)
    if not 1 <= value <= 10 ** 12:
        raise OutOfRangeError(f"ttl {seconds} is outside 1 to 10**12 seconds")
    return value


cdef bint is_numpy_array(object items):
    """True for a NumPy ndarray, without importing NumPy (it is only looked up
    when some code has imported it already: an ndarray cannot exist otherwise)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(items, numpy.ndarray)


cdef class Int64Input:
    """A read-only int64 sequence for a batch: the caller's buffer itself when
    it holds int64 (one dimension, any stride), else a C copy made from an
    iterable of ints, each checked (TypeError, OutOfRangeError naming its
    position) before anything is sent."""
    cdef Py_buffer view
    cdef bint has_view
    cdef int64_t *owned
    cdef const char *data
    cdef Py_ssize_t stride             # bytes
    cdef Py_ssize_t count

    def __cinit__(self, object items, str name):
        cdef Py_ssize_t capacity = 0, i = 0
        cdef int64_t *grown
        self.has_view = False
        self.owned = NULL
        if PyObject_CheckBuffer(items) and not isinstance(items, (bytes, bytearray)):
            PyObject_GetBuffer(items, &self.view, PyBUF_STRIDES | PyBUF_FORMAT)
            self.has_view = True
            item_format = (<bytes>self.view.format).decode("ascii") if self.view.format != NULL else "B"
            if self.view.ndim != 1:
                raise TypeError(f"{name} must be one-dimensional, not {self.view.ndim}-dimensional")
            if self.view.itemsize != 8 or item_format not in INT64_FORMATS:
                raise TypeError(f"{name} must hold int64 items ('q'), not {item_format!r}: convert it first "
                                f"(array('q', ...), or numpy's .astype('int64'))")
            self.data = <const char *>self.view.buf
            self.stride = self.view.strides[0]
            self.count = self.view.shape[0]
            return
        if isinstance(items, (str, bytes, bytearray)) or not hasattr(items, "__iter__"):
            raise TypeError(f"{name} must be an int64 buffer or an iterable of ints, not {type(items).__name__}")
        try:
            capacity = len(items)
        except TypeError:
            capacity = 0
        capacity = max(capacity, 16)
        self.owned = <int64_t *>malloc(capacity * sizeof(int64_t))
        if self.owned == NULL:
            raise MemoryError()
        for item in items:
            if i == capacity:
                capacity *= 2
                grown = <int64_t *>realloc(self.owned, capacity * sizeof(int64_t))
                if grown == NULL:
                    raise MemoryError()
                self.owned = grown
            if is_int(item) and not is_bool(item):
                if not INT64_MIN <= item <= INT64_MAX:
                    raise OutOfRangeError(f"{name}[{i}] = {item} is outside the signed 64-bit range")
                self.owned[i] = PyLong_AsLongLong(item)
            elif is_bool(item) or not hasattr(type(item), "__index__"):
                raise TypeError(f"{name}[{i}] must be an int, not {type(item).__name__}")
            else:                      # an integer type of another library (numpy.int64 ...)
                number = item.__index__()
                if not INT64_MIN <= number <= INT64_MAX:
                    raise OutOfRangeError(f"{name}[{i}] = {number} is outside the signed 64-bit range")
                self.owned[i] = PyLong_AsLongLong(number)
            i += 1
        self.data = <const char *>self.owned
        self.stride = sizeof(int64_t)
        self.count = i

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
        free(self.owned)


# ---- one batch: encoder and decoder ---------------------------------------------

cdef struct Batch:
    Operation operation
    const char *keys
    Py_ssize_t key_stride
    const char *values          # NULL: every request carries ``constant``
    Py_ssize_t value_stride
    int64_t constant
    Py_ssize_t count
    Py_ssize_t window           # unanswered requests, at most
    Py_ssize_t encoded          # requests formatted so far
    Py_ssize_t replied          # replies parsed so far
    int64_t *results            # get: values, incr: new values (NULL otherwise)
    unsigned char *flags        # get: found, put: stored, del: deleted (NULL otherwise)
    int64_t missing_value
    Py_ssize_t error_index      # first error reply, or -1
    char error_text[ERROR_TEXT_BYTES]
    size_t error_length


cdef inline int64_t key_at(const Batch *batch, Py_ssize_t i) noexcept nogil:
    return (<const int64_t *>(batch.keys + i * batch.key_stride))[0]


cdef size_t encode_requests(Batch *batch, char *out, size_t capacity) noexcept nogil:
    """Format the next requests of ``batch`` into ``out`` (as many as fit, and no
    more than keep WINDOW unanswered); returns the bytes written."""
    cdef const char *name = request_word(batch.operation)
    cdef size_t used = 0, word = strlen(name), digits
    cdef char scratch[24]
    cdef int64_t argument
    cdef bint with_argument = batch.operation != OP_GET and batch.operation != OP_DEL
    while batch.encoded < batch.count and batch.encoded - batch.replied < batch.window \
            and used + MAX_REQUEST_BYTES <= capacity:
        memcpy(out + used, name, word)
        used += word
        digits = format_int64(key_at(batch, batch.encoded), scratch + 24)
        memcpy(out + used, scratch + 24 - digits, digits)
        used += digits
        if with_argument:
            argument = batch.constant if batch.values == NULL else \
                (<const int64_t *>(batch.values + batch.encoded * batch.value_stride))[0]
            out[used] = c' '
            used += 1
            digits = format_int64(argument, scratch + 24)
            memcpy(out + used, scratch + 24 - digits, digits)
            used += digits
        out[used] = c'\n'
        used += 1
        batch.encoded += 1
    return used


cdef void record_error(Batch *batch, const char *line, size_t length) noexcept nogil:
    if batch.error_index >= 0:
        return
    batch.error_index = batch.replied
    batch.error_length = min(length, <size_t>ERROR_TEXT_BYTES)
    memcpy(batch.error_text, line, batch.error_length)


cdef void decode_reply(Batch *batch, const char *line, size_t length) noexcept nogil:
    """Store the reply ``line`` (no newline) to request number ``batch.replied``."""
    cdef Py_ssize_t i = batch.replied
    cdef int64_t value
    cdef Operation operation = batch.operation
    if operation == OP_GET or operation == OP_INCR:
        if length > 0 and (line[0] == c'-' or (line[0] >= c'0' and line[0] <= c'9')) \
                and parse_int64(line, length, &value) == INT_OK:
            batch.results[i] = value
            if batch.flags != NULL:
                batch.flags[i] = 1
        else:
            batch.results[i] = batch.missing_value
            if batch.flags != NULL:
                batch.flags[i] = 0
            if not (operation == OP_GET and line_is(line, length, b"Key not found", 13)):
                record_error(batch, line, length)
    elif operation == OP_SET:
        if not line_is(line, length, b"OK", 2):
            record_error(batch, line, length)
    else:                                   # put, del: OK, or the one expected refusal
        if line_is(line, length, b"OK", 2):
            batch.flags[i] = 1
        else:
            batch.flags[i] = 0
            if not (line_is(line, length, b"Key already exists", 18) if operation == OP_PUT
                    else line_is(line, length, b"Key not found", 13)):
                record_error(batch, line, length)
    batch.replied += 1


cdef ssize_t decode_replies(Batch *batch, const char *data, size_t length) noexcept nogil:
    """Parse the complete reply lines at the start of ``data``; returns the bytes
    used (a partial last line is left), or IO_STRAY_REPLY for a line no request
    asked for, or IO_LINE_TOO_LONG."""
    cdef size_t used = 0, end
    cdef const char *newline
    while used < length:
        newline = <const char *>memchr(data + used, c'\n', length - used)
        if newline == NULL:
            return IO_LINE_TOO_LONG if length - used > MAX_REPLY_LINE else <ssize_t>used
        if batch.replied >= batch.encoded:
            return IO_STRAY_REPLY
        end = newline - data
        decode_reply(batch, data + used, end - used)
        used = end + 1
    return <ssize_t>used


# ---- the reply buffer -----------------------------------------------------------

cdef struct Reader:
    char *data
    size_t start                # first unread byte
    size_t end                  # end of the bytes received
    size_t capacity


cdef int reader_make_room(Reader *reader) noexcept nogil:
    """Move the unread bytes to the front; grow the buffer when they fill it.
    Returns IO_OK, IO_LINE_TOO_LONG or IO_OUT_OF_MEMORY."""
    cdef char *grown
    if reader.start > 0:
        memmove(reader.data, reader.data + reader.start, reader.end - reader.start)
        reader.end -= reader.start
        reader.start = 0
    if reader.end == reader.capacity:
        if reader.capacity >= MAX_REPLY_LINE:
            return IO_LINE_TOO_LONG
        grown = <char *>realloc(reader.data, reader.capacity * 2)
        if grown == NULL:
            return IO_OUT_OF_MEMORY
        reader.data = grown
        reader.capacity *= 2
    return IO_OK


cdef int receive(int fd, Reader *reader, int flags) noexcept nogil:
    """One recv into the free end of the buffer: IO_OK, IO_CLOSED, or an errno
    (EAGAIN: nothing there with MSG_DONTWAIT, the timeout otherwise)."""
    cdef int status = reader_make_room(reader)
    cdef ssize_t got
    if status != IO_OK:
        return status
    got = recv(fd, reader.data + reader.end, reader.capacity - reader.end, flags)
    if got > 0:
        reader.end += <size_t>got
        return IO_OK
    return IO_CLOSED if got == 0 else errno


cdef int send_all(int fd, const char *data, size_t length) noexcept nogil:
    """Write all of ``data`` on the blocking socket; IO_OK or an errno (EAGAIN:
    the send timeout expired). A signal during the write just resumes it (a
    single request line is sent in one go in practice)."""
    cdef ssize_t sent
    while length > 0:
        sent = send(fd, data, length, MSG_NOSIGNAL)
        if sent < 0:
            if errno == EINTR:
                continue
            return errno
        data += sent
        length -= <size_t>sent
    return IO_OK


cdef int read_line(int fd, Reader *reader, size_t *line_start, size_t *line_length) noexcept nogil:
    """Wait for one complete reply line; its place in ``reader.data`` is
    returned through the pointers (and consumed). IO_OK, or the status of the
    recv that failed (EINTR included: call again, nothing is lost)."""
    cdef const char *newline
    cdef int status
    while True:
        newline = <const char *>memchr(reader.data + reader.start, c'\n', reader.end - reader.start)
        if newline != NULL:
            line_start[0] = reader.start
            line_length[0] = newline - (reader.data + reader.start)
            reader.start += line_length[0] + 1
            return IO_OK
        status = receive(fd, reader, 0)
        if status != IO_OK:
            return status


cdef int run_batch(int fd, Batch *batch, char *out, size_t send_chunk, size_t *out_start, size_t *out_end,
                   Reader *reader, int timeout_ms) noexcept nogil:
    """Send every request of ``batch`` and parse every reply, full duplex (see
    the module doc). Resumable: all progress lives in ``batch``, the send
    buffer positions and ``reader``, so after EINTR (returned for the caller to
    run signal handlers) a second call carries on. Returns IO_OK when every
    reply is in, IO_TIMEOUT after ``timeout_ms`` without progress, or the
    failure (IO_CLOSED, an errno, IO_STRAY_REPLY ...)."""
    cdef pollfd wait
    cdef ssize_t sent, used
    cdef int status, ready
    cdef bint progressed
    while batch.replied < batch.count:
        progressed = False
        if out_start[0] == out_end[0] and batch.encoded < batch.count:
            out_start[0] = 0
            out_end[0] = encode_requests(batch, out, send_chunk)
        if out_start[0] < out_end[0]:
            sent = send(fd, out + out_start[0], out_end[0] - out_start[0], MSG_DONTWAIT | MSG_NOSIGNAL)
            if sent > 0:
                out_start[0] += <size_t>sent
                progressed = True
            elif errno != EAGAIN and errno != EINTR:
                return errno
        status = receive(fd, reader, MSG_DONTWAIT)
        if status == IO_OK:
            used = decode_replies(batch, reader.data + reader.start, reader.end - reader.start)
            if used < 0:
                return <int>used
            reader.start += <size_t>used
            progressed = True
        elif status != EAGAIN and status != EINTR:
            return status
        if progressed:
            continue
        wait.fd = fd
        wait.events = POLLIN | (POLLOUT if out_start[0] < out_end[0] else 0)
        ready = poll(&wait, 1, timeout_ms)
        if ready == 0:
            return IO_TIMEOUT
        if ready < 0:
            return errno
    return IO_OK


cdef class Bulk:
    """One batch: its inputs, its result arrays, the encoder and the decoder
    (no I/O). ``Client`` runs it over its socket in C; ``AsyncClient`` calls
    :meth:`encode` and :meth:`feed` around asyncio streams. :meth:`result`
    gives the method's return value, or raises for the first error reply.
    """
    cdef Batch batch
    cdef Int64Input keys
    cdef Int64Input values
    cdef object results                # array('q') or None
    cdef object flags                  # bytearray or None
    cdef bint numpy_out
    cdef bint with_mask
    cdef Reader reader                 # AsyncClient's partial lines (Client uses its own)

    def __cinit__(self, int operation, object keys, object values=None, object default=None,
                  bint with_values=False):
        cdef Py_ssize_t n
        self.reader.data = NULL
        self.keys = Int64Input(keys, "keys")
        n = self.keys.count
        self.numpy_out = is_numpy_array(keys)
        self.batch.operation = <Operation>operation
        self.batch.keys = self.keys.data
        self.batch.key_stride = self.keys.stride
        self.batch.values = NULL
        self.batch.constant = 0
        self.batch.count = n
        self.batch.window = bulk_window
        self.batch.encoded = self.batch.replied = 0
        self.batch.error_index = -1
        self.batch.error_length = 0
        self.batch.missing_value = 0
        if with_values:
            name = "deltas" if operation == OP_INCR else "values"
            if operation == OP_INCR and (is_int(values) or is_bool(values)):
                self.batch.constant = check_int64(name, values)
            else:
                self.values = Int64Input(values, name)
                if self.values.count != n:
                    raise ValueError(f"{name} holds {self.values.count} items, keys {n}: they must match")
                self.batch.values = self.values.data
                self.batch.value_stride = self.values.stride
        self.with_mask = operation == OP_PUT or operation == OP_DEL or (operation == OP_GET and default is None)
        if operation == OP_GET and default is not None:
            self.batch.missing_value = check_int64("default", default)
        self.results = None
        self.flags = None
        self.batch.results = NULL
        self.batch.flags = NULL
        if operation == OP_GET or operation == OP_INCR:
            self.results = clone(INT64_TEMPLATE, n, False)
            self.batch.results = <int64_t *>(<array>self.results).data.as_longlongs
        if self.with_mask:
            self.flags = bytearray(n)
            self.batch.flags = <unsigned char *>PyByteArray_AS_STRING(self.flags)

    def __dealloc__(self):
        free(self.reader.data)

    @property
    def done(self):
        return self.batch.replied == self.batch.count

    @property
    def progress(self):
        """(requests sent, replies parsed, requests in all)."""
        return self.batch.encoded, self.batch.replied, self.batch.count

    def encode(self):
        """The next chunk of request lines as bytes (b"" when all are sent or
        WINDOW requests are unanswered)."""
        cdef bytes chunk = PyBytes_FromStringAndSize(NULL, SEND_CHUNK_BYTES)
        cdef size_t used = encode_requests(&self.batch, PyBytes_AS_STRING(chunk), SEND_CHUNK_BYTES)
        return chunk[:used]

    def feed(self, bytes data):
        """Parse the reply bytes ``data`` (any split: a partial line is kept)."""
        cdef ssize_t used
        if self.reader.data == NULL:
            self.reader.data = <char *>malloc(READ_BYTES)
            if self.reader.data == NULL:
                raise MemoryError()
            self.reader.start = self.reader.end = 0
            self.reader.capacity = READ_BYTES
        cdef size_t length = PyBytes_GET_SIZE(data), offset = 0, room
        while offset < length:
            status = reader_make_room(&self.reader)
            if status != IO_OK:
                raise ConnectionLostError("reply line too long: client and server disagree about the protocol")
            room = min(self.reader.capacity - self.reader.end, length - offset)
            memcpy(self.reader.data + self.reader.end, PyBytes_AS_STRING(data) + offset, room)
            self.reader.end += room
            offset += room
            used = decode_replies(&self.batch, self.reader.data + self.reader.start,
                                  self.reader.end - self.reader.start)
            if used < 0:
                raise ConnectionLostError("reply to no request: client and server disagree about the protocol")
            self.reader.start += <size_t>used

    def result(self):
        """The method's return value (see Client's bulk methods); raises the
        error of the first error reply, once every reply is in."""
        cdef Batch *batch = &self.batch
        if batch.error_index >= 0:
            reply = PyBytes_FromStringAndSize(batch.error_text, batch.error_length)
            error = unexpected(reply)
            error.index = batch.error_index
            error.args = (f"{error.args[0]} (reply {batch.error_index} of {batch.count}, key "
                          f"{key_at(batch, batch.error_index)})",) + error.args[1:]
            raise error
        results, flags = self.results, self.flags
        if self.numpy_out:
            numpy = sys.modules["numpy"]
            if results is not None:
                results = numpy.frombuffer(results, dtype=numpy.int64)
            if flags is not None:
                flags = numpy.frombuffer(flags, dtype=numpy.bool_)
        if batch.operation == OP_GET:
            return (results, flags) if self.with_mask else results
        if batch.operation == OP_INCR:
            return results
        return flags               # put: stored, del: deleted, set: None


def unexpected(bytes reply):
    """The exception for a reply the calling method does not expect:
    ``Invalid request: <reason>`` becomes InvalidRequestError(reason); anything
    else means client and server disagree about the protocol (KvfastError)."""
    if reply.startswith(INVALID_PREFIX):
        return InvalidRequestError(reply[len(INVALID_PREFIX):].decode(_ENCODING, _ENCODING_ERRORS))
    return KvfastError(f"unexpected reply from server: {reply!r}")


# ---- the connection -------------------------------------------------------------

cdef class Client:
    """One connection to a kvfast server (TCP, or a unix domain socket).

    ``timeout`` (seconds, or None to wait forever) bounds connecting and each
    wait for the server (one socket operation; in a bulk call, each wait
    without progress); when it expires the call raises TimeoutError.

    With a ``password``, ``auth PASSWORD`` is sent as soon as a connection is
    made; unless the server answers ``OK`` the connection is closed and
    AuthenticationError raised. The password is kept, to authenticate again
    after a reconnect.

    A broken connection (the server closed or reset it, or a reply did not come
    within the timeout) fails the request in flight with ConnectionLostError
    (TimeoutError for the timeout); the client then reconnects at its next
    call. A request is never sent twice: the one that failed may or may not
    have been applied.

    Thread safety: one Client per thread. A call from a second thread while one
    is running raises RuntimeError instead of mixing two conversations.
    """
    cdef object _sock
    cdef int _fd
    cdef State _state
    cdef bint _busy
    cdef bint _said_goodbye
    cdef int _timeout_ms
    cdef readonly object host, port, unix_socket_path, timeout
    cdef object _password
    cdef Reader _reader
    cdef char *_out
    cdef size_t _line_start, _line_length

    def __cinit__(self, *args, **kwargs):
        self._reader.data = <char *>malloc(READ_BYTES)
        self._out = <char *>malloc(SEND_BUFFER_BYTES)
        if self._reader.data == NULL or self._out == NULL:
            raise MemoryError()
        self._reader.capacity = READ_BYTES
        self._reader.start = self._reader.end = 0
        self._state = STATE_CLOSED
        self._fd = -1

    def __dealloc__(self):
        free(self._reader.data)
        free(self._out)

    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, timeout=10.0, password=None, *, unix_socket_path=None):
        if password is not None:
            check_password(password)
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        self.host, self.port, self.unix_socket_path, self.timeout = host, port, unix_socket_path, timeout
        self._timeout_ms = -1 if timeout is None else max(1, <int>(timeout * 1000))
        self._password = password
        self._connect()

    def _connect(self):
        """Open the connection (and authenticate); on failure none is kept."""
        if self.unix_socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(os.fspath(self.unix_socket_path))
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            # Each request is one small write followed by waiting for the reply:
            # Nagle's algorithm would only add delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking from here on; the kernel applies the timeout to each send/recv.
        sock.settimeout(None)
        if self.timeout is not None:
            seconds = int(self.timeout)
            interval = struct.pack("ll", seconds, int((self.timeout - seconds) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
        self._sock = sock
        self._fd = sock.fileno()
        self._reader.start = self._reader.end = 0
        self._state = STATE_OPEN
        self._said_goodbye = False
        if self._password is not None:
            self._authenticate()

    def _authenticate(self):
        cdef bytes request = b"auth " + self._password.encode(_ENCODING, _ENCODING_ERRORS) + b"\n"
        try:
            self._roundtrip(request, len(request))
        except BaseException:
            self._drop()
            raise
        reply = self._line()
        if reply != OK:
            self._drop()
            raise AuthenticationError(reply.decode(_ENCODING, _ENCODING_ERRORS))

    cdef void _drop(self):
        """Close the socket without a goodbye (broken, or never got going)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._fd = -1
        if self._state == STATE_OPEN:
            self._state = STATE_BROKEN

    cdef int _enter(self) except -1:
        """Start a call: refuse a closed client and a second thread; reconnect a broken connection."""
        if self._busy:
            raise RuntimeError("Client used by two threads at once: use one Client per thread")
        if self._state == STATE_CLOSED:
            raise ValueError("request on a closed Client")
        self._busy = True
        if self._state == STATE_BROKEN:
            try:
                self._connect()
            except BaseException:
                self._busy = False
                raise
        return 0

    cdef object _io_error(self, int status, str what):
        """Mark the connection broken and return the exception for ``status``."""
        self._drop()
        if status == IO_TIMEOUT or status == EAGAIN:
            return TimeoutError(f"no reply from server within {self.timeout:g} seconds{what}")
        if status == IO_CLOSED:
            return ConnectionLostError(f"server closed the connection before it replied{what}")
        if status == EPIPE or status == ECONNRESET or status == ECONNABORTED:
            return ConnectionLostError(f"connection to server lost: {strerror(status).decode()}{what}")
        if status == IO_LINE_TOO_LONG or status == IO_STRAY_REPLY:
            return ConnectionLostError(f"client and server disagree about the protocol{what}")
        if status == IO_OUT_OF_MEMORY:
            return MemoryError()
        return OSError(status, strerror(status).decode())

    cdef int _roundtrip(self, const char *request, size_t length) except -1:
        """Send one request line (with its newline) and wait for its reply line
        (then in ``_line_start``/``_line_length``), the GIL released."""
        cdef int status
        cdef int fd = self._fd
        with nogil:
            status = send_all(fd, request, length)
        if status == IO_OK:
            while True:
                with nogil:
                    status = read_line(fd, &self._reader, &self._line_start, &self._line_length)
                if status != EINTR:
                    break
                try:
                    PyErr_CheckSignals()
                except BaseException:
                    self._drop()
                    raise
        if status != IO_OK:
            raise self._io_error(status, "")
        return 0

    cdef bytes _line(self):
        return PyBytes_FromStringAndSize(self._reader.data + self._line_start, self._line_length)

    cdef int _run(self, Bulk bulk) except -1:
        """Run ``bulk`` over the connection (see run_batch); a failure breaks
        the connection and raises, naming how far the batch got."""
        cdef int status
        cdef size_t out_start = 0, out_end = 0
        cdef int fd = self._fd, timeout_ms = self._timeout_ms
        if bulk.batch.count == 0:
            return 0
        while True:
            with nogil:
                status = run_batch(fd, &bulk.batch, self._out, send_chunk_bytes, &out_start, &out_end,
                                   &self._reader, timeout_ms)
            if status != EINTR:
                break
            try:
                PyErr_CheckSignals()
            except BaseException:
                self._drop()
                raise
        if status != IO_OK:
            raise self._io_error(status, f" (bulk request: {bulk.batch.replied} of {bulk.batch.count} replies in)")
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # ---- single requests ----------------------------------------------------------

    cdef bytes _ttl_exchange(self, bytes request):
        """One request line (with its newline) built in Python: the reply line."""
        self._enter()
        try:
            self._roundtrip(request, len(request))
            return self._line()
        finally:
            self._busy = False

    def put(self, key, value, ttl=None):
        """Store ``value`` under ``key``; with ``ttl`` (seconds, 1 to 10**12) the
        key expires that long after.

        Raises KeyExistsError when the key is already stored (its value is left
        unchanged: ``put`` never overwrites). Arguments are checked before
        anything is sent: TypeError unless an int (not bool), OutOfRangeError (a
        ValueError and an OverflowError) outside the signed 64-bit range
        (or, for ``ttl``, outside 1 to 10**12).
        """
        cdef char request[MAX_REQUEST_BYTES]
        cdef size_t length
        if ttl is not None:
            reply = self._ttl_exchange(
                b"put %d %d ex %d\n" % (check_int64("key", key), check_int64("value", value), check_ttl(ttl)))
            if reply == b"Key already exists":
                raise KeyExistsError(key)
            if reply != b"OK":
                raise unexpected(reply)
            return None
        length = format_request(OP_PUT, check_int64("key", key), check_int64("value", value), request)
        self._enter()
        try:
            self._roundtrip(request, length)
            if line_is(self._reader.data + self._line_start, self._line_length, b"OK", 2):
                return None
            if line_is(self._reader.data + self._line_start, self._line_length, b"Key already exists", 18):
                raise KeyExistsError(key)
            raise unexpected(self._line())
        finally:
            self._busy = False

    def get(self, key):
        """Return the value stored under ``key``; KeyNotFoundError if there is none."""
        cdef char request[MAX_REQUEST_BYTES]
        cdef size_t length = format_request(OP_GET, check_int64("key", key), 0, request)
        cdef int64_t value
        cdef const char *line
        self._enter()
        try:
            self._roundtrip(request, length)
            line = self._reader.data + self._line_start
            if self._line_length > 0 and (line[0] == c'-' or (line[0] >= c'0' and line[0] <= c'9')) \
                    and parse_int64(line, self._line_length, &value) == INT_OK:
                return value
            if line_is(line, self._line_length, b"Key not found", 13):
                raise KeyNotFoundError(key)
            raise unexpected(self._line())
        finally:
            self._busy = False

    def delete(self, key):
        """Remove ``key`` and its value; KeyNotFoundError if it is not stored."""
        cdef char request[MAX_REQUEST_BYTES]
        cdef size_t length = format_request(OP_DEL, check_int64("key", key), 0, request)
        self._enter()
        try:
            self._roundtrip(request, length)
            if line_is(self._reader.data + self._line_start, self._line_length, b"OK", 2):
                return None
            if line_is(self._reader.data + self._line_start, self._line_length, b"Key not found", 13):
                raise KeyNotFoundError(key)
            raise unexpected(self._line())
        finally:
            self._busy = False

    def set(self, key, value, ttl=None):
        """Store ``value`` under ``key``, overwriting any value stored there;
        with ``ttl`` (seconds) the key expires that long after, without it a
        TTL the key had is cleared."""
        cdef char request[MAX_REQUEST_BYTES]
        cdef size_t length
        if ttl is not None:
            reply = self._ttl_exchange(
                b"set %d %d ex %d\n" % (check_int64("key", key), check_int64("value", value), check_ttl(ttl)))
            if reply != b"OK":
                raise unexpected(reply)
            return None
        length = format_request(OP_SET, check_int64("key", key), check_int64("value", value), request)
        self._enter()
        try:
            self._roundtrip(request, length)
            if line_is(self._reader.data + self._line_start, self._line_length, b"OK", 2):
                return None
            raise unexpected(self._line())
        finally:
            self._busy = False

    def expire(self, key, ttl):
        """Make ``key`` expire ``ttl`` seconds (1 to 10**12) from now;
        KeyNotFoundError if it is not stored."""
        reply = self._ttl_exchange(b"expire %d %d\n" % (check_int64("key", key), check_ttl(ttl)))
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply != b"OK":
            raise unexpected(reply)

    def ttl(self, key):
        """The seconds until ``key`` expires (rounded), or None when it has no
        TTL; KeyNotFoundError if it is not stored."""
        reply = self._ttl_exchange(b"ttl %d\n" % check_int64("key", key))
        if reply == b"No expiry":
            return None
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply.isdigit():
            return int(reply)
        raise unexpected(reply)

    def persist(self, key):
        """Remove ``key``'s TTL: True if it had one, False if not;
        KeyNotFoundError if it is not stored."""
        reply = self._ttl_exchange(b"persist %d\n" % check_int64("key", key))
        if reply == b"Key not found":
            raise KeyNotFoundError(key)
        if reply == b"OK" or reply == b"No expiry":
            return reply == b"OK"
        raise unexpected(reply)

    def incr(self, key, delta=1):
        """Add ``delta`` to the value under ``key`` (an absent key counts as 0)
        and return the new value; InvalidRequestError when it would overflow
        (the value is unchanged)."""
        cdef char request[MAX_REQUEST_BYTES]
        cdef size_t length = format_request(OP_INCR, check_int64("key", key), check_int64("delta", delta), request)
        cdef int64_t value
        cdef const char *line
        self._enter()
        try:
            self._roundtrip(request, length)
            line = self._reader.data + self._line_start
            if self._line_length > 0 and (line[0] == c'-' or (line[0] >= c'0' and line[0] <= c'9')) \
                    and parse_int64(line, self._line_length, &value) == INT_OK:
                return value
            raise unexpected(self._line())
        finally:
            self._busy = False

    def request(self, str line):
        """Send ``line`` as one raw request and return the reply line, without its newline.

        Error replies (``Key not found``, ``Invalid request: ...``) are returned,
        not raised: this is the pass-through used by ``kvfast-client``. The line
        must hold exactly one request that the server answers, so a line
        containing a newline, or a blank one (which gets no reply, so waiting
        for one would hang), raises ValueError. After the server answers
        ``Goodbye`` it closes the connection, and :meth:`close` sends nothing
        (a later request reconnects).
        """
        if "\n" in line:
            raise ValueError("a request line must not contain a newline")
        # Blank as the server sees it: its "\r" ending dropped, only spaces and tabs left.
        if not line.removesuffix("\r").strip(" \t"):
            raise ValueError("a blank request line gets no reply")
        cdef bytes request = line.encode(_ENCODING, _ENCODING_ERRORS) + b"\n"
        self._enter()
        try:
            self._roundtrip(request, len(request))
            reply = self._line()
            if reply == GOODBYE:
                self._said_goodbye = True
                self._drop()
            return reply.decode(_ENCODING, _ENCODING_ERRORS)
        finally:
            self._busy = False

    def close(self):
        """Say ``bye`` to the server, then close the connection; safe to call again.

        The goodbye is best-effort: if the server has already gone, or does not
        answer within the timeout, the socket is closed anyway and no error is
        raised, because there is nothing left for the caller to do about it.
        """
        cdef int status = IO_OK
        cdef int fd = self._fd
        if self._busy:
            raise RuntimeError("Client used by two threads at once: use one Client per thread")
        if self._state == STATE_OPEN and not self._said_goodbye:
            with nogil:
                status = send_all(fd, b"bye\n", 4)
                if status == IO_OK:
                    read_line(fd, &self._reader, &self._line_start, &self._line_length)
        self._drop()
        self._state = STATE_CLOSED

    # ---- bulk requests ------------------------------------------------------------

    def get_many(self, keys, default=None):
        """The values of ``keys``, fetched in one pipelined stream.

        ``keys``: an int64 buffer (``array('q')``, a NumPy int64 array, a
        memoryview; one dimension, any stride) or an iterable of ints.

        With ``default`` (an int) a missing key's value is ``default`` and the
        result is the values alone: ``array('q')`` (a NumPy int64 array when
        ``keys`` is one). Without it (None) the result is ``(values, found)``:
        ``found`` is a ``bytearray`` of 0/1 (a NumPy bool array for NumPy
        input), 0 where the key is missing (its value then reads 0).
        """
        bulk = Bulk(OP_GET, keys, None, default)
        return self._bulk(bulk)

    def put_many(self, keys, values):
        """``put`` each ``keys[i]``, ``values[i]`` (insert only); returns the
        ``stored`` mask (bytearray, or NumPy bool): 0 where the key existed
        (its value unchanged)."""
        return self._bulk(Bulk(OP_PUT, keys, values, None, True))

    def set_many(self, keys, values):
        """``set`` each ``keys[i]`` to ``values[i]`` (insert or overwrite), in order; returns None."""
        return self._bulk(Bulk(OP_SET, keys, values, None, True))

    def delete_many(self, keys):
        """``del`` each key; returns the ``deleted`` mask (bytearray, or NumPy
        bool): 0 where the key was not stored."""
        return self._bulk(Bulk(OP_DEL, keys))

    def incr_many(self, keys, deltas=1):
        """``incr`` each key by ``deltas`` (one int for all, or one per key), in
        order; returns the new values (array('q'), or NumPy int64). An increment
        that would overflow is refused (that value unchanged, its result 0) and,
        once the whole batch has run, raises InvalidRequestError naming it
        (``.index``); the others were applied."""
        return self._bulk(Bulk(OP_INCR, keys, deltas, None, True))

    def _bulk(self, Bulk bulk):
        """Run a bulk request and return its result (see Bulk.result).

        Inputs were checked (TypeError, OutOfRangeError) when ``bulk`` was
        made, before anything is sent. An error reply of the server (say an
        overflowing increment) does not stop the batch: the first one is
        raised after every reply is in, so the connection stays in step.
        """
        self._enter()
        try:
            self._run(bulk)
        finally:
            self._busy = False
        return bulk.result()


cdef size_t format_request(Operation operation, int64_t key, int64_t argument, char *out) noexcept:
    """Format one request line (with its newline) into ``out`` (MAX_REQUEST_BYTES)."""
    cdef Batch batch
    batch.operation = operation
    batch.keys = <const char *>&key
    batch.key_stride = 0
    batch.values = NULL
    batch.constant = argument
    batch.count = 1
    batch.window = 1
    batch.encoded = batch.replied = 0
    return encode_requests(&batch, out, MAX_REQUEST_BYTES)


def check_password(password):
    """Refuse, before connecting, a password that ``auth PASSWORD`` cannot carry."""
    if not isinstance(password, str):
        raise TypeError(f"password must be a str, not {type(password).__name__}")
    if not password:
        raise ValueError("password must not be empty")
    if "\n" in password or "\r" in password:
        raise ValueError("password must not contain a line break")


OPERATION_GET, OPERATION_PUT, OPERATION_SET, OPERATION_DEL, OPERATION_INCR = OP_GET, OP_PUT, OP_SET, OP_DEL, OP_INCR


def check_int64_argument(str name, number):
    """check_int64 for Python callers (AsyncClient): returns ``number``."""
    check_int64(name, number)
    return number
