"""Transactions and the append-only file: a transaction's records are one unit on disk (a ``B``
record counting them). kill -9 in a stream of transactions under ``--fsync always`` leaves each
of them all or nothing; a file cut inside one drops all of it at start-up; ``kvfast-aof dump``
shows the boundaries and ``check`` understands them."""
import threading

import aof_format
from conftest import command
from differential import RawClient
from helpers import wait_for
from test_durability import aof_tool, crash, start_aof, stop_clean

GROUP_KEYS = 5


class TransactionWriter(threading.Thread):
    """Sets its group's GROUP_KEYS keys to one new value per transaction (MULTI, the SETs, EXEC,
    pipelined), counting the EXECs acknowledged."""

    def __init__(self, address, group):
        super().__init__(daemon=True)
        self.address, self.group = address, group
        self.keys = [group * 100 + i for i in range(GROUP_KEYS)]
        self.acked = 0
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        try:
            client = RawClient(self.address)
        except OSError as error:
            self.error = repr(error)
            return
        value = 0
        try:
            while not self.stopping.is_set():
                value += 1
                client.send_raw(command("MULTI") + b"".join(command("SET", key, value) for key in self.keys)
                                + command("EXEC"))
                replies = [client.read_reply() for _ in range(GROUP_KEYS + 2)]
                expected = [b"+OK\r\n"] + [b"+QUEUED\r\n"] * GROUP_KEYS + [b"*%d\r\n" % GROUP_KEYS
                                                                           + b"+OK\r\n" * GROUP_KEYS]
                if replies != expected:
                    self.error = f"{replies!r}"
                    return
                self.acked = value
        except (OSError, ConnectionError):      # the kill -9
            pass
        finally:
            client.close()


def test_kill_during_transactions_leaves_each_whole(start_server, tmp_path):
    path = tmp_path / "log.aof"
    server = start_aof(start_server, path, "always")
    writers = [TransactionWriter(server.address, group) for group in range(1, 5)]
    for writer in writers:
        writer.start()
    wait_for(lambda: all(writer.acked >= 200 for writer in writers) or any(w.error for w in writers),
             timeout=60, message="every writer to have 200 transactions acknowledged")
    crash(server)
    for writer in writers:
        writer.join(10)
        assert writer.error is None, writer.error
    records = aof_format.parse(path.read_bytes()[:aof_format_good_end(path)])
    assert any(kind == "multi" for _, _, kind, _ in records)
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        for writer in writers:
            values = [client.call("GET", key) for key in writer.keys]
            assert len(set(values)) == 1, f"group {writer.group} was applied in part: {values}"
            assert int(values[0][values[0].index(b"\n") + 1:-2]) >= writer.acked      # nothing acknowledged lost
    stop_clean(server)


def aof_format_good_end(path):
    """Where the file's whole transactions end (a kill may tear the last one)."""
    report = aof_tool("check", path)
    if report.returncode == 0:
        return path.stat().st_size
    text = report.stderr.decode()
    return int(text.split("end at offset ")[1].split()[0])


def write_log(start_server, path, *requests):
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        replies = [client.call(*words) for words in requests]
    stop_clean(server)
    return replies


def test_dump_shows_transaction_boundaries(start_server, tmp_path):
    path = tmp_path / "log.aof"
    replies = write_log(start_server, path, ("SET", 1, 1), ("MULTI",), ("SET", 2, 2), ("INCR", 1), ("DEL", 9),
                        ("DEL", 2), ("EXEC",), ("MULTI",), ("SET", 3, 3), ("GET", 3), ("EXEC",),
                        ("MULTI",), ("GET", 1), ("EXEC",))
    assert replies[6] == b"*4\r\n+OK\r\n:2\r\n:0\r\n:1\r\n"
    dump = aof_tool("dump", path)
    assert dump.returncode == 0, dump
    assert dump.stdout.decode().splitlines() == [
        "16 set 1 1",
        "37 multi 3", "50 set 2 2", "71 set 1 2", "92 del 2", "105 exec",
        "105 set 3 3",              # a transaction of one record needs no unit
    ]
    data = path.read_bytes()
    assert data == aof_format.log_bytes(aof_format.rec_set(1, 1), aof_format.rec_begin(3), aof_format.rec_set(2, 2),
                                        aof_format.rec_set(1, 2), aof_format.rec_del(2), aof_format.rec_set(3, 3))
    check = aof_tool("check", path)
    assert check.returncode == 0 and b"ok, 6 records" in check.stdout, check


def test_a_file_cut_inside_a_transaction_drops_all_of_it(start_server, tmp_path):
    whole = aof_format.log_bytes(aof_format.rec_set(1, 1), aof_format.rec_begin(3), aof_format.rec_set(2, 2),
                                 aof_format.rec_set(3, 3), aof_format.rec_set(4, 4))
    begin = 16 + 21
    for cut in (begin + 5, begin + 13, begin + 13 + 21, begin + 13 + 30, len(whole) - 1):
        path = tmp_path / f"cut-{cut}.aof"
        path.write_bytes(whole[:cut])
        check = aof_tool("check", path)
        assert check.returncode == 1, check
        assert f"good records end at offset {begin}".encode() in check.stderr, check.stderr
        if cut >= begin + 13:
            assert b"torn last transaction" in check.stderr, check.stderr
        dump = aof_tool("dump", path)
        assert dump.returncode == 1 and dump.stdout.decode().splitlines() == ["16 set 1 1"], dump
        server = start_aof(start_server, path, "always")
        with RawClient(server.address) as client:
            assert [client.call("GET", key) for key in (1, 2, 3, 4)] == [b"$1\r\n1\r\n"] + [b"$-1\r\n"] * 3
        errors = stop_clean(server)
        assert "torn last" in errors
        assert path.read_bytes() == whole[:begin]
    path = tmp_path / "whole.aof"
    path.write_bytes(whole)
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        assert client.call("MGET", 1, 2, 3, 4) == b"*4\r\n" + b"".join(b"$1\r\n%d\r\n" % k for k in (1, 2, 3, 4))
    stop_clean(server)


def test_damage_inside_a_transaction_with_records_after_is_corruption(tmp_path):
    records = [aof_format.rec_begin(2), aof_format.rec_set(2, 2), aof_format.rec_set(3, 3),
               aof_format.rec_set(4, 4)]
    damaged = bytearray(aof_format.log_bytes(*records))
    damaged[16 + 13 + 3] ^= 0xFF                     # inside the first set of the transaction
    path = tmp_path / "damaged.aof"
    path.write_bytes(bytes(damaged))
    check = aof_tool("check", path)
    assert check.returncode == 1 and b"corrupt record at offset 29" in check.stderr, check
    nested = aof_format.log_bytes(aof_format.rec_begin(2), aof_format.rec_begin(1), aof_format.rec_set(2, 2),
                                  aof_format.rec_set(3, 3))
    path.write_bytes(nested)
    check = aof_tool("check", path)
    assert check.returncode == 1 and b"unknown record type" in check.stderr, check


def test_a_large_transaction_is_one_unit(start_server, tmp_path):
    """A transaction of many writes (its room reserved at EXEC) logs as one unit, replayed whole."""
    path = tmp_path / "log.aof"
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        client.send_raw(command("MULTI") + b"".join(command("SET", k, k) for k in range(500))
                        + command("DEL", *range(0, 500, 2)) + command("FLUSHALL") + command("SET", 7, 7)
                        + command("EXEC"))
        replies = [client.read_reply() for _ in range(505)]
        assert replies[-1].startswith(b"*503\r\n")
    stop_clean(server)
    parsed = aof_format.parse(path.read_bytes())
    assert parsed[0][2:] == ("multi", (500 + 250 + 1 + 1,))
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        assert client.call("DBSIZE") == b":1\r\n"
        assert client.call("GET", 7) == b"$1\r\n7\r\n"
    stop_clean(server)


def test_multi_record_commands_are_one_unit_each(start_server, tmp_path):
    """MSET, DEL of several keys and RENAME log several records: each command's
    records are framed as one unit (a crash cannot keep half an MSET, or a
    RENAME's new key beside the old one); inside EXEC the transaction frames them."""
    path = tmp_path / "log.aof"
    replies = write_log(start_server, path, ("MSET", 1, 10, 2, 20, 3, 30), ("RENAME", 3, 4), ("DEL", 1, 2, 9),
                        ("DEL", 4, 9), ("MULTI",), ("MSET", 5, 50, 6, 60), ("EXEC",))
    assert replies == [b"+OK\r\n", b"+OK\r\n", b":2\r\n", b":1\r\n", b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n+OK\r\n"]
    assert path.read_bytes() == aof_format.log_bytes(
        aof_format.rec_begin(3), aof_format.rec_set(1, 10), aof_format.rec_set(2, 20), aof_format.rec_set(3, 30),
        aof_format.rec_begin(2), aof_format.rec_set(4, 30), aof_format.rec_del(3),
        aof_format.rec_begin(2), aof_format.rec_del(1), aof_format.rec_del(2),
        aof_format.rec_del(4),                          # one record: no unit
        aof_format.rec_begin(2), aof_format.rec_set(5, 50), aof_format.rec_set(6, 60))
    # Cut inside the RENAME's unit: replay keeps the MSET whole and drops the RENAME whole.
    whole = path.read_bytes()
    rename_at = 16 + 13 + 3 * 21
    path.write_bytes(whole[:rename_at + 13 + 21])       # the new key's record is in, the delete is not
    server = start_aof(start_server, path, "always")
    with RawClient(server.address) as client:
        assert client.call("MGET", 1, 2, 3, 4) == b"*4\r\n$2\r\n10\r\n$2\r\n20\r\n$2\r\n30\r\n$-1\r\n"
    assert "torn last" in stop_clean(server)
