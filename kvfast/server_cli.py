"""``kvfast-server PORT [--host HOST] [--log-level LEVEL]``."""
import argparse
import logging
import resource
import signal
import sys

from kvfast.config import DEFAULT_HOST, DEFAULT_LOG_LEVEL, LOG_LEVELS, MAX_LINE_BYTES, ServerConfig
from kvfast.server import Server

PROG = "kvfast-server"

DESCRIPTION = f"""\
Serve a shared int64 -> int64 key-value store over TCP.

Requests are text lines: "put K V" (only if K is absent), "get K", "del K", "bye".
Replies: the value, "OK", "Key already exists", "Key not found", "Goodbye", or
"Invalid request: <reason>". Lines over {MAX_LINE_BYTES} bytes are refused and the
connection is closed. SIGINT or SIGTERM stops the server cleanly."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 1."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: must be 0 to 65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=PROG, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=port_number, help="TCP port to listen on (0: any free port)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--log-level", default=DEFAULT_LOG_LEVEL, choices=LOG_LEVELS,
                        help=f"logging threshold (default {DEFAULT_LOG_LEVEL})")
    return parser


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as Redis
    does, so that thousands of clients can connect. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def main(argv=None) -> int:
    """Parse arguments, bind, print ``kvfast listening on HOST:PORT``, serve until
    SIGINT/SIGTERM. Returns the exit status: 0 after a clean stop, 1 when the
    arguments are bad or the address cannot be bound."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    open_files = raise_open_file_limit()
    logging.getLogger("kvfast.server").debug("open file limit: %d", open_files)
    try:
        server = Server(config=ServerConfig(host=args.host, port=args.port, log_level=args.log_level))
    except OSError as error:
        reason = error.strerror or str(error)
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1

    def request_stop(signum, frame):
        server.stop()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    host, port = server.address
    print(f"kvfast listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
