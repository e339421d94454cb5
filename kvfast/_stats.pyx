# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Every figure the server reports, in one table: each row names a value, says
where its number comes from and where it is shown.

Three views render the same rows: native ``stats`` (one line of
``name=value``), INFO's sections (``name:value`` lines), and
``EventLoop.stats()`` (a dict; a row may carry an ``api_name`` there, the name
the Python API has always used). A new counter is a ``Counter`` in
_context.pxd and one row here.
"""
from libc.stdint cimport int64_t
from libc.stdio cimport snprintf
from libc.string cimport strerror, strncmp
from posix.fcntl cimport open, O_RDONLY
from posix.unistd cimport read, close, sysconf, _SC_PAGESIZE

from kvfast._aof cimport fsync_policy_text
from kvfast._context cimport (
    ServerContext, Counter, COUNTER_CONNECTIONS_RECEIVED, COUNTER_CONNECTED_CLIENTS, COUNTER_COMMANDS_PROCESSED,
    COUNTER_ERROR_REPLIES, COUNTER_PROTOCOL_ERRORS, COUNTER_KEYSPACE_HITS, COUNTER_KEYSPACE_MISSES,
    COUNTER_ACCEPT_PAUSES, COUNTER_REJECTED_CONNECTIONS, COUNTER_PROTECTED_REFUSALS, COUNTER_TIMED_OUT_CLIENTS,
    COUNTER_AUTH_FAILURES, COUNTER_EXPIRED_KEYS, COUNTER_EVICTED_KEYS,
)
from kvfast._evict cimport memory_used, memory_peak, maxmemory_human, policy_name
from kvfast._output cimport Output, output_text, output_int64
from kvfast._store cimport store_count, store_memory_bytes, store_is_resizing
from kvfast._text cimport INT_OK, parse_int64


cdef enum Shown:
    IN_STATS_LINE = 1           # native ``stats``
    IN_API = 2                  # EventLoop.stats()
    NEEDS_LOG = 4               # only while the append-only log is on

ctypedef int64_t (*NumberSource)(ServerContext *context) noexcept nogil
ctypedef const char *(*TextSource)(ServerContext *context) noexcept nogil


cdef struct Field:
    const char *name            # as INFO and native ``stats`` show it (Redis's name where Redis has one)
    const char *api_name        # EventLoop.stats()'s key, when it differs (else NULL)
    StatsSection section
    int shown                   # Shown flags
    int counter                 # a Counter, or -1: the value comes from...
    NumberSource number         # ...this function (a gauge), or...
    TextSource text             # ...this one (a word)


# ---- value sources (gauges) ---------------------------------------------------

cdef int64_t keys(ServerContext *context) noexcept nogil:
    return <int64_t>store_count(&context.store)

cdef int64_t used_memory(ServerContext *context) noexcept nogil:
    return <int64_t>memory_used(context)

cdef int64_t used_memory_peak(ServerContext *context) noexcept nogil:
    return <int64_t>memory_peak(context)

cdef int64_t store_bytes(ServerContext *context) noexcept nogil:
    return <int64_t>store_memory_bytes(&context.store)

cdef int64_t volatile_keys(ServerContext *context) noexcept nogil:
    return <int64_t>context.expiry.volatile_keys

cdef int64_t expire_longest_slice_us(ServerContext *context) noexcept nogil:
    return context.expiry.longest_slice_us

cdef int64_t expire_sweeps(ServerContext *context) noexcept nogil:
    return <int64_t>context.expiry.sweeps

cdef char STALE_PERCENT_TEXT[32]

cdef const char *expired_stale_percent(ServerContext *context) noexcept nogil:
    """Redis's expired_stale_perc (two decimals): the running average share
    of expired keys among the deadlines the sweep looked at."""
    snprintf(STALE_PERCENT_TEXT, sizeof(STALE_PERCENT_TEXT), b"%.2f", context.expiry.stale_ratio * 100.0)
    return STALE_PERCENT_TEXT

cdef int64_t maxmemory(ServerContext *context) noexcept nogil:
    return <int64_t>context.memory.maxmemory

cdef const char *maxmemory_words(ServerContext *context) noexcept nogil:
    return maxmemory_human(context)

cdef const char *maxmemory_policy(ServerContext *context) noexcept nogil:
    return policy_name(context.memory.policy)

cdef int64_t used_memory_rss(ServerContext *context) noexcept nogil:
    return resident_bytes()

cdef int64_t resizes(ServerContext *context) noexcept nogil:
    return <int64_t>context.store.stats.resizes

cdef int64_t max_migrated(ServerContext *context) noexcept nogil:
    return <int64_t>context.store.stats.max_moved_per_step

cdef int64_t forced_drains(ServerContext *context) noexcept nogil:
    return <int64_t>context.store.stats.forced_drains

cdef int64_t resizing(ServerContext *context) noexcept nogil:
    return store_is_resizing(&context.store)

cdef int64_t zero(ServerContext *context) noexcept nogil:
    return 0

cdef int64_t minus_one(ServerContext *context) noexcept nogil:
    return -1

cdef int64_t connected_clients(ServerContext *context) noexcept nogil:
    return <int64_t>context.counters[<int>COUNTER_CONNECTED_CLIENTS]   # a gauge: it goes down too

cdef int64_t max_clients(ServerContext *context) noexcept nogil:
    return <int64_t>context.limits.max_clients

cdef int64_t peak_input(ServerContext *context) noexcept nogil:
    return <int64_t>context.peak_input_bytes

cdef int64_t peak_output(ServerContext *context) noexcept nogil:
    return <int64_t>context.peak_output_bytes

cdef int64_t backlog_size(ServerContext *context) noexcept nogil:
    return 1024 * 1024              # Redis's default repl-backlog-size (none is kept: no replicas)

cdef const char *master(ServerContext *context) noexcept nogil:
    return b"master"

cdef const char *no_failover(ServerContext *context) noexcept nogil:
    return b"no-failover"

cdef const char *replication_id(ServerContext *context) noexcept nogil:
    return context.replication_id

cdef const char *no_replication_id(ServerContext *context) noexcept nogil:
    return b"0000000000000000000000000000000000000000"

cdef int64_t log_enabled(ServerContext *context) noexcept nogil:
    return context.aof != NULL

cdef int64_t rewrite_in_progress(ServerContext *context) noexcept nogil:
    return context.aof.rewrite_child != 0

cdef int64_t rewrites(ServerContext *context) noexcept nogil:
    return <int64_t>context.aof.rewrites

cdef int64_t rewrite_failures(ServerContext *context) noexcept nogil:
    return <int64_t>context.aof.rewrite_failures

cdef int64_t log_size(ServerContext *context) noexcept nogil:
    return <int64_t>context.aof.size

cdef int64_t log_base_size(ServerContext *context) noexcept nogil:
    return <int64_t>context.aof.base_size

cdef int64_t log_pending(ServerContext *context) noexcept nogil:
    return <int64_t>context.aof.pending_len

cdef int64_t fork_us(ServerContext *context) noexcept nogil:
    return context.aof.latest_fork_us

cdef int64_t last_pause_us(ServerContext *context) noexcept nogil:
    return context.aof.last_rewrite_pause_us

cdef int64_t max_pause_us(ServerContext *context) noexcept nogil:
    return context.aof.max_rewrite_pause_us

cdef const char *fsync_policy(ServerContext *context) noexcept nogil:
    return fsync_policy_text(context.aof.policy)

cdef const char *last_rewrite_status(ServerContext *context) noexcept nogil:
    return b"err" if context.aof.last_rewrite_failed else b"ok"

cdef const char *last_write_status(ServerContext *context) noexcept nogil:
    return b"err" if context.aof.failure != 0 else b"ok"

cdef const char *last_write_error(ServerContext *context) noexcept nogil:
    if context.aof.failure == 0:
        return b""
    return strerror(context.aof.failure)


# ---- the table ------------------------------------------------------------------

cdef enum:
    MAX_FIELDS = 128

cdef Field FIELDS[MAX_FIELDS]
cdef int FIELD_COUNT = 0


cdef void row(const char *name, StatsSection section, int shown, int counter, NumberSource number,
              TextSource text, const char *api_name):
    """Append one row to FIELDS (at import; the order is the order shown)."""
    global FIELD_COUNT
    if FIELD_COUNT == MAX_FIELDS:
        raise RuntimeError("the stats field table is full: raise MAX_FIELDS")
    FIELDS[FIELD_COUNT] = Field(name, api_name, section, shown, counter, number, text)
    FIELD_COUNT += 1


cdef void counter(const char *name, StatsSection section, int shown, Counter counter,
                  const char *api_name=NULL):
    """A row whose value is one of ServerContext.counters."""
    row(name, section, shown, counter, NULL, NULL, api_name)


cdef void gauge(const char *name, StatsSection section, int shown, NumberSource number,
                const char *api_name=NULL):
    """A row whose value a function computes."""
    row(name, section, shown, -1, number, NULL, api_name)


cdef void word(const char *name, StatsSection section, int shown, TextSource text, const char *api_name=NULL):
    """A row whose value is a word (``ok``, ``everysec``, ...)."""
    row(name, section, shown, -1, NULL, text, api_name)


gauge(b"keys", INFO_NONE, IN_STATS_LINE | IN_API, keys)
gauge(b"connected_clients", INFO_CLIENTS, IN_STATS_LINE | IN_API, connected_clients)
# The rest of Redis 7's INFO clients, as clients and redis-cli --stat read it: no cluster, no
# blocking commands, no client-side caching, so the counts are 0.
gauge(b"cluster_connections", INFO_CLIENTS, 0, zero)
gauge(b"maxclients", INFO_CLIENTS, 0, max_clients)
gauge(b"client_recent_max_input_buffer", INFO_CLIENTS, 0, peak_input)
gauge(b"client_recent_max_output_buffer", INFO_CLIENTS, 0, peak_output)
gauge(b"blocked_clients", INFO_CLIENTS, 0, zero)
gauge(b"tracking_clients", INFO_CLIENTS, 0, zero)
gauge(b"clients_in_timeout_table", INFO_CLIENTS, 0, zero)
counter(b"total_connections_received", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_CONNECTIONS_RECEIVED,
        b"connections_accepted")
counter(b"total_commands_processed", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_COMMANDS_PROCESSED,
        b"commands_processed")
counter(b"keyspace_hits", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_KEYSPACE_HITS)
counter(b"keyspace_misses", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_KEYSPACE_MISSES)
counter(b"total_error_replies", INFO_STATS, IN_API, COUNTER_ERROR_REPLIES, b"invalid_requests")
counter(b"rejected_connections", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_REJECTED_CONNECTIONS)
counter(b"protected_mode_refusals", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_PROTECTED_REFUSALS)
counter(b"timed_out_clients", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_TIMED_OUT_CLIENTS)
counter(b"protocol_errors", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_PROTOCOL_ERRORS)
counter(b"auth_failures", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_AUTH_FAILURES)
counter(b"evicted_keys", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_EVICTED_KEYS)
counter(b"kvfast_accept_pauses", INFO_STATS, IN_API, COUNTER_ACCEPT_PAUSES, b"accept_pauses")
counter(b"expired_keys", INFO_STATS, IN_STATS_LINE | IN_API, COUNTER_EXPIRED_KEYS)
word(b"expired_stale_perc", INFO_STATS, 0, expired_stale_percent)
gauge(b"expired_time_cap_reached_count", INFO_STATS, 0, zero)
gauge(b"kvfast_volatile_keys", INFO_STATS, IN_API, volatile_keys)
gauge(b"kvfast_expire_sweeps", INFO_STATS, IN_API, expire_sweeps)
gauge(b"kvfast_expire_longest_slice_us", INFO_STATS, IN_API, expire_longest_slice_us)
gauge(b"used_memory", INFO_MEMORY, IN_STATS_LINE | IN_API, used_memory)
gauge(b"kvfast_store_bytes", INFO_MEMORY, IN_API, store_bytes, b"store_bytes")
gauge(b"used_memory_rss", INFO_MEMORY, 0, used_memory_rss)
gauge(b"used_memory_peak", INFO_MEMORY, IN_API, used_memory_peak)
gauge(b"kvfast_resizes", INFO_MEMORY, 0, resizes)
gauge(b"kvfast_max_migrated_per_request", INFO_MEMORY, IN_API, max_migrated,
      b"max_moved_per_step")
gauge(b"kvfast_forced_drains", INFO_MEMORY, 0, forced_drains)
gauge(b"kvfast_resizing", INFO_MEMORY, 0, resizing)
gauge(b"maxmemory", INFO_MEMORY, IN_API, maxmemory)
word(b"maxmemory_human", INFO_MEMORY, 0, maxmemory_words)
word(b"maxmemory_policy", INFO_MEMORY, IN_API, maxmemory_policy)
gauge(b"loading", INFO_PERSISTENCE, 0, zero)
gauge(b"aof_enabled", INFO_PERSISTENCE, 0, log_enabled)
word(b"aof_fsync", INFO_PERSISTENCE, IN_API | NEEDS_LOG, fsync_policy)
gauge(b"aof_rewrite_in_progress", INFO_PERSISTENCE, IN_API | NEEDS_LOG, rewrite_in_progress)
gauge(b"aof_rewrites", INFO_PERSISTENCE, IN_API | NEEDS_LOG, rewrites)
gauge(b"aof_rewrite_failures", INFO_PERSISTENCE, IN_API | NEEDS_LOG, rewrite_failures)
word(b"aof_last_bgrewrite_status", INFO_PERSISTENCE, IN_API | NEEDS_LOG, last_rewrite_status)
word(b"aof_last_write_status", INFO_PERSISTENCE, IN_API | NEEDS_LOG, last_write_status)
word(b"aof_last_write_error", INFO_NONE, IN_API | NEEDS_LOG, last_write_error)
gauge(b"aof_current_size", INFO_PERSISTENCE, IN_API | NEEDS_LOG, log_size)
gauge(b"aof_base_size", INFO_PERSISTENCE, IN_API | NEEDS_LOG, log_base_size)
gauge(b"aof_pending_bytes", INFO_PERSISTENCE, IN_API | NEEDS_LOG, log_pending)
gauge(b"latest_fork_usec", INFO_PERSISTENCE, IN_API | NEEDS_LOG, fork_us, b"aof_latest_fork_us")
gauge(b"kvfast_aof_last_rewrite_pause_us", INFO_PERSISTENCE, IN_API | NEEDS_LOG, last_pause_us,
      b"aof_last_rewrite_pause_us")
gauge(b"kvfast_aof_max_rewrite_pause_us", INFO_PERSISTENCE, IN_API | NEEDS_LOG, max_pause_us,
      b"aof_max_rewrite_pause_us")
# INFO replication as a Redis 7 master without replicas prints it (valkey-glide reads role:master).
word(b"role", INFO_REPLICATION, 0, master)
gauge(b"connected_slaves", INFO_REPLICATION, 0, zero)
word(b"master_failover_state", INFO_REPLICATION, 0, no_failover)
word(b"master_replid", INFO_REPLICATION, 0, replication_id)
word(b"master_replid2", INFO_REPLICATION, 0, no_replication_id)
gauge(b"master_repl_offset", INFO_REPLICATION, 0, zero)
gauge(b"second_repl_offset", INFO_REPLICATION, 0, minus_one)
gauge(b"repl_backlog_active", INFO_REPLICATION, 0, zero)
gauge(b"repl_backlog_size", INFO_REPLICATION, 0, backlog_size)
gauge(b"repl_backlog_first_byte_offset", INFO_REPLICATION, 0, zero)
gauge(b"repl_backlog_histlen", INFO_REPLICATION, 0, zero)


# ---- the views --------------------------------------------------------------------

cdef inline bint applies(const Field *field, ServerContext *context) noexcept nogil:
    return not (field.shown & NEEDS_LOG) or context.aof != NULL


cdef int write_value(Output *output, const Field *field, ServerContext *context,
                     const char *ending) noexcept nogil:
    """The row's value, then ``ending``; 0 or -1 (out of memory)."""
    if field.text != NULL:
        if output_text(output, field.text(context)) < 0:
            return -1
        return output_text(output, ending)
    if field.number != NULL:
        return output_int64(output, field.number(context), ending)
    return output_int64(output, <int64_t>context.counters[field.counter], ending)


cdef int write_stats_line(Output *output, ServerContext *context) noexcept nogil:
    """Native ``stats``: the IN_STATS_LINE rows as ``name=value`` separated by
    spaces, ending in a newline. Returns 0 or -1 (out of memory)."""
    cdef int i
    cdef bint first = True
    for i in range(FIELD_COUNT):
        if not (FIELDS[i].shown & IN_STATS_LINE) or not applies(&FIELDS[i], context):
            continue
        if (not first and output_text(output, b" ") < 0) or output_text(output, FIELDS[i].name) < 0 \
                or output_text(output, b"=") < 0:
            return -1
        first = False
        if write_value(output, &FIELDS[i], context, b"") < 0:
            return -1
    return output_text(output, b"\n")


cdef int write_info_section(Output *output, ServerContext *context, StatsSection section) noexcept nogil:
    """The ``name:value\\r\\n`` lines of one INFO section's rows (the caller
    writes the ``# Section`` header and the blank line). 0 or -1."""
    cdef int i
    for i in range(FIELD_COUNT):
        if FIELDS[i].section != section or not applies(&FIELDS[i], context):
            continue
        if output_text(output, FIELDS[i].name) < 0 or output_text(output, b":") < 0 \
                or write_value(output, &FIELDS[i], context, b"\r\n") < 0:
            return -1
    return 0


cdef const char *SECTION_NAMES[6]
SECTION_NAMES[:] = [b"", b"clients", b"memory", b"persistence", b"stats", b"replication"]


cdef int write_metric_name(Output *output, const Field *field) noexcept nogil:
    """``kvfast_<name>``, a counter's as ``kvfast_<name>_total`` without Redis's
    ``total_`` prefix (total_commands_processed: kvfast_commands_processed_total);
    a row already named ``kvfast_...`` is not prefixed twice."""
    cdef const char *name = field.name
    if strncmp(name, b"kvfast_", 7) == 0:
        name += 7
    if field.counter >= 0 and strncmp(name, b"total_", 6) == 0:
        name += 6
    if output_text(output, b"kvfast_") < 0 or output_text(output, name) < 0:
        return -1
    return output_text(output, b"_total" if field.counter >= 0 else b"")


cdef int write_prometheus(Output *output, ServerContext *context) noexcept nogil:
    """Every numeric row in Prometheus's text exposition format 0.0.4: per row a
    ``# HELP`` line (where INFO shows it), a ``# TYPE`` line (rows counting from
    ServerContext.counters are counters, the computed ones gauges) and the sample.
    Word rows (``aof_fsync:everysec``) have no number and are left out. Returns 0
    or -1 (out of memory)."""
    cdef const Field *field
    cdef int i
    for i in range(FIELD_COUNT):
        field = &FIELDS[i]
        if field.text != NULL or not applies(field, context):
            continue
        if output_text(output, b"# HELP ") < 0 or write_metric_name(output, field) < 0:
            return -1
        if field.section != INFO_NONE:
            if output_text(output, b" INFO ") < 0 or output_text(output, SECTION_NAMES[<int>field.section]) < 0 \
                    or output_text(output, b" ") < 0 or output_text(output, field.name) < 0:
                return -1
        elif output_text(output, b" native stats ") < 0 or output_text(output, field.name) < 0:
            return -1
        if output_text(output, b"\n# TYPE ") < 0 or write_metric_name(output, field) < 0 \
                or output_text(output, b" counter\n" if field.counter >= 0 else b" gauge\n") < 0 \
                or write_metric_name(output, field) < 0 or output_text(output, b" ") < 0 \
                or write_value(output, field, context, b"\n") < 0:
            return -1
    return 0


cdef dict stats_as_dict(ServerContext *context):
    """EventLoop.stats(): the IN_API rows, by api_name (or name); numbers as
    ints, words as str."""
    cdef dict result = {}
    cdef const Field *field
    cdef int i
    for i in range(FIELD_COUNT):
        field = &FIELDS[i]
        if not (field.shown & IN_API) or not applies(field, context):
            continue
        name = (field.api_name if field.api_name != NULL else field.name).decode()
        if field.text != NULL:
            result[name] = field.text(context).decode()
        elif field.number != NULL:
            result[name] = field.number(context)
        else:
            result[name] = context.counters[field.counter]
    return result


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
