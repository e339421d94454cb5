# The string and server commands of kvfast/_strings.pyx: RESP procs (see
# kvfast/_command.pxd) that kvfast/_resp.pyx's command table points at.
from kvfast._command cimport Request
from kvfast._context cimport ServerContext, Session

cdef int command_set(ServerContext *context, Session *session, const Request *request,
                     size_t position) noexcept nogil
cdef int command_getset(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_getdel(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_mset(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_msetnx(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_incrbyfloat(ServerContext *context, Session *session, const Request *request,
                             size_t position) noexcept nogil
cdef int command_strlen(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_append(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_time(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_role(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_wait(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_swapdb(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_lastsave(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil
cdef int command_save(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_bgsave(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
