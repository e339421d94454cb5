# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Operating commands over the session registry: CLIENT (LIST, INFO, KILL,
ID, SETNAME, GETNAME, SETINFO, NO-EVICT, NO-TOUCH), MONITOR, SHUTDOWN, DEBUG
SLEEP/OBJECT and MEMORY STATS.

The loop links every client's session into ServerContext.sessions at accept
and unlinks it at close. CLIENT KILL only marks a session killed (and
closing); the loop closes killed connections after the batch, so no command
frees a connection another part of the batch still uses. MONITOR costs
execute() one counter check while nobody monitors; monitor_feed appends a
line to every monitoring session's output and the loop writes them.
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, strlen

from kvfast._command cimport Request, Argument, next_argument
from kvfast._commandstats cimport Redaction, redacted
from kvfast._context cimport ServerContext, Session
from kvfast._keyspace cimport keyspace_peek
from kvfast._output cimport Output, output_append, output_text, output_free, output_pending
from kvfast._reply cimport (
    ERR_SYNTAX, ERR_KEY_NOT_INTEGER, reply_integer, reply_bulk_text, reply_null, reply_map,
    reply_verbatim, reply_error, reply_wrong_arity, reply_unknown_subcommand, append_sanitized,
)
from kvfast._store cimport store_count, store_memory_bytes
from kvfast._text cimport INT_OK, parse_int64, equals_nocase


cdef extern from "sys/time.h" nogil:
    struct timeval:
        long tv_sec
        long tv_usec
    int gettimeofday(timeval *tv, void *tz)

cdef extern from "time.h" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int nanosleep(const timespec *request, timespec *remaining)

cdef extern from "stdlib.h" nogil:
    double strtod(const char *text, char **end)


cdef enum:
    CLIENT_LINE_BYTES = 1024


# ---- the registry ----------------------------------------------------------------

cdef void session_unlink(ServerContext *context, Session *session) noexcept nogil:
    """Take a closing client's session out of the registry, and out of MONITOR."""
    if session.previous_session != NULL:
        session.previous_session.next_session = session.next_session
    elif context.sessions == session:
        context.sessions = session.next_session
    if session.next_session != NULL:
        session.next_session.previous_session = session.previous_session
    session.next_session = session.previous_session = NULL
    if session.monitoring:
        session.monitoring = False
        context.monitor_count -= 1
    if session.killed:
        session.killed = False
        context.kills_pending -= 1
    free(session.name)
    session.name = NULL


cdef void kill_session(ServerContext *context, Session *session) noexcept nogil:
    """Mark a session for closing after the batch (CLIENT KILL)."""
    if not session.killed:
        session.killed = True
        session.closing = True
        context.kills_pending += 1


# ---- MONITOR ---------------------------------------------------------------------

cdef int append_repr(Output *line, const char *data, size_t length) noexcept nogil:
    """``"..."`` with Redis's sdscatrepr escapes."""
    cdef size_t i
    cdef unsigned char byte
    cdef char escaped[8]
    cdef int n
    if output_append(line, b"\"", 1) < 0:
        return -1
    for i in range(length):
        byte = <unsigned char>data[i]
        if byte == c'\\' or byte == c'"':
            escaped[0] = c'\\'
            escaped[1] = <char>byte
            n = 2
        elif byte == c'\n':
            n = 2
            escaped[0], escaped[1] = c'\\', c'n'
        elif byte == c'\r':
            n = 2
            escaped[0], escaped[1] = c'\\', c'r'
        elif byte == c'\t':
            n = 2
            escaped[0], escaped[1] = c'\\', c't'
        elif byte == 7:
            n = 2
            escaped[0], escaped[1] = c'\\', c'a'
        elif byte == 8:
            n = 2
            escaped[0], escaped[1] = c'\\', c'b'
        elif 32 <= byte < 127:
            n = 1
            escaped[0] = <char>byte
        else:
            n = snprintf(escaped, sizeof(escaped), b"\\x%02x", byte)
        if output_append(line, escaped, <size_t>n) < 0:
            return -1
    return output_append(line, b"\"", 1)


cdef void monitor_feed(ServerContext *context, Session *session, const Request *request,
                       Redaction redaction) noexcept nogil:
    """Send the request to every monitoring client, as Redis prints it:
    ``+1700000000.123456 [0 127.0.0.1:5555] "set" "1" "2"``."""
    cdef Output line
    cdef Argument argument
    cdef size_t position = request.arguments_at, i, hello_auth_at = 0
    cdef timeval now
    cdef char stamp[64]
    cdef int n
    cdef Session *monitor
    line.data = NULL
    line.start = line.end = line.capacity = 0
    gettimeofday(&now, NULL)
    n = snprintf(stamp, sizeof(stamp), b"+%ld.%06ld [0 ", now.tv_sec, now.tv_usec)
    if output_append(&line, stamp, <size_t>n) < 0:
        return
    if session.unix_socket and output_text(&line, b"unix:") < 0:
        output_free(&line)
        return
    if output_text(&line, &session.local_address[0] if session.unix_socket else &session.address[0]) < 0:
        output_free(&line)
        return
    if session.unix_socket:
        line.end -= 2                   # the unix address is "path:0": drop the ":0"
    if output_append(&line, b"]", 1) < 0:
        output_free(&line)
        return
    for i in range(request.argc):
        next_argument(request.data, &position, &argument)
        if redacted(request, i, redaction, &hello_auth_at):
            argument.start = b"(redacted)"
            argument.length = 10
        if output_append(&line, b" ", 1) < 0 or append_repr(&line, argument.start, argument.length) < 0:
            output_free(&line)
            return
    if output_append(&line, b"\r\n", 2) == 0:
        monitor = context.sessions
        while monitor != NULL:
            if monitor.monitoring and not monitor.closing and monitor != session:   # its own: no (replies)
                output_append(&monitor.output, line.data, line.end)
            monitor = monitor.next_session
    output_free(&line)


cdef int command_monitor(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """MONITOR: +OK, then every request the server runs (but admin commands, as Redis)."""
    if not session.monitoring:
        session.monitoring = True
        context.monitor_count += 1
    return output_text(&session.output, b"+OK\r\n")


# ---- CLIENT ------------------------------------------------------------------------

cdef int client_set_name(ServerContext *context, Session *session, const Argument *name) noexcept nogil:
    """Set (or, with "", clear) the session's name; 0, 1 if the name is refused
    (replied), or -1 (out of memory)."""
    cdef size_t i
    cdef char *copy
    for i in range(name.length):
        if name.start[i] < c'!' or name.start[i] > c'~':
            return -1 if reply_error(context, &session.output,
                                     b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
                                     ) < 0 else 1
    copy = NULL
    if name.length > 0:
        copy = <char *>malloc(name.length + 1)
        if copy == NULL:
            return -1
        memcpy(copy, name.start, name.length)
        copy[name.length] = 0
    free(session.name)
    session.name = copy
    return 0


cdef int64_t seconds_since(ServerContext *context, int64_t when_ms) noexcept nogil:
    return (context.now_ms - when_ms) // 1000 if context.now_ms > when_ms else 0


cdef int append_client_line(ServerContext *context, Output *text, Session *session) noexcept nogil:
    """One client as Redis 7.0's CLIENT LIST shows it (no line ending)."""
    cdef char line[CLIENT_LINE_BYTES]
    cdef char flags[8]
    cdef int n, f = 0
    cdef size_t input_length = session.input_length[0] if session.input_length != NULL else 0
    cdef size_t input_capacity = session.input_capacity[0] if session.input_capacity != NULL else 0
    cdef long multi = -1
    cdef size_t multi_memory = 0
    cdef size_t pending = output_pending(&session.output)
    if session.transaction != NULL and session.transaction.queueing:
        flags[f] = c'x'
        f += 1
        multi = <long>session.transaction.queued
        multi_memory = session.transaction.queue_capacity
    if session.monitoring:
        flags[f] = c'O'
        f += 1
    if session.transaction != NULL and session.transaction.watch_broken:
        flags[f] = c'd'
        f += 1
    if session.closing:
        flags[f] = c'A' if session.killed else c'c'
        f += 1
    if f == 0:
        flags[f] = c'N'
        f += 1
    flags[f] = 0
    cdef const char *name = b""
    cdef const char *events = b"r"
    cdef const char *command = b"NULL"
    cdef int64_t last_active = session.created_ms
    cdef size_t input_free = input_capacity - input_length if input_capacity > input_length else 0
    if session.name != NULL:
        name = session.name
    if pending > 0:
        events = b"rw"
    if session.last_command != NULL:
        command = session.last_command
    if session.last_active_ms != NULL:
        last_active = session.last_active_ms[0]
    n = snprintf(line, sizeof(line),
                 b"id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=0 sub=0 psub=0 ssub=0 "
                 b"multi=%ld qbuf=%zu qbuf-free=%zu argv-mem=0 multi-mem=%zu rbs=%zu rbp=%zu obl=%zu oll=0 omem=0 "
                 b"tot-mem=%zu events=%s cmd=%s user=default redir=-1 resp=%d",
                 <unsigned long long>session.id, session.address, session.local_address, session.fd, name,
                 <long long>seconds_since(context, session.created_ms), <long long>seconds_since(context, last_active),
                 flags, multi, input_length, input_free, multi_memory, session.output.capacity,
                 session.output.capacity, pending, sizeof(Session) + input_capacity + session.output.capacity
                 + multi_memory, events, command, session.resp_version)
    if n >= <int>sizeof(line):
        n = <int>sizeof(line) - 1
    return output_append(text, line, <size_t>n)


cdef bint type_is_normal(ServerContext *context, Session *session, const Argument *kind, bint *known) noexcept nogil:
    """CLIENT LIST/KILL TYPE: every kvfast client is "normal"; master, replica,
    slave and pubsub match none; anything else is unknown (``known`` False)."""
    known[0] = True
    if equals_nocase(kind.start, kind.length, b"normal"):
        return True
    if not (equals_nocase(kind.start, kind.length, b"master") or equals_nocase(kind.start, kind.length, b"replica")
            or equals_nocase(kind.start, kind.length, b"slave") or equals_nocase(kind.start, kind.length, b"pubsub")):
        known[0] = False
    return False


cdef int reply_unknown_type(ServerContext *context, Output *output, const Argument *kind) noexcept nogil:
    if output_text(output, b"-ERR Unknown client type '") < 0 or append_sanitized(output, kind.start,
                                                                                  kind.length) < 0:
        return -1
    return reply_error(context, output, b"'\r\n")


cdef int client_list(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id...]: one line per client, oldest first."""
    cdef Output text
    cdef Argument argument, kind
    cdef bint normal = True, known, by_id = False
    cdef size_t ids_at = 0
    cdef int64_t id
    cdef int result = 0
    cdef Session *other
    cdef Session *last
    if request.argc > 2:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"type") and request.argc == 4:
            next_argument(request.data, &position, &kind)
            normal = type_is_normal(context, session, &kind, &known)
            if not known:
                return reply_unknown_type(context, &session.output, &kind)
        elif equals_nocase(argument.start, argument.length, b"id") and request.argc >= 4:
            by_id = True
            ids_at = position
            while position < request.length:
                next_argument(request.data, &position, &argument)
                if parse_int64(argument.start, argument.length, &id) != INT_OK:
                    return reply_error(context, &session.output, b"-ERR Invalid client ID\r\n")
        else:
            return reply_error(context, &session.output, ERR_SYNTAX)
    text.data = NULL
    text.start = text.end = text.capacity = 0
    last = context.sessions
    while last != NULL and last.next_session != NULL:
        last = last.next_session
    other = last
    while normal and other != NULL and result == 0:        # oldest first, as Redis
        if by_id and not id_listed(request, ids_at, other.id):
            other = other.previous_session
            continue
        result = append_client_line(context, &text, other)
        if result == 0:
            result = output_append(&text, b"\n", 1)
        other = other.previous_session
    if result == 0:
        result = reply_verbatim(session, text.data, text.end) if text.data != NULL \
            else reply_verbatim(session, b"", 0)
    output_free(&text)
    return result


cdef bint id_listed(const Request *request, size_t position, uint64_t id) noexcept nogil:
    cdef Argument argument
    cdef int64_t listed
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if parse_int64(argument.start, argument.length, &listed) == INT_OK and <uint64_t>listed == id:
            return True
    return False


cdef bint same_text(const Argument *argument, const char *text) noexcept nogil:
    cdef size_t length = strlen(text), i
    if length != argument.length:
        return False
    for i in range(length):
        if argument.start[i] != text[i]:
            return False
    return True


cdef int client_kill(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    """CLIENT KILL ip:port (+OK or -ERR No such client), or CLIENT KILL with
    filters ID id, ADDR ip:port, LADDR ip:port, TYPE type, USER user, SKIPME
    yes|no, MAXAGE seconds: the number of clients killed (all filters must
    match; SKIPME defaults to yes)."""
    cdef Output *output = &session.output
    cdef Argument argument, value
    cdef Argument address, local_address, kind
    cdef bint has_id = False, has_address = False, has_local = False, skip_me = True, known, normal = True
    cdef int64_t id = 0, max_age = -1
    cdef int64_t killed = 0
    cdef Session *other
    if request.argc == 3:
        next_argument(request.data, &position, &address)
        other = context.sessions
        while other != NULL:
            if same_text(&address, other.address) and not other.killed:
                kill_session(context, other)
                return output_text(output, b"+OK\r\n")
            other = other.next_session
        return reply_error(context, output, b"-ERR No such client\r\n")
    if request.argc % 2 != 0:
        return reply_error(context, output, ERR_SYNTAX)
    while position < request.length:
        next_argument(request.data, &position, &argument)
        next_argument(request.data, &position, &value)
        if equals_nocase(argument.start, argument.length, b"id"):
            if parse_int64(value.start, value.length, &id) != INT_OK or id <= 0:
                return reply_error(context, output, b"-ERR client-id should be greater than 0\r\n")
            has_id = True
        elif equals_nocase(argument.start, argument.length, b"addr"):
            address = value
            has_address = True
        elif equals_nocase(argument.start, argument.length, b"laddr"):
            local_address = value
            has_local = True
        elif equals_nocase(argument.start, argument.length, b"type"):
            kind = value
            normal = type_is_normal(context, session, &kind, &known)
            if not known:
                return reply_unknown_type(context, output, &kind)
        elif equals_nocase(argument.start, argument.length, b"user"):
            if not same_text(&value, b"default"):
                if output_text(output, b"-ERR No such user '") < 0 \
                        or append_sanitized(output, value.start, value.length) < 0:
                    return -1
                return reply_error(context, output, b"'\r\n")
        elif equals_nocase(argument.start, argument.length, b"skipme"):
            if equals_nocase(value.start, value.length, b"yes"):
                skip_me = True
            elif equals_nocase(value.start, value.length, b"no"):
                skip_me = False
            else:
                return reply_error(context, output, ERR_SYNTAX)
        elif equals_nocase(argument.start, argument.length, b"maxage"):
            if parse_int64(value.start, value.length, &max_age) != INT_OK:
                return reply_error(context, output, b"-ERR value is not an integer or out of range\r\n")
        else:
            return reply_error(context, output, ERR_SYNTAX)
    other = context.sessions
    while normal and other != NULL:
        if not other.killed and not (skip_me and other == session) \
                and not (has_id and other.id != <uint64_t>id) \
                and not (has_address and not same_text(&address, other.address)) \
                and not (has_local and not same_text(&local_address, other.local_address)) \
                and not (max_age >= 0 and seconds_since(context, other.created_ms) < max_age):
            kill_session(context, other)
            killed += 1
        other = other.next_session
    return reply_integer(output, killed)


cdef int command_client(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """CLIENT ID | SETNAME name | GETNAME | SETINFO attr value (accepted and
    forgotten) | INFO | LIST | KILL | NO-EVICT on|off | NO-TOUCH on|off (accepted:
    kvfast has no eviction or LRU clock)."""
    cdef Output *output = &session.output
    cdef Argument argument, value
    cdef Output text
    cdef int result
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"id"):
        session.last_command = b"client|id"
        return reply_integer(output, <int64_t>session.id) if request.argc == 2 \
            else reply_wrong_arity(context, output, b"client|id")
    if equals_nocase(argument.start, argument.length, b"setname"):
        session.last_command = b"client|setname"
        if request.argc != 3:
            return reply_wrong_arity(context, output, b"client|setname")
        next_argument(request.data, &position, &value)
        result = client_set_name(context, session, &value)
        return result if result != 0 else output_text(output, b"+OK\r\n")
    if equals_nocase(argument.start, argument.length, b"setinfo"):
        session.last_command = b"client|setinfo"
        return output_text(output, b"+OK\r\n") if request.argc == 4 \
            else reply_wrong_arity(context, output, b"client|setinfo")
    if equals_nocase(argument.start, argument.length, b"getname"):
        session.last_command = b"client|getname"
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"client|getname")
        return reply_null(session) if session.name == NULL else reply_bulk_text(output, session.name)
    if equals_nocase(argument.start, argument.length, b"info"):
        session.last_command = b"client|info"
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"client|info")
        text.data = NULL
        text.start = text.end = text.capacity = 0
        result = append_client_line(context, &text, session)
        if result == 0:
            result = output_append(&text, b"\n", 1)
        if result == 0:
            result = reply_verbatim(session, text.data, text.end)
        output_free(&text)
        return result
    if equals_nocase(argument.start, argument.length, b"list"):
        session.last_command = b"client|list"
        return client_list(context, session, request, position)
    if equals_nocase(argument.start, argument.length, b"kill"):
        session.last_command = b"client|kill"
        if request.argc < 3:
            return reply_wrong_arity(context, output, b"client|kill")
        return client_kill(context, session, request, position)
    if equals_nocase(argument.start, argument.length, b"no-evict") \
            or equals_nocase(argument.start, argument.length, b"no-touch"):
        if request.argc != 3:
            if equals_nocase(argument.start, argument.length, b"no-evict"):
                return reply_wrong_arity(context, output, b"client|no-evict")
            return reply_wrong_arity(context, output, b"client|no-touch")
        next_argument(request.data, &position, &value)
        if equals_nocase(value.start, value.length, b"on") or equals_nocase(value.start, value.length, b"off"):
            return output_text(output, b"+OK\r\n")
        return reply_error(context, output, ERR_SYNTAX)
    return reply_unknown_subcommand(context, output, &argument, b"CLIENT")


# ---- SHUTDOWN, DEBUG, MEMORY STATS ---------------------------------------------------

cdef int command_shutdown(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil:
    """SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]: the loop stops after this batch and
    the server exits as on SIGTERM (the log is written and synced; SAVE and
    NOSAVE alike, as Redis with only an AOF). No reply: the connection closes.
    ABORT: there is never a shutdown in progress to abort."""
    cdef Argument argument
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"abort") and request.argc == 2:
            return reply_error(context, &session.output, b"-ERR No shutdown in progress.\r\n")
        if not (equals_nocase(argument.start, argument.length, b"nosave")
                or equals_nocase(argument.start, argument.length, b"save")
                or equals_nocase(argument.start, argument.length, b"now")
                or equals_nocase(argument.start, argument.length, b"force")):
            return reply_error(context, &session.output, ERR_SYNTAX)
    context.shutdown_requested = True
    session.closing = True
    return 0


cdef int command_debug(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """DEBUG SLEEP seconds (the loop sleeps: +OK) and DEBUG OBJECT key (Redis's
    line, encoding int); Redis's other DEBUG subcommands are unknown here."""
    cdef Argument argument, value
    cdef char number[64]
    cdef char line[256]
    cdef char *end
    cdef double seconds
    cdef timespec pause
    cdef int64_t key
    cdef int64_t *found
    cdef int n
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"sleep") and request.argc == 3:
        next_argument(request.data, &position, &value)
        n = <int>(value.length if value.length < sizeof(number) - 1 else sizeof(number) - 1)
        memcpy(number, value.start, <size_t>n)
        number[n] = 0
        seconds = strtod(number, &end)
        if end == number or end[0] != 0 or not (seconds >= 0):
            seconds = 0             # Redis's atof: not a number sleeps 0
        pause.tv_sec = <long>seconds
        pause.tv_nsec = <long>((seconds - <double>pause.tv_sec) * 1e9)
        nanosleep(&pause, NULL)
        return output_text(&session.output, b"+OK\r\n")
    if equals_nocase(argument.start, argument.length, b"object") and request.argc == 3:
        next_argument(request.data, &position, &value)
        if parse_int64(value.start, value.length, &key) != INT_OK:
            return reply_error(context, &session.output, ERR_KEY_NOT_INTEGER)
        found = keyspace_peek(context, key)
        if found == NULL:
            return reply_error(context, &session.output, b"-ERR no such key\r\n")
        n = snprintf(number, sizeof(number), b"%lld", <long long>found[0])
        n = snprintf(line, sizeof(line), b"+Value at:%p refcount:1 encoding:int serializedlength:%d lru:0 "
                     b"lru_seconds_idle:0\r\n", <void *>found, n)
        return output_append(&session.output, line, <size_t>n)
    return reply_unknown_subcommand(context, &session.output, &argument, b"DEBUG")


cdef int memory_stats(ServerContext *context, Session *session) noexcept nogil:
    """MEMORY STATS: a few honest fields, under Redis's names (a map)."""
    cdef Output *output = &session.output
    cdef size_t clients = 0, client_bytes = 0, keys = store_count(&context.store)
    cdef size_t dataset = store_memory_bytes(&context.store)
    cdef Session *other = context.sessions
    while other != NULL:
        clients += 1
        client_bytes += sizeof(Session) + other.output.capacity \
            + (other.input_capacity[0] if other.input_capacity != NULL else 0)
        other = other.next_session
    if reply_map(session, 7) < 0 \
            or reply_bulk_text(output, b"total.allocated") < 0 \
            or reply_integer(output, <int64_t>(dataset + client_bytes)) < 0 \
            or reply_bulk_text(output, b"clients.normal") < 0 or reply_integer(output, <int64_t>client_bytes) < 0 \
            or reply_bulk_text(output, b"aof.buffer") < 0 \
            or reply_integer(output, <int64_t>(context.aof.pending_len if context.aof != NULL else 0)) < 0 \
            or reply_bulk_text(output, b"keys.count") < 0 or reply_integer(output, <int64_t>keys) < 0 \
            or reply_bulk_text(output, b"keys.bytes-per-key") < 0 \
            or reply_integer(output, <int64_t>(dataset // keys if keys > 0 else 0)) < 0 \
            or reply_bulk_text(output, b"dataset.bytes") < 0 or reply_integer(output, <int64_t>dataset) < 0:
        return -1
    if reply_bulk_text(output, b"clients.count") < 0:
        return -1
    return reply_integer(output, <int64_t>clients)
