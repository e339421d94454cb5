# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RESP's generic key commands and keyspace iteration: SCAN, KEYS, TYPE, TOUCH,
RENAME, RENAMENX, COPY, RANDOMKEY, OBJECT and MEMORY USAGE (UNLINK is DEL's
row). Redis 7.0's replies and error texts; keys are int64, matched by MATCH
and KEYS patterns on their canonical decimal text.

Every read and write goes through kvfast/_keyspace.pxd. Walks over the
keyspace are keyspace_scan steps: a hash-valued cursor (see
_store.store_scan), so a full SCAN returns every key present from its start
to its end, whatever resizes happen between calls, and without duplicates.
"""
import os

from libc.stdint cimport int64_t, uint64_t, INT32_MAX, INT32_MIN, UINT64_MAX
from libc.stdlib cimport realloc, free
from libc.string cimport memcmp

from kvfast._clients cimport memory_stats
from kvfast._command cimport Request, Argument, next_argument
from kvfast._context cimport ServerContext, Session
from kvfast._keyspace cimport (
    keyspace_read, keyspace_contains, keyspace_size, keyspace_scan, keyspace_scan_weight, keyspace_scan_span,
    keyspace_rename, keyspace_copy,
)
from kvfast._output cimport Output, output_append, output_text
from kvfast._reply cimport (
    ERR_NOT_INTEGER, ERR_KEY_NOT_INTEGER, ERR_SYNTAX, ERR_OUT_OF_MEMORY, reply_integer, reply_bulk, reply_bulk_text,
    reply_bulk_integer, reply_null, reply_array, reply_error, reply_wrong_arity, reply_unknown_subcommand, parse_keys,
    read_integer,
)
from kvfast._store cimport Slot
from kvfast._text cimport INT_OK, parse_int64, format_int64, equals_nocase


cdef enum:
    SCAN_DEFAULT_COUNT = 10          # Redis's
    SCAN_SLOTS_PER_KEY = 10          # a SCAN call walks at most COUNT * this many slots (Redis: buckets)
    KEY_TEXT_BYTES = 24              # room for an int64 in decimal
    RANDOM_WINDOW_SLOTS = 16         # RANDOMKEY: windows of this many home slots...
    RANDOM_WINDOW_KEYS = 32          # ...accepted with probability keys / this
    RANDOM_PROBES = 64               # ...at most this many, before walking on


# ---- MATCH patterns ---------------------------------------------------------------

cdef inline char pattern_at(const char *pattern, ssize_t length, ssize_t index) noexcept nogil:
    """The pattern's byte at ``index``, or NUL past its end: Redis's patterns
    are NUL-terminated sds strings, and its matcher reads that NUL."""
    return pattern[index] if index < length else 0


cdef bint glob_walk(const char *pattern, ssize_t pattern_length, const char *text, ssize_t text_length,
                    bint *skip_longer_matches) noexcept nogil:
    """Redis 7.0's stringmatchlen (util.c) without nocase, step for step, on
    bytes compared as signed chars as Redis's are (that decides ranges like
    ``[\\x80-9]``): ``*`` any run, ``?`` one byte, ``[...]`` a class (``^``
    negates, ``a-z`` ranges either way round, ``\\`` escapes, an unclosed class
    runs to the pattern's end), ``\\`` escapes one byte. ``skip_longer_matches``
    is its CVE-2022-36021 cut: once the rest after a ``*`` fails at every
    offset, longer matches of earlier stars cannot succeed. The recursion
    depth is bounded by the text's length (every step between stars consumes
    a byte), at most 20 for a key."""
    cdef ssize_t p = 0
    cdef bint negate, matched
    cdef signed char c, start, end, swap
    while pattern_length - p > 0 and text_length > 0:
        c = <signed char>pattern[p]
        if c == c'*':
            while pattern_length - p > 0 and pattern_at(pattern, pattern_length, p + 1) == c'*':
                p += 1
            if pattern_length - p == 1:
                return True
            while text_length > 0:
                if glob_walk(pattern + p + 1, pattern_length - p - 1, text, text_length, skip_longer_matches):
                    return True
                if skip_longer_matches[0]:
                    return False
                text += 1
                text_length -= 1
            skip_longer_matches[0] = True
            return False
        elif c == c'?':
            text += 1
            text_length -= 1
        elif c == c'[':
            p += 1
            negate = pattern_at(pattern, pattern_length, p) == c'^'
            if negate:
                p += 1
            matched = False
            while True:
                if pattern_at(pattern, pattern_length, p) == c'\\' and pattern_length - p >= 2:
                    p += 1
                    if pattern[p] == text[0]:
                        matched = True
                elif pattern_at(pattern, pattern_length, p) == c']':
                    break
                elif pattern_length - p == 0:
                    p -= 1
                    break
                elif pattern_length - p >= 3 and pattern[p + 1] == c'-':
                    start = <signed char>pattern[p]
                    end = <signed char>pattern[p + 2]
                    if start > end:
                        swap = start
                        start = end
                        end = swap
                    p += 2
                    if start <= <signed char>text[0] <= end:
                        matched = True
                elif pattern[p] == text[0]:
                    matched = True
                p += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            text += 1
            text_length -= 1
        else:
            if c == c'\\' and pattern_length - p >= 2:
                p += 1
            if pattern[p] != text[0]:
                return False
            text += 1
            text_length -= 1
        p += 1
        if text_length == 0:
            while pattern_at(pattern, pattern_length, p) == c'*':
                p += 1
            break
    return pattern_length - p == 0 and text_length == 0


cdef bint glob_match(const char *pattern, size_t pattern_length, const char *text,
                     size_t text_length) noexcept nogil:
    """Whether ``text`` matches the glob ``pattern`` as Redis's KEYS and SCAN
    MATCH decide it (see glob_walk)."""
    cdef bint skip_longer_matches = False
    return glob_walk(pattern, <ssize_t>pattern_length, text, <ssize_t>text_length, &skip_longer_matches)


def glob(bytes pattern, bytes text):
    """glob_match for the tests."""
    return glob_match(pattern, len(pattern), text, len(text))


# ---- collecting keys --------------------------------------------------------------

cdef struct KeyCollector:
    int64_t *keys                    # the keys kept (growable), in the order emitted
    size_t length
    size_t capacity
    size_t visited                   # keys emitted, kept or not (what SCAN's COUNT counts)
    const char *pattern              # MATCH / KEYS pattern, or NULL: keep every key...
    size_t pattern_length
    bint keep_none                   # ...or none (SCAN TYPE other than string)
    bint failed                      # out of memory: the reply is an error


cdef void collector_init(KeyCollector *collector) noexcept nogil:
    collector.keys = NULL
    collector.length = collector.capacity = collector.visited = 0
    collector.pattern = NULL
    collector.pattern_length = 0
    collector.keep_none = collector.failed = False


cdef void collect_key(void *target, int64_t key, int64_t value) noexcept nogil:
    """keyspace_scan's emit: count the key, and keep it if it passes the filters."""
    cdef KeyCollector *collector = <KeyCollector *>target
    cdef char text[KEY_TEXT_BYTES]
    cdef size_t length, capacity
    cdef int64_t *grown
    collector.visited += 1
    if collector.keep_none or collector.failed:
        return
    if collector.pattern != NULL:
        length = format_int64(key, text + KEY_TEXT_BYTES)
        if not glob_match(collector.pattern, collector.pattern_length, text + KEY_TEXT_BYTES - length, length):
            return
    if collector.length == collector.capacity:
        capacity = collector.capacity * 2 if collector.capacity else 64
        grown = <int64_t *>realloc(collector.keys, capacity * sizeof(int64_t))
        if grown == NULL:
            collector.failed = True
            return
        collector.keys = grown
        collector.capacity = capacity
    collector.keys[collector.length] = key
    collector.length += 1


cdef int reply_collected(ServerContext *context, Session *session, const KeyCollector *collector) noexcept nogil:
    """The kept keys as an array of bulk strings (or the out-of-memory error)."""
    cdef size_t i
    if collector.failed:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    if reply_array(&session.output, collector.length) < 0:
        return -1
    for i in range(collector.length):
        if reply_bulk_integer(&session.output, collector.keys[i]) < 0:
            return -1
    return 0


cdef void use_pattern(KeyCollector *collector, const Argument *pattern) noexcept nogil:
    """Filter by ``pattern``; ``*`` alone matches everything and is skipped (as Redis does)."""
    if pattern.length == 1 and pattern.start[0] == c'*':
        collector.pattern = NULL
    else:
        collector.pattern = pattern.start
        collector.pattern_length = pattern.length


# ---- argument readers -------------------------------------------------------------

cdef bint parse_cursor(const char *text, size_t length, uint64_t *cursor) noexcept nogil:
    """A SCAN cursor as Redis reads it (strtoul on the NUL-terminated argument,
    refused if it starts with white space, has anything after its digits, or
    overflows): optional sign then decimal digits; ``-n`` is 2^64 - n; an empty
    argument is cursor 0. False if invalid."""
    cdef size_t end = 0, i = 0, first_digit
    cdef bint negative = False
    cdef uint64_t value = 0, digit
    while end < length and text[end] != 0:
        end += 1
    if end == 0:
        cursor[0] = 0
        return True
    if text[0] == c' ' or c'\t' <= text[0] <= c'\r':
        return False
    if text[0] == c'+' or text[0] == c'-':
        negative = text[0] == c'-'
        i = 1
    first_digit = i
    while i < end and c'0' <= text[i] <= c'9':
        digit = <uint64_t>(text[i] - c'0')
        if value > (UINT64_MAX - digit) // 10:
            return False                                    # ERANGE
        value = value * 10 + digit
        i += 1
    if i == first_digit or i != end:
        return False
    cursor[0] = (0 - value) if negative else value
    return True


cdef int reply_cursor(Output *output, uint64_t cursor) noexcept nogil:
    """A cursor as Redis writes it: a bulk string of its unsigned decimal."""
    cdef char digits[KEY_TEXT_BYTES]
    cdef size_t at = KEY_TEXT_BYTES
    while True:
        at -= 1
        digits[at] = <char>(c'0' + cursor % 10)
        cursor //= 10
        if cursor == 0:
            break
    return reply_bulk(output, digits + at, KEY_TEXT_BYTES - at)


cdef bint parse_canonical(const Argument *argument, int64_t *number) noexcept nogil:
    """An option's integer as Redis's string2ll reads it: canonical decimal
    only (no ``+``, no leading zeros, no ``-0``): COUNT, DB, SAMPLES. Keys and
    values accept any decimal spelling; options are compared with Redis's."""
    cdef char digits[KEY_TEXT_BYTES]
    cdef size_t length
    if parse_int64(argument.start, argument.length, number) != INT_OK:
        return False
    length = format_int64(number[0], digits + KEY_TEXT_BYTES)
    return length == argument.length and memcmp(digits + KEY_TEXT_BYTES - length, argument.start, length) == 0


cdef inline bint read_key(ServerContext *context, Session *session, const Request *request, size_t *position,
                          int64_t *key, int *status) noexcept nogil:
    return read_integer(context, &session.output, request, position, key, ERR_KEY_NOT_INTEGER, status)


# ---- SCAN and KEYS ----------------------------------------------------------------

cdef int command_scan(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]: ``[next cursor, keys]``.

    Options as Redis 7.0 parses them (any order, repeated ones override; COUNT
    must be canonical and >= 1; TYPE ``string`` in any case keeps every key,
    another type none, the iteration going on alike). The work is bounded as
    Redis bounds it: steps of keyspace_scan until COUNT keys were visited
    (before MATCH and TYPE filter them, so a call may return fewer, even none,
    with a cursor that is not 0), the walk ends, or COUNT * 10 slots were
    walked (both tables counted while a resize runs), which keeps a call
    short on a sparse table. Each step asks for as many home slots as keys
    are still wanted, so a call walks about COUNT / 0.8 slots of a table in
    its usual fill.
    """
    cdef Output *output = &session.output
    cdef Argument argument, value
    cdef uint64_t cursor
    cdef int64_t count = SCAN_DEFAULT_COUNT
    cdef size_t index = 2, weight, budget, walked = 0, step, allowance
    cdef KeyCollector collector
    cdef int result
    next_argument(request.data, &position, &argument)
    if not parse_cursor(argument.start, argument.length, &cursor):
        return reply_error(context, output, b"-ERR invalid cursor\r\n")
    collector_init(&collector)
    while index < request.argc:
        next_argument(request.data, &position, &argument)
        if index + 1 == request.argc:
            return reply_error(context, output, ERR_SYNTAX)
        next_argument(request.data, &position, &value)
        index += 2
        if equals_nocase(argument.start, argument.length, b"count"):
            if not parse_canonical(&value, &count):
                return reply_error(context, output, ERR_NOT_INTEGER)
            if count < 1:
                return reply_error(context, output, ERR_SYNTAX)
        elif equals_nocase(argument.start, argument.length, b"match"):
            use_pattern(&collector, &value)
        elif equals_nocase(argument.start, argument.length, b"type"):
            collector.keep_none = not equals_nocase(value.start, value.length, b"string")
        else:
            return reply_error(context, output, ERR_SYNTAX)
    weight = keyspace_scan_weight(context)
    budget = <size_t>count * SCAN_SLOTS_PER_KEY if <size_t>count <= (<size_t>-1) // SCAN_SLOTS_PER_KEY \
        else <size_t>-1
    while True:
        step = <size_t>count - collector.visited
        allowance = (budget - walked) // weight
        if step > allowance:
            step = allowance if allowance > 0 else 1
        cursor = keyspace_scan(context, cursor, step, collect_key, &collector)
        walked = budget if step > (budget - walked) // weight else walked + step * weight
        if cursor == 0 or collector.visited >= <size_t>count or walked >= budget or collector.failed:
            break
    if collector.failed:
        result = reply_error(context, output, ERR_OUT_OF_MEMORY)
    elif reply_array(output, 2) < 0 or reply_cursor(output, cursor) < 0:
        result = -1
    else:
        result = reply_collected(context, session, &collector)
    free(collector.keys)
    return result


cdef int command_keys(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """KEYS pattern: every key matching, in one reply. O(N) in the number of
    keys, as in Redis: one walk over the whole keyspace, blocking the server
    meanwhile (SCAN is the incremental way)."""
    cdef Argument pattern
    cdef KeyCollector collector
    cdef int result
    next_argument(request.data, &position, &pattern)
    collector_init(&collector)
    use_pattern(&collector, &pattern)
    keyspace_scan(context, 0, <size_t>-1, collect_key, &collector)
    result = reply_collected(context, session, &collector)
    free(collector.keys)
    return result


# ---- one key at a time --------------------------------------------------------------

cdef int command_type(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """TYPE key: ``+string`` (every value is an integer string) or ``+none``."""
    cdef int64_t key
    cdef int status
    if not read_key(context, session, request, &position, &key, &status):
        return status
    return output_text(&session.output, b"+none\r\n" if keyspace_read(context, key) == NULL else b"+string\r\n")


cdef int command_touch(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """TOUCH key...: how many of the keys exist (repeats counted). kvfast keeps
    no access time, so touching changes nothing; a non-integer key fails the
    whole command (as EXISTS)."""
    cdef Argument argument
    cdef int64_t key = 0, count = 0
    cdef int checked = parse_keys(context, &session.output, request, position)
    if checked != 0:
        return -1 if checked < 0 else 0
    while position < request.length:
        next_argument(request.data, &position, &argument)
        parse_int64(argument.start, argument.length, &key)
        count += keyspace_read(context, key) != NULL
    return reply_integer(&session.output, count)


cdef int command_rename(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """RENAME key newkey: +OK, or ``-ERR no such key``; RENAME k k of a present key is +OK."""
    return rename_generic(context, session, request, position, False)


cdef int command_renamenx(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil:
    """RENAMENX key newkey: :1 if renamed, :0 if newkey exists (or is key), ``-ERR no such key``."""
    return rename_generic(context, session, request, position, True)


cdef int rename_generic(ServerContext *context, Session *session, const Request *request,
                        size_t position, bint only_if_absent) noexcept nogil:
    cdef int64_t source, destination
    cdef int result, status
    if not (read_key(context, session, request, &position, &source, &status)
            and read_key(context, session, request, &position, &destination, &status)):
        return status
    result = keyspace_rename(context, session, source, destination, only_if_absent)
    if result == -2:
        return reply_error(context, &session.output, b"-ERR no such key\r\n")
    if result < 0:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    if only_if_absent:
        return reply_integer(&session.output, result)
    return output_text(&session.output, b"+OK\r\n")


cdef int command_copy(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """COPY source destination [DB n] [REPLACE]: :1 if copied, :0 if the source
    is absent or the destination exists (without REPLACE). One database:
    ``DB 0`` is that one (as SELECT 0), another index is Redis's ``-ERR DB index
    is out of range`` (what Redis says beyond its ``databases``)."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int64_t source, destination, database
    cdef bint replace = False
    cdef size_t index = 3
    cdef int result, status
    if not (read_key(context, session, request, &position, &source, &status)
            and read_key(context, session, request, &position, &destination, &status)):
        return status
    while index < request.argc:
        next_argument(request.data, &position, &argument)
        index += 1
        if equals_nocase(argument.start, argument.length, b"replace"):
            replace = True
        elif equals_nocase(argument.start, argument.length, b"db") and index < request.argc:
            next_argument(request.data, &position, &argument)
            index += 1
            if not parse_canonical(&argument, &database) or not INT32_MIN <= database <= INT32_MAX:
                return reply_error(context, output, ERR_NOT_INTEGER)
            if database != 0:
                return reply_error(context, output, b"-ERR DB index is out of range\r\n")
        else:
            return reply_error(context, output, ERR_SYNTAX)
    if source == destination:
        return reply_error(context, output, b"-ERR source and destination objects are the same\r\n")
    result = keyspace_copy(context, session, source, destination, replace)
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_integer(output, result)


# ---- RANDOMKEY ----------------------------------------------------------------------

cdef extern from *:
    """
    /* The cursor where home slot `slot` of a walk over `span` home slots
       begins: ceil(slot * 2^64 / span), as _store.pyx's first_hash_of_slot. */
    static inline uint64_t kvfast_slot_cursor(size_t slot, size_t span) {
        return (uint64_t)((((unsigned __int128)slot << 64) + span - 1) / span);
    }
    """
    uint64_t slot_cursor "kvfast_slot_cursor" (size_t slot, size_t span) nogil


cdef uint64_t random_state = int.from_bytes(os.urandom(8), "little") | 1


cdef inline uint64_t next_random() noexcept nogil:
    """xorshift64*: RANDOMKEY's choices (not for secrets)."""
    global random_state
    random_state ^= random_state >> 12
    random_state ^= random_state << 25
    random_state ^= random_state >> 27
    return random_state * 0x2545F4914F6CDD1DULL


cdef struct KeyPicker:
    size_t seen                      # keys emitted so far
    int64_t chosen                   # one of them, each equally likely (reservoir sampling)


cdef void pick_key(void *target, int64_t key, int64_t value) noexcept nogil:
    cdef KeyPicker *picker = <KeyPicker *>target
    picker.seen += 1
    if next_random() % picker.seen == 0:
        picker.chosen = key


cdef int command_randomkey(ServerContext *context, Session *session, const Request *request,
                           size_t position) noexcept nogil:
    """RANDOMKEY: a random key (bulk), or null when there is none.

    Rejection sampling over windows of RANDOM_WINDOW_SLOTS home slots: a
    window drawn uniformly, holding ``n`` keys, is accepted with probability
    n / RANDOM_WINDOW_KEYS, then one of its keys is drawn uniformly; so every
    key has the same chance, 1 / (windows * RANDOM_WINDOW_KEYS), exactly
    while no window holds more than RANDOM_WINDOW_KEYS keys (a fuller window
    is always accepted: its keys come up a little less often). About 2.5
    windows at the table's usual fill. Bounded work: after RANDOM_PROBES
    rejected windows (a very sparse table) it walks on from the last one with
    doubling steps and takes a key of the first step that finds any (one is
    present), less uniform but never unbounded in practice; a table of one
    window is walked whole.
    """
    cdef KeyPicker picker
    cdef size_t span = keyspace_scan_span(context), windows, _attempt, step = RANDOM_WINDOW_SLOTS
    cdef uint64_t cursor = 0
    if keyspace_size(context) == 0:
        return reply_null(session)
    windows = (span + RANDOM_WINDOW_SLOTS - 1) // RANDOM_WINDOW_SLOTS
    for _attempt in range(<size_t>RANDOM_PROBES if windows > 1 else 0):
        picker.seen = 0
        cursor = slot_cursor((next_random() % windows) * RANDOM_WINDOW_SLOTS, span)
        cursor = keyspace_scan(context, cursor, RANDOM_WINDOW_SLOTS, pick_key, &picker)
        if picker.seen > 0 and (picker.seen >= RANDOM_WINDOW_KEYS
                                or next_random() % RANDOM_WINDOW_KEYS < picker.seen):
            return reply_bulk_integer(&session.output, picker.chosen)
    picker.seen = 0
    while picker.seen == 0:
        cursor = keyspace_scan(context, cursor, step, pick_key, &picker)
        if step < (<size_t>1 << 40):
            step *= 2
    return reply_bulk_integer(&session.output, picker.chosen)


# ---- OBJECT and MEMORY --------------------------------------------------------------

cdef const char *OBJECT_HELP[15]
OBJECT_HELP[:] = [
    b"OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"ENCODING <key>",
    b"    Return the kind of internal representation used in order to store the value",
    b"    associated with a <key>.",
    b"FREQ <key>",
    b"    Return the access frequency index of the <key>. The returned integer is",
    b"    proportional to the logarithm of the recent access frequency of the key.",
    b"IDLETIME <key>",
    b"    Return the idle time of the <key>, that is the approximated number of",
    b"    seconds elapsed since the last access to the key.",
    b"REFCOUNT <key>",
    b"    Return the number of references of the value associated with the specified",
    b"    <key>.",
    b"HELP",
    b"    Prints this help.",
]

cdef const char *MEMORY_HELP[6]
MEMORY_HELP[:] = [
    b"MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"USAGE <key> [SAMPLES <count>]",
    b"    Return memory in bytes used by <key> and its value. Nested values are",
    b"    sampled up to <count> times (default: 5, 0 means sample all).",
    b"HELP",
    b"    Prints this help.",
]


cdef int reply_help(Output *output, const char **lines, size_t count) noexcept nogil:
    """A HELP reply as Redis's addReplyHelp: an array of status lines."""
    cdef size_t i
    if reply_array(output, count) < 0:
        return -1
    for i in range(count):
        if output_append(output, b"+", 1) < 0 or output_text(output, lines[i]) < 0 \
                or output_append(output, b"\r\n", 2) < 0:
            return -1
    return 0


cdef enum ObjectQuery:
    OBJECT_ENCODING
    OBJECT_FREQ
    OBJECT_IDLETIME
    OBJECT_REFCOUNT
    OBJECT_UNKNOWN


cdef int command_object(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key, OBJECT HELP.

    As far as an int64 table can answer: ENCODING is ``int`` (Redis's for every
    integer string); FREQ is Redis's error when no LFU policy is selected (none
    is: kvfast evicts nothing); IDLETIME is 0 (kvfast keeps no access time);
    REFCOUNT is 1 (each value is stored once; Redis says 2147483647 for its
    shared integers 0..9999). An absent key is null first, as in Redis.
    """
    cdef Output *output = &session.output
    cdef Argument subcommand
    cdef ObjectQuery query = OBJECT_UNKNOWN
    cdef const char *name = NULL
    cdef int64_t key
    cdef int status
    next_argument(request.data, &position, &subcommand)
    if equals_nocase(subcommand.start, subcommand.length, b"help"):
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"object|help")
        return reply_help(output, OBJECT_HELP, 15)
    if equals_nocase(subcommand.start, subcommand.length, b"encoding"):
        query = OBJECT_ENCODING
        name = b"object|encoding"
    elif equals_nocase(subcommand.start, subcommand.length, b"freq"):
        query = OBJECT_FREQ
        name = b"object|freq"
    elif equals_nocase(subcommand.start, subcommand.length, b"idletime"):
        query = OBJECT_IDLETIME
        name = b"object|idletime"
    elif equals_nocase(subcommand.start, subcommand.length, b"refcount"):
        query = OBJECT_REFCOUNT
        name = b"object|refcount"
    else:
        return reply_unknown_subcommand(context, output, &subcommand, b"OBJECT")
    if request.argc != 3:
        return reply_wrong_arity(context, output, name)
    if not read_key(context, session, request, &position, &key, &status):
        return status
    if keyspace_read(context, key) == NULL:
        return reply_null(session)
    if query == OBJECT_ENCODING:
        return reply_bulk_text(output, b"int")
    if query == OBJECT_FREQ:
        return reply_error(context, output,
                           b"-ERR An LFU maxmemory policy is not selected, access frequency not tracked. "
                           b"Please note that when switching between policies at runtime LRU and LFU data "
                           b"will take some time to adjust.\r\n")
    return reply_integer(output, 0 if query == OBJECT_IDLETIME else 1)


cdef int command_memory(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """MEMORY USAGE key [SAMPLES n], MEMORY HELP.

    USAGE is the bytes the key costs in the table: one slot (a key and its
    value, 16 bytes). The table's free slots, shared by all keys, are in INFO
    memory instead. SAMPLES is checked as Redis checks it (canonical, >= 0)
    and has nothing to sample. Options are checked before the key is looked
    up; an absent key is null. MEMORY STATS: see _clients.memory_stats.
    Redis's other subcommands (DOCTOR, ...) are unknown subcommands."""
    cdef Output *output = &session.output
    cdef Argument subcommand, argument
    cdef int64_t key, samples
    cdef size_t index = 3
    cdef int status
    next_argument(request.data, &position, &subcommand)
    if equals_nocase(subcommand.start, subcommand.length, b"help"):
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"memory|help")
        return reply_help(output, MEMORY_HELP, 6)
    if equals_nocase(subcommand.start, subcommand.length, b"stats"):
        return memory_stats(context, session) if request.argc == 2 \
            else reply_wrong_arity(context, output, b"memory|stats")
    if not equals_nocase(subcommand.start, subcommand.length, b"usage"):
        return reply_unknown_subcommand(context, output, &subcommand, b"MEMORY")
    if request.argc < 3:
        return reply_wrong_arity(context, output, b"memory|usage")
    if not read_key(context, session, request, &position, &key, &status):
        return status
    while index < request.argc:
        next_argument(request.data, &position, &argument)
        index += 1
        if not (equals_nocase(argument.start, argument.length, b"samples") and index < request.argc):
            return reply_error(context, output, ERR_SYNTAX)
        next_argument(request.data, &position, &argument)
        index += 1
        if not parse_canonical(&argument, &samples):
            return reply_error(context, output, ERR_NOT_INTEGER)
        if samples < 0:
            return reply_error(context, output, ERR_SYNTAX)
    if not keyspace_contains(context, key):
        return reply_null(session)
    return reply_integer(output, <int64_t>sizeof(Slot))
