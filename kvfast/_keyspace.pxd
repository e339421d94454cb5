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
from libc.stdint cimport int64_t

from kvfast._aof cimport aof_reserve, aof_append_set, aof_append_delete, aof_append_clear
from kvfast._context cimport ServerContext, Session, COUNTER_KEYSPACE_HITS, COUNTER_KEYSPACE_MISSES
from kvfast._multi cimport watch_touch, watch_touch_present
from kvfast._store cimport (
    store_insert, store_upsert, store_lookup, store_delete, store_increment, store_clear, store_count,
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


cdef inline int64_t *keyspace_read(ServerContext *context, int64_t key) noexcept nogil:
    """The value of ``key`` (NULL: absent), counted as a keyspace hit or miss."""
    cdef int64_t *found = store_lookup(&context.store, key)
    context.counters[<int>(COUNTER_KEYSPACE_MISSES if found == NULL else COUNTER_KEYSPACE_HITS)] += 1
    return found


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
        signal_modified(context, key)
        log_set(context, session, key, value)
    return result


cdef inline int keyspace_upsert(ServerContext *context, Session *session, int64_t key,
                                int64_t value) noexcept nogil:
    """Set ``key`` to ``value`` (logged): 1 if new, 0 if overwritten, -1 with errno ENOMEM."""
    cdef int result = store_upsert(&context.store, key, value)
    if result >= 0:
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


cdef inline int keyspace_increment(ServerContext *context, Session *session, int64_t key, int64_t delta,
                                   int64_t *result) noexcept nogil:
    """Add ``delta`` to ``key`` (absent counts as 0), the sum in ``result`` and
    logged as the key's new value (the log holds effects, not commands).
    Returns 0; 1 if the sum would overflow (nothing changes); -1 with errno ENOMEM."""
    cdef int status = store_increment(&context.store, key, delta, result)
    if status == 0:
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
