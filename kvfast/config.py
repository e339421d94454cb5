"""Settings shared by :class:`kvfast.Server`, ``kvfast-server`` and ``kvfast-client``.

Every limit the server enforces is named here once, so the CLI help, the README
and the compiled loop all speak of the same numbers.

:func:`load_config` builds a :class:`ServerConfig` from command-line flags, the
environment (``KVFAST_*``) and a TOML file, in that order of precedence, over the
defaults of :class:`ServerConfig`; :data:`SETTINGS` describes each setting.
"""
import argparse
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_LEVEL = "info"

#: Longest request line, in bytes, not counting its ``\n`` or ``\r\n`` ending.
#: A longer line gets ``Invalid request: line too long`` and its connection is closed.
MAX_LINE_BYTES = 64 * 1024

#: Largest RESP (Redis protocol) request, in bytes. Larger ones are refused with
#: ``-ERR Protocol error: request too large`` and the connection is closed, as soon
#: as a header declares the size (before the body is buffered).
MAX_REQUEST_BYTES = 1024 * 1024

#: Bytes read from one connection per readable event (a bounded read, as Redis does),
#: so one busy client cannot starve the others in a loop iteration.
READ_CHUNK_BYTES = 16 * 1024

#: Once a connection has this many reply bytes waiting to be sent, the server stops
#: reading its requests until the client has read enough of its replies
#: (below half of it). This bounds per-connection memory whatever the client sends.
OUTPUT_HIGH_WATER_BYTES = 1024 * 1024

#: Backlog passed to listen(2) (the kernel caps it at net.core.somaxconn): room for
#: thousands of clients connecting at once while the loop accepts them.
LISTEN_BACKLOG = 4096


#: Most clients connected at once; one more gets ``max number of clients reached``
#: (native: ``Error: max number of clients reached``; RESP: ``-ERR max number of
#: clients reached``) and is closed, as Redis's maxclients.
MAX_CLIENTS = 10000

#: Seconds a client may stay idle (nothing received) before the server closes it;
#: 0 means never, the default, as in Redis.
IDLE_TIMEOUT = 0

#: Before a client has authenticated (when a password is set), requests are held
#: to these sizes: a native line, a RESP argument count, a RESP argument.
UNAUTHENTICATED_MAX_LINE_BYTES = 1024
UNAUTHENTICATED_MAX_ARGUMENTS = 10
UNAUTHENTICATED_MAX_BULK_BYTES = 16 * 1024

#: Largest RESP argument (Redis's proto-max-bulk-len) and most arguments of one
#: RESP request; both refused as soon as their header arrives.
MAX_BULK_BYTES = 512 * 1024 * 1024
MAX_ARGUMENTS = 1024 * 1024

#: When the append-only file (``appendonly``) is fsynced: ``always`` (before each
#: loop iteration's replies), ``everysec`` (by a background thread, about once a
#: second; the default, as in Redis) or ``no`` (when the kernel decides).
FSYNC_POLICIES = ("always", "everysec", "no")
DEFAULT_FSYNC = "everysec"

#: The append-only file is rewritten (compacted) once it is larger than this and
#: more than twice the size of a snapshot of the live keys (Redis: 64mb and 100%).
AOF_REWRITE_MIN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server needs to start; the CLI builds one from its arguments."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = DEFAULT_LOG_LEVEL
    max_line_bytes: int = MAX_LINE_BYTES
    max_request_bytes: int = MAX_REQUEST_BYTES
    read_chunk_bytes: int = READ_CHUNK_BYTES
    output_high_water_bytes: int = OUTPUT_HIGH_WATER_BYTES
    backlog: int = LISTEN_BACKLOG
    max_clients: int = MAX_CLIENTS
    timeout: int = IDLE_TIMEOUT
    requirepass: str | None = field(default=None, repr=False)   # never shown in logs or reprs
    protected_mode: bool = True
    appendonly: str | None = None           # path of the append-only file; None: no persistence
    fsync: str = DEFAULT_FSYNC
    aof_rewrite_min_bytes: int = AOF_REWRITE_MIN_BYTES

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.max_line_bytes < 16 or self.max_request_bytes < 64:
            raise ValueError("max_line_bytes must be at least 16 and max_request_bytes at least 64")
        if self.read_chunk_bytes < 1 or self.output_high_water_bytes < 1:
            raise ValueError("read_chunk_bytes and output_high_water_bytes must be positive")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, not {self.max_clients}")
        if self.timeout < 0:
            raise ValueError(f"timeout must be 0 (never) or a number of seconds, not {self.timeout}")
        if self.requirepass is not None and not 1 <= len(self.requirepass.encode()) <= 512:
            raise ValueError("requirepass must be 1 to 512 bytes")
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {self.fsync!r}")
        if self.appendonly is not None and not str(self.appendonly).strip():
            raise ValueError("appendonly must be a file path")
        if self.aof_rewrite_min_bytes < 0:
            raise ValueError("aof_rewrite_min_bytes must not be negative")
        if self.requirepass is not None and any(c in self.requirepass for c in " \t\r\n"):
            raise ValueError("requirepass must not contain spaces, tabs or line breaks "
                             "(the native protocol's auth command could not carry it)")


# --- loading settings: flags > environment > TOML file > defaults -------------------

#: Largest value of any whole-number setting (C int: listen(2)'s backlog, seconds, ...).
_INT_MAX = 2**31 - 1
#: requirepass length bounds, in UTF-8 bytes (as ServerConfig checks).
_PASSWORD_BYTES = (1, 512)


@dataclass(frozen=True)
class Setting:
    """One configurable :class:`ServerConfig` field and the names it goes by.

    ``name`` is the field, ``key`` its TOML file key, ``env`` its environment
    variable, ``flag`` its kvfast-server option (``"PORT"`` for the positional
    port, None when there is no flag). ``kind`` is int, str or bool.
    """

    name: str
    key: str
    env: str
    flag: str | None
    kind: type
    help: str
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False        # never echoed in error messages

    @property
    def default(self):
        """The default, from ServerConfig (the one place defaults live)."""
        return _FIELD_DEFAULTS[self.name]


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerConfig)}


def _setting(name, kind, help, *, env=None, flag="", **limits) -> Setting:
    key = name.replace("_", "-")
    return Setting(name=name, key=key, env=env or f"KVFAST_{name.upper()}",
                   flag=f"--{key}" if flag == "" else flag, kind=kind, help=help, **limits)


#: Every setting load_config knows, in the order --help lists them.
SETTINGS: tuple[Setting, ...] = (
    _setting("host", str, "address to bind (0.0.0.0: every IPv4 interface)"),
    _setting("port", int, "TCP port to listen on (0: any free port)", flag="PORT",
             minimum=0, maximum=65535),
    _setting("log_level", str, f"logging threshold: {', '.join(LOG_LEVELS)}"),
    _setting("max_clients", int, "most clients connected at once", minimum=1, maximum=_INT_MAX),
    _setting("timeout", int, "close a client idle this many seconds (0: never)",
             minimum=0, maximum=_INT_MAX),
    _setting("requirepass", str, "password clients must send (auth PASSWORD) before any request",
             env="KVFAST_PASSWORD", flag=None, secret=True),
    _setting("protected_mode", bool, "with no password set, accept clients from loopback only"),
    _setting("max_line_bytes", int, "longest native request line", minimum=16, maximum=_INT_MAX),
    _setting("max_request_bytes", int, "largest RESP request", minimum=64, maximum=_INT_MAX),
    _setting("output_high_water_bytes", int, "unsent reply bytes at which a client stops being read",
             minimum=1, maximum=_INT_MAX),
    _setting("backlog", int, "listen(2) backlog (the kernel caps it at net.core.somaxconn)",
             minimum=1, maximum=_INT_MAX),
    _setting("appendonly", str, "log every write to this append-only file and replay it at start-up"),
    _setting("fsync", str, f"when the append-only file is synced: {', '.join(FSYNC_POLICIES)}"),
    _setting("aof_rewrite_min_bytes", int, "compact the append-only file only once it is this large",
             minimum=0, maximum=2**63 - 1),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}
_BY_KEY = {setting.key: setting for setting in SETTINGS}

_TRUE_WORDS = ("yes", "true", "1")
_FALSE_WORDS = ("no", "false", "0")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class ConfigError(ValueError):
    """A setting that cannot be used. ``str(error)`` is one line naming where it
    came from: ``kvfast.toml: unknown setting 'max-client'``,
    ``KVFAST_TIMEOUT: not a whole number: 'soon'``, ``--port: ...``.

    ``source`` is the file path, environment variable or flag; ``key`` the file
    key of the setting when the source is a file (else None).
    """

    def __init__(self, source: str, message: str, key: str | None = None):
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class MissingSettingError(ConfigError):
    """A setting ``load_config(required=...)`` needs was given by no source."""


def format_default(setting: Setting) -> str:
    """The default as --help shows it: ``yes``, ``none``, ``4096``."""
    value = setting.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def load_config(flags=None, environ: Mapping[str, str] | None = None, config_path=None, *,
                required=()) -> ServerConfig:
    """Merge settings into a ServerConfig: ``flags`` > ``environ`` > the TOML file
    at ``config_path`` > ServerConfig's defaults.

    ``flags``: a mapping (or argparse.Namespace) of ServerConfig field names to
    values; None values count as not given. Strings are parsed as on a command
    line ("8", "yes"); ints and bools are checked as they are. A Namespace may
    carry other attributes (ignored); a mapping may not.
    ``environ``: defaults to os.environ; only ``KVFAST_*`` names of SETTINGS are read.
    ``config_path``: a TOML file, or None for none.
    ``required``: field names that some source must give (kvfast-server needs
    ``port``), else MissingSettingError.

    Raises ConfigError (one line, naming the source and key) for anything wrong.
    """
    values = {}
    if config_path is not None:
        values.update(read_config_file(config_path))
    values.update(settings_from_environ(os.environ if environ is None else environ))
    values.update(settings_from_flags(flags))
    for name in required:
        if name not in values:
            setting = _BY_NAME[name]
            raise MissingSettingError(setting.flag or setting.env,
                                      f"not given (pass {setting.flag}, set {setting.env} "
                                      f"or {setting.key} in the config file)")
    try:
        return ServerConfig(**values)
    except ValueError as error:     # a combination the per-setting checks let through
        raise ConfigError("configuration", str(error)) from None


def read_config_file(path) -> dict:
    """Settings of a TOML file, as ServerConfig field names to checked values.

    Raises ConfigError when the file cannot be read, is not valid TOML, has a
    key that is not a setting, or a value of the wrong type or out of range.
    """
    try:
        import tomllib
    except ModuleNotFoundError:     # Python 3.10: the same parser, as a package
        import tomli as tomllib
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(source, f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, f"invalid TOML: {error}") from None
    values = {}
    for key, value in document.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            raise ConfigError(source, f"unknown setting {key!r}")
        values[setting.name] = _check_value(setting, value, source, key)
    return values


def settings_from_environ(environ: Mapping[str, str]) -> dict:
    """Settings given by ``KVFAST_*`` variables of ``environ``, checked.

    A variable that is set but empty is an error like any other bad value.
    """
    return {setting.name: _parse_text(setting, environ[setting.env], setting.env)
            for setting in SETTINGS if setting.env in environ}


def settings_from_flags(flags) -> dict:
    """Settings given as flags (see :func:`load_config`), checked."""
    if flags is None:
        return {}
    if isinstance(flags, argparse.Namespace):
        flags = {name: value for name, value in vars(flags).items() if name in _BY_NAME}
    values = {}
    for name, value in flags.items():
        setting = _BY_NAME.get(name)
        if setting is None:
            raise TypeError(f"{name!r} is not a setting (one of {', '.join(_BY_NAME)})")
        if value is None:
            continue
        source = setting.flag or name
        if isinstance(value, str) and setting.kind is not str:
            values[name] = _parse_text(setting, value, source)
        else:
            values[name] = _check_value(setting, value, source)
    return values


def _parse_text(setting: Setting, text: str, source: str):
    """A setting written as text (environment variable, command-line flag)."""
    if setting.kind is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ConfigError(source, f"not yes or no: {text!r} (use yes/no, true/false or 1/0)")
    if setting.kind is int:
        if not _WHOLE_NUMBER.fullmatch(text.strip()):
            raise ConfigError(source, f"not a whole number: {text!r}")
        return _check_value(setting, int(text), source)
    return _check_value(setting, text, source)


def _check_value(setting: Setting, value, source: str, key: str | None = None):
    """Check a typed value (from a TOML file or a Python caller); return it, normalised."""
    def fail(message):
        raise ConfigError(source, message, key)

    if setting.kind is bool:
        if not isinstance(value, bool):
            fail(f"expected true or false, not {_describe(value, setting)}")
        return value
    if setting.kind is int:
        if isinstance(value, float):
            fail(f"not a whole number: {value!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected a whole number, not {_describe(value, setting)}")
        if not setting.minimum <= value <= setting.maximum:
            bounds = (f"at least {setting.minimum}" if setting.maximum == _INT_MAX
                      else f"{setting.minimum} to {setting.maximum}")
            fail(f"out of range: {value} (must be {bounds})")
        return value
    if not isinstance(value, str):
        fail(f"expected a string, not {_describe(value, setting)}")
    if setting.name == "log_level":
        if value.strip().lower() not in LOG_LEVELS:
            fail(f"not a log level: {value!r} (use {', '.join(LOG_LEVELS)})")
        return value.strip().lower()
    if setting.name == "host" and not value.strip():
        fail("must not be empty")
    if setting.name == "appendonly" and not value.strip():
        fail("must not be empty (a file path)")
    if setting.name == "fsync":
        if value.strip().lower() not in FSYNC_POLICIES:
            fail(f"not an fsync policy: {value!r} (use {', '.join(FSYNC_POLICIES)})")
        return value.strip().lower()
    if setting.secret:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            fail("not valid UTF-8")
        low, high = _PASSWORD_BYTES
        if not low <= size <= high:
            fail(f"must be {low} to {high} bytes, not {size}")
    return value


def _describe(value, setting: Setting) -> str:
    """How an error message names a value of the wrong type (secrets: type only)."""
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    elif isinstance(value, list):
        return "an array"
    elif isinstance(value, dict):
        return "a table"
    else:
        return f"a {type(value).__name__}"
    if setting.secret:
        return kind
    shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return f"{kind}: {shown}"
