"""Executable specification of the kvfast native protocol, in plain Python.

:func:`answer` says what the server replies to one request line. It is the
definition the tests hold the compiled server to (an oracle), and the plain
asyncio baseline in ``bench/reference_asyncio.py`` serves it directly.

The protocol, in brief: a request is one line ending in ``\\n`` (a ``\\r`` before
it is dropped); words are separated by runs of spaces or tabs; command words are
case-insensitive; keys and values are signed 64-bit decimal integers.

=============  ==========================================================
request        reply
=============  ==========================================================
``put K V``    ``OK``, or ``Key already exists`` (stored value unchanged)
``get K``      the value in decimal, or ``Key not found``
``del K``      ``OK``, or ``Key not found``
``set K V``    ``OK`` (insert or overwrite; clears a TTL)
``put|set K V ex S``  the same, with a TTL of S seconds (1 to 10**12)
``expire K S`` ``OK`` (K expires in S seconds), or ``Key not found``
``ttl K``      the seconds left (rounded to the nearest), ``No expiry``, or
               ``Key not found``
``persist K``  ``OK`` (TTL removed), ``No expiry``, or ``Key not found``
``incr K [D]`` the new value (an absent key counts as 0; D defaults to 1), or
               ``Invalid request: increment would overflow`` (value unchanged)
``stats``      one line of ``name=value`` counters (not modelled here)
``bye``        ``Goodbye``, then the server closes the connection
blank line     no reply
anything else  ``Invalid request: <reason>``
=============  ==========================================================

A request starting with ``*`` is a Redis protocol (RESP) request, not a native
line; this model covers native lines only.

A line longer than :data:`kvfast.config.MAX_LINE_BYTES` (not counting its ending)
gets ``Invalid request: line too long`` and the connection is closed.
"""
import re

from kvfast.config import MAX_LINE_BYTES

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

OK = b"OK"
KEY_EXISTS = b"Key already exists"
KEY_NOT_FOUND = b"Key not found"
GOODBYE = b"Goodbye"
INVALID_PREFIX = b"Invalid request: "
LINE_TOO_LONG = INVALID_PREFIX + b"line too long"

NO_EXPIRY = b"No expiry"
#: A native TTL is 1 to this many seconds.
MAX_TTL_SECONDS = 10 ** 12

#: Longest part of an unknown command word echoed back in its error reply.
MAX_ECHOED_WORD_BYTES = 32

#: Words in each well-formed request, command included, and the usage text
#: the server answers when the count is wrong.
ARITY = {b"put": (3, 5), b"set": (3, 5), b"get": (2,), b"del": (2,), b"incr": (2, 3), b"bye": (1,),
         b"expire": (3,), b"ttl": (2,), b"persist": (2,), b"auth": (2,)}
USAGE = {
    b"put": b"usage: put <key> <value> [ex <seconds>]",
    b"set": b"usage: set <key> <value> [ex <seconds>]",
    b"expire": b"usage: expire <key> <seconds>",
    b"ttl": b"usage: ttl <key>",
    b"persist": b"usage: persist <key>",
    b"incr": b"usage: incr <key> [<delta>]",
    b"get": b"usage: get <key>",
    b"del": b"usage: del <key>",
    b"bye": b"usage: bye",
    b"auth": b"usage: auth <password>",
}

_WORD = re.compile(rb"[^ \t]+")
# Sign, then leading zeros (dropped so that a long run of them is still cheap to
# parse), then the significant digits (at least one: "000" leaves "0").
_INTEGER = re.compile(rb"([+-]?)0*([0-9]+)")
# 2**63 has 19 digits, so any longer run of significant digits is out of range.
_MAX_INT64_DIGITS = len(str(2 ** 63))


class _InvalidRequest(Exception):
    """Internal: carries the reason of an ``Invalid request: <reason>`` reply."""


def answer(store: dict, line: bytes, max_line_bytes: int = MAX_LINE_BYTES, deadlines: dict | None = None,
           now_ms: int | None = None):
    """Apply one request line to ``store`` and say what the server replies.

    ``line`` is one request as received, without its ``\\n`` but possibly with
    the ``\\r`` before it; it must not contain ``\\n``. ``store`` maps int keys
    to int values and is updated in place by ``put`` and ``del``.

    Returns ``(reply, close)``: ``reply`` is the reply line without its ``\\n``,
    or None when the server sends nothing (blank line); ``close`` is True when
    the server closes the connection after sending the reply (``bye``, or a line
    longer than ``max_line_bytes``).

    The server modelled has no password: ``auth PASSWORD`` is the invalid
    request ``no password is set``.

    ``deadlines`` (key -> Unix ms, updated in place) holds the TTLs; a key
    whose deadline is before ``now_ms`` (default: the wall clock) counts as
    absent and is removed.

    The order of the checks is part of the protocol: line length, then blank,
    then command word, then word count, then key, then value (then ``ex`` and
    the seconds).
    """
    if b"\n" in line:
        raise ValueError("a request line must not contain b'\\n'")
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > max_line_bytes:
        return LINE_TOO_LONG, True
    words = _WORD.findall(line)
    if not words:
        return None, False
    if deadlines is None:
        deadlines = {}
    if now_ms is None:
        import time
        now_ms = int(time.time() * 1000)
    try:
        return _execute(store, words, deadlines, now_ms)
    except _InvalidRequest as invalid:
        return INVALID_PREFIX + invalid.args[0], False


def _seconds(word: bytes) -> int:
    seconds = _parse_int64(word, b"seconds")
    if not 1 <= seconds <= MAX_TTL_SECONDS:
        raise _InvalidRequest(b"seconds must be 1 to 1000000000000")
    return seconds


def _execute(store: dict, words: list, deadlines: dict, now_ms: int) -> tuple:
    """Run the non-blank request ``words`` against ``store``.

    Returns ``(reply, close)`` as :func:`answer` does; raises _InvalidRequest
    with the reason when the request is malformed.
    """
    command = words[0].lower()
    if command not in ARITY:
        raise _InvalidRequest(b"unknown command '" + _echo_word(words[0]) + b"'")
    if len(words) not in ARITY[command] and not (command in (b"put", b"set") and len(words) == 4):
        raise _InvalidRequest(USAGE[command])
    if command == b"bye":
        return GOODBYE, True
    if command == b"auth":                  # the model's server has no password (see answer)
        raise _InvalidRequest(b"no password is set")
    key = _parse_int64(words[1], b"key")
    if key in deadlines and deadlines[key] < now_ms:     # expired: gone
        del deadlines[key]
        store.pop(key, None)
    if command in (b"set", b"put"):
        value = _parse_int64(words[2], b"value")
        deadline = None
        if len(words) > 3:
            if len(words) == 4 or words[3].lower() != b"ex":
                raise _InvalidRequest(USAGE[command])
            deadline = now_ms + _seconds(words[4]) * 1000
        if command == b"put" and key in store:
            return KEY_EXISTS, False
        store[key] = value
        if deadline is None:
            deadlines.pop(key, None)
        else:
            deadlines[key] = deadline
        return OK, False
    if command == b"incr":
        delta = _parse_int64(words[2], b"delta") if len(words) == 3 else 1
        total = store.get(key, 0) + delta
        if not INT64_MIN <= total <= INT64_MAX:
            raise _InvalidRequest(b"increment would overflow")
        store[key] = total
        return str(total).encode(), False
    if command == b"expire":
        seconds = _seconds(words[2])
        if key not in store:
            return KEY_NOT_FOUND, False
        deadlines[key] = now_ms + seconds * 1000
        return OK, False
    if key not in store:
        return KEY_NOT_FOUND, False
    if command == b"get":
        return str(store[key]).encode(), False
    if command == b"ttl":
        if key not in deadlines:
            return NO_EXPIRY, False
        return str(max(0, (deadlines[key] - now_ms + 500) // 1000)).encode(), False
    if command == b"persist":
        if deadlines.pop(key, None) is None:
            return NO_EXPIRY, False
        return OK, False
    del store[key]
    deadlines.pop(key, None)
    return OK, False


def _parse_int64(word: bytes, what: bytes) -> int:
    """Parse ``word`` as a signed 64-bit decimal integer and return it.

    Accepted: an optional ``+`` or ``-`` and then one or more ASCII digits
    (leading zeros allowed) — stricter than ``int()``, which also takes
    underscores, surrounding whitespace and non-ASCII digits. ``what`` (``key``
    or ``value``) names the word in the error. Raises _InvalidRequest with
    ``<what> is not an integer`` or ``integer out of range``.
    """
    match = _INTEGER.fullmatch(word)
    if match is None:
        raise _InvalidRequest(what + b" is not an integer")
    sign, digits = match.groups()
    # Checking the length first keeps int() away from huge digit strings, which
    # are slow to convert and refused beyond sys.get_int_max_str_digits().
    if len(digits) > _MAX_INT64_DIGITS:
        raise _InvalidRequest(b"integer out of range")
    number = -int(digits) if sign == b"-" else int(digits)
    if not INT64_MIN <= number <= INT64_MAX:
        raise _InvalidRequest(b"integer out of range")
    return number


def _echo_word(word: bytes) -> bytes:
    """Return ``word`` as echoed in the ``unknown command '...'`` reply.

    The word is cut to its first 32 bytes, followed by ``...`` when it was
    longer, and every byte outside printable ASCII 0x21-0x7e is written as
    ``\\xNN`` (lowercase hex), so the reply is always one printable line.
    """
    shown = bytearray()
    for byte in word[:MAX_ECHOED_WORD_BYTES]:
        if 0x21 <= byte <= 0x7E:
            shown.append(byte)
        else:
            shown += b"\\x%02x" % byte
    if len(word) > MAX_ECHOED_WORD_BYTES:
        shown += b"..."
    return bytes(shown)
