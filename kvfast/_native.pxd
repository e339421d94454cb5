from kvfast._context cimport ServerContext, Session

cdef int native_answer(ServerContext *context, Session *session,
                       const char *line, size_t length) noexcept nogil
cdef int native_refuse_long_line(ServerContext *context, Session *session) noexcept nogil
