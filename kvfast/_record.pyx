# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The append-only file's format, and its checksum.

Little-endian, as the hosts kvfast runs on (x86-64, arm64):
    Header, 16 bytes: the magic ``KVFASTAO``, the version (uint32, 2; files
    of version 1 load too) and the CRC32C of those 12 bytes (uint32).
    Then records, each a type byte, its payload and the CRC32C (uint32) of type
    and payload:
        ``S`` set     key int64, value int64     21 bytes
        ``D`` delete  key int64                  13 bytes
        ``C`` clear   (flushall)                  5 bytes
        ``B`` begin   count uint64               13 bytes
        ``X`` set with a deadline                29 bytes
                      key int64, value int64, deadline int64 (Unix ms)
        ``T`` deadline  key int64, deadline int64  21 bytes
        ``P`` persist   key int64                  13 bytes
    Deadlines are absolute (Unix milliseconds, Redis's PEXPIREAT), so a replay
    at any later time knows which keys have expired meanwhile: they are not
    loaded. ``S`` leaves its key without a deadline (SET clears a TTL); ``X``
    sets value and deadline in one record (SET EX, and any change of a key that
    keeps its TTL: INCR, APPEND, RENAME, COPY); ``T`` and ``P`` change only the
    deadline of a present key (EXPIRE, PERSIST); a key's expiry is logged as a
    ``D`` (as Redis propagates a DEL), though a replay would drop the key by
    its deadline anyway. Version 2 adds ``X``, ``T`` and ``P``; a version-1
    file holds none of them and loads as before. A server appending to a
    version-1 file leaves its header (the next rewrite writes version 2); a
    server older than version 2 refuses a file that has the new records
    (unknown record type), never misreads it.
    ``B`` opens a transaction (MULTI/EXEC): the ``count`` records after it
    (sets, deletes and clears; never another ``B``) are one unit. Replay
    applies all of them or, when the file ends inside them (a crash
    mid-append), none: the torn tail is cut at the ``B``. A transaction whose
    effects are one record or none is logged without a ``B`` (one record is
    already atomic). Logs written before transactions existed have no ``B``
    and read as before (the version stays 1); a server older than ``B``
    refuses a log that has one (unknown record type), never misreads it.
    The log holds effects, not commands: an INCR is logged as the ``S`` of its
    result, a put of an existing key as nothing. Replaying any suffix of the
    history onto a state that already includes it therefore changes nothing,
    which the rewrite relies on (see _rewrite.pyx).

The constants and the encoders are inlined from _record.pxd.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


# ---- CRC32C (Castagnoli), slicing by 8 ------------------------------------------------

cdef uint32_t CRC_TABLES[8][256]


cdef void build_crc_tables() noexcept:
    cdef uint32_t crc
    cdef int i, j, _bit
    for i in range(256):
        crc = i
        for _bit in range(8):
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
