from kvfast._context cimport ServerContext, Session


cdef enum Refusal:
    REFUSE_NONE = 0
    REFUSE_MAX_CLIENTS = 1      # max_clients already connected
    REFUSE_PROTECTED = 2        # protected mode and the peer is not local


cdef size_t protocol_answer(ServerContext *context, Session *session, const char *data,
                            size_t length) noexcept nogil
cdef size_t protocol_prefetch(ServerContext *context, const char *data, size_t length, size_t start,
                              size_t requests) noexcept nogil
cdef int protocol_refuse(Session *session, Refusal refusal, const char *first_bytes) noexcept nogil
