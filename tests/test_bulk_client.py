"""kvfast.Client and kvfast.AsyncClient against a real server, over TCP and the
unix socket: single and bulk methods, every input kind, wrong inputs refused
before anything is sent, a server that goes away mid-batch, passwords,
reconnecting, one client per thread."""
import array
import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading

import pytest

import kvfast
from kvfast import AsyncClient, Client, ConnectionLostError, InvalidRequestError, KeyNotFoundError, OutOfRangeError
from helpers import wait_for

try:
    import numpy
except ImportError:         # NumPy is optional: its cases are skipped without it
    numpy = None

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
PASSWORD = "bulk-s3cret"
WAIT_SECONDS = 10.0


@pytest.fixture
def socket_path():
    """A unix socket path short enough for sun_path (pytest's tmp_path may not be)."""
    folder = tempfile.mkdtemp(prefix="kvfast-")
    yield os.path.join(folder, "kvfast.sock")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["tcp", "unix"])
def connect(request, start_server, socket_path):
    """Factory: ``connect(cls=Client, **kwargs)`` -> a client of a fresh server over
    the transport of the parameter (the server listens on both)."""
    server = start_server("--unixsocket", socket_path)

    def make(cls=Client, **kwargs):
        if request.param == "unix":
            return cls(unix_socket_path=server.unix_socket_path, **kwargs)
        return cls(*server.address, **kwargs)

    make.server = server
    return make


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


class Sync:
    """The sync client wrapped as the async one's shape, so one test body drives both."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        method = getattr(self.client, name)

        async def call(*args, **kwargs):
            return method(*args, **kwargs)
        return call


@pytest.fixture(params=["sync", "asyncio"])
def flavour(request):
    return request.param


def both(connect, flavour, body, **kwargs):
    """Run ``async body(client)`` with a sync Client (wrapped) or an AsyncClient."""
    async def main():
        if flavour == "sync":
            with connect(**kwargs) as client:
                return await body(Sync(client))
        async with connect(AsyncClient, **kwargs) as client:
            return await body(client)
    return run(main())


# ---- every method ----------------------------------------------------------------------------

def test_every_method(connect, flavour):
    async def body(c):
        assert await c.set(1, 10) is None
        assert await c.get(1) == 10
        assert await c.incr(1) == 11 and await c.incr(1, -20) == -9
        with pytest.raises(kvfast.KeyExistsError):
            await c.put(1, 5)
        await c.put(2, INT64_MIN)
        assert await c.get(2) == INT64_MIN
        await c.delete(2)
        with pytest.raises(KeyNotFoundError):
            await c.get(2)
        with pytest.raises(KeyNotFoundError):
            await c.delete(2)
        assert await c.request("get 1") == "-9"

        assert await c.set_many([3, 4, 5], [30, 40, INT64_MAX]) is None
        assert await c.get_many([3, 4, 99, 5]) == (array.array("q", [30, 40, 0, INT64_MAX]),
                                                  bytearray(b"\x01\x01\x00\x01"))
        assert await c.get_many([3, 99], default=-1) == array.array("q", [30, -1])
        assert await c.put_many([3, 6], [0, 60]) == bytearray(b"\x00\x01")
        assert await c.get(3) == 30 and await c.get(6) == 60      # put never overwrites
        assert await c.incr_many([3, 7, 3]) == array.array("q", [31, 1, 32])
        assert await c.incr_many([3, 7], [-32, 10]) == array.array("q", [0, 11])
        assert await c.delete_many([3, 3, 7]) == bytearray(b"\x01\x00\x01")
        assert await c.get_many([3, 7], default=5) == array.array("q", [5, 5])
    both(connect, flavour, body)


def test_incr_overflow_is_raised_after_the_batch(connect, flavour):
    async def body(c):
        await c.set_many([1, 2], [INT64_MAX, 5])
        with pytest.raises(InvalidRequestError) as raised:
            await c.incr_many([2, 1, 2], 1)
        assert raised.value.index == 1 and "overflow" in raised.value.reason
        assert await c.get_many([1, 2]) == (array.array("q", [INT64_MAX, 7]), bytearray(b"\x01\x01"))
    both(connect, flavour, body)


# ---- input kinds ------------------------------------------------------------------------------

def generator(items):
    yield from items


INPUT_KINDS = {
    "list": list,
    "tuple": tuple,
    "generator": generator,
    "array": lambda items: array.array("q", items),
    "memoryview": lambda items: memoryview(array.array("q", items)),
    "strided": lambda items: memoryview(array.array("q", [x for item in items for x in (item, -1)]))[::2],
    "numpy": lambda items: numpy.array(items, dtype=numpy.int64),
    "numpy-strided": lambda items: numpy.array([x for i in items for x in (i, -1)], dtype=numpy.int64)[::2],
}


def test_input_kinds(connect, flavour):
    """Each kind of input, for keys and values, empty, one element and more."""
    kinds = [kind for kind in sorted(INPUT_KINDS) if numpy is not None or not kind.startswith("numpy")]

    async def body(c):
        for kind in kinds:
            for size in (0, 1, 7, 5000):
                make = INPUT_KINDS[kind]
                keys = [i - size // 2 for i in range(size)]
                values = [key * 3 - 1 for key in keys]
                assert await c.set_many(make(keys), make(values)) is None
                got, found = await c.get_many(make(keys))
                with_default = await c.get_many(make(keys), default=0)
                stored = await c.put_many(make(keys), make(values))
                new = await c.incr_many(make(keys), make([1] * size))
                deleted = await c.delete_many(make(keys))
                numpy_out = kind.startswith("numpy")
                for result, item in ((got, "q"), (with_default, "q"), (new, "q"), (found, "?"), (stored, "?"),
                                     (deleted, "?")):
                    if numpy_out:
                        assert isinstance(result, numpy.ndarray), kind
                        assert result.dtype == (numpy.int64 if item == "q" else numpy.bool_), kind
                    else:
                        assert isinstance(result, array.array if item == "q" else bytearray), kind
                    assert len(result) == size, kind
                assert list(got) == list(with_default) == values, kind
                assert list(new) == [value + 1 for value in values], kind
                assert all(found) and all(deleted) and not any(stored), kind
    both(connect, flavour, body)


def test_a_million_keys(connect):
    size = 1_000_000
    keys = array.array("q", range(size))
    with connect() as client:
        client.set_many(keys, keys)
        values, found = client.get_many(keys)
        assert values == keys and found == bytearray(b"\x01") * size
        assert client.get(size - 1) == size - 1


def test_a_million_keys_asyncio(connect):
    size = 1_000_000
    keys = array.array("q", range(size))

    async def main():
        async with connect(AsyncClient) as client:
            await client.set_many(keys, keys)
            values = await client.get_many(keys, default=-1)
            assert values == keys

    run(main())


@pytest.mark.skipif(numpy is None, reason="NumPy not installed")
def test_numpy_results_are_writable_arrays(connect):
    with connect() as client:
        keys = numpy.arange(10, dtype=numpy.int64)
        client.set_many(keys, keys * 2)
        values, found = client.get_many(keys)
        values += 1                                  # the result is the caller's to change
        assert values.tolist() == list(range(1, 20, 2)) and found.all()


# ---- refused before anything is sent ----------------------------------------------------------

BAD_KEYS = [
    ([1, 2.0], TypeError), ([1, "2"], TypeError), ([True], TypeError), ([None], TypeError),
    ([1, INT64_MAX + 1], OverflowError), ([INT64_MIN - 1], OverflowError),
    (array.array("i", [1, 2]), TypeError), (array.array("d", [1.0]), TypeError), (array.array("Q", [1]), TypeError),
    (b"\x01\x02", TypeError), ("12", TypeError), (5, TypeError), (None, TypeError), (1.5, TypeError),
]


@pytest.mark.parametrize("bad, error", BAD_KEYS)
def test_wrong_keys_are_refused_before_sending(connect, flavour, bad, error):
    async def body(c):
        for call in (lambda: c.get_many(bad), lambda: c.delete_many(bad), lambda: c.incr_many(bad),
                     lambda: c.set_many(bad, [1] * 2), lambda: c.put_many(bad, [1] * 2)):
            with pytest.raises(error):
                await call()
        assert await c.get_many([1, 2], default=-1) == array.array("q", [-1, -1])    # nothing was stored
    both(connect, flavour, body)


def test_wrong_values_are_refused_before_sending(connect, flavour):
    async def body(c):
        with pytest.raises(OverflowError):
            await c.set_many([1, 2], [5, INT64_MAX + 1])
        with pytest.raises(OverflowError) as raised:
            await c.put_many([1, 2], generator([5, INT64_MIN - 1]))
        assert isinstance(raised.value, ValueError) and isinstance(raised.value, OutOfRangeError)
        with pytest.raises(TypeError):
            await c.incr_many([1, 2], [1, 1.5])
        with pytest.raises(TypeError):
            await c.incr_many([1, 2], 1.5)
        with pytest.raises(OverflowError):
            await c.incr_many([1], INT64_MAX + 1)
        with pytest.raises(TypeError):
            await c.get_many([1], default=1.5)
        with pytest.raises(ValueError):
            await c.set_many([1, 2], [1])                 # lengths differ
        if numpy is not None:
            with pytest.raises(TypeError):
                await c.get_many(numpy.arange(4, dtype=numpy.int32))
            with pytest.raises(TypeError):
                await c.get_many(numpy.zeros((2, 2), dtype=numpy.int64))
        assert await c.get_many([1, 2], default=-1) == array.array("q", [-1, -1])
    both(connect, flavour, body)


def test_single_methods_refuse_out_of_range_as_before(connect):
    with connect() as client:
        with pytest.raises(ValueError):
            client.get(INT64_MAX + 1)
        with pytest.raises(OverflowError):
            client.set(1, INT64_MIN - 1)
        with pytest.raises(TypeError):
            client.incr(1, True)


# ---- connections: passwords, reconnecting, failures ------------------------------------------

def test_password(start_server, socket_path, flavour):
    server = start_server("--unixsocket", socket_path, env={**os.environ, "KVFAST_PASSWORD": PASSWORD})

    async def body(c):
        await c.set_many([1, 2], [3, 4])
        return await c.get_many([1, 2])

    for where in ({"host": server.host, "port": server.port}, {"unix_socket_path": socket_path}):
        assert both(lambda cls=Client, **kw: cls(**where, **kw), flavour, body, password=PASSWORD) == \
            (array.array("q", [3, 4]), bytearray(b"\x01\x01"))
    with pytest.raises(kvfast.AuthenticationError):
        both(lambda cls=Client, **kw: cls(*server.address, **kw), flavour, body, password="wrong")
    with pytest.raises(kvfast.KvfastError):         # no password: "Authentication required"
        both(lambda cls=Client, **kw: cls(*server.address, **kw), flavour, body)


def test_reconnects_after_the_server_closed_the_connection(connect, flavour):
    async def body(c):
        await c.set(1, 2)
        assert await c.request("bye") == "Goodbye"        # the server closes this connection
        assert await c.get_many([1]) == (array.array("q", [2]), bytearray(b"\x01"))
        assert await c.get(1) == 2
    both(connect, flavour, body)


def test_server_gone_raises_connection_error(connect, flavour):
    async def body(c):
        await c.set(1, 2)
        connect.server.kill()
        with pytest.raises(ConnectionError):
            await c.get_many(range(100_000))
        with pytest.raises(ConnectionError):          # reconnecting is refused: still a ConnectionError
            await c.get(1)
    both(connect, flavour, body, timeout=WAIT_SECONDS)


class CutShortServer:
    """A fake server on 127.0.0.1: reads ``read_bytes`` of requests, answers
    ``replies`` lines of ``OK`` and then closes (``linger``: stays silent
    instead, holding the connection open until ``release``)."""

    def __init__(self, read_bytes, replies, linger=False):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT_SECONDS)
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(read_bytes, replies, linger), daemon=True)
        self.thread.start()

    def _serve(self, read_bytes, replies, linger):
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(WAIT_SECONDS)
            while self.received < read_bytes:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                self.received += len(chunk)
            connection.sendall(b"OK\n" * replies)
            if linger:
                self.release.wait(WAIT_SECONDS)

    def close(self):
        self.release.set()
        self.thread.join(WAIT_SECONDS)
        self.listener.close()


@pytest.fixture
def cut_short():
    started = []

    def start(*args, **kwargs):
        started.append(CutShortServer(*args, **kwargs))
        return started[-1]
    yield start
    for fake in started:
        fake.close()


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_server_closing_mid_batch_fails_the_batch(cut_short, cls):
    fake = cut_short(read_bytes=1000, replies=3)

    async def main():
        if cls is Client:
            with Client("127.0.0.1", fake.port, timeout=WAIT_SECONDS) as client:
                client.set_many(range(100_000), range(100_000))
        else:
            async with AsyncClient("127.0.0.1", fake.port, timeout=WAIT_SECONDS) as client:
                await client.set_many(range(100_000), range(100_000))

    with pytest.raises(ConnectionLostError, match=r"\d+ of 100000 replies in"):
        run(main())


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_silent_server_times_out(cut_short, cls):
    fake = cut_short(read_bytes=1, replies=1, linger=True)

    async def main():
        if cls is Client:
            client = Client("127.0.0.1", fake.port, timeout=0.3)
            try:
                client.get_many(range(10))
            finally:
                client.close()
        else:
            client = AsyncClient("127.0.0.1", fake.port, timeout=0.3)
            try:
                await client.get_many(range(10))
            finally:
                await client.close()

    with pytest.raises(TimeoutError):
        run(main())


def test_one_client_per_thread_is_enforced(cut_short):
    fake = cut_short(read_bytes=1, replies=0, linger=True)
    client = Client("127.0.0.1", fake.port, timeout=WAIT_SECONDS)
    outcome = []

    def first_call():
        try:
            client.get(1)
        except Exception as error:          # noqa: BLE001 (kept for the assertion below)
            outcome.append(error)
    first = threading.Thread(target=first_call)
    first.start()
    wait_for(lambda: fake.received > 0, message="the first thread's request")
    with pytest.raises(RuntimeError, match="one Client per thread"):
        client.get(2)
    fake.release.set()                    # the fake closes: the first call fails with ConnectionLostError
    first.join(WAIT_SECONDS)
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLostError)
    client.close()


def test_async_client_serializes_concurrent_tasks(connect):
    async def main():
        async with connect(AsyncClient) as client:
            await asyncio.gather(*(client.set_many(range(i * 1000, i * 1000 + 1000), [i] * 1000) for i in range(8)),
                                 *(client.incr(-1) for _ in range(50)))
            values = await client.get_many(range(8000), default=-1)
            assert list(values) == [i // 1000 for i in range(8000)]
            assert await client.get(-1) == 50

    run(main())


def test_closed_client_refuses_calls(connect):
    client = connect()
    client.close()
    client.close()
    with pytest.raises(ValueError):
        client.get_many([1])


# ---- kvfast-bench --client python -------------------------------------------------------------

@pytest.mark.parametrize("pipeline", ["1", "100"])
def test_kvfast_bench_python_client(start_server, socket_path, capsys, pipeline):
    from kvfast import bench_cli
    server = start_server("--unixsocket", socket_path)
    where = ["-s", socket_path] if pipeline == "1" else ["-p", str(server.port)]
    assert bench_cli.main([*where, "--client", "python", "-c", "2", "-n", "1000", "-P", pipeline,
                           "-r", "500", "-t", "set,get,put,del,incr,mixed", "--json", "-q"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [result["test"] for result in results] == ["set", "get", "put", "del", "incr", "mixed"]
    assert all(result["requests"] == 1000 and result["errors"] == 0 and result["client"] == "python"
               for result in results)
