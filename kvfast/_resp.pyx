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
from libc.stdint cimport int64_t, INT64_MIN
from libc.string cimport memcmp, strerror, strlen
from libc.time cimport time
from posix.fcntl cimport open, O_RDONLY
from posix.unistd cimport getpid, read, close, sysconf, _SC_PAGESIZE

from kvfast._aof cimport AppendLog, FSYNC_ALWAYS, FSYNC_EVERYSEC
from kvfast._context cimport Counters, ServerContext, Session
from kvfast._output cimport Output, output_append, output_text, output_int64, output_free
from kvfast._persist cimport begin_write, log_set, log_delete, log_clear
from kvfast._store cimport (
    store_insert, store_upsert, store_lookup, store_delete, store_count, store_increment,
    store_clear, store_memory_bytes, store_prefetch,
)
from kvfast._text cimport INT_OK, parse_int64, format_int64, equals_nocase, same_letters_nocase, secrets_equal


cdef enum:
    MAX_ARGUMENTS = 1024 * 1024            # largest multibulk count accepted
    MAX_HEADER_DIGITS = 18                 # "*<n>" / "$<n>" with more digits are malformed
    PREFETCH_MAX_ARGUMENTS = 8             # longer requests end a prefetch walk
    ERROR_ECHO_LIMIT = 128                 # bytes of an unknown command echoed, as Redis does

cdef int64_t MAX_BULK_BYTES = 512 * 1024 * 1024    # Redis's proto-max-bulk-len
cdef int64_t UNAUTHENTICATED_MAX_ARGUMENTS = 10       # until AUTH, when a password is set
cdef int64_t UNAUTHENTICATED_MAX_BULK_BYTES = 16384

cdef const char *VERSION = b"7.0.0"        # the Redis version whose behaviour this follows
cdef const char *KVFAST_VERSION = b"0.1.0"

cdef const char *ERR_NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
cdef const char *ERR_KEY_NOT_INTEGER = b"-ERR key is not an integer or out of range\r\n"
cdef const char *ERR_OVERFLOW = b"-ERR increment or decrement would overflow\r\n"
cdef const char *ERR_SYNTAX = b"-ERR syntax error\r\n"
cdef const char *ERR_OUT_OF_MEMORY = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n"
cdef const char *ERR_NOAUTH = b"-NOAUTH Authentication required.\r\n"
cdef const char *ERR_WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


cdef struct Request:
    const char *data              # the request's first byte ("*")
    size_t argc
    size_t arguments_at           # offset of the first "$" header
    size_t length                 # bytes of the whole request


cdef struct Argument:
    const char *start
    size_t length


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


cdef int scan_request(const char *data, size_t length, size_t max_request_bytes, int64_t max_arguments,
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
        if position + <size_t>size + 2 > max_request_bytes:
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


cdef inline void next_argument(const char *data, size_t *position, Argument *argument) noexcept nogil:
    """Read the bulk header at ``position`` (already validated by scan_request,
    so it is ``$<digits>\r\n``) and advance past its data."""
    cdef const char *at = data + position[0] + 1
    cdef size_t size = 0
    while at[0] != c'\r':
        size = size * 10 + <size_t>(at[0] - c'0')
        at += 1
    argument.start = at + 2
    argument.length = size
    position[0] = (argument.start - data) + size + 2


cdef ssize_t resp_answer(ServerContext *context, Session *session,
                         const char *data, size_t length) noexcept nogil:
    """Answer the RESP request at the start of ``data`` (which starts with ``*``).

    Returns the bytes it used, 0 if the request is not complete yet, or -1 if a
    reply could not be buffered (out of memory). A malformed request gets
    Redis's protocol error reply, the session is marked closing, and all of
    ``data`` counts as used.
    """
    cdef Request request
    cdef const char *error = NULL
    cdef int scanned
    if session.authenticated:
        scanned = scan_request(data, length, context.max_request_bytes, MAX_ARGUMENTS, MAX_BULK_BYTES,
                               session, &request, &error)
    else:       # as Redis does before AUTH: a few small arguments only
        scanned = scan_request(data, length, context.max_request_bytes, UNAUTHENTICATED_MAX_ARGUMENTS,
                               UNAUTHENTICATED_MAX_BULK_BYTES, session, &request, &error)
    if scanned == 0:
        return 0
    if scanned < 0:
        context.counters.protocol_errors += 1
        session.closing = True
        if scanned == -2:
            if expected_dollar(&session.output, data, length) < 0:
                return -1
        elif output_text(&session.output, error) < 0:
            return -1
        return <ssize_t>length
    if request.argc > 0 and execute(context, session, &request) < 0:
        return -1
    return <ssize_t>request.length


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


cdef int resp_refuse_too_large(ServerContext *context, Session *session) noexcept nogil:
    """A request that outgrew the limit argument by argument: refuse, then close."""
    context.counters.protocol_errors += 1
    session.closing = True
    return output_text(&session.output, b"-ERR Protocol error: request too large\r\n")


# ---- reply shapes -------------------------------------------------------------

cdef inline int reply_integer(Output *output, int64_t value) noexcept nogil:
    return -1 if output_append(output, b":", 1) < 0 else output_int64(output, value, b"\r\n")


cdef inline int reply_bulk(Output *output, const char *data, size_t length) noexcept nogil:
    if output_append(output, b"$", 1) < 0 or output_int64(output, <int64_t>length, b"\r\n") < 0 \
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


cdef int reply_wrong_arity(ServerContext *context, Output *output, const char *name) noexcept nogil:
    context.counters.invalid_requests += 1
    if output_text(output, b"-ERR wrong number of arguments for '") < 0 or output_text(output, name) < 0:
        return -1
    return output_text(output, b"' command\r\n")


cdef int reply_error(ServerContext *context, Output *output, const char *error) noexcept nogil:
    context.counters.invalid_requests += 1
    return output_text(output, error)


cdef int append_sanitized(Output *output, const char *data, size_t length) noexcept nogil:
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


cdef int reply_unknown(ServerContext *context, Output *output, const Request *request,
                       const char *prefix, const char *suffix) noexcept nogil:
    """Redis's unknown-command reply: ``-ERR unknown command 'foo', with args
    beginning with: 'a' 'b' `` (the name cut at 128 bytes, arguments up to
    about 128 bytes in all)."""
    cdef size_t position = request.arguments_at, i, shown = 0, take
    cdef Argument argument
    context.counters.invalid_requests += 1
    next_argument(request.data, &position, &argument)
    if output_text(output, prefix) < 0 or append_sanitized(
            output, argument.start, argument.length if argument.length < ERROR_ECHO_LIMIT else ERROR_ECHO_LIMIT) < 0 \
            or output_text(output, suffix) < 0:
        return -1
    for i in range(1, request.argc):
        if shown >= ERROR_ECHO_LIMIT:
            break
        next_argument(request.data, &position, &argument)
        take = argument.length if argument.length < ERROR_ECHO_LIMIT - shown else ERROR_ECHO_LIMIT - shown
        if output_append(output, b"'", 1) < 0 or append_sanitized(output, argument.start, take) < 0 \
                or output_append(output, b"' ", 2) < 0:
            return -1
        shown += take + 3
    return output_append(output, b"\r\n", 2)


# ---- commands -----------------------------------------------------------------

cdef enum CommandId:
    CMD_GET, CMD_SET, CMD_SETNX, CMD_PUT, CMD_DEL, CMD_EXISTS, CMD_INCR, CMD_DECR,
    CMD_INCRBY, CMD_DECRBY, CMD_MGET, CMD_DBSIZE, CMD_FLUSHALL, CMD_FLUSHDB, CMD_PING,
    CMD_ECHO, CMD_QUIT, CMD_BYE, CMD_SELECT, CMD_HELLO, CMD_COMMAND, CMD_CLIENT,
    CMD_CONFIG, CMD_INFO, CMD_AUTH, CMD_BGREWRITEAOF, COMMAND_COUNT


cdef struct CommandInfo:
    CommandId id
    const char *name
    size_t name_length            # filled in at import
    int arity                     # Redis's convention: -N means at least N arguments
    const char *flag              # the command's main flag, as COMMAND reports it
    int first_key                 # key positions, as COMMAND reports them
    int last_key
    int key_step


# The command table: the order is the order of the CommandId values.
cdef CommandInfo COMMANDS[<int>COMMAND_COUNT]
COMMANDS[<int>CMD_GET] = CommandInfo(CMD_GET, b"get", 0, 2, b"readonly", 1, 1, 1)
COMMANDS[<int>CMD_SET] = CommandInfo(CMD_SET, b"set", 0, -3, b"write", 1, 1, 1)
COMMANDS[<int>CMD_SETNX] = CommandInfo(CMD_SETNX, b"setnx", 0, 3, b"write", 1, 1, 1)
COMMANDS[<int>CMD_PUT] = CommandInfo(CMD_PUT, b"put", 0, 3, b"write", 1, 1, 1)
COMMANDS[<int>CMD_DEL] = CommandInfo(CMD_DEL, b"del", 0, -2, b"write", 1, -1, 1)
COMMANDS[<int>CMD_EXISTS] = CommandInfo(CMD_EXISTS, b"exists", 0, -2, b"readonly", 1, -1, 1)
COMMANDS[<int>CMD_INCR] = CommandInfo(CMD_INCR, b"incr", 0, 2, b"write", 1, 1, 1)
COMMANDS[<int>CMD_DECR] = CommandInfo(CMD_DECR, b"decr", 0, 2, b"write", 1, 1, 1)
COMMANDS[<int>CMD_INCRBY] = CommandInfo(CMD_INCRBY, b"incrby", 0, 3, b"write", 1, 1, 1)
COMMANDS[<int>CMD_DECRBY] = CommandInfo(CMD_DECRBY, b"decrby", 0, 3, b"write", 1, 1, 1)
COMMANDS[<int>CMD_MGET] = CommandInfo(CMD_MGET, b"mget", 0, -2, b"readonly", 1, -1, 1)
COMMANDS[<int>CMD_DBSIZE] = CommandInfo(CMD_DBSIZE, b"dbsize", 0, 1, b"readonly", 0, 0, 0)
COMMANDS[<int>CMD_FLUSHALL] = CommandInfo(CMD_FLUSHALL, b"flushall", 0, -1, b"write", 0, 0, 0)
COMMANDS[<int>CMD_FLUSHDB] = CommandInfo(CMD_FLUSHDB, b"flushdb", 0, -1, b"write", 0, 0, 0)
COMMANDS[<int>CMD_PING] = CommandInfo(CMD_PING, b"ping", 0, -1, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_ECHO] = CommandInfo(CMD_ECHO, b"echo", 0, 2, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_QUIT] = CommandInfo(CMD_QUIT, b"quit", 0, -1, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_BYE] = CommandInfo(CMD_BYE, b"bye", 0, 1, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_SELECT] = CommandInfo(CMD_SELECT, b"select", 0, 2, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_HELLO] = CommandInfo(CMD_HELLO, b"hello", 0, -1, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_COMMAND] = CommandInfo(CMD_COMMAND, b"command", 0, -1, b"loading", 0, 0, 0)
COMMANDS[<int>CMD_CLIENT] = CommandInfo(CMD_CLIENT, b"client", 0, -2, b"admin", 0, 0, 0)
COMMANDS[<int>CMD_CONFIG] = CommandInfo(CMD_CONFIG, b"config", 0, -2, b"admin", 0, 0, 0)
COMMANDS[<int>CMD_INFO] = CommandInfo(CMD_INFO, b"info", 0, -1, b"loading", 0, 0, 0)
COMMANDS[<int>CMD_AUTH] = CommandInfo(CMD_AUTH, b"auth", 0, -2, b"fast", 0, 0, 0)
COMMANDS[<int>CMD_BGREWRITEAOF] = CommandInfo(CMD_BGREWRITEAOF, b"bgrewriteaof", 0, 1, b"admin", 0, 0, 0)


for _i in range(<int>COMMAND_COUNT):
    COMMANDS[_i].name_length = strlen(COMMANDS[_i].name)


cdef const CommandInfo *find_command(const Argument *name) noexcept nogil:
    """The table entry of a command name (any case), or NULL."""
    cdef int i
    for i in range(<int>COMMAND_COUNT):
        if COMMANDS[i].name_length == name.length and same_letters_nocase(name.start, name.length, COMMANDS[i].name):
            return &COMMANDS[i]
    return NULL


cdef inline bint arity_ok(const CommandInfo *command, size_t argc) noexcept nogil:
    return argc == <size_t>command.arity if command.arity > 0 else argc >= <size_t>(-command.arity)


cdef int execute(ServerContext *context, Session *session, const Request *request) noexcept nogil:
    """Run one complete request and buffer its reply; 0, or -1 (out of memory)."""
    cdef Output *output = &session.output
    cdef size_t position = request.arguments_at
    cdef Argument name, argument
    cdef const CommandInfo *command
    cdef int64_t number
    next_argument(request.data, &position, &name)
    command = find_command(&name)
    context.counters.commands_processed += 1
    if command == NULL:
        return reply_unknown(context, output, request, b"-ERR unknown command '",
                             b"', with args beginning with: ")
    if not session.authenticated and not (command.id == CMD_AUTH or command.id == CMD_HELLO
                                          or command.id == CMD_QUIT or command.id == CMD_BYE):
        return reply_error(context, output, ERR_NOAUTH)
    if not arity_ok(command, request.argc):
        return reply_wrong_arity(context, output, command.name)

    if command.id == CMD_GET:
        return command_get(context, session, request, position)
    if command.id == CMD_SET:
        return command_set(context, session, request, position)
    if command.id == CMD_SETNX or command.id == CMD_PUT:
        return command_insert(context, session, request, position, command.id == CMD_PUT)
    if command.id == CMD_DEL or command.id == CMD_EXISTS:
        return command_count_keys(context, session, request, position, command.id == CMD_DEL)
    if command.id == CMD_INCR or command.id == CMD_DECR:
        return command_increment(context, session, request, position, command.id == CMD_DECR, False)
    if command.id == CMD_INCRBY or command.id == CMD_DECRBY:
        return command_increment(context, session, request, position, command.id == CMD_DECRBY, True)
    if command.id == CMD_MGET:
        return command_mget(context, session, request, position)
    if command.id == CMD_DBSIZE:
        return reply_integer(output, <int64_t>store_count(&context.store))
    if command.id == CMD_FLUSHALL or command.id == CMD_FLUSHDB:
        if request.argc > 2:
            return reply_error(context, output, ERR_SYNTAX)
        if request.argc == 2:
            next_argument(request.data, &position, &argument)
            if not (equals_nocase(argument.start, argument.length, b"sync")
                    or equals_nocase(argument.start, argument.length, b"async")):
                return reply_error(context, output, ERR_SYNTAX)
        result = begin_write(context)
        if result != 0:
            return refuse_write(context, output, result)
        store_clear(&context.store)
        log_clear(context, session)
        return output_text(output, b"+OK\r\n")
    if command.id == CMD_PING:
        if request.argc > 2:
            return reply_wrong_arity(context, output, command.name)
        if request.argc == 1:
            return output_text(output, b"+PONG\r\n")
        next_argument(request.data, &position, &argument)
        return reply_bulk(output, argument.start, argument.length)
    if command.id == CMD_ECHO:
        next_argument(request.data, &position, &argument)
        return reply_bulk(output, argument.start, argument.length)
    if command.id == CMD_QUIT or command.id == CMD_BYE:
        session.closing = True
        return output_text(output, b"+OK\r\n" if command.id == CMD_QUIT else b"+Goodbye\r\n")
    if command.id == CMD_SELECT:
        next_argument(request.data, &position, &argument)
        if parse_int64(argument.start, argument.length, &number) != INT_OK:
            return reply_error(context, output, ERR_NOT_INTEGER)
        if number != 0:
            return reply_error(context, output, b"-ERR DB index is out of range\r\n")
        return output_text(output, b"+OK\r\n")
    if command.id == CMD_HELLO:
        return command_hello(context, session, request, position)
    if command.id == CMD_COMMAND:
        return command_command(context, session, request, position)
    if command.id == CMD_CLIENT:
        return command_client(context, session, request, position)
    if command.id == CMD_CONFIG:
        return command_config(context, session, request, position)
    if command.id == CMD_INFO:
        return command_info(context, session, request, position)
    if command.id == CMD_BGREWRITEAOF:
        return command_bgrewriteaof(context, output)
    return command_auth(context, session, request, position)      # CMD_AUTH


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
        context.counters.auth_failures += 1
        return reply_error(context, &session.output, ERR_WRONGPASS)
    session.authenticated = True
    return output_text(&session.output, b"+OK\r\n")


cdef int parse_keys(ServerContext *context, Output *output, const Request *request,
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


cdef bint read_integer(ServerContext *context, Output *output, const Request *request, size_t *position,
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


cdef int command_get(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """GET key: the value as a bulk string, or null."""
    cdef int64_t key
    cdef int64_t *found
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    found = store_lookup(&context.store, key)
    if found == NULL:
        context.counters.keyspace_misses += 1
        return reply_null(session)
    context.counters.keyspace_hits += 1
    return reply_bulk_integer(&session.output, found[0])


cdef int command_set(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """SET key value [NX|XX]: +OK, or null when NX/XX prevents the write."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int64_t key, value
    cdef bint only_if_absent = False, only_if_present = False
    cdef int result, status
    if not (read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status)
            and read_integer(context, output, request, &position, &value, ERR_NOT_INTEGER, &status)):
        return status
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"nx") and not only_if_present:
            only_if_absent = True
        elif equals_nocase(argument.start, argument.length, b"xx") and not only_if_absent:
            only_if_present = True
        else:
            return reply_error(context, output, ERR_SYNTAX)
    result = begin_write(context)
    if result != 0:
        return refuse_write(context, output, result)
    if only_if_absent:
        result = store_insert(&context.store, key, value)
        if result == 0:
            return reply_null(session)
    elif only_if_present:
        if store_lookup(&context.store, key) == NULL:
            return reply_null(session)
        result = store_upsert(&context.store, key, value)
    else:
        result = store_upsert(&context.store, key, value)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    log_set(context, session, key, value)
    return output_text(output, b"+OK\r\n")


cdef int command_insert(ServerContext *context, Session *session, const Request *request,
                        size_t position, bint is_put) noexcept nogil:
    """SETNX key value (:1 or :0) and the seed's PUT (+OK or -ERR Key already exists)."""
    cdef Output *output = &session.output
    cdef int64_t key, value
    cdef int result, status
    if not (read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status)
            and read_integer(context, output, request, &position, &value, ERR_NOT_INTEGER, &status)):
        return status
    result = begin_write(context)
    if result != 0:
        return refuse_write(context, output, result)
    result = store_insert(&context.store, key, value)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    if result == 1:
        log_set(context, session, key, value)
    if is_put:
        return output_text(output, b"+OK\r\n") if result == 1 \
            else reply_error(context, output, b"-ERR Key already exists\r\n")
    return reply_integer(output, result)


cdef int command_count_keys(ServerContext *context, Session *session, const Request *request,
                            size_t position, bint delete) noexcept nogil:
    """DEL key... (keys removed) and EXISTS key... (keys present, repeats counted)."""
    cdef Argument argument
    cdef int64_t key = 0, count = 0
    cdef int refusal
    cdef int checked = parse_keys(context, &session.output, request, position)
    if checked != 0:
        return -1 if checked < 0 else 0
    if delete:
        refusal = begin_write(context, request.argc - 1)
        if refusal != 0:
            return refuse_write(context, &session.output, refusal)
    while position < request.length:
        next_argument(request.data, &position, &argument)
        parse_int64(argument.start, argument.length, &key)
        if delete:
            if store_delete(&context.store, key):
                log_delete(context, session, key)
                count += 1
        else:
            count += store_lookup(&context.store, key) != NULL
    return reply_integer(&session.output, count)


cdef int command_increment(ServerContext *context, Session *session, const Request *request,
                           size_t position, bint negate, bint with_amount) noexcept nogil:
    """INCR, DECR, INCRBY, DECRBY: the new value; an overflow is an error and
    leaves the value unchanged."""
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
    result = begin_write(context)
    if result != 0:
        return refuse_write(context, output, result)
    result = store_increment(&context.store, key, amount, &result_value)
    if result == 1:
        return reply_error(context, output, ERR_OVERFLOW)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    log_set(context, session, key, result_value)
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
        found = store_lookup(&context.store, key)
        if found == NULL:
            context.counters.keyspace_misses += 1
            if reply_null(session) < 0:
                return -1
        else:
            context.counters.keyspace_hits += 1
            if reply_bulk_integer(&session.output, found[0]) < 0:
                return -1
    return 0


cdef int command_hello(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """HELLO [protover [AUTH user pass] [SETNAME name]]: switch RESP version and
    reply with the server map (in the new version)."""
    cdef Output *output = &session.output
    cdef Argument argument, user, password
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
                next_argument(request.data, &position, &argument)
                index += 1
            else:
                context.counters.invalid_requests += 1
                if output_text(output, b"-ERR Syntax error in HELLO option '") < 0 \
                        or append_sanitized(output, argument.start, argument.length) < 0:
                    return -1
                return output_text(output, b"'\r\n")
        if version != 2 and version != 3:
            return reply_error(context, output, b"-NOPROTO unsupported protocol version\r\n")
    if authenticating:
        if not credentials_match(context, &user, &password):
            context.counters.auth_failures += 1
            return reply_error(context, output, ERR_WRONGPASS)
        session.authenticated = True
    elif not session.authenticated:
        return reply_error(context, output,
                           b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                           b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                           b"select the RESP protocol version at the same time\r\n")
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
    cdef const CommandInfo *command
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


cdef int reply_command_info(Output *output, const CommandInfo *command) noexcept nogil:
    """One command's entry in Redis 7's 10-element COMMAND format."""
    return -1 if (
        reply_array(output, 10) < 0
        or reply_bulk_text(output, command.name) < 0
        or reply_integer(output, command.arity) < 0
        or reply_array(output, 1) < 0
        or output_text(output, b"+") < 0 or output_text(output, command.flag) < 0
        or output_text(output, b"\r\n") < 0
        or reply_integer(output, command.first_key) < 0
        or reply_integer(output, command.last_key) < 0
        or reply_integer(output, command.key_step) < 0
        or reply_array(output, 0) < 0 or reply_array(output, 0) < 0
        or reply_array(output, 0) < 0 or reply_array(output, 0) < 0
    ) else 0


cdef int reply_unknown_subcommand(ServerContext *context, Output *output, const Argument *argument,
                                  const char *command) noexcept nogil:
    context.counters.invalid_requests += 1
    if output_text(output, b"-ERR unknown subcommand '") < 0 \
            or append_sanitized(output, argument.start, argument.length) < 0 \
            or output_text(output, b"'. Try ") < 0 or output_text(output, command) < 0:
        return -1
    return output_text(output, b" HELP.\r\n")


cdef int command_client(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """CLIENT ID, CLIENT SETNAME name, CLIENT SETINFO attr value (accepted and
    forgotten), CLIENT GETNAME (null)."""
    cdef Output *output = &session.output
    cdef Argument argument
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"id"):
        return reply_integer(output, <int64_t>session.id) if request.argc == 2 \
            else reply_wrong_arity(context, output, b"client|id")
    if equals_nocase(argument.start, argument.length, b"setname"):
        return output_text(output, b"+OK\r\n") if request.argc == 3 \
            else reply_wrong_arity(context, output, b"client|setname")
    if equals_nocase(argument.start, argument.length, b"setinfo"):
        return output_text(output, b"+OK\r\n") if request.argc == 4 \
            else reply_wrong_arity(context, output, b"client|setinfo")
    if equals_nocase(argument.start, argument.length, b"getname"):
        return reply_null(session) if request.argc == 2 \
            else reply_wrong_arity(context, output, b"client|getname")
    return reply_unknown_subcommand(context, output, &argument, b"CLIENT")


cdef int command_bgrewriteaof(ServerContext *context, Output *output) noexcept nogil:
    """BGREWRITEAOF: compact the append-only log now. The loop starts the forked
    child (see _rewrite.pyx) right after this iteration's records are written,
    and finishes the rewrite when the child exits; INFO's
    aof_last_bgrewrite_status tells how it went."""
    if context.aof == NULL:
        return reply_error(context, output, b"-ERR the append-only file is off (start kvfast-server with "
                                            b"--appendonly FILE)\r\n")
    if context.aof.rewrite_child != 0 or context.aof.rewrite_requested:
        return reply_error(context, output, b"-ERR Background append only file rewriting already in progress\r\n")
    if context.aof.failure != 0:                # a rewrite to recover is attempted by itself
        return refuse_write(context, output, context.aof.failure)
    context.aof.rewrite_requested = True
    return output_text(output, b"+Background append only file rewriting started\r\n")


cdef int refuse_write(ServerContext *context, Output *output, int error) noexcept nogil:
    """Redis's reply to a write it cannot persist: ``-MISCONF Errors writing to
    the AOF file: <reason>`` (see _persist.begin_write)."""
    context.counters.invalid_requests += 1
    if output_text(output, b"-MISCONF Errors writing to the AOF file: ") < 0 \
            or output_text(output, strerror(error)) < 0:
        return -1
    return output_text(output, b"\r\n")


cdef int command_config(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """CONFIG GET pattern...: answers ``save`` (""), ``appendonly`` (yes/no) and
    ``appendfsync``, what redis-benchmark and redis-cli ask; ``*`` matches all
    three, other names nothing."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef bint want_save = False, want_appendonly = False, want_appendfsync = False
    next_argument(request.data, &position, &argument)
    if not equals_nocase(argument.start, argument.length, b"get"):
        return reply_unknown_subcommand(context, output, &argument, b"CONFIG")
    if request.argc < 3:
        return reply_wrong_arity(context, output, b"config|get")
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"*"):
            want_save = want_appendonly = want_appendfsync = True
        elif equals_nocase(argument.start, argument.length, b"appendfsync"):
            want_appendfsync = True
        elif equals_nocase(argument.start, argument.length, b"save"):
            want_save = True
        elif equals_nocase(argument.start, argument.length, b"appendonly"):
            want_appendonly = True
    if reply_map(session, <size_t>want_save + <size_t>want_appendonly + <size_t>want_appendfsync) < 0:
        return -1
    if want_save and (reply_bulk_text(output, b"save") < 0 or reply_bulk_text(output, b"") < 0):
        return -1
    if want_appendonly and (reply_bulk_text(output, b"appendonly") < 0
                            or reply_bulk_text(output, b"yes" if context.aof != NULL else b"no") < 0):
        return -1
    if want_appendfsync and (reply_bulk_text(output, b"appendfsync") < 0
                             or reply_bulk_text(output, fsync_policy_name(context)) < 0):
        return -1
    return 0


cdef const char *fsync_policy_name(ServerContext *context) noexcept nogil:
    if context.aof == NULL or context.aof.policy == FSYNC_EVERYSEC:
        return b"everysec"
    return b"always" if context.aof.policy == FSYNC_ALWAYS else b"no"


cdef enum InfoSection:
    SECTION_SERVER = 1
    SECTION_CLIENTS = 2
    SECTION_MEMORY = 4
    SECTION_STATS = 8
    SECTION_KEYSPACE = 16
    SECTION_PERSISTENCE = 32
    SECTION_ALL = 63


cdef int command_info(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """INFO [section...]: Redis's text format (``# Section`` headers, then
    ``field:value`` lines) as one bulk string. Sections: server, clients,
    memory, persistence, stats, keyspace; ``all``/``everything``/``default`` or none: all;
    unknown sections are left out, as Redis does."""
    cdef Argument argument
    cdef int sections = 0 if request.argc > 1 else SECTION_ALL
    cdef Output text
    cdef int result
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"server"):
            sections |= SECTION_SERVER
        elif equals_nocase(argument.start, argument.length, b"clients"):
            sections |= SECTION_CLIENTS
        elif equals_nocase(argument.start, argument.length, b"memory"):
            sections |= SECTION_MEMORY
        elif equals_nocase(argument.start, argument.length, b"stats"):
            sections |= SECTION_STATS
        elif equals_nocase(argument.start, argument.length, b"keyspace"):
            sections |= SECTION_KEYSPACE
        elif equals_nocase(argument.start, argument.length, b"persistence"):
            sections |= SECTION_PERSISTENCE
        elif (equals_nocase(argument.start, argument.length, b"all")
              or equals_nocase(argument.start, argument.length, b"everything")
              or equals_nocase(argument.start, argument.length, b"default")):
            sections = SECTION_ALL
    text.data = NULL
    text.start = text.end = text.capacity = 0
    result = write_info(context, &text, sections)
    if result == 0:
        result = reply_bulk(&session.output, text.data + text.start, text.end - text.start)
    output_free(&text)
    return result


cdef int write_info(ServerContext *context, Output *text, int sections) noexcept nogil:
    """The INFO text of the chosen sections; 0 or -1 (out of memory)."""
    cdef Counters *counters = &context.counters
    cdef size_t keys = store_count(&context.store)
    if sections & SECTION_SERVER and (
            output_text(text, b"# Server\r\nredis_version:") < 0 or output_text(text, VERSION) < 0
            or output_text(text, b"\r\nkvfast_version:") < 0 or output_text(text, KVFAST_VERSION) < 0
            or output_text(text, b"\r\nredis_mode:standalone\r\nos:Linux\r\nmultiplexing_api:epoll"
                                 b"\r\nprocess_id:") < 0
            or output_int64(text, getpid(), b"\r\ntcp_port:") < 0
            or output_int64(text, context.port, b"\r\nuptime_in_seconds:") < 0
            or output_int64(text, time(NULL) - context.started_at, b"\r\n\r\n") < 0):
        return -1
    if sections & SECTION_CLIENTS and (
            output_text(text, b"# Clients\r\nconnected_clients:") < 0
            or output_int64(text, <int64_t>counters.connected_clients, b"\r\n\r\n") < 0):
        return -1
    if sections & SECTION_MEMORY and (
            output_text(text, b"# Memory\r\nused_memory:") < 0
            or output_int64(text, <int64_t>store_memory_bytes(&context.store), b"\r\nused_memory_rss:") < 0
            or output_int64(text, resident_bytes(), b"\r\nkvfast_resizes:") < 0
            or output_int64(text, <int64_t>context.store.stats.resizes,
                            b"\r\nkvfast_max_migrated_per_request:") < 0
            or output_int64(text, <int64_t>context.store.stats.max_moved_per_step, b"\r\nkvfast_forced_drains:") < 0
            or output_int64(text, <int64_t>context.store.stats.forced_drains, b"\r\nkvfast_resizing:") < 0
            or output_int64(text, context.store.draining.capacity != 0, b"\r\n\r\n") < 0):
        return -1
    if sections & SECTION_PERSISTENCE and write_persistence_info(context, text) < 0:
        return -1
    if sections & SECTION_STATS and (
            output_text(text, b"# Stats\r\ntotal_connections_received:") < 0
            or output_int64(text, <int64_t>counters.connections_accepted, b"\r\ntotal_commands_processed:") < 0
            or output_int64(text, <int64_t>counters.commands_processed, b"\r\nkeyspace_hits:") < 0
            or output_int64(text, <int64_t>counters.keyspace_hits, b"\r\nkeyspace_misses:") < 0
            or output_int64(text, <int64_t>counters.keyspace_misses, b"\r\ntotal_error_replies:") < 0
            or output_int64(text, <int64_t>counters.invalid_requests, b"\r\nprotocol_errors:") < 0
            or output_int64(text, <int64_t>counters.protocol_errors, b"\r\nrejected_connections:") < 0
            or output_int64(text, <int64_t>counters.rejected_connections, b"\r\nprotected_mode_refusals:") < 0
            or output_int64(text, <int64_t>counters.protected_refusals, b"\r\ntimed_out_clients:") < 0
            or output_int64(text, <int64_t>counters.timed_out_clients, b"\r\nauth_failures:") < 0
            or output_int64(text, <int64_t>counters.auth_failures, b"\r\n\r\n") < 0):
        return -1
    if sections & SECTION_KEYSPACE:
        if output_text(text, b"# Keyspace\r\n") < 0:
            return -1
        if keys > 0 and (output_text(text, b"db0:keys=") < 0
                         or output_int64(text, <int64_t>keys, b",expires=0,avg_ttl=0\r\n") < 0):
            return -1
    return 0


cdef int write_persistence_info(ServerContext *context, Output *text) noexcept nogil:
    """INFO's ``# Persistence`` section: the append-only log's state, with
    Redis's field names where Redis has them."""
    cdef AppendLog *aof = context.aof
    if aof == NULL:
        return output_text(text, b"# Persistence\r\nloading:0\r\naof_enabled:0\r\n\r\n")
    return -1 if (
        output_text(text, b"# Persistence\r\nloading:0\r\naof_enabled:1\r\naof_fsync:") < 0
        or output_text(text, fsync_policy_name(context)) < 0
        or output_text(text, b"\r\naof_rewrite_in_progress:") < 0
        or output_int64(text, aof.rewrite_child != 0, b"\r\naof_rewrites:") < 0
        or output_int64(text, <int64_t>aof.rewrites, b"\r\naof_last_bgrewrite_status:") < 0
        or output_text(text, b"err" if aof.last_rewrite_failed else b"ok") < 0
        or output_text(text, b"\r\naof_last_write_status:") < 0
        or output_text(text, b"err" if aof.failure != 0 else b"ok") < 0
        or output_text(text, b"\r\naof_current_size:") < 0
        or output_int64(text, <int64_t>aof.size, b"\r\naof_base_size:") < 0
        or output_int64(text, <int64_t>aof.base_size, b"\r\naof_pending_bytes:") < 0
        or output_int64(text, <int64_t>aof.pending_len, b"\r\nlatest_fork_usec:") < 0
        or output_int64(text, aof.latest_fork_us, b"\r\nkvfast_aof_last_rewrite_pause_us:") < 0
        or output_int64(text, aof.last_rewrite_pause_us, b"\r\nkvfast_aof_max_rewrite_pause_us:") < 0
        or output_int64(text, aof.max_rewrite_pause_us, b"\r\n\r\n") < 0) else 0


cdef int64_t resident_bytes() noexcept nogil:
    """This process's resident set size from /proc/self/statm (0 if unreadable)."""
    cdef char buffer[128]
    cdef int fd = open(b"/proc/self/statm", O_RDONLY)
    cdef ssize_t length
    cdef size_t start = 0, end = 0
    cdef int64_t pages = 0
    if fd < 0:
        return 0
    length = read(fd, buffer, sizeof(buffer) - 1)
    close(fd)
    if length <= 0:
        return 0
    while start < <size_t>length and buffer[start] != c' ':    # skip the first field (size)
        start += 1
    start += 1
    end = start
    while end < <size_t>length and c'0' <= buffer[end] <= c'9':
        end += 1
    if parse_int64(buffer + start, end - start, &pages) != INT_OK:
        return 0
    return pages * sysconf(_SC_PAGESIZE)
