"""Settings shared by :class:`kvfast.Server`, ``kvfast-server`` and ``kvfast-client``.

Every limit the server enforces is named here once, so the CLI help, the README
and the compiled loop all speak of the same numbers.

:data:`TABLE` has one :class:`Setting` row per :class:`ServerConfig` field: its
default, its kind, the values it accepts and the names a user sets it by.
:class:`ServerConfig` is built from those rows and checks every value against
them; :func:`load_config` builds one from command-line flags, the environment
(``KVFAST_*``) and a TOML file, in that order of precedence, over the defaults,
checking each source's values against the same rows.
"""
import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_PORT = 5000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_LEVEL = "info"

#: Longest request line, in bytes, not counting its ``\n`` or ``\r\n`` ending.
#: A longer line gets ``Invalid request: line too long`` and its connection is closed.
MAX_LINE_BYTES = 64 * 1024

#: Largest RESP (Redis protocol) request, in bytes: Redis's client-query-buffer-limit,
#: 1 GiB as in Redis. A larger one is refused with ``-ERR Protocol error: request too
#: large`` as soon as a header declares the size (before the body is buffered); the
#: rest of it is read and discarded, then the connection is closed. The input buffer
#: grows with the bytes received, never with a declared size.
CLIENT_QUERY_BUFFER_LIMIT = 1024 * 1024 * 1024

#: Largest RESP bulk string (``$<n>``) accepted: Redis's proto-max-bulk-len, 512 MiB.
#: A larger one is ``-ERR Protocol error: invalid bulk length``, then close.
PROTO_MAX_BULK_LEN = 512 * 1024 * 1024

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
#: 0 means never, as in Redis.
IDLE_TIMEOUT = 0

#: The PORT that means "no TCP listener" (the unix socket alone): 0 already means
#: "any free port", so Redis's ``port 0`` spelling cannot be used.
NO_TCP = "none"

#: Longest unix socket path, in bytes: sun_path's 108 bytes less its terminating NUL.
UNIX_PATH_MAX_BYTES = 107

#: The environment variable that carries the password, for kvfast-server
#: (``requirepass``) and kvfast-client alike; there is no password flag.
PASSWORD_ENV = "KVFAST_PASSWORD"

#: When the append-only file (``appendonly``) is fsynced: ``always`` (before each
#: loop iteration's replies), ``everysec`` (by a background thread, about once a
#: second; the default, as in Redis) or ``no`` (when the kernel decides).
FSYNC_POLICIES = ("everysec", "always", "no")      # Redis's order (CONFIG SET's error lists them so)
DEFAULT_FSYNC = "everysec"

#: SLOWLOG: commands slower than this many microseconds are logged (Redis's
#: slowlog-log-slower-than; 0 logs every command, -1 none), and the log keeps the
#: newest SLOWLOG_MAX_LEN entries (slowlog-max-len).
SLOWLOG_LOG_SLOWER_THAN = 10000
SLOWLOG_MAX_LEN = 128

#: maxmemory-policy: what to evict when ``maxmemory`` is reached (Redis's eight;
#: kvfast/_evict.pyx says how each works). noeviction refuses writes instead.
#: Redis's order (its CONFIG SET error lists them so).
MAXMEMORY_POLICIES = ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl", "allkeys-lru",
                      "allkeys-lfu", "allkeys-random", "noeviction")
DEFAULT_MAXMEMORY_POLICY = "noeviction"

#: The units a memory size may carry, as Redis's config (any case): k/m/g are
#: powers of 1000, kb/mb/gb of 1024.
MEMORY_UNITS = {"b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_MEMORY_SIZE = re.compile(r"([0-9]+)([a-z]*)")

#: The append-only file is rewritten (compacted) once it is larger than this and
#: more than twice the size of a snapshot of the live keys (Redis: 64mb and 100%).
AOF_REWRITE_MIN_BYTES = 64 * 1024 * 1024

# --- fixed limits of the RESP and native parsers (not settings) -----------------
# kvfast.Server passes each of these to the compiled EventLoop, which enforces them.

#: Largest RESP multibulk count (``*<n>``) accepted, as Redis 7's INT_MAX; a larger
#: count is a protocol error and the connection is closed. (The query buffer limit
#: bounds it in practice: every argument takes at least 6 bytes.)
MAX_ARGUMENTS = 2**31 - 1

#: Before a client has authenticated (when a password is set), requests are held
#: to these sizes: a native line, a RESP argument count, a RESP argument. They
#: keep an unauthenticated peer from making the server buffer much.
UNAUTHENTICATED_MAX_LINE_BYTES = 1024
UNAUTHENTICATED_MAX_ARGUMENTS = 10
UNAUTHENTICATED_MAX_BULK_BYTES = 16 * 1024

#: Largest value of a whole-number setting the loop stores in a C int (listen(2)'s
#: backlog, seconds, sizes) or in an int64/size_t (byte counts); an error message
#: calls a range up to either "at least N".
_INT_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _word(value):
    """Normalise a word setting (log level, fsync policy): ``" Debug "`` is ``"debug"``.
    Non-strings are left alone for the type check to refuse."""
    return value.strip().lower() if isinstance(value, str) else value


def _octal_mode(value):
    """Normalise a file mode setting: a TOML integer ``700`` is read as its digits,
    as Redis's config file writes it (``unixsocketperm 700``); text is stripped."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else value


def _memory_size(value):
    """Normalise a memory size: text such as ``"100mb"`` or ``"1gb"`` (Redis's
    units, MEMORY_UNITS) or plain digits becomes its number of bytes; other
    values are left alone for the type check to refuse."""
    if not isinstance(value, str):
        return value
    match = _MEMORY_SIZE.fullmatch(value.strip().lower())
    if match is None or match.group(2) not in ("", *MEMORY_UNITS):
        return value
    return int(match.group(1)) * MEMORY_UNITS.get(match.group(2), 1)


def _path(value):
    """Normalise a path setting: a ``pathlib.Path`` (any os.PathLike) becomes its
    str, so ``ServerConfig.appendonly`` is always a str. Other values are left alone."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@dataclass(frozen=True)
class Setting:
    """One :class:`ServerConfig` field: its default, the values it accepts and the
    names a user sets it by. :func:`check_value` applies these rules, and nothing
    else states them.

    Names: ``name`` is the field, ``key`` its TOML file key, ``env`` its environment
    variable, ``flag`` its kvfast-server option (``"PORT"`` for the positional port,
    None when there is no flag). ``key`` and ``env`` are None only for a field set
    from Python alone (read_chunk_bytes); :data:`SETTINGS` leaves those out.

    Values: ``kind`` is int, str or bool. A ``default`` of None means "off" and makes
    None a valid value (requirepass, appendonly). For an int, ``minimum`` and
    ``maximum`` (both given) bound the value; for a str, when given, its length in
    UTF-8 bytes. A str
    ``normalise`` is applied first (case, surrounding blanks, path objects);
    ``choices`` are then the only values allowed, ``not_blank`` refuses an empty or
    all-blank value and ``forbidden`` characters are refused with
    ``forbidden_message``. ``what`` names the value in error messages ("a log
    level"). A ``secret`` value is never echoed in an error or a repr. An int's
    ``normalise`` may turn text into the number (memory sizes with units).

    The running server: ``config_name`` (``redis_name``, else ``key``) is the name
    CONFIG GET and CONFIG SET use. A row with an ``apply`` hook can change at run
    time: CONFIG SET checks every new value against the same rules (and builds the
    new ServerConfig, which checks the rules across fields), then calls
    ``apply(loop, config)`` for each changed row with the running
    :class:`~kvfast._loop.EventLoop` and the new ServerConfig, in the loop's
    thread between two requests. Usually the hook is :func:`_to_loop`: a property
    of the loop of the same name stores the value in its C structs. Rows without
    one answer CONFIG SET with Redis's ``can't set immutable config``.
    """

    name: str
    kind: type
    default: object
    help: str               # one line for --help; the choices and the default are added to it
    key: str | None
    env: str | None
    flag: str | None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    normalise: Callable | None = None
    not_blank: bool = False
    forbidden: str = ""
    forbidden_message: str = ""
    what: str = ""
    secret: bool = False
    pattern: str = ""           # a str value must match this regular expression entirely
    none_word: str = ""         # this word (a flag, variable or file string) gives the value None
    # --- the running server (CONFIG GET/SET/REWRITE: kvfast/runtime.py) ---
    redis_name: str = ""        # CONFIG's name for it: Redis's where Redis has one ("" : the file key)
    apply: Callable | None = None   # changeable at run time: apply(loop, config) makes the running
    #                                 EventLoop use the new ServerConfig's value; None: immutable
    memory: bool = False        # CONFIG SET also takes Redis's memory units (1kb, 64mb, 1gb)
    off_text: str = ""          # what CONFIG GET shows for None (Redis: "" or "0")

    @property
    def config_name(self) -> str:
        """The name CONFIG GET shows and CONFIG SET takes."""
        return self.redis_name or self.key

    @property
    def annotation(self):
        """The field's type annotation: ``kind``, or ``kind | None`` when None is the
        default or a value (``none_word``)."""
        return self.kind | None if self.default is None or self.none_word else self.kind


def _to_loop(name: str) -> Callable:
    """The usual ``apply`` hook: set the running EventLoop's property ``name`` (the
    field's name) to the new value; the property stores it where the loop reads it."""
    def apply(loop, config):
        setattr(loop, name, getattr(config, name))
    apply.__qualname__ = f"_to_loop({name!r})"
    return apply


def protected_mode_applies(config) -> bool:
    """Protected mode (as in Redis) refuses every TCP peer but 127.0.0.1 and ::1 when
    the server listens beyond loopback with no password and it was not turned off.
    (Peers on the unix socket always count as local: its file's permissions decide
    who may connect.)"""
    if not config.protected_mode or config.requirepass is not None or config.port is None:
        return False
    return any(host not in LOOPBACK_HOSTS for host in config.host.split())


def _apply_protected_mode(loop, config) -> None:
    """protected-mode and requirepass both decide whether protected mode is in force."""
    loop.protected_mode = protected_mode_applies(config)


def _apply_password(loop, config) -> None:
    """A new password (None: none) holds for new connections; connections already
    authenticated stay so, and with no password every connection is (as Redis)."""
    loop.password = None if config.requirepass is None else config.requirepass.encode()
    _apply_protected_mode(loop, config)


def _apply_log_level(loop, config) -> None:
    """The threshold of kvfast's loggers (kvfast-server configures the root logger
    once, at start; this sets kvfast's own)."""
    import logging
    logging.getLogger("kvfast").setLevel(config.log_level.upper())


def _setting(name, kind, default, help, *, internal=False, env=None, flag="", **rules) -> Setting:
    """A row of TABLE whose names follow from the field name: ``max_clients`` is the
    key ``max-clients``, the variable ``KVFAST_MAX_CLIENTS`` and the flag
    ``--max-clients``. ``env`` and ``flag`` override them (``flag=None``: no flag);
    ``internal=True`` gives none (a field set from Python only)."""
    if internal:
        return Setting(name, kind, default, help, key=None, env=None, flag=None, **rules)
    key = name.replace("_", "-")
    return Setting(name, kind, default, help, key=key, env=env or f"KVFAST_{name.upper()}",
                   flag=f"--{key}" if flag == "" else flag, **rules)


#: Every ServerConfig field, in field order (which is also the order --help lists them).
TABLE: tuple[Setting, ...] = (
    _setting("host", str, DEFAULT_HOST, "addresses to bind, separated by blanks, as Redis's bind "
             "(\"127.0.0.1 ::1\"; 0.0.0.0: every IPv4 interface)", not_blank=True, redis_name="bind"),
    _setting("port", int, DEFAULT_PORT, f"TCP port to listen on (0: any free port; {NO_TCP}: no TCP, "
             "only the unix socket)", flag="PORT", minimum=0, maximum=65535, none_word=NO_TCP, off_text="0"),
    _setting("metrics_port", int, None, "also serve Prometheus metrics at http://HOST:PORT/metrics, on every "
             "bind address (0: any free port; default: off)", minimum=0, maximum=65535),
    _setting("unixsocket", str, None, "also listen on a unix domain socket at this path",
             normalise=_path, not_blank=True, minimum=1, maximum=UNIX_PATH_MAX_BYTES, what="a socket path"),
    _setting("unixsocketperm", str, None, "permissions of the unix socket file, in octal (700: the "
             "server's user only; default: as the umask leaves them)", normalise=_octal_mode,
             pattern="0?[0-7]{3}", what="an octal file mode like 700 or 0770", off_text="0"),
    _setting("log_level", str, DEFAULT_LOG_LEVEL, "logging threshold", choices=LOG_LEVELS, normalise=_word,
             what="a log level", redis_name="loglevel", apply=_apply_log_level),
    _setting("max_line_bytes", int, MAX_LINE_BYTES, "longest native request line",
             minimum=16, maximum=_INT_MAX, memory=True, apply=_to_loop("max_line_bytes")),
    _setting("client_query_buffer_limit", int, CLIENT_QUERY_BUFFER_LIMIT,
             "largest RESP request, in bytes (Redis's client-query-buffer-limit)", minimum=64, maximum=_INT64_MAX,
             memory=True, apply=_to_loop("client_query_buffer_limit")),
    _setting("proto_max_bulk_len", int, PROTO_MAX_BULK_LEN,
             "largest RESP argument, in bytes (Redis's proto-max-bulk-len)", minimum=1, maximum=_INT64_MAX,
             memory=True, apply=_to_loop("proto_max_bulk_len")),
    _setting("read_chunk_bytes", int, READ_CHUNK_BYTES, "bytes read from a client per readable event",
             internal=True, minimum=1, maximum=_INT_MAX),
    _setting("output_high_water_bytes", int, OUTPUT_HIGH_WATER_BYTES,
             "unsent reply bytes at which a client stops being read", minimum=1, maximum=_INT_MAX,
             memory=True, apply=_to_loop("output_high_water_bytes")),
    _setting("backlog", int, LISTEN_BACKLOG, "listen(2) backlog (the kernel caps it at net.core.somaxconn)",
             minimum=1, maximum=_INT_MAX, redis_name="tcp-backlog"),
    _setting("max_clients", int, MAX_CLIENTS, "most clients connected at once", minimum=1, maximum=_INT_MAX,
             redis_name="maxclients", apply=_to_loop("max_clients")),
    _setting("timeout", int, IDLE_TIMEOUT, "close a client idle this many seconds (0: never)",
             minimum=0, maximum=_INT_MAX, apply=_to_loop("timeout")),
    # 512 bytes as Redis; no blanks or line breaks, which "auth PASSWORD" could not carry.
    _setting("requirepass", str, None, "password clients must send (auth PASSWORD) before any request",
             env=PASSWORD_ENV, flag=None, secret=True, minimum=1, maximum=512, forbidden=" \t\r\n",
             forbidden_message="must not contain spaces, tabs or line breaks "
                               "(the native protocol's auth command could not carry it)",
             apply=_apply_password),
    _setting("protected_mode", bool, True, "with no password set, accept clients from loopback only",
             apply=_apply_protected_mode),
    _setting("appendonly", str, None, "log every write to this append-only file and replay it at start-up",
             normalise=_path, not_blank=True, what="a file path", redis_name="appendfilename"),
    _setting("fsync", str, DEFAULT_FSYNC, "when the append-only file is synced", choices=FSYNC_POLICIES,
             normalise=_word, what="an fsync policy", redis_name="appendfsync", apply=_to_loop("fsync")),
    _setting("aof_rewrite_min_bytes", int, AOF_REWRITE_MIN_BYTES,
             "compact the append-only file only once it is this large", minimum=0, maximum=_INT64_MAX,
             redis_name="auto-aof-rewrite-min-size", memory=True, apply=_to_loop("aof_rewrite_min_bytes")),
    _setting("slowlog_log_slower_than", int, SLOWLOG_LOG_SLOWER_THAN,
             "log commands slower than this many microseconds in SLOWLOG (0: every command; -1: none)",
             minimum=-1, maximum=_INT64_MAX, redis_name="slowlog-log-slower-than",
             apply=_to_loop("slowlog_log_slower_than")),
    _setting("slowlog_max_len", int, SLOWLOG_MAX_LEN, "entries the slow log keeps (the oldest go first)",
             minimum=0, maximum=_INT_MAX, redis_name="slowlog-max-len", apply=_to_loop("slowlog_max_len")),
    _setting("maxmemory", int, 0, "memory limit in bytes, with Redis's units (100mb, 1gb; 0: no limit): over it, "
             "writes evict by maxmemory-policy or are refused", minimum=0, maximum=_INT64_MAX,
             normalise=_memory_size, memory=True, apply=_to_loop("maxmemory")),
    _setting("maxmemory_policy", str, DEFAULT_MAXMEMORY_POLICY, "what to evict at the memory limit",
             choices=MAXMEMORY_POLICIES, normalise=_word, what="a maxmemory policy",
             apply=_to_loop("maxmemory_policy")),
    _setting("debug_clock_offset_ms", int, 0, "for tests: milliseconds added to the clock key deadlines are "
             "compared with (a restart can then find TTLs passed without waiting)",
             minimum=-(1 << 50), maximum=1 << 50),
)

#: The settings a user can give (flag, environment, file): every row but the
#: Python-only ones, in --help order.
SETTINGS: tuple[Setting, ...] = tuple(setting for setting in TABLE if setting.key is not None)
#: SETTINGS by field name.
SETTINGS_BY_NAME: Mapping[str, Setting] = MappingProxyType({setting.name: setting for setting in SETTINGS})
_BY_KEY = {setting.key: setting for setting in SETTINGS}

_TRUE_WORDS = ("yes", "true", "1")
_FALSE_WORDS = ("no", "false", "0")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class ConfigError(ValueError):
    """A setting that cannot be used. ``str(error)`` is one line naming where it
    came from: ``kvfast.toml: unknown setting 'max-client'``,
    ``KVFAST_TIMEOUT: not a whole number: 'soon'``, ``--port: ...``, or, for a
    value given to ServerConfig directly, the field: ``port: out of range: ...``.

    ``source`` is the file path, environment variable, flag or field; ``key`` the
    file key of the setting when the source is a file (else None).
    """

    def __init__(self, source: str, message: str, key: str | None = None):
        self.source, self.key, self.message = source, key, message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class MissingSettingError(ConfigError):
    """A setting ``load_config(required=...)`` needs was given by no source."""


def _check_fields(config) -> None:
    """ServerConfig's ``__post_init__``: check every field against its TABLE row and
    store its normalised value (``log_level="DEBUG"`` is kept as ``"debug"``).

    Raises ConfigError (a ValueError) naming the field: ``port: out of range: 70000
    (must be 0 to 65535)``. Values from load_config were already checked against
    the same rows (with their source named), so only the checks across fields can
    fail for them: ``port`` none without a ``unixsocket``. (A ``unixsocketperm``
    without a socket is ignored, as in Redis.)
    """
    for setting in TABLE:
        value = getattr(config, setting.name)
        checked = check_value(setting, value, setting.name)
        if checked is not value:
            object.__setattr__(config, setting.name, checked)     # frozen: only here, at creation
    if config.port is None and config.unixsocket is None:
        raise ConfigError("port", f"{NO_TCP} (no TCP listener) needs unixsocket: there would be nothing to serve on")


# A class statement would state each field's name, type and default a second time.
ServerConfig = dataclasses.make_dataclass(
    "ServerConfig",
    [(setting.name, setting.annotation, dataclasses.field(default=setting.default, repr=not setting.secret))
     for setting in TABLE],
    frozen=True,
    namespace={"__module__": __name__, "__post_init__": _check_fields,
               "__doc__": "Everything a server needs to start; the CLI builds one from its arguments.\n\n"
                          "One field per row of kvfast.config.TABLE, which gives its type, default and\n"
                          "rules; a value that breaks them raises ConfigError (a ValueError)."},
)


def format_default(setting: Setting) -> str:
    """The default as --help shows it: ``yes``, ``none``, ``4096``."""
    value = setting.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# --- loading settings: flags > environment > TOML file > defaults -------------------


def load_config(flags=None, environ: Mapping[str, str] | None = None, config_path=None, *,
                required=()) -> ServerConfig:
    """Merge settings into a ServerConfig: ``flags`` > ``environ`` > the TOML file
    at ``config_path`` > the defaults of TABLE.

    ``flags``: a mapping (or argparse.Namespace) of ServerConfig field names to
    values; None values count as not given. Strings are parsed as on a command
    line ("8", "yes"); ints and bools are checked as they are. A Namespace may
    carry other attributes (ignored); a mapping may not.
    ``environ``: defaults to os.environ; only ``KVFAST_*`` names of SETTINGS are read.
    ``config_path``: a TOML file, or None for none.
    ``required``: field names that some source must give (kvfast-server needs
    ``port``), else MissingSettingError.

    Every source's values are checked, even those a higher source overrides, so a
    mistake cannot lie in wait. Raises ConfigError (one line, naming the source
    and key) for anything wrong.
    """
    values = {}
    if config_path is not None:
        values.update(read_config_file(config_path))
    values.update(settings_from_environ(os.environ if environ is None else environ))
    values.update(settings_from_flags(flags))
    for name in required:
        if name not in values:
            setting = SETTINGS_BY_NAME[name]
            raise MissingSettingError(setting.flag or setting.env,
                                      f"not given (pass {setting.flag}, set {setting.env} "
                                      f"or {setting.key} in the config file)")
    return ServerConfig(**values)


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
        values[setting.name] = check_value(setting, value, source, key)
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
        flags = {name: value for name, value in vars(flags).items() if name in SETTINGS_BY_NAME}
    values = {}
    for name, value in flags.items():
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            raise TypeError(f"{name!r} is not a setting (one of {', '.join(SETTINGS_BY_NAME)})")
        if value is None:
            continue
        source = setting.flag or name
        if isinstance(value, str) and setting.kind is not str:
            values[name] = _parse_text(setting, value, source)
        else:
            values[name] = check_value(setting, value, source)
    return values


def _parse_text(setting: Setting, text: str, source: str):
    """A setting written as text (environment variable, command-line flag): a bool
    or int is parsed from it, then the value is checked as :func:`check_value` does."""
    if setting.kind is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ConfigError(source, f"not yes or no: {text!r} (use yes/no, true/false or 1/0)")
    if setting.none_word and text.strip().lower() == setting.none_word:
        return None
    if setting.kind is int:
        if setting.normalise is not None:       # a memory size: "100mb"
            text = setting.normalise(text)
            if not isinstance(text, str):
                return check_value(setting, text, source)
        if not _WHOLE_NUMBER.fullmatch(text.strip()):
            raise ConfigError(source, f"not a whole number: {text!r}")
        return check_value(setting, int(text), source)
    return check_value(setting, text, source)


def check_value(setting: Setting, value, source: str, key: str | None = None):
    """Check a typed value (from a TOML file, a flag, a Python caller) against the
    rules of its row; return it normalised. This is the one place the rules of
    :class:`Setting` are applied.

    Raises ConfigError(source, message, key); a secret's value is never in the message.
    """
    def fail(message):
        raise ConfigError(source, message, key)

    if value is None and (setting.default is None or setting.none_word):
        return None                 # an optional setting left off, or PORT none
    if setting.none_word and isinstance(value, str) and value.strip().lower() == setting.none_word:
        return None
    given = value
    if setting.normalise is not None:
        value = setting.normalise(value)
    if setting.kind is bool:
        if not isinstance(value, bool):
            fail(f"expected true or false, not {_describe(given, setting)}")
        return value
    if setting.kind is int:
        if isinstance(value, float):
            fail(f"not a whole number: {value!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"expected a whole number, not {_describe(given, setting)}")
        if not setting.minimum <= value <= setting.maximum:
            bounds = (f"at least {setting.minimum}" if setting.maximum in (_INT_MAX, _INT64_MAX)
                      else f"{setting.minimum} to {setting.maximum}")
            fail(f"out of range: {value} (must be {bounds})")
        return value
    if not isinstance(value, str):
        fail(f"expected a string, not {_describe(given, setting)}")
    if setting.pattern and not re.fullmatch(setting.pattern, value):
        fail(f"not {setting.what}: {given!r}")
    if setting.choices and value not in setting.choices:
        fail(f"not {setting.what}: {given!r} (use {', '.join(setting.choices)})")
    if setting.not_blank and not value.strip():
        fail(f"must not be empty ({setting.what})" if setting.what else "must not be empty")
    if setting.minimum is not None:          # a str's bounds are on its length in UTF-8 bytes
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            fail("not valid UTF-8")
        if not setting.minimum <= size <= setting.maximum:
            fail(f"must be {setting.minimum} to {setting.maximum} bytes, not {size}")
    if any(character in value for character in setting.forbidden):
        fail(setting.forbidden_message)
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
