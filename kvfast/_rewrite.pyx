# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compaction of the append-only file: a forked child writes a snapshot.

The child writes a snapshot of the store as of the fork (copy-on-write memory
gives it a frozen view for free) into a temporary file and syncs it, then
copies the records the parent appended meanwhile from the old log, following it
until within CATCH_UP_BYTES of its end, syncs again, and exits. The parent,
which kept appending to the old log all along, copies the last few records,
fdatasyncs, locks the new file, renames it over the log and fsyncs the folder:
a short pause, and at every moment the log's name holds a complete log. Since
records are effects (see _record.pyx), the copied tail may overlap the
snapshot's state harmlessly.
"""
from libc.errno cimport errno, EINTR, EIO, ENOMEM, EBUSY
from libc.signal cimport signal as set_signal_handler, SIGINT, SIGTERM, SIGKILL, SIG_DFL
from libc.stdint cimport int64_t, intptr_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.time cimport time
from posix.fcntl cimport open as open_file, O_RDWR, O_WRONLY, O_RDONLY, O_CREAT, O_TRUNC, O_CLOEXEC, O_DIRECTORY
from posix.mman cimport mmap, PROT_READ, PROT_WRITE, MAP_ANONYMOUS, MAP_FAILED
from posix.types cimport pid_t
from posix.unistd cimport (
    close, fdatasync, fsync, fork, getpid, getppid, nice, pread, unlink, _exit, sysconf, _SC_OPEN_MAX,
)
from posix.wait cimport waitpid, WIFEXITED, WEXITSTATUS

from kvfast._aof cimport (
    AppendLog, RewriteShared, RETRY_INTERVAL_MS, aof_flush, aof_poll_sync_thread, aof_retry, aof_warn, fail_sync,
    write_all,
)
from kvfast._record cimport HEADER_BYTES, SET_BYTES, SET_EXPIRING_BYTES, encode_header, encode_set, encode_set_expiring
from kvfast._store cimport (
    Store, StoreIterator, store_count, store_iterator_init, store_iterator_next, store_lookup,
)
from kvfast._system cimport (
    set_errno, MAP_SHARED, pipe2, pthread_t, pthread_create, pthread_detach, pthread_mutex_lock,
    pthread_mutex_unlock, flock, LOCK_EX, LOCK_NB, prctl, PR_SET_PDEATHSIG, syscall, SYS_close_range, rename,
    load_acquire, store_release, monotonic_ms, monotonic_us, realtime_ms,
)


cdef enum:
    REWRITE_RETRY_MS = 10000    # after a failed rewrite, wait this long before an automatic one
    COPY_BUFFER_BYTES = 1 << 20  # the child's write and copy buffer
    CATCH_UP_BYTES = 64 << 10   # the child leaves at most about this much of the old log to the parent
    CHILD_NICENESS = 10         # the child's lower CPU priority: on a busy machine the loop comes first


cdef bint aof_rewrite_due(const AppendLog *log, size_t live_keys, int64_t now_ms) noexcept nogil:
    """Whether to start a rewrite now: the log is over the minimum size and more
    than twice what a snapshot of ``live_keys`` would take, no rewrite runs,
    the log is healthy, and a failed rewrite is not too recent."""
    if log.rewrite_child != 0 or log.failure != 0 or log.size < log.rewrite_min_bytes:
        return False
    if now_ms < log.rewrite_not_before_ms:
        return False
    return log.size > 2 * (HEADER_BYTES + <uint64_t>live_keys * SET_BYTES)


cdef int aof_start_rewrite(AppendLog *log, const Store *store) noexcept nogil:
    """Fork the rewrite child (see rewrite_child_main). Returns 0 (``rewrite_pipe``
    is then the descriptor to watch: it hangs up when the child exits), or -1
    with errno set (EBUSY: one is running). A failure leaves no child and no
    file, counts as a failed rewrite and holds the next one back REWRITE_RETRY_MS.
    """
    cdef int error
    if log.rewrite_child != 0:
        set_errno(EBUSY)
        return -1
    if fork_rewrite_child(log, store) == 0:
        return 0
    error = errno
    log.last_rewrite_failed = True
    log.rewrite_not_before_ms = monotonic_ms() + REWRITE_RETRY_MS
    set_errno(error)
    return -1


cdef int fork_rewrite_child(AppendLog *log, const Store *store) noexcept nogil:
    """aof_start_rewrite's work: 0, or -1 with errno set.

    Pending records are flushed first, so the snapshot (the store as of the
    fork) and the old log's first ``rewrite_started_at`` bytes hold the same
    state. (A rewrite that recovers from a failed sync is started by
    aof_rewrite_to_recover, which dropped what was pending: there the snapshot
    alone is the new log.)
    """
    cdef int pipe_fds[2]
    cdef char *buffer
    cdef pid_t child, parent = getpid()
    cdef int64_t started
    if not log.needs_rewrite and aof_flush(log) < 0:
        return -1
    if log.shared == NULL:
        log.shared = <RewriteShared *>mmap(NULL, sizeof(RewriteShared), PROT_READ | PROT_WRITE,
                                           MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if <void *>log.shared == MAP_FAILED:
            log.shared = NULL
            return -1
    memset(log.shared, 0, sizeof(RewriteShared))
    log.shared.log_size = log.size
    log.rewrite_started_at = log.size           # (before the fork: the child reads it)
    buffer = <char *>malloc(COPY_BUFFER_BYTES)
    if buffer == NULL:
        set_errno(ENOMEM)
        return -1
    if pipe2(pipe_fds, O_CLOEXEC) < 0:
        free(buffer)
        return -1
    started = monotonic_us()
    child = fork()
    if child == 0:
        rewrite_child_main(log, store, parent, pipe_fds[1], buffer)
    log.latest_fork_us = monotonic_us() - started
    free(buffer)
    close(pipe_fds[1])
    if child < 0:
        close(pipe_fds[0])
        return -1
    log.rewrite_child = child
    log.rewrite_pipe = pipe_fds[0]
    log.rewrite_exited = False
    log.rewrite_recovers = log.needs_rewrite
    return 0


cdef void close_descriptors_but(int keep) noexcept nogil:
    """In the child: close every descriptor from 3 up except ``keep``, so it
    holds no client socket, listening socket, epoll instance or log descriptor
    (with its lock) of the parent's: a client the parent closes must see its
    connection end now, not when the child exits. Falls back to close() one by
    one on kernels without close_range (before 5.9)."""
    cdef unsigned int last = <unsigned int>-1
    cdef long fd, limit
    if (keep > 3 and syscall(SYS_close_range, 3, keep - 1, 0) < 0) \
            or syscall(SYS_close_range, keep + 1, last, 0) < 0:
        limit = sysconf(_SC_OPEN_MAX)
        if limit < 0 or limit > (1 << 20):
            limit = 1 << 20
        for fd in range(3, limit):
            if fd != keep:
                close(<int>fd)


cdef int copy_tail(const AppendLog *log, int source, int out, uint64_t *copied, uint64_t *written,
                   char *buffer) noexcept nogil:
    """In the child: copy the old log from ``copied`` on into the new file at
    ``written``, following the parent's appends until within CATCH_UP_BYTES of
    its end. Returns 0, or -1 with errno set."""
    cdef uint64_t target, chunk
    cdef ssize_t got
    while True:
        target = load_acquire(&log.shared.log_size)
        if target <= copied[0] + CATCH_UP_BYTES:
            return 0
        chunk = target - copied[0]
        if chunk > COPY_BUFFER_BYTES:
            chunk = COPY_BUFFER_BYTES
        got = pread(source, buffer, chunk, copied[0])
        if got <= 0:
            if got < 0 and errno == EINTR:
                continue
            if got == 0:
                set_errno(EIO)
            return -1
        if write_all(out, buffer, <size_t>got, written[0]) < 0:
            return -1
        written[0] += <uint64_t>got
        copied[0] += <uint64_t>got


cdef int write_snapshot(const Store *store, const Store *expires, int out, char *buffer,
                        uint64_t *written) noexcept nogil:
    """Write a header and one record per live key of ``store`` to ``out`` from
    offset 0, through ``buffer`` (COPY_BUFFER_BYTES): a set, or a set with its
    deadline from ``expires`` (NULL: none); a key whose deadline has passed is
    left out (it has expired, whether or not it was removed yet). Returns 0
    with the bytes written in ``written``, or -1 with errno set. The keys come
    from the store's iterator, which needs a store that does not change
    meanwhile: the forked child's copy, or the parent's in the loop (SAVE,
    aof_save_now) or at shutdown (aof_save_snapshot_now)."""
    cdef size_t used = HEADER_BYTES
    cdef StoreIterator entries
    cdef int64_t key, value
    cdef int64_t *deadline = NULL
    cdef bint volatile = expires != NULL and store_count(expires) > 0
    cdef int64_t now = realtime_ms()
    written[0] = 0
    encode_header(<uint8_t *>buffer)
    store_iterator_init(&entries, store)
    while store_iterator_next(&entries, &key, &value):
        if volatile:
            deadline = store_lookup(<Store *>expires, key)
            if deadline != NULL and deadline[0] < now:
                continue
        if used + SET_EXPIRING_BYTES > COPY_BUFFER_BYTES:
            if write_all(out, buffer, used, written[0]) < 0:
                return -1
            written[0] += used
            used = 0
        if deadline != NULL:
            encode_set_expiring(<uint8_t *>buffer + used, key, value, deadline[0])
            used += SET_EXPIRING_BYTES
        else:
            encode_set(<uint8_t *>buffer + used, key, value)
            used += SET_BYTES
    if write_all(out, buffer, used, written[0]) < 0:
        return -1
    written[0] += used
    return 0


cdef void rewrite_child_main(AppendLog *log, const Store *store, pid_t parent, int done_fd,
                             char *buffer) noexcept nogil:
    """The forked child: write the snapshot and sync it, then follow the old log
    and sync again, twice (each pass copies what was appended during the
    previous sync, so what is left for the parent to copy and sync in its pause
    is small), set ``shared.done`` and exit 0; or exit 1 with errno in
    ``shared.error``. Never returns; runs only C code (no Python in a forked
    child) and dies with its parent."""
    cdef int out = -1, source, rounds
    cdef uint64_t written = 0, copied
    set_signal_handler(SIGTERM, SIG_DFL)
    set_signal_handler(SIGINT, SIG_DFL)
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if getppid() != parent:
        _exit(1)                                # the parent died before the line above
    close_descriptors_but(done_fd)
    nice(CHILD_NICENESS)                        # on a busy machine the serving loop comes first
    source = open_file(log.path, O_RDONLY | O_CLOEXEC)     # the old log: the parent renames only after we exit
    if source < 0:
        child_exit(log, errno)
    out = open_file(log.rewrite_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if out < 0:
        child_exit(log, errno)
    if write_snapshot(store, log.expires, out, buffer, &written) < 0:
        child_exit(log, errno)
    copied = log.rewrite_started_at
    for rounds in range(3):
        if fdatasync(out) < 0:
            child_exit(log, errno)
        if rounds < 2 and copy_tail(log, source, out, &copied, &written, buffer) < 0:
            child_exit(log, errno)
    log.shared.temp_size = written
    log.shared.copied_to = copied
    store_release(&log.shared.done, 1)
    _exit(0)


cdef void child_exit(AppendLog *log, int error) noexcept nogil:
    log.shared.error = <uint64_t>(error if error != 0 else EIO)
    _exit(1)


cdef void *close_descriptor(void *fd) noexcept nogil:
    close(<int><intptr_t>fd)
    return NULL


cdef void retire_descriptor(AppendLog *log, int fd) noexcept nogil:
    """Close an old log's descriptor away from the loop: closing the last
    descriptor of a large unlinked file frees its blocks, which can take a while.
    The everysec thread does it; otherwise a short-lived detached thread."""
    cdef pthread_t thread
    pthread_mutex_lock(&log.lock)
    if log.thread_running and log.retired_fd < 0:
        log.retired_fd = fd
        fd = -1
    pthread_mutex_unlock(&log.lock)
    if fd < 0:
        return
    if pthread_create(&thread, NULL, close_descriptor, <void *><intptr_t>fd) == 0:
        pthread_detach(thread)
    else:
        close(fd)


cdef void swap_in(AppendLog *log, int new_fd, uint64_t size) noexcept nogil:
    """Append to ``new_fd`` from now on (a file already synced and renamed over
    the log, ``size`` bytes long); the old descriptor is closed off the loop."""
    cdef int retired
    pthread_mutex_lock(&log.lock)
    retired = log.fd
    log.fd = new_fd
    log.fd_generation += 1
    pthread_mutex_unlock(&log.lock)
    retire_descriptor(log, retired)
    log.size = log.base_size = size
    log.last_rewrite_time = time(NULL)


cdef int aof_finish_rewrite(AppendLog *log) noexcept nogil:
    """After the child exited (``rewrite_exited``) and the pending records were
    flushed: copy the old log's last bytes into the new file, fdatasync it,
    lock it, rename it over the log, fsync the folder, and continue appending
    to it. A rewrite that recovers from a failed sync (``needs_rewrite``) also
    leaves the failure state.

    Returns 0 on success. On any failure before the rename returns -1 with
    errno set: the new file is removed, the old log stays in use (it is
    complete), and automatic rewrites wait REWRITE_RETRY_MS. A failed folder
    sync after the rename is a failed sync (see fail_sync). The time spent
    here is the only pause a rewrite causes (``last_rewrite_pause_us``).
    """
    cdef int status = 0, new_fd = -1, folder = -1, error = 0
    cdef pid_t reaped
    cdef int64_t started = monotonic_us()
    cdef uint64_t from_offset, to_offset = 0
    cdef ssize_t got
    cdef char buffer[65536]
    while True:
        reaped = waitpid(log.rewrite_child, &status, 0)
        if reaped >= 0 or errno != EINTR:
            break
    log.rewrite_child = 0
    close(log.rewrite_pipe)
    log.rewrite_pipe = -1
    log.rewrite_exited = False
    if load_acquire(&log.shared.done) != 1 or (reaped > 0 and not (WIFEXITED(status) and WEXITSTATUS(status) == 0)):
        error = <int>log.shared.error if log.shared.error != 0 else EIO
    elif log.pending_len != 0 or (log.failure != 0 and not log.needs_rewrite):
        error = log.failure if log.failure != 0 else EBUSY
    if error == 0:
        new_fd = open_file(log.rewrite_path, O_RDWR | O_CLOEXEC)
        if new_fd < 0:
            error = errno
    if error == 0:
        from_offset = log.shared.copied_to
        to_offset = log.shared.temp_size
        while from_offset < log.size:
            got = pread(log.fd, buffer, sizeof(buffer) if log.size - from_offset > sizeof(buffer)
                        else <size_t>(log.size - from_offset), from_offset)
            if got <= 0:
                if got < 0 and errno == EINTR:
                    continue
                error = errno if got < 0 else EIO
                break
            if write_all(new_fd, buffer, <size_t>got, to_offset) < 0:
                error = errno
                break
            from_offset += <uint64_t>got
            to_offset += <uint64_t>got
    if error == 0 and fdatasync(new_fd) < 0:
        error = errno
    if error == 0 and flock(new_fd, LOCK_EX | LOCK_NB) < 0:
        error = errno
    if error == 0 and rename(log.rewrite_path, log.path) < 0:
        error = errno
    if error != 0:
        if new_fd >= 0:
            close(new_fd)
        unlink(log.rewrite_path)
        log.rewrite_failures += 1
        log.last_rewrite_failed = True
        log.rewrite_not_before_ms = monotonic_ms() + REWRITE_RETRY_MS
        set_errno(error)
        return -1
    swap_in(log, new_fd, to_offset)
    log.rewrites += 1
    log.last_rewrite_failed = False
    log.rewrite_failure_reported = False
    folder = open_file(log.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if folder < 0 or fsync(folder) < 0:         # the rename itself must be durable
        error = errno
        if folder >= 0:
            close(folder)
        fail_sync(log, error)
    else:
        close(folder)
        # Only the rewrite started from memory after the failed sync ends it: a
        # rewrite that was already running copied its tail from the failed file.
        if log.needs_rewrite and log.rewrite_recovers:
            log.needs_rewrite = False
            log.failure = 0
            log.failure_reported = False
            store_release(&log.sync_failure, 0)
    log.last_rewrite_pause_us = monotonic_us() - started
    if log.last_rewrite_pause_us > log.max_rewrite_pause_us:
        log.max_rewrite_pause_us = log.last_rewrite_pause_us
    return 0


cdef int aof_save_snapshot_now(AppendLog *log, const Store *store) noexcept nogil:
    """At shutdown after a failed sync (``needs_rewrite``): no child can be waited
    for, so write the snapshot from memory here, sync it and rename it over the
    log. Returns 0 (the failure state is left), or -1 with errno set."""
    cdef char *buffer = <char *>malloc(COPY_BUFFER_BYTES)
    cdef int out, folder, error = 0
    cdef uint64_t written = 0
    if buffer == NULL:
        set_errno(ENOMEM)
        return -1
    out = open_file(log.rewrite_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if out < 0 or write_snapshot(store, log.expires, out, buffer, &written) < 0 or fdatasync(out) < 0 \
            or rename(log.rewrite_path, log.path) < 0:
        error = errno
    free(buffer)
    if error == 0:
        folder = open_file(log.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder < 0 or fsync(folder) < 0:
            error = errno
        if folder >= 0:
            close(folder)
    if error != 0:
        if out >= 0:
            close(out)
        unlink(log.rewrite_path)
        set_errno(error)
        return -1
    swap_in(log, out, written)
    log.pending_len = 0
    log.needs_rewrite = False
    log.failure = 0
    store_release(&log.sync_failure, 0)
    return 0


cdef int aof_save_now(AppendLog *log, const Store *store) noexcept nogil:
    """SAVE: the rewrite done in the loop itself, blocking every client while
    it runs (as Redis's SAVE blocks): a snapshot of the store written, synced,
    locked and renamed over the log, then appended to. The records still
    pending are dropped: their effects are in the snapshot. The caller checks
    that no rewrite runs and the log is healthy. Counted as a rewrite.

    Returns 0, or -1 with errno set: before the rename the old log stays in
    use (a failed rewrite); a failed folder sync after it is a failed sync
    (see fail_sync), as at the end of a background rewrite.
    """
    cdef char *buffer = <char *>malloc(COPY_BUFFER_BYTES)
    cdef int out, folder, error = 0
    cdef uint64_t written = 0
    if buffer == NULL:
        set_errno(ENOMEM)
        return -1
    out = open_file(log.rewrite_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if out < 0 or write_snapshot(store, log.expires, out, buffer, &written) < 0 or fdatasync(out) < 0 \
            or flock(out, LOCK_EX | LOCK_NB) < 0 or rename(log.rewrite_path, log.path) < 0:
        error = errno
    free(buffer)
    if error != 0:
        if out >= 0:
            close(out)
        unlink(log.rewrite_path)
        log.rewrite_failures += 1
        log.last_rewrite_failed = True
        set_errno(error)
        return -1
    swap_in(log, out, written)
    log.pending_len = 0
    log.rewrites += 1
    log.last_rewrite_failed = False
    folder = open_file(log.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if folder < 0 or fsync(folder) < 0:         # the rename itself must be durable
        error = errno
        if folder >= 0:
            close(folder)
        fail_sync(log, error)
        set_errno(error)
        return -1
    close(folder)
    return 0


cdef int aof_rewrite_to_recover(AppendLog *log, const Store *store) noexcept nogil:
    """After a failed sync (``needs_rewrite``): make sure the rewrite from memory
    whose successful end leaves the failure state is running. The records still
    pending are dropped first: their effects are in the store, so in the
    snapshot. Returns 0 (running), or -1 with errno set (tried again later)."""
    cdef int64_t now = monotonic_ms()
    log.retry_at_ms = now + RETRY_INTERVAL_MS
    if log.rewrite_child != 0:
        return 0                                # (if it is not the recovery, the next retry starts it)
    if now < log.rewrite_not_before_ms:
        return 0                                # a recovery rewrite failed lately: back off
    log.pending_len = 0
    return aof_start_rewrite(log, store)


# ---- what the loop calls around each batch ------------------------------------------

cdef bint aof_persist_batch(AppendLog *log, const Store *store, int64_t now_ms) noexcept nogil:
    """The log's side of "no reply before its write is in the log": called by
    the loop after answering a batch and before sending any reply.

    Writes the batch's records (one pwrite, and under ``always`` one
    fdatasync: a group commit) and returns whether that worked. When it did
    not, the loop withholds every reply from each session's first unpersisted
    write on; the log then refuses writes until aof_retry_failed (or, after a
    failed sync, a rewrite from memory) ends the failure, and the failure is
    logged once here. Afterwards a finished rewrite is swapped in, or a due
    or requested (BGREWRITEAOF) one started: the loop registers the child's
    pipe (``rewrite_pipe``) to learn when it exits.
    """
    cdef bint persisted, recovering
    aof_poll_sync_thread(log)
    persisted = aof_flush(log) == 0
    if log.failure != 0 and not log.failure_reported:
        log.failure_reported = True
        aof_warn(log, b"append-only file: writing failed (%s); refusing writes until it works again", log.failure)
    if log.rewrite_exited:
        recovering = log.needs_rewrite
        if aof_finish_rewrite(log) < 0:
            if not log.rewrite_failure_reported:            # once per run of failures
                log.rewrite_failure_reported = True
                aof_warn(log, b"append-only file: rewrite failed (%s); the old log stays in use", errno)
        else:
            log_rewrite_done(log, store)
            if recovering and log.failure == 0:
                aof_warn(log, b"append-only file: rewritten from memory after a failed sync; accepting writes", 0)
    elif persisted and (log.rewrite_requested or aof_rewrite_due(log, store_count(store), now_ms)):
        log.rewrite_requested = False
        if aof_start_rewrite(log, store) < 0:
            aof_warn(log, b"append-only file: cannot start a rewrite (%s)", errno)
    return persisted


cdef void aof_retry_failed(AppendLog *log, const Store *store, int64_t now_ms) noexcept nogil:
    """While the log is failing (the loop calls this each iteration then):
    try again every RETRY_INTERVAL_MS (see aof_retry) and say so once it
    works again. After a failed sync only a rewrite from memory can be
    trusted: this starts it, and aof_persist_batch finishes it and leaves the
    failure state."""
    if now_ms < log.retry_at_ms:
        return
    if log.needs_rewrite:
        aof_rewrite_to_recover(log, store)
        return
    if aof_retry(log) == 0:
        aof_warn(log, b"append-only file: writing works again; accepting writes", 0)


cdef void log_rewrite_done(const AppendLog *log, const Store *store) noexcept nogil:
    with gil:
        (<object>log.logger).info("append-only file rewritten: %d bytes, %d keys; the loop paused %.1f ms for "
                                  "the swap", log.size, store_count(store), log.last_rewrite_pause_us / 1000.0)
