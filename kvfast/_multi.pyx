# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH (Redis 7's multi.c
semantics and replies), and RESET, which ends them.

Queueing
    After MULTI, _resp.execute() makes its generic checks (unknown command,
    authentication, arity) and hands every request but EXEC, DISCARD, MULTI,
    WATCH, RESET and QUIT to multi_dispatch, which copies the request's raw
    bytes into the session's queue and answers ``+QUEUED``. A request refused
    while queueing (by those checks, CMD_NO_MULTI, the log's failure or the
    queue's bound) flags the transaction: EXEC then answers ``-EXECABORT
    Transaction discarded because of previous errors.`` As in Redis, nothing is
    kept for a transaction already doomed. The queue holds at most
    ``query_buffer_limit`` bytes of requests (the largest request a client may send:
    the connection's request limit bounds its queue too).

EXEC
    Runs the copies through the same execute() as any request, replying with
    an array of their replies (runtime errors are elements of it). With the
    log on, room for every record the queued writes may make is reserved
    first (keyspace_begin_write; refused: ``-EXECABORT ... because of:
    MISCONF ...``), and the records are framed as one unit (a ``B`` record,
    _record.pyx) that replay applies whole or not at all.

WATCH
    ``ServerContext.watched`` maps each watched key to its first Watch (a
    list of the sessions watching it; each session also lists its own).
    Every change of a key goes through _keyspace.signal_modified, which looks
    here only while ``watch_count`` is not 0: watching costs a write nothing
    while nobody watches. A change breaks every transaction watching the key
    (EXEC answers a null array) and drops their watches at once, as Redis does
    (they can no longer matter). FLUSHALL breaks those watching a key that was
    present. EXEC and DISCARD unwatch everything; so does closing the
    connection (multi_release).
"""
from libc.stdint cimport int64_t, intptr_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memcpy, strerror

from kvfast._aof cimport aof_begin_transaction, aof_end_transaction
from kvfast._command cimport Request, Argument, next_argument, RespCommand, CMD_WRITE, CMD_NO_MULTI
from kvfast._context cimport ServerContext, Session, Transaction, Watch, COUNTER_ERROR_REPLIES
from kvfast._keyspace cimport keyspace_begin_write, mark_unpersisted
from kvfast._output cimport Output, output_text
from kvfast._reply cimport ERR_OUT_OF_MEMORY, reply_error, reply_array, parse_keys
from kvfast._store cimport store_lookup, store_upsert, store_delete
from kvfast._text cimport parse_int64


cdef struct QueuedRequest:
    # The header of one queued request; its bytes follow, padded to 8.
    size_t length
    size_t argc
    size_t arguments_at


cdef enum:
    QUEUE_ALIGN = 8
    QUEUE_FIRST_CAPACITY = 512


cdef Executor run_request = NULL         # _resp.execute, set when _resp is imported


cdef void multi_set_executor(Executor executor) noexcept nogil:
    """Give EXEC the function that runs one request (_resp.execute: it cannot
    be cimported here, _resp cimports this module)."""
    global run_request
    run_request = executor


# ---- watches ------------------------------------------------------------------------

cdef inline Watch *first_watch(ServerContext *context, int64_t key) noexcept nogil:
    cdef int64_t *found = store_lookup(&context.watched, key)
    return NULL if found == NULL else <Watch *><intptr_t>found[0]


cdef int watch_key(ServerContext *context, Transaction *transaction, int64_t key) noexcept nogil:
    """Add a watch of ``key`` (none if the transaction already has one).
    0, or -1 when out of memory (nothing changes)."""
    cdef Watch *head = first_watch(context, key)
    cdef Watch *watch = head
    while watch != NULL:
        if watch.owner == transaction:
            return 0
        watch = watch.next
    watch = <Watch *>malloc(sizeof(Watch))
    if watch == NULL:
        return -1
    if store_upsert(&context.watched, key, <int64_t><intptr_t>watch) < 0:
        free(watch)
        return -1
    watch.key = key
    watch.owner = transaction
    watch.previous = NULL
    watch.next = head
    if head != NULL:
        head.previous = watch
    if transaction.watches == NULL:         # its first: join the watchers
        transaction.previous_watcher = NULL
        transaction.next_watcher = context.watchers
        if context.watchers != NULL:
            context.watchers.previous_watcher = transaction
        context.watchers = transaction
    watch.next_of_owner = transaction.watches
    transaction.watches = watch
    context.watch_count += 1
    return 0


cdef void unwatch_all(ServerContext *context, Transaction *transaction) noexcept nogil:
    """Drop every watch of the transaction (UNWATCH, EXEC, DISCARD, a broken
    watch, the connection's end)."""
    cdef Watch *watch = transaction.watches
    cdef Watch *next_of_owner
    if watch == NULL:
        return
    while watch != NULL:
        next_of_owner = watch.next_of_owner
        if watch.previous != NULL:
            watch.previous.next = watch.next
        elif watch.next != NULL:            # the key's first watch: the next one is now
            store_upsert(&context.watched, watch.key, <int64_t><intptr_t>watch.next)    # (present: cannot fail)
        else:
            store_delete(&context.watched, watch.key)
        if watch.next != NULL:
            watch.next.previous = watch.previous
        free(watch)
        context.watch_count -= 1
        watch = next_of_owner
    transaction.watches = NULL
    if transaction.previous_watcher != NULL:
        transaction.previous_watcher.next_watcher = transaction.next_watcher
    else:
        context.watchers = transaction.next_watcher
    if transaction.next_watcher != NULL:
        transaction.next_watcher.previous_watcher = transaction.previous_watcher
    transaction.previous_watcher = transaction.next_watcher = NULL


cdef void watch_touch(ServerContext *context, int64_t key) noexcept nogil:
    """``key`` changed (called by _keyspace.signal_modified while some session
    watches): every transaction watching it is broken and drops its watches."""
    cdef Watch *watch = first_watch(context, key)
    while watch != NULL:
        watch.owner.watch_broken = True
        unwatch_all(context, watch.owner)   # removes this watch (and maybe others) from the key's list
        watch = first_watch(context, key)


cdef void watch_touch_present(ServerContext *context) noexcept nogil:
    """Every key is about to be removed (FLUSHALL): break the transactions
    watching a key that is present (an absent key stays absent: Redis 7's
    touchAllWatchedKeysInDb)."""
    cdef Transaction *transaction = context.watchers
    cdef Transaction *next_watcher
    cdef Watch *watch
    while transaction != NULL:
        next_watcher = transaction.next_watcher
        watch = transaction.watches
        while watch != NULL:
            if store_lookup(&context.store, watch.key) != NULL:
                transaction.watch_broken = True
                unwatch_all(context, transaction)   # unlinks only this one from the watchers
                break
            watch = watch.next_of_owner
        transaction = next_watcher


# ---- a session's transaction ------------------------------------------------------------

cdef Transaction *transaction_of(Session *session) noexcept nogil:
    """The session's transaction state, allocated at its first use; NULL when
    out of memory."""
    if session.transaction == NULL:
        session.transaction = <Transaction *>calloc(1, sizeof(Transaction))
    return session.transaction


cdef void free_queue(Transaction *transaction) noexcept nogil:
    free(transaction.queue)
    transaction.queue = NULL
    transaction.queue_length = transaction.queue_capacity = 0
    transaction.queued = transaction.queued_changes = 0


cdef void discard(ServerContext *context, Transaction *transaction) noexcept nogil:
    """Leave MULTI with nothing run: the queue, the flags and the watches go
    (Redis's discardTransaction)."""
    free_queue(transaction)
    transaction.queueing = transaction.aborted = transaction.watch_broken = False
    unwatch_all(context, transaction)


cdef void multi_release(ServerContext *context, Session *session) noexcept nogil:
    """The connection closes: its queue is discarded and its watches dropped."""
    if session.transaction != NULL:
        discard(context, session.transaction)
        free(session.transaction)
        session.transaction = NULL


cdef void multi_flag_error(Session *session) noexcept nogil:
    """A request was refused while the session queues: its EXEC will answer
    EXECABORT (Redis's flagTransaction)."""
    if session.transaction != NULL and session.transaction.queueing:
        session.transaction.aborted = True


cdef inline size_t padded(size_t length) noexcept nogil:
    return (length + QUEUE_ALIGN - 1) & ~(<size_t>QUEUE_ALIGN - 1)


cdef int enqueue(ServerContext *context, Transaction *transaction, const Request *request,
                 size_t changes) noexcept nogil:
    """Copy the request into the queue: 0, 1 when it would take the queue past
    its bound (query_buffer_limit), -1 when out of memory."""
    cdef size_t needed = sizeof(QueuedRequest) + padded(request.length)
    cdef size_t capacity
    cdef char *grown
    cdef QueuedRequest *header
    if transaction.queue_length + needed > context.limits.query_buffer_limit:
        return 1
    if transaction.queue_length + needed > transaction.queue_capacity:
        capacity = transaction.queue_capacity * 2 if transaction.queue_capacity else QUEUE_FIRST_CAPACITY
        while capacity < transaction.queue_length + needed:
            capacity *= 2
        grown = <char *>realloc(transaction.queue, capacity)
        if grown == NULL:
            return -1
        transaction.queue = grown
        transaction.queue_capacity = capacity
    header = <QueuedRequest *>(transaction.queue + transaction.queue_length)
    header.length = request.length
    header.argc = request.argc
    header.arguments_at = request.arguments_at
    memcpy(transaction.queue + transaction.queue_length + sizeof(QueuedRequest), request.data, request.length)
    transaction.queue_length += needed
    transaction.queued += 1
    transaction.queued_changes += changes
    return 0


cdef int multi_dispatch(ServerContext *context, Session *session, const Request *request,
                        const RespCommand *command, size_t position, size_t changes) noexcept nogil:
    """A request of a session in MULTI that passed execute()'s generic checks
    (QUIT never comes here): EXEC, DISCARD, MULTI, WATCH and RESET run now;
    anything else is checked as Redis checks it before queueing and queued
    (``changes``: the log records it may make, 0 unless CMD_WRITE)."""
    cdef Transaction *transaction = session.transaction
    cdef Output *output = &session.output
    cdef int queued
    if command.flags & CMD_NO_MULTI:
        transaction.aborted = True
        return reply_error(context, output, b"-ERR Command not allowed inside a transaction\r\n")
    if command.proc == command_exec or command.proc == command_discard or command.proc == command_multi \
            or command.proc == command_watch or command.proc == command_reset:
        return command.proc(context, session, request, position)
    if command.flags & CMD_WRITE and context.aof != NULL and context.aof.failure != 0:
        transaction.aborted = True
        return refuse(context, output, b"-", context.aof.failure)
    if not (transaction.aborted or transaction.watch_broken):      # (a doomed transaction keeps nothing)
        queued = enqueue(context, transaction, request, changes)
        if queued < 0:
            transaction.aborted = True
            return reply_error(context, output, ERR_OUT_OF_MEMORY)
        if queued > 0:
            transaction.aborted = True
            free_queue(transaction)
            return reply_error(context, output, b"-ERR Transaction queue too large: its commands would take more "
                                                b"than client-query-buffer-limit; EXEC will discard it\r\n")
    return output_text(output, b"+QUEUED\r\n")


cdef int refuse(ServerContext *context, Output *output, const char *prefix, int error) noexcept nogil:
    """``<prefix>MISCONF Errors writing to the AOF file: <reason>`` (as
    _reply.refuse_write, after an EXECABORT's prefix when EXEC is refused)."""
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(output, prefix) < 0 or output_text(output, b"MISCONF Errors writing to the AOF file: ") < 0 \
            or output_text(output, strerror(error)) < 0:
        return -1
    return output_text(output, b"\r\n")


cdef int multi_reject_exec(ServerContext *context, Session *session, const char *reason) noexcept nogil:
    """EXEC itself refused by a generic check (arity, authentication), in MULTI
    or not: the transaction (if any) is discarded and its watches dropped,
    ``-EXECABORT Transaction discarded because of: <reason>`` (Redis's
    rejectCommand of EXEC: execCommandAbort). ``reason`` ends with CRLF."""
    if session.transaction != NULL:
        discard(context, session.transaction)
    context.counters[<int>COUNTER_ERROR_REPLIES] += 1
    if output_text(&session.output, b"-EXECABORT Transaction discarded because of: ") < 0:
        return -1
    return output_text(&session.output, reason)


# ---- the commands ---------------------------------------------------------------------

cdef int command_multi(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """MULTI: start queueing; +OK (an error inside MULTI, which goes on)."""
    cdef Transaction *transaction = transaction_of(session)
    if transaction == NULL:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    if transaction.queueing:
        return reply_error(context, &session.output, b"-ERR MULTI calls can not be nested\r\n")
    transaction.queueing = True
    return output_text(&session.output, b"+OK\r\n")


cdef int command_exec(ServerContext *context, Session *session, const Request *request,
                      size_t position) noexcept nogil:
    """EXEC: run the queue, an array of its replies; EXECABORT after an error
    while queueing; a null array (RESP2 ``*-1``, RESP3 ``_``) when a watched
    key changed. Either way the transaction ends and its watches go."""
    cdef Transaction *transaction = session.transaction
    cdef Output *output = &session.output
    cdef char *queue
    cdef size_t length, count, at = 0, begin = 0
    cdef bint logged
    cdef int refusal, result
    cdef Request queued
    cdef QueuedRequest *header
    if transaction == NULL or not transaction.queueing:
        return reply_error(context, output, b"-ERR EXEC without MULTI\r\n")
    if transaction.aborted:
        discard(context, transaction)
        return reply_error(context, output, b"-EXECABORT Transaction discarded because of previous errors.\r\n")
    if transaction.watch_broken:
        discard(context, transaction)
        return output_text(output, b"_\r\n" if session.resp_version == 3 else b"*-1\r\n")
    logged = context.aof != NULL and transaction.queued_changes > 0
    if logged:
        # Room for every record and the unit's B: logging cannot fail half-way.
        refusal = keyspace_begin_write(context, transaction.queued_changes + 1)
        if refusal != 0:
            discard(context, transaction)
            return refuse(context, output, b"-EXECABORT Transaction discarded because of: ", refusal)
    unwatch_all(context, transaction)       # before running: its own writes must not break it
    queue, length, count = transaction.queue, transaction.queue_length, transaction.queued
    transaction.queue = NULL                # detached: the queued requests may not touch it
    free_queue(transaction)
    transaction.queueing = False
    if logged:
        mark_unpersisted(session)           # the whole reply waits for the unit's records
        begin = aof_begin_transaction(context.aof)
    result = reply_array(output, count)
    while result == 0 and at < length:
        header = <QueuedRequest *>(queue + at)
        queued.data = queue + at + sizeof(QueuedRequest)
        queued.argc = header.argc
        queued.arguments_at = header.arguments_at
        queued.length = header.length
        result = run_request(context, session, &queued)
        at += sizeof(QueuedRequest) + padded(header.length)
    if logged:
        aof_end_transaction(context.aof, begin)
    free(queue)
    return result


cdef int command_discard(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """DISCARD: drop the queue and the watches; +OK."""
    if session.transaction == NULL or not session.transaction.queueing:
        return reply_error(context, &session.output, b"-ERR DISCARD without MULTI\r\n")
    discard(context, session.transaction)
    return output_text(&session.output, b"+OK\r\n")


cdef int command_watch(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """WATCH key...: EXEC fails if any of them changes before it; +OK. Every
    key is checked to be an integer first (kvfast's keys are), so a bad one
    watches nothing."""
    cdef Transaction *transaction = session.transaction
    cdef Argument argument
    cdef int64_t key = 0
    cdef int checked
    if transaction != NULL and transaction.queueing:
        return reply_error(context, &session.output, b"-ERR WATCH inside MULTI is not allowed\r\n")
    checked = parse_keys(context, &session.output, request, position)
    if checked != 0:
        return -1 if checked < 0 else 0
    transaction = transaction_of(session)
    if transaction == NULL:
        return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    if not transaction.watch_broken:        # (already broken: nothing more to watch for)
        while position < request.length:
            next_argument(request.data, &position, &argument)
            parse_int64(argument.start, argument.length, &key)
            if watch_key(context, transaction, key) < 0:
                return reply_error(context, &session.output, ERR_OUT_OF_MEMORY)
    return output_text(&session.output, b"+OK\r\n")


cdef int command_unwatch(ServerContext *context, Session *session, const Request *request,
                         size_t position) noexcept nogil:
    """UNWATCH: forget every watch (and that one broke); +OK."""
    if session.transaction != NULL:
        unwatch_all(context, session.transaction)
        session.transaction.watch_broken = False
    return output_text(&session.output, b"+OK\r\n")


cdef int command_reset(ServerContext *context, Session *session, const Request *request,
                       size_t position) noexcept nogil:
    """RESET: the connection's state as new (Redis's clearClientConnectionState):
    MULTI discarded, watches dropped, RESP2, and deauthenticated when a
    password is set; +RESET."""
    if session.transaction != NULL:
        discard(context, session.transaction)
    session.resp_version = 2
    if context.password != NULL:
        session.authenticated = False
    return output_text(&session.output, b"+RESET\r\n")
