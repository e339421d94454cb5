# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The router between the loop's bytes and the two protocols.

This is the one place that knows a request starting with ``*`` is RESP
(answered by _resp) and anything else a text line, framed by _native. A line
is a native request when its first word is a native command (``get``, ``set``,
``del``, ``incr``, ``put``, ``stats``, ``auth``, ``bye``, in any case, as the
native protocol reads them: ``GET 5`` is native too); otherwise, when its
first word is a RESP command (``PING``, ``INFO``, ``MULTI``...), it is a Redis
inline request, answered by _resp with RESP replies (as redis-benchmark's
PING_INLINE needs); anything else stays native (its unknown-command reply).
One connection may mix all three. Each protocol frames its own requests:
it answers the request at the start of a buffer and says how many bytes it
used. The loop only moves bytes: it hands over what it read and keeps what
was not used.
"""
from kvfast._context cimport ServerContext, Session
from kvfast._native cimport native_frame, native_execute, native_unknown, native_prefetch_key
from kvfast._output cimport output_pending, output_text
from kvfast._resp cimport resp_answer, resp_prefetch_key, resp_has_command, resp_execute_inline


cdef enum:
    PREFETCH_REQUESTS = 16      # pipelined requests whose keys are prefetched ahead of answering them


cdef inline bint is_resp(char first_byte) noexcept nogil:
    return first_byte == c'*'


cdef size_t protocol_answer(ServerContext *context, Session *session, const char *data,
                            size_t length) noexcept nogil:
    """Answer each complete request in ``data`` in order, stopping early once
    the session starts closing or its unsent output reaches the high-water
    mark (backpressure: the rest waits). Returns the bytes used (what follows
    is an incomplete request, or requests left by backpressure), or
    (size_t)-1 when a reply could not be buffered (out of memory).

    Keys of a pipelined batch are prefetched PREFETCH_REQUESTS requests
    ahead (see protocol_prefetch). The first request is answered at once, so
    prefetching its key would gain nothing: the walk starts at the second
    (and never runs at pipeline 1).
    """
    cdef size_t start = 0, prefetched = 1
    cdef ssize_t used
    while (start < length and not session.closing
           and output_pending(&session.output) < context.limits.output_high_water_bytes):
        if start >= prefetched:
            prefetched = protocol_prefetch(context, data, length, start, PREFETCH_REQUESTS)
        if is_resp(data[start]):
            used = resp_answer(context, session, data + start, length - start)
        else:
            used = line_answer(context, session, data + start, length - start)
        if used < 0:
            return <size_t>-1
        if used == 0:
            break                   # incomplete: wait for more bytes
        start += <size_t>used
    return start


cdef ssize_t line_answer(ServerContext *context, Session *session, const char *data, size_t length) noexcept nogil:
    """Frame the text line at the start of ``data`` and answer it, natively
    or as a Redis inline request (see the module's docstring). Returns what
    native_frame does: the bytes used, 0 (incomplete) or -1 (out of memory)."""
    cdef size_t line_length = 0
    cdef ssize_t used = native_frame(context, session, data, length, &line_length)
    cdef bint not_native = False
    cdef int result
    if used <= 0 or session.closing:            # incomplete, out of memory, or refused (too long)
        return used
    result = native_execute(context, session, data, line_length, &not_native)
    if not_native:                              # the first word is no native command (checked first: no cost)
        if first_word_is_resp_command(data, line_length):
            result = resp_execute_inline(context, session, data, line_length)
        else:
            result = native_unknown(context, session, data, line_length)
    return -1 if result < 0 else used


cdef bint first_word_is_resp_command(const char *line, size_t length) noexcept nogil:
    """Whether a line's first word (after spaces and tabs, up to the next, as
    the native protocol splits it) names a RESP command."""
    cdef size_t start = 0, end
    while start < length and (line[start] == c' ' or line[start] == c'\t'):
        start += 1
    end = start
    while end < length and line[end] != c' ' and line[end] != c'\t':
        end += 1
    return end > start and resp_has_command(line + start, end - start)


cdef size_t protocol_prefetch(ServerContext *context, const char *data, size_t length, size_t start,
                              size_t requests) noexcept nogil:
    """Start loading the table slots of the keys of the next ``requests``
    requests in ``data`` from ``start`` on, without executing anything.

    With a random key per request the table lookup is a cache (and TLB)
    miss: done one request after another, a pipelined batch pays them in
    series; prefetched together they overlap. Walking the requests costs a
    second pass over their headers, small beside the misses it hides.
    Returns the offset after the last request walked, or ``length`` when the
    walk stopped at a request it cannot see whole, so it is not walked again.
    While keys have deadlines, each key's slot in the deadline table (which
    every access also looks up) is prefetched too.
    """
    cdef size_t walked, _i
    cdef bint volatile = context.expiry.volatile_keys != 0
    for _i in range(requests):
        if start >= length:
            return length
        if is_resp(data[start]):
            walked = resp_prefetch_key(&context.store, data + start, length - start)
            if volatile:
                resp_prefetch_key(&context.expires, data + start, length - start)
        else:
            walked = native_prefetch_key(&context.store, data + start, length - start)
            if volatile:
                native_prefetch_key(&context.expires, data + start, length - start)
        if walked == 0:
            return length
        start += walked
    return start


cdef const char *PROTECTED_MODE_MESSAGE = (
    b"kvfast is running in protected mode: it listens on a non-loopback address with no password, "
    b"so only clients on 127.0.0.1 and ::1 are served. Set a password (requirepass in the config file, "
    b"or KVFAST_PASSWORD), or start the server with --protected-mode no.")


cdef int protocol_refuse(Session *session, Refusal refusal, const char *first_bytes) noexcept nogil:
    """Buffer the reply that turns a refused client away, in the protocol its
    first bytes speak, and mark the session closing. 0, or -1 (out of memory)."""
    cdef bint resp = is_resp(first_bytes[0])
    cdef int result
    session.closing = True
    if refusal == REFUSE_MAX_CLIENTS:
        return output_text(&session.output, b"-ERR max number of clients reached\r\n" if resp
                           else b"Error: max number of clients reached\n")
    result = output_text(&session.output, b"-DENIED " if resp else b"Error: ")
    if result == 0:
        result = output_text(&session.output, PROTECTED_MODE_MESSAGE)
    if result == 0:
        result = output_text(&session.output, b"\r\n" if resp else b"\n")
    return result
