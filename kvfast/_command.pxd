"""What a RESP command's proc is given: the request, its arguments, and its table row.

Shared by _resp.pyx (which scans requests, holds the table and runs execute())
and by the modules that implement commands. A proc is
``int proc(context, session, request, position)``: ``position`` is the offset
of the first argument after the command's name; it returns 0, or -1 when a
reply could not be buffered (out of memory). Everything here is inline.
"""
from kvfast._context cimport ServerContext, Session


cdef struct Request:
    const char *data              # the request's first byte ("*")
    size_t argc
    size_t arguments_at           # offset of the first "$" header
    size_t length                 # bytes of the whole request


cdef struct Argument:
    const char *start
    size_t length


cdef inline void next_argument(const char *data, size_t *position, Argument *argument) noexcept nogil:
    """Read the bulk header at ``position`` (already validated by scan_request,
    so it is ``$<digits>\r\n``) and advance past its data."""
    cdef const char *at = data + position[0] + 1
    cdef size_t size = 0
    while at[0] != c'\r':
        size = size * 10 + <size_t>(at[0] - c'0')
        at += 1
    argument.start = at + 2
    argument.length = size
    position[0] = (argument.start - data) + size + 2


ctypedef int (*RespProc)(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil


cdef enum CommandFlag:
    # As Redis names them in COMMAND's reply (FLAG_NAMES, in bit order).
    CMD_WRITE = 1 << 0          # may change the store: refused while the log fails; records reserved
    CMD_READONLY = 1 << 1
    CMD_ADMIN = 1 << 2
    CMD_LOADING = 1 << 3        # allowed while loading
    CMD_FAST = 1 << 4
    CMD_NO_AUTH = 1 << 5        # allowed before a password-protected session has authenticated
    CMD_NO_MULTI = 1 << 6       # not allowed inside a transaction
    CMD_DENYOOM = 1 << 7        # may add memory: refused with -OOM over maxmemory when nothing can be evicted
    FLAG_COUNT = 8


cdef struct RespCommand:
    const char *name            # lower case
    size_t name_length
    RespProc proc
    int arity                   # Redis's convention: -N means at least N arguments
    int flags                   # CommandFlag
    int first_key               # key positions, as COMMAND reports them (0: no keys;
    int last_key                # a negative last counts from the end)
    int key_step
