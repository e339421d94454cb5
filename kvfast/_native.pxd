from kvfast._context cimport ServerContext, Session
from kvfast._store cimport Store

cdef ssize_t native_frame(ServerContext *context, Session *session, const char *data, size_t length,
                          size_t *line_length) noexcept nogil
cdef int native_execute(ServerContext *context, Session *session, const char *line, size_t length,
                        bint *not_native) noexcept nogil
cdef int native_unknown(ServerContext *context, Session *session, const char *line, size_t length) noexcept nogil
cdef size_t native_prefetch_key(const Store *store, const char *data, size_t length) noexcept nogil
