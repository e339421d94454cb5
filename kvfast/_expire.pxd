# Key expiry (kvfast/_expire.pyx): the active sweep the loop runs, the load
# step after a replay, and the RESP expiry commands. The per-key deadline
# store and its operations are kvfast/_keyspace.pxd's (keyspace_deadline,
# keyspace_set_deadline, keyspace_persist, keyspace_set_expiring, keyspace_drop).
from libc.stdint cimport int64_t

from kvfast._command cimport Request, Argument
from kvfast._context cimport ServerContext, Session
from kvfast._output cimport Output


cdef enum:
    SLICE_BUDGET_US = 1000          # the longest slice of active expiry in one loop iteration
    SWEEP_INTERVAL_US = 100000      # after a sweep ends, the next starts no sooner (and only if a deadline passed)


cdef void expire_init(ServerContext *context) noexcept nogil
cdef bint expire_slice(ServerContext *context, int64_t now_us) noexcept nogil
cdef int expire_timeout_ms(ServerContext *context, int64_t now_us) noexcept nogil
cdef size_t expire_after_load(ServerContext *context) noexcept nogil
cdef int64_t expire_average_ttl_ms(ServerContext *context) noexcept nogil

cdef int command_expire(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_pexpire(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_expireat(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil
cdef int command_pexpireat(ServerContext *context, Session *session, const Request *request,
                           size_t position) noexcept nogil
cdef int command_ttl(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil
cdef int command_pttl(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_expiretime(ServerContext *context, Session *session, const Request *request,
                            size_t position) noexcept nogil
cdef int command_pexpiretime(ServerContext *context, Session *session, const Request *request,
                             size_t position) noexcept nogil
cdef int command_persist(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_setex(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
cdef int command_psetex(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_getex(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil


cdef enum ExpireOptionKind:
    # SET's and GETEX's expiry options (Redis's OBJ_EX...OBJ_PERSIST)
    OPTION_NONE = 0
    OPTION_EX = 1
    OPTION_PX = 2
    OPTION_EXAT = 3
    OPTION_PXAT = 4
    OPTION_KEEPTTL = 5
    OPTION_PERSIST = 6


cdef struct ExpireOption:
    ExpireOptionKind kind
    Argument time               # EX/PX/EXAT/PXAT's argument


cdef bint expire_option_take(ExpireOption *option, const Argument *argument, const Request *request,
                             size_t *position, bint for_set) noexcept nogil
cdef bint expire_option_deadline(ServerContext *context, Output *output, const ExpireOption *option,
                                 const char *error, int64_t *deadline, int *status) noexcept nogil
