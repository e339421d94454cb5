# The append-only log a server writes: what the loop, the protocols and the
# rewrite call without the GIL. See _aof.pyx (and _record.pyx for the format).
from libc.stdint cimport int64_t, uint32_t, uint64_t
from posix.types cimport pid_t

from kvfast._store cimport Store
from kvfast._system cimport pthread_t, pthread_mutex_t


cdef enum:
    RETRY_INTERVAL_MS = 100     # how often a failed log is tried again


cdef enum FsyncPolicy:
    FSYNC_NO = 0            # the kernel decides when the page cache reaches the disk
    FSYNC_EVERYSEC = 1      # a background thread fdatasyncs about once a second
    FSYNC_ALWAYS = 2        # every loop iteration's records are fdatasynced before its replies


cdef inline const char *fsync_policy_text(FsyncPolicy policy) noexcept nogil:
    """A policy's name, as --fsync, INFO and CONFIG spell it."""
    if policy == FSYNC_EVERYSEC:
        return b"everysec"
    return b"always" if policy == FSYNC_ALWAYS else b"no"


cdef struct RewriteShared:
    # A page shared with the rewrite child (MAP_SHARED): the parent publishes how
    # far the log is written, the child reports how far it has copied it.
    uint64_t log_size           # parent: bytes of the old log written so far
    uint64_t copied_to          # child: old-log offset its copy reached
    uint64_t temp_size          # child: bytes of the new log it wrote
    uint64_t error              # child: errno of its failure (0: none)
    uint64_t done               # child: 1 once the new log is complete and synced


cdef struct AppendLog:
    int fd                      # the log, open for writing (pwrite at ``size``)
    FsyncPolicy policy
    char *path                  # NUL-terminated copies (owned)
    char *directory             # ...of the log's folder, fsynced after a rename
    uint64_t size               # bytes of the file written and valid
    uint64_t base_size          # size at start-up or after the last rewrite
    char *pending               # records not written yet (one loop iteration's)
    size_t pending_len
    size_t pending_cap
    int failure                 # errno of the failure in force (0: healthy): writes are refused
    bint needs_rewrite          # a sync failed: only a rewrite from memory can be trusted again
    int64_t retry_at_ms         # when to try again to append
    bint failure_reported       # the loop logged it
    # everysec: the background sync thread
    bint thread_running
    pthread_t thread
    pthread_mutex_t lock        # guards fd, fd_generation, retired_fd and sync_failure against the thread
    uint64_t fd_generation      # +1 at each swap: a failure on a retired descriptor is not the log's
    int thread_stop_fd          # eventfd: wakes and stops the thread
    int retired_fd              # an old log's descriptor for the thread to close (-1: none)
    uint64_t sync_failure       # errno of the thread's last failed fdatasync (0: none)
    uint64_t appended           # bytes ever appended (only grows; the thread syncs when it changed)
    # compaction
    uint64_t rewrite_min_bytes  # no automatic rewrite of a log smaller than this
    bint rewrite_requested      # BGREWRITEAOF: persist() starts one after its flush
    bint rewrite_recovers       # the running child is the rewrite from memory that ends needs_rewrite
    bint rewrite_failure_reported   # the loop logged the current run of failed rewrites
    pid_t rewrite_child         # 0: none running
    int rewrite_pipe            # read end: hangs up when the child exits (-1: none)
    bint rewrite_exited         # the loop saw the hang-up: finish at the next flush
    uint64_t rewrite_started_at  # log size when the child was forked
    char *rewrite_path          # the child's temporary file
    RewriteShared *shared
    int64_t rewrite_not_before_ms   # after a failed rewrite, wait before the next one
    uint64_t rewrites           # completed
    uint64_t rewrite_failures
    bint last_rewrite_failed
    int64_t latest_fork_us      # how long the last fork() stopped the loop (page tables are copied)
    int64_t last_rewrite_pause_us   # the swap's duration in the loop (copy tail, sync, rename)
    int64_t max_rewrite_pause_us
    bint unit_open              # between aof_begin_transaction and aof_end_transaction
    int64_t last_rewrite_time   # Unix time the last rewrite (or SAVE) was swapped in; 0: none yet (LASTSAVE)
    void *logger                # borrowed: AppendOnlyFile.logger, for aof_warn and friends
    const Store *expires        # borrowed: the server's deadlines (ServerContext.expires), for the rewrite


cdef int aof_reserve(AppendLog *log, size_t records) noexcept nogil
cdef int aof_append_set(AppendLog *log, int64_t key, int64_t value) noexcept nogil
cdef int aof_append_delete(AppendLog *log, int64_t key) noexcept nogil
cdef int aof_append_set_expiring(AppendLog *log, int64_t key, int64_t value, int64_t deadline) noexcept nogil
cdef int aof_append_deadline(AppendLog *log, int64_t key, int64_t deadline) noexcept nogil
cdef int aof_append_persist(AppendLog *log, int64_t key) noexcept nogil
cdef int aof_append_clear(AppendLog *log) noexcept nogil
cdef size_t aof_begin_transaction(AppendLog *log) noexcept nogil
cdef void aof_end_transaction(AppendLog *log, size_t begin) noexcept nogil
cdef int aof_flush(AppendLog *log) noexcept nogil
cdef int aof_poll_sync_thread(AppendLog *log) noexcept nogil
cdef int aof_retry(AppendLog *log) noexcept nogil
cdef int fail(AppendLog *log, int error) noexcept nogil
cdef int fail_sync(AppendLog *log, int error) noexcept nogil
cdef int write_all(int fd, const char *data, size_t length, uint64_t offset) noexcept nogil
cdef void aof_warn(const AppendLog *log, const char *message, int error) noexcept nogil


cdef class AppendOnlyFile:
    cdef AppendLog log
    cdef object path_text
    cdef bint created               # the file did not exist: its folder is fsynced once it has a header
    cdef object logger
    cdef int replay_into(self, Store *store, Store *expires, object progress) except -1
    cdef void stop_sync_thread(self) noexcept nogil
    cdef void kill_rewrite(self) noexcept nogil
