# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Key expiry: the active sweep, the load step after a replay, and the RESP
expiry commands (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX/XX/GT/LT; TTL,
PTTL, EXPIRETIME, PEXPIRETIME; PERSIST; SETEX, PSETEX; GETEX) and SET's
EX/PX/EXAT/PXAT/KEEPTTL options (parsed here for kvfast/_strings.pyx).

Where deadlines live
    ``context.expires``, a second int64 -> int64 table (kvfast/_store.pyx)
    beside the main one: key -> deadline in Unix ms, as Redis's
    ``db->expires``. A key without a TTL costs nothing more (its 16-byte slot
    is untouched); a key with one costs one more slot, 16 bytes at 72-90%
    load: 18-22 bytes. The keyspace layer (kvfast/_keyspace.pxd) keeps the
    table current and expires keys lazily on every access.

Active expiry: a sweep of the deadline table, in slices
    Why not Redis's random sampling: sampling stops while fewer than 10% of
    a sample have expired, so it states no bound on when a key goes. Why not
    a heap or a timing wheel of deadlines: either needs 8-16 more bytes per
    key with a TTL (a heap index or wheel links), more than the 24-byte budget
    leaves beside the deadline slot. The sweep instead walks the deadline
    table in hash order (store_scan, whose cursor survives resizes and the
    deletes made between its steps), removing every key whose deadline
    passed, and learns from the walk a lower bound of the deadlines it kept
    (``expiry.earliest_ms``; every new deadline lowers it too). So:
      * a sweep starts only when the wall clock reaches ``earliest_ms`` (no
        key can be due before), and at most once per SWEEP_INTERVAL_US (100 ms)
        after the previous one ended: while no deadline is due the sweep costs
        nothing at all, whatever the number of keys with a TTL;
      * a sweep runs in slices of at most SLICE_BUDGET_US (1 ms, the clock
        read after every step of STEP_HOME_SLOTS slots), one per loop
        iteration, and a slice of t is followed by at least t without expiry
        (at most half of the loop's time; an idle loop sleeps in epoll_wait
        meanwhile);
      * a full sweep visits every key that had a deadline when it began.
    The guarantee: a key whose deadline passes is removed at most 100 ms plus
    one sweep after it, where a sweep takes about 2 x (deadline-table slots x
    the per-slot cost + expired keys x the per-key cost) of wall time. With N
    keys expiring in the same second and nothing else volatile, that is the
    time to delete N keys at half the loop's time: measured by
    bench/expiry.py (figures in the README's "Expiry and memory limits":
    1M keys gone about 100 ms after their deadline, 10M in under 1 s, no
    slice much over 1 ms). While a sweep runs, neither table shrinks
    (store_pause_shrink: a shrink mid-walk would cluster the keys left).
    The cost: while deadlines keep falling due (a cache of keys with
    spread-out TTLs), sweeps repeat every 100 ms, each walking the whole
    deadline table in slices.

Replay
    Deadlines are absolute, so after a log is replayed expire_after_load
    drops every key whose deadline has passed (without logging: the records
    already say so), as Redis's loading skips expired keys.
"""
from libc.stdint cimport int64_t, uint64_t, INT64_MAX, INT64_MIN

from kvfast._command cimport Request, Argument, next_argument
from kvfast._context cimport ServerContext, Session, Expiry, COUNTER_EXPIRED_KEYS
from kvfast._keyspace cimport (
    keyspace_clock_ms, keyspace_read, keyspace_peek, keyspace_deadline, keyspace_set_deadline, keyspace_persist,
    keyspace_set_expiring, keyspace_drop, deadline_weight,
)
from kvfast._output cimport Output, output_text
from kvfast._reply cimport (
    ERR_NOT_INTEGER, ERR_KEY_NOT_INTEGER, ERR_SYNTAX, ERR_OUT_OF_MEMORY, reply_integer, reply_bulk_integer,
    reply_null, reply_error, append_sanitized, read_integer,
)
from kvfast._store cimport (
    store_scan, store_delete, store_count, store_iterator_init, store_iterator_next, store_pause_shrink,
    store_resume_shrink,
)
from kvfast._store cimport StoreIterator
from kvfast._system cimport monotonic_us
from kvfast._text cimport INT_OK, parse_int64, equals_nocase
from kvfast._context cimport COUNTER_ERROR_REPLIES


cdef enum:
    STEP_HOME_SLOTS = 64            # deadline-table home slots per sweep step (the clock is read between steps)
    BATCH_KEYS = 512                # expired keys one step can remove (more are left for the next sweep)
    SLICE_GAP_FACTOR = 1            # a slice of t is followed by at least t * this without expiry
    MAX_TIMEOUT_MS = 3600 * 1000    # epoll_wait never sleeps past a deadline by more than this


cdef extern from *:
    """
    #define KVFAST_ERR_EXPIRE_TIME(name) "-ERR invalid expire time in '" name "' command\\r\\n"
    #define KVFAST_ERR_NX_WITH_OTHERS "-ERR NX and XX, GT or LT options at the same time are not compatible\\r\\n"
    #define KVFAST_ERR_GT_AND_LT "-ERR GT and LT options at the same time are not compatible\\r\\n"
    """
    const char *ERR_EXPIRE_TIME_EXPIRE "KVFAST_ERR_EXPIRE_TIME(\"expire\")"
    const char *ERR_EXPIRE_TIME_PEXPIRE "KVFAST_ERR_EXPIRE_TIME(\"pexpire\")"
    const char *ERR_EXPIRE_TIME_EXPIREAT "KVFAST_ERR_EXPIRE_TIME(\"expireat\")"
    const char *ERR_EXPIRE_TIME_PEXPIREAT "KVFAST_ERR_EXPIRE_TIME(\"pexpireat\")"
    const char *ERR_EXPIRE_TIME_SETEX "KVFAST_ERR_EXPIRE_TIME(\"setex\")"
    const char *ERR_EXPIRE_TIME_PSETEX "KVFAST_ERR_EXPIRE_TIME(\"psetex\")"
    const char *ERR_EXPIRE_TIME_GETEX "KVFAST_ERR_EXPIRE_TIME(\"getex\")"
    const char *ERR_NX_WITH_OTHERS "KVFAST_ERR_NX_WITH_OTHERS"
    const char *ERR_GT_AND_LT "KVFAST_ERR_GT_AND_LT"


cdef enum ExpireCondition:
    # EXPIRE's NX/XX/GT/LT flags (Redis's EXPIRE_NX...)
    CONDITION_NX = 1
    CONDITION_XX = 2
    CONDITION_GT = 4
    CONDITION_LT = 8


# ---- the active sweep -----------------------------------------------------------------------

cdef struct SweepStep:
    # What one store_scan step over the deadline table collects.
    int64_t now                     # deadlines before this have passed
    size_t count                    # expired keys collected in ``keys``
    uint64_t visited                # deadlines looked at
    uint64_t expired                # ...of which had passed (collected or not)
    int64_t kept_min                # the earliest deadline left in the table by this step
    int64_t keys[BATCH_KEYS]


cdef void collect_expired(void *step_pointer, int64_t key, int64_t deadline) noexcept nogil:
    """store_scan's receiver: collect the keys whose deadline has passed (a
    step's walk must not change the table); any beyond BATCH_KEYS stay, and
    count in ``kept_min`` so the next sweep comes for them."""
    cdef SweepStep *step = <SweepStep *>step_pointer
    step.visited += 1
    if deadline < step.now:
        step.expired += 1
        if step.count < BATCH_KEYS:
            step.keys[step.count] = key
            step.count += 1
            return
    if deadline < step.kept_min:
        step.kept_min = deadline


cdef void expire_init(ServerContext *context) noexcept nogil:
    """Bookkeeping for an empty deadline table (the table itself is store_init'd by the loop)."""
    context.expiry.volatile_keys = 0
    context.expiry.clock_ms = 0
    context.expiry.earliest_ms = INT64_MAX
    context.expiry.deadline_sum = 0
    context.expiry.sweeping = False


cdef bint expire_slice(ServerContext *context, int64_t now_us) noexcept nogil:
    """Run one slice of active expiry if one is due (see the module
    docstring): at most SLICE_BUDGET_US of deletes of keys whose deadline
    passed. The loop calls this once per iteration; returns whether it
    removed any key (whose deletes are then to be persisted)."""
    cdef Expiry *expiry = &context.expiry
    cdef SweepStep step
    cdef int64_t started, finished
    cdef uint64_t visited = 0, expired = 0
    cdef size_t i
    if expiry.volatile_keys == 0:
        if expiry.sweeping:                 # the clients removed the last deadlines mid-sweep
            expiry.sweeping = False
            store_resume_shrink(&context.store)
            store_resume_shrink(&context.expires)
        return False
    if not expiry.sweeping:
        if now_us < expiry.next_sweep_us or keyspace_clock_ms(context) <= expiry.earliest_ms:
            return False
        expiry.sweeping = True
        store_pause_shrink(&context.store)        # deletes in hash order: see store_pause_shrink
        store_pause_shrink(&context.expires)
        expiry.sweep_cursor = 0
        expiry.sweep_min_ms = INT64_MAX
        expiry.earliest_ms = INT64_MAX      # from now on lowered by new deadlines; the sweep adds what it keeps
    elif now_us < expiry.next_slice_us:
        return False
    started = monotonic_us()
    while True:
        step.now = keyspace_clock_ms(context)
        step.count = 0
        step.visited = step.expired = 0
        step.kept_min = INT64_MAX
        expiry.sweep_cursor = store_scan(&context.expires, expiry.sweep_cursor, STEP_HOME_SLOTS,
                                         collect_expired, &step)
        for i in range(step.count):
            if keyspace_drop(context, step.keys[i]):
                context.counters[<int>COUNTER_EXPIRED_KEYS] += 1
        visited += step.visited
        expired += step.expired
        if step.kept_min < expiry.sweep_min_ms:
            expiry.sweep_min_ms = step.kept_min
        finished = monotonic_us()
        if expiry.sweep_cursor == 0 or expiry.volatile_keys == 0:
            expiry.sweeping = False
            store_resume_shrink(&context.store)
            store_resume_shrink(&context.expires)
            expiry.sweeps += 1
            if expiry.sweep_min_ms < expiry.earliest_ms:
                expiry.earliest_ms = expiry.sweep_min_ms
            expiry.next_sweep_us = finished + SWEEP_INTERVAL_US
            break
        if finished - started >= SLICE_BUDGET_US:
            break
    expiry.next_slice_us = finished + (finished - started) * SLICE_GAP_FACTOR
    if finished - started > expiry.longest_slice_us:
        expiry.longest_slice_us = finished - started
    if visited > 0:     # Redis's expired_stale_perc: a running average of the expired share of what was looked at
        expiry.stale_ratio = expiry.stale_ratio * 0.95 + 0.05 * (<double>expired / <double>visited)
    return expired > 0


cdef int expire_timeout_ms(ServerContext *context, int64_t now_us) noexcept nogil:
    """How long epoll_wait may sleep as far as expiry is concerned: until the
    sweep's next slice, or until the next sweep may start and a deadline can
    have passed; -1: forever (no key has a deadline)."""
    cdef Expiry *expiry = &context.expiry
    cdef int64_t wait_ms, clock_wait_ms
    if expiry.volatile_keys == 0:
        return -1
    if expiry.sweeping:
        wait_ms = (expiry.next_slice_us - now_us + 999) // 1000
    else:
        wait_ms = (expiry.next_sweep_us - now_us + 999) // 1000
        if expiry.earliest_ms == INT64_MAX:
            clock_wait_ms = MAX_TIMEOUT_MS
        else:
            clock_wait_ms = expiry.earliest_ms + 1 - keyspace_clock_ms(context)
        if clock_wait_ms > wait_ms:
            wait_ms = clock_wait_ms
    if wait_ms < 0:
        return 0
    return <int>(wait_ms if wait_ms < MAX_TIMEOUT_MS else MAX_TIMEOUT_MS)


cdef size_t expire_after_load(ServerContext *context) noexcept nogil:
    """After a replay filled ``store`` and ``expires`` (scan_records): drop
    each key whose deadline has passed (not logged: the log's own records
    say so) and recount the bookkeeping. Returns the keys dropped."""
    cdef Expiry *expiry = &context.expiry
    cdef SweepStep step
    cdef uint64_t cursor = 0
    cdef size_t i, dropped = 0
    cdef StoreIterator entries
    cdef int64_t key, deadline
    cdef bint more = True
    store_pause_shrink(&context.store)            # deletes in hash order: see store_pause_shrink
    store_pause_shrink(&context.expires)
    while more:
        step.now = keyspace_clock_ms(context)
        step.count = 0
        step.kept_min = INT64_MAX
        cursor = store_scan(&context.expires, cursor, STEP_HOME_SLOTS, collect_expired, &step)
        for i in range(step.count):
            store_delete(&context.store, step.keys[i])
            store_delete(&context.expires, step.keys[i])
            dropped += 1
        if cursor == 0:
            more = step.count == BATCH_KEYS     # a full batch may have left some: walk again
    store_resume_shrink(&context.store)
    store_resume_shrink(&context.expires)
    expiry.volatile_keys = store_count(&context.expires)
    expiry.deadline_sum = 0
    expiry.earliest_ms = INT64_MAX
    store_iterator_init(&entries, &context.expires)
    while store_iterator_next(&entries, &key, &deadline):
        expiry.deadline_sum += deadline_weight(context, deadline)
        if deadline < expiry.earliest_ms:
            expiry.earliest_ms = deadline
    return dropped


cdef int64_t expire_average_ttl_ms(ServerContext *context) noexcept nogil:
    """INFO's avg_ttl: the mean time left of the keys with a deadline (ms;
    0: none), exact from the running sum of deadlines (deadlines more than
    8.7 years out count as that far)."""
    cdef int64_t mean
    if context.expiry.volatile_keys == 0:
        return 0
    mean = <int64_t>context.expiry.deadline_sum // <int64_t>context.expiry.volatile_keys
    mean = mean + context.started_at * 1000 - keyspace_clock_ms(context)
    return mean if mean > 0 else 0


# ---- EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT ---------------------------------------------------

cdef int reply_unsupported_option(ServerContext *context, Output *output, const Argument *argument) noexcept nogil:
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, b"-ERR Unsupported option ") < 0 \
            or append_sanitized(output, argument.start, argument.length) < 0:
        return -1
    return output_text(output, b"\r\n")


cdef int expire_generic(ServerContext *context, Session *session, const Request *request, size_t position,
                        int64_t unit_ms, bint relative, const char *time_error) noexcept nogil:
    """EXPIRE key time [NX|XX|GT|LT] and its three siblings, as Redis's
    expireGenericCommand: options first (``Unsupported option``, the
    incompatibility errors), then the time (not an integer; overflow by
    unit or by adding the clock: ``invalid expire time``), then 0 for a
    missing key or a condition that fails, else 1: the deadline set, or the
    key deleted when the deadline is not after the clock."""
    cdef Output *output = &session.output
    cdef Argument time_argument, argument
    cdef int64_t key, when, now, current
    cdef int conditions = 0, status, result
    if not read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    next_argument(request.data, &position, &time_argument)
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if equals_nocase(argument.start, argument.length, b"nx"):
            conditions |= CONDITION_NX
        elif equals_nocase(argument.start, argument.length, b"xx"):
            conditions |= CONDITION_XX
        elif equals_nocase(argument.start, argument.length, b"gt"):
            conditions |= CONDITION_GT
        elif equals_nocase(argument.start, argument.length, b"lt"):
            conditions |= CONDITION_LT
        else:
            return reply_unsupported_option(context, output, &argument)
    if conditions & CONDITION_NX and conditions & (CONDITION_XX | CONDITION_GT | CONDITION_LT):
        return reply_error(context, output, ERR_NX_WITH_OTHERS)
    if conditions & CONDITION_GT and conditions & CONDITION_LT:
        return reply_error(context, output, ERR_GT_AND_LT)
    if parse_int64(time_argument.start, time_argument.length, &when) != INT_OK:
        return reply_error(context, output, ERR_NOT_INTEGER)
    if unit_ms != 1:
        if when > INT64_MAX // unit_ms or when < INT64_MIN // unit_ms:
            return reply_error(context, output, time_error)
        when *= unit_ms
    now = keyspace_clock_ms(context)
    if relative:
        if when > INT64_MAX - now:
            return reply_error(context, output, time_error)
        when += now
    if keyspace_peek(context, key) == NULL:
        return reply_integer(output, 0)
    if conditions:
        current = keyspace_deadline(context, key)          # 0: none (Redis's -1)
        if conditions & CONDITION_NX and current != 0:
            return reply_integer(output, 0)
        if conditions & CONDITION_XX and current == 0:
            return reply_integer(output, 0)
        if conditions & CONDITION_GT and (current == 0 or when <= current):
            return reply_integer(output, 0)
        if conditions & CONDITION_LT and current != 0 and when >= current:
            return reply_integer(output, 0)
    result = keyspace_set_deadline(context, session, key, when)     # not after the clock: deleted
    if result < 0:
        return reply_error(context, output, ERR_OUT_OF_MEMORY)
    return reply_integer(output, 1)


cdef int command_expire(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    return expire_generic(context, session, request, position, 1000, True, ERR_EXPIRE_TIME_EXPIRE)


cdef int command_pexpire(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    return expire_generic(context, session, request, position, 1, True, ERR_EXPIRE_TIME_PEXPIRE)


cdef int command_expireat(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil:
    return expire_generic(context, session, request, position, 1000, False, ERR_EXPIRE_TIME_EXPIREAT)


cdef int command_pexpireat(ServerContext *context, Session *session, const Request *request,
                           size_t position) noexcept nogil:
    return expire_generic(context, session, request, position, 1, False, ERR_EXPIRE_TIME_PEXPIREAT)


# ---- TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST --------------------------------------------

cdef int ttl_generic(ServerContext *context, Session *session, const Request *request, size_t position,
                     bint milliseconds, bint absolute) noexcept nogil:
    """TTL and its siblings, as Redis's ttlGenericCommand: -2 for a missing
    key (counted as a miss), -1 for one without a deadline, else the time
    left (never below 0; TTL rounds to the nearest second) or the deadline."""
    cdef int64_t key, deadline, value
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    if keyspace_read(context, key) == NULL:
        return reply_integer(&session.output, -2)
    deadline = keyspace_deadline(context, key)
    if deadline == 0:
        return reply_integer(&session.output, -1)
    value = deadline if absolute else deadline - keyspace_clock_ms(context)
    if value < 0:
        value = 0
    return reply_integer(&session.output, value if milliseconds else (value + 500) // 1000)


cdef int command_ttl(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil:
    return ttl_generic(context, session, request, position, False, False)


cdef int command_pttl(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    return ttl_generic(context, session, request, position, True, False)


cdef int command_expiretime(ServerContext *context, Session *session, const Request *request,
                            size_t position) noexcept nogil:
    return ttl_generic(context, session, request, position, False, True)


cdef int command_pexpiretime(ServerContext *context, Session *session, const Request *request,
                             size_t position) noexcept nogil:
    return ttl_generic(context, session, request, position, True, True)


cdef int command_persist(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """PERSIST key: 1 if its deadline was removed, 0 if it had none or is missing."""
    cdef int64_t key
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    if keyspace_peek(context, key) == NULL:
        return reply_integer(&session.output, 0)
    return reply_integer(&session.output, 1 if keyspace_persist(context, session, key) else 0)


# ---- SET's and GETEX's options; SETEX, PSETEX, GETEX -----------------------------------------

cdef bint expire_option_take(ExpireOption *option, const Argument *argument, const Request *request,
                             size_t *position, bint for_set) noexcept nogil:
    """If ``argument`` is an expiry option allowed here, record it (taking
    its time argument, the next one, for EX/PX/EXAT/PXAT) and return True.
    As Redis's parseExtendedStringArgumentsOrReply: KEEPTTL only for SET,
    PERSIST only for GETEX, none with another kind (the same kind again is
    allowed, the last one counts), a time option needs a next argument;
    otherwise False (the caller's syntax error)."""
    cdef ExpireOptionKind kind
    cdef const char *word = argument.start
    cdef size_t length = argument.length
    if equals_nocase(word, length, b"ex"):
        kind = OPTION_EX
    elif equals_nocase(word, length, b"px"):
        kind = OPTION_PX
    elif equals_nocase(word, length, b"exat"):
        kind = OPTION_EXAT
    elif equals_nocase(word, length, b"pxat"):
        kind = OPTION_PXAT
    elif equals_nocase(word, length, b"keepttl") and for_set:
        kind = OPTION_KEEPTTL
    elif equals_nocase(word, length, b"persist") and not for_set:
        kind = OPTION_PERSIST
    else:
        return False
    if option.kind != OPTION_NONE and option.kind != kind:
        return False
    if kind != OPTION_KEEPTTL and kind != OPTION_PERSIST:
        if position[0] >= request.length:
            return False
        next_argument(request.data, position, &option.time)
    option.kind = kind
    return True


cdef bint expire_option_deadline(ServerContext *context, Output *output, const ExpireOption *option,
                                 const char *error, int64_t *deadline, int *status) noexcept nogil:
    """The deadline (Unix ms) of an EX/PX/EXAT/PXAT option, as Redis's
    getExpireMillisecondsOrReply: not an integer -> ``value is not an
    integer``; not positive, or overflowing by unit or by adding the clock ->
    ``error`` (``invalid expire time in '...' command``). False when it
    replied (``status`` set). KEEPTTL/PERSIST/none: True, ``deadline`` 0."""
    cdef int64_t value, now
    deadline[0] = 0
    if option.kind == OPTION_NONE or option.kind == OPTION_KEEPTTL or option.kind == OPTION_PERSIST:
        return True
    if parse_int64(option.time.start, option.time.length, &value) != INT_OK:
        status[0] = reply_error(context, output, ERR_NOT_INTEGER)
        return False
    if value <= 0 or ((option.kind == OPTION_EX or option.kind == OPTION_EXAT) and value > INT64_MAX // 1000):
        status[0] = reply_error(context, output, error)
        return False
    if option.kind == OPTION_EX or option.kind == OPTION_EXAT:
        value *= 1000
    if option.kind == OPTION_EX or option.kind == OPTION_PX:
        now = keyspace_clock_ms(context)
        if value > INT64_MAX - now:
            status[0] = reply_error(context, output, error)
            return False
        value += now
    deadline[0] = value
    return True


cdef int setex_generic(ServerContext *context, Session *session, const Request *request, size_t position,
                       ExpireOptionKind kind, const char *error) noexcept nogil:
    """SETEX key seconds value / PSETEX key milliseconds value: +OK, the key
    set with the deadline (the time is checked before the value, as Redis
    checks it before anything else)."""
    cdef ExpireOption option
    cdef int64_t key, value, deadline
    cdef int status
    if not read_integer(context, &session.output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    option.kind = kind
    next_argument(request.data, &position, &option.time)
    if not expire_option_deadline(context, &session.output, &option, error, &deadline, &status):
        return status
    if not read_integer(context, &session.output, request, &position, &value, ERR_NOT_INTEGER, &status):
        return status
    if keyspace_set_expiring(context, session, key, value, deadline) < 0:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    return output_text(&session.output, b"+OK\r\n")


cdef int command_setex(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    return setex_generic(context, session, request, position, OPTION_EX, ERR_EXPIRE_TIME_SETEX)


cdef int command_psetex(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    return setex_generic(context, session, request, position, OPTION_PX, ERR_EXPIRE_TIME_PSETEX)


cdef int command_getex(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]: the value (or null, before
    the time is checked, as Redis), then the deadline changed: set, removed
    (PERSIST), or the key deleted when an EXAT/PXAT is not after the clock."""
    cdef Output *output = &session.output
    cdef ExpireOption option
    cdef Argument argument
    cdef int64_t key, value, deadline
    cdef int64_t *found
    cdef int status
    option.kind = OPTION_NONE
    if not read_integer(context, output, request, &position, &key, ERR_KEY_NOT_INTEGER, &status):
        return status
    while position < request.length:
        next_argument(request.data, &position, &argument)
        if not expire_option_take(&option, &argument, request, &position, False):
            return reply_error(context, output, ERR_SYNTAX)
    found = keyspace_read(context, key)
    if found == NULL:
        return reply_null(session)
    value = found[0]
    if not expire_option_deadline(context, output, &option, ERR_EXPIRE_TIME_GETEX, &deadline, &status):
        return status
    if reply_bulk_integer(output, value) < 0:
        return -1
    if option.kind == OPTION_PERSIST:
        keyspace_persist(context, session, key)
    elif deadline != 0 and keyspace_set_deadline(context, session, key, deadline) < 0:
        return -1
    return 0
