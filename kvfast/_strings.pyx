# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The RESP string commands beyond GET/SET's first release, and the server
commands that Redis clients call around them.

SET [NX|XX] [GET], MSET, MSETNX, GETSET, GETDEL, INCRBYFLOAT (integral
increments only), STRLEN (of the decimal form), APPEND (decimal digits
appended, while the result is an int64); TIME, ROLE, WAIT, SWAPDB, LASTSAVE,
SAVE, BGSAVE. Replies, arity and error texts are Redis 7's; where an int64
store must differ, the README's command table says how. Every change to the
store goes through kvfast/_keyspace.pxd; multi-key writes validate every
argument first, so they apply to all their keys or to none.
"""
from libc.errno cimport errno, ERANGE, EINVAL
from libc.stdint cimport int64_t, uint64_t, INT32_MIN, INT32_MAX
from libc.stdlib cimport strtold
from libc.string cimport memcpy, strerror
from posix.time cimport gettimeofday, timeval

from kvfast._command cimport Request, Argument, next_argument
from kvfast._context cimport ServerContext, Session
from kvfast._keyspace cimport (
    keyspace_read, keyspace_peek, keyspace_contains, keyspace_insert, keyspace_upsert, keyspace_take,
    keyspace_overwrite, keyspace_set_expiring,
)
from kvfast._expire cimport (
    ExpireOption, OPTION_NONE, OPTION_KEEPTTL, expire_option_take, expire_option_deadline,
)
from kvfast._output cimport Output, output_text
from kvfast._reply cimport (
    ERR_NOT_INTEGER, ERR_KEY_NOT_INTEGER, ERR_OVERFLOW, ERR_SYNTAX, ERR_OUT_OF_MEMORY, ERR_LOG_OFF,
    reply_integer, reply_bulk_integer, reply_null, reply_array, reply_wrong_arity, reply_error, refuse_write,
    read_integer,
)
from kvfast._rewrite cimport aof_save_now
from kvfast._system cimport set_errno
from kvfast._text cimport INT_OK, parse_int64, format_int64, equals_nocase


cdef extern from "<math.h>" nogil:
    int isnan(long double x)
    int isinf(long double x)
    long double floorl(long double x)

cdef extern from "<ctype.h>" nogil:
    int isspace(int c)


cdef enum:
    MAX_LONG_DOUBLE_CHARS = 5 * 1024    # Redis's bound on a long double's text (util.h)
    INT64_DIGITS = 20                   # the longest int64 in decimal, sign included


cdef extern from *:
    """
    #define KVFAST_ERR_NOT_FLOAT "-ERR value is not a valid float\\r\\n"
    #define KVFAST_ERR_NAN_OR_INFINITY "-ERR increment would produce NaN or Infinity\\r\\n"
    #define KVFAST_ERR_NOT_INTEGRAL "-ERR increment is not an integer: kvfast stores int64 values only\\r\\n"
    #define KVFAST_ERR_SAVE_RUNNING "-ERR Background save already in progress\\r\\n"
    """
    const char *ERR_NOT_FLOAT "KVFAST_ERR_NOT_FLOAT"
    const char *ERR_NAN_OR_INFINITY "KVFAST_ERR_NAN_OR_INFINITY"
    const char *ERR_NOT_INTEGRAL "KVFAST_ERR_NOT_INTEGRAL"
    const char *ERR_SAVE_RUNNING "KVFAST_ERR_SAVE_RUNNING"


cdef inline int reply_ok(Session *session) noexcept nogil:
    return output_text(&session.output, b"+OK\r\n")


cdef inline int reply_value(Session *session, bint present, int64_t value) noexcept nogil:
    """A value as GET replies it: bulk, or null when ``present`` is false."""
    return reply_bulk_integer(&session.output, value) if present else reply_null(session)


cdef inline size_t decimal_length(int64_t value) noexcept nogil:
    """Characters of ``value`` in canonical decimal (STRLEN, APPEND)."""
    cdef char digits[INT64_DIGITS + 1]
    return format_int64(value, digits + INT64_DIGITS + 1)


cdef inline bint read_key_and_value(ServerContext *context, Output *output, const Request *request,
                                    size_t *position, int64_t *key, int64_t *value, int *status) noexcept nogil:
    """The next two arguments as a key and a value; False (replied, ``status``
    set) when either is not an int64."""
    return read_integer(context, output, request, position, key, ERR_KEY_NOT_INTEGER, status) \
        and read_integer(context, output, request, position, value, ERR_NOT_INTEGER, status)


# ---- SET, GETSET, GETDEL -------------------------------------------------------------

cdef extern from *:
    """
    #define KVFAST_ERR_EXPIRE_TIME_SET "-ERR invalid expire time in 'set' command\\r\\n"
    """
    const char *ERR_EXPIRE_TIME_SET "KVFAST_ERR_EXPIRE_TIME_SET"


cdef inline int set_with_ttl(ServerContext *context, Session *session, int64_t key, int64_t value,
                             const ExpireOption *option, int64_t deadline) noexcept nogil:
    """The write of SET: with a deadline (EX/PX/EXAT/PXAT), keeping the key's
    own (KEEPTTL), or clearing it. 0 if written (1 new or 0 overwritten for
    the caller's purpose does not matter), -1 with errno ENOMEM."""
    if option.kind == OPTION_KEEPTTL:
        return -1 if keyspace_overwrite(context, session, key, value) < 0 else 0
    if deadline != 0:
        return -1 if keyspace_set_expiring(context, session, key, value, deadline) < 0 else 0
    return -1 if keyspace_upsert(context, session, key, value) < 0 else 0


cdef int command_set(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]: +OK, or
    null when NX/XX prevents the write; with GET the old value (or null)
    instead, whether or not it was written (Redis 7: GET may go with NX).
    Options are parsed as Redis parses them: NX and XX exclude each other,
    the expiry options each other (kvfast/_expire.pyx), repeats are allowed;
    the expiry time is checked after them, before anything is read. Without
    KEEPTTL or a time, a TTL the key had is cleared; a deadline not after the
    clock leaves the key deleted (Redis stores it already expired)."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef ExpireOption option
    cdef int64_t key, value, old = 0, deadline
    cdef int64_t *found
    cdef bint only_if_absent = False, only_if_present = False, get = False, present
    cdef int status, result
    option.kind = OPTION_NONE
    if not read_key_and_value(context, output, request, &position, &key, &value, &status):
        return status
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"nx") and not only_if_present:
            only_if_absent = True
        elif equals_nocase(argument.start, argument.length, b"xx") and not only_if_absent:
            only_if_present = True
        elif equals_nocase(argument.start, argument.length, b"get"):
            get = True
        elif not expire_option_take(&option, &argument, request, &position, True):
            return reply_error(context, output, ERR_SYNTAX)
    if not expire_option_deadline(context, output, &option, ERR_EXPIRE_TIME_SET, &deadline, &status):
        return status
    if only_if_absent and not get and option.kind == OPTION_NONE:      # SET NX: one lookup, as ever
        result = keyspace_insert(context, session, key, value)
        if result < 0:
            return reply_error(context, output, ERR_OUT_OF_MEMORY)
        return reply_ok(session) if result == 1 else reply_null(session)
    if get:                                 # the old value is read (and counted) first, as Redis does
        found = keyspace_read(context, key)
        present = found != NULL
        if present:
            old = found[0]
    else:
        present = keyspace_contains(context, key) if only_if_absent or only_if_present else False
    if (only_if_absent and present) or (only_if_present and not present):
        return reply_value(session, present, old) if get else reply_null(session)
    if set_with_ttl(context, session, key, value, &option, deadline) < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_value(session, present, old) if get else reply_ok(session)


cdef int command_getset(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """GETSET key value: the old value (or null), and the key set to ``value``."""
    cdef int64_t key, value, old = 0
    cdef int64_t *found
    cdef bint present
    cdef int status
    if not read_key_and_value(context, &session.output, request, &position, &key, &value, &status):
        return status
    found = keyspace_read(context, key)
    present = found != NULL
    if present:
        old = found[0]
    if keyspace_upsert(context, session, key, value) < 0:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    return reply_value(session, present, old)


cdef int command_getdel(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """GETDEL key: the value (or null), and the key removed."""
    cdef int64_t key, value = 0
    cdef bint present
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    present = keyspace_take(context, session, key, &value)      # (before ``value`` is read)
    return reply_value(session, present, value)


# ---- MSET, MSETNX -----------------------------------------------------------------------

cdef int command_mset(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """MSET key value [key value ...]: +OK."""
    return mset_generic(context, session, request, position, False)


cdef int command_msetnx(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """MSETNX key value [key value ...]: :1 if no key existed and all were
    set, :0 (nothing set) if any existed."""
    return mset_generic(context, session, request, position, True)


cdef int mset_generic(ServerContext *context, Session *session, const Request *request,
                      size_t position, bint only_if_none_exist) noexcept nogil:
    """MSET and MSETNX (as Redis's msetGenericCommand). Every pair is checked
    first, in order (a non-integer key, then value, answers for the whole
    command), so the command applies to all its keys or to none; the table's
    key positions (1, -1, step 2) reserved one log record per pair. Repeated
    keys: the last value wins. Only running out of memory midway can leave it
    applied in part (answered -OOM, as any write then)."""
    cdef Output *output = &session.output
    cdef size_t start = position
    cdef int64_t key, value
    cdef int status
    if request.argc % 2 == 0:
        return reply_wrong_arity(context, output, b"msetnx" if only_if_none_exist else b"mset")
    while position < request.length:
        if not read_key_and_value(context, output, request, &position, &key, &value, &status):
            return status
    if only_if_none_exist:
        position = start
        while position < request.length:
            read_key_and_value(context, output, request, &position, &key, &value, &status)
            if keyspace_contains(context, key):
                return reply_integer(output, 0)
    position = start
    while position < request.length:
        read_key_and_value(context, output, request, &position, &key, &value, &status)
        if keyspace_upsert(context, session, key, value) < 0:
            return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_integer(output, 1) if only_if_none_exist else reply_ok(session)


# ---- INCRBYFLOAT, STRLEN, APPEND ----------------------------------------------------------

cdef bint parse_long_double(const Argument *argument, long double *number) noexcept nogil:
    """Parse as Redis's string2ld: strtold over a NUL-terminated copy, the whole
    text consumed (an embedded NUL stops it: refused), no leading space, no
    NaN, no overflow or underflow to zero
    (hex, exponents and "inf" are accepted, as glibc's strtold reads them)."""
    cdef char text[MAX_LONG_DOUBLE_CHARS]
    cdef char *end
    cdef long double value
    if argument.length == 0 or argument.length >= MAX_LONG_DOUBLE_CHARS:
        return False
    memcpy(text, argument.start, argument.length)
    text[argument.length] = 0
    set_errno(0)
    value = strtold(text, &end)
    if isspace(<unsigned char>text[0]) or end[0] != 0 or <size_t>(end - text) != argument.length or isnan(value) \
            or (errno == ERANGE and (isinf(value) or value == 0)) or errno == EINVAL:
        return False
    number[0] = value
    return True


cdef int command_incrbyfloat(ServerContext *context, Session *session, const Request *request,
                             size_t position) noexcept nogil:
    """INCRBYFLOAT key increment: the new value, a bulk string as Redis formats
    it (for an integer: its decimal digits). The increment is parsed as Redis
    parses a long double and the sum computed in long double, as Redis does;
    kvfast then takes it only when the increment is integral (else
    ERR_NOT_INTEGRAL, nothing changes) and the sum fits in int64 (else
    -ERR increment or decrement would overflow). Any int64 plus an integral
    long double is exact whenever the result fits, so the reply and the value
    are Redis's byte for byte then."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int64_t key, result_value
    cdef int64_t *found
    cdef long double increment, total
    cdef int status
    if not read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    next_argument(request.data, &position, &argument)
    if not parse_long_double(&argument, &increment):
        return reply_error(context, output, ERR_NOT_FLOAT)
    found = keyspace_peek(context, key)
    total = (<long double>found[0] if found != NULL else 0) + increment
    if isnan(total) or isinf(total):
        return reply_error(context, output, ERR_NAN_OR_INFINITY)
    if floorl(increment) != increment:
        return reply_error(context, output, ERR_NOT_INTEGRAL)
    if not (-9223372036854775808.0 <= total < 9223372036854775808.0):
        return reply_error(context, output, ERR_OVERFLOW)
    result_value = <int64_t>total
    if keyspace_overwrite(context, session, key, result_value) < 0:      # keeps a TTL, as Redis's dbOverwrite
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_bulk_integer(output, result_value)


cdef int command_strlen(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """STRLEN key: the length of the value's canonical decimal form, 0 if absent."""
    cdef int64_t key
    cdef int64_t *found
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    found = keyspace_read(context, key)
    return reply_integer(&session.output, 0 if found == NULL else <int64_t>decimal_length(found[0]))


cdef int command_append(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """APPEND key text: the text appended to the value's decimal form (to
    nothing if absent), as Redis appends bytes; kvfast takes the result only
    if it is an int64 (else -ERR value is not an integer or out of range,
    nothing changes), and stores it canonical. Replies the new length (of the
    canonical form, as STRLEN then says)."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int64_t key, result_value
    cdef int64_t *found
    cdef uint64_t magnitude, limit, digit
    cdef bint negative
    cdef size_t i
    cdef int status
    if not read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    next_argument(request.data, &position, &argument)
    found = keyspace_peek(context, key)
    if found == NULL:
        if parse_int64(argument.start, argument.length, &result_value) != INT_OK:
            return reply_error(context, output, ERR_NOT_INTEGER)
    else:                                   # more decimal digits after the existing ones
        negative = found[0] < 0
        magnitude = (0 - <uint64_t>found[0]) if negative else <uint64_t>found[0]
        limit = (<uint64_t>1 << 63) if negative else ((<uint64_t>1 << 63) - 1)
        for i in range(argument.length):
            if not (c'0' <= argument.start[i] <= c'9'):
                return reply_error(context, output, ERR_NOT_INTEGER)
            digit = <uint64_t>(argument.start[i] - c'0')
            if magnitude > (limit - digit) // 10:
                return reply_error(context, output, ERR_NOT_INTEGER)
            magnitude = magnitude * 10 + digit
        result_value = <int64_t>(0 - magnitude) if negative else <int64_t>magnitude
    if keyspace_overwrite(context, session, key, result_value) < 0:      # keeps a TTL
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_integer(output, <int64_t>decimal_length(result_value))


# ---- server commands ---------------------------------------------------------------------

cdef int command_time(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """TIME: [seconds, microseconds] as two bulk strings."""
    cdef timeval now
    gettimeofday(&now, NULL)
    if reply_array(&session.output, 2) < 0 or reply_bulk_integer(&session.output, now.tv_sec) < 0:
        return -1
    return reply_bulk_integer(&session.output, now.tv_usec)


cdef int command_role(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """ROLE: a master at replication offset 0 with no replicas."""
    return output_text(&session.output, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")


cdef int command_wait(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """WAIT numreplicas timeout: :0 at once, there being no replicas (Redis
    would block up to ``timeout`` ms when ``numreplicas`` > 0, and answer 0).
    The arguments are checked as Redis checks them."""
    cdef Output *output = &session.output
    cdef int64_t replicas, timeout
    cdef int status
    if not read_integer(context, output, request, &position, &replicas, ERR_NOT_INTEGER, &status) \
            or not read_integer(context, output, request, &position, &timeout,
                                b"-ERR timeout is not an integer or out of range\r\n", &status):
        return status
    if timeout < 0:
        return reply_error(context, output, b"-ERR timeout is negative\r\n")
    return reply_integer(output, 0)


cdef int command_swapdb(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """SWAPDB index index: +OK for 0 0 (the one database with itself: nothing
    changes); Redis's errors otherwise (an index that is not a C int, then one
    out of range: here anything but 0)."""
    cdef Output *output = &session.output
    cdef int64_t first, second
    cdef int status
    if not read_integer(context, output, request, &position, &first, b"-ERR invalid first DB index\r\n", &status):
        return status
    if not INT32_MIN <= first <= INT32_MAX:
        return reply_error(context, output, b"-ERR invalid first DB index\r\n")
    if not read_integer(context, output, request, &position, &second, b"-ERR invalid second DB index\r\n", &status):
        return status
    if not INT32_MIN <= second <= INT32_MAX:
        return reply_error(context, output, b"-ERR invalid second DB index\r\n")
    if first != 0 or second != 0:
        return reply_error(context, output, b"-ERR DB index is out of range\r\n")
    return reply_ok(session)


cdef int command_lastsave(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil:
    """LASTSAVE: the Unix time the append-only file was last rewritten (by
    BGSAVE, SAVE, BGREWRITEAOF or an automatic rewrite), or the server's start
    when it has not been (or there is no log: nothing is ever saved)."""
    if context.aof != NULL and context.aof.last_rewrite_time != 0:
        return reply_integer(&session.output, context.aof.last_rewrite_time)
    return reply_integer(&session.output, context.started_at)


cdef int refuse_save(ServerContext *context, Session *session) noexcept nogil:
    """Why SAVE or BGSAVE cannot start now: 0 if it can; otherwise replies
    (-ERR without a log, while a rewrite runs or is requested, -MISCONF while
    the log fails) and returns 1, or -1 when out of memory."""
    cdef Output *output = &session.output
    if context.aof == NULL:
        return -1 if reply_error(context, output, ERR_LOG_OFF) < 0 else 1
    if context.aof.rewrite_child != 0 or context.aof.rewrite_requested:
        return -1 if reply_error(context, output, ERR_SAVE_RUNNING) < 0 else 1
    if context.aof.failure != 0:                # a rewrite to recover is attempted by itself
        return -1 if refuse_write(context, output, context.aof.failure) < 0 else 1
    return 0


cdef int command_save(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """SAVE: rewrite the append-only file now, in the loop (every client waits,
    as with Redis's SAVE); +OK once the new log is synced and in place."""
    cdef int refused = refuse_save(context, session)
    cdef int error
    if refused != 0:
        return -1 if refused < 0 else 0
    if aof_save_now(context.aof, &context.store) < 0:
        error = errno
        if reply_error(context, &session.output, b"-ERR saving the append-only file failed: ") < 0 \
                or output_text(&session.output, strerror(error)) < 0:
            return -1
        return output_text(&session.output, b"\r\n")
    return reply_ok(session)


cdef int command_bgsave(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """BGSAVE [SCHEDULE]: start a background rewrite of the append-only file,
    as BGREWRITEAOF does (a forked child, see _rewrite.pyx). LASTSAVE changes
    when it is done."""
    cdef Argument argument
    cdef int refused
    if request.argc > 2:
        return reply_error(context, &session.output, ERR_SYNTAX)
    if request.argc == 2:
        next_argument(request.data, &position, &argument)
        if not equals_nocase(argument.start, argument.length, b"schedule"):
            return reply_error(context, &session.output, ERR_SYNTAX)
    refused = refuse_save(context, session)
    if refused != 0:
        return -1 if refused < 0 else 0
    context.aof.rewrite_requested = True
    return output_text(&session.output, b"+Background saving started\r\n")
