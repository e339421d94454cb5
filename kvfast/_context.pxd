# State shared by the loop and the protocol modules: the server's (one store,
# its counters and limits) and each connection's session. Declarations only;
# kvfast/_stats.pyx renders the counters, kvfast/_keyspace.pxd changes the store.
from libc.stdint cimport int64_t, uint8_t, uint64_t

from kvfast._aof cimport AppendLog
from kvfast._output cimport Output
from kvfast._store cimport Store


cdef enum Counter:
    # Indexes of ServerContext.counters. Their names, and where each is shown
    # (native ``stats``, INFO, EventLoop.stats()), are rows of _stats.pyx.
    COUNTER_CONNECTIONS_RECEIVED    # clients accepted (refused ones not counted)
    COUNTER_CONNECTED_CLIENTS
    COUNTER_COMMANDS_PROCESSED
    COUNTER_ERROR_REPLIES           # native "Invalid request" and RESP error replies
    COUNTER_PROTOCOL_ERRORS         # requests that closed their connection
    COUNTER_KEYSPACE_HITS
    COUNTER_KEYSPACE_MISSES
    COUNTER_ACCEPT_PAUSES           # accepting stopped: out of descriptors
    COUNTER_REJECTED_CONNECTIONS    # refused: max clients reached
    COUNTER_PROTECTED_REFUSALS      # refused: protected mode, not a local peer
    COUNTER_TIMED_OUT_CLIENTS       # closed after the idle timeout
    COUNTER_AUTH_FAILURES           # wrong passwords
    COUNTER_EXPIRED_KEYS            # keys removed because their deadline passed (lazily or by the sweep)
    COUNTER_EVICTED_KEYS            # keys removed by the maxmemory policy
    COUNTER_COUNT


cdef struct Limits:
    # What the protocols enforce; every value comes from kvfast/config.py.
    size_t max_line_bytes                   # longest native request line
    size_t query_buffer_limit               # largest RESP request (Redis's client-query-buffer-limit)
    size_t max_arguments                    # most arguments of a RESP request
    size_t max_bulk_bytes                   # largest RESP argument (Redis's proto-max-bulk-len)
    size_t unauthenticated_max_line_bytes   # ...the same three before AUTH, when a password is set
    size_t unauthenticated_max_arguments
    size_t unauthenticated_max_bulk_bytes
    size_t output_high_water_bytes          # unsent reply bytes at which a client is answered no further
    size_t max_clients                      # most clients connected at once (INFO's maxclients)
    int64_t slowlog_log_slower_than         # microseconds; -1: the slow log is off, 0: every command
    size_t slowlog_max_len                  # entries the slow log keeps


# ---- operating statistics (kvfast/_commandstats.pyx renders them) ----

cdef enum:
    LATENCY_BUCKETS = 304       # log-linear nanosecond buckets: 8 per power of two up to 2**40 ns
    ERROR_KINDS = 128           # distinct error prefixes counted (Redis's errorstats limit)
    ERROR_NAME_BYTES = 32
    ADDRESS_BYTES = 128         # "ip:port", or a unix socket's "path:0"
    BATCH_ROWS = 32             # distinct commands amortized in one batch before it is settled


cdef struct CommandStats:
    # One per row of the RESP command table (ServerContext.command_stats[row]),
    # for INFO commandstats/latencystats, LATENCY HISTOGRAM and /metrics.
    const char *name            # the row's name (lower case)
    uint64_t calls              # runs of the proc (EXEC's queued commands included)
    uint64_t nanoseconds        # their total duration
    uint64_t rejected_calls     # refused before running: arity, NOAUTH, MISCONF
    uint64_t failed_calls       # ran and replied with an error
    uint64_t pending            # calls of the open batch not yet given a duration (see _commandstats)
    uint64_t histogram[<int>LATENCY_BUCKETS]   # durations: see latency_bucket()


cdef struct ErrorStat:
    char name[<int>ERROR_NAME_BYTES]    # the error reply's first word: ERR, WRONGTYPE, NOAUTH, ...
    uint64_t count


cdef struct SlowlogEntry:
    int64_t id
    int64_t timestamp           # Unix time, seconds
    int64_t duration_us
    char *arguments             # the (trimmed) arguments as a RESP array, ready to send
    size_t arguments_length
    char address[<int>ADDRESS_BYTES]
    char *name                  # the client's name ("" when none; owned)
    SlowlogEntry *newer
    SlowlogEntry *older


cdef enum MaxmemoryPolicy:
    # maxmemory-policy, in POLICY_NAMES's order (kvfast/_evict.pyx)
    POLICY_NOEVICTION
    POLICY_ALLKEYS_LRU
    POLICY_ALLKEYS_LFU
    POLICY_ALLKEYS_RANDOM
    POLICY_VOLATILE_LRU
    POLICY_VOLATILE_LFU
    POLICY_VOLATILE_RANDOM
    POLICY_VOLATILE_TTL
    POLICY_COUNT


cdef enum:
    EVICTION_POOL_SIZE = 16         # best candidates kept across evictions (Redis's EVPOOL_SIZE)


cdef struct EvictionCandidate:
    int64_t key
    uint64_t score                  # higher: evict sooner


cdef struct MemoryLimit:
    # maxmemory and its policy (kvfast/_evict.pyx); while maxmemory is 0 nothing
    # here is looked at on the request path but ``lru``/``lfu`` (both False then).
    size_t maxmemory                # bytes; 0: no limit
    MaxmemoryPolicy policy
    bint lru                        # the policy keeps a recency byte per key...
    bint lfu                        # ...or a frequency byte (the store's ``meta``)
    size_t client_bytes             # connections' structs and buffers (the loop keeps this count)
    size_t peak_used                # the most used memory seen (at each admission, and by INFO)
    size_t fixed_bytes              # the loop's own buffers
    uint64_t random                 # xorshift state for sampling and LFU's increments
    uint8_t lru_clock               # the recency clock new and touched keys are stamped with
    size_t lru_touches              # touches since the clock last ticked
    bint in_transaction             # EXEC is running its queue: no refusal half-way
    int64_t decay_minute            # LFU: the minute the latest decay pass started (Unix time / 60)...
    size_t decay_cursor             # ...and the main table's slots it has still to visit (0: none running)
    size_t pool_count
    EvictionCandidate pool[<int>EVICTION_POOL_SIZE]     # sorted by score, the best last


cdef struct Transaction      # a session's MULTI/WATCH state (below)
cdef struct Session          # a connection's protocol state (below)


cdef struct Watch:
    # One session watching one key: a node of the key's list of watchers (whose
    # first node ServerContext.watched maps the key to) and of its owner's list.
    int64_t key
    Transaction *owner
    Watch *previous             # ...the key's other watchers
    Watch *next
    Watch *next_of_owner        # ...the owner's other watches


cdef struct Transaction:
    # Allocated at a session's first MULTI or WATCH (kvfast/_multi.pyx), freed
    # with the session: sessions that never use them cost one NULL pointer.
    bint queueing               # between MULTI and EXEC/DISCARD: requests are queued
    bint aborted                # an error while queueing: EXEC answers EXECABORT (Redis's DIRTY_EXEC)
    bint watch_broken           # a watched key changed: EXEC answers a null array (Redis's DIRTY_CAS)
    char *queue                 # the queued requests' copies, each after its QueuedRequest header
    size_t queue_length
    size_t queue_capacity
    size_t queued               # requests queued
    size_t queued_changes       # log records the queued write commands may make (for the reservation)
    Watch *watches              # this session's watches (NULL: none)
    Transaction *previous_watcher   # ...in ServerContext.watchers while it has watches
    Transaction *next_watcher


cdef struct Expiry:
    # Bookkeeping of per-key deadlines (kvfast/_expire.pyx; _keyspace.pxd keeps
    # it current). The deadlines themselves are ServerContext.expires.
    size_t volatile_keys            # keys with a deadline (the count of ``expires``): while 0, no read looks further
    int64_t clock_ms                # the wall clock (Unix ms) of this loop iteration; 0: read it (keyspace_clock_ms)
    int64_t clock_offset_ms         # added to the wall clock (the debug-clock-offset-ms setting, for tests)
    int64_t earliest_ms             # no deadline lies before this (a lower bound; INT64_MAX: none)
    uint64_t deadline_sum           # sum of deadline_weight() of every deadline, mod 2^64 (INFO's avg_ttl)
    bint sweeping                   # an active-expiry sweep is under way...
    uint64_t sweep_cursor           # ...its next cursor in ``expires`` (store_scan)
    int64_t sweep_min_ms            # ...the earliest deadline it kept so far
    uint64_t sweep_visited          # ...deadlines it looked at and found expired (for expired_stale_perc)
    uint64_t sweep_expired
    int64_t next_slice_us           # monotonic: the sweep's next slice may start then
    int64_t next_sweep_us           # monotonic: the next sweep may start then
    double stale_ratio              # running average of the expired share of swept deadlines (expired_stale_perc)
    int64_t longest_slice_us        # longest slice of active expiry so far (INFO expire_longest_slice_us)
    uint64_t sweeps                 # sweeps completed


cdef struct ServerContext:
    Store store
    Store expires                   # key -> deadline (Unix ms) of every key with a TTL: Redis's db->expires
    Expiry expiry
    uint64_t counters[<int>COUNTER_COUNT]
    Limits limits
    int port                        # for INFO
    int64_t started_at              # Unix time, for INFO's uptime
    const char *version             # kvfast's version, for INFO (points into EventLoop.version)
    const char *password            # requirepass, or NULL: no authentication
    size_t password_length
    AppendLog *aof                  # the append-only log, or NULL: no persistence
    size_t watch_count              # WATCHes in force: while 0, no write looks further (_keyspace.pxd)
    Store watched                   # watched key -> its first Watch (a pointer), when watch_count > 0
    Transaction *watchers           # the sessions with watches (FLUSHALL walks them)
    const char *replication_id      # 40 hex digits, new at every start (INFO's master_replid)
    size_t peak_input_bytes         # largest input / pending output buffer of a connection...
    size_t peak_output_bytes
    int64_t peak_window_ms          # ...since this time (Redis's "recent": a window of a few seconds)
    MemoryLimit memory              # maxmemory, its policy and the memory counts it needs
    void *settings                  # borrowed: the kvfast.runtime.RuntimeSettings CONFIG asks (with the
    #                                 GIL), kept alive by EventLoop.settings; NULL: none (CONFIG GET: empty)
    int64_t now_ms                  # the loop's monotonic clock, read after each epoll_wait
    # Per-command statistics (kvfast/_commandstats.pyx): one CommandStats per row of
    # the RESP table (command_count of them), the batch being timed, error kinds.
    CommandStats *command_stats
    size_t command_count
    int64_t batch_started_ns        # 0: no batch open (commands are then timed one by one)
    int64_t batch_exact_ns          # time of the batch's commands timed one by one
    uint64_t batch_amortized        # commands of the batch sharing what is left
    CommandStats *batch_rows[<int>BATCH_ROWS]  # the rows they belong to (pending > 0)
    size_t batch_row_count
    int execute_depth               # > 0 while EXEC runs its queue
    ErrorStat errors[<int>ERROR_KINDS]
    size_t error_kinds
    # The slow log (newest first) and MONITOR.
    SlowlogEntry *slowlog_newest
    SlowlogEntry *slowlog_oldest
    size_t slowlog_length
    int64_t slowlog_next_id
    size_t monitor_count            # sessions in MONITOR: while 0, execute() feeds nobody
    # Every client session (CLIENT LIST, KILL, MONITOR), newest first.
    Session *sessions
    size_t kills_pending            # sessions killed by CLIENT KILL, closed after the batch
    bint shutdown_requested         # SHUTDOWN: the loop stops after this batch


cdef struct Session:
    Output output
    uint64_t id                     # CLIENT ID
    int resp_version                # 2 or 3, set by HELLO
    bint closing                    # reply, then close: read no further requests
    bint refused                    # closing because a request was refused: its bytes are drained first
    bint authenticated              # always true when no password is set
    size_t native_scanned           # leading bytes of the held incomplete native line known to hold no newline
    size_t scan_position            # where scanning of an incomplete RESP request resumes (0: none)
    size_t scan_arguments           # ...its arguments already checked
    size_t scan_argc                # ...and its argument count
    size_t scan_arguments_at        # ...and where its first argument starts
    bint unpersisted                # replies acknowledging writes not yet in the log are buffered...
    size_t unpersisted_from         # ...from this many pending output bytes on (see EventLoop.persist)
    Transaction *transaction        # MULTI/WATCH state, or NULL: never used (kvfast/_multi.pyx)
    # For CLIENT LIST/KILL and MONITOR (kvfast/_clients.pyx); set by the loop at accept.
    int fd
    bint unix_socket
    char address[<int>ADDRESS_BYTES]          # "ip:port" (Redis's addr=)
    char local_address[<int>ADDRESS_BYTES]    # laddr=
    char *name                      # CLIENT SETNAME (owned), or NULL
    int64_t created_ms              # on the monotonic clock
    const int64_t *last_active_ms   # the connection's last read or write
    const size_t *input_length      # its held input (qbuf=) and buffer size
    const size_t *input_capacity
    const char *last_command        # cmd=
    bint monitoring                 # in MONITOR
    bint killed                     # CLIENT KILL: closed after the batch
    Session *next_session           # ServerContext.sessions
    Session *previous_session
