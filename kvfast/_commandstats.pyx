# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-command statistics, error kinds and the slow log, and what shows them:
INFO's cpu, commandstats, errorstats and latencystats sections, LATENCY
HISTOGRAM, SLOWLOG, CONFIG RESETSTAT (stats_reset).

Timing costs no clock read per request. The loop opens a *batch* around the
requests of each read of a connection (stats_batch_begin/_end: two clock
reads per read). A command that names exactly one key (GET, SET, INCR...: O(1)
on an int64 store) is only counted (stats_count_amortized); at the batch's end
the time the batch took, less that of the commands timed one by one, is shared
equally among them. Every other command (keyless or multi-key: KEYS, SCAN,
MGET, DEL, FLUSHALL, INFO, EXEC, DEBUG SLEEP...), any command inside EXEC, and
every command while slowlog-log-slower-than is 0, is timed alone (two clock
reads around its proc), and only those can enter the slow log. A request that
is alone in its read (no pipelining) is timed exactly either way.
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy, memset, strlen, strncmp
from libc.time cimport time

from kvfast._command cimport Request, Argument, next_argument, RespCommand
from kvfast._context cimport (
    ServerContext, Session, CommandStats, ErrorStat, SlowlogEntry, LATENCY_BUCKETS, ERROR_KINDS, ERROR_NAME_BYTES,
    ADDRESS_BYTES, COUNTER_COMMANDS_PROCESSED, COUNTER_CONNECTIONS_RECEIVED, COUNTER_ERROR_REPLIES,
    COUNTER_KEYSPACE_HITS, COUNTER_KEYSPACE_MISSES,
)
from kvfast._output cimport Output, output_append, output_text, output_int64
from kvfast._reply cimport (
    reply_integer, reply_bulk, reply_bulk_text, reply_array, reply_map, reply_error, reply_wrong_arity,
    reply_unknown_subcommand,
)
from kvfast._text cimport INT_OK, parse_int64, equals_nocase


cdef extern from "sys/resource.h" nogil:
    struct timeval:
        long tv_sec
        long tv_usec

    struct rusage:
        timeval ru_utime
        timeval ru_stime

    enum:
        RUSAGE_SELF
        RUSAGE_CHILDREN
        RUSAGE_THREAD

    int getrusage(int who, rusage *usage)


cdef enum:
    SLOWLOG_MAX_ARGUMENTS = 32          # as Redis's SLOWLOG_ENTRY_MAX_ARGC
    SLOWLOG_MAX_STRING = 128            # as Redis's SLOWLOG_ENTRY_MAX_STRING
    SLOWLOG_DEFAULT_COUNT = 10          # SLOWLOG GET without a count
    HISTOGRAM_FIRST_NS = 1024           # LATENCY HISTOGRAM's first bucket, as Redis's (1 us)


# ---- recording ---------------------------------------------------------------------

cdef int stats_init(ServerContext *context, const RespCommand *commands, size_t count) noexcept nogil:
    """One CommandStats per row of the table; 0, or -1 (out of memory)."""
    cdef size_t i
    context.command_stats = <CommandStats *>calloc(count, sizeof(CommandStats))
    if context.command_stats == NULL:
        return -1
    context.command_count = count
    for i in range(count):
        context.command_stats[i].name = commands[i].name
    return 0


cdef void stats_free(ServerContext *context) noexcept nogil:
    free(context.command_stats)
    context.command_stats = NULL
    context.command_count = 0
    slowlog_free(context)


cdef void stats_record(ServerContext *context, CommandStats *stats, int64_t ns) noexcept nogil:
    """One call of ``ns`` nanoseconds."""
    if ns < 0:
        ns = 0
    stats.calls += 1
    stats.nanoseconds += <uint64_t>ns
    stats.histogram[latency_bucket(<uint64_t>ns)] += 1


cdef void stats_batch_end(ServerContext *context) noexcept nogil:
    """Close the batch: its time less the commands timed alone, shared among
    the amortized ones, each row getting its calls and histogram counts."""
    cdef int64_t elapsed, share
    cdef size_t i
    cdef CommandStats *stats
    cdef int bucket
    if context.batch_started_ns == 0:
        return
    if context.batch_row_count > 0:
        elapsed = monotonic_ns() - context.batch_started_ns - context.batch_exact_ns
        share = elapsed // <int64_t>context.batch_amortized if elapsed > 0 and context.batch_amortized > 0 else 0
        bucket = latency_bucket(<uint64_t>share)
        for i in range(context.batch_row_count):
            stats = context.batch_rows[i]
            stats.calls += stats.pending
            stats.nanoseconds += stats.pending * <uint64_t>share
            stats.histogram[bucket] += stats.pending
            stats.pending = 0
        context.batch_row_count = 0
    context.batch_started_ns = 0


cdef void stats_count_error(ServerContext *context, const char *name, size_t length) noexcept nogil:
    """Count one error reply of kind ``name`` (its first word) in errorstats."""
    cdef size_t i
    cdef ErrorStat *error
    if length >= <size_t>ERROR_NAME_BYTES:
        length = <size_t>ERROR_NAME_BYTES - 1
    for i in range(context.error_kinds):
        error = &context.errors[i]
        if strlen(error.name) == length and strncmp(error.name, name, length) == 0:
            error.count += 1
            return
    if context.error_kinds == <size_t>ERROR_KINDS:
        return                  # as Redis: no new kinds past the limit
    error = &context.errors[context.error_kinds]
    context.error_kinds += 1
    memcpy(error.name, name, length)
    error.name[length] = 0
    error.count = 1


cdef void stats_note_error(ServerContext *context, Output *output, size_t offset) noexcept nogil:
    """Count the error reply that starts ``offset`` pending bytes into ``output``
    (a reply that is not an error, EXEC's array, is not counted here)."""
    cdef const char *reply = output.data + output.start + offset
    cdef size_t available = output.end - output.start - offset, length = 0
    if available < 2 or reply[0] != c'-':
        return
    reply += 1
    available -= 1
    while length < available and reply[length] != c' ' and reply[length] != c'\r':
        length += 1
    stats_count_error(context, reply, length)


cdef void stats_reset(ServerContext *context) noexcept nogil:
    """CONFIG RESETSTAT: every command's statistics, the error kinds, and the
    counters Redis resets (commands processed, connections received, error
    replies, keyspace hits and misses)."""
    cdef size_t i
    cdef const char *name
    context.counters[<int>COUNTER_COMMANDS_PROCESSED] = context.counters[<int>COUNTER_CONNECTIONS_RECEIVED] = 0
    context.counters[<int>COUNTER_ERROR_REPLIES] = 0
    context.counters[<int>COUNTER_KEYSPACE_HITS] = context.counters[<int>COUNTER_KEYSPACE_MISSES] = 0
    stats_batch_end(context)
    for i in range(context.command_count):
        name = context.command_stats[i].name
        memset(&context.command_stats[i], 0, sizeof(CommandStats))
        context.command_stats[i].name = name
    context.error_kinds = 0


cdef uint64_t latency_bucket_upper_ns(int bucket) noexcept nogil:
    """The largest duration bucket ``bucket`` holds (the inverse of latency_bucket)."""
    cdef int exponent, sub
    if bucket < 8:
        return <uint64_t>bucket
    exponent = bucket // 8 + 2
    sub = bucket % 8
    return ((<uint64_t>(8 + sub + 1)) << (exponent - 3)) - 1


cdef uint64_t latency_percentile_ns(const CommandStats *stats, double fraction) noexcept nogil:
    """The upper bound of the bucket holding the ``fraction`` (0-1) percentile."""
    cdef uint64_t total = 0, seen = 0, wanted
    cdef int bucket
    for bucket in range(<int>LATENCY_BUCKETS):
        total += stats.histogram[bucket]
    if total == 0:
        return 0
    wanted = <uint64_t>(fraction * <double>total + 0.5)
    if wanted < 1:
        wanted = 1
    if wanted > total:
        wanted = total
    for bucket in range(<int>LATENCY_BUCKETS):
        seen += stats.histogram[bucket]
        if seen >= wanted:
            return latency_bucket_upper_ns(bucket)
    return latency_bucket_upper_ns(<int>LATENCY_BUCKETS - 1)


# ---- the slow log --------------------------------------------------------------------

cdef bint redacted(const Request *request, size_t index, Redaction redaction, size_t *hello_auth_at) noexcept nogil:
    """Whether argument ``index`` (0: the name) is shown as "(redacted)".
    ``hello_auth_at`` is scratch the caller zeroes: the index of HELLO's AUTH."""
    cdef Argument argument
    cdef size_t position = request.arguments_at, i
    if redaction == REDACT_NONE or index == 0:
        return False
    if redaction == REDACT_ALL:
        return True
    if hello_auth_at[0] == 0:
        hello_auth_at[0] = <size_t>-1
        for i in range(request.argc):
            next_argument(request.data, &position, &argument)
            if i >= 2 and equals_nocase(argument.start, argument.length, b"auth"):
                hello_auth_at[0] = i
                break
    return hello_auth_at[0] != <size_t>-1 and hello_auth_at[0] < index <= hello_auth_at[0] + 2


cdef void slowlog_consider(ServerContext *context, Session *session, const Request *request,
                           int64_t ns, Redaction redaction) noexcept nogil:
    """Add the request to the slow log if it took at least slowlog-log-slower-than
    microseconds (and the log is on), trimming its arguments as Redis does;
    the oldest entries beyond slowlog-max-len are dropped."""
    cdef int64_t threshold = context.limits.slowlog_log_slower_than
    cdef SlowlogEntry *entry
    cdef SlowlogEntry *oldest
    cdef Output arguments
    cdef Argument argument
    cdef size_t position = request.arguments_at, shown, i, hello_auth_at = 0
    cdef char note[64]
    cdef int note_length
    if threshold < 0 or ns // 1000 < threshold or context.limits.slowlog_max_len == 0:
        return
    entry = <SlowlogEntry *>calloc(1, sizeof(SlowlogEntry))
    if entry == NULL:
        return
    arguments.data = NULL
    arguments.start = arguments.end = arguments.capacity = 0
    shown = request.argc if request.argc <= SLOWLOG_MAX_ARGUMENTS else SLOWLOG_MAX_ARGUMENTS
    if reply_array(&arguments, shown) < 0:
        free(entry)
        return
    for i in range(shown):
        if i == SLOWLOG_MAX_ARGUMENTS - 1 and request.argc > SLOWLOG_MAX_ARGUMENTS:
            note_length = snprintf(note, sizeof(note), b"... (%d more arguments)",
                                   <int>(request.argc - SLOWLOG_MAX_ARGUMENTS + 1))
            reply_bulk(&arguments, note, <size_t>note_length)
            break
        next_argument(request.data, &position, &argument)
        if redacted(request, i, redaction, &hello_auth_at):
            reply_bulk(&arguments, b"(redacted)", 10)
        elif argument.length > SLOWLOG_MAX_STRING:
            note_length = snprintf(note, sizeof(note), b"... (%lu more bytes)",
                                   <unsigned long>(argument.length - SLOWLOG_MAX_STRING))
            if output_append(&arguments, b"$", 1) < 0 \
                    or output_int64(&arguments, <int64_t>(SLOWLOG_MAX_STRING + note_length), b"\r\n") < 0 \
                    or output_append(&arguments, argument.start, SLOWLOG_MAX_STRING) < 0 \
                    or output_append(&arguments, note, <size_t>note_length) < 0 \
                    or output_append(&arguments, b"\r\n", 2) < 0:
                break
        else:
            reply_bulk(&arguments, argument.start, argument.length)
    entry.arguments = arguments.data
    entry.arguments_length = arguments.end
    entry.id = context.slowlog_next_id
    context.slowlog_next_id += 1
    entry.timestamp = time(NULL)
    entry.duration_us = ns // 1000
    memcpy(entry.address, session.address, <size_t>ADDRESS_BYTES)
    entry.name = copy_text(session.name) if session.name != NULL else copy_text(b"")
    entry.older = context.slowlog_newest
    if context.slowlog_newest != NULL:
        context.slowlog_newest.newer = entry
    else:
        context.slowlog_oldest = entry
    context.slowlog_newest = entry
    context.slowlog_length += 1
    while context.slowlog_length > context.limits.slowlog_max_len:
        oldest = context.slowlog_oldest
        context.slowlog_oldest = oldest.newer
        context.slowlog_oldest.older = NULL
        free_entry(oldest)
        context.slowlog_length -= 1


cdef char *copy_text(const char *text) noexcept nogil:
    cdef size_t length = strlen(text)
    cdef char *copy = <char *>malloc(length + 1)
    if copy != NULL:
        memcpy(copy, text, length + 1)
    return copy


cdef void free_entry(SlowlogEntry *entry) noexcept nogil:
    free(entry.arguments)
    free(entry.name)
    free(entry)


cdef void slowlog_free(ServerContext *context) noexcept nogil:
    """SLOWLOG RESET: drop every entry (ids go on from where they were)."""
    cdef SlowlogEntry *entry = context.slowlog_newest
    cdef SlowlogEntry *older
    while entry != NULL:
        older = entry.older
        free_entry(entry)
        entry = older
    context.slowlog_newest = context.slowlog_oldest = NULL
    context.slowlog_length = 0


cdef const char *SLOWLOG_HELP[11]
SLOWLOG_HELP[:] = [
    b"SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"GET [<count>]",
    b"    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    b"    Entries are made of:",
    b"    id, timestamp, time in microseconds, arguments array, client IP and port,",
    b"    client name",
    b"LEN",
    b"    Return the length of the slowlog.",
    b"RESET",
    b"    Reset the slowlog.",
    b"HELP",
]
cdef const char *SLOWLOG_HELP_LAST = b"    Prints this help."


cdef int reply_status_lines(Session *session, const char **lines, size_t count, const char *last) noexcept nogil:
    """A HELP reply: an array of status lines."""
    cdef size_t i
    if reply_array(&session.output, count + 1) < 0:
        return -1
    for i in range(count):
        if output_append(&session.output, b"+", 1) < 0 or output_text(&session.output, lines[i]) < 0 \
                or output_append(&session.output, b"\r\n", 2) < 0:
            return -1
    if output_append(&session.output, b"+", 1) < 0 or output_text(&session.output, last) < 0:
        return -1
    return output_append(&session.output, b"\r\n", 2)


cdef int command_slowlog(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """SLOWLOG GET [count] | LEN | RESET | HELP, as Redis 7: each entry is
    [id, timestamp, microseconds, [arguments...], client address, client name],
    newest first; count -1 means all."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int64_t count = SLOWLOG_DEFAULT_COUNT
    cdef SlowlogEntry *entry
    cdef size_t shown, _i
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"help") and request.argc == 2:
        return reply_status_lines(session, SLOWLOG_HELP, 11, SLOWLOG_HELP_LAST)
    if equals_nocase(argument.start, argument.length, b"len") and request.argc == 2:
        return reply_integer(output, <int64_t>context.slowlog_length)
    if equals_nocase(argument.start, argument.length, b"reset") and request.argc == 2:
        slowlog_free(context)
        return output_text(output, b"+OK\r\n")
    if equals_nocase(argument.start, argument.length, b"get") and request.argc > 3:
        context.counters[<int>COUNTER_ERROR_REPLIES] += 1
        if output_text(output, b"-ERR unknown subcommand or wrong number of arguments for '") < 0 \
                or output_append(output, argument.start, argument.length if argument.length < 64 else 64) < 0:
            return -1
        return output_text(output, b"'. Try SLOWLOG HELP.\r\n")
    if equals_nocase(argument.start, argument.length, b"get"):
        if request.argc == 3:
            next_argument(request.data, &position, &argument)
            if parse_int64(argument.start, argument.length, &count) != INT_OK or count < -1:
                return reply_error(context, output, b"-ERR count should be greater than or equal to -1\r\n")
        shown = context.slowlog_length if count == -1 or <uint64_t>count > context.slowlog_length \
            else <size_t>count
        if reply_array(output, shown) < 0:
            return -1
        entry = context.slowlog_newest
        for _i in range(shown):
            if reply_array(output, 6) < 0 or reply_integer(output, entry.id) < 0 \
                    or reply_integer(output, entry.timestamp) < 0 or reply_integer(output, entry.duration_us) < 0 \
                    or output_append(output, entry.arguments, entry.arguments_length) < 0 \
                    or reply_bulk_text(output, entry.address) < 0 \
                    or reply_bulk_text(output, entry.name) < 0:
                return -1
            entry = entry.older
        return 0
    if equals_nocase(argument.start, argument.length, b"get") \
            or equals_nocase(argument.start, argument.length, b"len") \
            or equals_nocase(argument.start, argument.length, b"reset") \
            or equals_nocase(argument.start, argument.length, b"help"):
        return wrong_subcommand_arity(context, output, b"slowlog|", &argument)
    return reply_unknown_subcommand(context, output, &argument, b"SLOWLOG")


cdef int wrong_subcommand_arity(ServerContext *context, Output *output, const char *container,
                                const Argument *argument) noexcept nogil:
    """``-ERR wrong number of arguments for 'slowlog|len' command`` (the name in lower case)."""
    cdef char name[64]
    cdef size_t length = strlen(container), i
    memcpy(name, container, length)
    for i in range(argument.length if argument.length < 32 else 32):
        name[length] = <char>(argument.start[i] | 0x20) if c'A' <= argument.start[i] <= c'Z' else argument.start[i]
        length += 1
    name[length] = 0
    return reply_wrong_arity(context, output, name)


# ---- LATENCY -------------------------------------------------------------------------

cdef const char *LATENCY_HELP[16]
LATENCY_HELP[:] = [
    b"LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"DOCTOR",
    b"    Return a human readable latency analysis report.",
    b"GRAPH <event>",
    b"    Return an ASCII latency graph for the <event> class.",
    b"HISTORY <event>",
    b"    Return time-latency samples for the <event> class.",
    b"LATEST",
    b"    Return the latest latency samples for all events.",
    b"RESET [<event> ...]",
    b"    Reset latency data of one or more <event> classes.",
    b"    (default: reset all data for all event classes)",
    b"HISTOGRAM [COMMAND ...]",
    b"    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
    b"    If no commands are specified then all histograms are replied.",
    b"HELP",
]
cdef const char *LATENCY_HELP_LAST = b"    Prints this help."


cdef int command_latency(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """LATENCY HISTOGRAM [command...] (Redis 7's shape: a map of command name to
    {calls, histogram_usec: {bucket upper bound in us: cumulative count}} over
    power-of-two buckets from 1 us); LATEST and HISTORY answer an empty array
    and RESET 0, as Redis's with its latency monitor off (kvfast has none)."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef size_t i, count = 0, start
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"histogram"):
        start = position
        for i in range(context.command_count):
            if histogram_wanted(context, request, start, i):
                count += 1
        if reply_map(session, count) < 0:
            return -1
        for i in range(context.command_count):
            if histogram_wanted(context, request, start, i) \
                    and reply_histogram(session, &context.command_stats[i]) < 0:
                return -1
        return 0
    if equals_nocase(argument.start, argument.length, b"latest") and request.argc == 2:
        return reply_array(output, 0)
    if equals_nocase(argument.start, argument.length, b"history") and request.argc == 3:
        return reply_array(output, 0)
    if equals_nocase(argument.start, argument.length, b"reset"):
        return reply_integer(output, 0)
    if equals_nocase(argument.start, argument.length, b"help") and request.argc == 2:
        return reply_status_lines(session, LATENCY_HELP, 16, LATENCY_HELP_LAST)
    if equals_nocase(argument.start, argument.length, b"latest") \
            or equals_nocase(argument.start, argument.length, b"history") \
            or equals_nocase(argument.start, argument.length, b"help"):
        return wrong_subcommand_arity(context, output, b"latency|", &argument)
    return reply_unknown_subcommand(context, output, &argument, b"LATENCY")


cdef bint histogram_wanted(ServerContext *context, const Request *request, size_t position,
                           size_t row) noexcept nogil:
    """Whether LATENCY HISTOGRAM shows this row: it has calls, and it is named
    (or no command is named)."""
    cdef Argument argument
    cdef const CommandStats *stats = &context.command_stats[row]
    if stats.calls == 0:
        return False
    if position >= request.length:
        return True
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, stats.name):
            return True
    return False


cdef int reply_histogram(Session *session, const CommandStats *stats) noexcept nogil:
    """One command's entry: name => {calls, histogram_usec}."""
    cdef Output *output = &session.output
    cdef uint64_t cumulative = 0, reported = 0, limit = HISTOGRAM_FIRST_NS
    cdef size_t buckets = 0
    cdef int bucket, pass_number
    if reply_bulk_text(output, stats.name) < 0 or reply_map(session, 2) < 0 \
            or reply_bulk_text(output, b"calls") < 0 or reply_integer(output, <int64_t>stats.calls) < 0 \
            or reply_bulk_text(output, b"histogram_usec") < 0:
        return -1
    for pass_number in range(2):        # count the buckets shown, then show them
        cumulative = reported = 0
        limit = HISTOGRAM_FIRST_NS
        bucket = 0
        while reported < stats.calls and bucket < <int>LATENCY_BUCKETS:
            while bucket < <int>LATENCY_BUCKETS and latency_bucket_upper_ns(bucket) < limit:
                cumulative += stats.histogram[bucket]
                bucket += 1
            if cumulative > reported:
                if pass_number == 0:
                    buckets += 1
                elif reply_integer(output, <int64_t>((limit - 1) // 1000)) < 0 \
                        or reply_integer(output, <int64_t>cumulative) < 0:
                    return -1
                reported = cumulative
            limit *= 2
        if pass_number == 0 and reply_map(session, buckets) < 0:
            return -1
    return 0


# ---- INFO sections ---------------------------------------------------------------------

cdef int append_format_double(Output *text, const char *format, double value) noexcept nogil:
    cdef char number[64]
    cdef int length = snprintf(number, sizeof(number), format, value)
    return output_append(text, number, <size_t>length)


cdef int append_rusage(Output *text, const char *prefix, int who, const char *suffix) noexcept nogil:
    cdef rusage usage
    memset(&usage, 0, sizeof(usage))
    getrusage(who, &usage)
    return -1 if (
        output_text(text, b"used_cpu_sys") < 0 or output_text(text, prefix) < 0
        or append_format_double(text, b":%.6f\r\n", usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6) < 0
        or output_text(text, b"used_cpu_user") < 0 or output_text(text, prefix) < 0
        or append_format_double(text, b":%.6f\r\n", usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6) < 0
    ) else 0


cdef int write_cpu_section(ServerContext *context, Output *text) noexcept nogil:
    """INFO cpu: the process's, its children's (rewrites) and the loop thread's CPU seconds."""
    return -1 if (append_rusage(text, b"", RUSAGE_SELF, b"") < 0
                  or append_rusage(text, b"_children", RUSAGE_CHILDREN, b"") < 0
                  or append_rusage(text, b"_main_thread", RUSAGE_THREAD, b"") < 0) else 0


cdef int write_commandstats_section(ServerContext *context, Output *text) noexcept nogil:
    """INFO commandstats: ``cmdstat_<name>:calls=,usec=,usec_per_call=,rejected_calls=,failed_calls=``
    for every command used since the start (or CONFIG RESETSTAT), in table order.
    (The calls of the batch being answered are counted when it ends.)"""
    cdef size_t i
    cdef const CommandStats *stats
    for i in range(context.command_count):
        stats = &context.command_stats[i]
        if stats.calls == 0 and stats.rejected_calls == 0 and stats.failed_calls == 0:
            continue
        if output_text(text, b"cmdstat_") < 0 or output_text(text, stats.name) < 0 \
                or output_text(text, b":calls=") < 0 \
                or output_int64(text, <int64_t>stats.calls, b",usec=") < 0 \
                or output_int64(text, <int64_t>(stats.nanoseconds // 1000), b",usec_per_call=") < 0 \
                or append_format_double(text, b"%.2f,rejected_calls=", 0.0 if stats.calls == 0
                                        else <double>stats.nanoseconds / 1000.0 / <double>stats.calls) < 0 \
                or output_int64(text, <int64_t>stats.rejected_calls, b",failed_calls=") < 0 \
                or output_int64(text, <int64_t>stats.failed_calls, b"\r\n") < 0:
            return -1
    return 0


cdef int write_errorstats_section(ServerContext *context, Output *text) noexcept nogil:
    """INFO errorstats: ``errorstat_<kind>:count=<n>``, in the order first seen."""
    cdef size_t i
    for i in range(context.error_kinds):
        if output_text(text, b"errorstat_") < 0 or output_text(text, context.errors[i].name) < 0 \
                or output_text(text, b":count=") < 0 \
                or output_int64(text, <int64_t>context.errors[i].count, b"\r\n") < 0:
            return -1
    return 0


cdef int write_latencystats_section(ServerContext *context, Output *text) noexcept nogil:
    """INFO latencystats: ``latency_percentiles_usec_<name>:p50=,p99=,p99.9=`` (microseconds,
    the upper bound of the histogram bucket holding the percentile)."""
    cdef size_t i
    cdef const CommandStats *stats
    for i in range(context.command_count):
        stats = &context.command_stats[i]
        if stats.calls == 0:
            continue
        if output_text(text, b"latency_percentiles_usec_") < 0 or output_text(text, stats.name) < 0 \
                or append_format_double(text, b":p50=%.3f", latency_percentile_ns(stats, 0.5) / 1000.0) < 0 \
                or append_format_double(text, b",p99=%.3f", latency_percentile_ns(stats, 0.99) / 1000.0) < 0 \
                or append_format_double(text, b",p99.9=%.3f\r\n", latency_percentile_ns(stats, 0.999) / 1000.0) < 0:
            return -1
    return 0


cdef enum:
    PROMETHEUS_FIRST_POWER = 10     # the histogram's bounds: 2^10 ns (1.024 us) ...
    PROMETHEUS_LAST_POWER = 34      # ... to 2^34 ns (17.2 s), every power of four
    PROMETHEUS_POWER_STEP = 2


cdef int write_prometheus_commands(Output *output, ServerContext *context) noexcept nogil:
    """The per-command series of /metrics: ``kvfast_command_calls_total``,
    ``..._rejected_calls_total``, ``..._failed_calls_total`` (INFO commandstats'
    figures) and the histogram ``kvfast_command_duration_seconds`` (from the
    latency histogram of LATENCY HISTOGRAM, at bounds that are bucket edges
    of it: every power of four nanoseconds from 1 us to 17 s), each labelled
    ``command="name"``, for the commands called since the start or the last
    CONFIG RESETSTAT. Returns 0 or -1 (out of memory)."""
    cdef const char *names[3]
    cdef const char *helps[3]
    cdef int kind, bucket, power
    cdef size_t row
    cdef const CommandStats *stats
    cdef uint64_t value, cumulative, total
    cdef char number[64]
    names[0], helps[0] = b"kvfast_command_calls_total", b"calls of each command (INFO commandstats calls)"
    names[1], helps[1] = b"kvfast_command_rejected_calls_total", b"calls refused before running (arity, NOAUTH, ...)"
    names[2], helps[2] = b"kvfast_command_failed_calls_total", b"calls that ran and replied with an error"
    for kind in range(3):
        if output_text(output, b"# HELP ") < 0 or output_text(output, names[kind]) < 0 \
                or output_text(output, b" ") < 0 or output_text(output, helps[kind]) < 0 \
                or output_text(output, b"\n# TYPE ") < 0 or output_text(output, names[kind]) < 0 \
                or output_text(output, b" counter\n") < 0:
            return -1
        for row in range(context.command_count):
            stats = &context.command_stats[row]
            value = stats.calls if kind == 0 else (stats.rejected_calls if kind == 1 else stats.failed_calls)
            if stats.calls + stats.rejected_calls == 0:
                continue
            if write_labelled(output, names[kind], b"", stats.name, NULL) < 0 \
                    or output_int64(output, <int64_t>value, b"\n") < 0:
                return -1
    if output_text(output, b"# HELP kvfast_command_duration_seconds how long each command ran (LATENCY HISTOGRAM)\n"
                           b"# TYPE kvfast_command_duration_seconds histogram\n") < 0:
        return -1
    for row in range(context.command_count):
        stats = &context.command_stats[row]
        total = 0
        for bucket in range(<int>LATENCY_BUCKETS):
            total += stats.histogram[bucket]
        if total == 0:
            continue
        cumulative = 0
        bucket = 0
        power = PROMETHEUS_FIRST_POWER
        while power <= PROMETHEUS_LAST_POWER:
            while bucket < <int>LATENCY_BUCKETS and latency_bucket_upper_ns(bucket) < (<uint64_t>1 << power):
                cumulative += stats.histogram[bucket]
                bucket += 1
            snprintf(number, sizeof(number), b"%.9g", <double>(<uint64_t>1 << power) / 1e9)
            if write_labelled(output, b"kvfast_command_duration_seconds", b"_bucket", stats.name, number) < 0 \
                    or output_int64(output, <int64_t>cumulative, b"\n") < 0:
                return -1
            power += PROMETHEUS_POWER_STEP
        snprintf(number, sizeof(number), b"%.9g", <double>stats.nanoseconds / 1e9)
        if write_labelled(output, b"kvfast_command_duration_seconds", b"_bucket", stats.name, b"+Inf") < 0 \
                or output_int64(output, <int64_t>total, b"\n") < 0 \
                or write_labelled(output, b"kvfast_command_duration_seconds", b"_sum", stats.name, NULL) < 0 \
                or output_text(output, number) < 0 or output_text(output, b"\n") < 0 \
                or write_labelled(output, b"kvfast_command_duration_seconds", b"_count", stats.name, NULL) < 0 \
                or output_int64(output, <int64_t>total, b"\n") < 0:
            return -1
    return 0


cdef int write_labelled(Output *output, const char *name, const char *suffix, const char *command,
                        const char *le) noexcept nogil:
    """``name suffix{command="command"[,le="le"]} `` (a sample's name, labels and the space before its value)."""
    if output_text(output, name) < 0 or output_text(output, suffix) < 0 \
            or output_text(output, b"{command=\"") < 0 or output_text(output, command) < 0:
        return -1
    if le != NULL and (output_text(output, b"\",le=\"") < 0 or output_text(output, le) < 0):
        return -1
    return output_text(output, b"\"} ")
