# CONFIG (GET, SET, REWRITE, HELP) of RESP (kvfast/_config_command.pyx): the proc
# _resp.pyx's command table row points to.
from kvfast._command cimport Request
from kvfast._context cimport ServerContext, Session


cdef int command_config(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil
