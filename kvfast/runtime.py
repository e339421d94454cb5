"""The settings of a running server, as CONFIG GET, CONFIG SET and CONFIG REWRITE see them.

The rules live in :data:`kvfast.config.TABLE` (one row per setting: its CONFIG
name, its bounds, whether and how it changes at run time); this module only
speaks Redis's CONFIG language over those rows. CONFIG is answered here, in
Python, with the GIL taken by the compiled command (kvfast/_config_command.pyx):
it is an administrator's command, not a hot one, and this way the values are
checked by the very code that checks flags and files (``check_value``), with no
second copy of the rules in C. The loop's thread runs it between two requests,
so a new value is applied (through each row's ``apply`` hook) before the next
request of any connection is read.
"""
import dataclasses
import json
import os
import re
import tempfile
import weakref

from kvfast._config_command import glob_match
from kvfast.config import SETTINGS, ConfigError, check_value, protected_mode_applies, read_config_file


class ConfigCommandError(Exception):
    """A CONFIG request refused: ``str(error)`` is Redis's error line, without
    the leading ``-`` and the line ending (``ERR CONFIG SET failed ...``)."""


#: Names CONFIG GET answers that are not rows of TABLE: Redis's, derived from the
#: settings (``appendonly`` yes/no from the log file) or constant (``save``: kvfast
#: takes no snapshots). Each maps to a function of the ServerConfig.
DERIVED = {
    "appendonly": lambda config: "no" if config.appendonly is None else "yes",
    "save": lambda config: "",
}

_BY_CONFIG_NAME = {setting.config_name: setting for setting in SETTINGS}
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
#: Redis's memory units (memtoull): k, m, g are powers of 1000, kb, mb, gb of 1024.
_MEMORY = re.compile(r"([0-9]+)(b|k|kb|m|mb|g|gb)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_GLOB_CHARACTERS = frozenset("*?[\\")

def format_value(setting, value) -> str:
    """A value as CONFIG GET shows it: ``yes``/``no``, digits, the text, or the
    row's ``off_text`` for None."""
    if value is None:
        return setting.off_text
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class RuntimeSettings:
    """CONFIG over a running :class:`kvfast.Server` (held weakly: the server owns
    the loop, which owns this). ``server.config`` is the running ServerConfig; a
    successful CONFIG SET replaces it."""

    def __init__(self, server):
        self._server = weakref.ref(server)
        self.changed = set()        # field names CONFIG SET changed since start (for REWRITE)

    @property
    def server(self):
        server = self._server()
        if server is None:
            raise ConfigCommandError("ERR the server is gone")
        return server

    # ---- CONFIG GET -----------------------------------------------------------------

    def get(self, patterns: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs of every setting a pattern matches, once each, in
        TABLE order per pattern. A pattern without glob characters is looked up
        (case-insensitively) and answered under the name as given, as Redis 7 does;
        a glob is matched (kvfast._keys's matcher, on the lower-cased pattern) and
        answered under the canonical names."""
        config = self.server.config
        values = {setting.config_name: format_value(setting, getattr(config, setting.name))
                  for setting in SETTINGS}
        values.update((name, derive(config)) for name, derive in DERIVED.items())
        if self.server.addresses:               # port 0 picked one: Redis shows the port it listens on
            values["port"] = str(self.server.addresses[0][1])
        pairs, seen = [], set()
        for pattern in patterns:
            text = pattern.decode("utf-8", "surrogateescape")
            if not _GLOB_CHARACTERS & set(text):
                name = text.lower()
                if name in values and name not in seen:
                    seen.add(name)
                    pairs.append((pattern, values[name].encode()))
                continue
            lowered = pattern.lower()
            for name, value in values.items():
                if name not in seen and glob_match(lowered, name.encode()):
                    seen.add(name)
                    pairs.append((name.encode(), value.encode()))
        return pairs

    # ---- CONFIG SET -----------------------------------------------------------------

    def set(self, arguments: list[bytes]) -> None:
        """CONFIG SET name value [name value ...], all or nothing, as Redis 7: every
        name is looked up first (unknown, immutable or repeated: refused), then every
        value parsed and checked against its row, then the new ServerConfig built
        (its checks across fields); only then is anything applied, each changed row
        through its ``apply`` hook. Raises ConfigCommandError with Redis's text."""
        if len(arguments) % 2:
            raise ConfigCommandError("ERR syntax error")       # as Redis 7.0 (arity covers fewer than 2)
        pairs = [(arguments[i].decode("utf-8", "surrogateescape"), arguments[i + 1])
                 for i in range(0, len(arguments), 2)]
        rows, seen = [], set()
        for given, _ in pairs:
            name = given.lower()
            setting = _BY_CONFIG_NAME.get(name)
            if setting is None and name not in DERIVED:
                raise ConfigCommandError(f"ERR Unknown option or number of arguments for CONFIG SET - '{given}'")
            if setting is None or setting.apply is None:
                if name == "save":          # Redis's way to turn snapshots off: kvfast takes none
                    rows.append(None)
                    continue
                raise _failed(given, "can't set immutable config")
            if name in seen:
                raise _failed(given, "duplicate parameter")
            seen.add(name)
            rows.append(setting)
        server = self.server
        values = {}
        for (given, text), setting in zip(pairs, rows):
            if setting is None:
                if text != b"":
                    raise _failed(given, "kvfast takes no snapshots: only \"\" is accepted")
                continue
            values[setting.name] = _parse_value(setting, given, text)
        try:
            new = dataclasses.replace(server.config, **values)
        except ConfigError as error:
            raise _failed(pairs[0][0], error.message) from None
        loop = server._loop
        changed = [setting for setting in rows
                   if setting is not None and getattr(new, setting.name) != getattr(server.config, setting.name)]
        for setting in changed:
            setting.apply(loop, new)
        server.config = new
        server.protected_mode = protected_mode_applies(new)
        self.changed.update(setting.name for setting in changed)

    # ---- CONFIG REWRITE -------------------------------------------------------------

    def rewrite(self) -> None:
        """Write the running settings back to the TOML file the server was started
        with (see :func:`rewrite_file`). Raises ConfigCommandError as Redis words it."""
        server = self.server
        if server.config_file is None:
            raise ConfigCommandError("ERR The server is running without a config file")
        try:
            rewrite_file(server.config_file, server.config, self.changed)
        except (OSError, ConfigError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise ConfigCommandError(f"ERR Rewriting config file: {reason}") from None


def _failed(name: str, reason: str) -> ConfigCommandError:
    return ConfigCommandError(f"ERR CONFIG SET failed (possibly related to argument '{name}') - {reason}")


def _parse_value(setting, given: str, raw: bytes):
    """One CONFIG SET value, parsed as Redis parses its kind (yes/no; a plain
    integer, or a memory value for byte sizes; enum words case-insensitively) and
    then checked against the row (check_value). "" turns an optional str setting
    off. Raises ConfigCommandError naming ``given``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _failed(given, "argument is not valid UTF-8") from None
    if setting.kind is bool:
        word = text.lower()
        if word not in ("yes", "no"):
            raise _failed(given, "argument must be 'yes' or 'no'")
        value = word == "yes"
    elif setting.kind is int:
        if setting.memory:
            match = _MEMORY.fullmatch(text)
            if match is None:
                raise _failed(given, "argument must be a memory value")
            value = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
        elif _INTEGER.fullmatch(text):
            value = int(text)
        else:
            raise _failed(given, "argument couldn't be parsed into an integer")
        if not setting.minimum <= value <= setting.maximum:
            raise _failed(given, f"argument must be between {setting.minimum} and {setting.maximum} inclusive")
    elif setting.choices:
        value = text.lower()
        if value not in setting.choices:
            raise _failed(given, f"argument(s) must be one of the following: {', '.join(setting.choices)}")
    elif text == "" and setting.default is None:
        value = None
    else:
        value = text
    try:
        return check_value(setting, value, given)
    except ConfigError as error:
        raise _failed(given, error.message) from None


# ---- CONFIG REWRITE: the TOML file, line by line -----------------------------------

_KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*)$")


def toml_value(value) -> str:
    """A value as a TOML literal: ``true``, ``5000``, ``"text"`` (a JSON string is
    a valid TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _split_comment(rest: str) -> tuple[str, str]:
    """A value and what follows it on its line (blanks and a ``# comment``):
    the first ``#`` outside a quoted string starts the comment."""
    quote = None
    index = 0
    while index < len(rest):
        character = rest[index]
        if quote is None:
            if character in "\"'":
                quote = character
            elif character == "#":
                value = rest[:index].rstrip()
                return value, rest[len(value):]
        elif character == "\\" and quote == '"':
            index += 1
        elif character == quote:
            quote = None
        index += 1
    value = rest.rstrip()
    return value, rest[len(value):]


def rewrite_file(path, config, changed=()) -> None:
    """Write ``config``'s values into the TOML file at ``path``, keeping everything
    else: each top-level ``key = value`` line of a setting gets the running value
    (its comment and spacing kept; a setting now off, None, loses its line), and the
    settings in ``changed`` (field names: those CONFIG SET changed) that the file
    did not have are appended, after a comment saying so. Settings the file does
    not name and CONFIG SET did not change (flags, environment, defaults) are left
    out, as they were given elsewhere.

    The file is replaced atomically (a temporary file in the same folder, synced,
    renamed over it, with the old file's permissions), and only after the new text
    has been read back as the same settings. Raises OSError or ConfigError.
    """
    path = os.fspath(path)
    by_key = {setting.key: setting for setting in SETTINGS}
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    written, output, in_table = set(), [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = True         # kvfast's settings are all top-level keys
        match = None if in_table else _KEY_LINE.match(line)
        setting = by_key.get(match.group(2)) if match else None
        if setting is None or match.group(4).startswith(('"""', "'''")):
            output.append(line)
            continue
        written.add(setting.name)
        value = getattr(config, setting.name)
        if value is None:
            continue
        _, comment = _split_comment(match.group(4))
        output.append(f"{match.group(1)}{match.group(2)}{match.group(3)}{toml_value(value)}{comment}")
    added = [setting for setting in SETTINGS if setting.name in changed and setting.name not in written
             and getattr(config, setting.name) is not None]
    if added:
        if output and output[-1].strip():
            output.append("")
        output.append("# Set with CONFIG SET, written by CONFIG REWRITE")
        output.extend(f"{setting.key} = {toml_value(getattr(config, setting.name))}" for setting in added)
    text = "\n".join(output) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".kvfast-rewrite-", suffix=".toml", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        read_back = read_config_file(temporary)
        for name, value in read_back.items():
            if value != getattr(config, name):
                raise ConfigError(path, f"rewriting {name} did not give the running value")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
