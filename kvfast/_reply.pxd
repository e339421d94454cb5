"""Reply shapes (RESP2, and RESP3 where they differ), Redis's error texts, and
the argument readers that answer with an error when an argument is not an int64.

Every function appends to the session's output and returns 0, or -1 when the
reply could not be buffered (out of memory); error replies are counted in
COUNTER_ERROR_REPLIES here, once. All inline: these are the hot path.
"""
from libc.stdint cimport int64_t
from libc.string cimport strerror, strlen

from kvfast._command cimport Request, Argument, next_argument
from kvfast._context cimport ServerContext, Session, COUNTER_ERROR_REPLIES
from kvfast._output cimport Output, output_append, output_text, output_int64
from kvfast._text cimport INT_OK, parse_int64, format_int64


cdef extern from *:
    """
    #define KVFAST_ERR_NOT_INTEGER "-ERR value is not an integer or out of range\\r\\n"
    #define KVFAST_ERR_KEY_NOT_INTEGER "-ERR key is not an integer or out of range\\r\\n"
    #define KVFAST_ERR_OVERFLOW "-ERR increment or decrement would overflow\\r\\n"
    #define KVFAST_ERR_SYNTAX "-ERR syntax error\\r\\n"
    #define KVFAST_ERR_OUT_OF_MEMORY "-OOM command not allowed when used memory > 'maxmemory'.\\r\\n"
    #define KVFAST_ERR_NOAUTH "-NOAUTH Authentication required.\\r\\n"
    #define KVFAST_ERR_WRONGPASS "-WRONGPASS invalid username-password pair or user is disabled.\\r\\n"
    #define KVFAST_ERR_LOG_OFF "-ERR the append-only file is off (start kvfast-server with --appendonly FILE)\\r\\n"
    """
    # Redis's error replies that more than one command sends, each once.
    const char *ERR_NOT_INTEGER "KVFAST_ERR_NOT_INTEGER"
    const char *ERR_KEY_NOT_INTEGER "KVFAST_ERR_KEY_NOT_INTEGER"
    const char *ERR_OVERFLOW "KVFAST_ERR_OVERFLOW"
    const char *ERR_SYNTAX "KVFAST_ERR_SYNTAX"
    const char *ERR_OUT_OF_MEMORY "KVFAST_ERR_OUT_OF_MEMORY"
    const char *ERR_NOAUTH "KVFAST_ERR_NOAUTH"
    const char *ERR_WRONGPASS "KVFAST_ERR_WRONGPASS"
    const char *ERR_LOG_OFF "KVFAST_ERR_LOG_OFF"        # BGREWRITEAOF, SAVE, BGSAVE without a log


cdef inline int reply_integer(Output *output, int64_t value) noexcept nogil:
    return -1 if output_append(output, b":", 1) < 0 else output_int64(output, value, b"\r\n")


cdef inline int reply_bulk(Output *output, const char *data, size_t length) noexcept nogil:
    if output_append(output, b"$", 1) < 0 or output_int64(output, <int64_t>length, b"\r\n") < 0 \
            or output_append(output, data, length) < 0:
        return -1
    return output_append(output, b"\r\n", 2)


cdef inline int reply_verbatim(Session *session, const char *data, size_t length) noexcept nogil:
    """Text for a person (INFO): RESP3's verbatim string ``=<n>\r\ntxt:<text>\r\n``
    (``n`` counts the ``txt:``), or a bulk string in RESP2, as Redis sends it."""
    cdef Output *output = &session.output
    if session.resp_version != 3:
        return reply_bulk(output, data, length)
    if output_append(output, b"=", 1) < 0 or output_int64(output, <int64_t>length + 4, b"\r\ntxt:") < 0 \
            or output_append(output, data, length) < 0:
        return -1
    return output_append(output, b"\r\n", 2)


cdef inline int reply_bulk_text(Output *output, const char *text) noexcept nogil:
    return reply_bulk(output, text, strlen(text))


cdef inline int reply_bulk_integer(Output *output, int64_t value) noexcept nogil:
    """A value as GET returns it, ``$<n>\r\n<digits>\r\n``, built in place and
    appended at once (the hottest reply of all)."""
    cdef char reply[32]
    cdef size_t length = format_int64(value, reply + 28)      # digits end at reply[27]
    cdef size_t start = 28 - length - 4
    reply[28] = c'\r'
    reply[29] = c'\n'
    if length >= 10:                                          # "$" + two digits of length
        start -= 1
        reply[start] = c'$'
        reply[start + 1] = <char>(c'0' + length // 10)
        reply[start + 2] = <char>(c'0' + length % 10)
    else:
        reply[start] = c'$'
        reply[start + 1] = <char>(c'0' + length)
    reply[28 - length - 2] = c'\r'
    reply[28 - length - 1] = c'\n'
    return output_append(output, reply + start, 30 - start)


cdef inline int reply_null(Session *session) noexcept nogil:
    return output_text(&session.output, b"_\r\n" if session.resp_version == 3 else b"$-1\r\n")


cdef inline int reply_array(Output *output, size_t count) noexcept nogil:
    return -1 if output_append(output, b"*", 1) < 0 else output_int64(output, <int64_t>count, b"\r\n")


cdef inline int reply_map(Session *session, size_t pairs) noexcept nogil:
    """A map header: RESP3 ``%n``, or RESP2's flat array of 2n elements."""
    if session.resp_version == 3:
        return -1 if output_append(&session.output, b"%", 1) < 0 \
            else output_int64(&session.output, <int64_t>pairs, b"\r\n")
    return reply_array(&session.output, pairs * 2)


cdef inline int reply_wrong_arity(ServerContext *context, Output *output, const char *name) noexcept nogil:
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"-ERR wrong number of arguments for '") < 0 or output_text(output, name) < 0:
        return -1
    return output_text(output, b"' command\r\n")


cdef inline int reply_error(ServerContext *context, Output *output, const char *error) noexcept nogil:
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    return output_text(output, error)


cdef inline int append_sanitized(Output *output, const char *data, size_t length) noexcept nogil:
    """Append bytes with CR and LF turned into spaces (an error reply is one line)."""
    cdef size_t i
    cdef char byte
    for i in range(length):
        byte = data[i]
        if byte == c'\r' or byte == c'\n':
            byte = c' '
        if output_append(output, &byte, 1) < 0:
            return -1
    return 0


cdef inline int reply_unknown_subcommand(ServerContext *context, Output *output, const Argument *argument,
                                         const char *command) noexcept nogil:
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"-ERR unknown subcommand '") < 0 \
            or append_sanitized(output, argument.start, argument.length) < 0 \
            or output_text(output, b"'. Try ") < 0 or output_text(output, command) < 0:
        return -1
    return output_text(output, b" HELP.\r\n")


cdef inline int refuse_write(ServerContext *context, Output *output, int error) noexcept nogil:
    """Redis's reply to a write it cannot persist: ``-MISCONF Errors writing to
    the AOF file: <reason>`` (see _keyspace.keyspace_begin_write)."""
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"-MISCONF Errors writing to the AOF file: ") < 0 \
            or output_text(output, strerror(error)) < 0:
        return -1
    return output_text(output, b"\r\n")


cdef inline int parse_keys(ServerContext *context, Output *output, const Request *request,
                           size_t position) noexcept nogil:
    """Check that every argument from ``position`` on is an int64 key, so that a
    multi-key command either runs on all its keys or not at all. Returns 0 if so;
    otherwise replies with the error and returns 1 (or -1 if out of memory)."""
    cdef Argument argument
    cdef int64_t key
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if parse_int64(argument.start, argument.length, &key) != INT_OK:
            return -1 if reply_error(context, output, ERR_KEY_NOT_INTEGER) < 0 else 1
    return 0


cdef inline bint read_integer(ServerContext *context, Output *output, const Request *request, size_t *position,
                              int64_t *number, const char *error, int *status) noexcept nogil:
    """Read the next argument as an int64. True with ``number`` set; otherwise
    replies ``error`` and returns False, with the reply's status (0, or -1 if out
    of memory) in ``status`` for the command to return."""
    cdef Argument argument
    next_argument(request.data, position, &argument)
    if parse_int64(argument.start, argument.length, number) == INT_OK:
        return True
    status[0] = reply_error(context, output, error)
    return False
