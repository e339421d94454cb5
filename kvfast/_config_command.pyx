# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""CONFIG GET, CONFIG SET, CONFIG REWRITE and CONFIG HELP: the running settings.

The settings, their CONFIG names and rules are rows of kvfast.config.TABLE, and
kvfast.runtime.RuntimeSettings speaks CONFIG over them. This command takes the
GIL and asks that object (``context.settings``): CONFIG is an administrator's
command, rare and never on the hot path, and a C copy of the names, rules and
error texts would be a second source of them. The loop's thread holds the GIL
only for the duration of the call; every other command stays nogil. A new value
is applied (by each row's hook, into the loop's C structs) before the request
after the CONFIG SET is read, for every connection.
"""
from kvfast._command cimport Request, Argument, next_argument
from kvfast._context cimport ServerContext, Session
from kvfast._keys cimport glob_match as keys_glob_match
from kvfast._output cimport Output, output_text
from kvfast._reply cimport (
    reply_bulk, reply_array, reply_map, reply_error, reply_wrong_arity, reply_unknown_subcommand, append_sanitized,
)
from kvfast._text cimport equals_nocase


cdef enum Subcommand:
    SUB_GET
    SUB_SET
    SUB_REWRITE


def glob_match(bytes pattern, bytes text):
    """Whether ``text`` matches the glob ``pattern`` (KEYS's and SCAN MATCH's
    matcher, kvfast._keys.glob_match): CONFIG GET's patterns."""
    return keys_glob_match(pattern, len(pattern), text, len(text))


cdef list arguments_after(const Request *request, size_t position):
    """The request's arguments from ``position`` on, as bytes (needs the GIL)."""
    cdef Argument argument
    cdef list words = []
    while position < request.length:
        next_argument(request.data, &position, &argument)
        words.append(argument.start[:argument.length])
    return words


cdef int reply_error_text(ServerContext *context, Output *output, str text) noexcept:
    """``-<text>\\r\\n`` (counted as an error reply), the text on one line."""
    cdef bytes encoded = text.encode("utf-8", "surrogateescape")
    if reply_error(context, output, b"-") < 0 or append_sanitized(output, encoded, len(encoded)) < 0:
        return -1
    return output_text(output, b"\r\n")


cdef int answer(ServerContext *context, Session *session, const Request *request, size_t position,
                int subcommand) noexcept:
    """Run one CONFIG subcommand through context.settings (GIL held). Returns 0
    or -1 (out of memory). A Python exception other than the refusal it expects
    is answered as an error too (never raised into the loop)."""
    cdef Output *output = &session.output
    cdef object settings = <object>context.settings if context.settings != NULL else None
    try:
        if subcommand == SUB_GET:
            pairs = [] if settings is None else settings.get(arguments_after(request, position))
            if reply_map(session, len(pairs)) < 0:
                return -1
            for name, value in pairs:
                if reply_bulk(output, name, len(name)) < 0 or reply_bulk(output, value, len(value)) < 0:
                    return -1
            return 0
        if settings is None:
            return reply_error_text(context, output, "ERR CONFIG is not available in this server")
        if subcommand == SUB_SET:
            settings.set(arguments_after(request, position))
        else:
            settings.rewrite()
        return output_text(output, b"+OK\r\n")
    except Exception as error:
        from kvfast.runtime import ConfigCommandError
        if isinstance(error, ConfigCommandError):
            return reply_error_text(context, output, str(error))
        return reply_error_text(context, output, f"ERR CONFIG failed: {type(error).__name__}: {error}")


cdef enum:
    HELP_LINE_COUNT = 11

# Redis 7.0's text (RESETSTAT is wip-ops's subcommand: CONFIG RESETSTAT, merged with it).
cdef const char *HELP_LINES[HELP_LINE_COUNT]
HELP_LINES[:] = [
    b"CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    b"GET <pattern>",
    b"    Return parameters matching the glob-like <pattern> and their values.",
    b"SET <directive> <value>",
    b"    Set the configuration <directive> to <value>.",
    b"RESETSTAT",
    b"    Reset statistics reported by the INFO command.",
    b"REWRITE",
    b"    Rewrite the configuration file.",
    b"HELP",
    b"    Prints this help.",
]


cdef int command_config(ServerContext *context, Session *session, const Request *request,
                        size_t position) noexcept nogil:
    """CONFIG GET pattern [pattern ...] | SET name value [name value ...] | REWRITE | HELP,
    with Redis 7.0's arities and error texts (see kvfast/runtime.py)."""
    cdef Output *output = &session.output
    cdef Argument argument
    cdef int subcommand, result, i
    next_argument(request.data, &position, &argument)
    if equals_nocase(argument.start, argument.length, b"get"):
        if request.argc < 3:
            return reply_wrong_arity(context, output, b"config|get")
        subcommand = SUB_GET
    elif equals_nocase(argument.start, argument.length, b"set"):
        if request.argc < 4:
            return reply_wrong_arity(context, output, b"config|set")
        subcommand = SUB_SET
    elif equals_nocase(argument.start, argument.length, b"rewrite"):
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"config|rewrite")
        subcommand = SUB_REWRITE
    elif equals_nocase(argument.start, argument.length, b"help"):
        if request.argc != 2:
            return reply_wrong_arity(context, output, b"config|help")
        if reply_array(output, HELP_LINE_COUNT) < 0:
            return -1
        for i in range(HELP_LINE_COUNT):
            if output_text(output, b"+") < 0 or output_text(output, HELP_LINES[i]) < 0 \
                    or output_text(output, b"\r\n") < 0:
                return -1
        return 0
    else:
        return reply_unknown_subcommand(context, output, &argument, b"CONFIG")
    with gil:
        result = answer(context, session, request, position, subcommand)
    return result
