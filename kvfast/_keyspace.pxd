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
# Inlined helpers: the protocols' hot paths compile them in place.
from libc.errno cimport ENOMEM
from libc.stdint cimport int64_t, uint8_t, uint64_t

from kvfast._aof cimport aof_reserve, aof_append_set, aof_append_delete, aof_append_clear
from kvfast._context cimport ServerContext, Session, COUNTER_KEYSPACE_HITS, COUNTER_KEYSPACE_MISSES
from kvfast._multi cimport watch_touch, watch_touch_present
from kvfast._store cimport (
    StoreScanEmit, store_insert, store_upsert, store_lookup, store_delete, store_increment, store_clear, store_count,
    store_scan, store_meta_of,
)


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
    if aof_reserve(context.aof, changes) < 0:
        return ENOMEM
    return 0


cdef inline void mark_unpersisted(Session *session) noexcept nogil:
    """Remember where this session's first reply that depends on the log
    starts (counted from the unsent output), so it can be withheld if the flush
    fails; see EventLoop.persist."""
    if not session.unpersisted:
        session.unpersisted = True
        session.unpersisted_from = session.output.end - session.output.start


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
    """The value of ``key`` (NULL: absent), counted as a keyspace hit or miss
    (and, under an LRU/LFU policy, as a use of the key)."""
    cdef int64_t *found = store_lookup(&context.store, key)
    context.counters[<int>(COUNTER_KEYSPACE_MISSES if found == NULL else COUNTER_KEYSPACE_HITS)] += 1
    if found != NULL and context.store.meta_enabled:
        touch_entry(context, found)
    return found


cdef inline int64_t *keyspace_peek(ServerContext *context, int64_t key) noexcept nogil:
    """The value of ``key`` (NULL: absent), not counted: what a write reads
    before changing the key (INCRBYFLOAT, APPEND; Redis's lookupKeyWrite).
    The pointer is only valid until the store next changes."""
    return store_lookup(&context.store, key)


cdef inline bint keyspace_contains(ServerContext *context, int64_t key) noexcept nogil:
    """Whether ``key`` is present (not counted: EXISTS, SET XX)."""
    return store_lookup(&context.store, key) != NULL


cdef inline size_t keyspace_size(ServerContext *context) noexcept nogil:
    return store_count(&context.store)


cdef inline void signal_modified(ServerContext *context, int64_t key) noexcept nogil:
    """``key`` changed: break the transactions that watch it. One compare
    while nobody watches (the write path's only cost of WATCH)."""
    if context.watch_count != 0:
        watch_touch(context, key)


cdef inline void log_set(ServerContext *context, Session *session, int64_t key, int64_t value) noexcept nogil:
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_set(context.aof, key, value)


cdef inline int keyspace_insert(ServerContext *context, Session *session, int64_t key,
                                int64_t value) noexcept nogil:
    """Insert ``key`` only if absent: 1 if inserted (and logged), 0 if present
    (nothing changes), -1 with errno ENOMEM."""
    cdef int result = store_insert(&context.store, key, value)
    if result == 1:
        if context.store.meta_enabled and context.memory.lru:
            note_access(context)
        signal_modified(context, key)
        log_set(context, session, key, value)
    return result


cdef inline int keyspace_upsert(ServerContext *context, Session *session, int64_t key,
                                int64_t value) noexcept nogil:
    """Set ``key`` to ``value`` (logged): 1 if new, 0 if overwritten, -1 with errno ENOMEM."""
    cdef int result = store_upsert(&context.store, key, value)
    if result >= 0:
        if context.store.meta_enabled:
            if result == 0:
                touch_key(context, key)
            elif context.memory.lru:
                note_access(context)
        signal_modified(context, key)
        log_set(context, session, key, value)
    return result


cdef inline bint keyspace_delete(ServerContext *context, Session *session, int64_t key) noexcept nogil:
    """Remove ``key``: True if it was present (the delete is logged)."""
    if not store_delete(&context.store, key):
        return False
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
    """Add ``delta`` to ``key`` (absent counts as 0), the sum in ``result`` and
    logged as the key's new value (the log holds effects, not commands).
    Returns 0; 1 if the sum would overflow (nothing changes); -1 with errno ENOMEM."""
    cdef int status = store_increment(&context.store, key, delta, result)
    if status == 0:
        touch_key(context, key)
        signal_modified(context, key)
        log_set(context, session, key, result[0])
    return status


cdef inline void keyspace_clear(ServerContext *context, Session *session) noexcept nogil:
    """Remove every key (FLUSHALL), logged as one record. As Redis's
    signalFlushedDb, the watched keys that were present are touched (an absent
    watched key stays absent: no change)."""
    if context.watch_count != 0:
        watch_touch_present(context)
    store_clear(&context.store)
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_clear(context.aof)


cdef inline uint64_t keyspace_scan(ServerContext *context, uint64_t cursor, size_t home_slots, StoreScanEmit emit,
                                   void *target) noexcept nogil:
    """One step of a keyspace walk (SCAN, KEYS, RANDOMKEY): emit every key
    whose hash lies in the next ``home_slots`` home slots from ``cursor``, and
    return the next cursor (0: done). store_scan's contract: a full walk
    emits every key present from its start to its end, whatever changes in
    between. Not counted as hits or misses (as Redis's SCAN). Keys that must
    not be seen (expired ones, later) are to be filtered here."""
    return store_scan(&context.store, cursor, home_slots, emit, target)


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
    """Move ``source``'s value to ``destination`` (RENAME, RENAMENX), as an
    upsert of ``destination`` then a delete of ``source`` (both logged).
    Returns 1 if moved (or ``source`` is ``destination``, which stays), 0 if
    ``only_if_absent`` and ``destination`` exists (nothing changes), -2 if
    ``source`` is absent, -1 with errno ENOMEM (nothing changes). Not counted
    as hits or misses (Redis looks both keys up for writing)."""
    cdef int64_t *found = store_lookup(&context.store, source)
    cdef int64_t value
    if found == NULL:
        return -2
    if source == destination:
        return 0 if only_if_absent else 1
    value = found[0]                              # the upsert may move entries
    if only_if_absent:
        if keyspace_contains(context, destination):
            return 0
        if keyspace_insert(context, session, destination, value) < 0:
            return -1
    elif keyspace_upsert(context, session, destination, value) < 0:
        return -1
    keyspace_delete(context, session, source)
    return 1


cdef inline int keyspace_copy(ServerContext *context, Session *session, int64_t source, int64_t destination,
                              bint replace) noexcept nogil:
    """Set ``destination`` to ``source``'s value (COPY; logged as a set):
    1 if copied, 0 if ``source`` is absent or ``destination`` exists and not
    ``replace`` (nothing changes), -1 with errno ENOMEM. ``source`` is read as
    a hit or miss (Redis's lookupKeyRead). The caller refuses source ==
    destination."""
    cdef int64_t *found = keyspace_read(context, source)
    cdef int64_t value
    if found == NULL:
        return 0
    value = found[0]
    if not replace:
        return keyspace_insert(context, session, destination, value)
    return -1 if keyspace_upsert(context, session, destination, value) < 0 else 1
