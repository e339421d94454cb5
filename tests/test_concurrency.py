"""Many clients at once against one real server: one shared store, fair service."""
import asyncio

CLIENTS = 250
KEYS_PER_CLIENT = 20
TIMEOUT = 60


async def ask(reader, writer, line: bytes) -> bytes:
    writer.write(line + b"\n")
    return (await reader.readline()).rstrip(b"\n")


async def many_clients(host, port):
    """Every client writes its own keys, then (after all have written) reads and
    deletes its neighbour's keys, each request interleaved with all the others.
    One client says Bye half-way; the rest must be unaffected."""
    connections = [await asyncio.open_connection(host, port) for _ in range(CLIENTS)]
    all_written = asyncio.Barrier(CLIENTS)
    all_deleted = asyncio.Barrier(CLIENTS)

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
