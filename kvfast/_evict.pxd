# maxmemory and its eviction policies: what the command dispatchers (RESP
# execute(), the native dispatcher), CONFIG, INFO and the loop call. See _evict.pyx.
from kvfast._context cimport ServerContext, Session


cdef int memory_configure(ServerContext *context, size_t maxmemory, int policy) noexcept nogil
cdef size_t memory_used(ServerContext *context) noexcept nogil
cdef size_t memory_peak(ServerContext *context) noexcept nogil
cdef bint memory_admit(ServerContext *context, Session *session) noexcept nogil
cdef int policy_from_name(const char *name, size_t length) noexcept nogil
cdef const char *policy_name(int policy) noexcept nogil
cdef const char *maxmemory_human(ServerContext *context) noexcept nogil
