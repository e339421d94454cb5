# Per-command statistics, error kinds, the slow log and the operating INFO
# sections (kvfast/_commandstats.pyx). The hot part is inline here: execute()
# (kvfast/_resp.pyx) counts every command through it.
#
# The C-level API for other readers of the statistics (metrics):
#   context.command_stats[i], i < context.command_count: a CommandStats per
#   row of the RESP command table (name, calls, nanoseconds, rejected_calls,
#   failed_calls, histogram[LATENCY_BUCKETS]); latency_bucket_upper_ns(b) is
#   bucket b's upper bound; latency_percentile_ns(stats, 0.99) a percentile;
#   context.errors[i], i < context.error_kinds: (name, count).
from libc.stdint cimport int64_t, uint64_t

from kvfast._command cimport Request, RespCommand
from kvfast._context cimport ServerContext, Session, CommandStats, BATCH_ROWS, LATENCY_BUCKETS
from kvfast._output cimport Output
from kvfast._system cimport timespec, clock_gettime, CLOCK_MONOTONIC


cdef extern from *:
    int __builtin_clzll(unsigned long long value) nogil


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000000 + now.tv_nsec


cdef inline int latency_bucket(uint64_t ns) noexcept nogil:
    """The histogram bucket of a duration: exact below 8 ns, then 8 buckets per
    power of two (at most 12.5 % wide), the last one open-ended."""
    cdef int exponent
    cdef int bucket
    if ns < 8:
        return <int>ns
    exponent = 63 - __builtin_clzll(ns)
    bucket = (exponent - 2) * 8 + <int>((ns >> (exponent - 3)) & 7)
    return bucket if bucket < <int>LATENCY_BUCKETS else <int>LATENCY_BUCKETS - 1


cdef inline void stats_batch_begin(ServerContext *context) noexcept nogil:
    """Open a batch: the requests of one read of one connection. Commands that
    touch one key (O(1)) are not timed one by one; they share the batch's time
    left after the commands timed one by one (stats_batch_end)."""
    context.batch_started_ns = monotonic_ns()
    context.batch_exact_ns = 0
    context.batch_amortized = 0


cdef inline void stats_count_amortized(ServerContext *context, CommandStats *stats) noexcept nogil:
    """Count a call whose duration the batch's end gives it (one increment, and
    a row list entry the first time the batch sees the row)."""
    if stats.pending == 0:
        if context.batch_row_count == <size_t>BATCH_ROWS:
            stats_batch_end(context)
            stats_batch_begin(context)
        context.batch_rows[context.batch_row_count] = stats
        context.batch_row_count += 1
    stats.pending += 1
    context.batch_amortized += 1


cdef void stats_batch_end(ServerContext *context) noexcept nogil
cdef void stats_record(ServerContext *context, CommandStats *stats, int64_t ns) noexcept nogil
cdef void stats_note_error(ServerContext *context, Output *output, size_t offset) noexcept nogil
cdef void stats_count_error(ServerContext *context, const char *name, size_t length) noexcept nogil
cdef void stats_reset(ServerContext *context) noexcept nogil
cdef int stats_init(ServerContext *context, const RespCommand *commands, size_t count) noexcept nogil
cdef void stats_free(ServerContext *context) noexcept nogil
cdef uint64_t latency_bucket_upper_ns(int bucket) noexcept nogil
cdef uint64_t latency_percentile_ns(const CommandStats *stats, double fraction) noexcept nogil

cdef enum Redaction:
    # Arguments MONITOR and SLOWLOG replace with "(redacted)", as Redis does.
    REDACT_NONE = 0
    REDACT_ALL = 1              # every argument after the name (AUTH)
    REDACT_HELLO_AUTH = 2       # the two after HELLO's AUTH (user and password)


cdef bint redacted(const Request *request, size_t index, Redaction redaction, size_t *hello_auth_at) noexcept nogil
cdef void slowlog_consider(ServerContext *context, Session *session, const Request *request,
                           int64_t ns, Redaction redaction) noexcept nogil
cdef void slowlog_free(ServerContext *context) noexcept nogil

cdef int write_cpu_section(ServerContext *context, Output *text) noexcept nogil
cdef int write_commandstats_section(ServerContext *context, Output *text) noexcept nogil
cdef int write_errorstats_section(ServerContext *context, Output *text) noexcept nogil
cdef int write_latencystats_section(ServerContext *context, Output *text) noexcept nogil

cdef int command_slowlog(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_latency(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int write_prometheus_commands(Output *output, ServerContext *context) noexcept nogil
