"""``kvfast-server [PORT] [--config FILE] [--host HOST] [--log-level LEVEL] [...]``.

Settings come from flags, ``KVFAST_*`` environment variables and a TOML file
(see :func:`kvfast.config.load_config`); ``--help`` lists them all.
"""
import argparse
import logging
import os
import signal
import sys

from kvfast.cli import OneLineErrorParser, raise_open_file_limit
from kvfast.config import (
    MAX_LINE_BYTES, PASSWORD_ENV, SETTINGS, SETTINGS_BY_NAME, ConfigError, MissingSettingError,
    format_default, load_config,
)
from kvfast.server import ListenError, LogError, Server, format_address

PROG = "kvfast-server"

DESCRIPTION = f"""\
Serve a shared int64 -> int64 key-value store over TCP and, with --unixsocket
PATH, a unix domain socket (PORT none: the unix socket alone).

Requests are text lines: "put K V" (only if K is absent), "get K", "del K", "bye".
Replies: the value, "OK", "Key already exists", "Key not found", "Goodbye", or
"Invalid request: <reason>". When a password is set, clients first send
"auth PASSWORD". Lines over {MAX_LINE_BYTES} bytes (by default) are refused and the
connection is closed. With --appendonly FILE every write is logged to FILE and
replayed at start-up. SIGINT or SIGTERM stops the server cleanly (the log is
flushed and synced first)."""

#: Settings some source must give: kvfast-server will not guess a port.
REQUIRED = ("port",)

#: Metavars that are not derived from the setting (see _metavar).
_METAVARS = {"metrics_port": "PORT", "log_level": "LEVEL", "timeout": "SECONDS", "appendonly": "FILE",
             "unixsocket": "PATH", "unixsocketperm": "OCTAL"}


def _metavar(setting) -> str:
    """The metavar --help shows for a setting's flag: ``yes|no`` for a boolean, the
    choices (``always|everysec|no``), ``N`` for a number, else the name in capitals,
    unless _METAVARS names a clearer one."""
    if setting.name in _METAVARS:
        return _METAVARS[setting.name]
    if setting.kind is bool:
        return "yes|no"
    if setting.choices:
        return "|".join(setting.choices)
    return "N" if setting.kind is int else setting.name.upper()


def _flag_help(setting) -> str:
    """A flag's --help line: the setting's help, its choices and its default, all from its row."""
    choices = f": {', '.join(setting.choices)}" if setting.choices else ""
    return f"{setting.help}{choices} (default {format_default(setting)})"


def _settings_table() -> str:
    """The epilog's table of every setting: file key, flag, environment variable, default."""
    rows = [("file key", "flag", "environment variable", "default")]
    for setting in SETTINGS:
        default = "required" if setting.name in REQUIRED else format_default(setting)
        rows.append((setting.key, setting.flag or "(none)", setting.env, default))
    widths = [max(len(row[column]) for row in rows) + 1 for column in range(3)]    # columns fit their widest
    return "\n".join(f"  {key:<{widths[0]}}{flag:<{widths[1]}}{env:<{widths[2]}}{default}".rstrip()
                     for key, flag, env, default in rows)


EPILOG = f"""\
settings and their precedence: each can be given by a flag, an environment
variable or a key of the TOML file named by --config. A flag wins over the
environment, which wins over the file, which wins over the default. PORT may be
left out when KVFAST_PORT or the file gives it.

{_settings_table()}

There is no password flag, since command lines are visible to every user (ps):
set requirepass in the config file (readable only by the server's user) or
{PASSWORD_ENV}. Booleans are yes/no, true/false or 1/0 (true/false in the file).
A bad setting is a one-line error naming it, and exit status 1.
"""


def build_parser() -> argparse.ArgumentParser:
    """kvfast-server's parser: PORT, --config and one flag per setting that has one.

    Every setting's value stays a string here (PORT too): load_config parses and
    checks it, so that a bad value reads the same whether it came from a flag, the
    environment or the file.
    """
    port = SETTINGS_BY_NAME["port"]
    parser = OneLineErrorParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                usage="%(prog)s [-h] [PORT] [--config FILE] [OPTION ...]",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", metavar=port.flag, nargs="?", default=None,
                        help=f"{port.help}; may be omitted when {port.env} or the config file gives it")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="read settings from this TOML file (see examples/kvfast.toml)")
    for setting in SETTINGS:
        if setting.flag is None or not setting.flag.startswith("--"):
            continue        # PORT is positional; requirepass has no flag
        parser.add_argument(setting.flag, dest=setting.name, metavar=_metavar(setting), default=None,
                            help=_flag_help(setting))
    return parser


def main(argv=None) -> int:
    """Parse arguments, bind, print ``kvfast listening on HOST:PORT`` (one line per
    TCP address) and ``kvfast listening on unix socket PATH``, serve until
    SIGINT/SIGTERM. Returns the exit status: 0 after a clean stop, 1 when the
    arguments are bad or an address cannot be bound."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {setting.name: getattr(args, setting.name) for setting in SETTINGS if setting.flag}
    try:
        config = load_config(flags, os.environ, args.config, required=REQUIRED)
    except MissingSettingError:
        parser.error("the following arguments are required: port")    # as before config files
    except ConfigError as error:
        parser.error(str(error))
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("kvfast.server")
    log.debug("%r", config)         # the repr leaves the password out
    open_files = raise_open_file_limit()
    log.debug("open file limit: %d", open_files)
    try:
        server = Server(config=config, config_file=args.config)
    except LogError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except ListenError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{PROG}: error: cannot start: {error.strerror or error}", file=sys.stderr)
        return 1
    if server.loaded is not None:
        keys, seconds = server.loaded
        print(f"loaded {keys} keys from {config.appendonly} in {seconds:.3f} s", flush=True)

    def request_stop(signum, frame):
        server.stop()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # Tests and scripts read these lines: one per TCP address, then the unix socket's.
    for host, port in server.addresses:
        print(f"kvfast listening on {host}:{port}", flush=True)
    if server.unix_socket_path is not None:
        print(f"kvfast listening on unix socket {server.unix_socket_path}", flush=True)
    for host, port in server.metrics_addresses:
        print(f"kvfast metrics on http://{format_address(host, port)}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        try:
            server.close()
        except OSError as error:     # the log's last write or sync failed
            print(f"{PROG}: error: {error.strerror or error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
