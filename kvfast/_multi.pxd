# Transactions (MULTI/EXEC/DISCARD/WATCH/UNWATCH) and RESET: see _multi.pyx.
# The keyspace layer (_keyspace.pxd) calls watch_touch/watch_touch_present on
# every change while some session watches; _resp.pyx's execute() hands a
# session's requests to multi_dispatch while it is queueing.
from libc.stdint cimport int64_t

from kvfast._command cimport Request, RespCommand
from kvfast._context cimport ServerContext, Session


ctypedef int (*Executor)(ServerContext *context, Session *session, const Request *request) noexcept nogil


cdef void multi_set_executor(Executor executor) noexcept nogil
cdef void watch_touch(ServerContext *context, int64_t key) noexcept nogil
cdef void watch_touch_present(ServerContext *context) noexcept nogil
cdef void multi_release(ServerContext *context, Session *session) noexcept nogil
cdef void multi_flag_error(Session *session) noexcept nogil
cdef int multi_dispatch(ServerContext *context, Session *session, const Request *request,
                        const RespCommand *command, size_t position, size_t changes) noexcept nogil
cdef int multi_reject_exec(ServerContext *context, Session *session, const char *reason) noexcept nogil

cdef int command_multi(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
cdef int command_exec(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_discard(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_watch(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
cdef int command_unwatch(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_reset(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
