"""``kvfast-client``: talk to a kvfast server from the command line.

Interactive (``kvfast-client HOST PORT``, or ``kvfast-client -s PATH`` over a
unix domain socket) it prompts for requests and prints
each reply; with request words after the port it sends that one request and
prints the bare reply, for scripts.
"""
import argparse
import io
import os
import sys

from kvfast._native import command_help
from kvfast.client import Client
from kvfast.config import PASSWORD_ENV
from kvfast.errors import AuthenticationError, ConnectionLostError

PROG = "kvfast-client"
PROMPT = "Enter request: "
DEFAULT_TIMEOUT = 10.0
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

DESCRIPTION = f"""\
Send requests to a kvfast server.

Without REQUEST words, prompt for requests one line at a time ("{PROMPT}")
and print each reply as "Server replied: <reply>"; end with Bye or Ctrl-D.
With REQUEST words, send them as one request, print the bare reply and exit.
"""

def _requests_help() -> str:
    """The requests part of --help, from the native command table (_native.pyx)."""
    lines = ["requests (keys and values are signed 64-bit integers; commands are case-insensitive):"]
    rows = command_help()
    request_width = max(len(synopsis) for synopsis, _, _ in rows) + 1
    summary_width = max(len(summary) for _, summary, _ in rows) + 1
    lines += [f"  {synopsis:<{request_width}}{summary:<{summary_width}}-> {replies}"
              for synopsis, summary, replies in rows]
    lines.append('  a malformed request gets "Invalid request: <reason>"')
    return "\n".join(lines) + "\n\n"


EPILOG = _requests_help() + f"""\
password: with --password P, or else the {PASSWORD_ENV} environment variable,
"auth P" is sent as soon as the connection is made; a refused password is an
error (exit status 1). Prefer the variable: command lines are visible in ps.

exit status: 0 once the server has answered (whatever the answer), 1 on a usage
or connection error, 130 on Ctrl-C.
"""


class UsageError(Exception):
    """A bad command line; the message is argparse's description of the problem."""


class _OneLineErrorParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are raised as UsageError instead of exiting.

    argparse would print the whole usage and exit with status 2; kvfast-client
    promises one ``kvfast-client: error: ...`` line and status 1, which
    :func:`main` prints.
    """

    def error(self, message):
        raise UsageError(message)


def _port_number(text: str) -> int:
    """argparse type for PORT: a TCP port to connect to, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, not {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, not {port}")
    return port


def _positive_seconds(text: str) -> float:
    """argparse type for --timeout: a positive number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout must be a number of seconds, not {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"timeout must be positive, not {text}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of kvfast-client (also what --help describes)."""
    parser = _OneLineErrorParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG,
        usage="%(prog)s [-h] [--timeout SECONDS] [--password PASSWORD] (HOST PORT | -s PATH) [REQUEST ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # HOST and PORT are optional to argparse only so that -s PATH can stand in for
    # them; main() requires them when -s is not given (see _split_words).
    parser.add_argument("host", metavar="HOST", nargs="?", help="server address, e.g. 127.0.0.1")
    parser.add_argument("port", metavar="PORT", nargs="?", help="server port, e.g. 5000")
    # default=[] keeps argparse from listing REQUEST among missing arguments.
    parser.add_argument("request", metavar="REQUEST", nargs="*", default=[],
                        help="one request to send, e.g. get 1 (default: interactive)")
    parser.add_argument("-s", "--socket", metavar="PATH", default=None,
                        help="connect to the server's unix domain socket at PATH (kvfast-server "
                             "--unixsocket PATH) instead of HOST PORT, which are then left out")
    parser.add_argument("--timeout", metavar="SECONDS", type=_positive_seconds,
                        default=DEFAULT_TIMEOUT,
                        help=f"how long to wait to connect and for each reply (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--password", metavar="PASSWORD", default=None,
                        help=f"authenticate with this password (default: ${PASSWORD_ENV}, if set)")
    return parser


def main(argv=None) -> int:
    """Run kvfast-client with ``argv`` (default: sys.argv[1:]); return the exit status.

    Every expected failure becomes one ``kvfast-client: error: ...`` line on
    stderr and status 1, never a traceback; Ctrl-C exits quietly with 130.
    ``--help`` prints the help and raises SystemExit(0), as argparse does.
    """
    try:
        args = build_parser().parse_args(argv)
        where = _split_words(args)
    except UsageError as error:
        return _fail(str(error))
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    if password is not None and (not password or "\n" in password or "\r" in password):
        source = "--password" if args.password is not None else PASSWORD_ENV
        return _fail(f"{source}: the password must be one non-empty line")
    try:
        try:
            client = Client(args.host, args.port or 0, timeout=args.timeout, password=password,
                            unix_socket_path=args.socket)
        except AuthenticationError as error:
            return _fail(f"authentication failed: {error}")
        except OSError as error:
            return _fail(f"cannot connect to {where}: {_describe(error)}")
        with client:
            if args.request:
                return run_one_request(client, " ".join(args.request))
            return run_interactive(client, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ConnectionLostError:
        return _fail("connection to server lost")
    except TimeoutError:
        return _fail(f"no reply from server within {args.timeout:g} seconds")
    except BrokenPipeError:
        # Our stdout was closed (e.g. piped into `head`): nobody can read the reply.
        _silence_stdout()
        return EXIT_ERROR
    except OSError as error:
        return _fail(f"connection to server lost: {_describe(error)}")


def _split_words(args) -> str:
    """Sort out the positional words: without ``-s``, HOST and PORT come first
    (both required, PORT checked); with ``-s PATH`` every word belongs to the
    request. Returns where the client connects, for error messages; raises
    UsageError as argparse would."""
    if args.socket is not None:
        args.request = [word for word in (args.host, args.port) if word is not None] + args.request
        args.host = args.port = None
        return f"unix socket {args.socket}"
    missing = [name for name, word in (("HOST", args.host), ("PORT", args.port)) if word is None]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")
    try:
        args.port = _port_number(args.port)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"argument PORT: {error}") from None
    return f"{args.host}:{args.port}"


def run_one_request(client: Client, line: str) -> int:
    """Send ``line`` as one request and print the bare reply; return the exit status.

    Any reply counts as success (0), error replies included: the server
    answered. A line the server would not answer (blank, e.g. ``""``) is a
    usage error (1).
    """
    try:
        reply = client.request(line)
    except ValueError as error:
        return _fail(str(error))
    print(reply, flush=True)
    return EXIT_OK


def run_interactive(client: Client, stdin, stdout) -> int:
    """Prompt on ``stdout`` for request lines from ``stdin``; print each reply.

    Prints ``Connected to server``, then loops: prompt (flushed, no newline),
    read one line, send it, print ``Server replied: <reply>``. Blank lines are
    not sent (the server would not answer them). End of input sends ``Bye``.
    Returns 0 after the server's ``Goodbye`` or after end of input.

    On a terminal, when the input did not end its line (Ctrl-D), a newline is
    printed first so that the reply starts on a line of its own; piped output
    stays exactly one line per reply.
    """
    if isinstance(stdin, io.TextIOWrapper):
        # Bytes that are not valid in the stdin encoding are passed to the
        # server unchanged (see Client.request) instead of raising.
        stdin.reconfigure(errors="surrogateescape")
    stdout.write("Connected to server\n")
    while True:
        stdout.write(PROMPT)
        stdout.flush()
        typed = stdin.readline()
        at_end_of_input = typed == ""
        if not typed.endswith("\n") and stdin.isatty():
            stdout.write("\n")
        line = "Bye" if at_end_of_input else typed.removesuffix("\n").removesuffix("\r")
        if not line.strip():
            continue
        reply = client.request(line)
        stdout.write(f"Server replied: {reply}\n")
        stdout.flush()
        if reply == "Goodbye" or at_end_of_input:
            return EXIT_OK


def _fail(message: str) -> int:
    """Print ``kvfast-client: error: <message>`` on stderr; return the error status."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def _describe(error: OSError) -> str:
    """Short human text of a socket error: "Connection refused", "timed out", ..."""
    return error.strerror or str(error)


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so that flushing what is still
    buffered when the interpreter exits cannot fail again with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
