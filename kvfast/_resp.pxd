from kvfast._command cimport RespCommand
from kvfast._context cimport ServerContext, Session
from kvfast._store cimport Store

cdef ssize_t resp_answer(ServerContext *context, Session *session,
                         const char *data, size_t length) noexcept nogil
cdef size_t resp_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil
cdef bint resp_has_command(const char *name, size_t length) noexcept nogil
cdef int resp_execute_inline(ServerContext *context, Session *session, const char *line,
                             size_t length) noexcept nogil
cdef const RespCommand *resp_commands(size_t *count) noexcept nogil
