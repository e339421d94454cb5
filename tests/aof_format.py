"""The append-only log's file format in plain Python, for tests: CRC32C, record
encoding and a strict parser (the test's own reading of the format, independent
of ``kvfast-aof``).

Format (little-endian): a 16-byte header (magic ``KVFASTAO``, version uint32 = 2
(1 still loads), CRC32C of those 12 bytes), then records: one type byte, the payload, and the
CRC32C of type + payload. ``S`` set: key int64, value int64 (21 bytes); ``D``
delete: key int64 (13 bytes); ``C`` clear: no payload (5 bytes); ``B`` begin: count uint64
(13 bytes), a transaction of the ``count`` records after it (all or none on replay);
``X`` set with a deadline: key, value, deadline (Unix ms) int64 (29 bytes); ``T``
deadline: key, deadline int64 (21 bytes); ``P`` persist: key int64 (13 bytes).
"""
import struct

MAGIC = b"KVFASTAO"
VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_SIZE = 16
RECORD_SIZES = {b"S"[0]: 21, b"D"[0]: 13, b"C"[0]: 5, b"B"[0]: 13, b"X"[0]: 29, b"T"[0]: 21, b"P"[0]: 13}


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli; reflected polynomial 0x82F63B78), as in iSCSI and ext4."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def header(version: int = VERSION) -> bytes:
    start = MAGIC + struct.pack("<I", version)
    return start + struct.pack("<I", crc32c(start))


def _record(body: bytes) -> bytes:
    return body + struct.pack("<I", crc32c(body))


def rec_set(key: int, value: int) -> bytes:
    return _record(b"S" + struct.pack("<qq", key, value))


def rec_del(key: int) -> bytes:
    return _record(b"D" + struct.pack("<q", key))


def rec_clear() -> bytes:
    return _record(b"C")


def rec_begin(count: int) -> bytes:
    return _record(b"B" + struct.pack("<Q", count))


def rec_set_expiring(key: int, value: int, deadline: int) -> bytes:
    return _record(b"X" + struct.pack("<qqq", key, value, deadline))


def rec_deadline(key: int, deadline: int) -> bytes:
    return _record(b"T" + struct.pack("<qq", key, deadline))


def rec_persist(key: int) -> bytes:
    return _record(b"P" + struct.pack("<q", key))


def log_bytes(*records: bytes) -> bytes:
    return header() + b"".join(records)


def parse(data: bytes):
    """Records of a clean log as ``(offset, end, kind, args)``; kind is ``set``,
    ``del``, ``flushall``, ``multi`` (args: the count), ``setx`` (key, value,
    deadline), ``pexpireat`` (key, deadline) or ``persist`` (key). Raises
    ValueError at the first problem."""
    if len(data) < HEADER_SIZE or data[:HEADER_SIZE] not in [header(version) for version in READABLE_VERSIONS]:
        raise ValueError("bad header")
    records = []
    offset = HEADER_SIZE
    while offset < len(data):
        size = RECORD_SIZES.get(data[offset])
        if size is None:
            raise ValueError(f"unknown record type at offset {offset}")
        end = offset + size
        if end > len(data):
            raise ValueError(f"torn last record at offset {offset}")
        body = data[offset:end - 4]
        if struct.unpack("<I", data[end - 4:end])[0] != crc32c(body):
            raise ValueError(f"bad checksum at offset {offset}")
        if body[:1] == b"S":
            records.append((offset, end, "set", struct.unpack("<qq", body[1:])))
        elif body[:1] == b"D":
            records.append((offset, end, "del", struct.unpack("<q", body[1:])))
        elif body[:1] == b"X":
            records.append((offset, end, "setx", struct.unpack("<qqq", body[1:])))
        elif body[:1] == b"T":
            records.append((offset, end, "pexpireat", struct.unpack("<qq", body[1:])))
        elif body[:1] == b"P":
            records.append((offset, end, "persist", struct.unpack("<q", body[1:])))
        elif body[:1] == b"B":
            records.append((offset, end, "multi", struct.unpack("<Q", body[1:])))
        else:
            records.append((offset, end, "flushall", ()))
        offset = end
    return records


def replay(records, deadlines=None) -> dict:
    """The store a list of parsed records leaves (keys with a deadline included,
    expired or not; ``deadlines``, a dict, receives key -> deadline)."""
    store = {}
    deadlines = {} if deadlines is None else deadlines
    for _, _, kind, args in records:
        if kind == "set":
            store[args[0]] = args[1]
            deadlines.pop(args[0], None)
        elif kind == "setx":
            store[args[0]] = args[1]
            deadlines[args[0]] = args[2]
        elif kind == "pexpireat":
            if args[0] in store:
                deadlines[args[0]] = args[1]
        elif kind == "persist":
            deadlines.pop(args[0], None)
        elif kind == "del":
            store.pop(args[0], None)
            deadlines.pop(args[0], None)
        elif kind == "flushall":
            store.clear()
            deadlines.clear()
    return store
