# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""``GET /metrics`` on the metrics port (``--metrics-port``), from the server's loop.

A metrics connection (a listener of transport "metrics" in _loop.pyx) speaks
HTTP/1.0 or 1.1, one request per connection: once the request's head (request
line and headers) has arrived, it is answered and the connection closes
(``Connection: close``; Prometheus reconnects for each scrape). The body is the
text exposition format 0.0.4 rendered from _stats.pyx's field table (the one
source of the names INFO shows). Anything else gets a short error, never
disturbing the loop: a malformed request line 400, another path 404, another
method 405, a head over MAX_HTTP_REQUEST_BYTES 431; metrics connections are
not clients (no maxclients, no counters) and are closed when idle (_loop.pyx).
"""
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memset

from kvfast._context cimport ServerContext, Session
from kvfast._output cimport Output, output_append, output_text, output_int64, output_free
from kvfast._stats cimport write_prometheus


cdef enum:
    HEAD_NOT_COMPLETE = -1


cdef ssize_t head_length(const char *data, size_t length) noexcept nogil:
    """Bytes of the request's head up to and including the blank line that ends
    it (``\\r\\n\\r\\n``, or ``\\n\\n`` from a lenient client), or
    HEAD_NOT_COMPLETE."""
    cdef size_t i
    for i in range(length):
        if data[i] != c'\n':
            continue
        if i >= 1 and data[i - 1] == c'\n':
            return <ssize_t>i + 1
        if i >= 3 and data[i - 1] == c'\r' and data[i - 2] == c'\n' and data[i - 3] == c'\r':
            return <ssize_t>i + 1
    return HEAD_NOT_COMPLETE


cdef bint starts_with(const char *data, size_t length, const char *prefix, size_t prefix_length) noexcept nogil:
    return length >= prefix_length and memcmp(data, prefix, prefix_length) == 0


cdef int reply_status(Session *session, const char *status) noexcept nogil:
    """A short plain-text error response: ``HTTP/1.1 <status>``, its text as the body."""
    cdef Output *output = &session.output
    cdef size_t length = 0
    while status[length] != 0:
        length += 1
    if output_text(output, b"HTTP/1.1 ") < 0 or output_text(output, status) < 0 \
            or output_text(output, b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ") < 0 \
            or output_int64(output, <int64_t>length + 1, b"\r\nConnection: close\r\n\r\n") < 0 \
            or output_text(output, status) < 0:
        return -1
    return output_text(output, b"\n")


cdef int reply_metrics(ServerContext *context, Session *session, bint with_body) noexcept nogil:
    """200 with the exposition (rendered first, for its Content-Length)."""
    cdef Output body
    cdef int result = -1
    memset(&body, 0, sizeof(body))
    if write_prometheus(&body, context) == 0 \
            and output_text(&session.output, b"HTTP/1.1 200 OK\r\n"
                                             b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                             b"Content-Length: ") == 0 \
            and output_int64(&session.output, <int64_t>(body.end - body.start),
                             b"\r\nConnection: close\r\n\r\n") == 0 \
            and (not with_body or output_append(&session.output, body.data + body.start, body.end - body.start) == 0):
        result = 0
    output_free(&body)
    return result


cdef size_t word_end(const char *data, size_t start, size_t end) noexcept nogil:
    """Where the request line's word starting at ``start`` ends: the next blank,
    line ending or ``end``."""
    while start < end and data[start] != c' ' and data[start] != c'\r' and data[start] != c'\n':
        start += 1
    return start


cdef size_t metrics_answer(ServerContext *context, Session *session, const char *data,
                           size_t length) noexcept nogil:
    """Answer the HTTP request at ``data[:length]`` once its head is complete, and
    mark the session closing. Returns the bytes used (0: the head is incomplete,
    wait for more), or (size_t)-1 when out of memory."""
    cdef ssize_t head = head_length(data, length)
    cdef size_t method_end, target_start, target_end, end
    cdef int result
    if head == HEAD_NOT_COMPLETE:
        if length <= MAX_HTTP_REQUEST_BYTES:
            return 0
        result = reply_status(session, b"431 Request Header Fields Too Large")
    else:
        # The request line: METHOD SP TARGET SP HTTP/1.x
        end = <size_t>head
        method_end = word_end(data, 0, end)
        target_start = method_end + 1
        target_end = word_end(data, target_start, end) if target_start < end else end
        if method_end == 0 or method_end >= end or data[method_end] != c' ' or target_end == target_start \
                or target_end >= end or data[target_end] != c' ' \
                or not starts_with(data + target_end + 1, end - target_end - 1, b"HTTP/1.", 7):
            result = reply_status(session, b"400 Bad Request")
        elif not ((method_end == 3 and memcmp(data, b"GET", 3) == 0)
                  or (method_end == 4 and memcmp(data, b"HEAD", 4) == 0)):
            result = reply_status(session, b"405 Method Not Allowed")
        elif target_end - target_start >= 8 and memcmp(data + target_start, b"/metrics", 8) == 0 \
                and (target_end - target_start == 8 or data[target_start + 8] == c'?'):
            result = reply_metrics(context, session, method_end == 3)
        else:
            result = reply_status(session, b"404 Not Found")
    session.closing = True
    return <size_t>-1 if result < 0 else length
