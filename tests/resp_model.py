"""A pure-Python model of kvfast's Redis protocol (RESP), for the fuzz tests.

Two levels, both derived from ``kvfast/_resp.pyx`` (and ``_loop.pyx`` for the
routing), byte for byte:

* :func:`answer_resp` runs one parsed request (its arguments) against a dict
  store and returns the exact reply bytes, for the commands GET, SET, SETNX,
  PUT, DEL, EXISTS, INCR, DECR, INCRBY, DECRBY, MGET, DBSIZE, FLUSHALL,
  FLUSHDB, PING, ECHO, QUIT, BYE, plus the unknown-command and wrong-arity
  errors. Anything else the server knows (HELLO, COMMAND, INFO, ...) raises
  :class:`Unmodelled`.
* :func:`answer_stream` takes everything a client sent on one connection and
  says what the server replies in total and whether it closes: requests are
  routed by their first byte (``*``: RESP, scanned as ``scan_request`` does,
  including its protocol errors; anything else a line: a Redis inline request
  when its first word is a RESP command but no native one, split as Redis's
  sdssplitargs (:func:`split_inline`) and answered as RESP; otherwise a
  native line, answered by
  :func:`kvfast.protocol_model.answer`).

The server is assumed to have no password (every session authenticated) and
the default limits; streams are assumed shorter than a read chunk's worth of
an incomplete request beyond those limits (the fuzz tests send a few KiB).
"""
import re

from kvfast._resp import command_names
from kvfast.config import CLIENT_QUERY_BUFFER_LIMIT, MAX_ARGUMENTS, MAX_LINE_BYTES, PROTO_MAX_BULK_LEN
from kvfast.protocol_model import answer as answer_native

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

MAX_HEADER_DIGITS = 18
ERROR_ECHO_LIMIT = 128

OK = b"+OK\r\n"
ERR_NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"
ERR_KEY_NOT_INTEGER = b"-ERR key is not an integer or out of range\r\n"
ERR_OVERFLOW = b"-ERR increment or decrement would overflow\r\n"
ERR_SYNTAX = b"-ERR syntax error\r\n"
ERR_MULTIBULK = b"-ERR Protocol error: invalid multibulk length\r\n"
ERR_BULK = b"-ERR Protocol error: invalid bulk length\r\n"
ERR_TOO_LARGE = b"-ERR Protocol error: request too large\r\n"
ERR_UNBALANCED = b"-ERR Protocol error: unbalanced quotes in request\r\n"

#: The native protocol's command words (any case): a line starting with one is native.
NATIVE_COMMANDS = (b"put", b"get", b"del", b"set", b"incr", b"stats", b"bye", b"auth")
#: Every RESP command of the server's table: the ones ARITY does not model (other
#: modules' commands) are Unmodelled, not unknown.
SERVER_COMMANDS = frozenset(name.encode() for name in command_names())

#: name -> arity, Redis's convention (-N: at least N arguments, name included).
ARITY = {
    b"get": 2, b"set": -3, b"setnx": 3, b"put": 3, b"del": -2, b"exists": -2, b"incr": 2,
    b"decr": 2, b"incrby": 3, b"decrby": 3, b"mget": -2, b"dbsize": 1, b"flushall": -1,
    b"flushdb": -1, b"ping": -1, b"echo": 2, b"quit": -1, b"bye": 1,
    # Known to the server, not modelled here (their replies hold server state):
    b"select": 2, b"hello": -1, b"command": -1, b"client": -2, b"config": -2, b"info": -1,
    b"auth": -2,
}
UNMODELLED = {b"select", b"hello", b"command", b"client", b"config", b"info", b"auth"}

_INTEGER = re.compile(rb"[+-]?[0-9]+")


class Unmodelled(Exception):
    """The request is one this model does not cover (its reply is not checked)."""


# ---- one request -------------------------------------------------------------------

def parse_int64(word: bytes):
    """``_text.parse_int64``: ``[+-]?[0-9]+`` within int64, or None."""
    if _INTEGER.fullmatch(word) is None:
        return None
    number = int(word)
    return number if INT64_MIN <= number <= INT64_MAX else None


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def null(resp3: bool) -> bytes:
    return b"_\r\n" if resp3 else b"$-1\r\n"


def _sanitized(data: bytes) -> bytes:
    return data.replace(b"\r", b" ").replace(b"\n", b" ")


def unknown_command(args: list) -> bytes:
    """``reply_unknown``: the name (128 bytes at most), then arguments while
    fewer than 128 bytes (each counted with its quotes and space) were shown."""
    reply = b"-ERR unknown command '" + _sanitized(args[0][:ERROR_ECHO_LIMIT]) + b"', with args beginning with: "
    shown = 0
    for argument in args[1:]:
        if shown >= ERROR_ECHO_LIMIT:
            break
        take = min(len(argument), ERROR_ECHO_LIMIT - shown)
        reply += b"'" + _sanitized(argument[:take]) + b"' "
        shown += take + 3
    return reply + b"\r\n"


def wrong_arity(name: bytes) -> bytes:
    return b"-ERR wrong number of arguments for '" + name + b"' command\r\n"


def answer_resp(store: dict, args: list, resp3: bool = False) -> bytes:
    """The reply to one complete RESP request ``args`` (a non-empty list of
    bytes), applying it to ``store`` (int -> int) in place. QUIT and BYE also
    close the connection: see :func:`closes_connection`."""
    name = args[0].lower() if len(args[0]) <= 16 else None
    if name not in ARITY and name in SERVER_COMMANDS and _ascii_nocase_equal(args[0], name):
        raise Unmodelled(name)
    if name not in ARITY or not _ascii_nocase_equal(args[0], name):
        return unknown_command(args)
    arity = ARITY[name]
    if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
        return wrong_arity(name)
    if name in UNMODELLED:
        raise Unmodelled(name)
    argc = len(args)

    if name == b"get":
        key = parse_int64(args[1])
        if key is None:
            return ERR_KEY_NOT_INTEGER
        return bulk(b"%d" % store[key]) if key in store else null(resp3)
    if name == b"set":
        key, value = parse_int64(args[1]), parse_int64(args[2])
        if key is None:
            return ERR_KEY_NOT_INTEGER
        if value is None:
            return ERR_NOT_INTEGER
        only_if_absent = only_if_present = False
        for option in args[3:]:
            option = _lower_ascii(option)
            if option == b"nx" and not only_if_present:
                only_if_absent = True
            elif option == b"xx" and not only_if_absent:
                only_if_present = True
            elif option in (b"get", b"ex", b"px", b"exat", b"pxat", b"keepttl"):
                raise Unmodelled("SET with GET or an expiry option")      # tests/test_differential_*.py
            else:
                return ERR_SYNTAX
        if (only_if_absent and key in store) or (only_if_present and key not in store):
            return null(resp3)
        store[key] = value
        return OK
    if name in (b"setnx", b"put"):
        key, value = parse_int64(args[1]), parse_int64(args[2])
        if key is None:
            return ERR_KEY_NOT_INTEGER
        if value is None:
            return ERR_NOT_INTEGER
        inserted = key not in store
        if inserted:
            store[key] = value
        if name == b"put":
            return OK if inserted else b"-ERR Key already exists\r\n"
        return integer(int(inserted))
    if name in (b"del", b"exists", b"mget"):
        keys = [parse_int64(argument) for argument in args[1:]]
        if None in keys:
            return ERR_KEY_NOT_INTEGER
        if name == b"del":
            return integer(sum(store.pop(key, None) is not None for key in keys))
        if name == b"exists":
            return integer(sum(key in store for key in keys))
        return b"*%d\r\n" % len(keys) + b"".join(
            bulk(b"%d" % store[key]) if key in store else null(resp3) for key in keys)
    if name in (b"incr", b"decr", b"incrby", b"decrby"):
        key = parse_int64(args[1])
        if key is None:
            return ERR_KEY_NOT_INTEGER
        amount = 1
        if name in (b"incrby", b"decrby"):
            amount = parse_int64(args[2])
            if amount is None:
                return ERR_NOT_INTEGER
        if name in (b"decr", b"decrby"):
            if amount == INT64_MIN:
                return b"-ERR decrement would overflow\r\n"
            amount = -amount
        total = store.get(key, 0) + amount
        if not INT64_MIN <= total <= INT64_MAX:
            return ERR_OVERFLOW
        store[key] = total
        return integer(total)
    if name == b"dbsize":
        return integer(len(store))
    if name in (b"flushall", b"flushdb"):
        if argc > 2 or (argc == 2 and _lower_ascii(args[1]) not in (b"sync", b"async")):
            return ERR_SYNTAX
        store.clear()
        return OK
    if name == b"ping":
        if argc > 2:
            return wrong_arity(name)
        return b"+PONG\r\n" if argc == 1 else bulk(args[1])
    if name == b"echo":
        return bulk(args[1])
    if name == b"quit":
        return OK
    assert name == b"bye"
    return b"+Goodbye\r\n"


def closes_connection(args: list) -> bool:
    """Whether the server closes the connection after answering ``args``
    (QUIT with any arguments, BYE with none: ``answer_resp`` already said
    whether the arity was right)."""
    name = args[0] if len(args[0]) <= 16 else b""
    return (_ascii_nocase_equal(name, b"quit")
            or (_ascii_nocase_equal(name, b"bye") and len(args) == 1))


def _ascii_nocase_equal(word: bytes, lowercase: bytes) -> bool:
    """``_text.equals_nocase``: ``byte | 0x20`` equals the lower-case name (so
    e.g. ``@`` is not ``` `` ``, but only letters fold)."""
    return len(word) == len(lowercase) and all((a | 0x20) == b for a, b in zip(word, lowercase))


def _lower_ascii(word: bytes) -> bytes:
    """The word as equals_nocase sees it (``| 0x20`` for every byte), for
    comparing with lower-case option names made of letters only."""
    return bytes(byte | 0x20 for byte in word)


# ---- scanning a stream ---------------------------------------------------------------

INCOMPLETE = "incomplete"
MALFORMED = "malformed"


def scan_header(data: bytes, at: int, signed: bool):
    """``scan_header``: the number after the type byte at ``at`` and the offset
    after its CRLF, or INCOMPLETE / MALFORMED (not ``[0-9]{1,18}\\r\\n``, with
    an optional ``-`` only when ``signed``: a count may be negative, a bulk
    length may not). A byte that can no longer lead to a valid header makes it
    MALFORMED at once, without waiting for more."""
    i = at + 1
    negative = signed and i < len(data) and data[i] == ord("-")
    if negative:
        i += 1
    first_digit = i
    value = 0
    while i < len(data) and 0x30 <= data[i] <= 0x39:
        if i - first_digit == MAX_HEADER_DIGITS:
            return MALFORMED
        value = value * 10 + data[i] - 0x30
        i += 1
    if i == len(data):
        return INCOMPLETE
    if i == first_digit or data[i] != 0x0D:
        return MALFORMED
    if i + 1 == len(data):
        return INCOMPLETE
    if data[i + 1] != 0x0A:
        return MALFORMED
    return (-value if negative else value), i + 2


def scan_request(data: bytes, max_request_bytes: int = CLIENT_QUERY_BUFFER_LIMIT):
    """``scan_request`` on ``data`` (starting with ``*``): ``(args, length)`` for
    a whole request, INCOMPLETE, or ``(error_reply, None)`` for a protocol error."""
    header = scan_header(data, 0, True)
    if header == INCOMPLETE:
        return INCOMPLETE
    if header == MALFORMED or header[0] > MAX_ARGUMENTS:
        return ERR_MULTIBULK, None
    count, position = header
    args = []
    for _ in range(max(count, 0)):
        if position >= len(data):
            return INCOMPLETE
        if data[position] != ord("$"):
            got = data[position:position + 1]
            return b"-ERR Protocol error: expected '$', got '" + (b" " if got in (b"\r", b"\n") else got) \
                + b"'\r\n", None
        header = scan_header(data, position, False)
        if header == INCOMPLETE:
            return INCOMPLETE
        if header == MALFORMED or header[0] > PROTO_MAX_BULK_LEN:
            return ERR_BULK, None
        size, position = header
        if position + size + 2 > max_request_bytes:
            return ERR_TOO_LARGE, None
        if position + size + 2 > len(data):
            return INCOMPLETE
        if data[position + size:position + size + 2] != b"\r\n":
            return ERR_BULK, None
        args.append(data[position:position + size])
        position += size + 2
    return args, position


def answer_stream(store: dict, data: bytes, resp3: bool = False):
    """Everything the server replies to the bytes ``data`` sent on one
    connection (in any number of pieces), applying them to ``store``.

    Returns ``(replies, closes, pending)``: the reply bytes in order; whether
    the server then closes the connection (BYE, QUIT, a protocol error, a native
    line too long); and the bytes of an incomplete last request it still holds
    (empty if none, and if it closes). Raises :class:`Unmodelled` for a request
    whose reply the model does not know (RESP HELLO/INFO/..., native ``stats``).
    """
    replies = bytearray()
    start = 0
    while start < len(data):
        if data[start] == ord("*"):
            scanned = scan_request(data[start:])
            if scanned == INCOMPLETE:
                return bytes(replies), False, data[start:]
            args, length = scanned
            if length is None:                      # a protocol error: reply, then close
                replies += args
                return bytes(replies), True, b""
            start += length
            if args:
                replies += answer_resp(store, args, resp3)
                if closes_connection(args):
                    return bytes(replies), True, b""
            continue
        newline = data.find(b"\n", start)
        if newline < 0:
            return bytes(replies), False, data[start:]
        line = data[start:newline]
        start = newline + 1
        if is_inline_resp(line):
            args = split_inline(line[:-1] if line.endswith(b"\r") else line)
            if args is None:                        # unbalanced quotes: reply, then close
                replies += ERR_UNBALANCED
                return bytes(replies), True, b""
            if args:
                replies += answer_resp(store, args, resp3)
                if closes_connection(args):
                    return bytes(replies), True, b""
            continue
        reply, close = _answer_native_line(store, line)
        if reply is not None:
            replies += reply + b"\n"
        if close:
            return bytes(replies), True, b""
    return bytes(replies), False, b""


def is_inline_resp(line: bytes) -> bool:
    """_protocol.is_inline_resp: the line (with its "\r", if any) is within the
    line limit and its first word (split at spaces and tabs) names a RESP
    command of the server but no native command."""
    body = line[:-1] if line.endswith(b"\r") else line
    words = re.findall(rb"[^ \t]+", body)
    if len(body) > MAX_LINE_BYTES or not words or len(words[0]) > 16:
        return False
    first = words[0]
    if any(_ascii_nocase_equal(first, name) for name in NATIVE_COMMANDS):
        return False
    return any(_ascii_nocase_equal(first, name) for name in SERVER_COMMANDS)


_SPACES = b" \t\n\v\f\r"
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes):
    """Redis's sdssplitargs, written from its C: the words of ``line``, or None
    for unbalanced quotes. A NUL byte ends the line (a C string in Redis)."""
    line = line.split(b"\0", 1)[0]
    words, p, n = [], 0, len(line)
    while True:
        while p < n and line[p] in _SPACES:
            p += 1
        if p >= n:
            return words
        current, quote = bytearray(), None
        while True:
            byte = line[p] if p < n else None
            if quote == b'"':
                if byte == 0x5C and p + 3 < n and line[p + 1] == ord("x") \
                        and line[p + 2] in _HEX and line[p + 3] in _HEX:
                    current.append(int(line[p + 2:p + 4], 16))
                    p += 3
                elif byte == 0x5C and p + 1 < n:
                    p += 1
                    current += _ESCAPES.get(line[p], line[p:p + 1])
                elif byte == ord('"'):
                    if p + 1 < n and line[p + 1] not in _SPACES:
                        return None
                    p += 1
                    break
                elif byte is None:
                    return None
                else:
                    current.append(byte)
            elif quote == b"'":
                if byte == 0x5C and p + 1 < n and line[p + 1] == ord("'"):
                    p += 1
                    current.append(ord("'"))
                elif byte == ord("'"):
                    if p + 1 < n and line[p + 1] not in _SPACES:
                        return None
                    p += 1
                    break
                elif byte is None:
                    return None
                else:
                    current.append(byte)
            elif byte is None or byte in b" \n\r\t":
                p += 1
                break
            elif byte == ord('"'):
                quote = b'"'
            elif byte == ord("'"):
                quote = b"'"
            else:
                current.append(byte)
            p += 1
        words.append(bytes(current))


def _answer_native_line(store: dict, line: bytes):
    """kvfast.protocol_model.answer, plus the two native commands it leaves
    out: ``auth`` (no password set on the server) and ``stats`` (unmodelled)."""
    body = line[:-1] if line.endswith(b"\r") else line
    words = re.findall(rb"[^ \t]+", body)
    if words and len(body) <= MAX_LINE_BYTES:
        command = words[0]
        if _ascii_nocase_equal(command, b"stats"):
            raise Unmodelled(b"stats")
        if _ascii_nocase_equal(command, b"auth"):
            return (b"Invalid request: " + (b"no password is set" if len(words) == 2
                                            else b"usage: auth <password>")), False
    return answer_native(store, line)
