# Reading an append-only file: checking and replaying records (start-up,
# kvfast-aof). See _replay.pyx.
from libc.stdint cimport uint8_t, uint64_t

from kvfast._store cimport Store


cdef enum ScanStatus:
    SCAN_END = 0                # every record is good, up to the end
    SCAN_PAUSED = 1             # max_records reached: call again
    SCAN_TORN = 2               # the last record is damaged: a crash mid-append
    SCAN_BAD_CHECKSUM = 3       # a damaged record with more after it
    SCAN_BAD_TYPE = 4
    SCAN_NO_MEMORY = 5
    SCAN_TORN_TRANSACTION = 6   # the file ends inside a transaction: a crash mid-append (all of it is cut)


cdef class MappedFile:
    cdef const uint8_t *data
    cdef size_t size


cdef bint all_zero(const uint8_t *data, size_t length) noexcept nogil
cdef int check_header(const uint8_t *data, size_t size, path) except -1
cdef ScanStatus scan_records(const uint8_t *data, size_t size, size_t *position, Store *store, Store *expires,
                             size_t max_records, uint64_t *records) noexcept nogil
