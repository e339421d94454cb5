# Compacting the append-only file in a forked child. See _rewrite.pyx.
from libc.stdint cimport int64_t

from kvfast._aof cimport AppendLog
from kvfast._store cimport Store


cdef bint aof_rewrite_due(const AppendLog *log, size_t live_keys, int64_t now_ms) noexcept nogil
cdef int aof_start_rewrite(AppendLog *log, const Store *store) noexcept nogil
cdef int aof_finish_rewrite(AppendLog *log) noexcept nogil
cdef int aof_rewrite_to_recover(AppendLog *log, const Store *store) noexcept nogil
cdef int aof_save_snapshot_now(AppendLog *log, const Store *store) noexcept nogil
