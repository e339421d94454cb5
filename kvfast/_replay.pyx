# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Reading an append-only file (format: _record.pyx): at start-up and in kvfast-aof.

``scan_records`` checks each record's checksum and, given a store, applies it
(without the GIL). A damaged record with no good record after it is a torn
tail (a crash mid-append): start-up truncates it with a warning; so is a
transaction (a ``B`` record and the records it counts) that the file ends
inside, cut at its ``B``, so none of it is applied. Damage with
good records after it is corruption: start-up refuses, naming the offset, and
``kvfast-aof repair`` truncates there. ``inspect`` and ``records`` are the
Python views kvfast-aof uses.
"""
import os

from libc.errno cimport EISDIR
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from posix.mman cimport mmap, munmap, PROT_READ, MAP_PRIVATE, MAP_FAILED
from posix.stat cimport struct_stat, fstat, S_ISDIR

from kvfast._record cimport (
    HEADER_BYTES, MAX_RECORD_BYTES, RECORD_SET, RECORD_DELETE, RECORD_CLEAR, RECORD_BEGIN, BEGIN_BYTES,
    RECORD_SET_EXPIRING, RECORD_DEADLINE, RECORD_PERSIST, FORMAT_VERSION, OLDEST_FORMAT_VERSION, crc32c_of,
    record_length, encode_header_version,
)
from kvfast._record import crc32c
from kvfast._store cimport Store, store_upsert, store_delete, store_clear, store_prefetch, store_lookup
from kvfast._system cimport madvise, MADV_SEQUENTIAL, raise_os_error


cdef enum:
    PREFETCH_AHEAD = 16         # records whose slots are prefetched ahead of the one applied
    TORN_TAIL_LIMIT = 1 << 20   # damage further than this from the end is never taken for a torn tail


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
    in part, blocks never written (zeros) or any mix; further from the end,
    only part of a record followed by nothing but zeros. Otherwise it is ``damage``:
    corruption with good records after it, which must not be cut off silently.
    (A random match of type byte and CRC32C has odds of about 1 in 10^9 per offset.)"""
    cdef size_t candidate, garbage
    if size - at > TORN_TAIL_LIMIT:
        # Beyond the limit only a record's worth of garbage, then zeros (a
        # write torn at a page boundary, the rest never written), is torn.
        garbage = MAX_RECORD_BYTES if size - at > MAX_RECORD_BYTES else size - at
        return SCAN_TORN if all_zero(data + at + garbage, size - at - garbage) else damage
    for candidate in range(at + 1, size):
        if is_good_record(data, size, candidate):
            return damage
    return SCAN_TORN


cdef ScanStatus check_record(const uint8_t *data, size_t size, size_t at, size_t *length) noexcept nogil:
    """Whether the record at ``at`` is whole with a matching checksum
    (SCAN_END, ``length`` set), cut short by the end of the file (SCAN_TORN),
    or damaged (SCAN_BAD_TYPE, SCAN_BAD_CHECKSUM: not yet classified)."""
    cdef uint32_t stored_crc
    length[0] = record_length(data[at])
    if length[0] == 0:
        return SCAN_BAD_TYPE
    if size - at < length[0]:
        return SCAN_TORN
    memcpy(&stored_crc, data + at + length[0] - 4, 4)
    return SCAN_END if crc32c_of(data + at, length[0] - 4) == stored_crc else SCAN_BAD_CHECKSUM


cdef ScanStatus check_transaction(const uint8_t *data, size_t size, size_t begin, size_t *end,
                                  size_t *damaged_at) noexcept nogil:
    """Check the records a good ``B`` record at ``begin`` counts, without
    applying them: SCAN_END with ``end`` after the last; SCAN_TORN_TRANSACTION
    when the file ends inside them (nothing good after the damage, see
    classify_damage); otherwise the corruption's status, at ``damaged_at``
    (a ``B`` inside a transaction is an unknown type there)."""
    cdef uint64_t count, _i
    cdef size_t at = begin + BEGIN_BYTES, length
    cdef ScanStatus status
    memcpy(&count, data + begin + 1, 8)
    for _i in range(count):
        if at == size:
            return SCAN_TORN_TRANSACTION
        status = check_record(data, size, at, &length)
        if status == SCAN_END and data[at] == RECORD_BEGIN:
            status = SCAN_BAD_TYPE
        if status != SCAN_END:
            if status != SCAN_TORN:
                status = classify_damage(data, size, at, status)
            if status == SCAN_TORN:
                return SCAN_TORN_TRANSACTION
            damaged_at[0] = at
            return status
        at += length
    end[0] = at
    return SCAN_END


cdef ScanStatus scan_records(const uint8_t *data, size_t size, size_t *position, Store *store, Store *expires,
                             size_t max_records, uint64_t *records) noexcept nogil:
    """Check (and, given a store, apply) up to ``max_records`` records starting
    at ``position[0]``, advancing it past each good one and counting them in
    ``records[0]``. On a damaged record, ``position[0]`` is where it starts and
    the status says whether it is a torn tail or corruption in the middle (see
    classify_damage). A transaction is checked whole before any of it is
    applied; when the file ends inside it, ``position[0]`` is its ``B`` and the
    status SCAN_TORN_TRANSACTION. SCAN_NO_MEMORY: the store could not grow.
    Deadlines go to ``expires`` (key -> Unix ms; given with ``store``) as
    recorded, expired or not: a later ``T`` may have moved a deadline that has
    passed by now, so the expired keys are dropped once the whole log is in
    (expire_after_load in _expire.pyx), not record by record."""
    cdef size_t at = position[0], length, done = 0, unit_end = 0, damaged_at = 0
    cdef size_t ahead = at, ahead_records = 0, ahead_length
    cdef uint8_t kind
    cdef int64_t key, value, deadline
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
                if data[ahead] != RECORD_BEGIN and data[ahead] != RECORD_CLEAR:
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
        damage = check_record(data, size, at, &length)    # SCAN_TORN: cut short, the crash came mid-append
        if damage != SCAN_END:
            position[0] = at
            return classify_damage(data, size, at, damage)
        if kind == RECORD_BEGIN:
            if at + length > unit_end:          # not checked yet (a transaction is checked once, whole)
                damage = check_transaction(data, size, at, &unit_end, &damaged_at)
                if damage != SCAN_END:
                    position[0] = at if damage == SCAN_TORN_TRANSACTION else damaged_at
                    return damage
        elif store != NULL:
            memcpy(&key, data + at + 1, 8)
            if kind == RECORD_SET or kind == RECORD_SET_EXPIRING:
                memcpy(&value, data + at + 9, 8)
                if store_upsert(store, key, value) < 0:
                    position[0] = at
                    return SCAN_NO_MEMORY
                if kind == RECORD_SET:
                    store_delete(expires, key)
                else:
                    memcpy(&deadline, data + at + 17, 8)
                    if store_upsert(expires, key, deadline) < 0:
                        position[0] = at
                        return SCAN_NO_MEMORY
            elif kind == RECORD_DEADLINE:
                memcpy(&deadline, data + at + 9, 8)
                if store_lookup(store, key) != NULL and store_upsert(expires, key, deadline) < 0:
                    position[0] = at
                    return SCAN_NO_MEMORY
            elif kind == RECORD_DELETE or kind == RECORD_PERSIST:
                if kind == RECORD_DELETE:
                    store_delete(store, key)
                store_delete(expires, key)
            else:
                store_clear(store)
                store_clear(expires)
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
    if status == SCAN_TORN_TRANSACTION:
        return f"torn last transaction at offset {offset} (the file ends inside it)"
    return f"unreadable at offset {offset}"


cdef class MappedFile:
    """A read-only mapping of a whole file (empty files map to nothing)."""

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
    """Raise LogError unless the file starts with a valid header of a version
    this build reads (OLDEST_FORMAT_VERSION to FORMAT_VERSION). Returns the version."""
    cdef uint8_t expected[HEADER_BYTES]
    cdef uint32_t version
    encode_header_version(expected, FORMAT_VERSION)
    if memcmp(data, expected, 8) != 0:
        raise LogError(path, "not a kvfast append-only file (bad header)", 0)
    for version in range(OLDEST_FORMAT_VERSION, FORMAT_VERSION + 1):
        encode_header_version(expected, version)
        if memcmp(data, expected, HEADER_BYTES) == 0:
            return version
    raise LogError(path, "unsupported version or damaged header", 0)


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
    if mapped.size < HEADER_BYTES or all_zero(mapped.data, mapped.size):     # (all zeros: never written)
        if mapped.size == 0 or all_zero(mapped.data, mapped.size) or \
                memcmp(mapped.data, <const char *>b"KVFASTAO", mapped.size if mapped.size < 8 else 8) == 0:
            return {"status": "empty" if mapped.size == 0 else "torn", "records": 0, "good_end": 0,
                    "size": mapped.size, "problem": None if mapped.size == 0 else "torn header at offset 0"}
        raise LogError(path, "not a kvfast append-only file (bad header)", 0)
    check_header(mapped.data, mapped.size, path)
    with nogil:
        status = scan_records(mapped.data, mapped.size, &position, NULL, NULL, <size_t>-1, &records)
    result = {"records": records, "good_end": position, "size": mapped.size, "problem": None}
    if status == SCAN_END:
        result["status"] = "ok"
    else:
        result["status"] = "torn" if status == SCAN_TORN or status == SCAN_TORN_TRANSACTION else "corrupt"
        result["problem"] = describe_damage(status, position)
    return result


def records(path):
    """Yield ``(offset, kind, key, value)`` for each good record ("set", "del",
    "flushall", "pexpireat" (value: the deadline, Unix ms), "persist"; key and
    value None where the record has none; the value of a set with a deadline
    is ``(value, deadline)``); raise LogError
    at the first damaged record. For ``kvfast-aof dump``. A transaction is
    ``(offset, "multi", count, None)`` before its records and ``(end, "exec",
    None, None)`` after them (``end``: where its last record ends; not a
    record); it is checked whole first, so a torn one yields nothing of it."""
    import struct
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < HEADER_BYTES:
        if len(data) == 0:
            return
        raise LogError(path, "torn header at offset 0", 0)
    check_header(data, len(data), path)
    offset = HEADER_BYTES
    unit_end = None
    while offset < len(data):
        if offset == unit_end:
            yield offset, "exec", None, None
            unit_end = None
        kind = data[offset]
        length = record_length(kind)
        end = offset + length
        if length == 0 or end > len(data) or \
                crc32c(data[offset:end - 4]) != int.from_bytes(data[end - 4:end], "little"):
            raise LogError(path, describe_damage(damage_at(data, offset), offset), offset)
        if kind == RECORD_BEGIN:
            status, unit_end, damaged_at = transaction_at(data, offset)
            if status != SCAN_END:
                where = offset if status == SCAN_TORN_TRANSACTION else damaged_at
                raise LogError(path, describe_damage(status, where), where)
            yield offset, "multi", struct.unpack_from("<Q", data, offset + 1)[0], None
        elif kind == RECORD_SET:
            key, value = struct.unpack_from("<qq", data, offset + 1)
            yield offset, "set", key, value
        elif kind == RECORD_SET_EXPIRING:
            key, value, deadline = struct.unpack_from("<qqq", data, offset + 1)
            yield offset, "set", key, (value, deadline)
        elif kind == RECORD_DEADLINE:
            key, deadline = struct.unpack_from("<qq", data, offset + 1)
            yield offset, "pexpireat", key, deadline
        elif kind == RECORD_PERSIST:
            yield offset, "persist", struct.unpack_from("<q", data, offset + 1)[0], None
        elif kind == RECORD_DELETE:
            yield offset, "del", struct.unpack_from("<q", data, offset + 1)[0], None
        else:
            yield offset, "flushall", None, None
        offset = end
    if offset == unit_end:
        yield offset, "exec", None, None


def transaction_at(const uint8_t[::1] data, size_t offset):
    """check_transaction for records(): ``(status, end, damaged_at)``."""
    cdef size_t end = 0, damaged_at = 0
    cdef ScanStatus status = check_transaction(&data[0], data.shape[0], offset, &end, &damaged_at)
    return status, end, damaged_at


def damage_at(const uint8_t[::1] data, size_t offset):
    """The ScanStatus of the damaged record at ``offset`` (for records())."""
    cdef size_t length = record_length(data[offset])
    cdef ScanStatus damage = SCAN_BAD_TYPE if length == 0 else SCAN_BAD_CHECKSUM
    return classify_damage(&data[0], data.shape[0], offset, damage)
