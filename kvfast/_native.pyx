# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native text protocol: one request line in, one reply line out.

    put K V        OK | Key already exists     (insert only)
    get K          V | Key not found
    del K          OK | Key not found
    set K V        OK                          (insert or overwrite)
    put|set K V ex S   ...with a TTL of S seconds (1 to 10^12)
    expire K S     OK | Key not found          (K expires in S seconds)
    ttl K          seconds left | No expiry | Key not found
    persist K      OK | No expiry | Key not found   (the TTL removed)
    incr K [D]     the new value               (absent counts as 0; D defaults to 1)
    stats          name=value pairs on one line
    auth P         OK | Invalid password         (when the server has a password)
    bye            Goodbye, then the connection closes

With a password set, a session that has not authenticated gets
``Authentication required`` for everything but ``auth`` and ``bye``.

With the append-only log on and failing, writes get
``Error: persistence failed: <reason>`` (reads are still answered).

Anything else: ``Invalid request: <reason>``. The exact behaviour is defined by
``kvfast/protocol_model.py``, which the tests hold this module to (an oracle
written apart on purpose: built from the table below, it could not catch a
wrong row).

The commands are rows of one table (COMMANDS, defined at the end of the
command section): name, word counts, usage text, flags and proc, plus the
synopsis ``kvfast-client --help`` shows. native_execute() makes the generic checks
once; each proc works on the store only through _keyspace.pxd.
"""
from libc.stdint cimport int64_t
from libc.string cimport memchr, strerror

from kvfast._context cimport (
    ServerContext, Session, COUNTER_COMMANDS_PROCESSED, COUNTER_ERROR_REPLIES, COUNTER_PROTOCOL_ERRORS,
    COUNTER_AUTH_FAILURES,
)
from kvfast._evict cimport memory_admit
from kvfast._keyspace cimport (
    keyspace_begin_write, keyspace_read, keyspace_insert, keyspace_upsert, keyspace_delete, keyspace_increment,
    keyspace_contains, keyspace_set_expiring, keyspace_set_deadline, keyspace_persist, keyspace_deadline,
    keyspace_clock_ms,
)
from kvfast._output cimport Output, output_append, output_text, output_int64
from kvfast._stats cimport write_stats_line
from kvfast._store cimport Store, store_prefetch
from kvfast._text cimport IntParse, INT_OK, INT_OUT_OF_RANGE, parse_int64, equals_nocase, secrets_equal


cdef enum:
    MAX_WORDS = 6              # command + four arguments (set K V ex S) + one to notice extra words
    ECHO_LIMIT = 32            # bytes of an unknown command echoed back in the error
    PREFETCH_MAX_LINE = 64     # longer lines end a prefetch walk (a "set K V" line is at most 47 bytes)


cdef extern from *:
    """
    #define KVFAST_MAX_TTL_SECONDS ((int64_t)1000000000000)
    """
    const int64_t MAX_TTL_SECONDS "KVFAST_MAX_TTL_SECONDS"   # a native TTL is 1 to 10^12 s (about 31,700 years)


cdef struct Word:
    const char *start
    size_t length


cdef const char *HEX_DIGITS = b"0123456789abcdef"


cdef inline bint is_blank(char byte) noexcept nogil:
    return byte == c' ' or byte == c'\t'


cdef size_t split_words(const char *line, size_t length, Word *words) noexcept nogil:
    """Split a line at runs of spaces and tabs. Fills at most MAX_WORDS words
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
        if count < MAX_WORDS:
            words[count].start = line + start
            words[count].length = i - start
        count += 1


cdef size_t native_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil:
    """Start loading the table slot of the key of the native request line at the
    start of ``data`` (its second word), so that the cache misses of a pipelined
    batch overlap (see EventLoop.prefetch_keys). Nothing is judged here:
    native_answer does that. Returns the line's length with its newline, or 0
    when no newline ends it within PREFETCH_MAX_LINE bytes (the walk stops).
    """
    cdef Word words[MAX_WORDS]
    cdef const char *newline = <const char *>memchr(data, c'\n', min(length, <size_t>PREFETCH_MAX_LINE))
    cdef size_t line_length
    cdef int64_t key
    if newline == NULL:
        return 0
    line_length = newline - data
    if line_length > 0 and data[line_length - 1] == c'\r':
        line_length -= 1
    if split_words(data, line_length, words) >= 2 \
            and parse_int64(words[1].start, words[1].length, &key) == INT_OK:
        store_prefetch(store, key)
    return newline - data + 1


cdef inline size_t line_limit(const ServerContext *context, const Session *session) noexcept nogil:
    """Longest native line: tight until a password-protected session has
    authenticated, as Redis keeps unauthenticated requests small."""
    return context.limits.max_line_bytes if session.authenticated \
        else context.limits.unauthenticated_max_line_bytes


cdef ssize_t native_frame(ServerContext *context, Session *session, const char *data, size_t length,
                          size_t *line_length) noexcept nogil:
    """Frame the request line at the start of ``data`` (a native request, or
    an inline RESP one: _protocol.pyx routes it, then native_execute or
    resp_execute_inline answers it).

    Returns the bytes it used (the line and its ``\n``) with ``line_length``
    set (the line without its ``\n`` or ``\r\n``), 0 when the line is not
    complete yet, or -1 if a reply could not be buffered (out of memory).
    A line over the limit (or an incomplete one that can no longer end within
    it) is refused with ``Invalid request: line too long``, the session is
    marked closing (and refused) and all of ``data`` counts as used: there is
    no line to answer then. For an incomplete line,
    ``session.native_scanned`` remembers how much of it holds no newline, so
    the next call (with more bytes after the same start) does not search those
    bytes again: each byte is searched once however finely a line is split.
    """
    cdef size_t skip = session.native_scanned, end
    cdef const char *newline = <const char *>memchr(data + skip, c'\n', length - skip)
    session.native_scanned = 0
    if newline == NULL:
        if length > line_limit(context, session) + 1:     # "+ 1": a "\r" may still end it
            return -1 if refuse_long_line(context, session) < 0 else <ssize_t>length
        session.native_scanned = length
        return 0
    end = newline - data
    line_length[0] = end - 1 if end > 0 and data[end - 1] == c'\r' else end
    if line_length[0] > line_limit(context, session):
        return -1 if refuse_long_line(context, session) < 0 else <ssize_t>(end + 1)
    return <ssize_t>(end + 1)


cdef int native_unknown(ServerContext *context, Session *session, const char *line, size_t length) noexcept nogil:
    """The native reply to a line whose first word is no command (native_execute
    left it to the router, and it is no inline request either):
    ``Authentication required`` before a password-protected session has
    authenticated, else ``Invalid request: unknown command '<word>'``. 0 or -1."""
    cdef Word words[MAX_WORDS]
    split_words(line, length, words)
    context.counters[<int>COUNTER_COMMANDS_PROCESSED] += 1
    if not session.authenticated:
        context.counters[<int>COUNTER_ERROR_REPLIES] += 1
        return output_text(&session.output, b"Authentication required\n")
    return unknown_command(context, &session.output, &words[0])


# ---- the command table ----------------------------------------------------------

ctypedef int (*NativeProc)(ServerContext *context, Session *session, const Word *words,
                           size_t count) noexcept nogil


cdef enum NativeFlag:
    NATIVE_WRITE = 1            # changes the store: refused while the append-only log is failing
    NATIVE_NO_AUTH = 2          # allowed before a password-protected session has authenticated
    NATIVE_DENYOOM = 4          # may add memory: over maxmemory, room is made or it is refused


cdef struct NativeCommand:
    const char *name
    size_t min_words            # words of a well-formed request, the command included
    size_t max_words
    const char *usage           # the reply to a wrong word count, after "Invalid request: "
    int flags                   # NativeFlag
    NativeProc proc
    const char *synopsis        # kvfast-client --help: the request, what it does, its replies
    const char *summary
    const char *replies


cdef enum:
    MAX_COMMANDS = 32

cdef NativeCommand COMMANDS[MAX_COMMANDS]
cdef int COMMAND_COUNT = 0


cdef void define(const char *name, NativeProc proc, size_t min_words, size_t max_words, int flags,
                 const char *usage, const char *synopsis, const char *summary, const char *replies):
    """Append one row to COMMANDS (at import; the order is --help's)."""
    global COMMAND_COUNT
    COMMANDS[COMMAND_COUNT] = NativeCommand(name, min_words, max_words, usage, flags, proc,
                                            synopsis, summary, replies)
    COMMAND_COUNT += 1


def command_help():
    """(synopsis, summary, replies) of every native command, in table order:
    what ``kvfast-client --help`` lists."""
    return [(COMMANDS[i].synopsis.decode(), COMMANDS[i].summary.decode(), COMMANDS[i].replies.decode())
            for i in range(COMMAND_COUNT)]


cdef const NativeCommand *find_command(const Word *word) noexcept nogil:
    """The row of a command word (any case), or NULL. A linear search: the
    native protocol has a handful of commands, the first ones the hottest."""
    cdef int i
    for i in range(COMMAND_COUNT):
        if equals_nocase(word.start, word.length, COMMANDS[i].name):
            return &COMMANDS[i]
    return NULL


cdef int native_execute(ServerContext *context, Session *session, const char *line, size_t length,
                        bint *not_native) noexcept nogil:
    """Execute one request line (without its line ending, at most the line
    limit long) and buffer its one-line reply in the session; blank lines get
    none. When the line's first word is no native command, nothing is done
    and ``not_native`` is set: the router decides whether the line is a Redis
    inline request, or gets native_unknown's reply. The generic checks are
    made here, once, in this order: a known command, authentication (by the
    row's NATIVE_NO_AUTH flag), the word count (its usage text), the log's
    state for writes, maxmemory for those that may add memory (``Error: out
    of memory limit`` when no room can be made); then the row's proc runs.
    Returns 0, or -1 if the reply could not be buffered (out of memory)."""
    cdef Word words[MAX_WORDS]
    cdef size_t count = split_words(line, length, words)
    cdef const NativeCommand *command
    cdef int refusal
    if count == 0:
        return 0
    command = find_command(&words[0])
    if command == NULL:
        not_native[0] = True
        return 0
    context.counters[<int>COUNTER_COMMANDS_PROCESSED] += 1
    if not session.authenticated and not (command.flags & NATIVE_NO_AUTH):
        context.counters[<int>COUNTER_ERROR_REPLIES] += 1
        return output_text(&session.output, b"Authentication required\n")
    if count < command.min_words or count > command.max_words:
        return invalid(context, &session.output, command.usage)
    if command.flags & NATIVE_DENYOOM and context.memory.maxmemory != 0 and not memory_admit(context, session):
        context.counters[<int>COUNTER_ERROR_REPLIES] += 1
        return output_text(&session.output, b"Error: out of memory limit\n")
    if command.flags & NATIVE_WRITE:
        refusal = keyspace_begin_write(context, 1)
        if refusal != 0:
            return refuse_write(&session.output, refusal)
    return command.proc(context, session, words, count)


cdef int command_get(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``get K``: the value, or ``Key not found``."""
    cdef int64_t key
    cdef int64_t *found
    cdef int result
    if not integer_argument(context, &session.output, &words[1], &key, b"key is not an integer", &result):
        return result
    found = keyspace_read(context, key)
    if found == NULL:
        return output_text(&session.output, b"Key not found\n")
    return output_int64(&session.output, found[0], b"\n")


cdef int command_put(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``put K V``: insert only; ``OK`` or ``Key already exists`` (the stored value is kept)."""
    return write_value(context, session, words, count, True)


cdef int command_set(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``set K V``: insert or overwrite; ``OK``."""
    return write_value(context, session, words, count, False)


cdef bint seconds_argument(ServerContext *context, Output *output, const Word *word, int64_t *deadline,
                           int *status) noexcept nogil:
    """A TTL in seconds (1 to MAX_TTL_SECONDS) as a deadline in Unix ms; False
    when it replied why not (``status`` set)."""
    cdef int64_t seconds
    if not integer_argument(context, output, word, &seconds, b"seconds is not an integer", status):
        return False
    if seconds < 1 or seconds > MAX_TTL_SECONDS:
        status[0] = invalid(context, output, b"seconds must be 1 to 1000000000000")
        return False
    deadline[0] = keyspace_clock_ms(context) + seconds * 1000
    return True


cdef int write_value(ServerContext *context, Session *session, const Word *words, size_t count,
                     bint insert_only) noexcept nogil:
    """put and set: parse both integers (and ``ex S``), then insert
    (``insert_only``) or upsert, with the TTL if given (else a set clears
    one). Returns 0, or -1 if out of memory for the reply."""
    cdef Output *output = &session.output
    cdef int64_t key, value, deadline = 0
    cdef int result
    if not (integer_argument(context, output, &words[1], &key, b"key is not an integer", &result)
            and integer_argument(context, output, &words[2], &value, b"value is not an integer", &result)):
        return result
    if count > 3:
        if count == 4 or not equals_nocase(words[3].start, words[3].length, b"ex"):
            return invalid(context, output, b"usage: put <key> <value> [ex <seconds>]" if insert_only
                           else b"usage: set <key> <value> [ex <seconds>]")
        if not seconds_argument(context, output, &words[4], &deadline, &result):
            return result
    if insert_only:
        if keyspace_contains(context, key):
            return output_text(output, b"Key already exists\n")
        result = keyspace_set_expiring(context, session, key, value, deadline) if deadline != 0 \
            else keyspace_insert(context, session, key, value)
    elif deadline != 0:
        result = keyspace_set_expiring(context, session, key, value, deadline)
    else:
        result = keyspace_upsert(context, session, key, value)
    if result < 0:
        return output_text(output, b"Error: out of memory\n")
    return output_text(output, b"OK\n")


cdef int command_del(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``del K``: ``OK``, or ``Key not found``."""
    cdef int64_t key
    cdef int result
    if not integer_argument(context, &session.output, &words[1], &key, b"key is not an integer", &result):
        return result
    if not keyspace_delete(context, session, key):
        return output_text(&session.output, b"Key not found\n")
    return output_text(&session.output, b"OK\n")


cdef int command_incr(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``incr K [D]``: add D (default 1; an absent key counts as 0); the new value."""
    cdef Output *output = &session.output
    cdef int64_t key, value = 1
    cdef int result
    if not integer_argument(context, output, &words[1], &key, b"key is not an integer", &result):
        return result
    if count == 3 and not integer_argument(context, output, &words[2], &value, b"delta is not an integer",
                                           &result):
        return result
    result = keyspace_increment(context, session, key, value, &value)
    if result == 1:
        return invalid(context, output, b"increment would overflow")
    if result < 0:
        return output_text(output, b"Error: out of memory\n")
    return output_int64(output, value, b"\n")


cdef int command_expire(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``expire K S``: K expires in S seconds; ``OK``, or ``Key not found``."""
    cdef Output *output = &session.output
    cdef int64_t key, deadline
    cdef int result
    if not integer_argument(context, output, &words[1], &key, b"key is not an integer", &result):
        return result
    if not seconds_argument(context, output, &words[2], &deadline, &result):
        return result
    if not keyspace_contains(context, key):
        return output_text(output, b"Key not found\n")
    if keyspace_set_deadline(context, session, key, deadline) < 0:
        return output_text(output, b"Error: out of memory\n")
    return output_text(output, b"OK\n")


cdef int command_ttl(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``ttl K``: the seconds left (rounded, as Redis's TTL), ``No expiry``, or ``Key not found``."""
    cdef int64_t key, deadline, left
    cdef int result
    if not integer_argument(context, &session.output, &words[1], &key, b"key is not an integer", &result):
        return result
    if keyspace_read(context, key) == NULL:
        return output_text(&session.output, b"Key not found\n")
    deadline = keyspace_deadline(context, key)
    if deadline == 0:
        return output_text(&session.output, b"No expiry\n")
    left = deadline - keyspace_clock_ms(context)
    return output_int64(&session.output, (left + 500) // 1000 if left > 0 else 0, b"\n")


cdef int command_persist(ServerContext *context, Session *session, const Word *words,
                         size_t count) noexcept nogil:
    """``persist K``: remove K's TTL; ``OK``, ``No expiry``, or ``Key not found``."""
    cdef int64_t key
    cdef int result
    if not integer_argument(context, &session.output, &words[1], &key, b"key is not an integer", &result):
        return result
    if not keyspace_contains(context, key):
        return output_text(&session.output, b"Key not found\n")
    if not keyspace_persist(context, session, key):
        return output_text(&session.output, b"No expiry\n")
    return output_text(&session.output, b"OK\n")


cdef int command_stats(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``stats``: one line of ``name=value`` counters (see _stats.pyx)."""
    return write_stats_line(&session.output, context)


cdef int command_bye(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``bye``: ``Goodbye``, then the connection closes."""
    session.closing = True
    return output_text(&session.output, b"Goodbye\n")


cdef int command_auth(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``auth PASSWORD``: ``OK`` (the session may now send anything) or
    ``Invalid password``; without a configured password it is an invalid request."""
    if context.password == NULL:
        return invalid(context, &session.output, b"no password is set")
    if secrets_equal(words[1].start, words[1].length, context.password, context.password_length):
        session.authenticated = True
        return output_text(&session.output, b"OK\n")
    context.counters[<int>COUNTER_AUTH_FAILURES] += 1
    return output_text(&session.output, b"Invalid password\n")


# One row per command: name, proc, word counts, flags, usage; then --help's
# synopsis, summary and replies.
define(b"put", command_put, 3, 5, NATIVE_WRITE | NATIVE_DENYOOM, b"usage: put <key> <value> [ex <seconds>]",
       b"put K V [ex S]", b"store V under K (expiring in S seconds)", b"OK | Key already exists")
define(b"get", command_get, 2, 2, 0, b"usage: get <key>",
       b"get K", b"read the value of K", b"V  | Key not found")
define(b"del", command_del, 2, 2, NATIVE_WRITE, b"usage: del <key>",
       b"del K", b"remove K", b"OK | Key not found")
define(b"set", command_set, 3, 5, NATIVE_WRITE | NATIVE_DENYOOM, b"usage: set <key> <value> [ex <seconds>]",
       b"set K V [ex S]", b"store V, overwriting (expiring in S seconds; else no TTL)", b"OK")
define(b"incr", command_incr, 2, 3, NATIVE_WRITE | NATIVE_DENYOOM, b"usage: incr <key> [<delta>]",
       b"incr K [D]", b"add D (default 1)", b"the new value (an absent key counts as 0)")
define(b"expire", command_expire, 3, 3, NATIVE_WRITE, b"usage: expire <key> <seconds>",
       b"expire K S", b"K expires in S seconds (1 to 10^12)", b"OK | Key not found")
define(b"ttl", command_ttl, 2, 2, 0, b"usage: ttl <key>",
       b"ttl K", b"seconds until K expires", b"seconds | No expiry | Key not found")
define(b"persist", command_persist, 2, 2, NATIVE_WRITE, b"usage: persist <key>",
       b"persist K", b"remove K's expiry", b"OK | No expiry | Key not found")
define(b"stats", command_stats, 1, 1, 0, b"usage: stats",
       b"stats", b"server counters", b"name=value pairs on one line")
define(b"bye", command_bye, 1, 1, NATIVE_NO_AUTH, b"usage: bye",
       b"Bye", b"end the session", b"Goodbye")
define(b"auth", command_auth, 2, 2, NATIVE_NO_AUTH, b"usage: auth <password>",
       b"auth P", b"log in with password P", b"OK | Invalid password")


cdef int refuse_write(Output *output, int error) noexcept nogil:
    """Reply ``Error: persistence failed: <reason>``: the append-only log cannot
    take the write (see _keyspace.keyspace_begin_write); 0 or -1 (out of memory)."""
    if output_text(output, b"Error: persistence failed: ") < 0 or output_text(output, strerror(error)) < 0:
        return -1
    return output_text(output, b"\n")


cdef bint integer_argument(ServerContext *context, Output *output, const Word *word, int64_t *number,
                           const char *not_integer_reason, int *status) noexcept nogil:
    """Parse a word as an int64. True with ``number`` set; otherwise replies why
    and returns False, with the reply's status (0, or -1 if out of memory) in
    ``status`` for the command to return."""
    cdef IntParse parsed = parse_int64(word.start, word.length, number)
    if parsed == INT_OK:
        return True
    status[0] = refuse_integer(context, output, parsed, not_integer_reason)
    return False


cdef int refuse_integer(ServerContext *context, Output *output, IntParse parsed,
                        const char *not_integer_reason) noexcept nogil:
    """Reply why an integer argument was refused; 0 or -1 (out of memory)."""
    if parsed == INT_OUT_OF_RANGE:
        return invalid(context, output, b"integer out of range")
    return invalid(context, output, not_integer_reason)


cdef int invalid(ServerContext *context, Output *output, const char *reason) noexcept nogil:
    """Reply ``Invalid request: <reason>``; 0 or -1 (out of memory)."""
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"Invalid request: ") < 0 or output_text(output, reason) < 0:
        return -1
    return output_text(output, b"\n")


cdef int refuse_long_line(ServerContext *context, Session *session) noexcept nogil:
    """Reply ``Invalid request: line too long`` and mark the session closing."""
    context.counters[<int>COUNTER_PROTOCOL_ERRORS] += 1
    session.closing = session.refused = True
    return invalid(context, &session.output, b"line too long")


cdef int unknown_command(ServerContext *context, Output *output, const Word *word) noexcept nogil:
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
        echo[length] = echo[length + 1] = echo[length + 2] = c'.'
        length += 3
    echo[length] = c'\''
    echo[length + 1] = c'\n'
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"Invalid request: unknown command '") < 0:
        return -1
    return output_append(output, echo, length + 2)
