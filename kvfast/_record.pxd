# The append-only file's format, shared by the writer (_aof), the rewrite
# (_rewrite) and the reader (_replay): constants and inlined encoders here, the
# CRC32C in _record.pyx (where the format is described).
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy


cdef enum:
    HEADER_BYTES = 16
    FORMAT_VERSION = 2          # the version written; 1 (no deadline records) still loads
    OLDEST_FORMAT_VERSION = 1
    RECORD_SET = 0x53           # 'S'
    RECORD_DELETE = 0x44        # 'D'
    RECORD_CLEAR = 0x43         # 'C'
    RECORD_BEGIN = 0x42         # 'B': a transaction of the next ``count`` records (all or none)
    RECORD_SET_EXPIRING = 0x58  # 'X': key = value, with a deadline (Unix ms)
    RECORD_DEADLINE = 0x54      # 'T': an existing key's deadline (Unix ms) is now this
    RECORD_PERSIST = 0x50       # 'P': an existing key's deadline is removed
    SET_BYTES = 21
    DELETE_BYTES = 13
    CLEAR_BYTES = 5
    BEGIN_BYTES = 13
    SET_EXPIRING_BYTES = 29
    DEADLINE_BYTES = 21
    PERSIST_BYTES = 13
    MAX_RECORD_BYTES = 29       # the largest record (a set with a deadline)


cdef uint32_t crc32c_of(const uint8_t *data, size_t length) noexcept nogil


cdef inline size_t record_length(uint8_t kind) noexcept nogil:
    """Bytes of a record of this type, or 0 for an unknown type."""
    if kind == RECORD_SET:
        return SET_BYTES
    if kind == RECORD_DELETE:
        return DELETE_BYTES
    if kind == RECORD_CLEAR:
        return CLEAR_BYTES
    if kind == RECORD_BEGIN:
        return BEGIN_BYTES
    if kind == RECORD_SET_EXPIRING:
        return SET_EXPIRING_BYTES
    if kind == RECORD_DEADLINE:
        return DEADLINE_BYTES
    if kind == RECORD_PERSIST:
        return PERSIST_BYTES
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


cdef inline void encode_set_expiring(uint8_t *record, int64_t key, int64_t value, int64_t deadline) noexcept nogil:
    record[0] = RECORD_SET_EXPIRING
    memcpy(record + 1, &key, 8)
    memcpy(record + 9, &value, 8)
    memcpy(record + 17, &deadline, 8)
    seal(record, SET_EXPIRING_BYTES)


cdef inline void encode_header_version(uint8_t *header, uint32_t version) noexcept nogil:
    memcpy(header, <const char *>b"KVFASTAO", 8)
    memcpy(header + 8, &version, 4)
    seal(header, HEADER_BYTES)


cdef inline void encode_header(uint8_t *header) noexcept nogil:
    cdef uint32_t version = FORMAT_VERSION
    memcpy(header, <const char *>b"KVFASTAO", 8)
    memcpy(header + 8, &version, 4)
    seal(header, HEADER_BYTES)
