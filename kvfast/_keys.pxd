# The generic key commands and keyspace iteration of RESP (kvfast/_keys.pyx):
# procs that _resp.pyx's command table rows point to.
from kvfast._command cimport Request
from kvfast._context cimport ServerContext, Session


cdef bint glob_match(const char *pattern, size_t pattern_length, const char *text,
                     size_t text_length) noexcept nogil

cdef int command_scan(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_keys(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_type(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_touch(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
cdef int command_rename(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_renamenx(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil
cdef int command_copy(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil
cdef int command_randomkey(ServerContext *context, Session *session, const Request *request,
                           size_t position) noexcept nogil
cdef int command_object(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_memory(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
