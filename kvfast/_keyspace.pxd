# The keyspace layer: what every command of either protocol calls to read or
# change the store. Each operation does, in one place, the store operation,
# the hit/miss counters, the append-only log's record of the effect and the
# session's "replies not yet persisted" mark (as Redis's db.c lookupKey/setKey
# with call() propagating). No protocol module calls store_* or aof_* itself.
# Per-key state (expiry, WATCH, memory accounting) hooks in here.
#
# WATCH: EVERY function here that changes a key calls signal_modified(context, key)
# after the change (and keyspace_clear touches every watched key present
# before it clears), which breaks the transactions watching it
# (kvfast/_multi.pyx). A new write path -- a new command's keyspace
# operation, and expiry when it comes (an expired key's removal is a change,
# as Redis's touchWatchedKey on expire) -- must go through signal_modified too; no
# command calls the watch functions itself. While no session watches, signal_modified
# is one counter compare.
#
# EXPIRY: a key's deadline (Unix ms) lives in ``context.expires`` beside the
# main table (Redis's db->expires), so a key without one costs nothing more.
# A key whose deadline is before the clock has expired: every read here
# (keyspace_read, peek, contains, scan) and every write first removes it
# (keyspace_expire_if_due: a logged delete, signal_modified for WATCH, as
# Redis's expireIfNeeded), so no command ever sees one; the active sweep
# (kvfast/_expire.pyx) removes those nobody touches. While no key has a
# deadline (``context.expiry.volatile_keys == 0``) each of those costs one
# compare. The clock is read once per loop iteration at most (keyspace_clock_ms,
# as Redis's command time snapshot). Writes that replace a value clear its
# deadline (keyspace_upsert: SET, MSET, GETSET); those that change it keep it
# (keyspace_overwrite, keyspace_increment: INCR, APPEND, INCRBYFLOAT); the log
# records the deadline with the value (an ``X`` record) whenever one is kept.
# Inlined helpers: the protocols' hot paths compile them in place.
from libc.errno cimport ENOMEM
from libc.stdint cimport int64_t, uint8_t, uint64_t, INT64_MAX

from kvfast._aof cimport (
    aof_reserve, aof_append_set, aof_append_delete, aof_append_clear, aof_append_set_expiring, aof_append_deadline,
    aof_append_persist,
)
from kvfast._context cimport (
    ServerContext, Session, COUNTER_KEYSPACE_HITS, COUNTER_KEYSPACE_MISSES, COUNTER_EXPIRED_KEYS,
)
from kvfast._multi cimport watch_touch, watch_touch_present
from kvfast._store cimport (
    StoreScanEmit, store_insert, store_upsert, store_lookup, store_delete, store_increment, store_clear, store_count,
    store_scan, store_meta_of,
)
from kvfast._system cimport realtime_ms


cdef extern from *:
    """
    #define KVFAST_DEADLINE_WEIGHT_LIMIT_MS ((int64_t)1 << 38)
    """
    # avg_ttl's sum counts a deadline at most this far (8.7 years) from the start
    const int64_t DEADLINE_WEIGHT_LIMIT_MS "KVFAST_DEADLINE_WEIGHT_LIMIT_MS"


cdef inline void signal_modified(ServerContext *context, int64_t key) noexcept nogil:
    """``key`` changed: break the transactions that watch it. One compare
    while nobody watches (the write path's only cost of WATCH)."""
    if context.watch_count != 0:
        watch_touch(context, key)


cdef inline void mark_unpersisted(Session *session) noexcept nogil:
    """Remember where this session's first reply that depends on the log
    starts (counted from the unsent output), so it can be withheld if the flush
    fails; see EventLoop.persist."""
    if not session.unpersisted:
        session.unpersisted = True
        session.unpersisted_from = session.output.end - session.output.start


# ---- deadlines ----------------------------------------------------------------------------

cdef inline int64_t keyspace_clock_ms(ServerContext *context) noexcept nogil:
    """The wall clock in Unix ms that deadlines are compared with: read once
    per loop iteration (the loop resets ``expiry.clock_ms`` to 0 after each
    epoll_wait), plus the test clock offset."""
    if context.expiry.clock_ms == 0:
        context.expiry.clock_ms = realtime_ms() + context.expiry.clock_offset_ms
    return context.expiry.clock_ms


cdef inline uint64_t deadline_weight(ServerContext *context, int64_t deadline) noexcept nogil:
    """A deadline's share of ``expiry.deadline_sum``: its distance from the
    server's start, clamped to +-DEADLINE_WEIGHT_LIMIT_MS so that the sum of up
    to 2^25 of them cannot wrap; the same deadline always weighs the same, so
    removing it subtracts exactly what adding it added."""
    cdef int64_t weight = deadline - context.started_at * 1000
    if weight > DEADLINE_WEIGHT_LIMIT_MS:
        weight = DEADLINE_WEIGHT_LIMIT_MS
    elif weight < -DEADLINE_WEIGHT_LIMIT_MS:
        weight = -DEADLINE_WEIGHT_LIMIT_MS
    return <uint64_t>weight


cdef inline int64_t keyspace_deadline(ServerContext *context, int64_t key) noexcept nogil:
    """``key``'s deadline (Unix ms), or 0 when it has none (or is absent).
    Does not expire it: callers have looked the key up through this layer."""
    cdef int64_t *deadline
    if context.expiry.volatile_keys == 0:
        return 0
    deadline = store_lookup(&context.expires, key)
    return 0 if deadline == NULL else deadline[0]


cdef inline int store_deadline(ServerContext *context, int64_t key, int64_t deadline) noexcept nogil:
    """Record ``deadline`` for the present ``key`` in ``expires`` (not logged):
    0, or -1 with errno ENOMEM (nothing changes)."""
    cdef int64_t *current = store_lookup(&context.expires, key)
    if current != NULL:
        context.expiry.deadline_sum += deadline_weight(context, deadline) - deadline_weight(context, current[0])
        current[0] = deadline
    else:
        if store_insert(&context.expires, key, deadline) < 0:
            return -1
        context.expiry.volatile_keys += 1
        context.expiry.deadline_sum += deadline_weight(context, deadline)
    if deadline < context.expiry.earliest_ms:
        context.expiry.earliest_ms = deadline
    return 0


cdef inline bint forget_deadline(ServerContext *context, int64_t key) noexcept nogil:
    """Remove ``key``'s deadline from ``expires`` (not logged): whether it had one."""
    cdef int64_t *current
    if context.expiry.volatile_keys == 0:
        return False
    current = store_lookup(&context.expires, key)
    if current == NULL:
        return False
    context.expiry.deadline_sum -= deadline_weight(context, current[0])
    store_delete(&context.expires, key)
    context.expiry.volatile_keys -= 1
    return True


cdef inline bint keyspace_drop(ServerContext *context, int64_t key) noexcept nogil:
    """Remove ``key`` on the server's own initiative (expiry; eviction): its
    deadline too, the delete logged and WATCH signalled, but no session's
    replies wait for it (none acknowledges it). True if it was present. The
    log's record is not reserved: if it cannot be queued (out of memory) the
    key's deadline in the log still makes any replay drop it."""
    if not store_delete(&context.store, key):
        return False
    forget_deadline(context, key)
    signal_modified(context, key)
    if context.aof != NULL:
        aof_append_delete(context.aof, key)
    return True


cdef inline bint expire_now(ServerContext *context, int64_t key) noexcept nogil:
    """The slow half of keyspace_expire_if_due (some key has a deadline)."""
    cdef int64_t *deadline = store_lookup(&context.expires, key)
    if deadline == NULL or deadline[0] >= keyspace_clock_ms(context):
        return False
    keyspace_drop(context, key)
    context.counters[<int>COUNTER_EXPIRED_KEYS] += 1
    return True


cdef inline bint keyspace_expire_if_due(ServerContext *context, int64_t key) noexcept nogil:
    """If ``key``'s deadline has passed (it is before the clock, as Redis's
    ``now > when``), remove it (keyspace_drop) and count it in expired_keys:
    True. False when it has no deadline, a later one, or is absent. One
    compare while no key has a deadline."""
    if context.expiry.volatile_keys == 0:
        return False
    return expire_now(context, key)


cdef inline int keyspace_set_deadline(ServerContext *context, Session *session, int64_t key,
                                      int64_t deadline) noexcept nogil:
    """Give the present, live ``key`` the deadline ``deadline`` (Unix ms), logged
    as a ``T`` record: EXPIRE and friends, GETEX EX. A deadline the clock has
    already reached deletes the key instead (logged as a delete, as Redis's
    checkAlreadyExpired: an EXPIRE into the past is a DEL). Returns 1 if set,
    2 if the key was deleted, -1 with errno ENOMEM (nothing changes)."""
    if deadline <= keyspace_clock_ms(context):
        keyspace_delete(context, session, key)
        return 2
    if store_deadline(context, key, deadline) < 0:
        return -1
    signal_modified(context, key)
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_deadline(context.aof, key, deadline)
    return 1


cdef inline bint keyspace_persist(ServerContext *context, Session *session, int64_t key) noexcept nogil:
    """Remove the live ``key``'s deadline (PERSIST, GETEX PERSIST), logged as a
    ``P`` record: whether it had one."""
    if not forget_deadline(context, key):
        return False
    signal_modified(context, key)
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_persist(context.aof, key)
    return True


cdef inline int keyspace_begin_write(ServerContext *context, size_t changes) noexcept nogil:
    """Whether a write command may change the store (at most ``changes`` keys):
    0, or the errno to refuse it with (the log's failure in force, or ENOMEM).
    Room for that many records is reserved, so logging the changes afterwards
    cannot fail, and the store and the log never disagree. The command
    dispatchers call this once per write command, before running it."""
    if context.aof == NULL:
        return 0
    if context.aof.failure != 0:
        return context.aof.failure
    # While keys have deadlines, each change may first log its key's expiry.
    if aof_reserve(context.aof, changes if context.expiry.volatile_keys == 0 else 2 * changes) < 0:
        return ENOMEM
    return 0


# ---- eviction metadata (maxmemory's LRU/LFU policies; kvfast/_evict.pyx) --------
# While the store keeps no metadata (every other policy, and maxmemory 0), the
# cost on the request path is one flag test per read or overwrite.

cdef enum:
    LFU_INITIAL = 5                 # a new key's frequency byte (Redis's LFU_INIT_VAL)
    LFU_LOG_FACTOR = 10             # Redis's default lfu-log-factor
    LRU_TICKS_PER_KEYS = 32         # the recency clock ticks every (keys / this) accesses...
    LRU_MIN_TICK = 64               # ...but not more often than every this many


cdef inline uint64_t memory_random(ServerContext *context) noexcept nogil:
    """64 pseudo-random bits (xorshift64*), for sampling and LFU's increments."""
    cdef uint64_t x = context.memory.random
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    context.memory.random = x
    return x * 0x2545F4914F6CDD1DULL


cdef inline void note_access(ServerContext *context) noexcept nogil:
    """Count one access for the LRU clock, which ticks (one 8-bit step, new
    keys stamped with it) every max(LRU_MIN_TICK, keys / LRU_TICKS_PER_KEYS)
    accesses: a logical clock whose 256 steps span about 8 times the keys in
    accesses, whatever the request rate (see kvfast/_evict.pyx)."""
    cdef size_t period = store_count(&context.store) // LRU_TICKS_PER_KEYS
    context.memory.lru_touches += 1
    if context.memory.lru_touches >= (period if period > LRU_MIN_TICK else LRU_MIN_TICK):
        context.memory.lru_touches = 0
        context.memory.lru_clock = <uint8_t>(context.memory.lru_clock + 1)
        context.store.meta_fill = context.memory.lru_clock


cdef inline void touch_entry(ServerContext *context, const int64_t *value) noexcept nogil:
    """The key whose value ``value`` points to was used: stamp it with the LRU
    clock, or bump its LFU counter logarithmically (Redis's LFULogIncr: the
    more it holds, the rarer a step, saturating at 255)."""
    cdef uint8_t *meta = store_meta_of(&context.store, value)
    cdef uint64_t base
    if meta == NULL:
        return
    if context.memory.lfu:
        if meta[0] == 255:
            return
        base = meta[0] - LFU_INITIAL if meta[0] > LFU_INITIAL else 0
        if (memory_random(context) >> 32) * (base * LFU_LOG_FACTOR + 1) < (<uint64_t>1 << 32):
            meta[0] += 1
    else:
        note_access(context)
        meta[0] = context.memory.lru_clock


cdef inline void touch_key(ServerContext *context, int64_t key) noexcept nogil:
    """touch_entry for a key just written (found again; only with metadata on)."""
    cdef int64_t *found
    if context.store.meta_enabled:
        found = store_lookup(&context.store, key)
        if found != NULL:
            touch_entry(context, found)


cdef inline int64_t *keyspace_read(ServerContext *context, int64_t key) noexcept nogil:
    """The value of ``key`` (NULL: absent or expired), counted as a keyspace
    hit or miss (and, under an LRU/LFU policy, as a use of the key)."""
    cdef int64_t *found = store_lookup(&context.store, key)
    if found != NULL and context.expiry.volatile_keys != 0 and expire_now(context, key):
        found = NULL
    context.counters[<int>(COUNTER_KEYSPACE_MISSES if found == NULL else COUNTER_KEYSPACE_HITS)] += 1
    if found != NULL and context.store.meta_enabled:
        touch_entry(context, found)
    return found


cdef inline int64_t *keyspace_peek(ServerContext *context, int64_t key) noexcept nogil:
    """The value of ``key`` (NULL: absent or expired), not counted: what a
    write reads before changing the key (INCRBYFLOAT, APPEND; Redis's
    lookupKeyWrite). The pointer is only valid until the store next changes."""
    cdef int64_t *found = store_lookup(&context.store, key)
    if found != NULL and context.expiry.volatile_keys != 0 and expire_now(context, key):
        return NULL
    return found


cdef inline bint keyspace_contains(ServerContext *context, int64_t key) noexcept nogil:
    """Whether ``key`` is present and live (not counted: EXISTS, SET XX)."""
    return keyspace_peek(context, key) != NULL


cdef inline size_t keyspace_size(ServerContext *context) noexcept nogil:
    """Keys present, counting expired ones not removed yet (DBSIZE, as Redis)."""
    return store_count(&context.store)


cdef inline void log_value(ServerContext *context, Session *session, int64_t key, int64_t value,
                           int64_t deadline) noexcept nogil:
    """Log ``key = value`` with its deadline (0: none): an ``S`` or an ``X`` record."""
    if context.aof != NULL:
        mark_unpersisted(session)
        if deadline == 0:
            aof_append_set(context.aof, key, value)
        else:
            aof_append_set_expiring(context.aof, key, value, deadline)


cdef inline void log_set(ServerContext *context, Session *session, int64_t key, int64_t value) noexcept nogil:
    log_value(context, session, key, value, 0)


cdef inline bint expired_in_place(ServerContext *context, int64_t key) noexcept nogil:
    """For a write about to replace ``key``'s value: if its deadline has
    passed, forget the deadline and count the expiry (the stale value is left
    for the write to replace, which logs the key's new state in one record):
    True, the key is to be treated as absent. One compare while no key has
    a deadline."""
    cdef int64_t *deadline
    if context.expiry.volatile_keys == 0:
        return False
    deadline = store_lookup(&context.expires, key)
    if deadline == NULL or deadline[0] >= keyspace_clock_ms(context):
        return False
    forget_deadline(context, key)
    context.counters[<int>COUNTER_EXPIRED_KEYS] += 1
    return True


cdef inline int keyspace_insert(ServerContext *context, Session *session, int64_t key,
                                int64_t value) noexcept nogil:
    """Insert ``key`` only if absent (or expired): 1 if inserted (and logged),
    0 if present (nothing changes), -1 with errno ENOMEM."""
    cdef int result
    if expired_in_place(context, key):
        store_upsert(&context.store, key, value)      # present: replaced in place, cannot fail
        result = 1
    else:
        result = store_insert(&context.store, key, value)
    if result == 1:
        if context.store.meta_enabled and context.memory.lru:
            note_access(context)
        signal_modified(context, key)
        log_set(context, session, key, value)
    return result


cdef inline int keyspace_upsert(ServerContext *context, Session *session, int64_t key,
                                int64_t value) noexcept nogil:
    """Set ``key`` to ``value`` without a deadline (SET clears a TTL; logged):
    1 if new (or expired), 0 if overwritten, -1 with errno ENOMEM. While
    keys have deadlines, one lookup in ``expires`` (a key without a deadline
    pays no more)."""
    cdef int64_t *deadline = NULL
    cdef bint expired = False
    cdef int result
    if context.expiry.volatile_keys != 0:
        deadline = store_lookup(&context.expires, key)
        if deadline != NULL:
            expired = deadline[0] < keyspace_clock_ms(context)
            forget_deadline(context, key)
            if expired:
                context.counters[<int>COUNTER_EXPIRED_KEYS] += 1
    result = store_upsert(&context.store, key, value)
    if result >= 0:
        if expired:
            result = 1
        if context.store.meta_enabled:
            if result == 0:
                touch_key(context, key)
            elif context.memory.lru:
                note_access(context)
        signal_modified(context, key)
        log_set(context, session, key, value)
    return result


cdef inline int keyspace_set_expiring(ServerContext *context, Session *session, int64_t key, int64_t value,
                                      int64_t deadline) noexcept nogil:
    """Set ``key`` to ``value`` with ``deadline`` (Unix ms; 0: none), logged in
    one record (SET EX, SETEX, RENAME and COPY carrying a TTL). A deadline the
    clock has reached deletes the key instead (logged as a delete; nothing is
    stored, as Redis's SET with an EXAT in the past). Returns 1 if new, 0 if
    overwritten, -1 with errno ENOMEM (nothing changes)."""
    cdef bint expired
    cdef int result
    if deadline == 0:
        return keyspace_upsert(context, session, key, value)
    if deadline <= keyspace_clock_ms(context):
        expired = expired_in_place(context, key)
        return 1 if not keyspace_delete(context, session, key) or expired else 0
    expired = expired_in_place(context, key)
    result = store_upsert(&context.store, key, value)
    if result < 0:
        return -1
    if store_deadline(context, key, deadline) < 0:
        if result == 1:
            store_delete(&context.store, key)
        return -1
    if expired:
        result = 1
    signal_modified(context, key)
    log_value(context, session, key, value, deadline)
    return result


cdef inline int keyspace_overwrite(ServerContext *context, Session *session, int64_t key,
                                   int64_t value) noexcept nogil:
    """Change the value of ``key`` (just read live through keyspace_peek)
    keeping its deadline (APPEND, INCRBYFLOAT, SET KEEPTTL; as Redis's
    dbOverwrite), or create it without one; logged with the deadline.
    1 if new, 0 if overwritten, -1 with errno ENOMEM."""
    cdef int result = store_upsert(&context.store, key, value)
    if result >= 0:
        if result == 0:
            touch_key(context, key)
        signal_modified(context, key)
        log_value(context, session, key, value, keyspace_deadline(context, key))
    return result


cdef inline bint keyspace_delete(ServerContext *context, Session *session, int64_t key) noexcept nogil:
    """Remove ``key`` and its deadline: True if it was present and live (the
    delete is logged; an expired key is removed as an expiry, and False)."""
    if keyspace_expire_if_due(context, key):
        return False
    if not store_delete(&context.store, key):
        return False
    forget_deadline(context, key)
    signal_modified(context, key)
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_delete(context.aof, key)
    return True


cdef inline bint keyspace_take(ServerContext *context, Session *session, int64_t key,
                               int64_t *value) noexcept nogil:
    """Remove ``key`` and return its value (GETDEL): True with ``value`` set if
    it was present (counted as a hit; the delete is logged through
    keyspace_delete), False if absent (a miss; nothing changes)."""
    cdef int64_t *found = keyspace_read(context, key)
    if found == NULL:
        return False
    value[0] = found[0]
    return keyspace_delete(context, session, key)


cdef inline int keyspace_increment(ServerContext *context, Session *session, int64_t key, int64_t delta,
                                   int64_t *result) noexcept nogil:
    """Add ``delta`` to ``key`` (absent or expired counts as 0), the sum in
    ``result`` and logged as the key's new value with its deadline, which an
    increment keeps (the log holds effects, not commands). Returns 0; 1 if
    the sum would overflow (nothing changes); -1 with errno ENOMEM."""
    cdef int status
    if expired_in_place(context, key):
        store_upsert(&context.store, key, delta)      # present: replaced in place, cannot fail
        result[0] = delta
        status = 0
    else:
        status = store_increment(&context.store, key, delta, result)
    if status == 0:
        touch_key(context, key)
        signal_modified(context, key)
        log_value(context, session, key, result[0], keyspace_deadline(context, key))
    return status


cdef inline void keyspace_clear(ServerContext *context, Session *session) noexcept nogil:
    """Remove every key (FLUSHALL), logged as one record. As Redis's
    signalFlushedDb, the watched keys that were present are touched (an absent
    watched key stays absent: no change)."""
    if context.watch_count != 0:
        watch_touch_present(context)
    store_clear(&context.store)
    store_clear(&context.expires)
    context.expiry.volatile_keys = 0
    context.expiry.deadline_sum = 0
    context.expiry.sweeping = False
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_clear(context.aof)


cdef struct LiveKeysFilter:
    # keyspace_scan's wrapper around a walk's receiver: drops expired keys.
    ServerContext *context
    StoreScanEmit emit
    void *target
    int64_t now


cdef inline void emit_if_live(void *filter_pointer, int64_t key, int64_t value) noexcept nogil:
    cdef LiveKeysFilter *filter = <LiveKeysFilter *>filter_pointer
    cdef int64_t *deadline = store_lookup(&filter.context.expires, key)
    if deadline == NULL or deadline[0] >= filter.now:
        filter.emit(filter.target, key, value)


cdef inline uint64_t keyspace_scan(ServerContext *context, uint64_t cursor, size_t home_slots, StoreScanEmit emit,
                                   void *target) noexcept nogil:
    """One step of a keyspace walk (SCAN, KEYS, RANDOMKEY): emit every live key
    whose hash lies in the next ``home_slots`` home slots from ``cursor``, and
    return the next cursor (0: done). store_scan's contract: a full walk
    emits every key present from its start to its end, whatever changes in
    between. Not counted as hits or misses (as Redis's SCAN). Expired keys
    are not emitted (nor removed here: ``emit`` runs inside the walk, which
    must not change the store; the sweep or their next access removes them)."""
    cdef LiveKeysFilter filter
    if context.expiry.volatile_keys == 0:
        return store_scan(&context.store, cursor, home_slots, emit, target)
    filter.context, filter.emit, filter.target, filter.now = context, emit, target, keyspace_clock_ms(context)
    return store_scan(&context.store, cursor, home_slots, emit_if_live, &filter)


cdef inline size_t keyspace_scan_weight(ServerContext *context) noexcept nogil:
    """About how many slots, across both tables, one home slot of a
    keyspace_scan step walks (rounded up): 1, or more while a resize drains
    the old table over the same hash range (2 while growing; more while
    shrinking, where the old table is the larger). For bounding SCAN's work."""
    cdef size_t main = context.store.main.capacity, draining = context.store.draining.capacity
    if main == 0 or draining == 0:
        return 1
    return 1 + (draining + main - 1) // main


cdef inline size_t keyspace_scan_span(ServerContext *context) noexcept nogil:
    """The home slots a full keyspace walk covers (the main table's size; 0
    when nothing was ever stored): the cursor of home slot ``i`` of that
    walk is ceil(i * 2^64 / span) (RANDOMKEY picks windows by it)."""
    return context.store.main.capacity


cdef inline int keyspace_rename(ServerContext *context, Session *session, int64_t source, int64_t destination,
                                bint only_if_absent) noexcept nogil:
    """Move ``source``'s value and deadline to ``destination`` (RENAME,
    RENAMENX; Redis carries the TTL), as a set of ``destination`` then a delete
    of ``source`` (both logged). Returns 1 if moved (or ``source`` is
    ``destination``, which stays), 0 if ``only_if_absent`` and ``destination``
    exists (nothing changes), -2 if ``source`` is absent, -1 with errno ENOMEM
    (nothing changes). Not counted as hits or misses (Redis looks both keys
    up for writing)."""
    cdef int64_t *found = keyspace_peek(context, source)
    cdef int64_t value, deadline
    if found == NULL:
        return -2
    if source == destination:
        return 0 if only_if_absent else 1
    value = found[0]                              # the set may move entries
    deadline = keyspace_deadline(context, source)
    if only_if_absent and keyspace_contains(context, destination):
        return 0
    if keyspace_set_expiring(context, session, destination, value, deadline) < 0:
        return -1
    keyspace_delete(context, session, source)
    return 1


cdef inline int keyspace_copy(ServerContext *context, Session *session, int64_t source, int64_t destination,
                              bint replace) noexcept nogil:
    """Set ``destination`` to ``source``'s value and deadline (COPY; logged as
    one set): 1 if copied, 0 if ``source`` is absent or ``destination``
    exists and not ``replace`` (nothing changes), -1 with errno ENOMEM.
    ``source`` is read as a hit or miss (Redis's lookupKeyRead). The caller
    refuses source == destination."""
    cdef int64_t *found = keyspace_read(context, source)
    cdef int64_t value, deadline
    if found == NULL:
        return 0
    value = found[0]
    deadline = keyspace_deadline(context, source)
    if not replace and keyspace_contains(context, destination):
        return 0
    return -1 if keyspace_set_expiring(context, session, destination, value, deadline) < 0 else 1
