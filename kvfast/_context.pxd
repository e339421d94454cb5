# State shared by the loop and the protocol modules: the server's (one store and
# its counters) and each connection's session. Declarations only.
from libc.stdint cimport int64_t, uint64_t

from kvfast._aof cimport AppendLog
from kvfast._output cimport Output
from kvfast._store cimport Store


cdef struct Counters:
    uint64_t connections_accepted
    uint64_t connected_clients
    uint64_t commands_processed
    uint64_t invalid_requests       # native "Invalid request" and RESP error replies
    uint64_t protocol_errors        # requests that closed their connection
    uint64_t keyspace_hits
    uint64_t keyspace_misses
    uint64_t accept_pauses
    uint64_t rejected_connections   # refused: max clients reached
    uint64_t protected_refusals     # refused: protected mode, not a loopback peer
    uint64_t timed_out_clients      # closed after the idle timeout
    uint64_t auth_failures          # wrong passwords


cdef struct ServerContext:
    Store store
    Counters counters
    int port                        # for INFO
    int64_t started_at              # Unix time, for INFO's uptime
    size_t max_line_bytes           # longest native request line
    size_t max_request_bytes        # largest RESP request
    const char *password            # requirepass, or NULL: no authentication
    size_t password_length
    AppendLog *aof                  # the append-only log, or NULL: no persistence


cdef struct Session:
    Output output
    uint64_t id                     # CLIENT ID
    int resp_version                # 2 or 3, set by HELLO
    bint closing                    # reply, then close: read no further requests
    bint authenticated              # always true when no password is set
    size_t scan_position            # where scanning of an incomplete RESP request resumes (0: none)
    size_t scan_arguments           # ...its arguments already checked
    size_t scan_argc                # ...and its argument count
    size_t scan_arguments_at        # ...and where its first argument starts
    bint unpersisted                # replies acknowledging writes not yet in the log are buffered...
    size_t unpersisted_from         # ...from this many pending output bytes on (see EventLoop.persist)
