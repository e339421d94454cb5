# What the protocols call around every write when the append-only log is on:
# begin_write before changing the store, a log_* call for each change made.
# Inlined helpers; the log itself is _aof.pyx.
from libc.errno cimport ENOMEM
from libc.stdint cimport int64_t

from kvfast._aof cimport aof_reserve, aof_append_set, aof_append_delete, aof_append_clear
from kvfast._context cimport ServerContext, Session


cdef inline int begin_write(ServerContext *context, size_t changes=1) noexcept nogil:
    """Whether a write command may change the store (at most ``changes`` keys):
    0, or the errno to refuse it with (the log's failure in force, or ENOMEM).
    Room for that many records is reserved, so logging the changes afterwards
    cannot fail, and the store and the log never disagree."""
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


cdef inline void log_set(ServerContext *context, Session *session, int64_t key, int64_t value) noexcept nogil:
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_set(context.aof, key, value)


cdef inline void log_delete(ServerContext *context, Session *session, int64_t key) noexcept nogil:
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_delete(context.aof, key)


cdef inline void log_clear(ServerContext *context, Session *session) noexcept nogil:
    if context.aof != NULL:
        mark_unpersisted(session)
        aof_append_clear(context.aof)
