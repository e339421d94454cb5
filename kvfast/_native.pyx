# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The native text protocol: one request line in, one reply line out.

    put K V        OK | Key already exists     (insert only)
    get K          V | Key not found
    del K          OK | Key not found
    set K V        OK                          (insert or overwrite)
    incr K [D]     the new value               (absent counts as 0; D defaults to 1)
    stats          name=value pairs on one line
    auth P         OK | Invalid password         (when the server has a password)
    bye            Goodbye, then the connection closes

With a password set, a session that has not authenticated gets
``Authentication required`` for everything but ``auth`` and ``bye``.

With the append-only log on and failing, writes get
``Error: persistence failed: <reason>`` (reads are still answered).

Anything else: ``Invalid request: <reason>``. The exact behaviour is defined by
``kvfast/protocol_model.py``, which the tests hold this module to.
"""
from libc.stdint cimport int64_t
from libc.string cimport memchr, strerror

from kvfast._context cimport Counters, ServerContext, Session
from kvfast._output cimport Output, output_append, output_text, output_int64
from kvfast._persist cimport begin_write, log_set, log_delete
from kvfast._store cimport store_insert, store_upsert, store_lookup, store_delete, store_count, \
    store_increment, store_memory_bytes, store_prefetch
from kvfast._text cimport IntParse, INT_OK, INT_OUT_OF_RANGE, parse_int64, equals_nocase, secrets_equal


cdef enum:
    MAX_WORDS = 4              # command + two arguments + one to notice extra words
    ECHO_LIMIT = 32            # bytes of an unknown command echoed back in the error
    PREFETCH_MAX_LINE = 64     # longer lines end a prefetch walk (a "set K V" line is at most 47 bytes)


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


cdef inline bint is_command(const Word *word, const char *name) noexcept nogil:
    return equals_nocase(word.start, word.length, name)


cdef int native_answer(ServerContext *context, Session *session,
                       const char *line, size_t length) noexcept nogil:
    """Execute one request line (without its line ending, at most the line limit
    long) and buffer its one-line reply in the session; blank lines get none.
    Returns 0, or -1 if the reply could not be buffered (out of memory)."""
    cdef Word words[MAX_WORDS]
    cdef size_t count = split_words(line, length, words)
    cdef Output *output = &session.output
    cdef int64_t key, value
    cdef int64_t *found
    cdef int result
    if count == 0:
        return 0
    context.counters.commands_processed += 1
    if is_command(&words[0], b"auth"):
        return authenticate(context, session, words, count)
    if not session.authenticated and not is_command(&words[0], b"bye"):
        context.counters.invalid_requests += 1
        return output_text(output, b"Authentication required\n")
    if is_command(&words[0], b"get"):
        if count != 2:
            return invalid(context, output, b"usage: get <key>")
        if not integer_argument(context, output, &words[1], &key, b"key is not an integer", &result):
            return result
        found = store_lookup(&context.store, key)
        if found == NULL:
            context.counters.keyspace_misses += 1
            return output_text(output, b"Key not found\n")
        context.counters.keyspace_hits += 1
        return output_int64(output, found[0], b"\n")

    if is_command(&words[0], b"put"):
        return write_value(context, session, words, count, True)

    if is_command(&words[0], b"set"):
        return write_value(context, session, words, count, False)

    if is_command(&words[0], b"del"):
        if count != 2:
            return invalid(context, output, b"usage: del <key>")
        if not integer_argument(context, output, &words[1], &key, b"key is not an integer", &result):
            return result
        result = begin_write(context)
        if result != 0:
            return refuse_write(output, result)
        if not store_delete(&context.store, key):
            return output_text(output, b"Key not found\n")
        log_delete(context, session, key)
        return output_text(output, b"OK\n")

    if is_command(&words[0], b"incr"):
        if count != 2 and count != 3:
            return invalid(context, output, b"usage: incr <key> [<delta>]")
        if not integer_argument(context, output, &words[1], &key, b"key is not an integer", &result):
            return result
        value = 1
        if count == 3 and not integer_argument(context, output, &words[2], &value, b"delta is not an integer",
                                               &result):
            return result
        result = begin_write(context)
        if result != 0:
            return refuse_write(output, result)
        result = store_increment(&context.store, key, value, &value)
        if result == 1:
            return invalid(context, output, b"increment would overflow")
        if result < 0:
            return output_text(output, b"Error: out of memory\n")
        log_set(context, session, key, value)
        return output_int64(output, value, b"\n")

    if is_command(&words[0], b"bye"):
        if count != 1:
            return invalid(context, output, b"usage: bye")
        session.closing = True
        return output_text(output, b"Goodbye\n")

    if is_command(&words[0], b"stats"):
        if count != 1:
            return invalid(context, output, b"usage: stats")
        return write_stats(context, output)

    return unknown_command(context, output, &words[0])


cdef int authenticate(ServerContext *context, Session *session, const Word *words, size_t count) noexcept nogil:
    """``auth PASSWORD``: ``OK`` (the session may now send anything) or
    ``Invalid password``; without a configured password it is an invalid request."""
    if count != 2:
        return invalid(context, &session.output, b"usage: auth <password>")
    if context.password == NULL:
        return invalid(context, &session.output, b"no password is set")
    if secrets_equal(words[1].start, words[1].length, context.password, context.password_length):
        session.authenticated = True
        return output_text(&session.output, b"OK\n")
    context.counters.auth_failures += 1
    return output_text(&session.output, b"Invalid password\n")


cdef int write_value(ServerContext *context, Session *session, const Word *words, size_t count,
                     bint insert_only) noexcept nogil:
    """``put K V`` (insert_only: an existing key keeps its value) or ``set K V``
    (insert or overwrite). Returns 0, or -1 if out of memory for the reply."""
    cdef Output *output = &session.output
    cdef int64_t key, value
    cdef int result
    if count != 3:
        return invalid(context, output, b"usage: put <key> <value>" if insert_only
                       else b"usage: set <key> <value>")
    if not (integer_argument(context, output, &words[1], &key, b"key is not an integer", &result)
            and integer_argument(context, output, &words[2], &value, b"value is not an integer", &result)):
        return result
    result = begin_write(context)
    if result != 0:
        return refuse_write(output, result)
    if insert_only:
        result = store_insert(&context.store, key, value)
        if result == 0:
            return output_text(output, b"Key already exists\n")
    else:
        result = store_upsert(&context.store, key, value)
    if result < 0:
        return output_text(output, b"Error: out of memory\n")
    log_set(context, session, key, value)
    return output_text(output, b"OK\n")


cdef int refuse_write(Output *output, int error) noexcept nogil:
    """Reply ``Error: persistence failed: <reason>``: the append-only log cannot
    take the write (see _persist.begin_write); 0 or -1 (out of memory)."""
    if output_text(output, b"Error: persistence failed: ") < 0 or output_text(output, strerror(error)) < 0:
        return -1
    return output_text(output, b"\n")


cdef int write_stats(ServerContext *context, Output *output) noexcept nogil:
    """One line of name=value pairs (names as in Redis's INFO); 0 or -1."""
    cdef Counters *counters = &context.counters
    return -1 if (
        output_text(output, b"keys=") < 0
        or output_int64(output, store_count(&context.store), b" connected_clients=") < 0
        or output_int64(output, counters.connected_clients, b" total_connections_received=") < 0
        or output_int64(output, counters.connections_accepted, b" total_commands_processed=") < 0
        or output_int64(output, counters.commands_processed, b" keyspace_hits=") < 0
        or output_int64(output, counters.keyspace_hits, b" keyspace_misses=") < 0
        or output_int64(output, counters.keyspace_misses, b" rejected_connections=") < 0
        or output_int64(output, counters.rejected_connections, b" protected_mode_refusals=") < 0
        or output_int64(output, counters.protected_refusals, b" timed_out_clients=") < 0
        or output_int64(output, counters.timed_out_clients, b" protocol_errors=") < 0
        or output_int64(output, counters.protocol_errors, b" auth_failures=") < 0
        or output_int64(output, counters.auth_failures, b" used_memory=") < 0
        or output_int64(output, store_memory_bytes(&context.store), b"\n") < 0
    ) else 0


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
    context.counters.invalid_requests += 1
    if output_text(output, b"Invalid request: ") < 0 or output_text(output, reason) < 0:
        return -1
    return output_text(output, b"\n")


cdef int native_refuse_long_line(ServerContext *context, Session *session) noexcept nogil:
    """Reply ``Invalid request: line too long`` and mark the session closing."""
    context.counters.protocol_errors += 1
    session.closing = True
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
    context.counters.invalid_requests += 1
    if output_text(output, b"Invalid request: unknown command '") < 0:
        return -1
    return output_append(output, echo, length + 2)
