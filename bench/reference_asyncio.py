"""Plain-Python baseline: the kvfast native protocol served with asyncio streams.

    python bench/reference_asyncio.py PORT [--host 127.0.0.1]

This is what an ordinary, idiomatic Python implementation looks like (asyncio
streams, a dict as the store, the protocol logic of kvfast.protocol_model), so
benchmarks can show what the compiled server buys over it. It prints
``reference listening on HOST:PORT`` (the real port when PORT is 0) once it
accepts connections, and stops cleanly on SIGINT or SIGTERM. kvfast must be
importable (``pip install -e .``).
"""
import argparse
import asyncio
import functools
import signal

from kvfast.config import DEFAULT_HOST, MAX_LINE_BYTES
from kvfast.protocol_model import LINE_TOO_LONG, answer

# A line may be MAX_LINE_BYTES long plus the "\r" of a "\r\n" ending, so the
# stream must hand over lines up to that size; answer() then judges the length
# without the "\r". Anything longer is refused before it is all buffered.
STREAM_LIMIT = MAX_LINE_BYTES + 1

# How long a connection the server is closing keeps reading (and discarding)
# what the client still sends; see close_gracefully().
LINGER_SECONDS = 2.0
DISCARD_CHUNK_BYTES = 64 * 1024


async def handle_connection(store: dict, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """Serve one client: answer each request line, in order, until it leaves.

    Ends when the client closes its side (a final line without ``\\n`` is not a
    request and gets no reply), resets the connection, or is told to go
    (``bye``, or a line that is too long).
    """
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            except asyncio.LimitOverrunError:
                writer.write(LINE_TOO_LONG + b"\n")
                await close_gracefully(reader, writer)
                return
            reply, close = answer(store, line[:-1])
            if reply is not None:
                writer.write(reply + b"\n")
                # Only waits when the client is not reading its replies.
                await writer.drain()
            if close:
                await close_gracefully(reader, writer)
                return
    except ConnectionError:
        return
    except asyncio.CancelledError:
        # Shutdown: asyncio.run() cancels the handlers of open connections.
        # Ending normally instead of as cancelled keeps Python 3.11 from
        # logging a traceback for each of them (its start_server callback
        # calls task.exception() on the cancelled task).
        return
    finally:
        writer.close()


async def close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Deliver the last reply before the server closes the connection.

    Closing a socket that still has unread incoming data makes the kernel send
    a reset, which can destroy replies the client has not read yet (a client
    that pipelined requests after ``bye``, or one still sending a too-long
    line). So: send everything, shut down the sending side, and discard input
    until the client closes its side or LINGER_SECONDS have passed.
    """
    await writer.drain()
    writer.write_eof()
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            while await reader.read(DISCARD_CHUNK_BYTES):
                pass
    except TimeoutError:
        pass


async def serve(host: str, port: int) -> None:
    """Listen on ``host``:``port`` and serve clients until SIGINT or SIGTERM.

    All connections share one store. Prints the listening line once connections
    are accepted; on a signal, stops listening and returns, and asyncio.run()
    then cancels the open connections (each closes its socket on the way out).
    """
    store = {}
    server = await asyncio.start_server(
        functools.partial(handle_connection, store), host, port, limit=STREAM_LIMIT)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(f"reference listening on {bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    async with server:
        await stop.wait()


def main(argv=None) -> None:
    """Parse the command line and run the server until it is stopped."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", metavar="PORT", type=int, help="TCP port, 0 for any free port")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
