"""``kvfast-aof check|repair|dump`` on logs written by the server and on logs
crafted byte by byte (tests/aof_format.py: the format, with a pure-Python CRC32C)."""
import signal
import subprocess

import pytest

from aof_format import (HEADER_SIZE, crc32c, header, log_bytes, parse, rec_clear, rec_del,
                        rec_set, replay)
from conftest import command, exchange, request, script_path

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def aof_tool(*args, timeout=60):
    return subprocess.run([script_path("kvfast-aof"), *map(str, args)], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def output_lines(result):
    return (result.stdout + result.stderr).decode().splitlines()


SAMPLE = [rec_set(1, 10), rec_set(2, 20), rec_del(1), rec_clear(), rec_set(INT64_MIN, INT64_MAX),
          rec_set(-1, 0), rec_del(INT64_MAX), rec_set(7, -7)]
SAMPLE_DUMP = ["16 set 1 10", "37 set 2 20", "58 del 1", "71 flushall",
               f"76 set {INT64_MIN} {INT64_MAX}", "97 set -1 0", f"118 del {INT64_MAX}", "131 set 7 -7"]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.aof"
    path.write_bytes(log_bytes(*SAMPLE))
    return path


# ---- the test's own format helpers --------------------------------------------------------

def test_crc32c_helper():
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283                 # the standard check value
    assert crc32c(bytes(32)) == 0x8A9136AA                     # RFC 3720 B.4 vectors
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert len(header()) == HEADER_SIZE and header().startswith(b"KVFASTAO\x02\x00\x00\x00")
    assert [len(rec_set(1, 2)), len(rec_del(1)), len(rec_clear())] == [21, 13, 5]


# ---- what the server writes -----------------------------------------------------------------

def test_server_writes_exactly_the_documented_format(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_server("--appendonly", str(path), "--fsync", "always")
    with server.connect() as sock:
        for line, reply in [(b"put 1 10", b"OK"), (b"put 1 11", b"Key already exists"),
                            (b"del 5", b"Key not found"), (b"set 2 20", b"OK"), (b"incr 2", b"21"),
                            (b"del 1", b"OK")]:
            assert request(sock, line) == reply
        exchange(sock, command("FLUSHALL"), b"+OK\r\n")
        exchange(sock, command("SET", -1, INT64_MIN), b"+OK\r\n")
        exchange(sock, command("DECRBY", -1, -5), b":%d\r\n" % (INT64_MIN + 5))
        exchange(sock, command("SETNX", 3, 30), b":1\r\n")
        exchange(sock, command("DEL", 3, 4), b":1\r\n")
    assert server.stop(signal.SIGTERM) == 0
    expected = log_bytes(rec_set(1, 10), rec_set(2, 20), rec_set(2, 21), rec_del(1), rec_clear(),
                         rec_set(-1, INT64_MIN), rec_set(-1, INT64_MIN + 5), rec_set(3, 30), rec_del(3))
    assert path.read_bytes() == expected

    dump = aof_tool("dump", path)
    assert dump.returncode == 0 and dump.stderr == b""
    assert dump.stdout.decode().splitlines() == [
        "16 set 1 10", "37 set 2 20", "58 set 2 21", "79 del 1", "92 flushall",
        f"97 set -1 {INT64_MIN}", f"118 set -1 {INT64_MIN + 5}", "139 set 3 30", "160 del 3"]
    check = aof_tool("check", path)
    assert check.returncode == 0
    assert check.stdout.decode().splitlines() == [f"{path}: ok, 9 records, {len(expected)} bytes"]


def test_server_loads_a_hand_made_log(start_server, sample):
    server = start_server("--appendonly", str(sample))
    expected = replay(parse(sample.read_bytes()))
    assert expected == {INT64_MIN: INT64_MAX, -1: 0, 7: -7}      # flushall dropped 2
    with server.connect() as sock:
        for key in [1, 2, INT64_MIN, -1, INT64_MAX, 7]:
            reply = request(sock, b"get %d" % key)
            assert reply == (b"%d" % expected[key] if key in expected else b"Key not found")
        exchange(sock, command("DBSIZE"), b":3\r\n")


# ---- clean files ---------------------------------------------------------------------------

def test_check_and_dump_a_clean_file(sample):
    size = sample.stat().st_size
    check = aof_tool("check", sample)
    assert check.returncode == 0
    assert check.stdout.decode().splitlines() == [f"{sample}: ok, {len(SAMPLE)} records, {size} bytes"]
    dump = aof_tool("dump", sample)
    assert dump.returncode == 0
    assert dump.stdout.decode().splitlines() == SAMPLE_DUMP


def test_header_only_file(tmp_path):
    path = tmp_path / "empty.aof"
    path.write_bytes(header())
    check = aof_tool("check", path)
    assert check.returncode == 0
    assert check.stdout.decode().splitlines() == [f"{path}: ok, 0 records, 16 bytes"]
    dump = aof_tool("dump", path)
    assert dump.returncode == 0 and dump.stdout == b""


def test_repair_of_a_clean_file_changes_nothing(sample):
    before = sample.read_bytes()
    repair = aof_tool("repair", sample)
    assert repair.returncode == 0
    assert output_lines(repair) == [f"{sample}: ok, nothing to repair"]
    assert sample.read_bytes() == before
    assert sorted(p.name for p in sample.parent.iterdir()) == ["sample.aof"]      # no backup


# ---- torn last record -------------------------------------------------------------------------

@pytest.mark.parametrize("last", [rec_set(-3, 33), rec_del(5), rec_clear()], ids=["set", "del", "flushall"])
def test_check_names_a_torn_last_record_at_every_cut(tmp_path, last):
    good = log_bytes(*SAMPLE)
    data = good + last
    path = tmp_path / "torn.aof"
    for cut in range(len(good) + 1, len(data)):
        path.write_bytes(data[:cut])
        check = aof_tool("check", path)
        assert check.returncode == 1, cut
        lines = output_lines(check)
        assert len(lines) == 1 and f"torn last record at offset {len(good)}" in lines[0], (cut, lines)


def test_dump_stops_at_a_torn_record(tmp_path):
    good = log_bytes(*SAMPLE)
    path = tmp_path / "torn.aof"
    path.write_bytes(good + rec_set(9, 9)[:10])
    dump = aof_tool("dump", path)
    assert dump.returncode == 1
    assert dump.stdout.decode().splitlines() == SAMPLE_DUMP
    assert str(len(good)) in dump.stderr.decode() and dump.stderr.decode().strip()


def test_repair_truncates_a_torn_record_and_keeps_a_backup(start_server, tmp_path):
    good = log_bytes(*SAMPLE)
    damaged = good + rec_set(9, 9)[:10]
    path = tmp_path / "torn.aof"
    path.write_bytes(damaged)
    repair = aof_tool("repair", path)
    assert repair.returncode == 0
    backup = tmp_path / "torn.aof.bak"
    assert backup.read_bytes() == damaged
    assert path.read_bytes() == good
    said = "\n".join(output_lines(repair))
    assert str(backup) in said and str(len(good)) in said, said
    assert aof_tool("check", path).returncode == 0
    server = start_server("--appendonly", str(path))
    with server.connect() as sock:
        assert request(sock, b"get 7") == b"-7"
        assert request(sock, b"get 9") == b"Key not found"


@pytest.mark.parametrize("damage", ["bad-checksum-at-end", "zeros-1", "zeros-4096"])
def test_damaged_tail(tmp_path, damage):
    """A last record whose checksum fails and which ends at end-of-file, or zero
    bytes to end-of-file: a torn tail, cut at the end of the last good record."""
    good = log_bytes(*SAMPLE)
    if damage == "bad-checksum-at-end":
        last = bytearray(rec_set(9, 9))
        last[-1] ^= 0x01
        data, cut_at = good + bytes(last), len(good)
    else:
        data, cut_at = good + bytes(int(damage.split("-")[1])), len(good)
    path = tmp_path / "tail.aof"
    path.write_bytes(data)
    check = aof_tool("check", path)
    assert check.returncode == 1
    lines = output_lines(check)
    assert len(lines) == 1 and f"offset {cut_at}" in lines[0], lines
    repair = aof_tool("repair", path)
    assert repair.returncode == 0
    assert path.read_bytes() == good
    assert (tmp_path / "tail.aof.bak").read_bytes() == data


# ---- corruption before the tail -------------------------------------------------------------------

CORRUPTIONS = {     # name: (record index, byte within it, new byte or None = flip, reason)
    "payload": (4, 9, None, "bad checksum"),
    "checksum": (2, 12, None, "bad checksum"),
    "clear-record": (3, 0, ord("Z"), "unknown record type"),
    "unknown-type": (1, 0, 0x7F, "unknown record type"),
    "zero-type": (5, 0, 0x00, "unknown record type"),
    "set-read-as-del": (6, 0, ord("S"), "bad checksum"),
}


def corrupt(records, index, within, new_byte):
    data = bytearray(log_bytes(*records))
    offset = len(header()) + sum(len(record) for record in records[:index])
    position = offset + within
    data[position] = new_byte if new_byte is not None else data[position] ^ 0xFF
    return bytes(data), offset


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupt_record_before_the_tail(tmp_path, name):
    index, within, new_byte, reason = CORRUPTIONS[name]
    data, offset = corrupt(SAMPLE, index, within, new_byte)
    path = tmp_path / "bad.aof"
    path.write_bytes(data)

    check = aof_tool("check", path)
    assert check.returncode == 1
    lines = output_lines(check)
    assert len(lines) == 1 and f"corrupt record at offset {offset} ({reason})" in lines[0], lines

    dump = aof_tool("dump", path)
    assert dump.returncode == 1
    assert dump.stdout.decode().splitlines() == SAMPLE_DUMP[:index]
    assert str(offset) in dump.stderr.decode()

    repair = aof_tool("repair", path)
    assert repair.returncode == 0
    assert path.read_bytes() == data[:offset]
    assert (tmp_path / "bad.aof.bak").read_bytes() == data
    said = "\n".join(output_lines(repair))
    assert str(tmp_path / "bad.aof.bak") in said and str(offset) in said, said
    check = aof_tool("check", path)
    assert check.returncode == 0
    assert check.stdout.decode().splitlines() == [f"{path}: ok, {index} records, {offset} bytes"]


def test_corruption_in_a_server_written_log(start_server, tmp_path):
    path = tmp_path / "kvfast.aof"
    server = start_server("--appendonly", str(path), "--fsync", "always")
    with server.connect() as sock:
        for key in range(1, 21):
            assert request(sock, b"set %d %d" % (key, key)) == b"OK"
    assert server.stop() == 0
    data = bytearray(path.read_bytes())
    offsets = [int(line.split()[0]) for line in aof_tool("dump", path).stdout.decode().splitlines()]
    assert offsets == [HEADER_SIZE + 21 * i for i in range(20)]
    data[offsets[10] + 12] ^= 0x10
    path.write_bytes(bytes(data))
    check = aof_tool("check", path)
    assert check.returncode == 1
    assert f"corrupt record at offset {offsets[10]} (bad checksum)" in output_lines(check)[0]
    assert aof_tool("repair", path).returncode == 0
    assert path.stat().st_size == offsets[10]
    server = start_server("--appendonly", str(path))
    with server.connect() as sock:
        exchange(sock, command("DBSIZE"), b":10\r\n")


# ---- backups -------------------------------------------------------------------------------------

def test_backup_names_never_overwrite(tmp_path):
    path = tmp_path / "log.aof"
    existing = tmp_path / "log.aof.bak"
    existing.write_bytes(b"someone's earlier backup")
    good = log_bytes(*SAMPLE[:3])
    for round_, expected_backup in enumerate(["log.aof.bak.1", "log.aof.bak.2", "log.aof.bak.3"]):
        damaged = good + rec_set(round_, round_)[:7]
        path.write_bytes(damaged)
        repair = aof_tool("repair", path)
        assert repair.returncode == 0
        assert (tmp_path / expected_backup).read_bytes() == damaged
        assert str(tmp_path / expected_backup) in "\n".join(output_lines(repair))
        assert path.read_bytes() == good
    assert existing.read_bytes() == b"someone's earlier backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "log.aof", "log.aof.bak", "log.aof.bak.1", "log.aof.bak.2", "log.aof.bak.3"]


def test_first_backup_is_dot_bak(tmp_path):
    path = tmp_path / "log.aof"
    damaged = log_bytes(*SAMPLE) + b"S"
    path.write_bytes(damaged)
    assert aof_tool("repair", path).returncode == 0
    assert (tmp_path / "log.aof.bak").read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.aof", "log.aof.bak"]


# ---- not a log, usage errors ------------------------------------------------------------------------

def test_a_file_with_a_bad_header(tmp_path):
    path = tmp_path / "notes.txt"
    text = b"not a kvfast log at all\n" * 4
    path.write_bytes(text)
    check = aof_tool("check", path)
    assert check.returncode in (1, 2)
    assert "header" in "\n".join(output_lines(check))
    assert aof_tool("dump", path).returncode in (1, 2)
    aof_tool("repair", path)
    backups = [p for p in tmp_path.iterdir() if p.name != "notes.txt"]
    assert path.read_bytes() == text or any(p.read_bytes() == text for p in backups), \
        "repair destroyed a file that is not a log without keeping it"


def test_version_or_header_checksum_mismatch_is_not_ok(tmp_path):
    path = tmp_path / "v3.aof"
    bad_crc = bytearray(header())
    bad_crc[-1] ^= 1
    for data in [bytes(bad_crc) + rec_set(1, 1), header(version=3) + rec_set(1, 1), header()[:10]]:
        path.write_bytes(data)
        assert aof_tool("check", path).returncode != 0, data


@pytest.mark.parametrize("args", [[], ["check"], ["frobnicate", "x.aof"], ["check", "a", "b"], ["dump"]])
def test_usage_errors_exit_2(tmp_path, args):
    result = subprocess.run([script_path("kvfast-aof"), *args], capture_output=True, timeout=30,
                            cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result
    assert result.stderr.strip()
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("command_name", ["check", "repair", "dump"])
def test_unreadable_file_exits_2(tmp_path, command_name):
    missing = aof_tool(command_name, tmp_path / "missing.aof")
    assert missing.returncode == 2 and b"missing.aof" in missing.stderr and b"Traceback" not in missing.stderr
    directory = aof_tool(command_name, tmp_path)
    assert directory.returncode == 2 and b"Traceback" not in directory.stderr
    assert not (tmp_path / "missing.aof").exists()
