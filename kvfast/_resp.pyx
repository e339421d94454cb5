# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Redis protocol (RESP2, and RESP3 after ``HELLO 3``) over the same store.

A request that starts with ``*`` is a multibulk request: ``*<argc>\\r\\n``, then
``argc`` bulk strings ``$<len>\\r\\n<bytes>\\r\\n``. It is first *scanned*: checked
complete and well-formed without copying anything (sizes are checked against
the limits from their headers, before any memory is set aside for them). Only
a complete request is executed, reading its arguments in place.

Keys and values are int64 written in decimal, as redis-benchmark's
``__rand_int__`` keys are (leading zeros allowed). Replies follow Redis 7's
shapes and error texts; see the README for the list of commands.
"""
from libc.stdint cimport int64_t, uint64_t, INT64_MIN
from libc.string cimport memchr, memcmp, memcpy, strlen
from libc.time cimport time
from posix.unistd cimport getpid

from kvfast._aof cimport aof_begin_transaction, aof_end_transaction
from kvfast._config_command cimport command_config
from kvfast._command cimport (
    Request, Argument, next_argument, RespProc, RespCommand, CMD_WRITE, CMD_READONLY, CMD_ADMIN, CMD_LOADING,
    CMD_FAST, CMD_NO_AUTH, CMD_NO_MULTI, CMD_DENYOOM, FLAG_COUNT,
)
from kvfast._clients cimport (
    monitor_feed, client_set_name, command_client, command_monitor, command_shutdown, command_debug,
)
from kvfast._commandstats cimport (
    Redaction, REDACT_NONE, REDACT_ALL, REDACT_HELLO_AUTH,
    monotonic_ns, stats_count_amortized, stats_record, stats_note_error, stats_count_error,
    slowlog_consider, write_cpu_section, write_commandstats_section, write_errorstats_section,
    write_latencystats_section, command_slowlog, command_latency,
)
from kvfast._context cimport (
    ServerContext, Session, CommandStats, COUNTER_COMMANDS_PROCESSED, COUNTER_ERROR_REPLIES, COUNTER_PROTOCOL_ERRORS,
    COUNTER_AUTH_FAILURES,
)
from kvfast._evict cimport memory_admit
from kvfast._keys cimport (
    command_scan, command_keys, command_type, command_touch, command_rename, command_renamenx, command_copy,
    command_randomkey, command_object, command_memory,
)
from kvfast._keyspace cimport (
    keyspace_begin_write, keyspace_read, keyspace_contains, keyspace_size, keyspace_insert,
    keyspace_delete, keyspace_increment, keyspace_clear,
)
from kvfast._reply cimport (
    ERR_NOT_INTEGER, ERR_KEY_NOT_INTEGER, ERR_OVERFLOW, ERR_SYNTAX, ERR_OUT_OF_MEMORY, ERR_NOAUTH, ERR_WRONGPASS,
    ERR_LOG_OFF,
    reply_integer, reply_bulk, reply_bulk_text, reply_bulk_integer, reply_null, reply_array, reply_map, reply_verbatim,
    reply_wrong_arity, reply_error, append_sanitized, reply_unknown_subcommand, refuse_write, parse_keys, read_integer,
)
from kvfast._multi cimport (
    multi_set_executor, multi_dispatch, multi_flag_error, multi_reject_exec, command_multi, command_exec,
    command_discard, command_watch, command_unwatch, command_reset,
)
from kvfast._output cimport Output, output_append, output_text, output_int64, output_free, output_pending
from kvfast._stats cimport (
    StatsSection, INFO_NONE, INFO_CLIENTS, INFO_MEMORY, INFO_PERSISTENCE, INFO_STATS, INFO_REPLICATION,
    write_info_section,
)
from kvfast._store cimport Store, store_prefetch
from kvfast._expire cimport (
    command_expire, command_pexpire, command_expireat, command_pexpireat, command_ttl, command_pttl,
    command_expiretime, command_pexpiretime, command_persist, command_setex, command_psetex, command_getex,
    expire_average_ttl_ms,
)
from kvfast._strings cimport (
    command_set, command_getset, command_getdel, command_mset, command_msetnx, command_incrbyfloat, command_strlen,
    command_append, command_time, command_role, command_wait, command_swapdb, command_lastsave, command_save,
    command_bgsave,
)
from kvfast._text cimport INT_OK, parse_int64, format_int64, equals_nocase, same_letters_nocase, secrets_equal


cdef enum:
    MAX_HEADER_DIGITS = 18                 # "*<n>" / "$<n>" with more digits are malformed
    PREFETCH_MAX_ARGUMENTS = 8             # longer requests end a prefetch walk
    ERROR_ECHO_LIMIT = 128                 # bytes of an unknown command echoed, as Redis does

cdef const char *VERSION = b"7.0.0"        # the Redis version whose behaviour this follows


cdef enum Scan:
    SCAN_INCOMPLETE = 0
    SCAN_COMPLETE = 1
    SCAN_MALFORMED = 2


# ---- scanning ---------------------------------------------------------------

cdef inline Scan scan_header(const char *data, size_t length, size_t at, bint signed_number,
                             int64_t *number, size_t *next) noexcept nogil:
    """Read the decimal after the type byte at ``at`` (``*`` or ``$``) up to its CRLF.

    Returns SCAN_COMPLETE (``number`` and ``next``, the offset after the CRLF,
    are set), SCAN_INCOMPLETE, or SCAN_MALFORMED: not ``[0-9]{1,18}`` (with an
    optional ``-`` when ``signed_number``: only ``*-1`` is a valid negative
    header; a bulk length never has a sign) followed by CRLF. This runs for
    every argument, so the usual one- or two-digit header with its CRLF in view
    is read here, inlined into the callers; anything else goes to
    scan_long_header.
    """
    cdef size_t i = at + 1
    if i + 3 < length and <unsigned char>(data[i] - c'0') <= 9:
        if data[i + 1] == c'\r' and data[i + 2] == c'\n':
            number[0] = data[i] - c'0'
            next[0] = i + 3
            return SCAN_COMPLETE
        if <unsigned char>(data[i + 1] - c'0') <= 9 and data[i + 2] == c'\r' and data[i + 3] == c'\n':
            number[0] = (data[i] - c'0') * 10 + (data[i + 1] - c'0')
            next[0] = i + 4
            return SCAN_COMPLETE
    return scan_long_header(data, length, at, signed_number, number, next)


cdef Scan scan_long_header(const char *data, size_t length, size_t at, bint signed_number,
                           int64_t *number, size_t *next) noexcept nogil:
    """scan_header for any header: one pass over the bytes, whatever their number."""
    cdef size_t i = at + 1, first_digit
    cdef bint negative = False
    cdef int64_t value = 0
    if signed_number and i < length and data[i] == c'-':
        negative = True
        i += 1
    first_digit = i
    while i < length and c'0' <= data[i] <= c'9':
        if i - first_digit == MAX_HEADER_DIGITS:
            return SCAN_MALFORMED
        value = value * 10 + (data[i] - c'0')
        i += 1
    if i == length:
        return SCAN_INCOMPLETE
    if i == first_digit or data[i] != c'\r':
        return SCAN_MALFORMED
    if i + 1 == length:
        return SCAN_INCOMPLETE
    if data[i + 1] != c'\n':
        return SCAN_MALFORMED
    number[0] = -value if negative else value
    next[0] = i + 2
    return SCAN_COMPLETE


cdef int scan_request(const char *data, size_t length, size_t query_buffer_limit, int64_t max_arguments,
                      int64_t max_bulk_bytes, Session *session, Request *request,
                      const char **error) noexcept nogil:
    """Check that ``data`` (starting with ``*``) holds a whole, well-formed request.

    Returns 1 with ``request`` filled in, 0 if more bytes are needed, or -1 with
    ``error`` set to the protocol error reply (-2: the reply must name a byte,
    see expected_dollar). Declared sizes are checked as soon as their header is
    read, so an oversized request is refused before its body arrives. An
    incomplete request's progress is kept in the session, so each byte is
    scanned once however finely the request is split across reads.
    """
    cdef int64_t count, size
    cdef size_t position, i, first = 0
    cdef Scan scan
    if session.scan_position == 0:
        scan = scan_header(data, length, 0, True, &count, &position)
        if scan == SCAN_INCOMPLETE:
            return 0
        if scan == SCAN_MALFORMED or count > max_arguments:
            error[0] = b"-ERR Protocol error: invalid multibulk length\r\n"
            return -1
        request.argc = <size_t>count if count > 0 else 0      # "*0" and "*-1" are empty requests
        request.arguments_at = position
    else:                                                     # resume where the last read ended
        request.argc = session.scan_argc
        request.arguments_at = session.scan_arguments_at
        position = session.scan_position
        first = session.scan_arguments
    session.scan_position = 0
    request.data = data
    for i in range(first, request.argc):
        if position >= length:
            return remember_scan(session, request, i, position)
        if data[position] != c'$':
            return -2
        scan = scan_header(data, length, position, False, &size, &position)
        if scan == SCAN_INCOMPLETE:
            return remember_scan(session, request, i, position)
        if scan == SCAN_MALFORMED or size > max_bulk_bytes:
            error[0] = b"-ERR Protocol error: invalid bulk length\r\n"
            return -1
        if position + <size_t>size + 2 > query_buffer_limit:
            error[0] = b"-ERR Protocol error: request too large\r\n"
            return -1
        if position + <size_t>size + 2 > length:
            return remember_scan(session, request, i, data_header_start(data, position))
        if data[position + size] != c'\r' or data[position + size + 1] != c'\n':
            error[0] = b"-ERR Protocol error: invalid bulk length\r\n"   # the length lied
            return -1
        position += <size_t>size + 2
    request.length = position
    return 1


cdef size_t resp_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil:
    """Start loading the table slot of the key of the RESP request at the start
    of ``data``, so that the cache misses of a pipelined batch overlap instead of
    coming one request after another (see EventLoop.prefetch_keys).

    The key is the second argument, where every key command (GET, SET, DEL, ...)
    has it; for other commands the prefetch is merely useless. Nothing is
    validated here beyond what staying inside ``data`` needs: resp_answer judges
    the request. Returns the request's length, or 0 when it is incomplete, not
    well formed or has more than PREFETCH_MAX_ARGUMENTS arguments (the walk
    stops there).
    """
    cdef int64_t count, size, key
    cdef size_t position, i
    if scan_header(data, length, 0, True, &count, &position) != SCAN_COMPLETE \
            or count <= 0 or count > PREFETCH_MAX_ARGUMENTS:
        return 0
    for i in range(<size_t>count):
        if position >= length or data[position] != c'$':
            return 0
        if scan_header(data, length, position, False, &size, &position) != SCAN_COMPLETE \
                or <size_t>size + 2 > length - position:
            return 0
        if i == 1 and parse_int64(data + position, <size_t>size, &key) == INT_OK:
            store_prefetch(store, key)
        position += <size_t>size + 2
    return position


cdef inline size_t data_header_start(const char *data, size_t data_at) noexcept nogil:
    """Offset of the ``$`` header whose data starts at ``data_at``."""
    cdef size_t at = data_at - 2            # the header's "\r"
    while data[at] != c'$':
        at -= 1
    return at


cdef inline int remember_scan(Session *session, const Request *request, size_t arguments,
                              size_t position) noexcept nogil:
    """Keep an incomplete request's scan progress in the session; returns 0."""
    session.scan_position = position
    session.scan_arguments = arguments
    session.scan_argc = request.argc
    session.scan_arguments_at = request.arguments_at
    return 0


cdef ssize_t resp_answer(ServerContext *context, Session *session,
                         const char *data, size_t length) noexcept nogil:
    """Answer the RESP request at the start of ``data`` (which starts with ``*``).

    Returns the bytes it used, 0 if the request is not complete yet, or -1 if a
    reply could not be buffered (out of memory). A malformed request, or an
    incomplete one already larger than the query buffer limit, gets Redis's
    protocol error reply, the session is marked closing and refused (the loop
    drains what the client still sends before closing), and all of ``data``
    counts as used.
    """
    cdef Request request
    cdef const char *error = NULL
    cdef int scanned
    if session.authenticated:
        scanned = scan_request(data, length, context.limits.query_buffer_limit,
                               <int64_t>context.limits.max_arguments, <int64_t>context.limits.max_bulk_bytes,
                               session, &request, &error)
    else:       # as Redis does before AUTH: a few small arguments only
        scanned = scan_request(data, length, context.limits.query_buffer_limit,
                               <int64_t>context.limits.unauthenticated_max_arguments,
                               <int64_t>context.limits.unauthenticated_max_bulk_bytes, session, &request, &error)
    if scanned == 0:
        if length > context.limits.query_buffer_limit:
            scanned = -1
            error = b"-ERR Protocol error: request too large\r\n"
        else:
            return 0
    if scanned < 0:
        context.counters[<int>COUNTER_PROTOCOL_ERRORS] += 1
        session.closing = session.refused = True
        session.scan_position = 0
        if scanned == -2:
            if expected_dollar(&session.output, data, length) < 0:
                return -1
        elif output_text(&session.output, error) < 0:
            return -1
        return <ssize_t>length
    if request.argc > 0 and execute(context, session, &request) < 0:
        return -1
    return <ssize_t>request.length


# ---- inline requests ------------------------------------------------------------
#
# Redis's inline protocol: a request line that does not start with "*" is split
# into words as sdssplitargs splits it, then run as the RESP request of those
# words. _protocol.pyx decides which lines come here (resp_has_command).


cdef enum:
    INLINE_HEADER_ROOM = 24     # bytes kept free before the arguments for "*<argc>\r\n"


cdef bint resp_has_command(const char *name, size_t length) noexcept nogil:
    """Whether ``name`` (any case) is a RESP command of the table."""
    cdef Argument argument
    argument.start = name
    argument.length = length
    return find_command(&argument) != NULL


cdef inline bint is_split_space(char byte) noexcept nogil:
    """C's isspace, as sdssplitargs uses it."""
    return byte == c' ' or c'\t' <= byte <= c'\r'


cdef inline int hex_value(char byte) noexcept nogil:
    """0-15 for a hexadecimal digit, else -1."""
    if c'0' <= byte <= c'9':
        return byte - c'0'
    if c'a' <= byte <= c'f':
        return byte - c'a' + 10
    if c'A' <= byte <= c'F':
        return byte - c'A' + 10
    return -1


cdef int split_inline(const char *line, size_t length, Output *words, Output *word, size_t *argc) noexcept nogil:
    """Split ``line`` as Redis's sdssplitargs does, appending each word to
    ``words`` as a RESP bulk string (``word`` is scratch) and counting them in
    ``argc``. Words are separated by blanks (isspace); ``"..."`` takes the
    escapes ``\\xHH \\n \\r \\t \\b \\a`` and ``\\<any>``, ``'...'`` takes
    ``\\'``, and a closing quote must be followed by a blank or the end. As in
    Redis (whose lines are C strings there), a NUL byte ends the line.
    Returns 0, 1 for unbalanced quotes, or -1 (out of memory)."""
    cdef size_t p = 0
    cdef char byte, c
    cdef bint in_double, in_single, done
    cdef int high, low
    if memchr(line, 0, length) != NULL:
        length = <size_t>(<const char *>memchr(line, 0, length) - line)
    while True:
        while p < length and is_split_space(line[p]):
            p += 1
        if p == length:
            return 0
        in_double = in_single = done = False
        word.start = word.end = 0
        while not done:
            byte = line[p] if p < length else 0
            if in_double:
                if byte == c'\\' and p + 3 < length and line[p + 1] == c'x' \
                        and hex_value(line[p + 2]) >= 0 and hex_value(line[p + 3]) >= 0:
                    high = hex_value(line[p + 2])
                    low = hex_value(line[p + 3])
                    c = <char>(high * 16 + low)
                    p += 3
                elif byte == c'\\' and p + 1 < length:
                    p += 1
                    c = line[p]
                    if c == c'n':
                        c = c'\n'
                    elif c == c'r':
                        c = c'\r'
                    elif c == c't':
                        c = c'\t'
                    elif c == c'b':
                        c = c'\b'
                    elif c == c'a':
                        c = c'\a'
                elif byte == c'"':
                    if p + 1 < length and not is_split_space(line[p + 1]):
                        return 1
                    done = True
                elif p >= length:
                    return 1                        # unterminated quotes
                else:
                    c = byte
                if not done and output_append(word, &c, 1) < 0:
                    return -1
            elif in_single:
                if byte == c'\\' and p + 1 < length and line[p + 1] == c"'":
                    p += 1
                    c = c"'"
                elif byte == c"'":
                    if p + 1 < length and not is_split_space(line[p + 1]):
                        return 1
                    done = True
                elif p >= length:
                    return 1
                else:
                    c = byte
                if not done and output_append(word, &c, 1) < 0:
                    return -1
            elif p >= length or byte == c' ' or byte == c'\n' or byte == c'\r' or byte == c'\t':
                done = True
            elif byte == c'"':
                in_double = True
            elif byte == c"'":
                in_single = True
            elif output_append(word, &byte, 1) < 0:
                return -1
            if p < length:
                p += 1
        if reply_bulk(words, word.data, word.end) < 0:
            return -1
        argc[0] += 1


cdef int resp_execute_inline(ServerContext *context, Session *session, const char *line,
                             size_t length) noexcept nogil:
    """Run an inline request line (without its line ending) as Redis does: its
    words (split_inline) become a RESP request, built in a small buffer of its
    own and executed like any other, with RESP replies. A blank line does
    nothing; unbalanced quotes get Redis's protocol error, and the connection
    closes after it (refused: its input is drained first). Returns 0, or -1
    (out of memory)."""
    cdef Output words, word
    cdef Request request
    cdef char digits[INLINE_HEADER_ROOM]
    cdef size_t argc = 0, count_length, header_length
    cdef int result
    cdef char *at
    words.data = word.data = NULL
    words.start = words.end = words.capacity = word.start = word.end = word.capacity = 0
    result = output_append(&words, b"                        ", INLINE_HEADER_ROOM)   # room for "*<argc>\r\n"
    if result == 0:
        result = split_inline(line, length, &words, &word, &argc)
    output_free(&word)
    if result == 1:
        context.counters[<int>COUNTER_PROTOCOL_ERRORS] += 1
        session.closing = session.refused = True
        result = output_text(&session.output, b"-ERR Protocol error: unbalanced quotes in request\r\n")
    elif result == 0 and argc > 0:
        count_length = format_int64(<int64_t>argc, digits + INLINE_HEADER_ROOM)
        header_length = count_length + 3                             # "*", the count, "\r\n"
        at = words.data + INLINE_HEADER_ROOM - header_length
        at[0] = c'*'
        memcpy(at + 1, digits + INLINE_HEADER_ROOM - count_length, count_length)
        at[count_length + 1] = c'\r'
        at[count_length + 2] = c'\n'
        request.data = at
        request.argc = argc
        request.arguments_at = header_length
        request.length = words.end - (INLINE_HEADER_ROOM - header_length)
        result = execute(context, session, &request)
    output_free(&words)
    return result


cdef int expected_dollar(Output *output, const char *data, size_t length) noexcept nogil:
    """``-ERR Protocol error: expected '$', got 'X'`` for the first argument
    header that does not start with ``$``."""
    cdef size_t position = 0
    cdef int64_t count = 0, size = 0
    cdef char got[1]
    if scan_header(data, length, 0, True, &count, &position) != SCAN_COMPLETE:
        position = 0
    # Every header before the offending byte was complete and valid (scan_request got past it).
    while position < length and data[position] == c'$':
        if scan_header(data, length, position, False, &size, &position) != SCAN_COMPLETE:
            break
        position += <size_t>size + 2
    if position >= length:
        position = length - 1
    got[0] = data[position] if data[position] not in (c'\r', c'\n') else c' '
    if output_text(output, b"-ERR Protocol error: expected '$', got '") < 0 \
            or output_append(output, got, 1) < 0:
        return -1
    return output_text(output, b"'\r\n")


# ---- reply shapes -------------------------------------------------------------


cdef int reply_unknown(ServerContext *context, Output *output, const Request *request,
                       const char *prefix, const char *suffix) noexcept nogil:
    """Redis's unknown-command reply: ``-ERR unknown command 'foo', with args
    beginning with: 'a' 'b' `` (the name cut at 128 bytes, arguments up to
    about 128 bytes in all)."""
    cdef size_t position = request.arguments_at, _i, shown = 0, take
    cdef Argument argument
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    next_argument(request.data, &position, &argument)
    if output_text(output, prefix) < 0 or append_sanitized(
            output, argument.start, argument.length if argument.length < ERROR_ECHO_LIMIT else ERROR_ECHO_LIMIT) < 0 \
            or output_text(output, suffix) < 0:
        return -1
    for _i in range(1, request.argc):
        if shown >= ERROR_ECHO_LIMIT:
            break
        next_argument(request.data, &position, &argument)
        take = argument.length if argument.length < ERROR_ECHO_LIMIT - shown else ERROR_ECHO_LIMIT - shown
        if output_append(output, b"'", 1) < 0 or append_sanitized(output, argument.start, take) < 0 \
                or output_append(output, b"' ", 2) < 0:
            return -1
        shown += take + 3
    return output_append(output, b"\r\n", 2)


# ---- the command table ------------------------------------------------------------
#
# As Redis's commands.def + processCommand: one row per command with its proc,
# arity, flags and key positions; execute() makes the generic checks once,
# then calls the proc. A new command is one row (at the end of this file) and
# one function.


cdef const char *FLAG_NAMES[<int>FLAG_COUNT]
FLAG_NAMES[0] = b"write"
FLAG_NAMES[1] = b"readonly"
FLAG_NAMES[2] = b"admin"
FLAG_NAMES[3] = b"loading"
FLAG_NAMES[4] = b"fast"
FLAG_NAMES[5] = b"no_auth"
FLAG_NAMES[6] = b"no_multi"
FLAG_NAMES[7] = b"denyoom"


cdef enum:
    MAX_COMMANDS = 256          # rows the table can hold
    INDEX_SLOTS = 512           # the name index: open addressing, at most half full

cdef RespCommand COMMANDS[MAX_COMMANDS]
cdef int COMMAND_COUNT = 0
cdef unsigned short COMMAND_INDEX[INDEX_SLOTS]       # row + 1, or 0: free


cdef inline size_t name_hash(const char *name, size_t length) noexcept nogil:
    """A hash of a command name that ignores ASCII case (``| 0x20`` folds
    letters; other bytes merely collide more, and the compare settles it)."""
    cdef size_t h = length, i
    for i in range(length):
        h = h * 31 + (<unsigned char>name[i] | 0x20)
    return h


cdef void define(const char *name, RespProc proc, int arity, int flags, int first_key=0, int last_key=0,
                 int key_step=0):
    """Add one row to COMMANDS and to the name index (at import)."""
    global COMMAND_COUNT
    cdef size_t length = strlen(name)
    cdef size_t slot = name_hash(name, length) % INDEX_SLOTS
    if COMMAND_COUNT == MAX_COMMANDS:
        raise RuntimeError("the RESP command table is full: raise MAX_COMMANDS")
    COMMANDS[COMMAND_COUNT] = RespCommand(name, length, proc, arity, flags, first_key, last_key, key_step)
    while COMMAND_INDEX[slot] != 0:
        slot = (slot + 1) % INDEX_SLOTS
    COMMAND_COUNT += 1
    COMMAND_INDEX[slot] = <unsigned short>COMMAND_COUNT


cdef const RespCommand *find_command(const Argument *name) noexcept nogil:
    """The row of a command name (any case), or NULL: one hash and, nearly
    always, one compare, however many rows the table has."""
    cdef size_t slot = name_hash(name.start, name.length) % INDEX_SLOTS
    cdef const RespCommand *command
    while COMMAND_INDEX[slot] != 0:
        command = &COMMANDS[COMMAND_INDEX[slot] - 1]
        if command.name_length == name.length and same_letters_nocase(name.start, name.length, command.name):
            return command
        slot = (slot + 1) % INDEX_SLOTS
    return NULL


cdef const RespCommand *resp_commands(size_t *count) noexcept nogil:
    """The command table (``count`` rows): ServerContext.command_stats has one
    CommandStats per row, in this order."""
    count[0] = <size_t>COMMAND_COUNT
    return COMMANDS


def command_names():
    """The name of every RESP command kvfast implements, in table order (for
    the README check and the tests)."""
    return [COMMANDS[i].name.decode() for i in range(COMMAND_COUNT)]


cdef inline bint arity_ok(const RespCommand *command, size_t argc) noexcept nogil:
    return argc == <size_t>command.arity if command.arity > 0 else argc >= <size_t>(-command.arity)


cdef size_t keys_named(const RespCommand *command, size_t argc) noexcept nogil:
    """How many keys a request names, from the row's key positions."""
    cdef int last
    if command.first_key <= 0:
        return 0
    last = command.last_key if command.last_key >= 0 else <int>argc + command.last_key
    if last < command.first_key:
        return 0
    return <size_t>((last - command.first_key) // command.key_step + 1)


cdef int execute(ServerContext *context, Session *session, const Request *request) noexcept nogil:
    """Run one complete request and buffer its reply; 0, or -1 (out of memory).

    The generic checks, once for every command and in Redis's order: a known
    command, authentication (unless the row says CMD_NO_AUTH), arity, and for
    a CMD_WRITE command the log's state (refused with -MISCONF while it
    fails; room reserved for one record per key the request names, so the
    command's effects can always be logged). Then the row's proc runs with the
    position of the first argument after the name. A session in MULTI has its
    requests queued instead (multi_dispatch); a request refused by these
    checks meanwhile makes its EXEC fail (multi_flag_error). With maxmemory
    set, memory_refusal makes room (or refuses) first.
    """
    cdef size_t position = request.arguments_at
    cdef Argument name
    cdef const RespCommand *command
    cdef CommandStats *stats
    cdef size_t changes, offset
    cdef uint64_t errors
    cdef int refusal, result
    cdef int64_t started
    cdef bint queueing, shielded = False
    next_argument(request.data, &position, &name)
    command = find_command(&name)
    context.counters[<int>COUNTER_COMMANDS_PROCESSED] += 1
    if command == NULL:
        multi_flag_error(session)
        stats_count_error(context, b"ERR", 3)
        return reply_unknown(context, &session.output, request, b"-ERR unknown command '",
                             b"', with args beginning with: ")
    stats = &context.command_stats[command - COMMANDS]
    offset = output_pending(&session.output)
    if not session.authenticated and not (command.flags & CMD_NO_AUTH):
        if command.proc == command_exec:        # EXEC refused: -EXECABORT ... because of: <error>, as Redis
            result = multi_reject_exec(context, session, ERR_NOAUTH + 1)
        else:
            multi_flag_error(session)
            result = reply_error(context, &session.output, ERR_NOAUTH)
        return rejected(context, session, stats, offset, result)
    if not arity_ok(command, request.argc):
        if command.proc == command_exec:
            result = multi_reject_exec(context, session, b"wrong number of arguments for 'exec' command\r\n")
        else:
            multi_flag_error(session)
            result = reply_wrong_arity(context, &session.output, command.name)
        return rejected(context, session, stats, offset, result)
    if context.memory.maxmemory != 0 and not context.memory.in_transaction:
        refusal = memory_refusal(context, session, command)
        if refusal != 0:
            return rejected(context, session, stats, offset, 0 if refusal > 0 else -1)
        # EXEC admitted as a whole: its queue then runs unchecked, never stopping half-way.
        shielded = command.proc == command_exec
        context.memory.in_transaction = shielded
    queueing = session.transaction != NULL and session.transaction.queueing and command.proc != command_quit
    if queueing and command.proc != command_exec and command.proc != command_discard:
        # In MULTI (kvfast/_multi.pyx): queued (counted when EXEC runs it), or refused.
        changes = keys_named(command, request.argc) if command.flags & CMD_WRITE else 0
        return multi_dispatch(context, session, request, command, position,
                              changes if changes > 0 or not (command.flags & CMD_WRITE) else 1)
    if not queueing and command.flags & CMD_WRITE and context.aof != NULL:
        changes = keys_named(command, request.argc)
        if changes > 1 and not context.aof.unit_open:
            return execute_as_unit(context, session, request, command, position, changes)
        refusal = keyspace_begin_write(context, changes if changes > 0 else 1)
        if refusal != 0:
            return rejected(context, session, stats, offset, refuse_write(context, &session.output, refusal))
    session.last_command = command.name
    errors = context.counters[<int>COUNTER_ERROR_REPLIES]
    if command.first_key == 1 and command.last_key == 1 and context.batch_started_ns != 0 \
            and context.execute_depth == 0 and context.limits.slowlog_log_slower_than != 0:
        # One key, O(1): timed with its batch (see _commandstats.pyx).
        stats_count_amortized(context, stats)
        result = command.proc(context, session, request, position)
    else:
        started = monotonic_ns()
        context.execute_depth += 1
        if queueing:                                # EXEC or DISCARD ending a transaction
            result = multi_dispatch(context, session, request, command, position, 0)
        else:
            result = command.proc(context, session, request, position)
        context.execute_depth -= 1
        if shielded:
            context.memory.in_transaction = False
        started = monotonic_ns() - started
        stats_record(context, stats, started)
        if context.execute_depth == 0:
            context.batch_exact_ns += started
        if command.proc != command_exec:            # its queued commands are logged instead, as Redis
            slowlog_consider(context, session, request, started, redaction(command))
    if context.counters[<int>COUNTER_ERROR_REPLIES] != errors and output_pending(&session.output) > offset \
            and session.output.data[session.output.start + offset] == c'-':
        stats.failed_calls += 1
        stats_note_error(context, &session.output, offset)
    if context.monitor_count != 0 and not (command.flags & CMD_ADMIN):
        monitor_feed(context, session, request, redaction(command))
    return result


cdef int memory_refusal(ServerContext *context, Session *session, const RespCommand *command) noexcept nogil:
    """execute()'s maxmemory check (kvfast/_evict.pyx), while a limit is set:
    0 when the command may run; 1 when it was refused (-OOM, and in MULTI that
    also makes EXEC fail, as Redis; an EXEC whose queue holds writes and
    cannot be admitted answers -EXECABORT); -1 when the reply could not be
    buffered. A CMD_DENYOOM command first makes room by the policy (bounded
    work per command). As Redis, in MULTI every command but EXEC, DISCARD,
    QUIT and RESET counts as one that adds memory (queueing does)."""
    cdef bint queueing = session.transaction != NULL and session.transaction.queueing
    if command.flags & CMD_DENYOOM or (queueing and command.proc != command_exec and command.proc != command_discard
                                       and command.proc != command_quit and command.proc != command_reset):
        if not memory_admit(context, session):
            multi_flag_error(session)
            return -1 if reply_error(context, &session.output, ERR_OUT_OF_MEMORY) < 0 else 1
    elif command.proc == command_exec and queueing:
        if session.transaction.queued_changes > 0 and not session.transaction.aborted \
                and not session.transaction.watch_broken and not memory_admit(context, session):
            return -1 if multi_reject_exec(context, session, ERR_OUT_OF_MEMORY + 1) < 0 else 1
    return 0


cdef inline Redaction redaction(const RespCommand *command) noexcept nogil:
    """Which arguments MONITOR and SLOWLOG show as "(redacted)": passwords."""
    if command.proc == command_auth:
        return REDACT_ALL
    if command.proc == command_hello:
        return REDACT_HELLO_AUTH
    return REDACT_NONE


cdef inline int rejected(ServerContext *context, Session *session, CommandStats *stats, size_t offset,
                         int result) noexcept nogil:
    """A command refused by execute()'s checks: counted in rejected_calls and errorstats."""
    stats.rejected_calls += 1
    stats_note_error(context, &session.output, offset)
    return result


cdef int execute_as_unit(ServerContext *context, Session *session, const Request *request,
                         const RespCommand *command, size_t position, size_t changes) noexcept nogil:
    """Run a write command that may log several records (MSET, DEL k..., RENAME)
    with its records framed as one unit of the log, as EXEC's are: a torn
    tail inside it drops the whole command at replay, so a crash never leaves
    half an MSET or a RENAME's new key without its delete. Room is reserved
    for the records and the unit's B (dropped again when one record or none
    was made). Inside EXEC the transaction's unit already frames it. Returns
    as execute() does."""
    cdef int refusal = keyspace_begin_write(context, changes + 1)
    cdef size_t begin
    cdef int result
    if refusal != 0:
        return refuse_write(context, &session.output, refusal)
    begin = aof_begin_transaction(context.aof)
    result = command.proc(context, session, request, position)
    aof_end_transaction(context.aof, begin)
    return result


cdef bint credentials_match(ServerContext *context, const Argument *user, const Argument *password) noexcept nogil:
    """Whether ``user`` (NULL: not given, i.e. "default") and ``password`` are
    right. Without a configured password the default user needs none, as in Redis."""
    if user != NULL and not (user.length == 7 and memcmp(user.start, b"default", 7) == 0):
        return False
    if context.password == NULL:
        return True
    return secrets_equal(password.start, password.length, context.password, context.password_length)


cdef int command_auth(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """AUTH [user] password: +OK, or -WRONGPASS (the only user is "default")."""
    cdef Argument user, password
    if request.argc > 3:
        return reply_error(context, &session.output, ERR_SYNTAX)
    if context.password == NULL:
        return reply_error(context, &session.output,
                           b"-ERR AUTH <password> called without any password configured for the default user. "
                           b"Are you sure your configuration is correct?\r\n")
    next_argument(request.data, &position, &password)
    if request.argc == 3:
        user = password
        next_argument(request.data, &position, &password)
    if not credentials_match(context, &user if request.argc == 3 else NULL, &password):
        context.counters[<int>COUNTER_AUTH_FAILURES] += 1
        return reply_error(context, &session.output, ERR_WRONGPASS)
    session.authenticated = True
    return output_text(&session.output, b"+OK\r\n")


cdef int command_get(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """GET key: the value as a bulk string, or null."""
    cdef int64_t key
    cdef int64_t *found
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    found = keyspace_read(context, key)
    if found == NULL:
        return reply_null(session)
    return reply_bulk_integer(&session.output, found[0])


cdef int command_setnx(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """SETNX key value: :1 if set, :0 if the key exists."""
    return insert_generic(context, session, request, position, False)


cdef int command_put(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """PUT key value (the seed's insert-only put): +OK or -ERR Key already exists."""
    return insert_generic(context, session, request, position, True)


cdef int insert_generic(ServerContext *context, Session *session, const Request *request,
                        size_t position, bint is_put) noexcept nogil:
    """SETNX and PUT: insert only if absent; they differ only in their replies."""
    cdef Output *output = &session.output
    cdef int64_t key, value
    cdef int result, status
    if not (read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status)
            and read_integer(context, output, request, &position, &value, ERR_NOT_INTEGER, &status)):
        return status
    result = keyspace_insert(context, session, key, value)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    if is_put:
        return output_text(output, b"+OK\r\n") if result == 1 \
            else reply_error(context, output, b"-ERR Key already exists\r\n")
    return reply_integer(output, result)


cdef int command_del(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """DEL key...: the number of keys removed."""
    return count_keys_generic(context, session, request, position, True)


cdef int command_exists(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """EXISTS key...: the number of keys present (repeats counted)."""
    return count_keys_generic(context, session, request, position, False)


cdef int count_keys_generic(ServerContext *context, Session *session, const Request *request,
                            size_t position, bint delete) noexcept nogil:
    """DEL and EXISTS: every key is checked first, so a non-integer key fails
    the whole command; then each key is deleted or looked up, and counted."""
    cdef Argument argument
    cdef int64_t key = 0, count = 0
    cdef int checked = parse_keys(context, &session.output, request, position)
    if checked != 0:
        return -1 if checked < 0 else 0
    while position < request.length:
        next_argument(request.data, &position, &argument)
        parse_int64(argument.start, argument.length, &key)
        if delete:
            count += keyspace_delete(context, session, key)
        else:
            count += keyspace_contains(context, key)
    return reply_integer(&session.output, count)


cdef int command_incr(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """INCR key: add 1."""
    return increment_generic(context, session, request, position, False, False)


cdef int command_decr(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """DECR key: subtract 1."""
    return increment_generic(context, session, request, position, True, False)


cdef int command_incrby(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """INCRBY key amount."""
    return increment_generic(context, session, request, position, False, True)


cdef int command_decrby(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """DECRBY key amount."""
    return increment_generic(context, session, request, position, True, True)


cdef int increment_generic(ServerContext *context, Session *session, const Request *request,
                           size_t position, bint negate, bint with_amount) noexcept nogil:
    """INCR, DECR, INCRBY, DECRBY (as Redis's incrDecrCommand): the new value;
    an overflow is an error and leaves the value unchanged."""
    cdef Output *output = &session.output
    cdef int64_t key, amount = 1, result_value
    cdef int result, status
    if not read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    if with_amount and not read_integer(context, output, request, &position, &amount, ERR_NOT_INTEGER, &status):
        return status
    if negate:
        if amount == INT64_MIN:
            return reply_error(context, output, b"-ERR decrement would overflow\r\n")
        amount = -amount
    result = keyspace_increment(context, session, key, amount, &result_value)
    if result == 1:
        return reply_error(context, output, ERR_OVERFLOW)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_integer(output, result_value)


cdef int command_mget(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """MGET key...: an array of values (bulk) and nulls."""
    cdef Argument argument
    cdef int64_t key = 0
    cdef int64_t *found
    cdef int checked = parse_keys(context, &session.output, request, position)
    if checked != 0:
        return -1 if checked < 0 else 0
    if reply_array(&session.output, request.argc - 1) < 0:
        return -1
    while position < request.length:
        next_argument(request.data, &position, &argument)
        parse_int64(argument.start, argument.length, &key)
        found = keyspace_read(context, key)
        if found == NULL:
            if reply_null(session) < 0:
                return -1
        else:
            if reply_bulk_integer(&session.output, found[0]) < 0:
                return -1
    return 0


cdef int command_dbsize(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """DBSIZE: the number of keys."""
    return reply_integer(&session.output, <int64_t>keyspace_size(context))


cdef int command_flushall(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil:
    """FLUSHALL [SYNC|ASYNC] (and FLUSHDB, the one database): remove every key;
    ASYNC is done synchronously."""
    cdef Argument argument
    if request.argc > 2:
        return reply_error(context, &session.output, ERR_SYNTAX)
    if request.argc == 2:
        next_argument(request.data, &position, &argument)
        if not (equals_nocase(argument.start, argument.length, b"sync")
                or equals_nocase(argument.start, argument.length, b"async")):
            return reply_error(context, &session.output, ERR_SYNTAX)
    keyspace_clear(context, session)
    return output_text(&session.output, b"+OK\r\n")


cdef int command_ping(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """PING [message]: +PONG, or the message as a bulk string."""
    cdef Argument argument
    if request.argc > 2:
        return reply_wrong_arity(context, &session.output, b"ping")
    if request.argc == 1:
        return output_text(&session.output, b"+PONG\r\n")
    next_argument(request.data, &position, &argument)
    return reply_bulk(&session.output, argument.start, argument.length)


cdef int command_echo(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """ECHO message: the message as a bulk string."""
    cdef Argument argument
    next_argument(request.data, &position, &argument)
    return reply_bulk(&session.output, argument.start, argument.length)


cdef int command_quit(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """QUIT: +OK, then the connection closes."""
    session.closing = True
    return output_text(&session.output, b"+OK\r\n")


cdef int command_bye(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """BYE (the seed's, over RESP): +Goodbye, then the connection closes."""
    session.closing = True
    return output_text(&session.output, b"+Goodbye\r\n")


cdef int command_select(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """SELECT 0: +OK; kvfast has one database."""
    cdef Argument argument
    cdef int64_t number
    next_argument(request.data, &position, &argument)
    if parse_int64(argument.start, argument.length, &number) != INT_OK:
        return reply_error(context, &session.output, ERR_NOT_INTEGER)
    if number != 0:
        return reply_error(context, &session.output, b"-ERR DB index is out of range\r\n")
    return output_text(&session.output, b"+OK\r\n")


cdef int command_hello(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """HELLO [protover [AUTH user pass] [SETNAME name]]: switch RESP version and
    reply with the server map (in the new version)."""
    cdef Output *output = &session.output
    cdef Argument argument, user, password, name
    cdef bint setting_name = False
    cdef int named
    cdef int64_t version = session.resp_version
    cdef size_t remaining, index = 2         # arguments read so far: HELLO and the version
    cdef bint authenticating = False
    if request.argc >= 2:
        next_argument(request.data, &position, &argument)
        if parse_int64(argument.start, argument.length, &version) != INT_OK:
            return reply_error(context, output, b"-ERR Protocol version is not an integer or out of range\r\n")
        while position < request.length:
            next_argument(request.data, &position, &argument)
            index += 1
            remaining = request.argc - index
            if equals_nocase(argument.start, argument.length, b"auth") and remaining >= 2:
                next_argument(request.data, &position, &user)
                next_argument(request.data, &position, &password)
                index += 2
                authenticating = True
            elif equals_nocase(argument.start, argument.length, b"setname") and remaining >= 1:
                next_argument(request.data, &position, &name)
                setting_name = True
                index += 1
            else:
                context.counters[<int>COUNTER_ERROR_REPLIES] += 1
                if output_text(output, b"-ERR Syntax error in HELLO option '") < 0 \
                        or append_sanitized(output, argument.start, argument.length) < 0:
                    return -1
                return output_text(output, b"'\r\n")
        if version != 2 and version != 3:
            return reply_error(context, output, b"-NOPROTO unsupported protocol version\r\n")
    if authenticating:
        if not credentials_match(context, &user, &password):
            context.counters[<int>COUNTER_AUTH_FAILURES] += 1
            return reply_error(context, output, ERR_WRONGPASS)
        session.authenticated = True
    elif not session.authenticated:
        return reply_error(context, output,
                           b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                           b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                           b"select the RESP protocol version at the same time\r\n")
    if setting_name:
        named = client_set_name(context, session, &name)
        if named != 0:
            return -1 if named < 0 else 0
    session.resp_version = <int>version
    if (reply_map(session, 7) < 0
            or reply_bulk_text(output, b"server") < 0 or reply_bulk_text(output, b"redis") < 0
            or reply_bulk_text(output, b"version") < 0 or reply_bulk_text(output, VERSION) < 0
            or reply_bulk_text(output, b"proto") < 0 or reply_integer(output, version) < 0
            or reply_bulk_text(output, b"id") < 0 or reply_integer(output, <int64_t>session.id) < 0
            or reply_bulk_text(output, b"mode") < 0 or reply_bulk_text(output, b"standalone") < 0
            or reply_bulk_text(output, b"role") < 0 or reply_bulk_text(output, b"master") < 0
            or reply_bulk_text(output, b"modules") < 0):
        return -1
    return reply_array(output, 0)


cdef int command_command(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """COMMAND (every command's info), COMMAND COUNT, COMMAND INFO name....
    COMMAND DOCS is refused as an unknown subcommand on purpose: on that error
    redis-cli falls back to its built-in help, hints and completion, while an
    empty (or partial) docs map would leave it with none."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef const RespCommand *command
    cdef int i
    if request.argc == 1:
        if reply_array(output, <size_t>COMMAND_COUNT) < 0:
            return -1
        for i in range(<int>COMMAND_COUNT):
            if reply_command_info(output, &COMMANDS[i]) < 0:
                return -1
        return 0
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"count") and request.argc == 2:
        return reply_integer(output, <int64_t>COMMAND_COUNT)
    if equals_nocase(argument.start, argument.length, b"info"):
        if reply_array(output, request.argc - 2) < 0:
            return -1
        while position < request.length:
            next_argument(request.data, &position, &argument)
            command = find_command(&argument)
            if (reply_null(session) if command == NULL else reply_command_info(output, command)) < 0:
                return -1
        return 0
    return reply_unknown_subcommand(context, output, &argument, b"COMMAND")


cdef int reply_command_info(Output *output, const RespCommand *command) noexcept nogil:
    """One command's entry in Redis 7's 10-element COMMAND format: name,
    arity, flags (the names of the row's set bits), key positions, and four
    empty arrays (ACL categories, tips, key specs, subcommands)."""
    cdef int bit, flags = 0
    for bit in range(<int>FLAG_COUNT):
        flags += (command.flags >> bit) & 1
    if reply_array(output, 10) < 0 or reply_bulk_text(output, command.name) < 0 \
            or reply_integer(output, command.arity) < 0 or reply_array(output, <size_t>flags) < 0:
        return -1
    for bit in range(<int>FLAG_COUNT):
        if (command.flags >> bit) & 1 and (output_text(output, b"+") < 0 or output_text(output, FLAG_NAMES[bit]) < 0
                                           or output_text(output, b"\r\n") < 0):
            return -1
    return -1 if (
        reply_integer(output, command.first_key) < 0
        or reply_integer(output, command.last_key) < 0
        or reply_integer(output, command.key_step) < 0
        or reply_array(output, 0) < 0 or reply_array(output, 0) < 0
        or reply_array(output, 0) < 0 or reply_array(output, 0) < 0
    ) else 0


cdef int command_bgrewriteaof(ServerContext *context, Session *session, const Request *request,
                              size_t position) noexcept nogil:
    """BGREWRITEAOF: compact the append-only log now. The loop starts the forked
    child (see _rewrite.pyx) right after this iteration's records are written,
    and finishes the rewrite when the child exits; INFO's
    aof_last_bgrewrite_status tells how it went."""
    cdef Output *output = &session.output
    if context.aof == NULL:
        return reply_error(context, output, ERR_LOG_OFF)
    if context.aof.rewrite_child != 0 or context.aof.rewrite_requested:
        return reply_error(context, output, b"-ERR Background append only file rewriting already in progress\r\n")
    if context.aof.failure != 0:                # a rewrite to recover is attempted by itself
        return refuse_write(context, output, context.aof.failure)
    context.aof.rewrite_requested = True
    return output_text(output, b"+Background append only file rewriting started\r\n")


# ---- INFO ---------------------------------------------------------------------------

ctypedef int (*SectionWriter)(ServerContext *context, Output *text) noexcept nogil


cdef struct InfoSection:
    const char *name            # as INFO's arguments name it
    const char *title           # its header line
    StatsSection fields         # the rows of _stats.pyx it shows...
    SectionWriter write         # ...or the function that writes it


cdef enum:
    INFO_SECTION_COUNT = 11
    ALL_SECTIONS = (1 << INFO_SECTION_COUNT) - 1
    # INFO and INFO default: as Redis, all but commandstats and latencystats (rows 7 and 9)
    DEFAULT_SECTIONS = ALL_SECTIONS & ~((1 << 7) | (1 << 9))

cdef InfoSection INFO_SECTIONS[INFO_SECTION_COUNT]


cdef int write_server_section(ServerContext *context, Output *text) noexcept nogil:
    return -1 if (
        output_text(text, b"redis_version:") < 0 or output_text(text, VERSION) < 0
        or output_text(text, b"\r\nkvfast_version:") < 0 or output_text(text, context.version) < 0
        or output_text(text, b"\r\nredis_mode:standalone\r\nos:Linux\r\nmultiplexing_api:epoll\r\nprocess_id:") < 0
        or output_int64(text, getpid(), b"\r\ntcp_port:") < 0
        or output_int64(text, context.port, b"\r\nuptime_in_seconds:") < 0
        or output_int64(text, time(NULL) - context.started_at, b"\r\n") < 0) else 0


cdef int write_keyspace_section(ServerContext *context, Output *text) noexcept nogil:
    cdef size_t keys = keyspace_size(context)
    if keys == 0:
        return 0
    if output_text(text, b"db0:keys=") < 0 or output_int64(text, <int64_t>keys, b",expires=") < 0 \
            or output_int64(text, <int64_t>context.expiry.volatile_keys, b",avg_ttl=") < 0:
        return -1
    return output_int64(text, expire_average_ttl_ms(context), b"\r\n")


INFO_SECTIONS[0] = InfoSection(b"server", b"# Server\r\n", INFO_NONE, write_server_section)
INFO_SECTIONS[1] = InfoSection(b"clients", b"# Clients\r\n", INFO_CLIENTS, NULL)
INFO_SECTIONS[2] = InfoSection(b"memory", b"# Memory\r\n", INFO_MEMORY, NULL)
INFO_SECTIONS[3] = InfoSection(b"persistence", b"# Persistence\r\n", INFO_PERSISTENCE, NULL)
INFO_SECTIONS[4] = InfoSection(b"stats", b"# Stats\r\n", INFO_STATS, NULL)
INFO_SECTIONS[5] = InfoSection(b"replication", b"# Replication\r\n", INFO_REPLICATION, NULL)
INFO_SECTIONS[6] = InfoSection(b"cpu", b"# CPU\r\n", INFO_NONE, write_cpu_section)
INFO_SECTIONS[7] = InfoSection(b"commandstats", b"# Commandstats\r\n", INFO_NONE, write_commandstats_section)
INFO_SECTIONS[8] = InfoSection(b"errorstats", b"# Errorstats\r\n", INFO_NONE, write_errorstats_section)
INFO_SECTIONS[9] = InfoSection(b"latencystats", b"# Latencystats\r\n", INFO_NONE, write_latencystats_section)
INFO_SECTIONS[10] = InfoSection(b"keyspace", b"# Keyspace\r\n", INFO_NONE, write_keyspace_section)


cdef int command_info(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """INFO [section...]: Redis's text format (``# Section`` headers, then
    ``field:value`` lines, a blank line between sections) as one bulk string
    (a verbatim string in RESP3, as Redis 7 sends it). Sections as
    INFO_SECTIONS lists them, in that (Redis's) order; ``all``/``everything``:
    all; none or ``default``: all but commandstats and latencystats, as Redis;
    unknown sections are left out, as Redis does."""
    cdef Argument argument
    cdef int sections = 0 if request.argc > 1 else DEFAULT_SECTIONS
    cdef int i, written = 0
    cdef Output text
    cdef int result = 0
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if (equals_nocase(argument.start, argument.length, b"all")
                or equals_nocase(argument.start, argument.length, b"everything")):
            sections = ALL_SECTIONS
        elif equals_nocase(argument.start, argument.length, b"default"):
            sections |= DEFAULT_SECTIONS
        for i in range(INFO_SECTION_COUNT):
            if equals_nocase(argument.start, argument.length, INFO_SECTIONS[i].name):
                sections |= 1 << i
    text.data = NULL
    text.start = text.end = text.capacity = 0
    for i in range(INFO_SECTION_COUNT):
        if result == 0 and sections & (1 << i):
            if written > 0:
                result = output_text(&text, b"\r\n")
            if result == 0:
                result = write_info_part(context, &text, &INFO_SECTIONS[i])
            written += 1
    if result == 0:
        result = reply_verbatim(session, text.data + text.start, text.end - text.start)
    output_free(&text)
    return result


cdef int write_info_part(ServerContext *context, Output *text, const InfoSection *section) noexcept nogil:
    """One section: its title, then its lines. 0 or -1 (out of memory)."""
    if output_text(text, section.title) < 0:
        return -1
    return section.write(context, text) if section.write != NULL \
        else write_info_section(text, context, section.fields)


# ---- the rows ---------------------------------------------------------------------
# name, proc, arity, flags, first key, last key, key step (as Redis's COMMAND).
# The order is COMMAND's; the hottest commands first costs nothing (the index is
# a hash) but reads well.

define(b"get", command_get, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"set", command_set, -3, CMD_WRITE | CMD_DENYOOM, 1, 1, 1)
define(b"setnx", command_setnx, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"put", command_put, 3, CMD_WRITE | CMD_DENYOOM, 1, 1, 1)
define(b"del", command_del, -2, CMD_WRITE, 1, -1, 1)
define(b"exists", command_exists, -2, CMD_READONLY | CMD_FAST, 1, -1, 1)
define(b"incr", command_incr, 2, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"decr", command_decr, 2, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"incrby", command_incrby, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"decrby", command_decrby, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"mget", command_mget, -2, CMD_READONLY | CMD_FAST, 1, -1, 1)
define(b"dbsize", command_dbsize, 1, CMD_READONLY | CMD_FAST)
define(b"flushall", command_flushall, -1, CMD_WRITE)
define(b"flushdb", command_flushall, -1, CMD_WRITE)
define(b"ping", command_ping, -1, CMD_FAST)
define(b"echo", command_echo, 2, CMD_FAST)
define(b"quit", command_quit, -1, CMD_FAST | CMD_NO_AUTH)
define(b"bye", command_bye, 1, CMD_FAST | CMD_NO_AUTH)
define(b"select", command_select, 2, CMD_LOADING | CMD_FAST)
define(b"hello", command_hello, -1, CMD_LOADING | CMD_FAST | CMD_NO_AUTH)
define(b"command", command_command, -1, CMD_LOADING)
define(b"client", command_client, -2, CMD_ADMIN)
define(b"config", command_config, -2, CMD_ADMIN)
define(b"info", command_info, -1, CMD_LOADING)
define(b"auth", command_auth, -2, CMD_LOADING | CMD_FAST | CMD_NO_AUTH)
define(b"bgrewriteaof", command_bgrewriteaof, 1, CMD_ADMIN | CMD_NO_MULTI)
define(b"getset", command_getset, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"getdel", command_getdel, 2, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"mset", command_mset, -3, CMD_WRITE | CMD_DENYOOM, 1, -1, 2)
define(b"msetnx", command_msetnx, -3, CMD_WRITE | CMD_DENYOOM, 1, -1, 2)
define(b"incrbyfloat", command_incrbyfloat, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"strlen", command_strlen, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"append", command_append, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST, 1, 1, 1)
define(b"time", command_time, 1, CMD_LOADING | CMD_FAST)
define(b"role", command_role, 1, CMD_LOADING | CMD_FAST)
define(b"wait", command_wait, 3, 0)
define(b"swapdb", command_swapdb, 3, CMD_WRITE | CMD_FAST)
define(b"lastsave", command_lastsave, 1, CMD_LOADING | CMD_FAST)
define(b"save", command_save, 1, CMD_ADMIN | CMD_NO_MULTI)
define(b"bgsave", command_bgsave, -1, CMD_ADMIN)
define(b"scan", command_scan, -2, CMD_READONLY)
define(b"keys", command_keys, 2, CMD_READONLY)
define(b"type", command_type, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"touch", command_touch, -2, CMD_READONLY | CMD_FAST, 1, -1, 1)
define(b"unlink", command_del, -2, CMD_WRITE | CMD_FAST, 1, -1, 1)
define(b"rename", command_rename, 3, CMD_WRITE, 1, 2, 1)
define(b"renamenx", command_renamenx, 3, CMD_WRITE | CMD_FAST, 1, 2, 1)
define(b"copy", command_copy, -3, CMD_WRITE | CMD_DENYOOM, 1, 2, 1)
define(b"randomkey", command_randomkey, 1, CMD_READONLY)
define(b"object", command_object, -2, 0)
define(b"memory", command_memory, -2, 0)
define(b"multi", command_multi, 1, CMD_LOADING | CMD_FAST)
define(b"exec", command_exec, 1, CMD_LOADING)
define(b"discard", command_discard, 1, CMD_LOADING | CMD_FAST)
define(b"watch", command_watch, -2, CMD_LOADING | CMD_FAST, 1, -1, 1)
define(b"unwatch", command_unwatch, 1, CMD_LOADING | CMD_FAST)
define(b"reset", command_reset, 1, CMD_LOADING | CMD_FAST | CMD_NO_AUTH)
define(b"expire", command_expire, -3, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"pexpire", command_pexpire, -3, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"expireat", command_expireat, -3, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"pexpireat", command_pexpireat, -3, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"ttl", command_ttl, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"pttl", command_pttl, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"expiretime", command_expiretime, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"pexpiretime", command_pexpiretime, 2, CMD_READONLY | CMD_FAST, 1, 1, 1)
define(b"persist", command_persist, 2, CMD_WRITE | CMD_FAST, 1, 1, 1)
define(b"setex", command_setex, 4, CMD_WRITE | CMD_DENYOOM, 1, 1, 1)
define(b"psetex", command_psetex, 4, CMD_WRITE | CMD_DENYOOM, 1, 1, 1)
define(b"getex", command_getex, -2, CMD_WRITE | CMD_FAST, 1, 1, 1)

define(b"slowlog", command_slowlog, -2, CMD_ADMIN)
define(b"monitor", command_monitor, 1, CMD_ADMIN | CMD_LOADING)
define(b"shutdown", command_shutdown, -1, CMD_ADMIN | CMD_LOADING | CMD_NO_MULTI)
define(b"debug", command_debug, -2, CMD_ADMIN | CMD_LOADING)
define(b"latency", command_latency, -2, CMD_ADMIN)

multi_set_executor(execute)     # EXEC runs its queue through execute()
