# CLIENT, MONITOR, SHUTDOWN, DEBUG and MEMORY STATS (kvfast/_clients.pyx), and
# the session registry the loop keeps (ServerContext.sessions).
from kvfast._command cimport Request, Argument
from kvfast._commandstats cimport Redaction
from kvfast._context cimport ServerContext, Session


cdef inline void session_link(ServerContext *context, Session *session) noexcept nogil:
    """Add a client's session to the registry (the loop, at accept)."""
    session.previous_session = NULL
    session.next_session = context.sessions
    if context.sessions != NULL:
        context.sessions.previous_session = session
    context.sessions = session


cdef void session_unlink(ServerContext *context, Session *session) noexcept nogil
cdef void monitor_feed(ServerContext *context, Session *session, const Request *request,
                       Redaction redaction) noexcept nogil
cdef int client_set_name(ServerContext *context, Session *session, const Argument *name) noexcept nogil

cdef int command_client(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
cdef int command_monitor(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil
cdef int command_shutdown(ServerContext *context, Session *session, const Request *request,
                          size_t position) noexcept nogil
cdef int command_debug(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil
cdef int memory_stats(ServerContext *context, Session *session) noexcept nogil
