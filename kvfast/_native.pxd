from kvfast._context cimport ServerContext, Session
from kvfast._store cimport Store

cdef int native_answer(ServerContext *context, Session *session,
                       const char *line, size_t length) noexcept nogil
cdef int native_refuse_long_line(ServerContext *context, Session *session) noexcept nogil
cdef size_t native_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil
