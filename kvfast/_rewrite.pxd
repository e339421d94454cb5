# Compacting the append-only file in a forked child. See _rewrite.pyx.
from libc.stdint cimport int64_t

from kvfast._aof cimport AppendLog
from kvfast._store cimport Store


cdef bint aof_persist_batch(AppendLog *log, const Store *store, int64_t now_ms) noexcept nogil
cdef void aof_retry_failed(AppendLog *log, const Store *store, int64_t now_ms) noexcept nogil
cdef int aof_save_snapshot_now(AppendLog *log, const Store *store) noexcept nogil
cdef int aof_save_now(AppendLog *log, const Store *store) noexcept nogil
