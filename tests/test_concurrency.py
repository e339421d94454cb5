"""Many clients at once against one real server: one shared store, fair service."""
import asyncio
import fcntl
import os
import signal
import termios

from conftest import command, read_line
from helpers import wait_for

CLIENTS = 250
KEYS_PER_CLIENT = 20
TIMEOUT = 60


async def ask(reader, writer, line: bytes) -> bytes:
    writer.write(line + b"\n")
    return (await reader.readline()).rstrip(b"\n")


class OneShotBarrier:
    """asyncio.Barrier (Python 3.11+) for one use, so the test runs on 3.10 too:
    ``wait()`` returns once ``parties`` tasks are waiting."""

    def __init__(self, parties):
        self.parties, self.arrived, self.everyone = parties, 0, asyncio.Event()

    async def wait(self):
        self.arrived += 1
        if self.arrived == self.parties:
            self.everyone.set()
        await self.everyone.wait()


async def many_clients(host, port):
    """Every client writes its own keys, then (after all have written) reads and
    deletes its neighbour's keys, each request interleaved with all the others.
    One client says Bye half-way; the rest must be unaffected."""
    connections = [await asyncio.open_connection(host, port) for _ in range(CLIENTS)]
    all_written = OneShotBarrier(CLIENTS)
    all_deleted = OneShotBarrier(CLIENTS)

    async def client(index, reader, writer):
        mine = [index * 1000 + k for k in range(KEYS_PER_CLIENT)]
        neighbour = (index + 1) % CLIENTS
        theirs = [neighbour * 1000 + k for k in range(KEYS_PER_CLIENT)]
        for key in mine:
            assert await ask(reader, writer, b"put %d %d" % (key, -key)) == b"OK"
            await asyncio.sleep(0)
        await all_written.wait()
        for key in theirs:
            assert await ask(reader, writer, b"get %d" % key) == b"%d" % -key
            assert await ask(reader, writer, b"put %d 0" % key) == b"Key already exists"
        for key in theirs[: KEYS_PER_CLIENT // 2]:
            assert await ask(reader, writer, b"del %d" % key) == b"OK"
        await all_deleted.wait()
        for k, key in enumerate(mine):
            expected = b"Key not found" if k < KEYS_PER_CLIENT // 2 else b"%d" % -key
            assert await ask(reader, writer, b"get %d" % key) == expected
        if index == 0:
            assert await ask(reader, writer, b"bye") == b"Goodbye"
            assert await reader.read() == b""
        return index

    done = await asyncio.wait_for(
        asyncio.gather(*(client(i, r, w) for i, (r, w) in enumerate(connections))), TIMEOUT)
    assert sorted(done) == list(range(CLIENTS))

    # Client 0 has left; everyone else is still connected and served.
    for reader, writer in connections[1:]:
        assert await ask(reader, writer, b"get 1015") == b"-1015"
    for reader, writer in connections:
        writer.close()


def test_many_concurrent_clients_share_one_store(server):
    asyncio.run(many_clients(server.host, server.port))


def test_clients_that_vanish_do_not_disturb_others(server):
    async def scenario():
        survivors = [await asyncio.open_connection(server.host, server.port) for _ in range(20)]
        for round_ in range(10):
            quitters = [await asyncio.open_connection(server.host, server.port) for _ in range(30)]
            for index, (reader, writer) in enumerate(quitters):
                writer.write(b"put %d %d\nget %d\n" % (round_ * 100 + index, index, round_ * 100 + index))
                if index % 3 == 0:
                    writer.transport.abort()           # reset, possibly before any reply
                elif index % 3 == 1:
                    writer.write(b"get 1")             # vanish mid-request
                    writer.close()
                else:
                    assert await reader.readline() == b"OK\n"
                    writer.close()
            for reader, writer in survivors:
                assert await asyncio.wait_for(ask(reader, writer, b"get %d" % (round_ * 100 + 2)), 10) == b"2"
        for reader, writer in survivors:
            writer.close()

    asyncio.run(scenario())


BATCH_CLIENTS = 40


def server_has_read(server, clients):
    """True once everything ``clients`` sent has reached the server process: each
    client's send queue is empty (delivered and acknowledged), and each of the
    server's ends is an accepted socket (one of its descriptors) with an empty
    receive queue (read by the server). Read from /proc (IPv4 loopback)."""
    if any(fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0") != b"\0\0\0\0" for sock in clients):
        return False
    inodes = set()
    for fd in os.listdir(f"/proc/{server.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{server.proc.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    peers = {"%04X" % sock.getsockname()[1] for sock in clients}
    ends = {}
    with open(f"/proc/{server.proc.pid}/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local_port, remote_port = fields[1].split(":")[1], fields[2].split(":")[1]
            if int(local_port, 16) == server.port and remote_port in peers:
                ends[remote_port] = (fields[9], int(fields[4].split(":")[1], 16))      # inode, rx_queue
    return (len(ends) == len(clients)
            and all(inode in inodes and rx_queue == 0 for inode, rx_queue in ends.values()))


def test_clients_read_in_one_batch_each_get_their_own_replies(server):
    """The loop answers one client's read after issuing the next client's read,
    so two reads are in flight in the shared input buffer: many clients made
    ready in one batch (the server is stopped while they send) must each be
    answered from their own bytes, including a request completed from an
    earlier read and an incomplete tail kept for a later one."""
    clients = [server.connect() for _ in range(BATCH_CLIENTS)]
    key = [700_000 + index for index in range(BATCH_CLIENTS)]
    value = [-(10 ** 12) - index * 7 for index in range(BATCH_CLIENTS)]
    for index, sock in enumerate(clients):
        if index % 2:
            sock.sendall(b"put %d " % key[index])      # completed by the next send
    wait_for(lambda: server_has_read(server, clients), 10,
             message="the server to read and hold every client's bytes")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for index, sock in enumerate(clients):
            start = b"" if index % 2 else b"put %d " % key[index]
            sock.sendall(start + b"%d\nget %d\n" % (value[index], key[index])
                         + command("GET", str(key[index])) + b"get %d" % key[index])
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    for index, sock in enumerate(clients):
        assert read_line(sock) == b"OK", index
        assert read_line(sock) == b"%d" % value[index], index
        resp_value = b"%d" % value[index]
        # The RESP reply "$<n>\r\n<value>\r\n", read as its two lines.
        assert read_line(sock) == b"$%d\r" % len(resp_value), index
        assert read_line(sock) == resp_value + b"\r", index
    for index, sock in enumerate(clients):
        sock.sendall(b"\n")                                 # ends the kept "get K"
        assert read_line(sock) == b"%d" % value[index], index
        sock.close()
