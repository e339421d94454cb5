from kvfast._context cimport ServerContext, Session
from kvfast._store cimport Store

cdef ssize_t native_answer(ServerContext *context, Session *session,
                           const char *data, size_t length) noexcept nogil
cdef size_t native_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil
