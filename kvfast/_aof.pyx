# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The append-only log a server writes: every accepted write, as a checksummed
record on disk (the format: _record.pyx).

Writing (the loop, without the GIL)
    Before changing the store, a write command reserves room for its records
    (aof_reserve, through _persist.begin_write), so logging the change cannot
    fail and the store and the log never disagree. Records collect in
    ``pending``; ``aof_flush`` writes them with one pwrite at the end of the
    valid log after each loop iteration, before that iteration's replies are
    sent, and under ``always`` fdatasyncs them too (group commit). Under
    ``everysec`` a thread fdatasyncs once a second.

Failure
    A failed write or sync sets ``failure``: the loop withholds the replies
    that depended on unwritten records, the protocols refuse writes, and
    aof_retry writes the pending records again (at the same offset, so the file
    never gets a partial record followed by good ones) until that works. After
    a failed *sync* a later successful one proves nothing (the kernel reports
    a writeback error once), so only a rewrite from memory ends that failure.

Also here: ``AppendOnlyFile``, which opens and locks the file, replays it into
the loop's store at start-up (_replay.pyx) and closes it. Compaction is
_rewrite.pyx.
"""
import fcntl as fcntl_module
import glob
import logging
import os
import time

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR, EIO, ENOMEM
from libc.signal cimport SIGKILL
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcmp, memcpy, memmove, strdup
from posix.fcntl cimport fcntl, F_DUPFD_CLOEXEC
from posix.mman cimport munmap
from posix.signal cimport kill
from posix.unistd cimport close, fdatasync, ftruncate, pwrite, unlink
from posix.wait cimport waitpid

from kvfast._record cimport (
    HEADER_BYTES, SET_BYTES, DELETE_BYTES, CLEAR_BYTES, BEGIN_BYTES, MAX_RECORD_BYTES, RECORD_DELETE, RECORD_CLEAR,
    RECORD_BEGIN, SET_EXPIRING_BYTES, DEADLINE_BYTES, PERSIST_BYTES, RECORD_DEADLINE, RECORD_PERSIST, seal,
    encode_set, encode_set_expiring, encode_header, record_length,
)
from kvfast._replay cimport (
    MappedFile, ScanStatus, SCAN_END, SCAN_PAUSED, SCAN_TORN, SCAN_TORN_TRANSACTION, SCAN_NO_MEMORY, all_zero,
    check_header, scan_records,
)
from kvfast._replay import LogError, describe_damage
from kvfast._store cimport Store, store_begin_bulk_load, store_end_bulk_load
from kvfast._system cimport (
    set_errno, eventfd, eventfd_write, EFD_CLOEXEC, pthread_create, pthread_join, pthread_mutex_init,
    pthread_mutex_destroy, pthread_mutex_lock, pthread_mutex_unlock, poll, pollfd, POLLIN,
    load_acquire, store_release, monotonic_ms, raise_os_error,
)

log = logging.getLogger("kvfast.aof")


cdef enum:
    REPLAY_BATCH = 1 << 20      # records replayed between progress checks (and Ctrl-C)


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


cdef int aof_append_set_expiring(AppendLog *log, int64_t key, int64_t value, int64_t deadline) noexcept nogil:
    """Queue the record ``key = value`` with ``deadline`` (Unix ms). Returns 0,
    or -1 with errno ENOMEM."""
    cdef uint8_t *record = reserve_pending(log, SET_EXPIRING_BYTES)
    if record == NULL:
        return -1
    encode_set_expiring(record, key, value, deadline)
    return 0


cdef int aof_append_deadline(AppendLog *log, int64_t key, int64_t deadline) noexcept nogil:
    """Queue the record ``key's deadline = deadline`` (Unix ms). Returns 0, or
    -1 with errno ENOMEM."""
    cdef uint8_t *record = reserve_pending(log, DEADLINE_BYTES)
    if record == NULL:
        return -1
    record[0] = RECORD_DEADLINE
    memcpy(record + 1, &key, 8)
    memcpy(record + 9, &deadline, 8)
    seal(record, DEADLINE_BYTES)
    return 0


cdef int aof_append_persist(AppendLog *log, int64_t key) noexcept nogil:
    """Queue the record ``key has no deadline``. Returns 0, or -1 with errno ENOMEM."""
    cdef uint8_t *record = reserve_pending(log, PERSIST_BYTES)
    if record == NULL:
        return -1
    record[0] = RECORD_PERSIST
    memcpy(record + 1, &key, 8)
    seal(record, PERSIST_BYTES)
    return 0


cdef int aof_append_clear(AppendLog *log) noexcept nogil:
    """Queue the record ``clear`` (every key removed). Returns 0, or -1 (ENOMEM)."""
    cdef uint8_t *record = reserve_pending(log, CLEAR_BYTES)
    if record == NULL:
        return -1
    record[0] = RECORD_CLEAR
    seal(record, CLEAR_BYTES)
    return 0


cdef size_t aof_begin_transaction(AppendLog *log) noexcept nogil:
    """Open a transaction's unit of records (EXEC): a ``B`` record whose count
    aof_end_transaction fills in. Returns its offset in ``pending``, to pass
    to aof_end_transaction; the caller reserved room for it and for every
    record of the transaction (keyspace_begin_write), so this cannot fail.
    Nothing is flushed in between: the loop writes ``pending`` after the
    iteration, so the unit reaches the file in one pwrite."""
    cdef size_t begin = log.pending_len
    cdef uint8_t *record = reserve_pending(log, BEGIN_BYTES)
    if record != NULL:
        record[0] = RECORD_BEGIN
    log.unit_open = True
    return begin


cdef void aof_end_transaction(AppendLog *log, size_t begin) noexcept nogil:
    """Close the unit aof_begin_transaction opened at ``begin``: its ``B``
    counts the records after it and is sealed; with one record or none the
    ``B`` is dropped instead (a single record is atomic by itself)."""
    cdef uint8_t *data = <uint8_t *>log.pending
    cdef size_t at = begin + BEGIN_BYTES
    cdef uint64_t count = 0
    log.unit_open = False
    while at < log.pending_len:
        at += record_length(data[at])
        count += 1
    if count <= 1:
        memmove(data + begin, data + begin + BEGIN_BYTES, log.pending_len - begin - BEGIN_BYTES)
        log.pending_len -= BEGIN_BYTES
        return
    memcpy(data + begin + 1, &count, 8)
    seal(data + begin, BEGIN_BYTES)


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
    failure is left only by a rewrite from memory (_rewrite.aof_rewrite_to_recover).
    Returns -1."""
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


cdef int aof_retry(AppendLog *log) noexcept nogil:
    """Try again after a failed write: write what is pending (at the same
    offset) and fdatasync. Returns 0 once that works (the failure state is
    left), else -1 and the next retry is scheduled. After a failed sync
    (``needs_rewrite``) this only reschedules: that failure ends with a rewrite
    from memory (_rewrite.aof_rewrite_to_recover)."""
    if log.needs_rewrite:
        log.retry_at_ms = monotonic_ms() + RETRY_INTERVAL_MS
        set_errno(log.failure)
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
    cdef uint64_t appended, synced = load_acquire(&log.appended), generation
    cdef int fd, retired, error
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
        generation = log.fd_generation
        pthread_mutex_unlock(&log.lock)
        if retired >= 0:
            close(retired)
        if fd >= 0:
            if fdatasync(fd) == 0:
                synced = appended
            else:
                error = errno
                pthread_mutex_lock(&log.lock)
                if generation == log.fd_generation:     # still the log, not a file a rewrite replaced
                    store_release(&log.sync_failure, <uint64_t>error)
                pthread_mutex_unlock(&log.lock)
            close(fd)
    return NULL


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
        self.log.logger = <void *>self.logger
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

    @property
    def policy(self):
        """The fsync policy: "always", "everysec" or "no"."""
        return fsync_policy_text(self.log.policy).decode()

    @policy.setter
    def policy(self, str policy):
        """Change the policy of an open log (CONFIG SET appendfsync): the everysec
        thread is stopped or started as the new policy needs. Under the new
        policy's first flush the file is synced as it says (an fdatasync covers
        every earlier write too)."""
        if policy not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be always, everysec or no, not {policy!r}")
        if FSYNC_POLICIES[policy] == self.log.policy:
            return
        if self.log.thread_running:
            with nogil:
                self.stop_sync_thread()
        self.log.policy = FSYNC_POLICIES[policy]
        if self.log.fd >= 0:
            self.start()

    @property
    def rewrite_min_bytes(self):
        return self.log.rewrite_min_bytes

    @rewrite_min_bytes.setter
    def rewrite_min_bytes(self, uint64_t value):
        self.log.rewrite_min_bytes = value

    cdef int replay_into(self, Store *store, Store *expires, object progress) except -1:
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
        if mapped.size < HEADER_BYTES or all_zero(mapped.data, mapped.size):
            if mapped.size > 0:     # a crash while the file was being created (or its blocks never written)
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
                folder = os.open(self.log.directory, os.O_RDONLY)
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
                status = scan_records(mapped.data, mapped.size, &position, store, expires, REPLAY_BATCH, &records)
            PyErr_CheckSignals()
            if progress is not None and status == SCAN_PAUSED and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                progress(position, mapped.size, records)
        store_end_bulk_load(store)
        if status == SCAN_NO_MEMORY:
            raise MemoryError(f"{self.path_text}: out of memory after {records} records")
        if status == SCAN_TORN or status == SCAN_TORN_TRANSACTION:
            self.logger.warning("%s: torn last %s at offset %d (%d bytes, a crash mid-append): truncated; "
                                "%d records kept", self.path_text,
                                "record" if status == SCAN_TORN else "transaction (none of it applied)",
                                position, mapped.size - position, records)
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
        cdef int error = 0, unwritten_error = 0
        cdef size_t unwritten = 0
        if self.log.fd < 0:
            return
        with nogil:
            if self.log.failure != 0 and not self.log.needs_rewrite:
                aof_retry(&self.log)
            if self.log.failure != 0:
                # Still failing: what is pending was never acknowledged (those
                # replies were withheld), so losing it breaks no promise.
                unwritten, unwritten_error = self.log.pending_len, self.log.failure
            elif aof_flush(&self.log) < 0 or fdatasync(self.log.fd) < 0:
                error = errno
            self.stop_sync_thread()
            self.kill_rewrite()
            close(self.log.fd)
            self.log.fd = -1
        if unwritten_error != 0:
            self.logger.warning("%s: %d bytes of writes that were never acknowledged could not be written (%s)",
                                self.path_text, unwritten, os.strerror(unwritten_error))
        if error != 0:
            raise OSError(error, f"{self.path_text}: {os.strerror(error)}")

    def stop_rewrite(self):
        """Stop a running rewrite: its child is killed and its file removed."""
        with nogil:
            self.kill_rewrite()

    cdef void kill_rewrite(self) noexcept nogil:
        cdef int status
        if self.log.rewrite_child != 0:
            kill(self.log.rewrite_child, SIGKILL)
            while waitpid(self.log.rewrite_child, &status, 0) < 0 and errno == EINTR:
                pass
            self.log.rewrite_child = 0
            unlink(self.log.rewrite_path)
        if self.log.rewrite_pipe >= 0:
            close(self.log.rewrite_pipe)
            self.log.rewrite_pipe = -1
        self.log.rewrite_exited = False

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


cdef void aof_warn(const AppendLog *log, const char *message, int error) noexcept nogil:
    """Log a warning about the log through its logger (takes the GIL: rare
    events only). ``message`` has one ``%s`` for the error's description when
    ``error`` is not 0, and none otherwise."""
    with gil:
        if error != 0:
            (<object>log.logger).warning(message.decode(), os.strerror(error))
        else:
            (<object>log.logger).warning(message.decode())
