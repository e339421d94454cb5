# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The append-only log: every accepted write, as a checksummed record on disk.

File format (little-endian, as the hosts kvfast runs on: x86-64, arm64)
    Header, 16 bytes: the magic ``KVFASTAO``, the version (uint32, 1) and the
    CRC32C of those 12 bytes (uint32).
    Then records, each a type byte, its payload and the CRC32C (uint32) of type
    and payload:
        ``S`` set     key int64, value int64     21 bytes
        ``D`` delete  key int64                  13 bytes
        ``C`` clear   (flushall)                  5 bytes
    The log holds effects, not commands: an INCR is logged as the ``S`` of its
    result, a put of an existing key as nothing. Replaying any suffix of the
    history onto a state that already includes it therefore changes nothing,
    which the rewrite relies on.

Writing (the loop, without the GIL)
    The protocols append records to ``pending`` as they execute writes;
    ``aof_flush`` writes them with one pwrite at the end of the valid log after
    each loop iteration, before that iteration's replies are sent, and under
    ``always`` fdatasyncs them too (group commit). Under ``everysec`` a thread
    fdatasyncs once a second. A failed write or sync sets ``failure``: the loop
    then stops acknowledging, the protocols refuse writes, and ``aof_retry``
    tries again until appending works.

Reading (start-up, ``kvfast-aof``)
    ``scan_records`` checks each record's checksum and applies it. A damaged
    record that is the last one (cut short by a crash mid-append, or a full-length
    record ending exactly at end-of-file, or zero bytes up to the end) is a torn
    tail: start-up truncates it with a warning. Damage with more records after it
    is corruption: start-up refuses, naming the offset.

Compaction (rewrite)
    A forked child writes a snapshot of the store as of the fork (copy-on-write
    memory gives it a frozen view for free) into a temporary file, then copies
    the records the parent appended meanwhile from the old log, following it
    until it is within CATCH_UP_BYTES of its end, fdatasyncs and exits. The
    parent, which kept appending to the old log all along, copies the last few
    records, fdatasyncs, renames the new file over the log and fsyncs the
    folder: a short pause, and at every moment the log's name holds a complete log.
"""
import fcntl as fcntl_module
import glob
import logging
import os
import time

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR, EIO, ENOMEM, EBUSY, EISDIR
from libc.signal cimport signal as set_signal_handler, SIGINT, SIGTERM, SIGKILL, SIG_DFL
from libc.stdint cimport int64_t, intptr_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset, strdup
from posix.fcntl cimport fcntl, F_DUPFD_CLOEXEC, open as open_file, O_RDWR, O_WRONLY, O_RDONLY, O_CREAT, O_TRUNC, O_CLOEXEC, O_DIRECTORY
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED
from posix.stat cimport struct_stat, fstat, S_ISDIR
from posix.types cimport pid_t
from posix.unistd cimport (
    close, fdatasync, fsync, fork, ftruncate, getpid, getppid, nice, pread, pwrite, unlink, _exit, sysconf,
    _SC_OPEN_MAX,
)
from posix.signal cimport kill
from posix.wait cimport waitpid, WIFEXITED, WEXITSTATUS

from kvfast._store cimport (
    Store, Table, store_upsert, store_delete, store_clear, store_count, store_begin_bulk_load, store_end_bulk_load,
    store_prefetch,
)
from kvfast._system cimport (
    set_errno, madvise, MADV_SEQUENTIAL, MAP_SHARED, pipe2, eventfd, eventfd_write, EFD_CLOEXEC,
    pthread_create, pthread_detach, pthread_join, flock, LOCK_EX, LOCK_NB, pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock,
    pthread_mutex_unlock, poll, pollfd, POLLIN, prctl, PR_SET_PDEATHSIG, syscall, SYS_close_range,
    rename, load_acquire, store_release, timespec, clock_gettime, CLOCK_MONOTONIC,
)

log = logging.getLogger("kvfast.aof")



cdef enum:
    HEADER_BYTES = 16
    FORMAT_VERSION = 1
    RECORD_SET = 0x53           # 'S'
    RECORD_DELETE = 0x44        # 'D'
    RECORD_CLEAR = 0x43         # 'C'
    SET_BYTES = 21
    DELETE_BYTES = 13
    CLEAR_BYTES = 5
    RETRY_INTERVAL_MS = 100     # how often a failed log is tried again
    REWRITE_RETRY_MS = 10000    # after a failed rewrite, wait this long before an automatic one
    COPY_BUFFER_BYTES = 1 << 20 # the rewrite's write and copy buffer
    CATCH_UP_BYTES = 64 << 10   # the child leaves at most about this much of the old log to the parent
    CHILD_NICENESS = 10         # the rewrite child's lower CPU priority
    REPLAY_BATCH = 1 << 20      # records replayed between progress checks (and Ctrl-C)
    PREFETCH_AHEAD = 16         # records whose slots are prefetched ahead of the one applied
    TORN_TAIL_LIMIT = 1 << 20   # damage further than this from the end is never taken for a torn tail


cdef enum ScanStatus:
    SCAN_END = 0                # every record is good, up to the end
    SCAN_PAUSED = 1             # max_records reached: call again
    SCAN_TORN = 2               # the last record is damaged: a crash mid-append
    SCAN_BAD_CHECKSUM = 3       # a damaged record with more after it
    SCAN_BAD_TYPE = 4
    SCAN_NO_MEMORY = 5


# ---- CRC32C (Castagnoli), slicing by 8 ------------------------------------------------

cdef uint32_t CRC_TABLES[8][256]


cdef void build_crc_tables() noexcept:
    cdef uint32_t crc
    cdef int i, j
    for i in range(256):
        crc = i
        for j in range(8):
            crc = (crc >> 1) ^ (0x82F63B78U if crc & 1 else 0)
        CRC_TABLES[0][i] = crc
    for i in range(256):
        for j in range(1, 8):
            CRC_TABLES[j][i] = (CRC_TABLES[j - 1][i] >> 8) ^ CRC_TABLES[0][CRC_TABLES[j - 1][i] & 0xff]


build_crc_tables()


cdef uint32_t crc32c_of(const uint8_t *data, size_t length) noexcept nogil:
    """CRC32C of ``data``: eight bytes per step through eight tables (about
    1 ns per byte), the rest a byte at a time."""
    cdef uint32_t crc = 0xFFFFFFFFU
    cdef uint64_t word
    while length >= 8:
        memcpy(&word, data, 8)
        word ^= crc
        crc = (CRC_TABLES[7][word & 0xff] ^ CRC_TABLES[6][(word >> 8) & 0xff]
               ^ CRC_TABLES[5][(word >> 16) & 0xff] ^ CRC_TABLES[4][(word >> 24) & 0xff]
               ^ CRC_TABLES[3][(word >> 32) & 0xff] ^ CRC_TABLES[2][(word >> 40) & 0xff]
               ^ CRC_TABLES[1][(word >> 48) & 0xff] ^ CRC_TABLES[0][word >> 56])
        data += 8
        length -= 8
    while length > 0:
        crc = (crc >> 8) ^ CRC_TABLES[0][(crc ^ data[0]) & 0xff]
        data += 1
        length -= 1
    return crc ^ 0xFFFFFFFFU


def crc32c(data) -> int:
    """CRC32C of a bytes-like object (for tests and tools)."""
    cdef const uint8_t[::1] view = data
    return crc32c_of(&view[0] if view.shape[0] else NULL, view.shape[0])


cdef inline size_t record_length(uint8_t kind) noexcept nogil:
    """Bytes of a record of this type, or 0 for an unknown type."""
    if kind == RECORD_SET:
        return SET_BYTES
    if kind == RECORD_DELETE:
        return DELETE_BYTES
    if kind == RECORD_CLEAR:
        return CLEAR_BYTES
    return 0


cdef inline void seal(uint8_t *record, size_t length) noexcept nogil:
    """Put the checksum of ``record[:length - 4]`` in its last four bytes."""
    cdef uint32_t crc = crc32c_of(record, length - 4)
    memcpy(record + length - 4, &crc, 4)


cdef inline void encode_set(uint8_t *record, int64_t key, int64_t value) noexcept nogil:
    record[0] = RECORD_SET
    memcpy(record + 1, &key, 8)
    memcpy(record + 9, &value, 8)
    seal(record, SET_BYTES)


cdef void encode_header(uint8_t *header) noexcept nogil:
    cdef uint32_t version = FORMAT_VERSION
    memcpy(header, <const char *>b"KVFASTAO", 8)
    memcpy(header + 8, &version, 4)
    seal(header, HEADER_BYTES)


# ---- writing ---------------------------------------------------------------------------

cdef inline int64_t monotonic_ms() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000 + now.tv_nsec // 1000000


cdef inline int64_t monotonic_us() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000 + now.tv_nsec // 1000


cdef uint8_t *reserve_pending(AppendLog *log, size_t length) noexcept nogil:
    """Room for one more record at the end of ``pending``; NULL with errno ENOMEM."""
    cdef size_t capacity
    cdef char *grown
    if log.pending_len + length > log.pending_cap:
        capacity = log.pending_cap * 2 if log.pending_cap else 4096
        while capacity < log.pending_len + length:
            capacity *= 2
        grown = <char *>realloc(log.pending, capacity)
        if grown == NULL:
            set_errno(ENOMEM)
            return NULL
        log.pending = grown
        log.pending_cap = capacity
    log.pending_len += length
    return <uint8_t *>log.pending + log.pending_len - length


cdef int aof_reserve(AppendLog *log, size_t records) noexcept nogil:
    """Make room in ``pending`` for ``records`` more records of any type, so that
    the appends after the store changes cannot fail. Returns 0, or -1 with errno
    ENOMEM."""
    cdef size_t length
    if records > (<size_t>1 << 40) // MAX_RECORD_BYTES:
        set_errno(ENOMEM)
        return -1
    length = records * MAX_RECORD_BYTES
    if reserve_pending(log, length) == NULL:
        return -1
    log.pending_len -= length
    return 0


cdef int aof_append_set(AppendLog *log, int64_t key, int64_t value) noexcept nogil:
    """Queue the record ``key = value``. Returns 0, or -1 with errno ENOMEM."""
    cdef uint8_t *record = reserve_pending(log, SET_BYTES)
    if record == NULL:
        return -1
    encode_set(record, key, value)
    return 0


cdef int aof_append_delete(AppendLog *log, int64_t key) noexcept nogil:
    """Queue the record ``delete key``. Returns 0, or -1 with errno ENOMEM."""
    cdef uint8_t *record = reserve_pending(log, DELETE_BYTES)
    if record == NULL:
        return -1
    record[0] = RECORD_DELETE
    memcpy(record + 1, &key, 8)
    seal(record, DELETE_BYTES)
    return 0


cdef int aof_append_clear(AppendLog *log) noexcept nogil:
    """Queue the record ``clear`` (every key removed). Returns 0, or -1 (ENOMEM)."""
    cdef uint8_t *record = reserve_pending(log, CLEAR_BYTES)
    if record == NULL:
        return -1
    record[0] = RECORD_CLEAR
    seal(record, CLEAR_BYTES)
    return 0


cdef int write_all(int fd, const char *data, size_t length, uint64_t offset) noexcept nogil:
    """pwrite all of ``data`` at ``offset``. Returns 0, or -1 with errno set
    (a short write that cannot continue, e.g. EFBIG or ENOSPC, is an error)."""
    cdef ssize_t written
    while length > 0:
        written = pwrite(fd, data, length, offset)
        if written < 0:
            if errno == EINTR:
                continue
            return -1
        if written == 0:
            set_errno(EIO)
            return -1
        data += written
        length -= <size_t>written
        offset += <uint64_t>written
    return 0


cdef int fail(AppendLog *log, int error) noexcept nogil:
    """Enter the failure state (writes refused until aof_retry succeeds). Returns -1."""
    log.failure = error if error != 0 else EIO
    log.retry_at_ms = monotonic_ms() + RETRY_INTERVAL_MS
    set_errno(log.failure)
    return -1


cdef int fail_sync(AppendLog *log, int error) noexcept nogil:
    """A failed fdatasync: the kernel may have dropped the written pages and
    reports that only once, so a later sync succeeding proves nothing. The
    failure is left only by a rewrite from memory (see aof_retry). Returns -1."""
    log.needs_rewrite = True
    return fail(log, error)


cdef int aof_flush(AppendLog *log) noexcept nogil:
    """Write the pending records at the end of the valid log, and under
    ``always`` fdatasync them: the loop calls this once per iteration, before
    sending that iteration's replies.

    Returns 0 (``pending`` is empty and ``size`` covers it), or -1 with errno
    set and the failure state entered. The records then stay pending, to be
    written again at the same offset by aof_retry, so the file never holds a
    partial record followed by good ones; a partial write is also cut off at
    once where possible.
    """
    cdef int error
    if log.failure != 0:
        set_errno(log.failure)
        return -1
    if log.pending_len == 0:
        return 0
    if write_all(log.fd, log.pending, log.pending_len, log.size) < 0:
        error = errno
        ftruncate(log.fd, <long>log.size)     # best effort: a crash now leaves no partial record
        return fail(log, error)
    if log.policy == FSYNC_ALWAYS and fdatasync(log.fd) < 0:
        return fail_sync(log, errno)
    log.size += log.pending_len
    store_release(&log.appended, log.appended + log.pending_len)
    log.pending_len = 0
    if log.shared != NULL:
        store_release(&log.shared.log_size, log.size)
    return 0


cdef int aof_poll_sync_thread(AppendLog *log) noexcept nogil:
    """Take over a failure the everysec thread reported. Returns -1 (failure
    state entered, errno set) or 0."""
    cdef int error
    if not log.thread_running or log.failure != 0:
        return 0
    error = <int>load_acquire(&log.sync_failure)
    if error == 0:
        return 0
    return fail_sync(log, error)


cdef int aof_retry(AppendLog *log, const Store *store) noexcept nogil:
    """Try again after a failure. After a failed write: write what is pending
    (at the same offset) and fdatasync; returns 0 once that works (the failure
    state is left). After a failed sync: start a rewrite of the store, whose
    successful end (aof_finish_rewrite) leaves the failure state; the records
    still pending are dropped first, since their effects are in the store and
    so in the snapshot. Returns -1 while still failing (next retry scheduled)."""
    cdef int error = log.failure
    if log.needs_rewrite:
        log.retry_at_ms = monotonic_ms() + RETRY_INTERVAL_MS
        if log.rewrite_child == 0 and store != NULL:
            log.pending_len = 0
            if aof_start_rewrite(log, store) < 0:
                log.rewrite_not_before_ms = 0
        set_errno(error)
        return -1
    log.failure = 0
    if aof_flush(log) < 0:
        return -1
    if log.policy != FSYNC_NO and fdatasync(log.fd) < 0:
        return fail_sync(log, errno)
    log.failure_reported = False                # a later failure is logged again
    return 0


cdef void *sync_thread_main(void *argument) noexcept nogil:
    """The everysec thread: about once a second, fdatasync the log if anything
    was appended since the last sync; also close a log retired by a rewrite
    (freeing a large unlinked file can take a while: not in the loop). Works on
    a dup() of the descriptor, so a rewrite may swap the log at any time. A
    failed sync is reported through ``sync_failure`` for the loop to act on."""
    cdef AppendLog *log = <AppendLog *>argument
    cdef pollfd stop
    cdef uint64_t appended, synced = load_acquire(&log.appended)
    cdef int fd, retired
    stop.fd = log.thread_stop_fd
    stop.events = POLLIN
    while True:
        stop.revents = 0
        if poll(&stop, 1, 1000) != 0 and (stop.revents & POLLIN):
            break
        appended = load_acquire(&log.appended)
        pthread_mutex_lock(&log.lock)
        retired = log.retired_fd
        log.retired_fd = -1
        # (If no descriptor is free for the dup, this second's sync is skipped.)
        fd = fcntl(log.fd, F_DUPFD_CLOEXEC, 0) if appended != synced else -1
        pthread_mutex_unlock(&log.lock)
        if retired >= 0:
            close(retired)
        if fd >= 0:
            if fdatasync(fd) == 0:
                synced = appended
            else:
                store_release(&log.sync_failure, <uint64_t>errno)
            close(fd)
    return NULL


# ---- compaction --------------------------------------------------------------------------

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
    with errno set (EBUSY: one is running; the log is untouched either way).

    Pending records are flushed first, so the snapshot (the store as of the
    fork) and the old log's first ``rewrite_started_at`` bytes hold the same
    state. (When recovering from a failed sync nothing is pending: aof_retry
    dropped it, and the snapshot alone is the new log.)
    """
    cdef int pipe_fds[2]
    cdef char *buffer
    cdef pid_t child, parent = getpid()
    cdef int64_t started
    if log.rewrite_child != 0:
        set_errno(EBUSY)
        return -1
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


cdef void rewrite_child_main(AppendLog *log, const Store *store, pid_t parent, int done_fd,
                             char *buffer) noexcept nogil:
    """The forked child: write the snapshot and sync it, then follow the old log
    and sync again, twice (each pass copies what was appended during the
    previous sync, so what is left for the parent to copy and sync in its pause
    is small), set ``shared.done`` and exit 0; or exit 1 with errno in
    ``shared.error``. Never returns; runs only C code (no Python in a forked
    child) and dies with its parent."""
    cdef int out = -1, source, i, rounds
    cdef size_t used = HEADER_BYTES, slot
    cdef uint64_t written = 0, copied, records = 0
    cdef const Table *table
    cdef const Table *tables[2]
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
    encode_header(<uint8_t *>buffer)
    if store.has_empty_key:
        encode_set(<uint8_t *>buffer + used, 0, store.empty_key_value)
        used += SET_BYTES
        records += 1
    tables[0] = &store.main
    tables[1] = &store.draining
    for i in range(2):
        table = tables[i]
        for slot in range(table.capacity):
            if table.slots[slot].key == 0:
                continue
            if used + SET_BYTES > COPY_BUFFER_BYTES:
                if write_all(out, buffer, used, written) < 0:
                    child_exit(log, errno)
                written += used
                used = 0
            encode_set(<uint8_t *>buffer + used, table.slots[slot].key, table.slots[slot].value)
            used += SET_BYTES
            records += 1
    if write_all(out, buffer, used, written) < 0:
        child_exit(log, errno)
    written += used
    copied = log.rewrite_started_at
    for rounds in range(3):
        if fdatasync(out) < 0:
            child_exit(log, errno)
        if rounds < 2 and copy_tail(log, source, out, &copied, &written, buffer) < 0:
            child_exit(log, errno)
    log.shared.snapshot_records = records
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
    cdef int status = 0, new_fd = -1, folder = -1, error = 0, retired
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
    pthread_mutex_lock(&log.lock)
    retired = log.fd
    log.fd = new_fd
    pthread_mutex_unlock(&log.lock)
    retire_descriptor(log, retired)
    log.size = to_offset
    log.base_size = to_offset
    log.rewrites += 1
    log.last_rewrite_failed = False
    folder = open_file(log.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if folder < 0 or fsync(folder) < 0:         # the rename itself must be durable
        error = errno
        if folder >= 0:
            close(folder)
        fail_sync(log, error)
    else:
        close(folder)
        if log.needs_rewrite:                   # recovered from a failed sync
            log.needs_rewrite = False
            log.failure = 0
            log.failure_reported = False
            store_release(&log.sync_failure, 0)
    log.last_rewrite_pause_us = monotonic_us() - started
    if log.last_rewrite_pause_us > log.max_rewrite_pause_us:
        log.max_rewrite_pause_us = log.last_rewrite_pause_us
    return 0


# ---- reading -------------------------------------------------------------------------

cdef bint all_zero(const uint8_t *data, size_t length) noexcept nogil:
    cdef size_t i
    for i in range(length):
        if data[i] != 0:
            return False
    return True


cdef bint is_good_record(const uint8_t *data, size_t size, size_t at) noexcept nogil:
    """Whether a whole record with a matching checksum starts at ``at``."""
    cdef size_t length = record_length(data[at])
    cdef uint32_t stored_crc
    if length == 0 or size - at < length:
        return False
    memcpy(&stored_crc, data + at + length - 4, 4)
    return crc32c_of(data + at, length - 4) == stored_crc


cdef ScanStatus classify_damage(const uint8_t *data, size_t size, size_t at, ScanStatus damage) noexcept nogil:
    """A damaged record at ``at`` is a torn tail (SCAN_TORN: a crash mid-append,
    safe to cut off) when no good record starts anywhere after it within
    TORN_TAIL_LIMIT bytes of the end: a record cut short, a last record written
    in part, blocks never written (zeros, at any length) or any mix. Otherwise it is ``damage``:
    corruption with good records after it, which must not be cut off silently.
    (A random match of type byte and CRC32C has odds of about 1 in 10^9 per offset.)"""
    cdef size_t candidate
    if size - at > TORN_TAIL_LIMIT:
        return SCAN_TORN if all_zero(data + at, size - at) else damage
    for candidate in range(at + 1, size):
        if is_good_record(data, size, candidate):
            return damage
    return SCAN_TORN


cdef ScanStatus scan_records(const uint8_t *data, size_t size, size_t *position, Store *store,
                             size_t max_records, uint64_t *records) noexcept nogil:
    """Check (and, given a store, apply) up to ``max_records`` records starting
    at ``position[0]``, advancing it past each good one and counting them in
    ``records[0]``. On a damaged record, ``position[0]`` is where it starts and
    the status says whether it is a torn tail or corruption in the middle (see
    classify_damage). SCAN_NO_MEMORY: the store could not grow."""
    cdef size_t at = position[0], length, done = 0
    cdef size_t ahead = at, ahead_records = 0, ahead_length
    cdef uint8_t kind
    cdef uint32_t stored_crc
    cdef int64_t key, value
    cdef ScanStatus damage
    while done < max_records:
        if store != NULL:
            # Prefetch the slots of the next few keys (their records are only
            # sized here, checked when their turn comes): the store's cache
            # misses then overlap instead of coming one after another.
            while ahead_records < PREFETCH_AHEAD and ahead < size:
                ahead_length = record_length(data[ahead])
                if ahead_length == 0 or size - ahead < ahead_length:
                    ahead = size
                    break
                if ahead_length != CLEAR_BYTES:
                    memcpy(&key, data + ahead + 1, 8)
                    store_prefetch(store, key)
                ahead += ahead_length
                ahead_records += 1
            if ahead_records > 0:
                ahead_records -= 1
        if at == size:
            position[0] = at
            return SCAN_END
        kind = data[at]
        length = record_length(kind)
        if length == 0:
            damage = SCAN_BAD_TYPE
        elif size - at < length:
            damage = SCAN_TORN                  # cut short: the crash came mid-append
        else:
            memcpy(&stored_crc, data + at + length - 4, 4)
            damage = SCAN_END if crc32c_of(data + at, length - 4) == stored_crc else SCAN_BAD_CHECKSUM
        if damage != SCAN_END:
            position[0] = at
            return classify_damage(data, size, at, damage)
        if store != NULL:
            memcpy(&key, data + at + 1, 8)
            if kind == RECORD_SET:
                memcpy(&value, data + at + 9, 8)
                if store_upsert(store, key, value) < 0:
                    position[0] = at
                    return SCAN_NO_MEMORY
            elif kind == RECORD_DELETE:
                store_delete(store, key)
            else:
                store_clear(store)
        at += length
        done += 1
        records[0] += 1
    position[0] = at
    return SCAN_PAUSED


class LogError(Exception):
    """An append-only file that cannot be used; ``str()`` is one line naming the
    file and, for damage, the byte offset. ``offset`` is that offset (or None)."""

    def __init__(self, path, message, offset=None):
        self.path, self.offset = path, offset
        super().__init__(f"{path}: {message}")


def describe_damage(status, offset):
    if status == SCAN_BAD_CHECKSUM:
        return f"corrupt record at offset {offset} (bad checksum)"
    if status == SCAN_BAD_TYPE:
        return f"corrupt record at offset {offset} (unknown record type)"
    if status == SCAN_TORN:
        return f"torn last record at offset {offset}"
    return f"unreadable at offset {offset}"


cdef class MappedFile:
    """A read-only mapping of a whole file (empty files map to nothing)."""
    cdef const uint8_t *data
    cdef size_t size

    def __cinit__(self, int fd):
        cdef struct_stat info
        cdef void *mapped
        self.data = NULL
        if fstat(fd, &info) < 0:
            raise_os_error()
        if S_ISDIR(info.st_mode):
            raise IsADirectoryError(EISDIR, os.strerror(EISDIR))
        self.size = <size_t>info.st_size
        if self.size == 0:
            return
        mapped = mmap(NULL, self.size, PROT_READ, MAP_PRIVATE, fd, 0)
        if mapped == MAP_FAILED:
            raise_os_error()
        madvise(mapped, self.size, MADV_SEQUENTIAL)
        self.data = <const uint8_t *>mapped

    def __dealloc__(self):
        if self.data != NULL:
            munmap(<void *>self.data, self.size)


cdef int check_header(const uint8_t *data, size_t size, path) except -1:
    """Raise LogError unless the file starts with a valid version-1 header."""
    cdef uint8_t expected[HEADER_BYTES]
    encode_header(expected)
    if memcmp(data, expected, 8) != 0:
        raise LogError(path, "not a kvfast append-only file (bad header)", 0)
    if memcmp(data, expected, HEADER_BYTES) != 0:
        raise LogError(path, "unsupported version or damaged header", 0)
    return 0


def inspect(path):
    """Check a log without changing it. Returns a dict: ``status`` ("ok", "torn",
    "corrupt" or "empty"), ``records`` (good ones), ``good_end`` (offset where
    the good records end), ``size``, and ``problem`` (one line, or None).
    Raises OSError if the file cannot be read, LogError for a bad header."""
    cdef MappedFile mapped
    cdef size_t position = HEADER_BYTES
    cdef uint64_t records = 0
    cdef ScanStatus status
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mapped = MappedFile(fd)
    finally:
        os.close(fd)
    if mapped.size < HEADER_BYTES:
        if mapped.size == 0 or all_zero(mapped.data, mapped.size) or \
                memcmp(mapped.data, <const char *>b"KVFASTAO", mapped.size if mapped.size < 8 else 8) == 0:
            return {"status": "empty" if mapped.size == 0 else "torn", "records": 0, "good_end": 0,
                    "size": mapped.size, "problem": None if mapped.size == 0 else "torn header at offset 0"}
        raise LogError(path, "not a kvfast append-only file (bad header)", 0)
    check_header(mapped.data, mapped.size, path)
    with nogil:
        status = scan_records(mapped.data, mapped.size, &position, NULL, <size_t>-1, &records)
    result = {"records": records, "good_end": position, "size": mapped.size, "problem": None}
    if status == SCAN_END:
        result["status"] = "ok"
    else:
        result["status"] = "torn" if status == SCAN_TORN else "corrupt"
        result["problem"] = describe_damage(status, position)
    return result


def records(path):
    """Yield ``(offset, kind, key, value)`` for each good record ("set", "del",
    "flushall"; key and value None where the record has none); raise LogError
    at the first damaged record. For ``kvfast-aof dump``."""
    import struct
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < HEADER_BYTES:
        if len(data) == 0:
            return
        raise LogError(path, "torn header at offset 0", 0)
    header = bytearray(HEADER_BYTES)
    cdef uint8_t[::1] header_view = header
    encode_header(&header_view[0])
    if data[:8] != bytes(header[:8]):
        raise LogError(path, "not a kvfast append-only file (bad header)", 0)
    if data[:HEADER_BYTES] != bytes(header):
        raise LogError(path, "unsupported version or damaged header", 0)
    offset = HEADER_BYTES
    while offset < len(data):
        kind = data[offset]
        length = record_length(kind)
        end = offset + length
        if length == 0 or end > len(data) or \
                crc32c(data[offset:end - 4]) != int.from_bytes(data[end - 4:end], "little"):
            raise LogError(path, describe_damage(damage_at(data, offset), offset), offset)
        if kind == RECORD_SET:
            key, value = struct.unpack_from("<qq", data, offset + 1)
            yield offset, "set", key, value
        elif kind == RECORD_DELETE:
            yield offset, "del", struct.unpack_from("<q", data, offset + 1)[0], None
        else:
            yield offset, "flushall", None, None
        offset = end


def damage_at(const uint8_t[::1] data, size_t offset):
    """The ScanStatus of the damaged record at ``offset`` (for records())."""
    cdef size_t length = record_length(data[offset])
    cdef ScanStatus damage = SCAN_BAD_TYPE if length == 0 else SCAN_BAD_CHECKSUM
    return classify_damage(&data[0], data.shape[0], offset, damage)


# ---- the log a server appends to ---------------------------------------------------

FSYNC_POLICIES = {"no": FSYNC_NO, "everysec": FSYNC_EVERYSEC, "always": FSYNC_ALWAYS}


cdef class AppendOnlyFile:
    """A server's append-only log: opened (created if missing) and locked to
    this process by the constructor, replayed into the loop's store by
    ``EventLoop.replay``, appended to by the loop, flushed, synced and closed by
    ``close()``.

    ``policy``: "always", "everysec" or "no". ``rewrite_min_bytes``: no automatic
    rewrite below this size.
    """

    def __cinit__(self, path, policy="everysec", rewrite_min_bytes=64 << 20, logger=None):
        self.log.fd = -1
        self.log.thread_stop_fd = -1
        self.log.retired_fd = -1
        self.log.rewrite_pipe = -1
        pthread_mutex_init(&self.log.lock, NULL)

    def __init__(self, path, policy="everysec", rewrite_min_bytes=64 << 20, logger=None):
        if policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be always, everysec or no, not {policy!r}")
        self.path_text = os.fspath(path)
        self.logger = logger if logger is not None else log
        self.log.policy = FSYNC_POLICIES[policy]
        self.log.rewrite_min_bytes = rewrite_min_bytes
        absolute = os.path.abspath(self.path_text)     # a later chdir must not move the log
        encoded = os.fsencode(absolute)
        self.log.path = strdup(encoded)
        self.log.directory = strdup(os.fsencode(os.path.dirname(absolute)))
        self.log.rewrite_path = strdup(encoded + b".rewrite-%d.tmp" % os.getpid())
        if self.log.path == NULL or self.log.directory == NULL or self.log.rewrite_path == NULL:
            raise MemoryError()
        self.created = not os.path.exists(absolute)
        self.log.fd = os.open(absolute, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl_module.flock(self.log.fd, fcntl_module.LOCK_EX | fcntl_module.LOCK_NB)
        except BlockingIOError:
            os.close(self.log.fd)
            self.log.fd = -1
            raise LogError(self.path_text, "in use by another kvfast-server (the file is locked)") from None
        for stale in glob.glob(glob.escape(absolute) + ".rewrite-*.tmp"):
            os.unlink(stale)        # a rewrite that a crash interrupted: never part of the log

    @property
    def path(self):
        return self.path_text

    cdef int replay_into(self, Store *store, object progress) except -1:
        """Apply every record to ``store`` (which should be empty). A torn tail
        is cut off with a warning; a new or empty file gets its header. Calls
        ``progress(done_bytes, total_bytes, records)`` about once a second for
        large files. Returns the number of records; raises LogError for a damaged
        log, MemoryError when the store cannot hold it."""
        cdef MappedFile mapped = MappedFile(self.log.fd)
        cdef size_t position = HEADER_BYTES
        cdef uint64_t records = 0
        cdef ScanStatus status = SCAN_PAUSED
        cdef double last_report = time.monotonic()
        cdef uint8_t header[HEADER_BYTES]
        if mapped.size < HEADER_BYTES:
            if mapped.size > 0:     # a crash while the file was being created
                if not (all_zero(mapped.data, mapped.size)
                        or memcmp(mapped.data, <const char *>b"KVFASTAO",
                                  mapped.size if mapped.size < 8 else 8) == 0):
                    raise LogError(self.path_text, "not a kvfast append-only file (bad header)", 0)
                self.logger.warning("%s: torn header (%d bytes): truncated and started afresh",
                                    self.path_text, mapped.size)
            encode_header(header)
            if ftruncate(self.log.fd, 0) < 0 or write_all(self.log.fd, <char *>header, HEADER_BYTES, 0) < 0 \
                    or fdatasync(self.log.fd) < 0:
                raise_os_error()
            if self.created:        # make the new name durable too
                folder = os.open(os.path.dirname(os.path.abspath(self.path_text)), os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
            self.log.size = self.log.base_size = HEADER_BYTES
            return 0
        check_header(mapped.data, mapped.size, self.path_text)
        # At most one key per set record: size the table for that at once (if
        # that much memory cannot be had, the table grows as usual instead).
        store_begin_bulk_load(store, (mapped.size - HEADER_BYTES) // SET_BYTES)
        while status == SCAN_PAUSED:
            with nogil:
                status = scan_records(mapped.data, mapped.size, &position, store, REPLAY_BATCH, &records)
            PyErr_CheckSignals()
            if progress is not None and status == SCAN_PAUSED and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                progress(position, mapped.size, records)
        store_end_bulk_load(store)
        if status == SCAN_NO_MEMORY:
            raise MemoryError(f"{self.path_text}: out of memory after {records} records")
        if status == SCAN_TORN:
            self.logger.warning("%s: torn last record at offset %d (%d bytes, a crash mid-append): truncated; "
                                "%d records kept", self.path_text, position, mapped.size - position, records)
            if ftruncate(self.log.fd, <long>position) < 0 or fdatasync(self.log.fd) < 0:
                raise_os_error()
        elif status != SCAN_END:
            raise LogError(self.path_text, describe_damage(status, position)
                           + f"; run kvfast-aof check {self.path_text}", position)
        self.log.size = self.log.base_size = position
        return records

    def start(self):
        """Start the everysec sync thread (after replay, before serving)."""
        if self.log.policy != FSYNC_EVERYSEC or self.log.thread_running:
            return
        self.log.thread_stop_fd = eventfd(0, EFD_CLOEXEC)
        if self.log.thread_stop_fd < 0:
            raise_os_error()
        if pthread_create(&self.log.thread, NULL, sync_thread_main, &self.log) != 0:
            raise OSError("cannot start the append-only file's sync thread")
        self.log.thread_running = True

    def close(self):
        """Write what is pending, fdatasync, stop the sync thread, stop a running
        rewrite (its temporary file is removed) and close the file. Idempotent.
        Raises OSError if the final write or sync of a healthy log fails (after
        cleaning up). A log already failing only logs what it could not write:
        none of it was acknowledged."""
        cdef int status, error = 0, unwritten_error = 0
        cdef size_t unwritten = 0
        if self.log.fd < 0:
            return
        with nogil:
            if self.log.failure != 0 and not self.log.needs_rewrite:
                aof_retry(&self.log, NULL)
            if self.log.failure != 0:
                # Still failing: what is pending was never acknowledged (those
                # replies were withheld), so losing it breaks no promise.
                unwritten, unwritten_error = self.log.pending_len, self.log.failure
            elif aof_flush(&self.log) < 0 or fdatasync(self.log.fd) < 0:
                error = errno
            self.stop_sync_thread()
            if self.log.rewrite_child != 0:
                syscall_kill(self.log.rewrite_child)
                waitpid(self.log.rewrite_child, &status, 0)
                self.log.rewrite_child = 0
                unlink(self.log.rewrite_path)
            if self.log.rewrite_pipe >= 0:
                close(self.log.rewrite_pipe)
                self.log.rewrite_pipe = -1
            close(self.log.fd)
            self.log.fd = -1
        if unwritten_error != 0:
            self.logger.warning("%s: %d bytes of writes that were never acknowledged could not be written (%s)",
                                self.path_text, unwritten, os.strerror(unwritten_error))
        if error != 0:
            raise OSError(error, f"{self.path_text}: {os.strerror(error)}")

    cdef void stop_sync_thread(self) noexcept nogil:
        if self.log.thread_running:
            eventfd_write(self.log.thread_stop_fd, 1)
            pthread_join(self.log.thread, NULL)
            self.log.thread_running = False
        if self.log.thread_stop_fd >= 0:
            close(self.log.thread_stop_fd)
            self.log.thread_stop_fd = -1
        if self.log.retired_fd >= 0:
            close(self.log.retired_fd)
            self.log.retired_fd = -1

    def stats(self):
        return {
            "aof_fsync": {FSYNC_NO: "no", FSYNC_EVERYSEC: "everysec", FSYNC_ALWAYS: "always"}[self.log.policy],
            "aof_current_size": self.log.size,
            "aof_base_size": self.log.base_size,
            "aof_pending_bytes": self.log.pending_len,
            "aof_last_write_status": "err" if self.log.failure else "ok",
            "aof_last_write_error": os.strerror(self.log.failure) if self.log.failure else "",
            "aof_rewrite_in_progress": 1 if self.log.rewrite_child else 0,
            "aof_rewrites": self.log.rewrites,
            "aof_rewrite_failures": self.log.rewrite_failures,
            "aof_last_bgrewrite_status": "err" if self.log.last_rewrite_failed else "ok",
            "aof_latest_fork_us": self.log.latest_fork_us,
            "aof_last_rewrite_pause_us": self.log.last_rewrite_pause_us,
            "aof_max_rewrite_pause_us": self.log.max_rewrite_pause_us,
        }

    def __dealloc__(self):
        if self.log.fd >= 0:
            try:
                self.close()
            except OSError:
                pass
        if self.log.shared != NULL:
            munmap(self.log.shared, sizeof(RewriteShared))
        free(self.log.pending)
        free(self.log.path)
        free(self.log.directory)
        free(self.log.rewrite_path)
        pthread_mutex_destroy(&self.log.lock)


cdef inline void syscall_kill(pid_t pid) noexcept nogil:
    kill(pid, SIGKILL)


cdef int raise_os_error() except -1:
    cdef int error = errno
    raise OSError(error, os.strerror(error))
