# The metrics port's HTTP side (kvfast/_metrics.pyx): what the loop hands a
# metrics connection's bytes to.
from kvfast._context cimport ServerContext, Session


cdef enum:
    MAX_HTTP_REQUEST_BYTES = 8192    # a request's head (request line and headers) larger than this: 431


cdef size_t metrics_answer(ServerContext *context, Session *session, const char *data,
                           size_t length) noexcept nogil
